"""The feature extraction pipeline: sources, batching, chunking, resume, bad videos, metadata."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.conftest import decoded_index, write_index_video

from videolang.data.stores import FeatureStore, pack_videos, write_webdataset
from videolang.errors import ConfigError, StoreError
from videolang.models.backbones import create_backbone, video_to_features
from videolang.models.backbones.s3dg import S3DG
from videolang.pipelines import features as fx
from videolang.pipelines.features import (
    extract_features,
    open_video_sources,
    run_extraction,
)
from videolang.utils.io import sha256_file

GOOD = {"a": 4, "c": 3, "sub/b": 2}  # id -> rows = ceil(seconds)
BAD = {"empty", "text", "truncated"}



pytestmark = pytest.mark.usefixtures("one_torch_thread")


class DictWriter(dict):
    """The part of FeatureStoreWriter that extract_features uses."""

    def add(self, vid, rows):
        assert vid not in self
        self[vid] = rows


@pytest.fixture(scope="module")
def videos(tmp_path_factory, video_dir):
    root = tmp_path_factory.mktemp("feature_videos")
    write_index_video(root / "a.mp4", num_frames=40, fps=10, gop=10)  # 4 s
    (root / "sub").mkdir()
    write_index_video(root / "sub" / "b.mp4", num_frames=45, fps=30, gop=30)  # 1.5 s
    write_index_video(root / "c.mkv", num_frames=25, fps=10, gop=10)  # 2.5 s
    for name in ("empty.mp4", "text.mp4", "truncated.mp4"):
        shutil.copy(video_dir / name, root / name)
    (root / "notes.txt").write_text("not a video extension: ignored\n")
    return root


def _sources(root, names):
    return [(n, root / f"{n}.mp4") for n in names]


def _small_s3dg(seed: int = 0):
    """The real S3D-G on 32x32 crops: its clip pipeline (30 fps, 30-frame clips), faster."""
    bb = create_backbone("s3dg", seed=seed)
    bb.frame_size = 32
    return bb


class ClipProbe(S3DG):
    """S3D-G's preprocessing and clip layout with a cheap forward that still sees every
    frame of a clip in order (so the pipeline tests do not pay for S3D-G on CPU)."""

    frame_size = 32

    def __init__(self):
        super().__init__()
        self.feature_dim = 3 * 6 * 2 * 2

    def forward(self, clips):
        return F.adaptive_avg_pool3d(clips, (6, 2, 2)).flatten(1)


def test_open_video_sources_kinds(videos, tmp_path):
    kind, total, pairs = open_video_sources(videos)
    ids = [vid for vid, _ in pairs]
    assert kind == "folder" and total == 6
    assert ids == ["a", "c", "empty", "sub/b", "text", "truncated"]
    with pytest.raises(ConfigError, match="no such file"):
        open_video_sources(tmp_path / "missing")
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a folder of videos"):
        open_video_sources(tmp_path / "f.bin")


def test_folder_lmdb_and_shards_give_the_same_features(videos, tmp_path):
    lmdb = tmp_path / "videos.lmdb"
    pack_videos(videos, lmdb, progress=False)
    shards = tmp_path / "shards"
    samples = [{"__key__": vid, "mp4": p.read_bytes()} for vid, p in open_video_sources(videos)[2]]
    write_webdataset(samples, shards, maxcount=2)
    loose = tmp_path / "loose_tars"
    loose.mkdir()
    for tar in shards.glob("*.tar"):
        shutil.copy(tar, loose / tar.name)

    stores = {}
    for name, src in [("folder", videos), ("lmdb", lmdb), ("shards", shards),
                      ("glob", str(shards / "*.tar")), ("tars", loose)]:  # fmt: skip
        out = tmp_path / f"feats_{name}"
        report = run_extraction(src, "cnn2d-tiny", out, dtype="float32", progress=False)
        assert report.written == 3 and report.rows == sum(GOOD.values())
        # pack_videos drops the empty file itself; the others fail to decode in every source
        assert {vid for vid, _ in report.bad} >= BAD - {"empty"}
        assert report.seconds > 0 and report.videos_per_s > 0
        stores[name] = FeatureStore(out)
        assert json.loads((out / "extraction.json").read_text())["videos"]["kind"] == (
            name if name in ("folder", "lmdb") else "shards"
        )
    ref = stores["folder"]
    assert sorted(ref) == sorted(GOOD)
    for vid, rows in GOOD.items():
        assert ref[vid].shape == (rows, 256)
        for name, store in stores.items():
            np.testing.assert_allclose(store[vid], ref[vid], rtol=1e-6, atol=1e-6, err_msg=name)


def test_bad_videos_are_listed_and_do_not_stop_the_run(videos, video_dir, caplog):
    names = ["empty", "a", "text", "truncated", "c"]
    srcs = [*_sources(videos, names[:4]), ("c", videos / "c.mkv")]
    # truncated after the index: opens, then fails while decoding
    srcs.insert(2, ("mid", video_dir / "truncated_faststart.mp4"))
    writer = DictWriter()
    with caplog.at_level(logging.WARNING):
        report = extract_features(srcs, create_backbone("cnn2d-tiny"), writer, progress=False)
    assert sorted(writer) == ["a", "c"]
    assert [vid for vid, _ in report.bad] == ["empty", "mid", "text", "truncated"]
    assert all(reason for _, reason in report.bad)
    assert "skipping video mid" in caplog.text
    # the good videos' features do not depend on the bad ones around them
    clean = DictWriter()
    extract_features([srcs[1], srcs[-1]], create_backbone("cnn2d-tiny"), clean, progress=False)
    for vid in clean:
        np.testing.assert_allclose(writer[vid], clean[vid], rtol=1e-6, atol=1e-6)


def test_batching_chunking_and_prefetch_do_not_change_features(videos, monkeypatch):
    srcs = [("a", videos / "a.mp4"), ("b", videos / "sub" / "b.mp4"), ("c", videos / "c.mkv")]
    for make in (lambda: create_backbone("cnn2d-tiny"), ClipProbe):
        ref = DictWriter()
        extract_features(srcs, make(), ref, progress=False)
        for kwargs in ({"batch_size": 5}, {"batch_size": 3, "prefetch": False, "num_threads": 1},
                       {"batch_size": 999}):
            w = DictWriter()
            extract_features(srcs, make(), w, progress=False, **kwargs)
            for vid in ref:
                np.testing.assert_allclose(w[vid], ref[vid], rtol=1e-5, atol=1e-6)
        with monkeypatch.context() as m:
            m.setattr(fx, "CHUNK_BYTES", 1)  # one row per read: many chunks per video
            w = DictWriter()
            extract_features(srcs, make(), w, progress=False, batch_size=16)
        for vid in ref:
            np.testing.assert_allclose(w[vid], ref[vid], rtol=1e-5, atol=1e-6)


def test_pipeline_equals_whole_video_features(tmp_path):
    from videolang.data.video import read_frames

    # frames already at the backbone's size: no decoder-side scaling, so both paths agree
    for make, size in ((lambda: create_backbone("cnn2d-tiny"), 64), (ClipProbe, 32),
                       (lambda: create_backbone("cnn2d-tiny", temporal_diff=True, rows_per_second=4.0), 64)):
        path = write_index_video(tmp_path / f"v{size}_{make().feature_dim}.mp4", num_frames=25, fps=10, gop=10, size=size)
        bb = make()
        w = DictWriter()
        extract_features([("v", path)], bb, w, progress=False)
        frames = read_frames(path, np.arange(25))
        np.testing.assert_allclose(w["v"], video_to_features(bb, frames, 10.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("fps", "num_frames", "expected"), [
    (10, 20, [i // 3 for i in range(60)]),  # each frame 3 times
    (60, 90, list(range(0, 90, 2))),  # every other frame
])  # fmt: skip
def test_s3d_pipeline_resamples_to_30_fps(tmp_path, fps, num_frames, expected):
    path = write_index_video(tmp_path / "v.mp4", num_frames=num_frames, fps=fps, gop=10)
    bb = ClipProbe()
    seen = []
    transform = bb.transform

    def recording(frames):
        seen.extend(decoded_index(f) for f in frames.numpy())
        return transform(frames)

    bb.transform = recording
    w = DictWriter()
    extract_features([("v", path)], bb, w, progress=False)
    assert seen == expected
    assert w["v"].shape == (2, bb.feature_dim)  # 2 s (60 frames at 30 fps)


def test_s3d_rows_zero_padding_and_l2(tmp_path):
    path = write_index_video(tmp_path / "v.mp4", num_frames=25, fps=10, gop=10)  # 2.5 s
    bb = _small_s3dg()
    w = DictWriter()
    extract_features([("v", path)], bb, w, progress=False, l2_normalize=True)
    assert w["v"].shape == (3, 512)  # 75 frames at 30 fps: 3 clips, the last zero-padded
    np.testing.assert_allclose(np.linalg.norm(w["v"], axis=1), 1.0, rtol=1e-5)


def test_resume_skips_and_refuses_other_settings(videos, tmp_path):
    work = tmp_path / "videos"
    shutil.copytree(videos, work)
    out = tmp_path / "feats"
    first = run_extraction(work, "cnn2d-tiny", out, progress=False)
    assert first.written == 3 and len(first.bad) == 3
    before = {vid: FeatureStore(out)[vid].copy() for vid in GOOD}
    again = run_extraction(work, "cnn2d-tiny", out, progress=False)
    assert (again.written, again.already_present, len(again.bad)) == (0, 3, 3)
    write_index_video(work / "d.mp4", num_frames=12, fps=10, gop=10)
    more = run_extraction(work, "cnn2d-tiny", out, progress=False)
    assert (more.written, more.already_present) == (1, 3)
    store = FeatureStore(out)
    assert store.dtype == np.float16 and store["d"].shape == (2, 256)
    for vid, arr in before.items():
        assert np.array_equal(store[vid], arr)
    info = json.loads((out / "extraction.json").read_text())
    assert info["backbone"] == "cnn2d-tiny" and info["weights"] == "random-init"
    assert info["frames_per_feature"] == "source frames of 1 / rows_per_second seconds"
    assert info["rows_per_second"] == 1.0
    assert info["fps"] == "source" and info["dtype"] == "float16" and info["seed"] == 0
    assert info["l2_normalize"] is False and info["last_run"]["written"] == 1
    for kwargs in ({"seed": 1}, {"l2_normalize": True}):
        with pytest.raises(ConfigError, match="cannot resume"):
            run_extraction(work, "cnn2d-tiny", out, progress=False, **kwargs)
    with pytest.raises(ConfigError, match="backbone: stored 'cnn2d-tiny', now 'pooled-pixels'"):
        run_extraction(work, "pooled-pixels", out, progress=False)
    report = run_extraction(work, "pooled-pixels", out, progress=False, overwrite=True,
                            dtype="float32", backbone_options={"grid": 2})  # fmt: skip
    assert report.written == 4 and FeatureStore(out)["a"].shape == (4, 12)
    assert json.loads((out / "extraction.json").read_text())["grid"] == 2


def test_weights_are_recorded_with_their_sha256(videos, tmp_path):
    wpath = tmp_path / "tiny.pt"
    torch.save(create_backbone("cnn2d-tiny", seed=5).state_dict(), wpath)
    out = tmp_path / "feats"
    src = tmp_path / "one"
    src.mkdir()
    shutil.copy(videos / "a.mp4", src / "a.mp4")
    run_extraction(src, "cnn2d-tiny", out, weights=wpath, progress=False)
    info = json.loads((out / "extraction.json").read_text())
    assert info["weights"] == {"path": str(wpath.resolve()), "sha256": sha256_file(wpath)}
    # the same file under another name resumes; different weights do not
    moved = tmp_path / "moved.pt"
    shutil.copy(wpath, moved)
    assert run_extraction(src, "cnn2d-tiny", out, weights=moved, progress=False).already_present == 1
    with pytest.raises(ConfigError, match="weights"):
        run_extraction(src, "cnn2d-tiny", out, progress=False)


def test_interrupted_run_keeps_completed_videos(videos, tmp_path, monkeypatch):
    def sources(_):
        def gen():
            yield "a", videos / "a.mp4"
            yield "c", videos / "c.mkv"
            raise KeyboardInterrupt

        return "folder", 3, gen()

    monkeypatch.setattr(fx, "open_video_sources", sources)
    out = tmp_path / "feats"
    with pytest.raises(KeyboardInterrupt):
        run_extraction(videos, "cnn2d-tiny", out, progress=False, batch_size=1)
    with pytest.raises(StoreError, match="interrupted"):  # nothing half-done passes for a store
        FeatureStore(out)
    monkeypatch.undo()
    report = run_extraction(videos, "cnn2d-tiny", out, progress=False, batch_size=1)
    assert report.already_present == 2 and "a" in FeatureStore(out) and "c" in FeatureStore(out)


def test_duplicates_and_source_errors(videos):
    w = DictWriter()
    srcs = [("a", videos / "a.mp4"), ("a", videos / "c.mkv")]
    report = extract_features(srcs, create_backbone("pooled-pixels"), w, progress=False)
    assert (report.written, report.already_present) == (1, 1)

    def broken():
        yield "a", videos / "a.mp4"
        raise RuntimeError("source went away")

    for prefetch in (True, False):
        with pytest.raises(RuntimeError, match="source went away"):
            extract_features(broken(), create_backbone("pooled-pixels"), DictWriter(),
                             progress=False, prefetch=prefetch)  # fmt: skip


@pytest.mark.parametrize("options", [{}, {"temporal_diff": True, "rows_per_second": 4.0}])
def test_row_pooler_equals_pooling_the_whole_video(options):
    """Rows pooled as outputs arrive (in pieces of any size) equal pooling everything at once,
    and the pooler keeps only a few frames' outputs, whatever the video's length."""
    from videolang.pipelines.features import RowPooler

    backbone = create_backbone("cnn2d-tiny", **options)
    bounds = backbone.row_bounds(1000, 25.0)
    outputs = torch.randn(int(bounds[-1]), backbone.feature_dim // (2 if options else 1))
    want = backbone.pool(outputs, bounds)
    g = torch.Generator().manual_seed(0)
    pooler, start, kept = RowPooler(backbone, bounds), 0, 0
    while start < len(outputs):
        k = int(torch.randint(1, 90, (1,), generator=g))
        pooler.add(outputs[start : start + k])
        start += k
        kept = max(kept, sum(len(b) for b in pooler._buffer))
    torch.testing.assert_close(pooler.finish(), want, atol=1e-6, rtol=0)
    assert kept < 90 + 2 * 25  # a piece and about a row of frames, not the whole video


def test_row_pooler_for_clip_backbones_and_incomplete_input():
    from videolang.pipelines.features import RowPooler

    s3d = _small_s3dg()
    bounds = s3d.row_bounds(100, 30.0)  # 4 rows of 30-frame clips
    outputs = torch.randn(4, s3d.feature_dim)
    pooler = RowPooler(s3d, bounds)
    pooler.add(outputs[:3])
    with pytest.raises(RuntimeError, match="3 of 4"):
        pooler.finish()
    pooler.add(outputs[3:])
    torch.testing.assert_close(pooler.finish(), outputs)
