"""Anticipation and VidLanKD runs over a feature store with a damaged video (NaN rows, as a
failed extraction leaves them): its samples are skipped, listed in skipped.json, and the run
finishes with finite losses (under a limit that allows them)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from videolang.data.stores import FeatureStore, FeatureStoreWriter
from videolang.engine import fit

DAMAGED = "vid00003"


SENTINEL = 12345.0


def _damaged_copy(source, out):
    """A copy whose DAMAGED video's rows are NaN on disk (the writer refuses NaN, so a sentinel
    is written and replaced in the shard afterwards, as a damaged file would hold them)."""
    store = FeatureStore(source)
    with FeatureStoreWriter(out, dtype="float32") as writer:
        for vid in store.ids:
            rows = np.asarray(store[vid], dtype=np.float32)
            writer.add(vid, np.full_like(rows, SENTINEL) if vid == DAMAGED else rows)
    for shard in out.rglob("*data.npy"):
        data = np.load(shard, mmap_mode="r+")
        data[data == SENTINEL] = np.nan
        data.flush()
    extraction = source / "extraction.json"
    if extraction.is_file():
        (out / "extraction.json").write_text(extraction.read_text())
    return out


@pytest.fixture(scope="module")
def damaged(workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    return {"features": _damaged_copy(workspace / "features", root / "features"),
            "features_5hz": _damaged_copy(workspace / "features_5hz", root / "features_5hz")}


def _configs(ws, damaged):
    w = ws / "world"
    h = w / "formats/howto100m"
    tok = str(ws / "tok")
    small_bert = {"bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 2,
                  "bert.intermediate_size": 64, "bert.vocab_size": 400}
    return {
        "anticipation.student": ({"name": "anticipation-student-tiny"},
                                 {"format": "synthetic", "root": str(w), "anticipation_gap": 0.2, "hist_len": 3,
                                  "tokenizer": tok, "features": str(damaged["features_5hz"]), "max_rows": 8,
                                  "batch_size": 8, "val_split": None}),
        "vidlankd.teacher": ({"name": "vidlankd-teacher-tiny", "overrides": small_bert},
                             {"features": str(damaged["features"]), "captions": str(h / "raw_caption.json"),
                              "train_list": str(h / "train.lst"), "tokenizer": tok, "block_size": 24,
                              "max_video_len": 4, "batch_size": 4}),
    }


@pytest.mark.parametrize("recipe", ["anticipation.student", "vidlankd.teacher"])
def test_a_damaged_video_is_skipped_and_the_run_finishes(workspace, damaged, recipe, tmp_path):
    model, data = _configs(workspace, damaged)[recipe]
    result = fit({"recipe": recipe, "name": "damaged", "model": model,
                  "data": {**data, "max_skipped_fraction": 0.5},
                  "trainer": {"max_epochs": 1, "enable_progress_bar": False, "monitor": None,
                              "limit_val_batches": 0, "num_sanity_val_steps": 0, "log_every_n_steps": 1},
                  "run": {"root": str(tmp_path), "plots": False, "export": False}})
    report = json.loads((result.run_dir / "skipped.json").read_text())
    skipped = report["skipped"]["train"]
    assert skipped and {r["source"] for r in skipped} == {DAMAGED}
    assert all("non-finite" in r["reason"] for r in skipped)
    assert result.metrics["skipped"]["train"] == len(skipped)
    losses = [v for row in result.metrics["history"]["train"] for k, v in row.items() if "loss" in k]
    assert losses and all(math.isfinite(v) for v in losses)
