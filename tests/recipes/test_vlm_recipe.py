"""The VLM recipes end to end on a tiny synthetic world: pretraining with exact resume, then
retrieval, multiple-choice QA, captioning and segmentation from its export."""

from __future__ import annotations

import json
import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from videolang.data.text import build_wordpiece_tokenizer
from videolang.engine import fit, test
from videolang.errors import ConfigError
from videolang.pipelines.features import run_extraction
from videolang.synth import synthesize_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    synthesize_world(root / "world", 30, seed=5, size=32, duration=3.0, progress=False)
    run_extraction(str(root / "world" / "videos"), "pooled-pixels", str(root / "features"), dtype="float32",
                   progress=False, backbone_options={"grid": 2, "rows_per_second": 2})
    captions = [json.loads(line)["caption"]
                for line in (root / "world/annotations/captions.jsonl").read_text().splitlines()]
    build_wordpiece_tokenizer(captions, root / "tok", vocab_size=300)
    return root


def base(root, recipe: str, **data) -> dict:
    return {
        "recipe": recipe, "name": recipe.replace(".", "_"), "seed": 0,
        "model": {"name": "vlm-tiny"},
        "data": {"features": str(root / "features"), "tokenizer": str(root / "tok"), "max_video_len": 8,
                 "max_text_len": 32, **data},
        "optim": {"lr": 1e-3, "warmup_ratio": 0.1},
        "trainer": {"max_epochs": 1, "enable_progress_bar": False, "num_sanity_val_steps": 0,
                    "log_every_n_steps": 1, "monitor": None},
        "run": {"root": str(root / "runs")},
    }


def pretrain_config(root) -> dict:
    w = root / "world"
    cfg = base(root, "vlm.pretrain", captions=str(w / "formats/howto100m/raw_caption.json"),
               train_list=str(w / "formats/howto100m/train.lst"), pairs_per_video=2, videos_per_batch=4,
               min_video_len=1, min_text_tokens=3, max_text_tokens=16, retrieval=False,
               val_pairs=str(w / "annotations/captions.jsonl"), val_format="jsonl", val_split="val")
    cfg["trainer"]["max_epochs"] = 2
    cfg["model"]["standardize_features"] = True  # the downstream runs load its statistics from the export
    return cfg


class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def pretrained(world):
    cfg = pretrain_config(world)
    straight = fit(cfg)
    interrupted = fit(cfg, callbacks=[StopAfterFirstEpoch()])
    resumed = fit(cfg, resume=interrupted.run_dir / "checkpoints" / "last.ckpt")
    return straight, resumed


