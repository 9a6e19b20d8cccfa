"""The demos' shared steps: one world-reuse policy and one fit-then-test policy."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from videolang.cli.demos import steps
from videolang.errors import ConfigError, VideolangError


def _age(path: Path, seconds: float) -> None:
    """Move ``path``'s modification time ``seconds`` into the past."""
    t = path.stat().st_mtime - seconds
    os.utime(path, (t, t))


def test_a_matching_world_is_reused_and_another_replaces_it(tmp_path, capsys):
    world = steps.synthesize_or_reuse(tmp_path / "world", 3, seed=0)
    assert world.manifest["args"]["num_videos"] == 3 and "reusing" not in capsys.readouterr().out
    derived = tmp_path / "features.json"
    derived.write_text("{}")
    assert not world.outdates(derived) and world.outdates(tmp_path / "missing")

    again = steps.synthesize_or_reuse(tmp_path / "world", 3, seed=0)
    assert again.manifest == world.manifest and "reusing the world" in capsys.readouterr().out
    assert not again.outdates(derived)  # a reused world keeps what was derived from it

    _age(derived, 60)  # written before the next world
    other = steps.synthesize_or_reuse(tmp_path / "world", 3, seed=1)
    assert other.manifest["args"]["seed"] == 1 and "reusing" not in capsys.readouterr().out
    assert other.outdates(derived)  # derived from the replaced world: rebuilt


def test_an_older_generator_version_is_not_reused(tmp_path, monkeypatch, capsys):
    import videolang.synth

    steps.synthesize_or_reuse(tmp_path / "world", 3, seed=0)
    monkeypatch.setattr(videolang.synth, "GENERATOR_VERSION", "a-later-version")
    calls = []
    monkeypatch.setattr(videolang.synth, "synthesize_world", lambda *a, **k: calls.append(a) or {"args": {}})
    steps.synthesize_or_reuse(tmp_path / "world", 3, seed=0)
    assert calls == [(tmp_path / "world", 3, 0)] and "reusing" not in capsys.readouterr().out


def _fake_engine(monkeypatch, checkpoints: dict) -> list:
    import videolang.engine

    calls = []

    def fit(config, overrides):
        calls.append(("fit", list(overrides), None))
        return SimpleNamespace(run_dir=Path("runs/x/version_0"), metrics={"checkpoints": checkpoints, "final": {}})

    def test(config, overrides, resume=None):
        calls.append(("test", list(overrides), resume))
        return SimpleNamespace(metrics={"test": {"test/acc": 50.0}})

    monkeypatch.setattr(videolang.engine, "fit", fit)
    monkeypatch.setattr(videolang.engine, "test", test)
    return calls


@pytest.mark.parametrize(("checkpoints", "tested"), [
    ({"best": "b.ckpt", "last": "l.ckpt"}, "b.ckpt"),  # the weights the export holds
    ({"best": None, "last": "l.ckpt"}, "l.ckpt"),      # no monitor: the last epoch's
])
def test_fit_then_test_tests_the_checkpoint_of_the_export(monkeypatch, checkpoints, tested):
    calls = _fake_engine(monkeypatch, checkpoints)
    run = steps.fit_then_test(Path("c.yaml"), ["seed=1"])
    assert calls == [("fit", ["seed=1"], None), ("test", ["seed=1"], tested)]  # the same overrides
    assert run.test == {"test/acc": 50.0} and run.export == Path("runs/x/version_0/export")


def test_fit_then_test_refuses_a_fit_without_checkpoints(monkeypatch):
    _fake_engine(monkeypatch, {"best": None, "last": None})
    with pytest.raises(VideolangError, match="no checkpoint"):
        steps.fit_then_test(Path("c.yaml"), [])


def test_demo_config_names_a_missing_file():
    assert steps.demo_config("videoclip", "synthetic_pretrain.yaml").is_file()
    with pytest.raises(ConfigError, match=r"demo config not found: .*nothing\.yaml"):
        steps.demo_config("videoclip", "nothing.yaml")


def test_epochs_and_seed_statistics():
    assert steps.scaled_epochs(10, 0.3) == 3 and steps.scaled_epochs(2, 0.1) == 1
    assert steps.mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5)) and steps.mean_std([4.0]) == (4.0, 0.0)
