"""The ClipBERT recipes end to end on a tiny synthetic world: retrieval (ITM training,
all-pairs ranking), open-ended QA, multiple choice, initialisation across tasks; the batched
score matrix equals pair-by-pair scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from videolang.engine import fit, load_config, test
from videolang.errors import ConfigError
from videolang.synth import synthesize_world

SHRINK = {"bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 4,
          "bert.intermediate_size": 64, "backbone.stem_channels": 8, "backbone.width": 4}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cb")
    synthesize_world(root / "world", 14, seed=5, size=32, duration=2.0, workers=1, progress=False)
    return root


def config(root, recipe: str, **data) -> dict:
    w = root / "world" / "formats" / "clipbert"
    files = {
        "clipbert.retrieval": ("msrvtt_retrieval/train.jsonl", "msrvtt_retrieval/val.jsonl",
                               "msrvtt_retrieval/test.jsonl", "msrvtt_ret"),
        "clipbert.qa": ("tgif_qa/frameqa_train.jsonl", "tgif_qa/frameqa_val.jsonl", "tgif_qa/frameqa_test.jsonl",
                        "tgif_frameqa"),
        "clipbert.mcqa": ("tgif_qa/action_train.jsonl", "tgif_qa/action_val.jsonl", "tgif_qa/action_test.jsonl",
                          "tgif_action"),
    }[recipe]
    return {
        "recipe": recipe, "name": recipe.replace(".", "_"), "seed": 0,
        "model": {"name": "clipbert-tiny", "overrides": SHRINK},
        "data": {"train_file": str(w / files[0]), "val_file": str(w / files[1]), "test_file": str(w / files[2]),
                 "video_root": str(root / "world" / "videos"), "frame_size": 32, "max_text_len": 24,
                 "sampling": files[3], "target_fps": 2.0, "frames_per_clip": 2, "train_clips": 2,
                 "test_clips": 2, "batch_size": 4, "eval_batch_size": 8, **data},
        "optim": {"lr": 1e-3},
        "trainer": {"max_epochs": 1, "limit_train_batches": 3, "enable_progress_bar": False,
                    "num_sanity_val_steps": 0, "log_every_n_steps": 1},
        "run": {"root": str(root / "runs"), "plots": False},
    }


@pytest.fixture(scope="module")
def retrieval_run(world):
    cfg = config(world, "clipbert.retrieval", pair_batch_size=7)  # odd size: ragged chunks
    return cfg, fit(cfg)


def test_retrieval_fit_and_all_pairs_test(world, retrieval_run):
    cfg, result = retrieval_run
    final = result.metrics["final"]
    n_val = len(Path(cfg["data"]["val_file"]).read_text().splitlines())
    assert final["val/chance_R1"] == pytest.approx(100 / n_val)
    assert {"val/t2v/R1", "val/t2v/MedR", "val/v2t/R1", "val/R1"} <= set(final)
    export = result.run_dir / "export"
    assert json.loads((export / "config.json").read_text())["task"] == "retrieval"
    spec = json.loads((export / "pipeline.json").read_text())  # what videolang.load needs
    assert (spec["family"], spec["task"], spec["consensus"], spec["frames"]["size"]) == ("clipbert", "retrieval", "lse", 32)
    assert spec["sampling"]["num_clips"] == 2 and spec["text"]["max_len"] == 22 and (export / "tokenizer").is_dir()
    tested = test(cfg, [f"model.init={export}"])
    assert "test/t2v/R1" in tested.metrics["test"]


def test_score_matrix_equals_pairwise_scores(world):
    from videolang.data.clipbert import TextEncoder
    from videolang.data.text import load_tokenizer
    from videolang.models import create_model
    from videolang.recipes.clipbert import score_matrix

    torch.manual_seed(0)
    model = create_model("clipbert-tiny", frame_size=32, **SHRINK).eval()
    frames = torch.rand(3, 2, 1, 3, 32, 32) * 255
    visual, vmask = model.encode_visual(frames)
    text = TextEncoder(load_tokenizer("minilm"), 16)
    texts = ["a red circle moves left", "the blue square grows", "a star"]
    sim = score_matrix(model, visual, vmask, text, texts, pair_batch_size=4)
    for i, t in enumerate(texts):
        ids, am = text.batch([t])
        for j in range(3):
            logits = model.score(visual[j : j + 1], vmask[j : j + 1], ids, am)["logits"][0]
            assert sim[i, j].item() == pytest.approx((logits[1] - logits[0]).item(), abs=1e-5)


def test_in_batch_retrieval_loss_is_symmetric_infonce_over_the_score_matrix():
    import torch.nn.functional as F

    from videolang.data.clipbert import TextEncoder
    from videolang.data.text import load_tokenizer
    from videolang.models import create_model
    from videolang.recipes.clipbert import in_batch_retrieval_loss, score_matrix

    torch.manual_seed(0)
    model = create_model("clipbert-tiny", frame_size=32, **SHRINK).eval()
    frames = torch.rand(3, 2, 1, 3, 32, 32) * 255
    text = TextEncoder(load_tokenizer("minilm"), 16)
    texts = ["a red circle moves left", "the blue square grows", "a star spins"]
    # item 1 carries an ITM negative after its caption; items 0 and 2 show the same video
    rows = [texts[0], texts[1], "a negative caption", texts[2]]
    ids, am = text.batch(rows)
    batch = {"frames": frames, "pixel_mask": None, "input_ids": ids, "attention_mask": am,
             "rows_per_item": torch.tensor([1, 2, 1]), "visual_id": torch.tensor([7, 8, 7])}
    loss = in_batch_retrieval_loss(model, batch, temperature=0.5)
    visual, vmask = model.encode_visual(frames)
    sim = score_matrix(model, visual, vmask, text, texts, pair_batch_size=64) / 0.5
    sim[0, 2] = sim[2, 0] = float("-inf")  # the same video is not a negative
    expected = (F.cross_entropy(sim, torch.arange(3)) + F.cross_entropy(sim.t(), torch.arange(3))) / 2
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_in_batch_temperature_must_be_positive(world):
    cfg = config(world, "clipbert.retrieval")
    cfg["model"].update(retrieval_loss="in_batch", temperature=0.0)
    with pytest.raises(ConfigError, match=r"model\.temperature must be > 0"):
        fit(cfg)


def test_bad_override_names_the_key(world):
    cfg = config(world, "clipbert.retrieval")
    cfg["model"]["overrides"] = {**SHRINK, "consensus": "foo"}
    with pytest.raises(ConfigError, match=r"model\.overrides=.*consensus.*mean.*max.*lse.*got 'foo'"):
        fit(cfg)


def test_retrieval_fit_with_in_batch_loss(world):
    cfg = config(world, "clipbert.retrieval")
    cfg["model"]["retrieval_loss"] = "in_batch"
    cfg["name"] = "clipbert_in_batch"
    result = fit(cfg)
    assert "val/R1" in result.metrics["final"]
    import csv

    with open(result.run_dir / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


def test_qa_fit_logs_accuracy_and_majority(world):
    cfg = config(world, "clipbert.qa",
                 ans2label=str(world / "world/formats/clipbert/tgif_qa/frameqa_trainval_ans2label.json"))
    result = fit(cfg)
    final = result.metrics["final"]
    assert 0 <= final["val/acc"] <= 100 and 0 <= final["val/majority_acc"] <= 100
    vocab = json.loads(Path(cfg["data"]["ans2label"]).read_text())
    spec = json.loads((result.run_dir / "export" / "pipeline.json").read_text())
    assert spec["answers"] == sorted(vocab, key=vocab.get)  # the vocabulary travels with the model
    assert any(k.startswith("val/acc_") for k in final)


def test_mcqa_fit_from_another_tasks_export(world, retrieval_run):
    export = retrieval_run[1].run_dir / "export"
    mc = config(world, "clipbert.mcqa")
    mc["model"]["init"] = str(export)  # the retrieval head is dropped, everything else loads
    final = fit(mc).metrics["final"]
    assert 0 <= final["val/acc"] <= 100


def test_qa_without_vocabulary_source_is_an_error(world):
    cfg = config(world, "clipbert.qa", train_file=None)
    with pytest.raises(ConfigError, match=r"data\.ans2label"):
        fit(cfg)


def test_mlm_loss_reductions():
    from videolang.losses import mlm_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 12, 30, generator=g)
    labels = torch.full((2, 12), -100)
    labels[0, 3], labels[1, 7] = 5, 9  # 2 of 24 positions masked, as the spec's golden batch
    masked = mlm_loss(logits, labels)
    ref = torch.nn.functional.cross_entropy(logits[[0, 1], [3, 7]], torch.tensor([5, 9]))
    torch.testing.assert_close(masked, ref)
    torch.testing.assert_close(mlm_loss(logits, labels, "all_positions"), masked * 2 / 24)


def test_pretrain_fit_on_still_images(world):
    w = world / "world"
    cfg = config(world, "clipbert.retrieval")
    cfg.update(recipe="clipbert.pretrain", name="pt")
    cfg["model"]["mlm_loss"] = "all_positions"
    cfg["data"] = {"train_file": str(w / "annotations/image_captions.jsonl"), "image_root": str(w / "images"),
                   "val_file": str(w / "annotations/image_captions.jsonl"), "frame_size": 32,
                   "max_text_len": 16, "batch_size": 4}
    cfg["trainer"]["limit_val_batches"] = 2
    final = fit(cfg).metrics["final"]
    assert 0 <= final["val/itm_acc"] <= 100


def test_the_task_is_a_typed_data_key():
    assert load_config("clipbert/synthetic_mcqa").data.task == "mc"
    assert load_config("clipbert/synthetic_retrieval", ["data.task=retrieval"]).data.task == "retrieval"
    with pytest.raises(ConfigError, match=r"data\.task"):
        load_config("clipbert/synthetic_mcqa", ["data.task=qa"])  # each recipe fixes its task
