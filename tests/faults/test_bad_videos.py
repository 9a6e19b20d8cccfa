"""Bad videos and images inside real ClipBERT training runs: truncated, empty, zero-frame,
huge-resolution and non-video files are skipped and counted in ``skipped.json`` and the run
finishes; past ``data.max_skipped_fraction`` it stops with a DataError naming a file.

Videos are tiny (32x32, 2 s); the huge ones are above ``data.max_frame_pixels``: one within
the decoding guard's reach is decoded downscaled and trained on, one beyond it is skipped.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from tests.conftest import write_index_video

from videolang.engine import fit
from videolang.errors import DataError

SHRINK = {"bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 4,
          "bert.intermediate_size": 64, "backbone.stem_channels": 8, "backbone.width": 4}
MAX_PIXELS = 64 * 64  # the runs' decoding guard: 128x128 is downscaled, 512x512 (> 16x) refused
GOOD = [f"good{i}" for i in range(7)]
BAD = {"truncated": "cut in the middle of its frames", "empty": "0 bytes", "zero_frames": "a stream, no frames",
       "not_a_video": "a text file named .mp4", "huge": "512x512 frames"}


def _zero_frame_video(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # header and an empty stream, no packet


def _plain_video(path: Path, size: int, frames: int = 4) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=2)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "threads": "1"}
        for i in range(frames):
            image = np.full((size, size, 3), 40 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_videos")
    for name in GOOD:
        write_index_video(root / f"{name}.mp4", num_frames=20, fps=10, gop=5, size=32, faststart=True)
    data = (root / "good0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) * 7 // 10])
    (root / "empty.mp4").write_bytes(b"")
    _zero_frame_video(root / "zero_frames.mp4")
    (root / "not_a_video.mp4").write_text("these are not the frames you are looking for\n")
    _plain_video(root / "huge.mp4", 512)
    _plain_video(root / "large.mp4", 128)  # above the guard, within reach: decoded downscaled
    return root


def _annotations(path: Path, keys: list[str]) -> str:
    path.write_text("".join(json.dumps({"clip_name": k, "caption": f"a clip called {k}"}) + "\n" for k in keys))
    return str(path)


def _config(tmp_path: Path, videos: Path, keys: list[str], **data) -> dict:
    return {
        "recipe": "clipbert.retrieval", "name": "bad_videos", "seed": 0,
        "model": {"name": "clipbert-tiny", "overrides": SHRINK},
        "data": {"train_file": _annotations(tmp_path / "train.jsonl", keys), "video_root": str(videos),
                 "frame_size": 32, "max_text_len": 12, "sampling": "msrvtt_ret", "target_fps": 2.0,
                 "frames_per_clip": 1, "train_clips": 1, "test_clips": 1, "batch_size": 1,
                 "max_frame_pixels": MAX_PIXELS, **data},
        "optim": {"lr": 1e-3},
        "trainer": {"max_epochs": 1, "enable_progress_bar": False, "num_sanity_val_steps": 0,
                    "accelerator": "cpu", "log_every_n_steps": 1},
        "run": {"root": str(tmp_path / "runs"), "plots": False, "export": False},
    }


def test_bad_videos_are_skipped_counted_and_the_run_finishes(tmp_path, videos):
    keys = [*GOOD, "large", *BAD]
    result = fit(_config(tmp_path, videos, keys, max_skipped_fraction=0.5))
    report = json.loads((result.run_dir / "skipped.json").read_text())
    skipped = {r["source"]: r["reason"] for r in report["skipped"]["train"]}
    print(f"bad videos in a clipbert.retrieval run: {len(keys)} samples, {len(skipped)} skipped: "
          + "; ".join(f"{k} ({v[:60]})" for k, v in sorted(skipped.items())))
    assert set(skipped) == set(BAD) and report["seen"]["train"] == len(keys)  # the 128x128 one was trained on
    assert "file is empty" in skipped["empty"] and "not a readable video container" in skipped["not_a_video"]
    assert "beyond the decoding guard" in skipped["huge"]
    with open(result.run_dir / "metrics.csv") as f:
        steps = [line for line in f if line.split(",")[0].strip()]
    assert len(steps) > 1  # batches of one: five steps had nothing to train on and were passed over


def test_too_many_bad_videos_stop_the_run_naming_one(tmp_path, videos):
    with pytest.raises(DataError, match=r"of 12 train samples could not be read.*data\.max_skipped_fraction=0\.01"):
        fit(_config(tmp_path, videos, GOOD + list(BAD)))
    assert json.loads((tmp_path / "runs").joinpath(*_only_run(tmp_path), "skipped.json").read_text())["skipped"]


def _only_run(tmp_path: Path) -> tuple[str, ...]:
    found = sorted(p.parent.relative_to(tmp_path / "runs") for p in (tmp_path / "runs").rglob("skipped.json"))
    assert len(found) == 1
    return found[0].parts


def _broken_png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(path)
    path.write_bytes(path.read_bytes()[:60])


def test_bad_images_are_skipped_in_a_pretraining_run(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(7):
        Image.new("RGB", (32, 32), (30 * i, 100, 200)).save(images / f"img{i}.png")
    _broken_png(images / "truncated.png")
    (images / "empty.png").write_bytes(b"")
    (images / "text.png").write_text("not an image")
    (images / "bomb.png").write_bytes(_png_header(60000, 60000))  # 3.6 Gpx claimed: PIL refuses it
    (images / "huge.png").write_bytes(_png_header(4096, 4096))  # 16.8 Mpx: beyond the run's guard
    Image.new("RGB", (128, 128), (9, 9, 9)).save(images / "large.png")  # decoded downscaled, trained on
    bad = ["truncated.png", "empty.png", "text.png", "bomb.png", "huge.png"]
    names = [f"img{i}.png" for i in range(7)] + ["large.png", *bad]
    rows = [{"file_name": n, "captions": [f"picture {n}"]} for n in names]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _config(tmp_path, images, [], max_skipped_fraction=0.5)
    cfg.update(recipe="clipbert.pretrain", name="bad_images")
    cfg["data"] = {"train_file": str(tmp_path / "captions.jsonl"), "image_root": str(images), "frame_size": 32,
                   "max_text_len": 12, "batch_size": 1, "max_skipped_fraction": 0.5, "max_frame_pixels": MAX_PIXELS}
    result = fit(cfg)
    report = json.loads((result.run_dir / "skipped.json").read_text())
    skipped = {r["source"]: r["reason"] for r in report["skipped"]["train"]}
    print(f"bad images in a clipbert.pretrain run: {len(names)} samples, {len(skipped)} skipped: "
          + "; ".join(f"{k} ({v[:50]})" for k, v in sorted(skipped.items())))
    assert set(skipped) == set(bad) and report["seen"]["train"] == len(names)
    assert "beyond the decoding guard" in skipped["huge.png"] and "decompression bomb" in skipped["bomb.png"]
    assert "truncated" in skipped["truncated.png"]


def _png_header(width: int, height: int) -> bytes:
    """A ``width`` x ``height`` RGB PNG whose pixel data stops after a few bytes (what a crafted
    file claims costs nothing to write)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
