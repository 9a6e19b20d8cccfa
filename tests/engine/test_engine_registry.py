"""create_recipe_model: a build the model registry rejects names model.overrides when the user set it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from videolang.engine import create_recipe_model
from videolang.errors import ConfigError


def test_rejected_user_override_names_the_key():
    model_cfg = SimpleNamespace(name="vimpac-tiny", overrides={"pooling": "foo"})
    with pytest.raises(ConfigError, match=r"^model\.overrides=\{'pooling': 'foo'\} \(model\.name=vimpac-tiny\): "
                                          r"VIMPAC config: pooling 'foo'"):
        create_recipe_model(model_cfg, {**model_cfg.overrides, "length": 3})
    model_cfg.overrides = {"bogus": 1}
    with pytest.raises(ConfigError, match=r"^model\.overrides=.*unknown config key 'bogus'"):
        create_recipe_model(model_cfg, model_cfg.overrides)


def test_without_user_overrides_the_registry_error_is_unchanged():
    model_cfg = SimpleNamespace(name="vimpac-tiny", overrides={})
    with pytest.raises(ConfigError, match=r"^VIMPAC config: pooling 'foo'"):
        create_recipe_model(model_cfg, {"pooling": "foo"})  # set by the recipe, not the user


def test_builds_the_model():
    model = create_recipe_model(SimpleNamespace(name="vimpac-tiny", overrides={"dropout": 0.0}), {"dropout": 0.0})
    assert model.config.dropout == 0.0
