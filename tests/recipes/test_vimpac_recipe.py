"""The VIMPAC recipes end to end on tiny token stores: pretraining (masked tokens + long-range
contrast + kNN monitor), its export (a model folder), fine-tuning from it with interpolated
positions and multi-view evaluation, the fine-tuning's export (the test protocol); the
pretraining options. The clips: tests/data/test_vimpac_data.py; the kNN vote:
tests/metrics/test_knn.py; the split protocol: tests/engine/test_protocols.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import videolang
from videolang.data.tokens import TokenStore, TokenStoreHeader, write_token_store
from videolang.data.vimpac import TokenClips, VimpacSplits
from videolang.engine import fit, load_run_config, test
from videolang.errors import ConfigError
from videolang.models import load_pretrained
from videolang.pipelines.vimpac import Tokens
from videolang.recipes.vimpac import VimpacPretrain, build_classifier, build_pretrain_model

TINY = {"hidden_size": 32, "num_heads": 2, "mlp_size": 64, "num_layers": 1, "proj_hidden_size": 32, "proj_size": 16}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two views of 24 videos whose codes encode the class (a moving bar of code 1 + label)."""
    root = tmp_path_factory.mktemp("vimpac")
    rng = np.random.default_rng(0)
    items = []
    for i in range(24):
        label = i % 3
        n = int(rng.integers(6, 12))
        tokens = rng.integers(5, 16, (n, 4, 4))
        for t in range(n):
            tokens[t, :, (t * (label + 1)) % 4] = 1 + label
        items.append((f"v{i:02d}", tokens, label))
    header = TokenStoreHeader(tokenizer="vqvae", tokenizer_hash="x", vocab_size=16, downsample=8, fps=5.0,
                              frame_size=32, classes=["a", "b", "c"])
    write_token_store(items, root / "center", header)
    write_token_store([(k, t[:, :, ::-1], y) for k, t, y in items], root / "flip",
                      TokenStoreHeader(**{**header.__dict__, "hflip": True}))
    (root / "train.txt").write_text("".join(f"v{i:02d}.mp4 {i % 3}\n" for i in range(18)))
    (root / "test.txt").write_text("".join(f"v{i:02d}.mp4 {i % 3}\n" for i in range(18, 24)))
    return root


def _cfg(root, recipe, **model):
    return {
        "recipe": recipe, "name": recipe.replace(".", "_"), "seed": 0,
        "model": {"name": "vimpac-tiny", "overrides": TINY, "mask_blocks": 2, **model},
        "data": {"train_stores": [str(root / "center"), str(root / "flip")], "val_stores": [str(root / "center")],
                 "test_stores": [str(root / "center"), str(root / "flip")], "train_list": str(root / "train.txt"),
                 "val_list": str(root / "test.txt"), "test_list": str(root / "test.txt"),
                 "clip_len": 3, "batch_size": 6, "eval_batch_size": 4, "num_test_clips": 2},
        "optim": {"lr": 2e-3, "warmup_ratio": 0.1},
        "trainer": {"max_epochs": 2, "enable_progress_bar": False, "num_sanity_val_steps": 0, "log_every_n_steps": 1},
        "run": {"root": str(root / "runs"), "plots": False},
    }


def test_pretrain_then_finetune(stores, one_torch_thread):
    pre = fit(_cfg(stores, "vimpac.pretrain"))
    final = pre.metrics["final"]
    assert {"val/mlm", "val/mlm_acc", "val/nce", "val/knn_top1"} <= set(final)
    assert np.isfinite(final["val/loss"]) and 0 <= final["val/knn_top1"] <= 100
    export = pre.run_dir / "export"
    _check_pretraining_export(export, stores)
    cfg = _cfg(stores, "vimpac.finetune", init=str(export))
    cfg["data"]["clip_len"] = 4  # positions interpolated 3 -> 4 frames
    tuned = fit(cfg)
    assert {"val/top1", "val/loss", "val/chance"} <= set(tuned.metrics["final"])
    res = test(cfg, resume=tuned.run_dir)
    assert 0 <= res.metrics["test"]["test/top1"] <= 100
    _check_finetuning_export(tuned.run_dir / "export", stores)
    assert res.metrics["test"]["test/chance"] == pytest.approx(100 / 3)
    # the fine-tuning model starts from the pretrained backbone (temporal table interpolated)
    # with a zero classifier
    run_cfg, _ = load_run_config(cfg)
    model = build_classifier(run_cfg, VimpacSplits(run_cfg.data, run_cfg.seed))
    pretrained = load_pretrained(export)
    assert torch.equal(model.backbone.layers[0].mlp.fc1.weight, pretrained.backbone.layers[0].mlp.fc1.weight)
    assert model.backbone.pos_embed.temporal.shape == (4, 32) and model.config.length == 4
    assert model.classifier.weight.shape == (3, 32) and not model.classifier.weight.any()
    # model.reinit_temporal_positions: only the temporal table is drawn afresh, at the initial
    # ratio to the trained token embeddings (std 0.02 / sqrt(3) against 0.02), reproducibly
    run_cfg.model.reinit_temporal_positions = True
    redrawn = build_classifier(run_cfg, VimpacSplits(run_cfg.data, run_cfg.seed))
    again = build_classifier(run_cfg, VimpacSplits(run_cfg.data, run_cfg.seed))
    table = redrawn.backbone.pos_embed.temporal
    assert torch.equal(table, again.backbone.pos_embed.temporal)
    assert not torch.allclose(table, model.backbone.pos_embed.temporal)
    assert torch.equal(redrawn.backbone.pos_embed.height, model.backbone.pos_embed.height)
    assert torch.equal(redrawn.backbone.token_embedding.weight, model.backbone.token_embedding.weight)
    token_rms = model.backbone.token_embedding.weight.pow(2).mean().sqrt()
    assert float(table.detach().pow(2).mean().sqrt()) == pytest.approx(float(token_rms) / 3**0.5, rel=0.2)