def test_pretrain_logs_both_objectives_and_resumes_exactly(pretrained):
    straight, resumed = pretrained
    a, b = weights(straight.run_dir), weights(resumed.run_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6  # masks are seeded by step
    logged = (straight.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/mlm", "train/mfm", "train/loss"} <= set(logged)
    assert "val/jsonl-val/R1" in straight.metrics["final"]
    from safetensors.torch import load_file

    exported = load_file(str(straight.run_dir / "export" / "model.safetensors"))
    assert exported["feature_std"].min() > 0 and exported["feature_mean"].abs().sum() > 0
    # a complete model folder: zero-shot retrieval as validated (dot product, the data's windows)
    spec = json.loads((straight.run_dir / "export" / "pipeline.json").read_text())
    assert (spec["family"], spec["task"], spec["similarity"]["metric"]) == ("vlm", "retrieval", "dot")
    assert spec["video"]["max_len"] == 8 and spec["video"]["feature_rate"] == 2.0
    assert (straight.run_dir / "export" / "tokenizer").is_dir()


def test_retrieval_and_mcqa_from_the_export(world, pretrained):
    w, export = world / "world", pretrained[0].run_dir / "export"
    cfg = base(world, "vlm.retrieval", train_pairs=str(w / "annotations/captions.jsonl"), train_format="jsonl",
               batch_size=8, test_pairs=str(w / "formats/msrvtt/MSRVTT_JSFUSION_test.csv"), test_format="msrvtt")
    cfg["model"].update(init=str(export), normalize=True, temperature=0.1)
    fitted = fit(cfg)
    res = test(cfg, resume=fitted.run_dir)
    assert {"test/msrvtt-test/R1", "test/chance_R1"} <= set(res.metrics["test"])

    qa = base(world, "vlm.mcqa", train_pairs=str(w / "annotations/captions.jsonl"), train_format="jsonl",
              test_mc=str(w / "formats/msrvtt/MSR_MC_test.csv"), test_mc_format="msrvtt")
    qa["model"].update(init=str(fitted.run_dir / "export"))
    out = test(qa).metrics["test"]  # the retrieval model, as the original evaluates it
    assert out["test/chance_accuracy"] == pytest.approx(20.0)
    assert 0.0 <= out["test/msrvtt-test-mc/accuracy"] <= 100.0
    assert 0.0 <= out["test/other_video_accuracy"] <= 100.0  # the text-only control
    # training on multiple-choice items: cross-entropy over each item's options
    qa["data"].update(train_mc=str(w / "annotations/mc.jsonl"), batch_size=10)
    trained = fit(qa)
    assert any(h.get("loss") is not None for h in trained.metrics["history"]["train"])
    assert test(qa, resume=trained.run_dir).metrics["test"]["test/chance_accuracy"] == pytest.approx(20.0)


def test_mcqa_joint_scoring_trains_a_match_head(world, pretrained):
    w = world / "world"
    qa = base(world, "vlm.mcqa", train_mc=str(w / "annotations/mc.jsonl"), batch_size=10,
              test_mc=str(w / "formats/msrvtt/MSR_MC_test.csv"), test_mc_format="msrvtt")
    qa["model"].update(init=str(pretrained[0].run_dir / "export"), scoring="joint")
    trained = fit(qa)
    losses = [h["loss"] for h in trained.metrics["history"]["train"] if h.get("loss") is not None]
    assert losses and all(math.isfinite(x) for x in losses)
    from safetensors.torch import load_file

    head = load_file(str(trained.run_dir / "export" / "model.safetensors"))["classifier.1.weight"]
    assert head.shape[0] == 1  # one match logit per (video, option) pair
    out = test(qa, resume=trained.run_dir).metrics["test"]
    assert out["test/chance_accuracy"] == pytest.approx(20.0)
    assert 0.0 <= out["test/other_video_accuracy"] <= 100.0
    # retrieval pairs cannot train a joint match head
    del qa["data"]["train_mc"]
    qa["data"]["train_pairs"] = str(w / "annotations/captions.jsonl")
    with pytest.raises(ConfigError, match=r"data\.train_mc"):
        fit(qa)


class HybridAgainstIsolated(Callback):
    """On the first training batch, before any update: the hybrid and the isolated scores."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx:
            return
        pl_module.eval()  # no dropout, so the two passes are comparable
        with torch.no_grad():
            self.hybrid = pl_module.item_scores(batch)[0]
            self.isolated = pl_module.option_scores(*pl_module.option_embeddings(batch))
        pl_module.train()


class HeadAtTest(Callback):
    def on_test_start(self, trainer, pl_module):
        self.head = pl_module.model.classifier[-1].weight.detach().clone()


def test_mcqa_hybrid_scoring_starts_at_the_isolated_scores(world, pretrained):
    w = world / "world"
    qa = base(world, "vlm.mcqa", train_mc=str(w / "annotations/mc.jsonl"), batch_size=10,
              test_mc=str(w / "formats/msrvtt/MSR_MC_test.csv"), test_mc_format="msrvtt")
    qa["model"].update(init=str(pretrained[0].run_dir / "export"), scoring="hybrid", normalize=True,
                       temperature=0.1)
    first = HybridAgainstIsolated()
    trained = fit(qa, callbacks=[first])
    # the fresh head is zero: training starts from the isolated scorer exactly
    torch.testing.assert_close(first.hybrid, first.isolated)
    from safetensors.torch import load_file

    head = load_file(str(trained.run_dir / "export" / "model.safetensors"))["classifier.1.weight"]
    assert head.abs().sum() > 0  # it learned
    # evaluating the export keeps its trained head (only a fresh head starts at zero)
    at_test = HeadAtTest()
    qa["model"]["init"] = str(trained.run_dir / "export")
    out = test(qa, callbacks=[at_test]).metrics["test"]
    torch.testing.assert_close(at_test.head, head)
    assert out["test/chance_accuracy"] == pytest.approx(20.0)


class OptionEmbeddingWidth(Callback):
    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        with torch.no_grad():
            self.video, self.text = pl_module.option_embeddings(batch)
        self.hidden = pl_module.model.config.bert.hidden_size


class PairWidth(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with torch.no_grad():
            video, text = pl_module.encode_pairs(batch)
        self.video, self.text = video.shape[-1], text.shape[-1]


def test_mcqa_temporal_segments_score_runs_of_the_halves(world, pretrained):
    w = world / "world"
    qa = base(world, "vlm.mcqa", train_mc=str(w / "annotations/mc.jsonl"), batch_size=10,
              test_mc=str(w / "formats/msrvtt/MSR_MC_test.csv"), test_mc_format="msrvtt")
    qa["model"].update(init=str(pretrained[0].run_dir / "export"), normalize=True, temperature=0.1,
                       temporal_segments=2)
    trained = fit(qa)
    assert all(math.isfinite(h["loss"]) for h in trained.metrics["history"]["train"] if h.get("loss") is not None)
    width = OptionEmbeddingWidth()
    out = test(qa, resume=trained.run_dir, callbacks=[width]).metrics["test"]
    assert width.video.shape[-1] == width.text.shape[-1] == 3 * width.hidden  # whole + 2 runs
    torch.testing.assert_close(width.video.norm(dim=-1), torch.ones(len(width.video)))
    assert out["test/chance_accuracy"] == pytest.approx(20.0)
    # trained on retrieval pairs instead, the pairs are pooled the same way
    pairs = {**qa, "data": {k: v for k, v in qa["data"].items() if k != "train_mc"}}
    pairs["data"].update(train_pairs=str(w / "annotations/captions.jsonl"), train_format="jsonl")
    widths = PairWidth()
    fit(pairs, callbacks=[widths])
    assert widths.video == widths.text == 3 * width.hidden
    for bad in ({"normalize": False}, {"scoring": "joint"}, {"temporal_segments": -1}):
        cfg = {**qa, "model": {**qa["model"], **bad}}
        with pytest.raises(ConfigError, match=r"model\.temporal_segments"):
            fit(cfg)


def test_captioning_logs_beam_greedy_and_baseline(world, pretrained):
    w = world / "world"
    cfg = base(world, "vlm.captioning", train_pairs=str(w / "annotations/captions.jsonl"), train_format="jsonl",
               batch_size=8, test_pairs=str(w / "formats/msrvtt/MSRVTT_data.json"), test_format="msrvtt")
    cfg["model"].update(init=str(pretrained[0].run_dir / "export"), num_beams=2, max_decode_length=6)
    fitted = fit(cfg)
    out = test(cfg, resume=fitted.run_dir).metrics["test"]
    for kind in ("beam", "greedy", "most_frequent"):
        assert 0.0 <= out[f"test/msrvtt-test/{kind}/BLEU-4"] <= 100.0
        assert 0.0 <= out[f"test/msrvtt-test/{kind}/ROUGE-L"] <= 100.0
    assert out["test/msrvtt-test/most_frequent/ROUGE-L"] > 0  # the baseline is a real caption
    spec = json.loads((fitted.run_dir / "export" / "pipeline.json").read_text())
    assert spec["task"] == "captioning" and spec["captioning"] == {"num_beams": 2, "max_length": 6,
                                                                    "length_penalty": 1.0}


def test_segmentation_from_coin_json(world, pretrained):
    cfg = base(world, "vlm.segmentation", annotations=str(world / "world/formats/coin/COIN.json"),
               window=4, train_stride=2, eval_stride=2, batch_size=8)
    del cfg["data"]["tokenizer"], cfg["data"]["max_video_len"], cfg["data"]["max_text_len"]
    cfg["model"].update(init=str(pretrained[0].run_dir / "export"))
    fitted = fit(cfg)
    out = test(cfg, resume=fitted.run_dir).metrics["test"]
    assert 0.0 <= out["test/coin-testing/frame_accuracy"] <= 100.0
    assert 0.0 < out["test/coin-testing/majority_rate"] < 100.0
    # the export carries the classifier: 1 + the largest step id (0 is COIN's background)
    coin = json.loads((world / "world/formats/coin/COIN.json").read_text())["database"]
    top = max(int(a["id"]) for v in coin.values() for a in v["annotation"])
    cfg_json = json.loads((fitted.run_dir / "export" / "config.json").read_text())
    assert cfg_json["num_classes"] == top + 1
    spec = json.loads((fitted.run_dir / "export" / "pipeline.json").read_text())
    assert spec["task"] == "segmentation" and spec["text"] is None
    assert spec["segmentation"]["stride"] == 2 and len(spec["segmentation"]["labels"]) == top + 1


def test_pretrained_text_weights_need_their_tokenizer(world):
    cfg = pretrain_config(world)
    cfg["model"]["name"] = "vlm-minilm"
    with pytest.raises(ConfigError, match="30522-token vocabulary"):
        fit(cfg)
