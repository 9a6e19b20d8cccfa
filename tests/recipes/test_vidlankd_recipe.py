"""VidLanKD recipes end to end on a tiny synthetic world: teacher -> distilled student -> GLUE
(through ``videolang glue``), the frozen-video switch, and the caption windows."""

from __future__ import annotations

import json

import pytest
import torch

import videolang
from videolang.data.text import build_wordpiece_tokenizer
from videolang.data.vidlankd import caption_window, remove_overlap
from videolang.engine import fit
from videolang.errors import ConfigError
from videolang.models import load_pretrained
from videolang.pipelines.features import run_extraction
from videolang.synth import synthesize_world

SMALL = {"bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 2,
         "bert.intermediate_size": 64, "bert.vocab_size": 400}
QUIET = {"enable_progress_bar": False, "num_sanity_val_steps": 0, "log_every_n_steps": 1, "max_epochs": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vidlankd")
    synthesize_world(root / "world", 24, seed=5, size=32, duration=3.0, progress=False)
    run_extraction(str(root / "world" / "videos"), "pooled-pixels", str(root / "features"), dtype="float32",
                   progress=False, backbone_options={"grid": 2, "rows_per_second": 2})
    text = (root / "world" / "text" / "corpus.txt").read_text().splitlines()
    tok = build_wordpiece_tokenizer([*text, " . "], root / "tok", vocab_size=400)
    assert len(tok) <= 400
    (root / "val.txt").write_text("\n".join(text[:40]) + "\n")
    return root


def teacher_config(root, **model) -> dict:
    h = root / "world" / "formats" / "howto100m"
    return {
        "recipe": "vidlankd.teacher", "name": "teacher", "seed": 0,
        "model": {"name": "vidlankd-teacher-tiny", "overrides": SMALL, **model},
        "data": {"features": str(root / "features"), "captions": str(h / "raw_caption.json"),
                 "train_list": str(h / "train.lst"), "val_list": str(h / "val.lst"), "tokenizer": str(root / "tok"),
                 "block_size": 24, "max_video_len": 8, "batch_size": 8},
        "optim": {"lr": 1e-3},
        "trainer": QUIET,
        "run": {"root": str(root / "runs"), "plots": False},
    }


def test_teacher_student_glue(world, capsys):
    teacher = fit(teacher_config(world))
    final = teacher.metrics["final"]
    assert {"val/R1", "val/chance_R1", "val/mlm", "val/hinge"} <= set(final)
    export = teacher.run_dir / "export"
    t_model = load_pretrained(export)
    assert t_model.config.tokenizer == str(world / "tok")  # recorded for the student / GLUE
    assert videolang.load(export).spec.task == "teacher"  # a complete model folder (tests/pipelines)

    student_cfg = {
        "recipe": "vidlankd.student", "name": "student", "seed": 0,
        "model": {"name": "vidlankd-student-tiny", "overrides": SMALL, "teacher": str(export),
                  "kd": ["nst", "contrastive"]},
        "data": {"train_files": [str(world / "world" / "text" / "corpus.txt")], "val_files": [str(world / "val.txt")],
                 "format": "plain", "tokenizer": str(world / "tok"), "block_size": 30, "batch_size": 16,
                 "cache_dir": str(world / "cache")},
        "optim": {"lr": 1e-3},
        "trainer": {**QUIET, "limit_train_batches": 6},
        "run": {"root": str(world / "runs"), "plots": False},
    }
    student = fit(student_cfg)
    s_final = student.metrics["final"]
    assert {"val/mlm", "val/nst", "val/contrastive", "val/perplexity"} <= set(s_final)
    assert s_final["val/perplexity"] == pytest.approx(float(torch.tensor(s_final["val/mlm"]).exp()), rel=1e-4)
    # the teacher is neither trained nor saved with the student
    ckpt = torch.load(student.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("teacher") for k in ckpt["state_dict"])
    assert torch.equal(load_pretrained(export).bert.encoder.layer[0].output.dense.weight,
                       t_model.bert.encoder.layer[0].output.dense.weight)

    # MLM-only baseline: no KD heads, no KD terms
    base_cfg = json.loads(json.dumps(student_cfg))
    base_cfg["model"].update(teacher=None, kd=["nst"])
    base_cfg["name"] = "baseline"
    base = fit(base_cfg)
    assert "val/nst" not in base.metrics["final"]
    assert load_pretrained(base.run_dir / "export").nst_head is None

    from videolang.cli.main import main

    out = world / "glue.json"
    code = main(["glue", "--model", str(student.run_dir / "export"), "--glue-dir", str(world / "world/formats/glue"),
                 "--tasks", "SST-2", "--seeds", "0", "--epochs", "1", "--batch-size", "32", "--lr", "1e-3",
                 "--runs", str(world / "runs"), "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    acc = report["results"]["SST-2"]["metrics"]["accuracy"]
    assert len(acc) == 1 and 0.0 <= acc[0] <= 100.0
    assert "SST-2    accuracy" in capsys.readouterr().out


def test_frozen_video_tower_stays_fixed(world):
    cfg = teacher_config(world, freeze_video=True)
    cfg["data"]["val_list"] = None
    cfg["run"]["export"] = False
    res = fit(cfg)
    state = torch.load(res.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    torch.manual_seed(0)
    from videolang.models import create_model

    init = create_model("vidlankd-teacher-tiny", feature_dim=12, **SMALL)
    # same seed, same build order: the frozen tower still holds its initial weights
    assert torch.equal(state["model.video.mlp_map.3.weight"], init.video.mlp_map[3].weight)
    assert not torch.equal(state["model.bert.encoder.layer.0.output.dense.weight"],
                           init.bert.encoder.layer[0].output.dense.weight)


def test_student_config_errors(world):
    cfg = {"recipe": "vidlankd.student", "model": {"name": "vidlankd-student-tiny", "kd": ["voken"]},
           "data": {"train_files": [str(world / "val.txt")], "tokenizer": str(world / "tok")},
           "run": {"root": str(world / "runs")}, "trainer": QUIET}
    with pytest.raises(ConfigError, match="unknown term"):
        fit(cfg)


def test_bad_teacher_override_names_the_key(world):
    cfg = teacher_config(world, overrides={**SMALL, "video_pooling": "foo"})
    with pytest.raises(ConfigError, match=r"model\.overrides=.*video_pooling.*'first'.*'mean'"):
        fit(cfg)


def test_caption_windows():
    assert remove_overlap("we cut the onion", "the onion into rings") == " into rings"
    assert remove_overlap("abc", "xyz") == "xyz"
    text, last = caption_window(["one two", "two three", "four five six"], 0, 4)
    assert text == "one two . two three ." and last == 1
    text, last = caption_window(["a b", "c d"], 1, 100)
    assert text == "c d ." and last == 1


def test_demo_report(world, capsys):
    """The demo's table and summary.json from per-seed rows (the training itself is covered above)."""
    import argparse

    from videolang.cli.demos.vidlankd import _report

    rows = [{"seed": s, "teacher_R1": 10.0 + s, "chance_R1": 2.0, "teacher_val_mlm": 2.0,
             "kd_val_perplexity": 40.0 - s, "mlm_val_perplexity": 43.0,
             "kd_glue": {"SST-2": 55.0 + s, "RTE": 50.0}, "mlm_glue": {"SST-2": 54.0, "RTE": 51.0}} for s in (0, 1)]
    args = argparse.Namespace(seeds=[0, 1], kd=["nst"], num_videos=24, epochs_scale=1.0)
    _report(rows, args, world, 12.0)
    text = capsys.readouterr().out
    assert "10.50 +-  0.71" in text and "+1.0 +2.0" in text
    summary = json.loads((world / "summary.json").read_text())
    assert summary["tasks"]["RTE"]["diff"] == [-1.0, -1.0] and 0 < summary["tasks"]["RTE"]["majority"] <= 100
