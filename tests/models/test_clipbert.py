"""ClipBERT model: clip consensus (LSE loss), frozen CNN layers, visual padding mask, text ->
video repetition, tied MLM decoder, the checkpoint converter (round trip, strict)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videolang.errors import ConfigError
from videolang.models import create_model
from videolang.models.clipbert import TEST_OVERRIDES, clip_consensus, lse_consensus_loss


def tiny(**overrides):
    torch.manual_seed(0)
    return create_model("clipbert-tiny", **{**TEST_OVERRIDES, **overrides})


def test_lse_consensus_loss_equals_ce_of_lse_pooled_logits():
    g = torch.Generator().manual_seed(0)
    clip_logits = torch.randn(5, 4, 7, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 7, (5,), generator=g)
    pooled = clip_consensus(clip_logits, "lse")
    assert torch.allclose(pooled, clip_logits.exp().sum(1).log())
    torch.testing.assert_close(lse_consensus_loss(clip_logits, y), F.cross_entropy(pooled, y), atol=1e-7, rtol=0)
    assert torch.equal(clip_consensus(clip_logits, "max"), clip_logits.max(1).values)
    assert torch.allclose(clip_consensus(clip_logits, "mean"), clip_logits.mean(1))
    with pytest.raises(ConfigError, match="consensus"):
        clip_consensus(clip_logits, "median")


def test_frozen_cnn_layers_get_no_gradient():
    model = tiny(**{"backbone.freeze_at": 2, "backbone.norm": "frozen_bn", "task": "qa", "num_labels": 5}).train()
    out = model(**model.example_inputs())
    F.cross_entropy(out["logits"], torch.tensor([1, 3])).backward()
    bb = model.cnn.backbone
    assert bb.conv1.weight.grad is None and all(p.grad is None for p in bb.layer1.parameters())
    assert bb.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert model.cnn.grid_encoder[0].weight.grad.abs().sum() > 0  # trained, as in the original


def test_visual_padding_mask_and_compat_flag():
    model = tiny(task="qa", num_labels=3).eval()
    inputs = model.example_inputs()
    s = model.config.frame_size
    pixel_mask = torch.ones(2, s, s, dtype=torch.bool)
    pixel_mask[:, s // 2:] = False  # bottom half padding: the bottom half of the token rows
    visual, vmask = model.encode_visual(inputs["frames"], pixel_mask)
    h = int(vmask.shape[1] ** 0.5)
    expected = torch.ones(h, h, dtype=torch.bool)
    expected[h // 2:] = False
    assert torch.equal(vmask, expected.flatten().expand(2, -1))
    # masked tokens cannot change the scores
    ids, am = inputs["input_ids"], inputs["attention_mask"]
    ref = model.score(visual, vmask, ids, am)["logits"]
    noisy = visual.clone()
    noisy[:, :, ~vmask[0]] += 5.0
    torch.testing.assert_close(model.score(noisy, vmask, ids, am)["logits"], ref)
    compat = tiny(task="qa", num_labels=3, visual_padding_mask=False)
    assert compat.encode_visual(inputs["frames"], pixel_mask)[1].all()


def test_texts_share_their_videos_visual_tokens():
    model = tiny(task="mc", num_labels=1).eval()
    inputs = model.example_inputs(batch_size=2)
    visual, vmask = model.encode_visual(inputs["frames"])
    ids = torch.randint(5, 128, (6, 5))
    am = torch.ones_like(ids, dtype=torch.bool)
    index = torch.tensor([0, 0, 0, 1, 1, 1])  # 3 options per video
    shared = model.score(visual, vmask, ids, am, video_index=index)["logits"]
    explicit = model.score(visual[index], vmask[index], ids, am)["logits"]
    torch.testing.assert_close(shared, explicit)
    assert shared.shape == (6, 1)


def test_pretraining_heads_tie_the_decoder():
    model = tiny(task="pretrain").train()
    out = model(**model.example_inputs())
    assert out["mlm_logits"].shape == (2, 6, 128) and out["itm_logits"].shape == (2, 2)
    out["mlm_logits"].sum().backward()
    assert model.transformer.bert.embeddings.word_embeddings.weight.grad is not None
    assert not any("decoder" in k for k in model.state_dict())


def test_pixel_random_sampling_only_in_training():
    model = tiny(task="pretrain", pixel_random_sampling_size=5, frame_size=64)  # 4x4 tokens
    frames = model.example_inputs()["frames"]
    assert model.train().encode_visual(frames)[0].shape[2] == 5
    assert model.eval().encode_visual(frames)[0].shape[2] == 16


def test_grid_encoder_shape():
    model = tiny(**{"backbone.res5_dilation": 1, "frame_size": 448})
    grid = model.cnn.grid_encoder(torch.randn(6, model.config.backbone.out_channels, 14, 14))
    assert grid.shape == (6, 32, 7, 7)  # 14x14 res5 map at L=448 -> 7x7 = 49 tokens


def _original_layout(model) -> dict[str, torch.Tensor]:
    """Our state dict written back in the original ClipBert layout (clipbert.md §5.5)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("cnn.backbone."):
            k = key[len("cnn.backbone."):]
            if k.startswith(("conv1.", "bn1.")):
                k = "stem.conv1." + ("norm." if k.startswith("bn1.") else "") + k.split(".", 1)[1]
            else:
                stage, rest = k.split(".", 1)
                rest = rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
                for j in (1, 2, 3):
                    rest = rest.replace(f"bn{j}.", f"conv{j}.norm.")
                k = f"res{int(stage[5:]) + 1}.{rest}"
            out["cnn.feature.backbone." + k] = value.half()  # amp O2 checkpoints are fp16
        else:
            out[key] = value
    out["cnn.feature.pixel_mean"] = torch.zeros(3, 1, 1)
    out["cnn.feature.proposal_generator.rpn_head.conv.weight"] = torch.zeros(2, 2, 3, 3)
    out["cnn.feature.roi_heads.box_head.fc1.weight"] = torch.zeros(2, 2)
    out["transformer.bert.visual_embeddings.position_embeddings.weight"] = torch.zeros(512, 32)
    out["transformer.cls.predictions.decoder.weight"] = out["transformer.bert.embeddings.word_embeddings.weight"]
    out["transformer.cls.predictions.decoder.bias"] = out["transformer.cls.predictions.bias"]
    return out


