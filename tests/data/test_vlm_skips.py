"""Unreadable feature rows in real VLM runs (multiple-choice QA, captioning, segmentation): the
items of a damaged shard and of NaN rows are counted skips, the runs finish with finite metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.data.test_videoclip_skips import (
    BROKEN_SHARD,
    NAN_VIDEO,
    UNREADABLE,
    VIDEOS,
    make_data,
    skipped_sources,
)

from videolang.data.datasets import SkippedSample
from videolang.data.stores import FeatureStore
from videolang.data.vlm import SegmentationWindows, VideoSegments, feature_statistics
from videolang.engine import fit


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_data(tmp_path_factory.mktemp("vlm_skips"))
    mc = [{"video_id": v, "options": ["red ball", "blue box", "it spins"], "answer": i % 3, "split": "val"}
          for i, v in enumerate(VIDEOS)]
    (root / "mc.jsonl").write_text("".join(json.dumps(x) + "\n" for x in mc))
    coin = {"database": {v: {"subset": "training" if i % 4 else "validation", "annotation": [
        {"id": str(1 + i % 3), "segment": [0.0, 3.0], "label": f"step {1 + i % 3}"}]} for i, v in enumerate(VIDEOS)}}
    (root / "COIN.json").write_text(json.dumps(coin))
    return root


def config(root, recipe: str, **data) -> dict:
    return {
        "recipe": recipe, "name": recipe.replace(".", "_"), "seed": 0, "model": {"name": "vlm-tiny"},
        "data": {"features": str(root / "features"), "feature_rate": 1.0, "max_skipped_fraction": 0.3,
                 "batch_size": 8, "eval_batch_size": 8, **data},
        "optim": {"lr": 1e-3},
        "trainer": {"max_epochs": 1, "enable_progress_bar": False, "num_sanity_val_steps": 0,
                    "log_every_n_steps": 1, "monitor": None, "accelerator": "cpu"},
        "run": {"root": str(root / "runs"), "plots": False, "export": False},
    }


def text_config(root, recipe: str, **data) -> dict:
    return config(root, recipe, tokenizer=str(root / "tok"), max_video_len=4, max_text_len=12,
                  train_pairs=str(root / "captions.jsonl"), **data)


def test_segmentation_windows_of_unreadable_videos_are_skipped(data):
    store = FeatureStore(data / "features")
    videos = [VideoSegments(v, ((0.0, 3.0, 1),)) for v in (VIDEOS[0], NAN_VIDEO, BROKEN_SHARD[0])]
    ds = SegmentationWindows(videos, store, window=4, stride=2)
    items = [ds[i] for i in range(len(ds))]
    skipped = [it.source for it in items if isinstance(it, SkippedSample)]
    assert skipped == [NAN_VIDEO, NAN_VIDEO, BROKEN_SHARD[0]]  # a damaged video keeps one window
    assert [it["video"] for it in items if not isinstance(it, SkippedSample)] == [0, 0]


def test_multiple_choice_run_counts_skipped_items(data):
    result = fit(text_config(data, "vlm.mcqa", val_mc=str(data / "mc.jsonl"), val_mc_format="jsonl"))
    sources = skipped_sources(result.run_dir)
    assert sources["train"] == UNREADABLE and sources["val"] == UNREADABLE
    assert 0.0 <= result.metrics["final"]["val/accuracy"] <= 100.0


def test_captioning_run_counts_skipped_items(data):
    cfg = text_config(data, "vlm.captioning", val_pairs=str(data / "captions.jsonl"), val_format="jsonl",
                      val_split="val")
    cfg["model"].update(num_beams=1, max_decode_length=4)
    result = fit(cfg)
    assert skipped_sources(result.run_dir) == {"train": UNREADABLE, "val": {NAN_VIDEO, "vid21"}}


def test_segmentation_run_counts_skipped_windows(data):
    cfg = config(data, "vlm.segmentation", annotations=str(data / "COIN.json"), val_subset="validation",
                 window=4, train_stride=2, eval_stride=2)
    result = fit(cfg)
    sources = skipped_sources(result.run_dir)
    assert sources["train"] == UNREADABLE - {"vid20"} and sources["val"] == {"vid20"}  # vid20: validation
    assert np.isfinite(result.metrics["final"]["val/frame_accuracy"])


def test_feature_statistics_leave_out_unreadable_videos(data):
    mean, std = feature_statistics(str(data / "features"))
    store = FeatureStore(data / "features")
    readable = np.concatenate([store[v] for v in VIDEOS if v not in UNREADABLE]).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), readable.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), readable.std(0), rtol=1e-5)
