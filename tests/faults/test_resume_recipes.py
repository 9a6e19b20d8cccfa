"""Exact resume for every recipe family: a run stopped in the middle of an epoch and resumed
from its last checkpoint ends with the same weights, bit for bit, as a run never stopped.

Every run checkpoints every step; the stop comes inside epoch 1 (after 2 of its 3 batches),
so the resume goes through the training loader's saved position, the RNG states, the
retrieval batch sampler's epoch embeddings (VideoCLIP) and the frozen text tower's cache. A
true ``kill -9`` is tested on the engine's own toy recipe (tests/engine/test_engine_resume.py);
here the stop is an exception at the same point (the process would be gone after it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from videolang.engine import fit

STEPS_PER_EPOCH = 3
STOP_AT = STEPS_PER_EPOCH + 3  # the checkpoint of step 5: epoch 1, 2 batches in


class Stop(Exception):
    pass


class StopAtStep(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == STOP_AT:
            raise Stop


def _configs(ws: Path) -> dict[str, dict[str, Any]]:
    w = ws / "world"
    h, c = w / "formats/howto100m", w / "formats/clipbert"
    tok, feats = str(ws / "tok"), str(ws / "features")
    small_bert = {"bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 2,
                  "bert.intermediate_size": 64, "bert.vocab_size": 400}
    return {
        "videoclip.pretrain": {
            "model": {"name": "videoclip-tiny", "normalize": True, "temperature": 0.1, "freeze_text": True},
            "data": {"features": feats, "captions": str(h / "raw_caption.json"), "pairs_per_video": 1,
                     "videos_per_batch": 8, "min_video_len": 1, "max_video_len": 4, "min_text_tokens": 2,
                     "max_text_len": 16, "retrieval": True, "retrieval_start_epoch": 1}},
        "vlm.mcqa": {
            "model": {"name": "vlm-tiny", "normalize": True, "temperature": 0.1},
            "data": {"features": feats, "tokenizer": tok, "max_video_len": 4, "max_text_len": 24,
                     "train_mc": str(w / "annotations/mc.jsonl"), "batch_size": 8}},
        "clipbert.qa": {
            "model": {"name": "clipbert-tiny", "overrides": {
                "bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 4,
                "bert.intermediate_size": 64, "backbone.stem_channels": 8, "backbone.width": 4}},
            "data": {"video_root": str(w / "videos"), "frame_size": 32, "max_text_len": 24, "target_fps": 2.0,
                     "frames_per_clip": 2, "train_clips": 1, "batch_size": 4, "sampling": "tgif_frameqa",
                     "train_file": str(c / "tgif_qa/frameqa_train.jsonl"),
                     "ans2label": str(c / "tgif_qa/frameqa_trainval_ans2label.json")}},
        "vimpac.pretrain": {
            "model": {"name": "vimpac-tiny", "overrides": {"hidden_size": 32, "num_heads": 2, "mlp_size": 64,
                                                            "num_layers": 1, "proj_hidden_size": 32,
                                                            "proj_size": 16}},
            "data": {"train_stores": [str(ws / "tokens_train")], "clip_len": 3, "stride": 2, "batch_size": 4}},
        "anticipation.student": {
            "model": {"name": "anticipation-student-tiny"},
            "data": {"format": "synthetic", "root": str(w), "anticipation_gap": 0.2, "hist_len": 3,
                     "tokenizer": tok, "features": str(ws / "features_5hz"), "max_rows": 8, "batch_size": 8}},
        "vidlankd.teacher": {
            "model": {"name": "vidlankd-teacher-tiny", "overrides": small_bert},
            "data": {"features": feats, "captions": str(h / "raw_caption.json"), "train_list": str(h / "train.lst"),
                     "tokenizer": tok, "block_size": 24, "max_video_len": 4, "batch_size": 4}},
    }


def _run_config(ws: Path, recipe: str, tag: str) -> dict[str, Any]:
    cfg = _configs(ws)[recipe]
    return {"recipe": recipe, "name": f"resume_{recipe}_{tag}", "seed": 3, "optim": {"lr": 1e-3}, **cfg,
            "trainer": {"max_epochs": 2, "limit_train_batches": STEPS_PER_EPOCH, "limit_val_batches": 0,
                        "num_sanity_val_steps": 0, "checkpoint_every_n_steps": 1, "enable_progress_bar": False,
                        "monitor": None, "log_every_n_steps": 1},
            "run": {"root": str(ws / "resume_runs"), "plots": False, "export": False}}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("recipe", sorted(["videoclip.pretrain", "vlm.mcqa", "clipbert.qa", "vimpac.pretrain",
                                           "anticipation.student", "vidlankd.teacher"]))
def test_a_run_resumed_mid_epoch_ends_bit_equal(workspace, recipe, one_torch_thread):
    straight = fit(_run_config(workspace, recipe, "straight"))
    stopped_cfg = _run_config(workspace, recipe, "stopped")
    with pytest.raises(Stop):
        fit(stopped_cfg, callbacks=[StopAtStep()])
    stopped = sorted((workspace / "resume_runs" / stopped_cfg["name"]).glob("version_*"))[-1]
    checkpoint = torch.load(stopped / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == STOP_AT - 1 and checkpoint["epoch"] == 1  # inside epoch 1
    resumed = fit(stopped_cfg, resume=stopped / "checkpoints" / "last.ckpt")
    a, b = _weights(straight.run_dir), _weights(resumed.run_dir)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{recipe}: {len(differ)} of {len(a)} tensors differ after the resume, e.g. {differ[:3]}"


def test_without_the_loaders_position_the_resume_would_differ(workspace, monkeypatch, one_torch_thread):
    """The control: the same stop and resume with the loader state left out of the checkpoint."""
    from videolang.engine.datamodule import SplitsDataModule

    monkeypatch.setattr(SplitsDataModule, "state_dict", lambda self: {})
    recipe = "vimpac.pretrain"
    straight = fit(_run_config(workspace, recipe, "control_straight"))
    stopped_cfg = _run_config(workspace, recipe, "control_stopped")
    with pytest.raises(Stop):
        fit(stopped_cfg, callbacks=[StopAtStep()])
    stopped = sorted((workspace / "resume_runs" / stopped_cfg["name"]).glob("version_*"))[-1]
    resumed = fit(stopped_cfg, resume=stopped / "checkpoints" / "last.ckpt")
    a, b = _weights(straight.run_dir), _weights(resumed.run_dir)
    assert any(not torch.equal(a[k], b[k]) for k in a)
