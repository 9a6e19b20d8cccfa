"""VLM's joint encoder and MTM loss against the original's golden outputs; the isolated mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from videolang.errors import ConfigError
from videolang.losses import mtm_loss
from videolang.models.bert import BertConfig
from videolang.models.vlm import VLM, VLMConfig, convert_mmpt_vlm_state_dict, isolated_mask

GOLDEN = Path(__file__).resolve().parents[2] / ".." / "shared" / "specs" / "golden" / "vlm_tiny_mtm.pt"


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.exists():
        pytest.fail(f"golden file missing: {GOLDEN} (shared/specs must sit beside the repo)")
    return torch.load(GOLDEN, weights_only=False)


def tiny() -> VLM:
    bert = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=128)
    return VLM(VLMConfig(max_video_len=8, bert=bert)).eval()


def test_mtm_golden(golden):
    model = tiny()
    convert_mmpt_vlm_state_dict({"model": {f"mmmodel.mm_encoder.{k}": v for k, v in golden["state_dict"].items()}},
                                model)
    i = golden["inputs"]
    original_feats = i["vfeats"].clone()
    with torch.no_grad():
        video, text, targets = model.mtm_logits(i["caps"], i["cmasks"], i["vfeats"], i["vmasks"],
                                                i["video_label"], i["text_label"])
    assert video.shape == (2, 212) and text.shape == (2, 211)  # 1 + 11 non-masked + 200 / 200 + 11
    torch.testing.assert_close(video, golden["video_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(text, golden["text_logits"], atol=1e-5, rtol=0)
    assert mtm_loss(video, text, targets).item() == pytest.approx(5.152780, abs=1e-5)
    assert torch.equal(i["vfeats"], original_feats)  # the original zeroed masked frames in place


def test_mtm_loss_hand_computed():
    video = torch.tensor([[2.0, 0.0, 1.0]])
    text = torch.tensor([[0.0, 3.0]])  # + the appended zero column -> [0, 3, 0], target 1
    expected = (-(2 - torch.log(torch.exp(torch.tensor([2.0, 0.0, 1.0])).sum()))
                - (3 - torch.log(torch.exp(torch.tensor([0.0, 3.0, 0.0])).sum()))) / 2
    assert mtm_loss(video, text, torch.tensor([1])).item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="columns"):
        mtm_loss(video, text, torch.tensor([1]), zero_logit=False)


def test_isolated_mask_equals_separate_passes(golden):
    model = tiny()
    convert_mmpt_vlm_state_dict(golden["state_dict"], model)
    i = golden["inputs"]
    caps, cmasks, vfeats, vmasks = i["caps"], i["cmasks"], i["vfeats"], i["vmasks"]
    tv = vfeats.shape[1]
    with torch.no_grad():
        joint = model(caps, cmasks, vfeats, vmasks, attention_mask=isolated_mask(cmasks, vmasks))
        x, keys = model.embed(caps, cmasks, vfeats, vmasks)  # shared embeddings, then split
        video = model.bert.encode(x[:, 1 : tv + 2], keys[:, 1 : tv + 2])
        text = model.bert.encode(x[:, tv + 2 :], keys[:, tv + 2 :])
        cls = model.bert.encode(x[:, :1], keys[:, :1])
    valid_video = keys[:, 1 : tv + 2]
    torch.testing.assert_close(joint[:, 1 : tv + 2][valid_video], video[valid_video], atol=1e-5, rtol=0)
    valid_text = keys[:, tv + 2 :]
    torch.testing.assert_close(joint[:, tv + 2 :][valid_text], text[valid_text], atol=1e-5, rtol=0)
    torch.testing.assert_close(joint[:, :1], cls, atol=1e-5, rtol=0)
    # and the full mask differs (the test would catch an isolated mask that isolates nothing)
    full = model(caps, cmasks, vfeats, vmasks)
    assert (full[:, 1 : tv + 2][valid_video] - video[valid_video]).abs().max() > 1e-3


def test_vlm_converter_is_strict(golden):
    state = dict(golden["state_dict"])
    del state["cls.predictions.decoder.weight"]
    with pytest.raises(ConfigError, match=r"missing keys: cls\.predictions\.decoder\.weight"):
        convert_mmpt_vlm_state_dict(state, tiny())
