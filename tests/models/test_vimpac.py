"""VIMPAC backbone and heads: paper parameter counts, the original's golden outputs through the
converter, layouts against a loop-based reference, PAD handling, positions, checkpointing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.golden import load_golden

import videolang
from videolang.errors import ConfigError
from videolang.models import create_model, load_pretrained, save_pretrained
from videolang.models.convert.vimpac import CONVERTER, convert_vimpac_state_dict
from videolang.models.vimpac import (
    TEST_OVERRIDES,
    SyncBatchNorm1d,
    VimpacBackbone,
    VimpacConfig,
    VimpacForClassification,
    parse_layout,
)
from videolang.pipelines.convert import convert_checkpoint


@pytest.fixture(scope="module")
def golden():
    return load_golden("vimpac_tiny")


def _count(name: str, **overrides) -> int:
    with torch.device("meta"):
        model = create_model(name, **overrides)
    return sum(p.numel() for p in model.backbone.parameters())


def test_parameter_counts_equal_the_paper():
    assert _count("vimpac-small") == 29_442_048
    assert _count("vimpac-base") == 119_748_096
    assert _count("vimpac-large-half") == 210_106_368
    assert _count("vimpac-small", layout="T,H,W") == 35_751_936  # Table 13: 35.8M
    with torch.device("meta"):
        full = create_model("vimpac-small")
    assert sum(p.numel() for p in full.parameters()) == pytest.approx(31.29e6, abs=0.01e6)


def _golden_model(golden):
    cfg = golden["config"]
    model = create_model("vimpac-tiny", codebook_size=cfg["vocab_size"] - 5, hidden_size=cfg["hid_dim"],
                         num_layers=cfg["layers"], num_heads=cfg["heads"], proj_hidden_size=cfg["nce_proj_hid"],
                         proj_size=cfg["nce_out"], proj_layers=cfg["nce_proj_layers"], layout=cfg["layout"])
    assert model.config.pad_token_id == cfg["pad_id"] and model.config.mask_token_id == cfg["mask_id"]
    return model


def _check_golden(model, golden):
    model.eval()
    with torch.no_grad():
        out = model(golden["input_codes"])
    torch.testing.assert_close(out["cls"], golden["backbone_cls"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["hidden"], golden["backbone_hiddens"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["projection"], golden["cls_head_out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["mlm_logits"][:, 0, 0, 0], golden["mlm_logits_first_position"], atol=1e-5, rtol=0)
    total = out["mlm_logits"].double().sum().item()
    assert total == pytest.approx(golden["mlm_logits_sum"].item(), rel=1e-6)


def test_golden_outputs_through_converter(golden, tmp_path):
    model = _golden_model(golden)
    convert_vimpac_state_dict(golden["state_dict"], model, source="golden")
    _check_golden(model, golden)
    # the CLI path: `videolang convert vimpac CKPT OUT` with the tiny geometry as overrides
    ckpt = tmp_path / "classifier.pt"
    torch.save(golden["state_dict"], ckpt)
    c = golden["config"]
    out = convert_checkpoint("vimpac", ckpt, tmp_path / "out", model_name="vimpac-tiny", overrides=[
        f"codebook_size={c['vocab_size'] - 5}", f"proj_size={c['nce_out']}", f"proj_hidden_size={c['nce_proj_hid']}"])
    _check_golden(load_pretrained(out), golden)
    # a complete model folder (its use: videolang.pipelines.vimpac, tested in tests/pipelines)
    assert videolang.load(out).spec.task == "features" and "pipeline" not in CONVERTER


def test_converter_is_strict(golden):
    state = dict(golden["state_dict"])
    state.pop("backbone.transformer.resblocks.1.mlp.c_fc.bias")
    with pytest.raises(ConfigError, match=r"missing keys: backbone\.layers\.1\.mlp\.fc1\.bias"):
        convert_vimpac_state_dict(state, _golden_model(golden), source="ckpt")
    state = dict(golden["state_dict"], **{"backbone.extra.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match=r"unexpected keys backbone\.extra\.weight"):
        convert_vimpac_state_dict(state, _golden_model(golden), source="ckpt")
    untied = dict(golden["state_dict"])
    untied["mlm_head.decoder.weight"] = untied["mlm_head.decoder.weight"] + 1
    with pytest.raises(ConfigError, match="not tied"):
        convert_vimpac_state_dict(untied, _golden_model(golden), source="ckpt")
    # a fine-tuned checkpoint: backbone + cls_fc, into the classifier architecture
    tuned = {k: v for k, v in golden["state_dict"].items() if k.startswith("backbone.")}
    tuned.update({"cls_fc.weight": torch.randn(7, 128), "cls_fc.bias": torch.randn(7)})
    with pytest.raises(ConfigError, match="vimpac-classifier"):
        convert_vimpac_state_dict(tuned, _golden_model(golden), source="ckpt")
    clf = create_model("vimpac-tiny", architecture="vimpac-classifier", num_classes=7, codebook_size=8192,
                       num_layers=2)
    convert_vimpac_state_dict({"state_dict": {f"module.{k}": v for k, v in tuned.items()}}, clf)
    assert torch.equal(clf.classifier.weight, tuned["cls_fc.weight"])


def test_converter_takes_clip_shape_from_checkpoint(golden):
    state = dict(golden["state_dict"])
    for axis, n in (("height", 16), ("width", 16)):
        key = f"backbone.positional_embedding.{axis}_pos_embedding"
        state[key] = torch.randn(n, 128)
    model = _golden_model(golden)
    convert_vimpac_state_dict(state, model)
    assert (model.config.height, model.config.width) == (16, 16)


# ---- layouts against a loop-based reference --------------------------------------------------


def _reference_block(block, x, cls, pad):
    """One post-LN attention block computed row by row, the original's way (CLS copied into
    every row, per-row softmax with PAD keys at -inf, CLS outputs averaged over rows)."""
    b, length, height, width, _ = x.shape
    outs, cls_outs = [], []
    n_pat = len(block.patterns)
    for pattern, qkv_w, qkv_b in zip(block.patterns, block.qkv.weight.chunk(n_pat), block.qkv.bias.chunk(n_pat),
                                     strict=True):
        out = torch.zeros(b, length, height, width, qkv_w.shape[0] // 3)
        cls_out = torch.zeros(b, qkv_w.shape[0] // 3)
        axes = {"T": range(length), "H": range(height), "W": range(width)}
        positions = [(t, i, j) for t in range(length) for i in range(height) for j in range(width)]
        rows: dict[tuple, list] = {}
        for pos in positions:
            key = tuple(v if a not in pattern else None for a, v in zip("THW", pos, strict=True))
            rows.setdefault(key, []).append(pos)
        assert all(len(r) == math.prod(len(axes[a]) for a in pattern) for r in rows.values())
        for s in range(b):
            for members in rows.values():
                seq = torch.stack([cls[s]] + [x[s, t, i, j] for t, i, j in members])
                q, k, v = F.linear(seq, qkv_w, qkv_b).chunk(3, -1)
                heads = block.heads
                q, k, v = (z.view(len(seq), heads, -1).transpose(0, 1) for z in (q, k, v))
                scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
                key_pad = torch.tensor([False] + [bool(pad[s, t, i, j]) for t, i, j in members])
                scores = scores.masked_fill(key_pad, float("-inf"))
                o = (scores.softmax(-1) @ v).transpose(0, 1).reshape(len(seq), -1)
                cls_out[s] += o[0] / len(rows)
                for (t, i, j), row in zip(members, o[1:], strict=True):
                    out[s, t, i, j] = row
        outs.append(out)
        cls_outs.append(cls_out)
    a, c = torch.cat(outs, -1), torch.cat(cls_outs, -1)
    return block.norm(x + block.proj(a)), block.norm(cls + block.proj(c))


@pytest.mark.parametrize("layout", ["T,H|W", "T|H|W", "T,HW", "THW"])
def test_layouts_match_row_by_row_reference(layout):
    torch.manual_seed(0)
    cfg = VimpacConfig(codebook_size=16, hidden_size=24, num_layers=1, num_heads=6, mlp_size=32, layout=layout,
                       length=3, height=4, width=2)
    backbone = VimpacBackbone(cfg).eval()
    codes = torch.randint(0, 16, (2, 3, 4, 2))
    codes[1, 2] = cfg.pad_token_id
    pad = codes == cfg.pad_token_id
    x, cls = backbone.embed(codes)
    layer = backbone.layers[0]
    with torch.no_grad():
        got_x, got_c = x, cls
        ref_x, ref_c = x, cls
        for block in layer.attention_blocks:
            got_x, got_c = block(got_x, got_c, pad)
            ref_x, ref_c = _reference_block(block, ref_x, ref_c, pad)
    torch.testing.assert_close(got_x, ref_x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_c, ref_c, atol=1e-5, rtol=1e-5)
    assert parse_layout(layout) == [p.split("|") for p in layout.split(",")]


def test_bad_layouts_rejected():
    with pytest.raises(ConfigError, match="bad attention pattern 'X'"):
        VimpacConfig.from_dict({"layout": "T,X"})
    with pytest.raises(ConfigError, match="divisible"):
        VimpacConfig.from_dict({"layout": "T|H|W", "hidden_size": 512})  # the original's limitation too


def test_padded_positions_do_not_leak():
    torch.manual_seed(0)
    model = create_model("vimpac-tiny", **TEST_OVERRIDES).eval()
    codes = model.example_inputs(2)["codes"]
    pad = codes == model.config.pad_token_id
    assert pad[0].any() and not pad[1].any()
    other = codes.clone()
    other[pad] = torch.randint(0, 64, (int(pad.sum()),))
    with torch.no_grad():
        cls_a, hid_a = model.backbone(codes)
        cls_b, hid_b = model.backbone(other, pad=pad)
    torch.testing.assert_close(cls_a, cls_b)
    torch.testing.assert_close(hid_a[~pad], hid_b[~pad])
    assert torch.isfinite(hid_a).all()


def test_positional_interpolation_and_resize():
    torch.manual_seed(0)
    model = create_model("vimpac-tiny", **TEST_OVERRIDES).eval()
    codes = torch.randint(0, 64, (2, 6, 8, 8))
    with torch.no_grad():
        before = model(codes)["cls"]
        old = model.backbone.pos_embed.height.detach().clone()
        model.backbone.resize_positional_embeddings(6, 8, 8)
        after = model(codes)["cls"]
    torch.testing.assert_close(before, after)
    expected = F.interpolate(old.t()[None], size=8, mode="linear", align_corners=False)[0].t()
    torch.testing.assert_close(model.backbone.pos_embed.height, expected)
    assert (model.config.length, model.config.height) == (6, 8)


def test_gradient_checkpointing_and_pre_norm_halved_attention():
    torch.manual_seed(0)
    base = dict(TEST_OVERRIDES, dropout=0.0, attention_dropout=0.0, pre_norm=True, attention_size=16)
    plain = create_model("vimpac-tiny", **base)
    ckpt = create_model("vimpac-tiny", **dict(base, gradient_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    codes = plain.example_inputs(3)["codes"]
    for m in (plain, ckpt):
        out = m(codes)
        (out["mlm_logits"].mean() + out["projection"].pow(2).mean()).backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_classifier_zero_init_and_registry_round_trip(tmp_path):
    model = create_model("vimpac-tiny", **TEST_OVERRIDES, architecture="vimpac-classifier", num_classes=5)
    assert isinstance(model, VimpacForClassification)
    logits = model(**model.example_inputs(2))
    assert logits.shape == (2, 5) and torch.equal(logits, torch.zeros(2, 5))
    model.classifier.weight.data.normal_()
    model.eval()
    again = load_pretrained(save_pretrained(model, tmp_path / "m"))
    codes = model.example_inputs(2)["codes"]
    torch.testing.assert_close(model(codes), again(codes), rtol=0, atol=0)


def test_classifier_mean_pooling_reads_non_pad_hidden_states():
    torch.manual_seed(0)
    model = create_model("vimpac-tiny", **TEST_OVERRIDES, architecture="vimpac-classifier", num_classes=3,
                         pooling="mean").eval()
    model.classifier.weight.data.normal_()
    codes = model.example_inputs(2)["codes"]
    pad = codes == model.config.pad_token_id
    assert pad[0].any()
    with torch.no_grad():
        _, hidden = model.backbone(codes)
        expected = torch.stack([hidden[i][~pad[i]].mean(0) for i in range(2)]) @ model.classifier.weight.t()
        torch.testing.assert_close(model(codes), expected + model.classifier.bias)
    with pytest.raises(ConfigError, match="pooling"):
        create_model("vimpac-tiny", **TEST_OVERRIDES, pooling="max")


def test_classifier_norm_standardizes_the_pooled_feature(tmp_path):
    torch.manual_seed(0)
    model = create_model("vimpac-tiny", **TEST_OVERRIDES, architecture="vimpac-classifier", num_classes=3,
                         pooling="mean", classifier_norm=True)
    assert not any("norm" in name for name, _ in model.named_parameters() if not name.startswith("backbone"))
    model.classifier.weight.data.normal_()
    codes = model.example_inputs(4)["codes"]
    model.eval()
    with torch.no_grad():
        _, hidden = model.backbone(codes)
    pad = codes == model.config.pad_token_id
    pooled = torch.stack([hidden[i][~pad[i]].mean(0) for i in range(4)])
    model.train()
    model.backbone.eval()  # no dropout in the backbone: only the head's batch statistics differ
    with torch.no_grad():
        logits = model(codes)
    standardized = (pooled - pooled.mean(0)) / (pooled.var(0, unbiased=False) + 1e-5).sqrt()
    torch.testing.assert_close(logits, standardized @ model.classifier.weight.t() + model.classifier.bias,
                               atol=1e-4, rtol=0)
    # evaluation reads the running statistics, which the export keeps
    model.eval()
    again = load_pretrained(save_pretrained(model, tmp_path / "m"))
    torch.testing.assert_close(model(codes), again(codes), rtol=0, atol=0)
    assert again.norm.running_mean.abs().sum() > 0


def test_sync_batchnorm_single_process_is_batchnorm():
    bn, ref = SyncBatchNorm1d(6), torch.nn.BatchNorm1d(6)
    x = torch.randn(10, 6)
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_var, ref.running_var)
