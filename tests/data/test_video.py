"""read_frames / probe: order, duplicates, seeking, every bad-file kind."""

from __future__ import annotations

import gc
import io
import os
from typing import ClassVar

import numpy as np
import pytest
import torch
from tests.conftest import decoded_index

from videolang.data.video import VideoReader, probe, read_frames, read_frames_at
from videolang.errors import FrameIndexError, VideoDecodeError


def indices_of(frames: torch.Tensor) -> list[int]:
    return [decoded_index(f.numpy()) for f in frames]


@pytest.mark.parametrize(
    ("name", "n", "keyframes"),
    [("gop30.mp4", 90, (0, 30, 60)), ("gop7.mp4", 50, tuple(range(0, 50, 7))), ("x.mkv", 30, (0, 10, 20))],
)
def test_probe_metadata(video_dir, name, n, keyframes):
    meta = probe(video_dir / name)
    assert meta.num_frames == n
    assert meta.fps == pytest.approx(30.0)
    assert meta.duration == pytest.approx(n / 30.0, abs=1e-3)
    assert (meta.width, meta.height) == (32, 32)
    assert meta.keyframes == keyframes
    assert len(meta.frame_times) == n


def test_mkv_metadata_without_container_frame_count(video_dir):
    # mkv has no frame count in the container (stream.frames == 0): we count packets instead.
    import av

    with av.open(str(video_dir / "x.mkv")) as c:
        assert c.streams.video[0].frames == 0
    assert probe(video_dir / "x.mkv").num_frames == 30


@pytest.mark.parametrize("name", ["gop30.mp4", "gop7.mp4", "mpeg4.avi", "x.mkv"])
def test_read_frames_returns_requested_order(video_dir, name):
    n = probe(video_dir / name).num_frames
    rng = np.random.default_rng(0)
    request = [*rng.integers(0, n, 12).tolist(), n - 1, 0, 5, 5]
    frames = read_frames(video_dir / name, request)
    assert frames.dtype == torch.uint8 and frames.shape == (len(request), 32, 32, 3)
    assert indices_of(frames) == request


def test_read_frames_shuffled_and_duplicated_equal_sorted(video_dir):
    path = video_dir / "gop30.mp4"
    sorted_frames = read_frames(path, [3, 31, 64, 89])
    shuffled = read_frames(path, [89, 3, 64, 31, 3, 89])
    assert torch.equal(shuffled[1], sorted_frames[0])
    assert torch.equal(shuffled[0], sorted_frames[3])
    assert torch.equal(shuffled[4], shuffled[1]) and torch.equal(shuffled[5], shuffled[0])


def test_read_frames_accepts_tensors_arrays_bytes_and_files(video_dir):
    path = video_dir / "gop7.mp4"
    data = path.read_bytes()
    expected = read_frames(path, [4, 40])
    assert torch.equal(read_frames(data, torch.tensor([4, 40])), expected)
    assert torch.equal(read_frames(io.BytesIO(data), np.array([4, 40])), expected)
    assert torch.equal(read_frames(str(path), [4.0, 40.0]), expected)
    assert read_frames(path, []).shape == (0, 32, 32, 3)


@pytest.mark.parametrize("bad", [[-1], [90], [0, 1000]])
def test_out_of_range_is_a_clear_error(video_dir, bad):
    with pytest.raises(FrameIndexError, match=r"out of range .*gop30\.mp4.*90 frames"):
        read_frames(video_dir / "gop30.mp4", bad)


def test_read_frames_at_timestamps(video_dir):
    frames = read_frames_at(video_dir / "gop30.mp4", [0.0, 0.5, 1.01, 2.99])
    assert indices_of(frames) == [0, 15, 30, 89]
    with pytest.raises(FrameIndexError, match="outside the video"):
        read_frames_at(video_dir / "gop30.mp4", [3.5])


