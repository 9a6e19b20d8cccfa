"""VIMPAC data: clips of token stores and the videos of each split.

Training draws one spatial view (store) per sample, evaluation uses every view's uniform clips;
pretraining samples two clips of one video. Clips and views: docs/vimpac.md ("Implementation notes").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from videolang.data.datasets import SkippedSample, collate_skipping
from videolang.data.sampling import vimpac_clip_indices, vimpac_clip_starts
from videolang.data.splits import DataSplits, LoaderConfig
from videolang.data.tokens import TokenStore, read_video_list
from videolang.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

__all__ = [
    "TokenClips",
    "VimpacDataConfig",
    "VimpacFinetuneDataConfig",
    "VimpacPretrainDataConfig",
    "VimpacSplits",
    "check_tokenizer_fingerprint",
    "open_token_stores",
    "video_ids",
]


@dataclass
class VimpacDataConfig(LoaderConfig):
    """``data.*`` of the VIMPAC recipes; each registers a subclass fixing ``objective``."""

    objective: Literal["pretrain", "finetune"] = "finetune"  # clip pairs (pretrain) or labelled clips
    train_stores: list[str] = field(default_factory=list)  # spatial views (one drawn per sample)
    val_stores: list[str] = field(default_factory=list)  # evaluation views (all used)
    test_stores: list[str] = field(default_factory=list)
    train_list: str | None = None  # MMAction split files restricting the videos
    val_list: str | None = None
    test_list: str | None = None
    label_fraction: float = 1.0  # fine-tuning on this fraction of the labelled training videos
    clip_len: int = 5
    stride: int = 1
    relevance_range: int | None = None  # frames: bound on the distance of a pretraining pair
    num_test_clips: int = 1
    legacy_first_clip: bool = False
    batch_size: int = 8
    eval_batch_size: int = 16
    num_workers: int = 0
    # The frame tokenizer that made the stores (a tokenizer folder or dalle:PATH): the export
    # puts it into the model folder, so that videolang.load classifies raw videos.
    frame_tokenizer: str | None = None


@dataclass
class VimpacPretrainDataConfig(VimpacDataConfig):
    """``data.*`` of ``vimpac.pretrain``: pairs of clips of one video."""

    objective: Literal["pretrain"] = "pretrain"


@dataclass
class VimpacFinetuneDataConfig(VimpacDataConfig):
    """``data.*`` of ``vimpac.finetune``: labelled clips."""

    objective: Literal["finetune"] = "finetune"


class TokenClips(Dataset):
    """Clips of token stores, as dicts (``index``, ``video``: the key). ``mode``: ``train`` -> ``clip
    (L, H, W)``, ``label``; ``pairs`` -> ``pairs (2, L, H, W)`` (two clips of one view), ``label``;
    ``eval`` -> ``views (V*K, L, H, W)``, ``label``. A video whose tokens cannot be read
    is a :class:`~videolang.data.datasets.SkippedSample` (collate with ``collate_skipping``)."""

    def __init__(self, stores: Sequence[TokenStore], keys: list[str], *, clip_len: int, stride: int, pad_id: int,
                 mode: Literal["train", "pairs", "eval"], num_clips: int = 1, relevance_range: int | None = None,
                 legacy_first_clip: bool = False, seed: int = 0):
        self.stores, self.keys = list(stores), keys
        self.clip_len, self.stride, self.pad_id = clip_len, stride, pad_id
        self.mode, self.num_clips, self.relevance_range = mode, num_clips, relevance_range
        self.legacy_first_clip, self.seed, self.epoch = legacy_first_clip, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.keys)

    def _clip(self, tokens: np.ndarray, start: int) -> torch.Tensor:
        idx, valid = vimpac_clip_indices(tokens.shape[0], int(start), self.clip_len, self.stride)
        clip = torch.from_numpy(tokens[idx].astype(np.int64))
        clip[torch.from_numpy(~valid)] = self.pad_id
        return clip

    @staticmethod
    def _read(store: TokenStore, key: str) -> dict[str, Any]:
        item = store.item(key)
        if item["tokens"].ndim != 3 or item["tokens"].shape[0] == 0:
            raise StoreError(f"no token frames (shape {item['tokens'].shape})")
        return item

    def __getitem__(self, i: int) -> dict[str, Any] | SkippedSample:
        key = self.keys[i]
        try:
            return self._sample(i, key)
        except (StoreError, KeyError, ValueError, OSError) as exc:  # a damaged or missing row
            return SkippedSample(i, f"{self.stores[0].path}:{key}", str(exc) or type(exc).__name__)

    def _sample(self, i: int, key: str) -> dict[str, Any]:
        # Per-sample generator from (seed, epoch, index): the same clips whatever the workers.
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.mode == "eval":
            clips, label = [], -1
            for store in self.stores:
                item = self._read(store, key)
                label = item["label"] if store is self.stores[0] else label
                starts = vimpac_clip_starts(item["tokens"].shape[0], self.clip_len, self.stride, mode="uniform",
                                            num_clips=self.num_clips, legacy=self.legacy_first_clip)
                clips += [self._clip(item["tokens"], s) for s in starts]
            return {"index": i, "views": torch.stack(clips), "label": label, "video": key}
        item = self._read(self.stores[int(rng.integers(len(self.stores)))], key)
        tokens, n = item["tokens"], item["tokens"].shape[0]
        first = vimpac_clip_starts(n, self.clip_len, self.stride, generator=rng)[0]
        if self.mode == "train":
            return {"clip": self._clip(tokens, first), "label": item["label"], "index": i, "video": key}
        r = self.relevance_range
        bounds = (first - r, first + r) if r is not None else None
        second = vimpac_clip_starts(n, self.clip_len, self.stride, generator=rng, bounds=bounds)[0]
        return {"pairs": torch.stack([self._clip(tokens, first), self._clip(tokens, second)]),
                "label": item["label"], "index": i, "video": key}


def open_token_stores(paths: Sequence[str], key: str) -> list[TokenStore]:
    """The stores of ``data.<key>``, which must share their token grid and vocabulary."""
    stores = [TokenStore(p) for p in paths]
    grids = {(s.header.grid, s.header.vocab_size) for s in stores}
    if len(grids) > 1:
        raise ConfigError(f"data.{key}: the stores differ in token grid or vocabulary ({sorted(grids)})")
    return stores


def video_ids(stores: list[TokenStore], list_file: str | None, key: str) -> list[str]:
    """The sorted videos every store of ``data.<key>`` holds, restricted to those of the
    MMAction list ``list_file`` when one is given."""
    keys = sorted(set(stores[0].keys()).intersection(*(s.keys() for s in stores[1:])))
    if list_file is not None:
        if not Path(list_file).is_file():
            raise ConfigError(f"video list not found: {list_file}")
        wanted = {entry.video_id for entry in read_video_list(list_file, "")}
        missing = wanted - set(keys)
        if missing:
            log.warning("data.%s: %d listed videos are not in the stores (e.g. %s)", key, len(missing), min(missing))
        keys = [k for k in keys if k in wanted]
    if not keys:
        raise ConfigError(f"data.{key}: no videos")
    return keys


def check_tokenizer_fingerprint(paths: Sequence[str], fingerprint: str, source: str) -> None:
    """Fail unless every store of ``paths`` records ``fingerprint``, that of the frame tokenizer
    ``source`` (an original LMDB records none: it is assumed to match)."""
    for path in dict.fromkeys(paths):
        recorded = TokenStore(path).header.tokenizer_hash
        if recorded is None:
            log.warning("%s records no tokenizer fingerprint (an original LMDB): data.frame_tokenizer %s is "
                        "assumed to be the one that made it", path, source)
        elif recorded != fingerprint:
            raise ConfigError(f"data.frame_tokenizer {source}: not the tokenizer of {path} (its fingerprint is "
                              f"{fingerprint}, the store records {recorded})")


class VimpacSplits(DataSplits[VimpacDataConfig]):
    """The token stores of a run. ``train``: clips (pairs of clips when pretraining) of one
    randomly drawn view; ``val`` / ``test``: every view's uniform clips of a video (pretraining:
    pairs of the first view); ``knn_bank``: the centre clip of each training video of the first
    view, the kNN monitor's bank."""

    def __init__(self, data: VimpacDataConfig, seed: int = 0):
        super().__init__(data, seed)
        if not data.train_stores:
            raise ConfigError("data.train_stores: give at least one token store")
        self.stores = {split: open_token_stores(getattr(data, f"{split}_stores"), f"{split}_stores")
                       for split in ("train", "val", "test")}
        header = self.stores["train"][0].header
        self.vocab_size, (self.height, self.width), self.classes = header.vocab_size, header.grid, header.classes
        self.train_keys = video_ids(self.stores["train"], data.train_list, "train_stores")
        if data.objective != "pretrain" and data.label_fraction < 1.0:
            # A fixed, seed-determined subset of labelled videos (low-label fine-tuning).
            rng = np.random.default_rng(seed)
            n = max(1, round(len(self.train_keys) * data.label_fraction))
            self.train_keys = sorted(rng.choice(self.train_keys, n, replace=False).tolist())

    @property
    def pad_id(self) -> int:
        return self.vocab_size + 1

    def model_shape(self) -> dict[str, int]:
        """The codebook and clip shape of a VIMPAC model on these stores (its config's keys)."""
        return {"codebook_size": self.vocab_size, "length": self.data.clip_len, "height": self.height,
                "width": self.width}

    def num_classes(self) -> int:
        """The training stores' classes: the header's names, else the largest label + 1."""
        return len(self.classes) if self.classes else 1 + max(self.stores["train"][0].label(k) for k in self.train_keys)

    def collate_fn(self, split: str) -> Callable[[list[Any]], dict[str, Any]]:
        return collate_skipping

    def has_split(self, split: str) -> bool:
        return split in ("train", "knn_bank") or bool(self.stores[split])

    def eval_loaders(self, stage: str) -> list[str]:
        """Pretraining validation also reads the kNN monitor's bank (its second loader)."""
        return [stage, "knn_bank"] if stage == "val" and self.data.objective == "pretrain" else [stage]

    def build(self, split: str) -> TokenClips:
        d, pairs = self.data, self.data.objective == "pretrain"
        if split == "train":
            return self.clips(self.stores["train"], self.train_keys, "pairs" if pairs else "train")
        if split == "knn_bank":
            return self.clips(self.stores["train"][:1], self.train_keys, "eval", num_clips=1)
        stores = self.stores[split]
        if not stores:
            raise ConfigError(f"data.{split}_stores: give at least one token store")
        keys = video_ids(stores, getattr(d, f"{split}_list"), f"{split}_stores")
        return self.clips(stores[:1], keys, "pairs") if pairs else self.clips(stores, keys, "eval")

    def clips(self, stores: list[TokenStore], keys: list[str], mode: Literal["train", "pairs", "eval"],
              num_clips: int | None = None) -> TokenClips:
        """Clips of ``stores`` with the run's clip shape and seed."""
        d = self.data
        return TokenClips(stores, keys, clip_len=d.clip_len, stride=d.stride, pad_id=self.pad_id, mode=mode,
                          num_clips=num_clips or d.num_test_clips, relevance_range=d.relevance_range,
                          legacy_first_clip=d.legacy_first_clip, seed=self.seed)
