"""The engine's one DataModule serves any method's DataSplits with the data section's sizes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch.utils.data import BatchSampler, SequentialSampler, TensorDataset

from videolang.data.splits import DataSplits, LoaderConfig
from videolang.engine.config import RunConfig
from videolang.engine.datamodule import SplitsDataModule


@dataclass
class ToyData(LoaderConfig):
    batch_size: int = 4
    eval_batch_size: int = 3
    with_val: bool = False
    pairs: bool = False


class ToySplits(DataSplits[ToyData]):
    built: list[str]

    def build(self, split):
        self.built = [*getattr(self, "built", []), split]
        return TensorDataset(torch.arange(10))

    def has_split(self, split):
        return split != "val" or self.data.with_val

    def eval_loaders(self, stage):
        return [stage, "train"] if stage == "test" and self.data.pairs else [stage]

    def collate_fn(self, split):
        return lambda items: torch.stack([x for (x,) in items]) * (1 if split == "train" else -1)

    def train_batch_sampler(self, dataset):
        return BatchSampler(SequentialSampler(dataset), 2, drop_last=False) if self.data.pairs else None


def _module(**data):
    return SplitsDataModule(RunConfig(recipe="toy", data=ToyData(**data), seed=1), ToySplits)


def test_train_batches_are_shuffled_full_batches_and_each_split_is_built_once():
    dm = _module()
    batches = list(dm.train_dataloader())
    assert [len(b) for b in batches] == [4, 4]  # the partial batch is dropped
    list(dm.train_dataloader())
    assert dm.splits.built == ["train"]


def test_evaluation_batches_keep_order_and_the_splits_collate():
    dm = _module(with_val=True)
    assert torch.cat(list(dm.val_dataloader())).tolist() == [-i for i in range(10)]
    assert [len(b) for b in dm.test_dataloader()] == [3, 3, 3, 1]


def test_an_absent_validation_split_gives_no_loader_and_a_batch_sampler_is_used():
    assert _module().val_dataloader() == []
    assert [b.tolist() for b in _module(pairs=True).train_dataloader()][:2] == [[0, 1], [2, 3]]


@pytest.mark.parametrize("key", ["batch_size", "eval_batch_size"])
def test_batch_sizes_must_be_positive(key):
    with pytest.raises(ValueError, match=key):
        ToyData(**{key: 0})


def test_a_stage_may_read_several_splits():
    loaders = _module(pairs=True).test_dataloader()
    assert len(loaders) == 2 and [len(b) for b in loaders[1]] == [3, 3, 3, 1]