def test_reader_decodes_forward_only_and_minimally(video_dir, monkeypatch):
    """Frames in one GOP cost one seek; a later GOP costs one more; nothing after the last."""
    with VideoReader(video_dir / "gop30.mp4") as reader:
        seeks: list[int] = []
        original_seek = reader._seek

        def counting_seek(pts):
            seeks.append(pts)
            return original_seek(pts)

        monkeypatch.setattr(reader, "_seek", counting_seek)
        decoded: list[int] = []
        original_decode = reader._decode

        def counting_decode(packet):
            frames = list(original_decode(packet))
            decoded.extend(f.pts for f in frames)
            return frames

        monkeypatch.setattr(reader, "_decode", counting_decode)
        reader.read([35, 5, 10, 62])
        # one seek to frame 0's keyframe, one to 30's, one to 60's; never backwards
        assert seeks == [reader.metadata.keyframe_seek_ts[k] for k in (0, 1, 2)]
        idx = sorted(reader._index(p) for p in decoded)
        # decoding stops right after the last needed frame of each GOP (a frame or two of
        # reordering delay at most), and unneeded non-reference frames may be skipped
        assert {0, 5, 10, 35, 62} <= set(idx)
        assert max(i for i in idx if i < 30) <= 12
        assert min(i for i in idx if i >= 30) == 30 and max(i for i in idx if i < 60) <= 37
        assert min(i for i in idx if i >= 60) == 60 and max(idx) <= 64


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing.mp4", "file not found"),
        ("empty.mp4", "empty"),
        ("text.mp4", "not a readable video"),
        ("truncated.mp4", "not a readable video"),
    ],
)
def test_bad_files_raise_one_typed_error_naming_the_file(video_dir, name, reason):
    with pytest.raises(VideoDecodeError, match=reason) as info:
        read_frames(video_dir / name, [0])
    assert info.value.source.endswith(name)
    assert name in str(info.value)


def test_truncated_faststart_file_fails_only_past_the_cut(video_dir):
    path = video_dir / "truncated_faststart.mp4"
    # The index survived (moov first) but the data is cut: early frames still decode,
    # the last frames raise the typed error.
    with pytest.raises(VideoDecodeError, match="truncated_faststart"):
        meta = probe(path)
        read_frames(path, [0, meta.num_frames - 1])


def test_bad_bytes_and_directory(video_dir):
    with pytest.raises(VideoDecodeError, match="empty bytes"):
        read_frames(b"", [0])
    with pytest.raises(VideoDecodeError, match="not a readable video"):
        read_frames(b"\x00" * 1000, [0])
    with pytest.raises(VideoDecodeError, match="directory"):
        read_frames(video_dir, [0])


class _FakeFrameBatch:
    def __init__(self, data):
        self.data = data


class _FakeTorchcodecDecoder:
    """Stands in for torchcodec.decoders.VideoDecoder (the PyPI wheel needs CUDA libraries):
    checks that our adapter calls it with the documented arguments and maps its results."""

    calls: ClassVar[list] = []

    def __init__(self, source, dimension_order, seek_mode):
        assert dimension_order == "NHWC" and seek_mode == "exact"
        data = source if isinstance(source, bytes) else open(source, "rb").read()  # noqa: SIM115
        self._reader = VideoReader(data)

    def __len__(self):
        return self._reader.metadata.num_frames

    def get_frames_at(self, indices):
        type(self).calls.append(list(indices))
        return _FakeFrameBatch(self._reader.read(indices))


def test_torchcodec_backend_adapter(video_dir, monkeypatch):
    import sys
    import types

    fake = types.ModuleType("torchcodec.decoders")
    fake.VideoDecoder = _FakeTorchcodecDecoder
    monkeypatch.setitem(sys.modules, "torchcodec", types.ModuleType("torchcodec"))
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", fake)
    from videolang.data.video import available_backends

    assert "torchcodec" in available_backends()
    path = video_dir / "gop7.mp4"
    frames = read_frames(path, [40, 2, 2], backend="auto")
    assert indices_of(frames) == [40, 2, 2]
    assert _FakeTorchcodecDecoder.calls[-1] == [40, 2, 2]
    assert torch.equal(read_frames(path.read_bytes(), [3], backend="torchcodec"), read_frames(path, [3]))
    with pytest.raises(FrameIndexError, match="out of range"):
        read_frames(path, [50], backend="torchcodec")
    with pytest.raises(VideoDecodeError, match="empty"):
        read_frames(video_dir / "empty.mp4", [0], backend="torchcodec")
    with pytest.raises(ValueError, match="unknown decoding backend"):
        read_frames(path, [0], backend="decord")


