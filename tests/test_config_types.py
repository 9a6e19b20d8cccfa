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
    with pytest.raises(ConfigError, match=r"VIMPAC config: key 'classifier_norm' expects bool, got"):
        VimpacConfig.from_dict({"classifier_norm": value})


def test_vimpac_override_types_through_create_model():
    with pytest.raises(ConfigError, match=r"key 'hidden_size' expects int, got '64' \(str\)"):
        create_model("vimpac-tiny", hidden_size="64")
    with pytest.raises(ConfigError, match=r"key 'dropout' expects float, got True \(bool\)"):
        create_model("vimpac-tiny", dropout=True)
    with pytest.raises(ConfigError, match=r"key 'num_heads' expects int or null, got 2.5 \(float\)"):
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
    with pytest.raises(ConfigError, match=rf"{what}: key '{key}' expects"):
        cls.from_dict({key: "yes"})


@pytest.mark.parametrize(("cls", "what"), [(VLMConfig, "VLM config"), (ClipBertConfig, "ClipBERT config"),
                                           (VideoCLIPConfig, "VideoCLIP config"), (VimpacConfig, "VIMPAC config")])
def test_model_configs_refuse_unknown_keys_and_check_nested_sections(cls, what):
    with pytest.raises(ConfigError, match=rf"{what}: unknown key 'nope'"):
        cls.from_dict({"nope": 1})


def test_nested_sections_are_checked_to_the_leaf():
    with pytest.raises(ConfigError, match=r"ClipBERT config: key 'bert.hidden_size' expects int, got '8' \(str\)"):
        ClipBertConfig.from_dict({"bert": {"hidden_size": "8"}})
    with pytest.raises(ConfigError, match=r"resnet config: key 'blocks\[1\]' expects int, got 'x'"):
        ClipBertConfig.from_dict({"backbone": {"blocks": [1, "x"]}})
    assert ClipBertConfig.from_dict({"backbone": {"blocks": [1, 1, 1, 1]}}).backbone.blocks == (1, 1, 1, 1)
