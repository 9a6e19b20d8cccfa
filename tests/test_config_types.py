from __future__ import annotations

import pytest

from videolang.errors import ConfigError
from videolang.models import create_model
from videolang.models.clipbert import ClipBertConfig
from videolang.models.videoclip import VideoCLIPConfig
from videolang.models.vimpac import VimpacConfig
from videolang.models.vlm import VLMConfig


@pytest.mark.parametrize("value", ["no", 1, None])
def test_vimpac_bool_override_must_be_a_bool(value):
    # a YAML string such as "no" is truthy: it must not switch classifier_norm on silently
    with pytest.raises(ConfigError, match=r"VIMPAC config: classifier_norm must be true or false, got"):
        VimpacConfig.from_dict({"classifier_norm": value})


def test_vimpac_override_types_through_create_model():
    with pytest.raises(ConfigError, match=r"hidden_size must be int, got '64'"):
        create_model("vimpac-tiny", hidden_size="64")
    with pytest.raises(ConfigError, match=r"dropout must be float, got True"):
        create_model("vimpac-tiny", dropout=True)
    with pytest.raises(ConfigError, match=r"num_heads must be int or null, got 2.5"):
        create_model("vimpac-tiny", num_heads=2.5)


def test_ints_are_floats_and_optionals_take_null():
    cfg = VimpacConfig.from_dict({"dropout": 0, "num_heads": None, "pre_norm": True})
    assert cfg.dropout == 0 and cfg.num_heads is None and cfg.pre_norm is True


@pytest.mark.parametrize(("cls", "what", "key"), [
    (VLMConfig, "VLM config", "standardize_features"),
    (ClipBertConfig, "ClipBERT config", "visual_padding_mask"),
    (VideoCLIPConfig, "VideoCLIP config", "max_video_len"),
])
def test_other_model_configs_name_the_bad_key(cls, what, key):
    with pytest.raises(ConfigError, match=rf"{what}: {key} must be"):
        cls.from_dict({key: "yes"})