def test_auto_backend_logs_why_torchcodec_is_not_used(video_dir, monkeypatch, caplog):
    import sys
    import types

    import videolang.data.video as video

    monkeypatch.setitem(sys.modules, "torchcodec", types.ModuleType("torchcodec"))
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # import fails like a CUDA-only build
    monkeypatch.setattr(video, "_auto_reported", False)
    assert "does not import" in video.torchcodec_unavailable_reason()
    assert video.available_backends() == ["pyav"]
    with caplog.at_level("INFO", logger="videolang.data.video"):
        frames = read_frames(video_dir / "gop7.mp4", [3, 1], backend="auto")
        read_frames(video_dir / "gop7.mp4", [3], backend="auto")
    assert indices_of(frames) == [3, 1]
    reports = [r for r in caplog.records if "uses PyAV" in r.getMessage()]
    assert len(reports) == 1 and "does not import" in reports[0].getMessage()


def test_chunked_reads_decode_front_to_back_once(video_dir, monkeypatch):
    path = video_dir / "gop30.mp4"  # 90 frames, keyframes every 30
    seeks = []
    with VideoReader(path) as reader:
        original = reader._seek
        monkeypatch.setattr(reader, "_seek", lambda ts: (seeks.append(ts), original(ts)))
        got = []
        # every frame, resampled (frames repeat), in chunks whose edges share a frame
        plan = np.repeat(np.arange(90), 2)
        reader.expect(plan)
        for a in range(0, len(plan), 25):
            got += indices_of(reader.read(plan[max(a - 1, 0) : a + 25]))
        assert got == plan[:1].tolist() + [i for a in range(0, len(plan), 25) for i in plan[max(a - 1, 0):a + 25]][1:]
        assert len(seeks) == 1  # the first read only: later chunks continue where decoding stopped
        assert indices_of(reader.read([5])) == [5]  # going back seeks again, and works
        assert indices_of(reader.read([6, 70])) == [6, 70]  # a jump past a keyframe seeks forward
        assert len(seeks) == 3


def test_frames_scaled_while_decoding(video_dir):
    with VideoReader(video_dir / "gop7.mp4", size=(16, 8)) as reader:
        frames = reader.read([4, 0, 4])
        assert frames.shape == (3, 8, 16, 3) and reader.output_size == (16, 8)
        assert torch.equal(frames[0], frames[2])
        reader.set_output_size(None)
        assert reader.read([4]).shape == (1, 32, 32, 3)
        assert indices_of(reader.read([4])) == [4]
    with pytest.raises(ValueError, match="positive"):
        VideoReader(video_dir / "gop7.mp4", size=(0, 8))


def test_forked_children_inherit_no_dead_decoders(video_dir):
    """A forked child (a DataLoader worker) must never free a decoder: FFmpeg's codec thread
    pools belong to the parent's threads, and a child collecting one hung forever. Containers
    the parent dropped are collected before the fork, so the child holds none."""
    import av

    def read_and_keep_an_error(path) -> None:
        """Decode, then keep a caught error: frame -> error -> traceback -> frame, a reference
        cycle holding the reader (what a stored exception or pytest.raises leaves behind)."""
        with VideoReader(path) as reader:
            reader.read([0, 5, 20])
            try:
                raise VideoDecodeError(str(path), "kept")
            except VideoDecodeError as exc:
                error = exc
        assert error is not None and reader is not None

    def live_containers() -> int:
        return sum(isinstance(o, av.container.Container) for o in gc.get_objects())

    enabled = gc.isenabled()
    gc.disable()  # only the fork hook may collect: the automatic collector would hide its absence
    try:
        gc.collect()
        before = live_containers()
        read_and_keep_an_error(video_dir / "gop30.mp4")
        assert live_containers() > before  # the reader's container waits in a cycle for the collector
        pid = os.fork()
        if pid == 0:  # the child reports how many it inherited
            os._exit(min(live_containers() - before, 100))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if enabled:
            gc.enable()
