"""VideoCLIP against the original's golden outputs, and its converter."""

from __future__ import annotations

import pytest
import torch
from tests.golden import load_golden

from videolang.errors import ConfigError
from videolang.models.bert import BertConfig
from videolang.models.convert.videoclip import convert_mmpt_state_dict
from videolang.models.videoclip import VideoCLIP, VideoCLIPConfig

TINY = dict(vocab_size=200, hidden_size=32, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128)


@pytest.fixture(scope="module")
def golden():
    return load_golden("videoclip_tiny_separate")


def golden_model() -> VideoCLIP:
    cfg = VideoCLIPConfig(feature_dim=512, max_video_len=8, video=BertConfig(num_hidden_layers=2, **TINY),
                          text=BertConfig(num_hidden_layers=3, **TINY))
    return VideoCLIP(cfg).eval()


def original_checkpoint(golden) -> dict:
    """The golden towers in the released checkpoint's layout (fairseq dict, mmmodel. prefix)."""
    model = {f"mmmodel.video_encoder.{k}": v for k, v in golden["video_sd"].items()}
    model.update({f"mmmodel.text_encoder.{k}": v for k, v in golden["text_sd"].items()})
    return {"model": model, "args": None}


def text_inputs(golden):
    # MMPT text layout is [CLS] [SEP] w.. [SEP]; its text tower sees [CLS] + caps[2:].
    caps, cmasks = golden["caps"], golden["cmasks"]
    return torch.cat([caps[:, :1], caps[:, 2:]], 1), torch.cat([cmasks[:, :1], cmasks[:, 2:]], 1)


def test_golden_pooled_outputs(golden):
    model = golden_model()
    convert_mmpt_state_dict(original_checkpoint(golden), model)
    with torch.no_grad():
        video = model.encode_video(golden["vfeats"], golden["vmasks"])
        text = model.encode_text(*text_inputs(golden))
    torch.testing.assert_close(video, golden["pooled_video"], atol=1e-5, rtol=0)
    torch.testing.assert_close(text, golden["pooled_text"], atol=1e-5, rtol=0)
    # spec §7: norms [2.53219, 2.30867, 3.15712] and [4.35963, 3.69926, 3.84955]
    torch.testing.assert_close(video.norm(dim=-1), torch.tensor([2.53219, 2.30867, 3.15712]), atol=1e-4, rtol=0)
    torch.testing.assert_close(text.norm(dim=-1), torch.tensor([4.35963, 3.69926, 3.84955]), atol=1e-4, rtol=0)


def test_pooled_video_ignores_padded_frames(golden):
    model = golden_model()
    convert_mmpt_state_dict(original_checkpoint(golden), model)
    feats = golden["vfeats"].clone()
    feats[~golden["vmasks"]] = 123.0
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(feats, golden["vmasks"]), golden["pooled_video"],
                                   atol=1e-5, rtol=0)


def test_converter_is_strict(golden):
    ckpt = original_checkpoint(golden)
    missing = dict(ckpt["model"])
    del missing["mmmodel.text_encoder.encoder.layer.2.output.dense.weight"]
    with pytest.raises(ConfigError, match=r"missing keys: text_encoder\.encoder\.layer\.2\.output\.dense\.weight"):
        convert_mmpt_state_dict({"model": missing}, golden_model())
    extra = dict(ckpt["model"], **{"mmmodel.video_encoder.extra_head.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match=r"unexpected keys: video_encoder\.extra_head\.weight"):
        convert_mmpt_state_dict({"model": extra}, golden_model())
    # fp16 checkpoints (the release was trained in fp16) load as fp32
    half = {"model": {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}}
    model = golden_model()
    convert_mmpt_state_dict(half, model)
    assert model.text_encoder.embeddings.word_embeddings.weight.dtype == torch.float32


def test_converter_round_trip_from_our_model():
    """Build an original-layout checkpoint from a model of ours, convert, same outputs."""
    torch.manual_seed(0)
    ours = golden_model()
    original = {"model": {f"mmmodel.{k}": v for k, v in ours.state_dict().items()}}
    original["model"]["mmmodel.text_encoder.pooler.dense.weight"] = torch.zeros(32, 32)
    original["model"]["mmmodel.text_encoder.embeddings.position_ids"] = torch.arange(128)[None]
    again = golden_model()
    convert_mmpt_state_dict(original, again)
    feats, mask = torch.randn(2, 5, 512), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    ids = torch.tensor([[101, 7, 8, 102, 0], [101, 9, 102, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_video(feats, mask), again.encode_video(feats, mask), rtol=0, atol=0)
        torch.testing.assert_close(ours.encode_text(ids), again.encode_text(ids), rtol=0, atol=0)


def test_hidden_size_mismatch_needs_projection():
    cfg = VideoCLIPConfig(video=BertConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1),
                          text=BertConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1))
    with pytest.raises(ConfigError, match="projection_dim"):
        VideoCLIP(cfg)
    cfg.projection_dim = 16
    model = VideoCLIP(cfg)
    assert model.encode_video(torch.randn(1, 3, 512)).shape == (1, 16)


def test_convert_command_round_trip(golden, tmp_path):
    """`videolang convert videoclip CKPT OUT`: an original-layout checkpoint file becomes a model
    folder with identical outputs; a missing key fails listing it."""
    from videolang.cli.main import main
    from videolang.models import load_pretrained

    ckpt = tmp_path / "checkpoint_best.pt"
    torch.save(original_checkpoint(golden), ckpt)
    tiny = ["max_video_len=8", *(f"{t}.{k}={v}" for t in ("video", "text") for k, v in TINY.items()),
            "video.num_hidden_layers=2", "text.num_hidden_layers=3"]
    assert main(["convert", "videoclip", str(ckpt), str(tmp_path / "out"), "--set", *tiny]) == 0
    model = load_pretrained(tmp_path / "out")
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(golden["vfeats"], golden["vmasks"]), golden["pooled_video"],
                                   atol=1e-5, rtol=0)
    broken = original_checkpoint(golden)
    del broken["model"]["mmmodel.video_encoder.videomlp.linear2.bias"]
    torch.save(broken, ckpt)
    assert main(["convert", "videoclip", str(ckpt), str(tmp_path / "out2"), "--set", *tiny]) == 2
    assert not (tmp_path / "out2").exists()  # nothing half-written
