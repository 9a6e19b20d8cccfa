"""Video decoding: metadata, and frame reads that seek only forward and decode only what is needed.

:func:`read_frames` (``source, indices`` -> uint8 ``(T, H, W, 3)`` in the order requested) is the
one call the rest of videolang uses; :func:`probe` reads metadata without decoding. Frame ``i``
is the i-th frame in presentation order, exact for variable frame rates too. Failures raise
:class:`~videolang.errors.VideoDecodeError` naming the file. How the reads stay cheap:
docs/data.md ("Decoding").
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from videolang.errors import FrameIndexError, VideoDecodeError

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]
log = logging.getLogger(__name__)

__all__ = [
    "MAX_PIXELS",
    "VIDEO_EXTENSIONS",
    "VideoMetadata",
    "VideoReader",
    "VideoSource",
    "available_backends",
    "probe",
    "read_frames",
    "read_frames_at",
    "torchcodec_unavailable_reason",
]


VIDEO_EXTENSIONS: frozenset[str] = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".gif", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".ogv", ".3gp", ".vob",
})
"""File name suffixes that folder scans (``data pack``, ``data shards``, ``index``) take as videos;
any container FFmpeg decodes reads the same way whatever its name."""

MAX_PIXELS = 4096 * 2160
"""The decoding guard's default: frames with more pixels (8.8 Mpx, 4K DCI) are converted
downscaled (see :class:`VideoReader`'s ``max_pixels``); ``None`` there turns the guard off."""
REFUSE_FACTOR = 16
"""Frames above ``max_pixels * REFUSE_FACTOR`` are refused outright: the decoder itself holds
several native-size frames, so no downscaled output keeps such a video's memory bounded."""


def guarded_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """The largest ``(width, height)`` of the same aspect with at most ``max_pixels`` pixels
    (even sides, as swscale's chroma planes want); the size itself when it fits."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    scale = (max_pixels / (width * height)) ** 0.5
    w, h = max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
    return w, h


@dataclass(frozen=True)
class VideoMetadata:
    """What a video is, read without decoding.

    ``keyframes`` are frame indices (presentation order) of the keyframes; ``frame_times`` the
    presentation time in seconds of every frame, relative to the stream start.
    """

    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    codec: str
    keyframes: tuple[int, ...]
    frame_times: Sequence[float] = field(repr=False)
    # How the reader maps timestamps to frames: the sorted presentation timestamps (exact
    # probe), or empty when the stream is constant-rate and indices are computed.
    frame_pts: tuple[int, ...] = field(repr=False, default=())
    # Presentation timestamp (stream time base) of each keyframe: where a backward seek lands
    # exactly on it.
    keyframe_seek_ts: tuple[int, ...] = field(repr=False, default=())

    def index_at(self, t: float) -> int:
        """Index of the frame on screen at time ``t`` seconds (the last frame starting <= t)."""
        if not 0.0 <= t <= self.duration or self.num_frames == 0:
            raise FrameIndexError(f"timestamp {t:.3f}s outside the video (duration {self.duration:.3f}s)")
        return max(bisect.bisect_right(self.frame_times, t + 1e-6) - 1, 0)


def _describe(source: VideoSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes in memory>"
    return "<stream>"


_containers_opened = False  # since the last fork: see _collect_containers_before_fork


def mark_container_opened() -> None:
    """Record that a PyAV container was opened in this process (decoding or encoding)."""
    global _containers_opened
    _containers_opened = True


def _collect_containers_before_fork() -> None:
    """Free dead PyAV containers in the parent before it forks (DataLoader workers and others).

    PyAV containers sit in reference cycles, so only the cycle collector frees them; FFmpeg's
    frame and slice thread pools of their codecs belong to threads that a forked child does not
    have, and a child that collects them blocks forever destroying their condition variables
    (seen: a DataLoader worker hung in avpriv_slicethread_free). Collecting here, only when a
    container was opened since the last fork, keeps that garbage out of every child.
    """
    global _containers_opened
    if _containers_opened:
        _containers_opened = False
        gc.collect()


os.register_at_fork(before=_collect_containers_before_fork)


def _open(source: VideoSource):
    """Open a PyAV container from a path, bytes or a binary file object, with typed errors."""
    import av

    desc = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise VideoDecodeError(desc, "file not found")
        if path.is_dir():
            raise VideoDecodeError(desc, "is a directory, not a video file")
        if path.stat().st_size == 0:
            raise VideoDecodeError(desc, "file is empty (0 bytes)")
        target: object = os.fspath(path)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise VideoDecodeError(desc, "empty bytes")
        target = io.BytesIO(bytes(source))
    else:
        target = source
    try:
        container = av.open(target, mode="r", metadata_errors="ignore")
        mark_container_opened()
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoDecodeError(desc, f"not a readable video container ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(desc, "no video stream")
    return container


class _ConstantRateTimes(Sequence[float]):
    """Frame start times of a constant-rate stream, computed on access (no n-element tuple
    per opened file)."""

    def __init__(self, n: int, fps: float):
        self._n, self._fps = n, fps

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [j / self._fps for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return (i % self._n) / self._fps


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _probe_from_index(stream) -> VideoMetadata | None:
    """Metadata from the container's own index (MP4/MOV keep one): no packet is read.

    Used only for constant-rate streams whose index, frame count and duration agree; the
    reader verifies every decoded timestamp against it and falls back to the exact probe on
    any disagreement. Keyframes come from the index in decode order, which equals presentation
    order for closed GOPs (checked after each seek too).
    """
    entries = stream.index_entries
    n = len(entries) if entries is not None else 0
    fps = _stream_fps(stream)
    if n == 0 or n != stream.frames or fps <= 0 or stream.time_base is None:
        return None
    tb = float(stream.time_base)
    dur_ts = 1.0 / (fps * tb)
    if stream.duration is None or abs(stream.duration - n * dur_ts) > 0.5 * dur_ts:
        return None
    keys = [i for i, e in enumerate(entries) if e.is_keyframe]
    if not keys or keys[0] != 0:
        return None
    start = stream.start_time if stream.start_time is not None else 0
    ctx = stream.codec_context
    return VideoMetadata(
        num_frames=n, fps=fps, duration=n / fps, width=int(ctx.width), height=int(ctx.height),
        codec=str(ctx.name), keyframes=tuple(keys),
        frame_times=_ConstantRateTimes(n, fps), frame_pts=(),
        keyframe_seek_ts=tuple(start + round(i * dur_ts) for i in keys),
    )


def _probe_by_demux(container, desc: str) -> VideoMetadata:
    """Exact metadata from one demux pass over every packet (no decoding)."""
    import av

    stream = container.streams.video[0]
    pts: list[int] = []
    key_pts: dict[int, int] = {}  # a keyframe's pts -> the timestamp to seek to it (its dts)
    first_dts: int | None = None
    with contextlib.suppress(av.error.FFmpegError):  # unseekable input: already at the start
        container.seek(0, stream=stream, backward=True)
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet at the end
            p = packet.pts if packet.pts is not None else packet.dts
            if p is None:
                continue
            pts.append(p)
            # Demuxers seek by decoding time: with reordered frames (MPEG-TS, B-frames) a pts
            # target lands on the packet after the keyframe, so seek to the keyframe's dts.
            dts = packet.dts if packet.dts is not None else p
            first_dts = dts if first_dts is None else min(first_dts, dts)
            if packet.is_keyframe:
                key_pts[p] = dts
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(desc, f"demuxing failed, file truncated or corrupt ({exc})") from exc
    if not pts:
        raise VideoDecodeError(desc, "video stream has no frames")
    order = sorted(pts)
    index_of = {p: i for i, p in enumerate(order)}
    keyframes = [index_of[p] for p in sorted(key_pts)]
    seek_ts = [key_pts[p] for p in sorted(key_pts)]
    if not keyframes or keyframes[0] != 0:
        # Decoding from the very first packet is always possible.
        keyframes.insert(0, 0)
        seek_ts.insert(0, first_dts)
    tb = float(stream.time_base) if stream.time_base is not None else 1.0
    times = tuple((p - order[0]) * tb for p in order)
    fps = _stream_fps(stream)
    if fps <= 0:
        fps = (len(times) - 1) / times[-1] if len(times) > 1 and times[-1] > 0 else 0.0
    ctx = stream.codec_context
    return VideoMetadata(
        num_frames=len(order), fps=fps, duration=times[-1] + (1.0 / fps if fps > 0 else 0.0),
        width=int(ctx.width), height=int(ctx.height), codec=str(ctx.name),
        keyframes=tuple(keyframes), frame_times=times, frame_pts=tuple(order),
        keyframe_seek_ts=tuple(seek_ts),
    )


def probe(source: VideoSource) -> VideoMetadata:
    """Read a video's metadata (frame count, fps, duration, size, codec, keyframe positions)."""
    with VideoReader(source) as reader:
        return reader.metadata


def _as_index_array(indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        arr = indices.detach().cpu().numpy()
    else:
        arr = np.asarray(indices)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise FrameIndexError(f"frame indices must be integers, got {arr.dtype} values")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64, copy=False)


class _Fallback(Exception):
    """The cheap index disagreed with the stream: re-probe exactly and read again."""


class VideoReader:
    """An open video: probe once, read many times.

    Use as a context manager. ``read`` accepts any index order and duplicates; all of a call's
    frames come from one forward pass over the container. Consecutive calls that ask for later
    frames continue decoding where the previous one stopped (no seek unless a keyframe lies
    ahead), so a long video read chunk by chunk is decoded once, front to back.

    ``size=(width, height)`` scales every frame while converting it to RGB (swscale, bicubic,
    like ffmpeg's ``scale`` filter): full-resolution RGB frames are never materialised.

    The decoding guard: frames above ``max_pixels`` are converted downscaled to fit it (with one
    decoder thread, so the decoder keeps few native-size frames), an explicit ``size`` above it
    is refused, and so are frames above ``max_pixels * REFUSE_FACTOR``, with a
    :class:`~videolang.errors.VideoDecodeError`. ``max_pixels=None`` turns the guard off.
    """

    def __init__(self, source: VideoSource, *, threads: int = 0, exact_probe: bool = False,
                 size: tuple[int, int] | None = None, max_pixels: int | None = MAX_PIXELS):
        self.source_name = _describe(source)
        self._container = _open(source)
        self._stream = self._container.streams.video[0]
        # One converter for every frame: PyAV's frame.to_ndarray(format=...) builds a new
        # swscale context per frame, which costs ~40x the conversion itself.
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()
        if threads:
            self._stream.thread_count = threads
            self._stream.thread_type = "AUTO"
        try:
            meta = None if exact_probe else _probe_from_index(self._stream)
            self._set_metadata(meta or _probe_by_demux(self._container, self.source_name))
            self.max_pixels = max_pixels
            self._guard_decoder()
            self._expected: np.ndarray | None = None
            self._reset_cursor()
            self.set_output_size(size)
        except BaseException:
            self._container.close()
            raise

    def _guard_decoder(self) -> None:
        """Refuse frames too large to decode within bounds; decode large ones with one thread
        (each frame thread of FFmpeg's decoder holds its own native-size pictures)."""
        w, h = self.metadata.width, self.metadata.height
        if self.max_pixels is None or w * h <= self.max_pixels:
            return
        if w * h > self.max_pixels * REFUSE_FACTOR:
            raise VideoDecodeError(self.source_name, f"{w}x{h} frames ({w * h / 1e6:.2f} Mpx) are beyond the decoding "
                                   f"guard (max_pixels={self.max_pixels} x {REFUSE_FACTOR})")
        self._stream.thread_count = 1
        log.info("%s: %dx%d frames are decoded downscaled to %dx%d (max_pixels=%d)", self.source_name, w, h,
                 *guarded_size(w, h, self.max_pixels), self.max_pixels)

    def expect(self, indices: Sequence[int] | np.ndarray | None) -> None:
        """Announce the frames later reads will ask for (e.g. a whole sampling plan read chunk by
        chunk): the decoder then never skips them, so each chunk continues where the previous
        one stopped instead of seeking back. ``None`` forgets the plan."""
        if indices is None:
            self._expected = None
            return
        arr = _as_index_array(indices)
        self._check(arr)
        mask = np.zeros(self.metadata.num_frames, dtype=bool)
        mask[arr] = True
        self._expected = mask

    def set_output_size(self, size: tuple[int, int] | None) -> None:
        """Scale frames to ``(width, height)`` from now on (``None``: the native size, or the
        largest that fits ``max_pixels``); a size above ``max_pixels`` is refused."""
        if size is not None and (int(size[0]) <= 0 or int(size[1]) <= 0):
            raise ValueError(f"output size must be positive, got {size}")
        native = (self.metadata.width, self.metadata.height)
        if size is None:
            size = guarded_size(*native, self.max_pixels)
        elif self.max_pixels is not None and int(size[0]) * int(size[1]) > self.max_pixels:
            raise VideoDecodeError(self.source_name, f"{size[0]}x{size[1]} output frames are above the decoding guard "
                                   f"(max_pixels={self.max_pixels})")
        self._scale_to = None if tuple(size) == native else (int(size[0]), int(size[1]))

    def _set_metadata(self, meta: VideoMetadata) -> None:
        self.metadata = meta
        self._index_of = {p: i for i, p in enumerate(meta.frame_pts)}
        stream = self._stream
        self._start_ts = stream.start_time if stream.start_time is not None else 0
        self._frame_ts = 1.0 / (meta.fps * float(stream.time_base)) if meta.fps > 0 else 0.0

    def _reset_cursor(self) -> None:
        # Decoding state kept between reads: the packet iterator, the highest frame index the
        # decoder has output, and the last converted frame (chunks of a resampled plan may
        # start with the frame the previous chunk ended on).
        self._packets = None
        self._position = -1
        self._last: tuple[int, Any] | None = None  # (index, decoded frame)
        # Frames whose packets were fed in "skip non-reference frames" mode: lost unless decoded
        # again, so wanting one of them later means seeking (only those past _position matter).
        self._skipped: set[int] = set()

    @property
    def output_size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames :meth:`read` returns."""
        return self._scale_to or (self.metadata.width, self.metadata.height)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame as :meth:`read` returns it."""
        w, h = self.output_size
        return max(w * h * 3, 1)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._reset_cursor()
        self._container.close()

    def _index(self, ts: int | None) -> int:
        """Frame index of a presentation timestamp; -1 for none."""
        if ts is None:
            return -1
        if self.metadata.frame_pts:
            return self._index_of.get(ts, -1)
        pos = (ts - self._start_ts) / self._frame_ts
        idx = round(pos)
        if abs(pos - idx) > 0.01 or not 0 <= idx < self.metadata.num_frames:
            raise _Fallback
        return idx

    def _seek(self, ts: int) -> None:
        """Position the demuxer on the keyframe whose seek timestamp is ``ts``."""
        self._container.seek(ts, stream=self._stream, backward=True, any_frame=False)

    def _demux(self):
        return self._container.demux(self._stream)

    def _decode(self, packet):
        return self._stream.codec_context.decode(packet)

    def _to_rgb(self, frame) -> np.ndarray:
        # threads=1 for small frames: swscale's default starts a thread per CPU, which costs far
        # more than converting a small frame (64x64: about 93 us against 5 us); two threads
        # for frames of 640x360 and more (720p to 113x64 bicubic: 1.09 -> 0.63 ms measured).
        threads = 2 if frame.width * frame.height >= 640 * 360 else 1
        kwargs: dict = {"format": "rgb24", "threads": threads}
        if self._scale_to is not None:
            kwargs.update(width=self._scale_to[0], height=self._scale_to[1], interpolation="BICUBIC")
        return self._reformatter.reformat(frame, **kwargs).to_ndarray()

    def _check(self, arr: np.ndarray) -> None:
        n = self.metadata.num_frames
        bad = arr[(arr < 0) | (arr >= n)]
        if bad.size:
            raise FrameIndexError(
                f"frame index {int(bad[0])} out of range for {self.source_name!r} "
                f"({n} frames: valid indices are 0..{n - 1})"
            )

    def read(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames at ``indices`` as a uint8 ``(len(indices), H, W, 3)`` tensor, in request order.

        Each decoded frame is converted once, straight into the output (duplicates are copies).
        """
        arr = _as_index_array(indices)
        w, h = self.output_size
        out = np.empty((arr.size, h, w, 3), dtype=np.uint8)
        if arr.size == 0:
            return torch.from_numpy(out)
        self._check(arr)
        order = np.argsort(arr, kind="stable")
        wanted, first = np.unique(arr[order], return_index=True)
        slots = np.split(order, first[1:])  # slots[j]: output rows of wanted[j]
        slot_of = dict(zip(wanted.tolist(), slots, strict=True))
        for idx, rgb in self.iter_frames(wanted):
            out[slot_of[idx]] = rgb
        return torch.from_numpy(out)

    def read_raw(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> list:
        """The decoded (not yet converted) frames at ``indices``, in request order; convert them
        with :meth:`convert`. Lets a caller decode in one thread and convert in another."""
        arr = _as_index_array(indices)
        if arr.size == 0:
            return []
        decoded = dict(self.iter_frames(arr, raw=True))
        return [decoded[i] for i in arr.tolist()]

    def convert(self, frames: Sequence) -> torch.Tensor:
        """Frames from :meth:`read_raw` as uint8 ``(N, H, W, 3)`` at :attr:`output_size`."""
        w, h = self.output_size
        out = np.empty((len(frames), h, w, 3), dtype=np.uint8)
        for i, frame in enumerate(frames):
            out[i] = self._to_rgb(frame)
        return torch.from_numpy(out)

    def iter_frames(self, indices: Sequence[int] | np.ndarray | torch.Tensor, *,
                    raw: bool = False) -> Iterator[tuple[int, Any]]:
        """``(index, uint8 (H, W, 3) frame)`` for the sorted distinct ``indices``, decoded in one
        forward pass and yielded as they come (nothing is held beyond the current frame); with
        ``raw`` the decoder's frames, unconverted."""
        import av

        arr = _as_index_array(indices)
        self._check(arr)
        wanted = np.unique(arr).tolist()
        if not wanted:
            return
        convert = (lambda f: f) if raw else self._to_rgb
        try:
            try:
                for idx, frame in self._decode_sorted(wanted):
                    yield idx, convert(frame)
            except _Fallback:
                # The container's index disagreed with the stream: probe exactly and start over
                # (frames already given out were mapped with the wrong index).
                self._set_metadata(_probe_by_demux(self._container, self.source_name))
                self._reset_cursor()
                for idx, frame in self._decode_sorted(wanted):
                    yield idx, convert(frame)
        except av.error.FFmpegError as exc:
            self._reset_cursor()
            raise VideoDecodeError(self.source_name, f"decoding failed ({exc})") from exc
        except BaseException:
            self._reset_cursor()
            raise
        finally:
            self._stream.codec_context.skip_frame = "DEFAULT"

    def _decode_sorted(self, wanted: list[int]) -> Iterator[tuple[int, Any]]:
        """Decode the sorted distinct frame indices ``wanted`` in one forward pass.

        Seeks only when the next needed frame's keyframe lies beyond the last frame decoded (or
        the frame was passed already), and asks the decoder to skip non-reference frames that
        nobody asked for (nothing depends on them, so skipping them changes no other frame).
        """
        meta = self.metadata
        keyframes = meta.keyframes
        ctx = self._stream.codec_context
        wanted_set = set(wanted)
        done: set[int] = set()
        skip = ctx.skip_frame = "DEFAULT"
        just_seeked_to = -1
        for target in wanted:
            if target in done:
                continue
            if self._last is not None and self._last[0] == target:
                done.add(target)
                yield self._last
                continue
            k = bisect.bisect_right(keyframes, target) - 1
            if (self._packets is None or keyframes[k] > self._position + 1 or target <= self._position
                    or target in self._skipped):
                # Probing may have left the demuxer anywhere, so the first read seeks too;
                # later seeks jump forward unless a frame was passed (or skipped) already.
                self._seek(meta.keyframe_seek_ts[k])
                self._packets = self._demux()
                just_seeked_to = keyframes[k]
                self._position = -1
                self._skipped.clear()
            elif len(self._skipped) > 4096:
                self._skipped = {i for i in self._skipped if i > self._position}
            for packet in self._packets:
                flush = packet.size == 0
                pidx = -1 if flush else self._index(packet.pts)
                keep = flush or pidx in wanted_set or (self._expected is not None and pidx >= 0
                                                       and bool(self._expected[pidx]))
                mode = "DEFAULT" if keep else "NONREF"
                if mode != skip:  # the setter is not free: only call it on changes
                    ctx.skip_frame = skip = mode
                if mode == "NONREF" and pidx >= 0:
                    self._skipped.add(pidx)
                for frame in self._decode(None if flush else packet):
                    idx = self._index(frame.pts if frame.pts is not None else frame.dts)
                    if idx < 0:
                        continue
                    if just_seeked_to >= 0:
                        if idx != just_seeked_to and not meta.frame_pts:
                            raise _Fallback  # the index's keyframe guess was wrong
                        just_seeked_to = -1
                    self._position = max(self._position, idx)
                    if idx in wanted_set and idx not in done:
                        done.add(idx)
                        self._last = (idx, frame)
                        yield self._last
                if target in done or self._position > target:
                    break
            if target not in done:
                self._packets = None
                if not meta.frame_pts:
                    raise _Fallback
                raise VideoDecodeError(
                    self.source_name,
                    f"frame {target} could not be decoded (file truncated or corrupt?)",
                )

    def read_at(self, timestamps: Sequence[float]) -> torch.Tensor:
        """Frames on screen at ``timestamps`` (seconds from the stream start)."""
        try:
            idx = [self.metadata.index_at(float(t)) for t in timestamps]
        except FrameIndexError as exc:
            raise FrameIndexError(f"{exc} in {self.source_name!r}") from None
        return self.read(idx)


def _read_frames_torchcodec(source: VideoSource, arr: np.ndarray, max_pixels: int | None) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder  # optional dependency

    desc = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        container = _open(source)  # same typed errors for missing / empty / corrupt files
        ctx = container.streams.video[0].codec_context
        width, height = int(ctx.width), int(ctx.height)
        container.close()
        if max_pixels is not None and width * height > max_pixels:  # torchcodec returns native frames
            raise VideoDecodeError(desc, f"{width}x{height} frames are above the decoding guard (max_pixels="
                                   f"{max_pixels}); the pyav backend decodes them downscaled")
        src: object = os.fspath(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        src = bytes(source)
    else:
        src = source.read()
    try:
        decoder = VideoDecoder(src, dimension_order="NHWC", seek_mode="exact")
    except Exception as exc:
        raise VideoDecodeError(desc, f"torchcodec could not open it ({exc})") from exc
    n = len(decoder)
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise FrameIndexError(f"frame index {int(bad[0])} out of range for {desc!r} ({n} frames)")
    try:
        return decoder.get_frames_at(indices=arr.tolist()).data
    except Exception as exc:
        raise VideoDecodeError(desc, f"torchcodec decoding failed ({exc})") from exc


def torchcodec_unavailable_reason() -> str | None:
    """Why torchcodec cannot be used here (``None`` when it can): not installed, or the error
    its import raised (a CUDA build next to CPU torch, no system FFmpeg libraries...)."""
    try:
        import torchcodec.decoders  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name == "torchcodec":
            return "torchcodec is not installed (pip install 'videolang[torchcodec]')"
        return f"torchcodec is installed but does not import: {exc}"
    except Exception as exc:  # any import failure is a reason to report, not to crash on
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"torchcodec is installed but does not import: {type(exc).__name__}: {first}"
    return None


def available_backends() -> list[str]:
    """Decoding backends importable here: always ``pyav``; ``torchcodec`` when it imports."""
    return ["pyav"] if torchcodec_unavailable_reason() else ["pyav", "torchcodec"]


_auto_reported = False


def _auto_backend() -> str:
    """torchcodec when it works, else PyAV; the first fallback logs why (once per process)."""
    global _auto_reported
    reason = torchcodec_unavailable_reason()
    if reason is None:
        return "torchcodec"
    if not _auto_reported:
        _auto_reported = True
        logging.getLogger(__name__).info("decoding backend 'auto' uses PyAV: %s", reason)
    return "pyav"


def read_frames(
    source: VideoSource,
    indices: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    backend: str = "pyav",
    max_pixels: int | None = MAX_PIXELS,
) -> torch.Tensor:
    """Decode the frames at ``indices`` (any order, duplicates allowed) as uint8 ``(T, H, W, 3)``.

    ``backend="torchcodec"`` uses torchcodec's exact-seek decoder when it is installed (same
    result contract); ``"auto"`` picks torchcodec when available, else PyAV. ``max_pixels``:
    the decoding guard of :class:`VideoReader` (torchcodec refuses larger frames).
    """
    if backend == "auto":
        backend = _auto_backend()
    if backend == "torchcodec":
        return _read_frames_torchcodec(source, _as_index_array(indices), max_pixels)
    if backend != "pyav":
        raise ValueError(f"unknown decoding backend {backend!r}; choose pyav, torchcodec or auto")
    with VideoReader(source, max_pixels=max_pixels) as reader:
        return reader.read(indices)


def read_frames_at(source: VideoSource, timestamps: Sequence[float]) -> torch.Tensor:
    """Decode the frames on screen at ``timestamps`` (seconds) as uint8 ``(T, H, W, 3)``."""
    with VideoReader(source) as reader:
        return reader.read_at(timestamps)
