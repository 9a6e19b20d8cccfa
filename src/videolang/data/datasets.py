"""Map-style video datasets that never let a bad file end an epoch.

An undecodable video becomes a :class:`SkippedSample`; :func:`collate_skipping` drops it and
reports it under ``batch["skipped"]`` for :class:`SkipCounter`; nothing is replaced by another
video. Draws are seeded by (seed, epoch, index), so a sample does not depend on the worker count;
:class:`DeferredDataLoader` starts its workers with the first batch so they see ``set_epoch``.
Details: docs/data.md ("Datasets").
"""

from __future__ import annotations

import inspect
import logging
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from videolang.data.annotations import check_inside
from videolang.data.video import MAX_PIXELS, VideoMetadata, VideoReader
from videolang.errors import FrameIndexError, VideoDecodeError

log = logging.getLogger(__name__)

__all__ = [
    "DeferredDataLoader",
    "FrameSampler",
    "SkipCounter",
    "SkippedSample",
    "VideoFramesDataset",
    "collate_skipping",
    "epoch_choice",
    "item_generator",
]

FrameSampler = Callable[[VideoMetadata, torch.Generator], np.ndarray]
"""Maps a video's metadata and a generator to frame indices (any shape; flattened for reading
and reshaped back)."""


@dataclass
class SkippedSample:
    """Marker returned for an item whose video could not be read. Not frozen: Lightning rebuilds
    the dataclasses of a batch when it moves the batch to the device."""

    index: int
    source: str
    reason: str


def epoch_choice(seed: int, epoch: int, index: int, n: int) -> int:
    """Which of an item's ``n`` options (captions, caption windows) it uses this epoch: fixed by
    (seed, epoch, index) alone, so workers, order and resumes agree."""
    return random.Random(seed * 7919 + epoch * 104729 + index).randrange(n)


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator determined by (seed, epoch, index) alone."""
    mixed = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & ((1 << 63) - 1))


def _takes_generator(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` accepts a ``generator`` keyword argument."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return any(p.name == "generator" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class _DeferredIterator(Iterator):
    """What :meth:`DeferredDataLoader.__iter__` returns: the loader's real iterator is made by
    the first ``next``."""

    def __init__(self, loader: DeferredDataLoader):
        self._loader = loader
        self._iterator: Iterator | None = None

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = DataLoader.__iter__(self._loader)
        return next(self._iterator)

    def __len__(self) -> int:
        return len(self._loader)


class DeferredDataLoader(DataLoader):
    """A ``DataLoader`` whose iterator starts with the first batch request, not at ``iter()``.

    A plain ``DataLoader`` with workers forks them, hands them a copy of the dataset and sends
    them the first indices (drawing from the sampler) as soon as its iterator is made. Lightning
    makes the training iterator before ``on_train_epoch_start`` in the first epoch (already
    while counting the steps for the LR schedule) and when it resumes a run, so the workers
    would draw with the dataset's stale epoch (and a retrieval batch sampler would build its
    batches without the epoch's embeddings), while without workers the same items see the
    state set by the hook: the data would depend on the number of workers. Deferring the
    iterator makes every per-epoch state set in ``on_train_epoch_start`` reach the sampler and
    the workers in both cases. Not for ``persistent_workers=True`` with per-epoch dataset state
    (persistent workers keep the copy of the dataset they were started with).
    """

    def __iter__(self) -> Iterator:  # type: ignore[override]
        return _DeferredIterator(self)


class VideoFramesDataset(Dataset):
    """Frames sampled from videos named by annotation records.

    ``records`` are dicts with a video reference under ``video_key`` (an id or a relative
    path). The reference is resolved against ``store`` (anything indexable by key returning
    container bytes, e.g. :class:`~videolang.data.stores.LmdbVideoStore`) or, without a store,
    against ``video_root`` (``<root>/<ref>`` or ``<root>/<ref><extension>``).

    Items are dicts: ``frames`` uint8 ``(*sampler shape, H, W, 3)``, ``frame_indices``,
    ``index``, ``video`` (the reference), plus the record's other scalar fields; ``transform``
    (if given) is applied to ``frames``. A transform that takes a ``generator`` keyword (e.g.
    ``functools.partial(random_crop, size=224)``) gets the item's generator after the frame
    sampler's draws, so random augmentation is seeded by (seed, epoch, index) as well; never
    give a random transform that draws from the global RNG (workers seed theirs differently).

    A reference that leads outside ``video_root`` (``..``, an absolute path, a link) is an
    :class:`~videolang.data.annotations.AnnotationError`; an unreadable video, or one whose
    metadata the sampler cannot use (no frame rate), is skipped. ``max_pixels``: the decoding
    guard of :class:`~videolang.data.video.VideoReader`.
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
        transform: Callable[..., torch.Tensor] | None = None,
        seed: int = 0,
        max_pixels: int | None = MAX_PIXELS,
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
        self._transform_takes_generator = transform is not None and _takes_generator(transform)
        self.seed = seed
        self.max_pixels = max_pixels
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
        return str(self.resolve(ref, f"video {ref!r}"))

    def resolve(self, ref: str, where: str) -> Path:
        """The file of video ``ref`` under ``video_root`` (``<root>/<ref>``, else with the
        extension added), checked to stay inside it; ``where`` starts the error message."""
        assert self.video_root is not None
        path = check_inside(self.video_root, ref, where)
        if not path.exists() and not path.suffix:
            path = check_inside(self.video_root, ref + self.extension, where)
        return path

    def _sample(self, reader: VideoReader, generator: torch.Generator) -> np.ndarray:
        try:
            return np.asarray(self.sampler(reader.metadata, generator))
        except (ValueError, FrameIndexError) as exc:  # e.g. a one-frame stream without a frame rate
            raise VideoDecodeError(reader.source_name, f"no frames to sample ({exc})") from exc

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        record = self.records[index]
        ref = str(record[self.video_key])
        generator = item_generator(self.seed, self.epoch, index)
        try:
            with VideoReader(self._source(ref), max_pixels=self.max_pixels) as reader:
                indices = self._sample(reader, generator)
                frames = reader.read(indices.reshape(-1))
        except VideoDecodeError as exc:
            log.warning("skipping video %s (item %d): %s", ref, index, exc.reason)
            return SkippedSample(index, ref, exc.reason)
        frames = frames.reshape(*indices.shape, *frames.shape[1:])
        if self._transform_takes_generator:
            frames = self.transform(frames, generator=generator)
        elif self.transform is not None:
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
