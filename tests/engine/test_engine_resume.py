"""Exact resume: 3 epochs == 1 epoch, stop, resume for 2 more (weights and logged metrics)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tests.engine.toy_recipe import toy_config

import videolang.engine.run as run_module
from videolang.engine import fit


class StopAfterFirstEpoch(Callback):
    """Simulates an interrupted job: training stops after epoch 0 (its checkpoint is written)."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def assert_same_history(a: dict, b: dict) -> None:
    for split in ("train", "val"):
        assert len(a[split]) == len(b[split])
        for x, y in zip(a[split], b[split], strict=True):
            assert x.keys() == y.keys()
            for key in x:
                assert x[key] == pytest.approx(y[key], rel=0, abs=1e-6), (split, key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    cfg = toy_config(root, max_epochs=3)
    straight = fit(cfg)
    interrupted = fit(cfg, callbacks=[StopAfterFirstEpoch()])
    return cfg, straight, interrupted


def test_resume_continues_exactly(runs):
    cfg, straight, interrupted = runs
    assert [e["epoch"] for e in interrupted.metrics["history"]["val"]] == [0]
    resumed = fit(cfg, resume=interrupted.run_dir / "checkpoints" / "last.ckpt")
    assert resumed.run_dir != interrupted.run_dir  # a resumed run is a new version folder
    assert max_difference(weights(straight.run_dir), weights(resumed.run_dir)) <= 1e-6
    assert_same_history(straight.metrics["history"], resumed.metrics["history"])
    assert resumed.metrics["best"] == pytest.approx(straight.metrics["best"])
    assert resumed.metrics["resumed_from"].endswith("last.ckpt")
    # what Lightning logged after the resume matches too (CSV of the resumed folder = epochs 1-2)
    assert (resumed.run_dir / "metrics.csv").is_file()


def test_resume_last_finds_the_newest_checkpoint(runs):
    cfg, straight, _ = runs
    newest = max(straight.run_dir.parent.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    resumed = fit(cfg, ["trainer.max_epochs=4"], resume="last")
    assert resumed.metrics["resumed_from"] == str(newest)
    assert [e["epoch"] for e in resumed.metrics["history"]["val"]] == [0, 1, 2, 3]


def test_without_rng_restore_resume_would_differ(runs, monkeypatch):
    """The control experiment: Lightning alone does not restore RNG states (dropout, shuffling)."""
    cfg, straight, interrupted = runs
    monkeypatch.setattr(run_module.RngStateCallback, "load_state_dict", lambda self, state: None)
    resumed = fit(cfg, resume=interrupted.run_dir / "checkpoints" / "last.ckpt")
    assert max_difference(weights(straight.run_dir), weights(resumed.run_dir)) > 1e-4


def test_resume_auto_starts_fresh_when_there_is_nothing_to_continue(tmp_path):
    cfg = toy_config(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    first = fit(cfg, resume="auto")
    assert first.metrics["resumed_from"] is None
    second = fit(cfg, ["trainer.max_epochs=2"], resume="auto")
    assert second.metrics["resumed_from"] == str(first.run_dir / "checkpoints" / "last.ckpt")


def test_last_checkpoint_follows_every_epoch_even_without_improvement(tmp_path):
    """Lightning 2.6 alone leaves last.ckpt at the last *improving* epoch; ours is always
    the newest state, so resuming from it never repeats an epoch."""
    cfg = toy_config(tmp_path, max_epochs=3, monitor="val/loss", monitor_mode="max", save_top_k=1)
    result = fit(cfg)
    last = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2
    assert last["global_step"] == max(e["step"] for e in result.metrics["history"]["val"])


class StopAtStep(Callback):
    """An interruption in the middle of an epoch: the run dies at ``step`` (its last checkpoint
    is the one written every step before it)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise SystemExit("interrupted")


def _splits_config(root):
    from tests.engine.toy_recipe import SPLITS_RECIPE

    cfg = toy_config(root, max_epochs=2, checkpoint_every_n_steps=1, monitor=None)
    return {**cfg, "recipe": SPLITS_RECIPE, "name": "toy_splits"}


@pytest.mark.parametrize("step", [3, 11])
def test_resume_from_the_middle_of_an_epoch_is_exact(tmp_path, step):
    """8 batches an epoch: steps 3 and 11 are inside epochs 0 and 1; the loader's state puts the
    rest of the epoch back in the order an uninterrupted run saw."""
    cfg = _splits_config(tmp_path)
    straight = fit(cfg)
    with pytest.raises(SystemExit):
        fit(cfg, callbacks=[StopAtStep(step)])
    killed = sorted((tmp_path / "toy_splits").glob("version_*"))[-1]
    resumed = fit(cfg, resume=killed / "checkpoints" / "last.ckpt")
    assert max_difference(weights(straight.run_dir), weights(resumed.run_dir)) == 0.0
    assert resumed.metrics["final"] == straight.metrics["final"]


def test_kill_9_mid_epoch_then_resume_is_exact(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    cfg = _splits_config(tmp_path)
    straight = fit(cfg)
    script = (  # the same thread count as this process: it sets the float reduction order
        "import os, signal, sys, json, torch\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "from lightning.pytorch.callbacks import Callback\n"
        "from videolang.engine import fit\n"
        "class Kill(Callback):\n"
        "    def on_train_batch_end(self, trainer, *args):\n"
        "        if trainer.global_step == 5:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "fit(json.loads(sys.argv[1]), callbacks=[Kill()])\n"
    )
    import json

    done = subprocess.run([sys.executable, "-c", script, json.dumps(cfg)], cwd=os.getcwd(), check=False,
                          capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    killed = sorted((tmp_path / "toy_splits").glob("version_*"))[-1]
    resumed = fit(cfg, resume=killed / "checkpoints" / "last.ckpt")
    assert max_difference(weights(straight.run_dir), weights(resumed.run_dir)) == 0.0


class StopWhenEpochOneStarts(Callback):
    """A kill between epochs: epoch 0, its validation and its end-of-epoch checkpoint are done."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise SystemExit("interrupted")


def test_step_checkpoints_then_a_stop_between_epochs_keep_that_epochs_validation(tmp_path):
    """With a checkpoint every step, last.ckpt is rewritten at the epoch's end: resuming from it
    keeps epoch 0's validation in the history (the best checkpoint can come from it)."""
    cfg = _splits_config(tmp_path)
    straight = fit(cfg)
    with pytest.raises(SystemExit):
        fit(cfg, callbacks=[StopWhenEpochOneStarts()])
    killed = sorted((tmp_path / "toy_splits").glob("version_*"))[-1]
    resumed = fit(cfg, resume=killed / "checkpoints" / "last.ckpt")
    assert max_difference(weights(straight.run_dir), weights(resumed.run_dir)) == 0.0
    assert_same_history(straight.metrics["history"], resumed.metrics["history"])
