"""`videolang fit | validate | test | predict` through videolang.cli.train.register."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import yaml
from tests.engine.toy_recipe import RECIPE

from videolang.cli.train import register
from videolang.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videolang")
    register(p.add_subparsers(dest="command"))
    return p


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "configs" / "toy" / "classify.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(f"recipe: {RECIPE}\ntrainer:\n  max_epochs: 3\n  enable_progress_bar: false\n"
                    "  limit_train_batches: 2\n  limit_val_batches: 2\n  monitor: val/acc\n  monitor_mode: max\n")
    return path


def printed_summary(out: str) -> dict:
    """The JSON summary the command prints last (Lightning prints its model summary before)."""
    return json.loads(out[out.rindex('{\n  "run_dir"'):])


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


def test_fit_then_test_from_the_command_line(config_file, tmp_path, capsys):
    root = tmp_path / "runs"
    # overrides before, between and after the options
    assert run(["fit", "trainer.max_epochs=1", "--config", str(config_file), "optim.lr=2e-3", "--seed", "5",
                "--name", "cli", "--run-root", str(root), "model.hidden=8"]) == 0
    summary = printed_summary(capsys.readouterr().out)
    run_dir = root / "cli" / "version_0"
    assert summary["run_dir"] == str(run_dir) and summary["best"]["epoch"] == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["seed"] == 5 and saved["name"] == "cli" and saved["model"]["hidden"] == 8
    assert saved["optim"]["lr"] == 2e-3 and saved["trainer"]["max_epochs"] == 1
    assert run(["test", "--config", str(run_dir / "config.yaml"), "--ckpt", "last"]) == 0
    summary = printed_summary(capsys.readouterr().out)
    assert summary["run_dir"] == str(root / "cli" / "version_1") and "test/acc" in summary["test"]


def test_print_config_and_errors(config_file, capsys):
    assert run(["validate", "-c", str(config_file), "--print-config", "optim.schedule=cosine"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["schedule"] == "cosine" and printed["name"] == "toy.classify"
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.lrr' \(did you mean 'optim\.lr'\?\)"):
        run(["fit", "--config", str(config_file), "optim.lrr=1"])
    with pytest.raises(ConfigError, match="pass --config"):
        run(["fit"])


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict"):
        assert command in out


def test_library_and_cli_registration_do_not_import_lightning():
    code = ("import sys, videolang, videolang.data, videolang.cli.train; "
            "sys.exit(1 if any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
