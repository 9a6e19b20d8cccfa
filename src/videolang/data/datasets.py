"""Map-style video datasets that never let a bad file end an epoch.

A video that cannot be decoded becomes a :class:`SkippedSample` instead of an exception.
:func:`collate_skipping` drops those from the batch and reports them under ``batch["skipped"]``
so the main process can count and log them (:class:`SkipCounter`), whichever DataLoader worker
met them. Nothing is silently replaced by another video (the ClipBERT original retried with a
random other index, ``clipbert.md`` §8.1 item 12).

Each item's random draws come from a generator seeded with (seed, epoch, index), so a sample is
the same whatever the number of workers, and ``set_epoch`` changes the draws between epochs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from videolang.data.video import VideoMetadata, VideoReader
from videolang.errors import VideoDecodeError

log = logging.getLogger(__name__)

__all__ = [
    "FrameSampler",
    "SkipCounter",
    "SkippedSample",
    "VideoFramesDataset",
    "collate_skipping",
    "item_generator",
]

FrameSampler = Callable[[VideoMetadata, torch.Generator], np.ndarray]
"""Maps a video's metadata and a generator to frame indices (any shape; flattened for reading
and reshaped back)."""


@dataclass(frozen=True)
class SkippedSample:
    """Marker returned for an item whose video could not be read."""

    index: int
    source: str
    reason: str


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator determined by (seed, epoch, index) alone."""
    mixed = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & ((1 << 63) - 1))


class VideoFramesDataset(Dataset):
    """Frames sampled from videos named by annotation records.

    ``records`` are dicts with a video reference under ``video_key`` (an id or a relative
    path). The reference is resolved against ``store`` (anything indexable by key returning
    container bytes, e.g. :class:`~videolang.data.stores.LmdbVideoStore`) or, without a store,
    against ``video_root`` (``<root>/<ref>`` or ``<root>/<ref><extension>``).

    Items are dicts: ``frames`` uint8 ``(*sampler shape, H, W, 3)``, ``frame_indices``,
    ``index``, ``video`` (the reference), plus the record's other scalar fields; ``transform``
    (if given) is applied to ``frames``.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        sampler: FrameSampler,
        *,
        video_root: str | os.PathLike | None = None,
        store: Mapping[str, bytes] | None = None,
        video_key: str = "video",
        extension: str = ".mp4",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
    ):
        if store is None and video_root is None:
            raise ValueError("give video_root (a folder of files) or store (e.g. an LMDB store)")
        self.records = list(records)
        self.sampler = sampler
        self.video_root = Path(video_root) if video_root is not None else None
        self.store = store
        self.video_key = video_key
        self.extension = extension
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _source(self, ref: str) -> str | bytes:
        if self.store is not None:
            try:
                return self.store[ref]
            except KeyError:
                raise VideoDecodeError(ref, "key not found in the video store") from None
        assert self.video_root is not None
        path = self.video_root / ref
        if not path.exists() and not path.suffix:
            path = path.with_name(path.name + self.extension)
        return str(path)

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        record = self.records[index]
        ref = str(record[self.video_key])
        generator = item_generator(self.seed, self.epoch, index)
        try:
            with VideoReader(self._source(ref)) as reader:
                indices = np.asarray(self.sampler(reader.metadata, generator))
                frames = reader.read(indices.reshape(-1))
        except VideoDecodeError as exc:
            log.warning("skipping video %s (item %d): %s", ref, index, exc.reason)
            return SkippedSample(index, ref, exc.reason)
        frames = frames.reshape(*indices.shape, *frames.shape[1:])
        if self.transform is not None:
            frames = self.transform(frames)
        item = {k: v for k, v in record.items() if isinstance(v, (int, float, str))}
        item.update(
            frames=frames, frame_indices=torch.from_numpy(indices), index=index, video=ref
        )
        return item


def collate_skipping(batch: Sequence[Any]) -> dict[str, Any]:
    """Collate the readable items and list the skipped ones under ``"skipped"``.

    A batch in which every item was skipped collates to ``{"skipped": [...]}`` alone; training
    loops should check for ``"frames"`` (or use :meth:`SkipCounter.update`'s return value).
    """
    good = [b for b in batch if not isinstance(b, SkippedSample)]
    skipped = [b for b in batch if isinstance(b, SkippedSample)]
    out: dict[str, Any] = default_collate(good) if good else {}
    out["skipped"] = skipped
    return out


@dataclass
class SkipCounter:
    """Counts skipped samples in the main process and logs each once."""

    seen: list[SkippedSample] = field(default_factory=list)

    def update(self, batch: Mapping[str, Any]) -> bool:
        """Record the batch's skips; return True if the batch still has samples."""
        for s in batch.get("skipped", []):
            self.seen.append(s)
            log.info("skipped %s: %s", s.source, s.reason)
        return len(batch) > 1

    @property
    def count(self) -> int:
        return len(self.seen)

    def summary(self) -> str:
        if not self.seen:
            return "no bad videos"
        return "; ".join(f"{s.source} ({s.reason})" for s in self.seen)
