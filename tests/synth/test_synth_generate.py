"""synthesize_world end to end: files, determinism, decoding, keyframes, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import videolang.synth.generate as gen
from videolang.errors import ConfigError, StoreError, VideolangError
from videolang.synth import load_manifest, load_videos, render_video_frames, synthesize_world
from videolang.synth.annotations import event_middle_frame

LUMA = np.array([0.299, 0.587, 0.114])


def _decode(path: Path) -> tuple[np.ndarray, list[int], int]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        keys = [i for i, p in enumerate(p for p in c.demux(stream) if p.size) if p.is_keyframe]
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    return frames, keys, len(frames)


def test_manifest_lists_every_file_with_checksums(world, world_args):
    root, manifest = world
    assert manifest == load_manifest(root, verify=True)
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk - listed == {"manifest.json"}
    assert listed <= on_disk
    assert [f["path"] for f in manifest["files"]] == sorted(listed)
    assert manifest["seed"] == world_args["seed"]
    assert manifest["args"]["gop"] == world_args["gop"] and manifest["video"]["codec"] == "h264"
    counts = manifest["counts"]
    assert counts["videos"] == 10 and sum(counts["videos_per_split"].values()) == 10
    assert counts["captions"] == 50
    assert "creation_time" not in (root / "manifest.json").read_text()


def test_load_manifest_detects_tampering(world, tmp_path):
    root, _ = world
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(root, copy)
    (copy / "text" / "corpus.txt").write_text("tampered\n")
    load_manifest(copy)  # cheap check passes
    with pytest.raises(StoreError, match=r"corpus\.txt"):
        load_manifest(copy, verify=True)
    with pytest.raises(StoreError):
        load_manifest(tmp_path)


def test_same_seed_same_bytes_serial_vs_parallel(world, tmp_path, world_args):
    root, manifest = world
    again = synthesize_world(tmp_path / "again", **world_args, workers=1, progress=False)
    assert again["files"] == manifest["files"]
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (
        root / "manifest.json"
    ).read_bytes()
    other = synthesize_world(
        tmp_path / "other", **{**world_args, "seed": 8}, workers=1, progress=False
    )
    mine = {f["path"]: f["sha256"] for f in manifest["files"]}
    theirs = {f["path"]: f["sha256"] for f in other["files"]}
    shared = set(mine) & set(theirs)
    videos = [p for p in shared if p.startswith("videos/")]
    assert videos and all(mine[p] != theirs[p] for p in videos)
    assert mine["annotations/videos.jsonl"] != theirs["annotations/videos.jsonl"]


def test_decoded_frames_match_the_drawn_frames(world):
    root, _ = world
    moving_frames = 0
    for rec in load_videos(root):
        drawn = render_video_frames(rec)
        decoded, _, _ = _decode(root / rec["path"])
        assert decoded.shape == drawn.shape
        err = np.abs(decoded.astype(float) - drawn.astype(float))
        assert err.mean() < 6.0
        # Discriminative: where one step of motion changes the picture a lot more than the
        # codec does, the decoded frame is closest (in luma) to its own drawn frame, not to the
        # drawn frame one step earlier or later.
        dy, ry = decoded.astype(float) @ LUMA, drawn.astype(float) @ LUMA
        own = ((dy - ry) ** 2).mean(axis=(1, 2))
        assert own.max() < 10.0
        for i in range(len(ry)):
            for j in (i - 1, i + 1):
                if 0 <= j < len(ry):
                    step = ((ry[i] - ry[j]) ** 2).mean()
                    if step > 8.0:
                        moving_frames += 1
                        shifted = ((dy[i] - ry[j]) ** 2).mean()
                        assert shifted > 2 * own[i], (rec["id"], i, j, shifted, own[i])
    assert moving_frames > 20  # the check above actually ran


def test_keyframes_frame_count_and_size(world, world_args):
    root, _ = world
    gop, t = world_args["gop"], round(world_args["fps"] * world_args["duration"])
    for rec in load_videos(root):
        frames, keys, n = _decode(root / rec["path"])
        assert n == t == rec["num_frames"]
        assert keys == list(range(0, t, gop))
        assert frames.shape[1:] == (64, 64, 3)
        with av.open(str(root / rec["path"])) as c:
            s = c.streams.video[0]
            assert s.codec_context.name == "h264" and s.average_rate == world_args["fps"]
            assert s.codec_context.pix_fmt == "yuv420p"
            assert "creation_time" not in c.metadata


def test_event_images_are_the_middle_frames(world):
    root, _ = world
    rows = [
        json.loads(x) for x in (root / "annotations/image_captions.jsonl").read_text().splitlines()
    ]
    videos = {v["id"]: v for v in load_videos(root)}
    assert len(rows) == sum(len(v["events"]) for v in videos.values())
    for row in rows[:12]:
        v = videos[row["video_id"]]
        ev = v["events"][row["event_index"]]
        assert row["frame_index"] == event_middle_frame(ev)
        img = np.asarray(Image.open(root / row["path"]))
        assert np.array_equal(img, render_video_frames(v)[row["frame_index"]])


def test_mpeg4_codec_and_other_gop(tmp_path):
    m = synthesize_world(
        tmp_path / "m4",
        2,
        seed=1,
        size=32,
        fps=8,
        duration=2.0,
        gop=4,
        codec="mpeg4",
        workers=1,
        progress=False,
    )
    assert m["video"]["codec"] == "mpeg4" and m["video"]["encoder"] == "mpeg4"
    for rec in load_videos(tmp_path / "m4"):
        frames, keys, n = _decode(tmp_path / "m4" / rec["path"])
        assert n == 16 and keys == [0, 4, 8, 12] and frames.shape[1:] == (32, 32, 3)
        assert np.abs(frames.astype(float) - render_video_frames(rec)).mean() < 6.0
        with av.open(str(tmp_path / "m4" / rec["path"])) as c:
            assert c.streams.video[0].codec_context.name == "mpeg4"


def test_refuses_to_overwrite_without_flag(tmp_path):
    target = tmp_path / "w"
    synthesize_world(target, 1, seed=0, size=32, duration=1.0, workers=1, progress=False)
    before = (target / "manifest.json").read_bytes()
    with pytest.raises(StoreError):
        synthesize_world(target, 1, seed=1, size=32, duration=1.0, workers=1, progress=False)
    assert (target / "manifest.json").read_bytes() == before
    m = synthesize_world(
        target, 1, seed=1, size=32, duration=1.0, workers=1, progress=False, overwrite=True
    )
    assert load_manifest(target, verify=True) == m and m["seed"] == 1


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gen, "write_formats", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        synthesize_world(
            tmp_path / "w", 2, seed=0, size=32, duration=1.0, workers=1, progress=False
        )
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_config_errors(tmp_path):
    for kwargs in (
        {"num_videos": 0},
        {"num_videos": 2, "seed": -1},
        {"num_videos": 2, "size": 30 + 1},
        {"num_videos": 2, "fps": 0},
        {"num_videos": 2, "gop": 0},
        {"num_videos": 2, "duration": 0.1},
        {"num_videos": 2, "codec": "vp9"},
    ):
        with pytest.raises(ConfigError):
            synthesize_world(tmp_path / "bad", progress=False, workers=1, **kwargs)
    assert not (tmp_path / "bad").exists()


def test_none_means_default_fps_and_gop(tmp_path):
    m = synthesize_world(
        tmp_path / "d", 1, size=32, duration=1.0, fps=None, gop=None, workers=1, progress=False
    )
    assert m["args"]["fps"] == gen.DEFAULT_FPS and m["args"]["gop"] == gen.DEFAULT_GOP


def test_auto_codec_falls_back_to_mpeg4(monkeypatch):
    import videolang.synth.render as render

    assert render.resolve_codec("auto") in ("libx264", "mpeg4")
    monkeypatch.setattr(render, "_encoder_available", lambda name: name == "mpeg4")
    assert render.resolve_codec("auto") == "mpeg4"
    with pytest.raises(VideolangError, match="libx264"):
        render.resolve_codec("h264")
