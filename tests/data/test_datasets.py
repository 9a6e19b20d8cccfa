"""Datasets skip, count and log bad videos and never end an epoch."""

from __future__ import annotations

import logging

import torch
from tests.conftest import decoded_index
from torch.utils.data import DataLoader

from videolang.data.datasets import SkipCounter, VideoFramesDataset, collate_skipping
from videolang.data.sampling import clipbert_clip_indices


def sampler(meta, generator):
    return clipbert_clip_indices(meta.num_frames, meta.fps, num_clips=2, frames_per_clip=2,
                                 generator=generator)


RECORDS = [
    {"video": "gop30.mp4", "label": 0},
    {"video": "empty.mp4", "label": 1},
    {"video": "gop7.mp4", "label": 2},
    {"video": "text.mp4", "label": 3},
    {"video": "missing.mp4", "label": 4},
    {"video": "truncated.mp4", "label": 5},
]


def test_bad_videos_are_skipped_counted_and_logged(video_dir, caplog):
    ds = VideoFramesDataset(RECORDS, sampler, video_root=video_dir, seed=3)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_skipping)
    counter = SkipCounter()
    seen = []
    with caplog.at_level(logging.INFO):
        for batch in loader:
            if counter.update(batch):
                seen += batch["label"].tolist()
                assert batch["frames"].shape[1:] == (2, 2, 32, 32, 3)
                # frames are the ones the sampler chose
                for frames, idx in zip(batch["frames"], batch["frame_indices"], strict=False):
                    assert decoded_index(frames[1, 0].numpy()) == int(idx[1, 0])
    assert sorted(seen) == [0, 2]
    assert counter.count == 4
    assert {s.source for s in counter.seen} == {"empty.mp4", "text.mp4", "missing.mp4", "truncated.mp4"}
    assert "missing.mp4" in caplog.text


def test_items_are_deterministic_per_seed_epoch_and_index(video_dir):
    ds = VideoFramesDataset(RECORDS[:1], sampler, video_root=video_dir, seed=1)
    a = ds[0]["frame_indices"]
    assert torch.equal(a, ds[0]["frame_indices"])
    ds.set_epoch(1)
    epochs = {tuple(ds[0]["frame_indices"].flatten().tolist())}
    for e in range(2, 6):
        ds.set_epoch(e)
        epochs.add(tuple(ds[0]["frame_indices"].flatten().tolist()))
    assert len(epochs) > 1


def test_store_backed_dataset_reads_bytes(video_dir):
    store = {"clip": (video_dir / "gop7.mp4").read_bytes()}
    ds = VideoFramesDataset([{"video": "clip"}, {"video": "absent"}], sampler, store=store)
    assert ds[0]["frames"].shape == (2, 2, 32, 32, 3)
    skipped = ds[1]
    assert skipped.source == "absent" and "not found" in skipped.reason


def test_references_outside_the_video_root_are_refused(tmp_path, video_dir):
    import pytest

    from videolang.data.annotations import AnnotationError

    root = tmp_path / "videos"
    root.mkdir()
    (root / "ok.mp4").write_bytes((video_dir / "gop7.mp4").read_bytes())
    (root / "away.mp4").symlink_to(video_dir / "gop7.mp4")  # a link out of the root
    records = [{"video": "ok"}, {"video": "away"}, {"video": "../videos/ok.mp4"}, {"video": str(video_dir / "gop7.mp4")}]
    ds = VideoFramesDataset(records, sampler, video_root=root)
    assert ds[0]["frames"].shape == (2, 2, 32, 32, 3) and ds.resolve("ok", "x") == root / "ok.mp4"
    assert ds[2]["frames"].shape == (2, 2, 32, 32, 3)  # '..' that comes back inside is harmless
    for index in (1, 3):
        with pytest.raises(AnnotationError, match="leads outside the data folder"):
            ds[index]


def test_a_stream_without_a_frame_rate_is_skipped(tmp_path, video_dir):
    def needs_fps(meta, generator):
        raise ValueError("fps must be positive, got 0.0")  # what the ClipBERT sampler says for fps 0

    ds = VideoFramesDataset([{"video": "gop7.mp4"}], needs_fps, video_root=video_dir)
    skipped = ds[0]
    assert skipped.source == "gop7.mp4" and "no frames to sample (fps must be positive" in skipped.reason
