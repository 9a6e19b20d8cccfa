"""A tiny fit on the toy recipe: run folder contents, reproduction, evaluation commands."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tests.engine.toy_recipe import toy_config

from videolang.engine import fit, predict, test, validate
from videolang.engine.run import AtomicCheckpointIO, resolve_checkpoint
from videolang.errors import ConfigError

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, fit(toy_config(root), ["optim.weight_decay=0.02"])


def state_dict(ckpt) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_run_folder_contents(fitted):
    root, result = fitted
    run = result.run_dir
    assert run == root / "toy" / "version_0"
    for name in ("config.yaml", "metrics.json", "metrics.csv", "checkpoints/last.ckpt",
                 "export/model.safetensors", "export/config.json", "plots/train_loss.png",
                 "plots/val_acc.png", "plots/val_loss.png"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*")), "TensorBoard event file"
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    for png in (run / "plots").glob("*.png"):
        assert png.read_bytes().startswith(PNG)
    assert not list(run.rglob(".*.tmp")), "no temporary files left behind"


def test_config_yaml_is_the_resolved_config(fitted):
    _, result = fitted
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["optim"]["weight_decay"] == 0.02  # the override
    assert saved["model"] == {"hidden": 16, "dropout": 0.2, "num_classes": 3}  # recipe defaults
    assert saved["trainer"]["monitor"] == "val/acc" and saved["run"]["version"] is None


def test_metrics_json_and_csv(fitted):
    _, result = fitted
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics == result.metrics
    assert metrics["stage"] == "fit" and metrics["monitor"] == "val/acc" and metrics["resumed_from"] is None
    val = metrics["history"]["val"]
    assert [e["epoch"] for e in val] == [0, 1]
    assert metrics["best"] == max(val, key=lambda e: e["val/acc"])
    assert metrics["final"] == val[-1]
    assert {"val/acc", "val/loss"} <= set(metrics["final"])
    train = metrics["history"]["train"]
    assert [e["step"] for e in train] == list(range(2, 17, 2))  # log_every_n_steps=2, 8 steps/epoch
    assert metrics["checkpoints"]["best"].endswith(".ckpt") and metrics["export"].endswith("export")
    with open(result.run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("val/acc") for r in rows) and any(r.get("train/loss") for r in rows)


def test_export_holds_the_best_weights(fitted):
    _, result = fitted
    exported = load_file(result.run_dir / "export" / "model.safetensors")
    best = state_dict(result.metrics["checkpoints"]["best"])
    assert exported.keys() == best.keys()
    for key in best:
        torch.testing.assert_close(exported[key], best[key], rtol=0, atol=0)
    config = json.loads((result.run_dir / "export" / "config.json").read_text())
    assert config["model"]["hidden"] == 16


def test_saved_config_reproduces_the_run(fitted):
    root, result = fitted
    again = fit(result.run_dir / "config.yaml")
    assert again.run_dir == root / "toy" / "version_1"
    assert again.metrics["history"] == result.metrics["history"]
    first, second = state_dict(result.run_dir / "checkpoints/last.ckpt"), state_dict(again.run_dir / "checkpoints/last.ckpt")
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=1e-6)


def test_evaluate_and_predict_with_a_checkpoint(fitted):
    root, result = fitted
    best_ckpt = result.metrics["checkpoints"]["best"]
    tested = test(toy_config(root), resume=best_ckpt)
    # the toy's test data is its validation data: the best checkpoint scores its best val/acc
    assert tested.metrics["test"]["test/acc"] == pytest.approx(result.metrics["best"]["val/acc"])
    assert tested.metrics["checkpoint"] == best_ckpt
    validated = validate(None, resume=result.run_dir)  # config from the run folder, weights of last.ckpt
    assert validated.metrics["validate"]["val/acc"] == pytest.approx(result.metrics["final"]["val/acc"])
    predicted = predict(toy_config(root), resume="best")
    assert (predicted.run_dir / "predictions.pt").is_file()
    assert predicted.metrics["num_batches"] == 4 and len(predicted.predictions) == 4
    for run, stage in ((tested, "test"), (validated, "validate"), (predicted, "predict")):
        assert (run.run_dir / "config.yaml").is_file() and (run.run_dir / "metrics.json").is_file()
        assert run.metrics["stage"] == stage


def test_resolve_checkpoint(fitted, tmp_path):
    root, result = fitted
    from videolang.engine import load_config

    cfg = load_config(toy_config(root))
    assert resolve_checkpoint("last", cfg).name == "last.ckpt"
    assert resolve_checkpoint(result.run_dir) == result.run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="no such checkpoint"):
        resolve_checkpoint(tmp_path / "nothing.ckpt")
    with pytest.raises(ConfigError, match="no last checkpoint under"):
        resolve_checkpoint("last", load_config(toy_config(tmp_path)))


def test_explicit_version_and_collision(tmp_path):
    cfg = toy_config(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    cfg["run"]["version"] = "exp"
    result = fit(cfg, ["run.export=false", "run.plots=false"])
    assert result.run_dir == tmp_path / "toy" / "exp" and "export" not in result.metrics
    assert not (result.run_dir / "plots").exists()
    with pytest.raises(ConfigError, match="already exists"):
        fit(cfg)


def test_atomic_checkpoint_io_keeps_the_old_file_on_failure(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "a.ckpt"
    io.save_checkpoint({"x": torch.ones(2)}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        io.save_checkpoint({"x": torch.zeros(2), "bad": lambda: None}, path)
    torch.testing.assert_close(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["a.ckpt"]
