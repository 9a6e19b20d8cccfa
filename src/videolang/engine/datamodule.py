"""The one Lightning DataModule: a method's :class:`~videolang.data.splits.DataSplits` served as
loaders with the ``data`` section's batch sizes and workers."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from videolang.data.datasets import DeferredDataLoader
from videolang.data.splits import DataSplits
from videolang.engine.config import RunConfig

__all__ = ["SplitsDataModule"]


class SplitsDataModule(L.LightningDataModule):
    """Training: shuffled ``batch_size`` batches (the last partial one dropped when there is more
    than one batch) or the splits' own batch sampler; evaluation: in order, ``eval_batch_size``.

    Every loader is a :class:`~videolang.data.datasets.DeferredDataLoader`, so per-epoch state
    set in ``on_train_epoch_start`` reaches the workers. ``splits`` is the method's datasets.
    """

    def __init__(self, cfg: RunConfig, splits_cls: type[DataSplits]):
        super().__init__()
        self.cfg = cfg
        self.splits = splits_cls(cfg.data, cfg.seed)

    def loader(self, split: str) -> DataLoader:
        d = self.cfg.data
        ds = self.splits.dataset(split)
        common: dict[str, Any] = {"collate_fn": self.splits.collate_fn(split), "num_workers": d.num_workers}
        if split != "train":
            return DeferredDataLoader(ds, batch_size=d.eval_batch_size, shuffle=False, **common)
        sampler = self.splits.train_batch_sampler(ds)
        if sampler is not None:
            return DeferredDataLoader(ds, batch_sampler=sampler, **common)
        return DeferredDataLoader(ds, batch_size=d.batch_size, shuffle=True, drop_last=len(ds) > d.batch_size,
                                  **common)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader | list:
        return self.loader("val") if self.splits.has_split("val") else []

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
