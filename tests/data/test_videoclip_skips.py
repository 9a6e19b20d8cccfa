"""Unreadable feature rows in real VideoCLIP runs: a damaged shard and non-finite rows become
counted skips (skipped.json, the DataGuard's limit), never a traceback mid-epoch; a video the
store lacks is a named error when the split is built."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from videolang.data.datasets import SkippedSample
from videolang.data.stores import FeatureStore, FeatureStoreWriter
from videolang.data.text import build_wordpiece_tokenizer
from videolang.data.videoclip import TextLayout, VideoTextPairs, collate_pairs
from videolang.engine import fit
from videolang.errors import DataError, VideolangError

VIDEOS = [f"vid{i:02d}" for i in range(24)]
NAN_VIDEO = "vid03"  # its rows hold NaN
BROKEN_SHARD = VIDEOS[20:]  # the last shard (4 videos a shard), its data file cut short
UNREADABLE = {NAN_VIDEO, *BROKEN_SHARD}
WORDS = ["red", "blue", "ball", "box", "moves", "left", "right", "grows", "spins", "fast"]


def caption(i: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(5))


def make_data(root: Path) -> Path:
    """A 24-video store with one NaN video and a damaged last shard, the annotations of both
    VideoCLIP objectives, and a small tokenizer."""
    rng = np.random.default_rng(0)
    with FeatureStoreWriter(root / "features", dtype="float32", shard_size=4) as w:
        for i, vid in enumerate(VIDEOS):
            w.add(vid, rng.normal(size=(6, 8)).astype(np.float32) + i % 3)
    first, *_, last = sorted((root / "features").rglob("*data.npy"))
    store = FeatureStore(root / "features")
    assert store.get_many(BROKEN_SHARD) and store.get(NAN_VIDEO) is not None
    rows = np.load(first, mmap_mode="r+")  # the writer refuses NaN: spoil the rows on disk
    rows[VIDEOS.index(NAN_VIDEO) * 6 :][:6] = np.nan
    rows.flush()
    del rows
    last.write_bytes(last.read_bytes()[:200])
    lines = [{"video_id": v, "caption": caption(i), "split": s} for i, v in enumerate(VIDEOS)
             for s in (["train", "val"] if i % 3 == 0 else ["train"])]
    (root / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    raw = {v: {"start": [0.0, 2.0, 4.0], "end": [2.0, 4.0, 6.0], "text": [caption(i), caption(i + 1), caption(i + 2)]}
           for i, v in enumerate(VIDEOS)}
    (root / "raw_caption.json").write_text(json.dumps(raw))
    (root / "train.lst").write_text("".join(v + "\n" for v in VIDEOS))
    build_wordpiece_tokenizer([x["caption"] for x in lines], root / "tok", vocab_size=120)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("skips"))


def config(root: Path, recipe: str, limit: float, **data) -> dict:
    return {
        "recipe": recipe, "name": recipe.replace(".", "_"), "seed": 0,
        "model": {"name": "videoclip-tiny", "normalize": True, "temperature": 0.1},
        "data": {"features": str(root / "features"), "feature_rate": 1.0, "tokenizer": str(root / "tok"),
                 "max_video_len": 4, "max_text_len": 12, "max_skipped_fraction": limit,
                 "val_pairs": str(root / "captions.jsonl"), "val_format": "jsonl", "val_split": "val",
                 "batch_size": 8, "eval_batch_size": 8, **data},
        "optim": {"lr": 1e-3},
        "trainer": {"max_epochs": 2, "enable_progress_bar": False, "num_sanity_val_steps": 0,
                    "log_every_n_steps": 1, "monitor": None, "accelerator": "cpu"},
        "run": {"root": str(root / "runs"), "plots": False, "export": False},
    }


def skipped_sources(run_dir: Path) -> dict[str, set[str]]:
    report = json.loads((run_dir / "skipped.json").read_text())
    return {stage: {s["source"] for s in samples} for stage, samples in report["skipped"].items()}


def test_unreadable_rows_are_skipped_items(data):
    store = FeatureStore(data / "features")
    pairs = [(v, 0.0, None, "red ball") for v in VIDEOS]
    ds = VideoTextPairs(pairs, store, lambda texts: [[5, 6] for _ in texts], TextLayout(max_text_len=4), max_video_len=4)
    items = [ds[i] for i in range(len(ds))]
    skipped = {item.source: item.reason for item in items if isinstance(item, SkippedSample)}
    assert set(skipped) == UNREADABLE
    assert skipped[NAN_VIDEO] == "non-finite feature values"
    assert all("feature rows unreadable" in skipped[v] for v in BROKEN_SHARD)
    batch = collate_pairs([{k: v.unsqueeze(0) for k, v in items[0].items() if k != "index"}, items[3]])
    assert batch["vfeats"].shape == (1, 4, 8) and [s.source for s in batch["skipped"]] == [NAN_VIDEO]
    with pytest.raises(VideolangError, match=r"1 evaluation videos have no features, e\.g\. \['nowhere'\]"):
        VideoTextPairs([("nowhere", 0.0, None, "x")], store, lambda t: [[5]], TextLayout())


def test_fine_tuning_counts_skips_and_finishes(data):
    result = fit(config(data, "videoclip.retrieval", 0.3, train_pairs=str(data / "captions.jsonl")))
    sources = skipped_sources(result.run_dir)
    assert sources["train"] == UNREADABLE and sources["val"] == {NAN_VIDEO, "vid21"}
    report = json.loads((result.run_dir / "skipped.json").read_text())
    assert len(report["skipped"]["train"]) == len(UNREADABLE) and report["seen"]["train"] == len(VIDEOS)  # an epoch
    assert np.isfinite(result.metrics["final"]["val/R1"])


def test_pretraining_with_retrieval_batches_counts_skips(data):
    cfg = config(data, "videoclip.pretrain", 0.3, captions=str(data / "raw_caption.json"),
                 train_list=str(data / "train.lst"), pairs_per_video=2, videos_per_batch=4, min_video_len=1,
                 min_text_tokens=2, max_text_tokens=10, retrieval_start_epoch=1, retrieval_pairs_per_video=2)
    result = fit(cfg)  # epoch 1 clusters every video, the unreadable ones as zero rows
    # skipped.json holds the last epoch: retrieval batches draw neighbours, not every video
    assert skipped_sources(result.run_dir)["train"] <= UNREADABLE and result.metrics["history"]["val"]
    assert np.isfinite(result.metrics["final"]["val/R1"])


def test_too_many_skips_stop_the_run_with_a_named_error(data):
    with pytest.raises(DataError, match=r"could not be read, more than data\.max_skipped_fraction=0\.01"):
        fit(config(data, "videoclip.retrieval", 0.01, train_pairs=str(data / "captions.jsonl")))
