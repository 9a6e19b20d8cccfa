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
    set in ``on_train_epoch_start`` reaches the workers. ``splits`` is the method's datasets; a
    split it does not have (``has_split``) gets no loader, and a stage whose ``eval_loaders`` names
    several splits gets a loader each (``dataloader_idx`` in the order named).
    """

    def __init__(self, cfg: RunConfig, splits_cls: type[DataSplits]):
        super().__init__()
        self.cfg = cfg
        self.splits = splits_cls(cfg.data, cfg.seed)

    def loader(self, split: str, *, train: bool = False) -> DataLoader:
        """The loader of ``split``: training batches with ``train``, else evaluation batches."""
        d = self.cfg.data
        ds = self.splits.dataset(split)
        common: dict[str, Any] = {"collate_fn": self.splits.collate_fn(split), "num_workers": d.num_workers}
        size = self.splits.batch_size(split, train=train)
        if not train:
            return DeferredDataLoader(ds, batch_size=size, shuffle=False, **common)
        sampler = self.splits.train_batch_sampler(ds)
        if sampler is not None:
            return DeferredDataLoader(ds, batch_sampler=sampler, **common)
        return DeferredDataLoader(ds, batch_size=size, shuffle=True, drop_last=len(ds) > size, **common)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loaders("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loaders("test")

    def _eval_loaders(self, stage: str) -> DataLoader | list:
        """No loader for a split the config does not give; several when the stage reads more."""
        if not self.splits.has_split(stage):
            return []
        loaders = [self.loader(name) for name in self.splits.eval_loaders(stage)]
        return loaders[0] if len(loaders) == 1 else loaders
