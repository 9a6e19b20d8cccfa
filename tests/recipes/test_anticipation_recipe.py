"""The anticipation recipes end to end on a tiny synthetic world: teacher fit + exported
predictions, student fit with the KD term, test metrics, errors for missing teacher rows."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import videolang
from videolang.data.anticipation import (
    TeacherPredictions,
    build_queries,
    read_segments,
    save_teacher_predictions,
)
from videolang.data.text import build_wordpiece_tokenizer, load_tokenizer
from videolang.engine import fit, test
from videolang.errors import ConfigError
from videolang.pipelines.features import run_extraction
from videolang.synth import synthesize_world

TRAINER = {"max_epochs": 1, "enable_progress_bar": False, "num_sanity_val_steps": 0, "log_every_n_steps": 1}


class LoggedKeys(Callback):
    """Names of the values logged during training (the run history keeps only the loss)."""

    def __init__(self):
        self.keys: set[str] = set()

    def on_train_epoch_end(self, trainer, pl_module):
        self.keys |= set(trainer.callback_metrics)


TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("anticipation")
    synthesize_world(root / "world", 16, seed=2, size=32, duration=3.0, progress=False)
    run_extraction(str(root / "world" / "videos"), "pooled-pixels", str(root / "features"), dtype="float32",
                   progress=False, backbone_options={"grid": 2, "rows_per_second": 5})
    # a small WordPiece vocabulary of the action text keeps the tiny teacher's MLM cheap
    build_wordpiece_tokenizer(root / "world/text/action_sequences.txt", root / "tokenizer", vocab_size=120)
    return root


def _data(root, **kw):
    return {"format": "synthetic", "root": str(root / "world"), "anticipation_gap": 0.2, "hist_len": 3,
            "tokenizer": str(root / "tokenizer"),
            "max_text_len": 32, "features": str(root / "features"), "max_rows": 8, "batch_size": 8, **kw}


def test_mlm_teacher_then_student_with_kd(world):
    vocab = len(load_tokenizer(world / "tokenizer"))
    mlm = fit({
        "recipe": "anticipation.mlm", "name": "m", "seed": 0,
        "model": {"name": "anticipation-teacher-tiny", "vocab_size": vocab},
        "data": _data(world, mlm_corpus=str(world / "world/text/action_sequences.txt")), "optim": {"lr": 1e-3},
        "trainer": {**TRAINER, "limit_train_batches": 2}, "run": {"root": str(world / "runs"), "plots": False},
    })
    teacher_cfg = {
        "recipe": "anticipation.teacher", "name": "t", "seed": 0,
        "model": {"name": "anticipation-teacher-tiny", "init": str(mlm.run_dir / "export"), "class_weights": True,
                  "mlm_weight": 0.5, "export_splits": ["train", "val"]},
        "data": _data(world), "optim": {"lr": 1e-3}, "trainer": TRAINER,
        "run": {"root": str(world / "runs"), "plots": False},
    }
    teacher = fit(teacher_cfg)
    assert "val/top5" in teacher.metrics["final"] and "val/verb_top1" in teacher.metrics["final"]
    pred_file = teacher.run_dir / "export" / "predictions" / "train.safetensors"
    pred = TeacherPredictions(pred_file)
    train_q = build_queries(read_segments("synthetic", world / "world", "train"), anticipation_gap=0.2)
    assert pred.coverage(q.uid for q in train_q) == 1.0 and pred.num_classes == 52
    assert pred.features.shape[1] == 64 and pred.info["in_sample"] is True
    assert videolang.load(teacher.run_dir / "export").spec.task == "teacher"  # a model folder (tests/pipelines)

    student_cfg = {
        "recipe": "anticipation.student", "name": "s", "seed": 0,
        "model": {"name": "anticipation-student-tiny", "kd_weight": 1.0, "kd_temperature": 2.0, "kd_top_k": 10,
                  "kd_selection": "topk_other", "feat_kd_weight": 0.1},
        "data": _data(world, teacher_predictions=str(pred_file)), "optim": {"lr": 1e-3}, "trainer": TRAINER,
        "run": {"root": str(world / "runs"), "plots": False},
    }
    logged = LoggedKeys()
    student = fit(student_cfg, callbacks=[logged])
    assert {"train/kd", "train/feat_kd", "train/ce_action"} <= logged.keys
    tested = test(student_cfg, resume=student.run_dir)
    assert {"test/top1", "test/top5", "test/mean_top5_recall", "test/mean_top1"} <= set(tested.metrics["test"])


def test_student_refuses_missing_teacher_rows(world, tmp_path):
    partial = tmp_path / "partial.safetensors"
    save_teacher_predictions(partial, ["0"], torch.zeros(1, 52))
    cfg = {
        "recipe": "anticipation.student", "name": "s2", "seed": 0,
        "model": {"name": "anticipation-student-tiny", "kd_weight": 1.0, **{}},
        "data": _data(world, teacher_predictions=str(partial)), "optim": {"lr": 1e-3}, "trainer": TRAINER,
        "run": {"root": str(tmp_path / "runs"), "plots": False},
    }
    with pytest.raises(ConfigError, match="no teacher prediction for clip uid"):
        fit(cfg)
    cfg["data"]["missing_teacher"] = "uniform"  # KD masked for those clips: trains
    assert fit(cfg).metrics["final"]
    with pytest.raises(ConfigError, match=r"kd_weight needs data\.teacher_predictions"):
        fit({**cfg, "data": _data(world)})


def test_tiny_overrides_exist():
    # the recipe builds from registered configs with dataset sizes; sizes can be shrunk
    from videolang.models import create_model

    model = create_model("anticipation-teacher-tiny", **TINY, vocab_size=100)
    assert model.feature_dim == 32


def test_tokenizer_larger_than_the_teacher_vocabulary_is_refused():
    from videolang.recipes.anticipation import TeacherModelConfig, _check_vocab

    _check_vocab(TeacherModelConfig(vocab_size=200), 120, "small")
    with pytest.raises(ConfigError, match=r"model\.vocab_size=30522"):
        _check_vocab(TeacherModelConfig(vocab_size=100), 30522, "minilm")
