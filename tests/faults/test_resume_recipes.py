"""Exact resume for every recipe that trains: a run stopped and resumed from its last
checkpoint ends with the same weights, bit for bit, and the same training loss at every step
as a run never stopped.

Every run checkpoints every step (3 steps per epoch, 2 epochs). Every recipe of
``list_recipes()`` is stopped after the checkpoint of epoch 0's last batch and inside epoch 1
(after 2 of its 3 batches); VideoCLIP pretraining and ClipBERT QA also inside epoch 0 (after 1
batch). Mid-epoch, the resume goes through the training loader's saved position, the RNG
states and what the recipe keeps between steps (VideoCLIP's retrieval batch sampler's epoch
embeddings and its frozen text tower's cache). From the last batch's checkpoint, Lightning
enters the next epoch without its epoch-start hooks (``SplitsDataModule.missed_epoch_start``
runs them) and without the end-of-epoch validation an uninterrupted run ran (which must not
touch the RNG the training draws from: tested with validation on). A true ``kill -9`` is tested
on the engine's own toy recipe (tests/engine/test_engine_resume.py); here the stop is an
exception at the same point (the process would be gone after it: nothing runs between the last
checkpoint and the stop).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tests.packaged import packaged_recipes

from videolang.engine import fit

STEPS_PER_EPOCH = 3
IN_EPOCH_0 = 1  # the checkpoint of step 1: epoch 0, 1 batch in
END_OF_EPOCH_0 = STEPS_PER_EPOCH  # the checkpoint of epoch 0's last batch (before the epoch's end)
IN_EPOCH_1 = STEPS_PER_EPOCH + 2  # the checkpoint of step 5: epoch 1, 2 batches in
STOPS = (END_OF_EPOCH_0, IN_EPOCH_1)
MORE_STOPS = {"videoclip.pretrain": (IN_EPOCH_0, *STOPS), "clipbert.qa": (IN_EPOCH_0, *STOPS)}


class Stop(Exception):
    pass


class StopAfterCheckpoint(Callback):
    """Stops the run after the checkpoint of ``step`` (Lightning runs the checkpoint callback after
    the others, so a raise here comes before its save). For an epoch's last step the stop comes
    in that epoch's end, during its validation or its end hooks: ``last.ckpt`` is then the step
    checkpoint written before them, the case Lightning resumes without the next epoch's start
    hooks (a stop between epochs resumes from the epoch-end checkpoint, tests/engine)."""

    def __init__(self, step: int):
        self.step = step

    def _at_epoch_end(self, trainer) -> None:
        if self.step % STEPS_PER_EPOCH == 0 and trainer.global_step == self.step and not trainer.sanity_checking:
            raise Stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step + 1:
            raise Stop

    def on_validation_start(self, trainer, pl_module):
        self._at_epoch_end(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._at_epoch_end(trainer)


def _vqa_files(ws: Path) -> dict[str, str]:
    """Questions about the world's still images and their answer vocabulary (the world writes
    no VQA file): the answer is the colour word of the image's first caption, soft-scored, with
    a second weaker answer."""
    out, vocab = ws / "resume_vqa.jsonl", ws / "resume_vqa_ans2label.json"
    if not vocab.exists():
        colours = ("red", "green", "blue", "yellow", "white", "purple", "orange", "cyan", "magenta")
        rows = []
        for line in (ws / "world/annotations/image_captions.jsonl").read_text().splitlines()[:48]:
            image = json.loads(line)
            words = image["captions"][0].split()
            answer = next((w for w in words if w in colours), words[-1])
            rows.append({"file_name": image["file_name"], "question_id": len(rows),
                         "question": "what colour is the shape?", "labels": {answer: 1.0, "gray": 0.3}})
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        answers = sorted({a for r in rows for a in r["labels"]})
        vocab.write_text(json.dumps({a: i for i, a in enumerate(answers)}))
    return {"train_file": str(out), "ans2label": str(vocab)}


def _configs(ws: Path) -> dict[str, dict[str, Any]]:
    """A tiny ``model`` and ``data`` section of every recipe that trains, on the session workspace."""
    w, m = ws / "world", ws / "models"
    h, c = w / "formats/howto100m", w / "formats/clipbert"
    tok, feats = str(ws / "tok"), str(ws / "features")
    captions = {"train_pairs": str(w / "annotations/captions.jsonl"), "train_format": "jsonl"}
    small_bert = {"bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 2,
                  "bert.intermediate_size": 64, "bert.vocab_size": 400}
    clipbert_model = {"name": "clipbert-tiny", "overrides": {
        "bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 4,
        "bert.intermediate_size": 64, "backbone.stem_channels": 8, "backbone.width": 4}}
    clipbert_videos = {"video_root": str(w / "videos"), "frame_size": 32, "max_text_len": 24, "target_fps": 2.0,
                       "frames_per_clip": 2, "train_clips": 1, "batch_size": 4}
    clipbert_images = {"image_root": str(w / "images"), "frame_size": 32, "max_text_len": 16, "batch_size": 4}
    vimpac_tiny = {"hidden_size": 32, "num_heads": 2, "mlp_size": 64, "num_layers": 1, "proj_hidden_size": 32,
                   "proj_size": 16}
    tokens = {"train_stores": [str(ws / "tokens_train")], "clip_len": 3, "stride": 2, "batch_size": 4}
    anticipation = {"format": "synthetic", "root": str(w), "anticipation_gap": 0.2, "hist_len": 3,
                    "tokenizer": tok, "max_text_len": 32, "features": str(ws / "features_5hz"), "max_rows": 8,
                    "batch_size": 8}
    vlm = {"features": feats, "tokenizer": tok, "max_video_len": 4, "max_text_len": 24}
    return {
        "videoclip.pretrain": {
            "model": {"name": "videoclip-tiny", "normalize": True, "temperature": 0.1, "freeze_text": True},
            "data": {"features": feats, "captions": str(h / "raw_caption.json"), "pairs_per_video": 1,
                     "videos_per_batch": 8, "min_video_len": 1, "max_video_len": 4, "min_text_tokens": 2,
                     "max_text_len": 16, "retrieval": True, "retrieval_start_epoch": 1}},
        "videoclip.retrieval": {
            "model": {"name": "videoclip-tiny", "init": str(m / "videoclip"), "normalize": True,
                      "temperature": 0.1, "freeze_text": True},
            "data": {"features": feats, "tokenizer": "minilm", "max_video_len": 4, "max_text_len": 16,
                     "batch_size": 8, **captions}},
        "vlm.pretrain": {
            "model": {"name": "vlm-tiny"},
            "data": {**vlm, "captions": str(h / "raw_caption.json"), "train_list": str(h / "train.lst"),
                     "pairs_per_video": 2, "videos_per_batch": 4, "min_video_len": 1, "min_text_tokens": 2,
                     "max_text_tokens": 16, "retrieval": False}},
        "vlm.retrieval": {
            "model": {"name": "vlm-tiny", "normalize": True, "temperature": 0.1},
            "data": {**vlm, **captions, "batch_size": 8}},
        "vlm.mcqa": {
            "model": {"name": "vlm-tiny", "normalize": True, "temperature": 0.1},
            "data": {**vlm, "train_mc": str(w / "annotations/mc.jsonl"), "batch_size": 8}},
        "vlm.captioning": {
            "model": {"name": "vlm-tiny", "num_beams": 2, "max_decode_length": 4},
            "data": {**vlm, **captions, "batch_size": 8}},
        "vlm.segmentation": {
            "model": {"name": "vlm-tiny"},
            "data": {"features": feats, "annotations": str(w / "formats/coin/COIN.json"), "window": 4,
                     "train_stride": 2, "batch_size": 8}},
        "clipbert.retrieval": {
            "model": clipbert_model,
            "data": {**clipbert_videos, "sampling": "msrvtt_ret", "train_file": str(c / "msrvtt_retrieval/train.jsonl")}},
        "clipbert.qa": {
            "model": clipbert_model,
            "data": {**clipbert_videos, "sampling": "tgif_frameqa", "train_file": str(c / "tgif_qa/frameqa_train.jsonl"),
                     "ans2label": str(c / "tgif_qa/frameqa_trainval_ans2label.json")}},
        "clipbert.mcqa": {
            "model": clipbert_model,
            "data": {**clipbert_videos, "sampling": "tgif_action", "train_file": str(c / "tgif_qa/action_train.jsonl")}},
        "clipbert.vqa": {
            "model": clipbert_model,
            "data": {**clipbert_images, **_vqa_files(ws)}},
        "clipbert.pretrain": {
            "model": clipbert_model,
            "data": {**clipbert_images, "train_file": str(w / "annotations/image_captions.jsonl")}},
        "vimpac.pretrain": {
            "model": {"name": "vimpac-tiny", "overrides": vimpac_tiny},
            "data": tokens},
        "vimpac.finetune": {
            "model": {"name": "vimpac-tiny", "overrides": {**vimpac_tiny, "pooling": "mean"}},
            "data": tokens},
        "anticipation.mlm": {
            "model": {"name": "anticipation-teacher-tiny", "vocab_size": 400},
            "data": {**anticipation, "mlm_corpus": str(w / "text/action_sequences.txt")}},
        "anticipation.teacher": {
            "model": {"name": "anticipation-teacher-tiny", "vocab_size": 400, "mlm_weight": 0.5},
            "data": anticipation},
        "anticipation.student": {
            "model": {"name": "anticipation-student-tiny"},
            "data": anticipation},
        "vidlankd.teacher": {
            "model": {"name": "vidlankd-teacher-tiny", "overrides": small_bert},
            "data": {"features": feats, "captions": str(h / "raw_caption.json"), "train_list": str(h / "train.lst"),
                     "tokenizer": tok, "block_size": 24, "max_video_len": 4, "batch_size": 4}},
        "vidlankd.student": {
            "model": {"name": "vidlankd-student-tiny", "overrides": small_bert,
                      "teacher": str(m / "vidlankd-teacher"), "kd": ["nst", "contrastive"]},
            "data": {"train_files": [str(w / "text/corpus.txt")], "format": "plain", "tokenizer": tok,
                     "block_size": 30, "batch_size": 8, "cache_dir": str(ws / "resume_cache")}},
        "vidlankd.glue": {
            "model": {"init": str(m / "vidlankd-student")},
            "data": {"task_dir": str(w / "formats/glue"), "task": "SST-2", "max_seq_length": 32, "batch_size": 8}},
    }


def _validation(ws: Path) -> dict[str, dict[str, Any]]:
    """``data`` keys of a validation split for the recipes resumed with validation on."""
    return {"vlm.pretrain": {"val_pairs": str(ws / "world/annotations/captions.jsonl"), "val_format": "jsonl",
                             "val_split": "val"},
            "vimpac.pretrain": {"val_stores": [str(ws / "tokens_train")]}}


def _run_config(ws: Path, recipe: str, tag: str, *, validate: bool = False) -> dict[str, Any]:
    cfg = _configs(ws)[recipe]
    if validate:  # 2 batches after every epoch
        cfg["data"] = {**cfg["data"], **_validation(ws)[recipe]}
    return {"recipe": recipe, "name": f"resume_{recipe}_{tag}", "seed": 3, "optim": {"lr": 1e-3}, **cfg,
            "trainer": {"max_epochs": 2, "limit_train_batches": STEPS_PER_EPOCH, "limit_val_batches": 2 if validate else 0,
                        "num_sanity_val_steps": 0, "checkpoint_every_n_steps": 1, "enable_progress_bar": False,
                        "monitor": None, "log_every_n_steps": 1},
            "run": {"root": str(ws / "resume_runs"), "plots": False, "export": False}}


def _checkpoint(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


class Ending:
    """What a run ends with: its weights and the training loss of every step."""

    def __init__(self, result):
        checkpoint = _checkpoint(result.run_dir)
        self.steps = checkpoint["global_step"]
        self.weights: dict[str, torch.Tensor] = checkpoint["state_dict"]
        self.losses = [(h["step"], h["epoch"], h["loss"]) for h in result.metrics["history"]["train"]]


def _stop_and_resume(ws: Path, recipe: str, step: int, tag: str,
                     validate: bool = False) -> tuple[Ending, dict[str, torch.Tensor]]:
    """The ending of a run stopped after the checkpoint of ``step`` and resumed from it, and
    the weights it was stopped with."""
    stopped_cfg = _run_config(ws, recipe, tag, validate=validate)
    with pytest.raises(Stop):
        fit(stopped_cfg, callbacks=[StopAfterCheckpoint(step)])
    stopped = sorted((ws / "resume_runs" / stopped_cfg["name"]).glob("version_*"))[-1]
    checkpoint = _checkpoint(stopped)
    assert (checkpoint["global_step"], checkpoint["epoch"]) == (step, (step - 1) // STEPS_PER_EPOCH)
    return Ending(fit(stopped_cfg, resume=stopped / "checkpoints" / "last.ckpt")), checkpoint["state_dict"]


def test_every_training_recipe_is_covered(workspace):
    assert sorted(_configs(workspace)) == packaged_recipes()


def _assert_resumes_bit_equal(ws: Path, recipe: str, stops: tuple[int, ...], validate: bool = False) -> None:
    tag = "_val" if validate else ""
    straight = Ending(fit(_run_config(ws, recipe, f"straight{tag}", validate=validate)))
    assert straight.steps == 2 * STEPS_PER_EPOCH
    for step in stops:
        resumed, at_stop = _stop_and_resume(ws, recipe, step, f"stopped_at_{step}{tag}", validate)
        assert resumed.steps == straight.steps
        assert any(not torch.equal(at_stop[k], resumed.weights[k]) for k in at_stop), "no training after the resume"
        differ = [k for k in straight.weights if not torch.equal(straight.weights[k], resumed.weights[k])]
        assert not differ, (f"{recipe} stopped after step {step}: {len(differ)} of {len(straight.weights)} "
                            f"tensors differ after the resume, e.g. {differ[:3]}")
        assert resumed.losses == straight.losses, f"{recipe} stopped after step {step}: other training losses"


@pytest.mark.parametrize("recipe", packaged_recipes())
def test_a_resumed_run_ends_bit_equal(workspace, recipe, one_torch_thread):
    _assert_resumes_bit_equal(workspace, recipe, MORE_STOPS.get(recipe, STOPS))


@pytest.mark.parametrize("recipe", ["vimpac.pretrain", "vlm.pretrain"])
def test_a_resume_that_skips_a_validation_ends_bit_equal(workspace, recipe, one_torch_thread):
    """Validation after every epoch: the run resumed from epoch 0's last batch never runs the
    validation of epoch 0 (Lightning), so validation must leave the training's RNG alone
    (VIMPAC's validation masks, every evaluation loader's worker seed)."""
    _assert_resumes_bit_equal(workspace, recipe, (END_OF_EPOCH_0,), validate=True)


def test_without_the_loaders_position_the_resume_would_differ(workspace, monkeypatch, one_torch_thread):
    """The control: the same stop and resume with the loader state left out of the checkpoint."""
    from videolang.engine.datamodule import SplitsDataModule

    monkeypatch.setattr(SplitsDataModule, "state_dict", lambda self: {})
    recipe = "vimpac.pretrain"
    straight = Ending(fit(_run_config(workspace, recipe, "control_straight")))
    resumed, _ = _stop_and_resume(workspace, recipe, IN_EPOCH_1, "control_stopped")
    assert any(not torch.equal(straight.weights[k], resumed.weights[k]) for k in straight.weights)
    assert resumed.losses[-1] != straight.losses[-1]


def test_without_the_missed_epoch_start_the_resume_would_differ(workspace, monkeypatch, one_torch_thread):
    """The control: resumed from epoch 0's last batch without running the epoch-start hooks
    that Lightning skips, epoch 1 draws its data with epoch 0's seeds."""
    from videolang.engine.datamodule import SplitsDataModule

    monkeypatch.setattr(SplitsDataModule, "missed_epoch_start", lambda self: None)
    recipe = "vlm.pretrain"
    straight = Ending(fit(_run_config(workspace, recipe, "control_epoch_straight")))
    resumed, _ = _stop_and_resume(workspace, recipe, END_OF_EPOCH_0, "control_epoch_stopped")
    assert any(not torch.equal(straight.weights[k], resumed.weights[k]) for k in straight.weights)
    assert resumed.losses[STEPS_PER_EPOCH:] != straight.losses[STEPS_PER_EPOCH:]