def test_converter_round_trip_and_missing_key(tmp_path):
    import videolang
    from videolang.models import load_pretrained
    from videolang.pipelines.convert import convert_checkpoint

    overrides = {**TEST_OVERRIDES, "task": "pretrain", "backbone.norm": "frozen_bn", "backbone.freeze_at": 2}
    source = tiny(**overrides).eval()
    with torch.no_grad():  # non-trivial frozen statistics, exactly representable in fp16
        for m in source.cnn.backbone.modules():
            if hasattr(m, "running_var") and m.running_var is not None:
                m.running_mean.copy_(torch.randn_like(m.running_mean).half().float())
    state = _original_layout(source)
    ckpt = tmp_path / "clipbert_image_text_pretrained.pt"
    torch.save(state, ckpt)
    args = [f"{k}={v}" for k, v in overrides.items()]
    out = convert_checkpoint("clipbert", ckpt, tmp_path / "converted", model_name="clipbert-tiny", overrides=args)
    converted = load_pretrained(out)
    assert videolang.load(out).spec.task == "pretrain"  # a complete model folder (pipeline.json, tokenizer)
    inputs = source.example_inputs()
    with torch.no_grad():
        a, b = source(**inputs), converted(**inputs)
    backbone_fp16 = {k: v.half().float() for k, v in source.state_dict().items() if k.startswith("cnn.backbone.")}
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in backbone_fp16.items())
    source.cnn.backbone.load_state_dict({k[len("cnn.backbone."):]: v for k, v in backbone_fp16.items()})
    with torch.no_grad():
        a = source(**inputs)
    torch.testing.assert_close(b["itm_logits"], a["itm_logits"])
    torch.testing.assert_close(b["mlm_logits"], a["mlm_logits"])

    del state["cnn.feature.backbone.res3.0.conv2.norm.running_var"]
    torch.save(state, ckpt)
    with pytest.raises(ConfigError, match=r"missing keys: cnn\.backbone\.layer2\.0\.bn2\.running_var"):
        convert_checkpoint("clipbert", ckpt, tmp_path / "again", model_name="clipbert-tiny", overrides=args)
    assert not (tmp_path / "again").exists()
    state["transformer.cls.predictions.decoder.weight"] = torch.zeros_like(
        state["transformer.cls.predictions.decoder.weight"])
    torch.save(state, ckpt)
    with pytest.raises(ConfigError, match="not tied"):
        convert_checkpoint("clipbert", ckpt, tmp_path / "again", model_name="clipbert-tiny", overrides=args)


def test_config_errors():
    with pytest.raises(ConfigError, match="num_labels must be 2"):
        tiny(task="retrieval", num_labels=3)
    with pytest.raises(ConfigError, match="ClipBERT config: unknown key 'nope'"):
        from videolang.models.clipbert import ClipBertConfig

        ClipBertConfig.from_dict({"nope": 1})
