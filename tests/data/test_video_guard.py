"""The decoding guard: frames above ``max_pixels`` are converted downscaled, an explicit size
above it and frames beyond ``REFUSE_FACTOR`` times it are refused; normal videos are untouched.
The peak memory of a 7680x4320 3-frame read is measured with and without the guard."""

from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from tests.conftest import write_index_video

from videolang.data.video import MAX_PIXELS, REFUSE_FACTOR, VideoReader, guarded_size, read_frames
from videolang.errors import VideoDecodeError


def _video(path, width: int, height: int, frames: int = 3):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "threads": "2"}
        for i in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[:, : width * (i + 1) // (frames + 1)] = 200  # a bar that grows: frames differ
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_guarded_size_keeps_the_aspect_within_the_budget():
    assert guarded_size(640, 360, MAX_PIXELS) == (640, 360)
    assert guarded_size(640, 360, None) == (640, 360)
    w, h = guarded_size(7680, 4320, MAX_PIXELS)
    assert w * h <= MAX_PIXELS and w % 2 == h % 2 == 0 and abs(w / h - 16 / 9) < 0.01 and w * h > 0.99 * MAX_PIXELS


def test_large_frames_are_decoded_downscaled_and_normal_ones_untouched(tmp_path):
    small = write_index_video(tmp_path / "small.mp4", num_frames=10, fps=10, gop=5, size=32)
    with VideoReader(small) as guarded, VideoReader(small, max_pixels=None) as free:
        assert torch.equal(guarded.read([0, 5, 9]), free.read([0, 5, 9]))  # below the guard: bit-equal
    big = _video(tmp_path / "big.mp4", 256, 144)
    with VideoReader(big, max_pixels=96 * 54) as reader:
        frames = reader.read([0, 1, 2])
        assert frames.shape == (3, 54, 96, 3) and reader.output_size == (96, 54)
        assert frames[2, :, :60].float().mean() > 150 > frames[0, :, 40:].float().mean()  # the picture, scaled
        with pytest.raises(VideoDecodeError, match=r"256x144 output frames are above the decoding guard"):
            reader.set_output_size((256, 144))
        reader.set_output_size((64, 36))  # a size within the guard is kept
        assert reader.read([1]).shape == (1, 36, 64, 3)
    assert read_frames(big, [0], max_pixels=96 * 54).shape == (1, 54, 96, 3)


def test_frames_far_beyond_the_guard_are_refused(tmp_path):
    big = _video(tmp_path / "big.mp4", 256, 144, frames=1)
    limit = 256 * 144 // REFUSE_FACTOR - 1
    with pytest.raises(VideoDecodeError, match=r"256x144 frames .* are beyond the decoding guard"):
        VideoReader(big, max_pixels=limit)


# VmHWM (this process's peak resident memory) restarts at exec, unlike ru_maxrss, which keeps
# the high-water mark of the forked pytest process.
PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024"
MEASURE = f"""
import sys
from videolang.data.video import VideoReader
limit = None if sys.argv[2] == "off" else int(sys.argv[2])
with VideoReader(sys.argv[1], max_pixels=limit) as reader:
    frames = reader.read([0, 1, 2])
print(frames.shape[1], frames.shape[2], {PEAK})
"""


def _peak_rss(path, limit: str) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), limit], capture_output=True, text=True,
                         check=True, timeout=120)
    h, w, mb = (int(x) for x in out.stdout.split())
    return h, w, mb


def _baseline_rss() -> int:
    code = f"import videolang.data.video; print({PEAK})"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_an_8k_read_stays_within_bounded_memory(tmp_path):
    video = _video(tmp_path / "8k.mp4", 7680, 4320)
    base = _baseline_rss()
    h0, w0, before = _peak_rss(video, "off")
    h1, w1, after = _peak_rss(video, str(MAX_PIXELS))
    print(f"7680x4320, 3 frames: peak RSS {before} MB without the guard ({w0}x{h0} frames), {after} MB with it "
          f"({w1}x{h1}); {base} MB after imports alone")
    assert (w0, h0) == (7680, 4320) and w1 * h1 <= MAX_PIXELS
    assert after - base < 0.75 * (before - base)  # measured here: 319 MB against 545 MB above the imports
