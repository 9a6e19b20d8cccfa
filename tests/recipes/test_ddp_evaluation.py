"""Every recipe's evaluation gives the same metrics in 2 processes (DDP, gloo) as in 1.

Two worker processes are spawned once; each runs every evaluation below with a Lightning
``Trainer(accelerator="cpu", devices=2, strategy="ddp")`` (the processes already exist, so
Lightning launches none), and the metrics of both ranks are compared with a one-process run.
The evaluation sets have odd sizes, so the ``DistributedSampler`` repeats a sample that the
evaluation buffer must drop, and small batches, so every rank sees several ragged batches.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from tests.packaged import packaged_recipes

from videolang.engine import get_recipe, load_run_config

# Metrics of batch-level quantities: losses with in-batch negatives or masks drawn per batch,
# and the multiple-choice control, which pairs each item with another item's video of its
# batch. Batches differ between 1 and 2 processes, so these do too.
BATCH_LEVEL = {
    # block masks drawn per batch; the NCE and arrow-of-time losses contrast the clips of a batch
    "vimpac.pretrain": {"val/loss", "val/mlm", "val/mlm_acc", "val/nce", "val/order", "val/order_acc"},
    # masks seeded by the batch's position; the hinge's negatives are the batch's other videos
    "vidlankd.teacher": {"val/mlm", "val/hinge"},
    # NST and NT-Xent of each batch (NT-Xent's negatives are the batch's other blocks), and the
    # loss that adds them; val/mlm and val/perplexity are per block (masks seeded by its index)
    "vidlankd.student": {"val/nst", "val/contrastive", "val/loss"},
    "vlm.mcqa": {"test/other_video_accuracy"},
}

# Recipes without a validation or test loop: nothing to compare.
NO_EVALUATION = {
    "anticipation.mlm": "masked-LM pretraining of the teacher's encoder; its data has a training split only",
}

def _keep_first_lines(src: Path, dst: Path, n: int, header: int = 0) -> str:
    lines = src.read_text().splitlines()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(lines[: header + n]) + "\n")
    return str(dst)


def _odd_annotations(ws: Path, out: Path) -> dict[str, str]:
    """Copies of the workspace's evaluation files with an odd number of samples."""
    w = ws / "world"
    tests = [json.loads(line) for line in (w / "annotations/captions.jsonl").read_text().splitlines()]
    test_videos = sorted({r["video_id"] for r in tests if r["split"] == "test"})[:5]
    (out / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tests
                                                if r["split"] == "test" and r["video_id"] in test_videos))
    mc = [line for line in (w / "annotations/mc.jsonl").read_text().splitlines() if json.loads(line)["split"] == "train"]
    (out / "mc.jsonl").write_text("\n".join(mc[:27]) + "\n")  # the trained-on items: accuracy above 0
    glue = out / "glue" / "SST-2"
    glue.mkdir(parents=True)
    shutil.copy(w / "formats/glue/SST-2/train.tsv", glue / "train.tsv")
    c = w / "formats/clipbert"
    return {
        "captions": str(out / "captions.jsonl"), "mc": str(out / "mc.jsonl"),
        "glue_dev": _keep_first_lines(w / "formats/glue/SST-2/dev.tsv", glue / "dev.tsv", 39, header=1),
        "clipbert_retrieval": _keep_first_lines(c / "msrvtt_retrieval/test.jsonl", out / "cb_ret.jsonl", 5),
        "clipbert_qa": _keep_first_lines(c / "tgif_qa/frameqa_test.jsonl", out / "cb_qa.jsonl", 23),
        "clipbert_mc": _keep_first_lines(c / "tgif_qa/action_test.jsonl", out / "cb_mc.jsonl", 5),
        "vimpac_list": _keep_first_lines(w / "formats/mmaction/synth_train_list_videos.txt", out / "vimpac.txt", 27),
        "vidlankd_val": _keep_first_lines(w / "formats/howto100m/val.lst", out / "val.lst", 5),
        "student_val": _keep_last_lines(w / "text/corpus.txt", out / "corpus_val.txt", 10),  # 7 blocks of 30
        **_image_annotations(w, out),
    }


def _keep_last_lines(src: Path, dst: Path, n: int) -> str:
    dst.write_text("\n".join(src.read_text().splitlines()[-n:]) + "\n")
    return str(dst)


