"""Files that are not what their names say: MPEG-TS videos (decoding-order timestamps), FIFOs and
devices in a video folder (skipped with a warning, never read: a read would block forever)."""

from __future__ import annotations

import os
import threading

import av
import numpy as np
import pytest

from videolang.data.stores import pack_videos
from videolang.data.video import VideoReader
from videolang.search.builder import scan_videos


def _write_ts(path, frames=20, size=(64, 48)):
    """An MPEG-TS file of MPEG-2 video: its packets' pts run ahead of their dts."""
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=10)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for i in range(frames):
            image = np.full((size[1], size[0], 3), i * 12, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_mpeg_ts_videos_decode_every_frame_in_any_order(tmp_path):
    path = _write_ts(tmp_path / "clip.ts")
    with VideoReader(path) as reader:
        assert reader.metadata.num_frames == 20
        frames = reader.read([0, 19, 7, 0, 12])
    levels = frames.float().mean(dim=(1, 2, 3)) / 12
    assert levels.round().tolist() == [0, 19, 7, 0, 12]


def _run_with_deadline(fn, seconds=60):
    result, errors = [], []
    thread = threading.Thread(target=lambda: _capture(fn, result, errors), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked on a special file"
    if errors:
        raise errors[0]
    return result[0]


def _capture(fn, result, errors):
    try:
        result.append(fn())
    except Exception as exc:  # re-raised in the test's thread
        errors.append(exc)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_named_like_a_video_is_skipped_by_pack_and_index(tmp_path, caplog):
    videos = tmp_path / "videos"
    videos.mkdir()
    _write_ts(videos / "real.ts")
    os.mkfifo(videos / "pipe.mp4")
    report = _run_with_deadline(lambda: pack_videos(videos, tmp_path / "out.lmdb", progress=False))
    assert report.n_packed == 1 and "not a regular file" in caplog.text
    assert [f.path for f in _run_with_deadline(lambda: scan_videos(videos))] == ["real.ts"]