def _check_pretraining_export(export, stores):
    """The pretraining export is a features pipeline (no frame tokenizer in this run: codes in)
    whose features are the kNN monitor's: the CLS of the centre clip of the first train view."""
    pipe = videolang.load(export)
    spec = pipe.spec
    assert spec.task == "features" and spec.tokenizer is None and spec.labels is None
    assert len(spec.views) == 1 and spec.clips.num_clips == 1 and spec.clips.clip_len == 3
    store = TokenStore(stores / "center")
    keys = store.keys()[:3]
    bank = TokenClips([store], keys, clip_len=3, stride=1, pad_id=17, mode="eval", num_clips=1)
    with torch.no_grad():
        cls, _ = pipe.model.backbone(torch.cat([bank[i]["views"] for i in range(len(keys))]))
    torch.testing.assert_close(pipe.encode_video([Tokens(store[k]) for k in keys]), cls, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="no frame tokenizer"):
        pipe.encode_video(str(stores / "a.mp4"))


def _check_finetuning_export(export, stores):
    """The fine-tuning export records the test protocol: both views, 2 clips of 4 frames, the
    stores' class names; codes of both views give the evaluation's averaged probabilities."""
    pipe = videolang.load(export)
    spec = pipe.spec
    assert spec.task == "classification" and pipe.labels == ["a", "b", "c"]
    assert [v.hflip for v in spec.views] == [False, True] and spec.clips.num_clips == 2
    views = [TokenStore(stores / "center"), TokenStore(stores / "flip")]
    item = TokenClips(views, ["v20"], clip_len=4, stride=1, pad_id=17, mode="eval", num_clips=2)[0]["views"]
    assert torch.equal(pipe.clips(Tokens([v["v20"] for v in views])), item)
    with torch.no_grad():
        want = pipe.model(item).softmax(-1).mean(0, keepdim=True)
    torch.testing.assert_close(pipe.class_probabilities(Tokens([v["v20"] for v in views])), want, atol=1e-6, rtol=0)


def test_mask_last_frames(stores, one_torch_thread):
    """model.mask_last_frames masks the end of every clip on top of the blocks, never PAD."""
    run_cfg, _ = load_run_config(_cfg(stores, "vimpac.pretrain", mask_last_frames=2))
    module = VimpacPretrain(run_cfg)
    module.model = build_pretrain_model(run_cfg, VimpacSplits(run_cfg.data, run_cfg.seed))
    pairs = torch.randint(5, 16, (4, 2, 3, 4, 4))
    assert module.losses(pairs)["mask_ratio"] >= 200 / 3 - 1e-3  # 2 of 3 frames, plus blocks
    pad = torch.zeros(8, 3, 4, 4, dtype=torch.bool)
    pad[:4, 2] = True  # short videos: their last frame is PAD
    mask = module.pretraining_mask(pad)
    assert not mask[pad].any() and mask[:4, 1].all() and mask[4:, 1:].all()
    run_cfg.model.mask_last_frames = 3
    with pytest.raises(ConfigError, match=r"model\.mask_last_frames=3"):
        build_pretrain_model(run_cfg, VimpacSplits(run_cfg.data, run_cfg.seed))


def test_bad_override_names_the_key(stores):
    """A value the registry rejects names model.overrides, for pretraining and fine-tuning."""
    for recipe, build in (("vimpac.pretrain", build_pretrain_model), ("vimpac.finetune", build_classifier)):
        run_cfg, _ = load_run_config(_cfg(stores, recipe, overrides={**TINY, "pooling": "foo"}))
        with pytest.raises(ConfigError, match=r"model\.overrides=.*pooling 'foo'"):
            build(run_cfg, VimpacSplits(run_cfg.data, run_cfg.seed))


def test_order_loss(stores, one_torch_thread):
    """model.order_weight forwards the masked first clips backwards too and adds the
    arrow-of-time loss; the masked-token and contrastive losses are unchanged."""
    run_cfg, _ = load_run_config(_cfg(stores, "vimpac.pretrain", order_weight=0.5))
    module = VimpacPretrain(run_cfg)
    module.model = build_pretrain_model(run_cfg, VimpacSplits(run_cfg.data, run_cfg.seed)).eval()
    seen = []
    forward = module.model.forward
    module.model.forward = lambda codes, mlm_mask=None: seen.append((codes, mlm_mask)) or forward(codes, mlm_mask)
    pairs = torch.randint(5, 16, (4, 2, 3, 4, 4))
    torch.manual_seed(0)
    with_order = module.losses(pairs)
    codes, mlm_mask = seen[0]
    assert codes.shape[0] == 12 and torch.equal(codes[8:], codes[:4].flip(1)) and not mlm_mask[8:].any()
    run_cfg.model.order_weight = 0.0
    torch.manual_seed(0)
    plain = module.losses(pairs)
    assert torch.equal(seen[1][1], mlm_mask[:8])  # same blocks masked
    for name in ("mlm", "nce", "mask_ratio"):
        assert float(with_order[name]) == pytest.approx(float(plain[name]), abs=1e-6)
    assert "order" not in plain and 0 <= with_order["order_acc"] <= 100
    assert float(with_order["loss"]) == pytest.approx(float(plain["loss"] + 0.5 * with_order["order"]), abs=1e-5)
    run_cfg.model.order_weight = -1.0
    with pytest.raises(ConfigError, match=r"model\.order_weight"):
        build_pretrain_model(run_cfg, VimpacSplits(run_cfg.data, run_cfg.seed))

