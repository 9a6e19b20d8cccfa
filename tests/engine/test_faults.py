"""The engine's DataGuard: unreadable samples are skipped, counted, listed in skipped.json; a run
stops with a named DataError past data.max_skipped_fraction or on a non-finite loss."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from videolang.data.datasets import SkippedSample, collate_skipping
from videolang.data.splits import DataSplits, LoaderConfig
from videolang.engine import RecipeModule, fit, register_recipe
from videolang.errors import ConfigError, DataError


@dataclass
class FlakyModel:
    nan_at_step: int = -1


@dataclass
class FlakyData(LoaderConfig):
    batch_size: int = 10
    eval_batch_size: int = 10
    size: int = 200
    bad: list[int] | None = None


class FlakySet(Dataset):
    def __init__(self, size: int, bad: set[int]):
        self.size, self.bad = size, bad

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        if i in self.bad:
            return SkippedSample(i, f"videos/clip{i:03d}.mp4", "truncated file")
        x = torch.full((4,), float(i % 7))
        return {"x": x, "y": i % 2, "video": f"clip{i:03d}"}


class FlakySplits(DataSplits[FlakyData]):
    def build(self, split):
        if self.data.size < 1:
            raise ConfigError(f"data.size: {self.data.size}: no samples")
        return FlakySet(self.data.size, set(self.data.bad or []))

    def has_split(self, split):
        return split != "val"

    def collate_fn(self, split):
        return collate_skipping


class FlakyModule(RecipeModule):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.net = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        if "x" not in batch:
            return None  # every sample of the batch was skipped
        loss = F.cross_entropy(self.net(batch["x"]), batch["y"])
        if self.global_step == self.cfg.model.nan_at_step:
            loss = loss * math.nan
        return loss


register_recipe("flaky.train", FlakyModule, FlakySplits, FlakyModel, FlakyData)


def _fit(tmp_path, **data):
    cfg = {"recipe": "flaky.train", "data": data, "run": {"root": str(tmp_path), "plots": False, "export": False},
           "trainer": {"max_epochs": 1, "enable_progress_bar": False, "accelerator": "cpu"}}
    return fit(cfg)


def test_a_few_unreadable_samples_are_skipped_counted_and_listed(tmp_path):
    result = _fit(tmp_path, bad=[7, 150])
    report = json.loads((result.run_dir / "skipped.json").read_text())
    assert report["seen"]["train"] == 200 and result.metrics["skipped"] == {"train": 2}
    assert sorted(r["source"] for r in report["skipped"]["train"]) == ["videos/clip007.mp4", "videos/clip150.mp4"]


def test_more_than_the_allowed_share_stops_the_run_naming_a_file(tmp_path):
    with pytest.raises(DataError, match=r"3 of 200 train samples could not be read.*videos/clip0\d\d\.mp4"):
        _fit(tmp_path, bad=[3, 40, 41])


def test_a_run_that_allows_more_goes_on(tmp_path):
    result = _fit(tmp_path, bad=list(range(0, 200, 20)), max_skipped_fraction=0.1)
    assert len(json.loads((result.run_dir / "skipped.json").read_text())["skipped"]["train"]) == 10


def test_a_non_finite_loss_stops_the_run_naming_the_batch(tmp_path):
    with pytest.raises(DataError, match=r"batch 3 of epoch 0 gave a non-finite loss \(nan\); its samples: video clip\d{3}"):
        fit({"recipe": "flaky.train", "model": {"nan_at_step": 3}, "run": {"root": str(tmp_path), "plots": False,
             "export": False}, "trainer": {"max_epochs": 1, "enable_progress_bar": False, "accelerator": "cpu"}})


def test_skip_counts_survive_a_resume_in_the_middle_of_an_epoch(tmp_path):
    from lightning.pytorch.callbacks import Callback

    class Stop(Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 15:
                raise SystemExit

    cfg = {"recipe": "flaky.train", "data": {"bad": [7, 150]}, "run": {"root": str(tmp_path), "plots": False,
           "export": False}, "trainer": {"max_epochs": 1, "enable_progress_bar": False, "accelerator": "cpu",
                                         "checkpoint_every_n_steps": 1, "monitor": None}}
    with pytest.raises(SystemExit):
        fit(cfg, callbacks=[Stop()])
    stopped = sorted((tmp_path / "flaky.train").glob("version_*"))[-1]
    resumed = fit(cfg, resume=stopped / "checkpoints" / "last.ckpt")
    report = json.loads((resumed.run_dir / "skipped.json").read_text())
    assert report["seen"]["train"] == 200  # the samples before the stop are counted once
    assert sorted(r["source"] for r in report["skipped"]["train"]) == ["videos/clip007.mp4", "videos/clip150.mp4"]


def test_a_run_that_fails_before_its_first_step_leaves_no_folder_a_later_failure_keeps_its_logs(tmp_path):
    with pytest.raises(ConfigError, match="no samples"):  # fails while its data is set up
        _fit(tmp_path, size=0)
    assert not (tmp_path / "flaky.train").exists()
    with pytest.raises(DataError):
        fit({"recipe": "flaky.train", "model": {"nan_at_step": 3}, "run": {"root": str(tmp_path), "plots": False,
             "export": False}, "trainer": {"max_epochs": 1, "enable_progress_bar": False, "accelerator": "cpu",
                                           "log_every_n_steps": 1}})
    kept = list((tmp_path / "flaky.train").glob("version_*/metrics.csv"))
    assert len(kept) == 1  # the steps before the NaN are logged, and kept
