"""Every shipped config validates against its recipe's schema (keys and types)."""

from __future__ import annotations

from pathlib import Path

import pytest

from videolang.engine import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


def test_configs_exist():
    assert len(CONFIGS) >= 6


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.recipe.startswith(path.parent.name)