def _image_annotations(w: Path, out: Path) -> dict[str, str]:
    """Image-caption records of 7 images (21 captions) for ClipBERT's pretraining, and a VQA
    file of 23 questions on the images (a caption as the question, its colour words as the
    soft-scored answers, two answer types) with its answer vocabulary."""
    images = [json.loads(line) for line in (w / "annotations/image_captions.jsonl").read_text().splitlines()]
    (out / "images.jsonl").write_text("".join(json.dumps({"file_name": r["file_name"], "captions": r["captions"]})
                                              + "\n" for r in images[:7]))
    colours = ("red", "orange", "yellow", "green", "blue", "purple", "violet", "pink", "gray", "white", "black")
    vqa = []
    for i, r in enumerate(images[:23]):
        words = [c for c in colours if c in r["captions"][0]]
        vqa.append({"file_name": r["file_name"], "question": r["captions"][0], "question_id": i,
                    "labels": dict(zip(words, [1.0, 0.3, 0.3], strict=False)),
                    "answer_type": "colour" if i % 2 else "other"})
    (out / "vqa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in vqa))
    (out / "ans2label.json").write_text(json.dumps({c: i for i, c in enumerate(colours)}))
    return {"images": str(out / "images.jsonl"), "vqa": str(out / "vqa.jsonl"),
            "vqa_ans2label": str(out / "ans2label.json")}


def evaluations(ws: Path, odd: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(stage, config) of one evaluation per recipe family and task, all on initial or
    one-step weights (the metrics need not be good, only equal)."""
    w, m = ws / "world", ws / "models"
    tok, feats = str(ws / "tok"), str(ws / "features")
    clip = {"features": feats, "tokenizer": tok, "max_video_len": 4, "max_text_len": 24, "eval_batch_size": 2}
    clipbert_model = {"name": "clipbert-tiny", "overrides": {
        "bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 4,
        "bert.intermediate_size": 64, "backbone.stem_channels": 8, "backbone.width": 4}}
    clipbert = {"video_root": str(w / "videos"), "frame_size": 32, "max_text_len": 24, "target_fps": 2.0,
                "frames_per_clip": 2, "test_clips": 2, "eval_batch_size": 2}
    tiny_bert = {"bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 2,
                 "bert.intermediate_size": 64, "bert.vocab_size": 400}
    vimpac_tiny = {"hidden_size": 32, "num_heads": 2, "mlp_size": 64, "num_layers": 1, "pooling": "mean",
                   "proj_hidden_size": 32, "proj_size": 16}
    tokens = {"train_stores": [str(ws / "tokens_train")], "clip_len": 3, "stride": 2, "eval_batch_size": 2}
    anticipation = {"format": "synthetic", "root": str(w), "anticipation_gap": 0.2, "hist_len": 3,
                    "tokenizer": tok, "features": str(ws / "features_5hz"), "max_rows": 8, "eval_batch_size": 2,
                    "val_split": None}
    student_tiny = {**tiny_bert, "nst_head": True, "contrastive_head": True}
    images = {"image_root": str(w / "images"), "frame_size": 32, "max_text_len": 24, "eval_batch_size": 2}
    pairs = {"captions": str(w / "formats/howto100m/raw_caption.json"), "val_pairs": odd["captions"],
             "val_format": "jsonl", "val_split": "test"}
    runs = [
        ("validate", "videoclip.pretrain", {"name": "videoclip-tiny", "normalize": True},
         {**clip, "tokenizer": "minilm", "max_text_len": 16, **pairs}),
        ("validate", "vlm.pretrain", {"name": "vlm-tiny"}, {**clip, **pairs}),
        ("test", "vlm.retrieval", {"init": str(m / "vlm-mcqa"), "normalize": True},
         {**clip, "test_pairs": odd["captions"], "test_format": "jsonl", "eval_batch_size": 3}),
        ("test", "videoclip.retrieval", {"init": str(m / "videoclip"), "normalize": True},
         {**clip, "tokenizer": "minilm", "max_text_len": 16, "test_pairs": odd["captions"], "test_format": "jsonl"}),
        ("test", "vlm.mcqa", {"init": str(m / "vlm-mcqa"), "normalize": True},
         {**clip, "test_mc": odd["mc"], "test_mc_format": "jsonl", "test_mc_split": "train",
          "eval_batch_size": 10}),
        ("test", "vlm.captioning", {"name": "vlm-tiny", "num_beams": 2, "max_decode_length": 4},
         {**clip, "train_pairs": str(w / "annotations/captions.jsonl"), "train_format": "jsonl",
          "test_pairs": odd["captions"], "test_format": "jsonl"}),
        ("test", "vlm.segmentation", {"name": "vlm-tiny"},
         {"features": feats, "annotations": str(w / "formats/coin/COIN.json"), "window": 4, "eval_stride": 3,
          "eval_batch_size": 3}),
        ("test", "clipbert.retrieval", {**clipbert_model, "init": str(m / "clipbert-retrieval")},
         {**clipbert, "test_file": odd["clipbert_retrieval"], "sampling": "msrvtt_ret", "pair_batch_size": 7}),
        ("test", "clipbert.qa", {**clipbert_model, "init": str(m / "clipbert-qa")},
         {**clipbert, "test_file": odd["clipbert_qa"], "sampling": "tgif_frameqa",
          "train_file": str(w / "formats/clipbert/tgif_qa/frameqa_train.jsonl"),
          "ans2label": str(w / "formats/clipbert/tgif_qa/frameqa_trainval_ans2label.json")}),
        ("test", "clipbert.mcqa", {**clipbert_model, "init": str(m / "clipbert-mcqa")},
         {**clipbert, "test_file": odd["clipbert_mc"], "sampling": "tgif_action"}),
        ("test", "clipbert.vqa", {**clipbert_model, "init": str(m / "clipbert-qa")},
         {**images, "test_file": odd["vqa"], "ans2label": odd["vqa_ans2label"]}),
        ("validate", "clipbert.pretrain", clipbert_model, {**images, "val_file": odd["images"], "eval_batch_size": 4}),
        ("test", "vimpac.finetune", {"init": str(m / "vimpac")},
         {**tokens, "test_stores": [str(ws / "tokens_train")], "test_list": odd["vimpac_list"]}),
        # two views of three clips each, softmax-averaged per video
        ("validate", "vimpac.finetune", {"init": str(m / "vimpac")},
         {**tokens, "val_stores": [str(ws / "tokens_train")] * 2, "val_list": odd["vimpac_list"],
          "num_test_clips": 3, "eval_batch_size": 4}),
        ("validate", "vimpac.pretrain", {"name": "vimpac-tiny", "overrides": vimpac_tiny},
         {**tokens, "val_stores": [str(ws / "tokens_train")], "val_list": odd["vimpac_list"]}),
        # the arrow-of-time loss, and a kNN bank of an odd number of training videos
        ("validate", "vimpac.pretrain", {"name": "vimpac-tiny", "overrides": vimpac_tiny, "order_weight": 0.5},
         {**tokens, "val_stores": [str(ws / "tokens_train")], "val_list": odd["vimpac_list"],
          "train_list": odd["vimpac_list"]}),
        ("test", "anticipation.student", {"init": str(m / "anticipation")}, anticipation),
        ("test", "anticipation.teacher", {"name": "anticipation-teacher-tiny", "vocab_size": 400}, anticipation),
        ("validate", "vidlankd.teacher", {"name": "vidlankd-teacher-tiny", "overrides": tiny_bert},
         {"features": feats, "captions": str(w / "formats/howto100m/raw_caption.json"), "tokenizer": tok,
          "val_list": odd["vidlankd_val"], "block_size": 24, "max_video_len": 4, "eval_batch_size": 3}),
        ("validate", "vidlankd.student", {"name": "vidlankd-student-tiny", "overrides": student_tiny,
                                          "teacher": str(m / "vidlankd-teacher"), "kd": ["nst", "contrastive"]},
         {"train_files": [str(w / "text/corpus.txt")], "val_files": [odd["student_val"]], "format": "plain",
          "tokenizer": tok, "block_size": 30, "eval_batch_size": 2}),
        ("validate", "vidlankd.glue", {"init": str(m / "vidlankd-student")},
         {"task_dir": str(Path(odd["glue_dev"]).parent), "task": "SST-2", "max_seq_length": 32,
          "eval_batch_size": 4}),
    ]
    return [(stage, {"recipe": recipe, "name": recipe, "seed": 0, "model": model, "data": data,
                     "run": {"root": str(ws / "runs"), "plots": False}})
            for stage, recipe, model, data in runs]


def evaluate(stage: str, config: dict[str, Any], devices: int) -> dict[str, float]:
    """The metrics of one evaluation (Lightning's ``callback_metrics`` of this process)."""
    cfg, _ = load_run_config(config)
    recipe = get_recipe(cfg.recipe)
    L.seed_everything(cfg.seed, verbose=False)
    module, datamodule = recipe.module_cls(cfg), recipe.make_datamodule(cfg)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    getattr(trainer, stage)(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def _worker(rank: int, port: int, runs: list[tuple[str, dict[str, Any]]], out: str) -> None:
    # Lightning's ddp strategy joins processes that a launcher started (LOCAL_RANK is set).
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK="0",
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    results = [evaluate(stage, config, devices=2) for stage, config in runs]
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(workspace, tmp_path_factory) -> list[tuple[str, dict[str, Any]]]:
    return evaluations(workspace, _odd_annotations(workspace, tmp_path_factory.mktemp("odd")))


def test_two_processes_evaluate_like_one(runs, tmp_path, one_torch_thread):
    mp.spawn(_worker, args=(_free_port(), runs, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for (stage, config), rank0, rank1 in zip(runs, *ranks, strict=True):
        single = evaluate(stage, config, devices=1)
        sample_level = {k: v for k, v in single.items() if k not in BATCH_LEVEL.get(config["recipe"], ())}
        assert sample_level, f"{config['recipe']}: no metrics logged"
        for name, value in sample_level.items():
            assert rank0[name] == pytest.approx(value, abs=1e-4), f"{config['recipe']} {name}"
            assert rank1[name] == rank0[name], f"{config['recipe']} {name}: the ranks disagree"


def test_every_recipe_with_an_evaluation_is_compared():
    """The list above covers every packaged recipe that has a validation or test loop."""
    from collections import defaultdict

    covered = {config["recipe"] for _, config in evaluations(Path("ws"), defaultdict(str))}
    for name in packaged_recipes():
        module = get_recipe(name).module_cls
        evaluates = any(getattr(module, hook) is not getattr(L.LightningModule, hook)
                        for hook in ("validation_step", "test_step"))
        assert evaluates != (name in NO_EVALUATION), f"{name}: NO_EVALUATION is wrong about it"
        assert (name in covered) == evaluates, f"{name}: not in evaluations()"
