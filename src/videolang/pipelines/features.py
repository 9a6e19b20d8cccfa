"""The one streaming path from a video to feature rows, and the feature-extraction job.

:class:`ClipStream` turns one video into the backbone's clips chunk by chunk (bounded memory),
:func:`video_features` gives one video's rows (what ``encode_video`` and the search index run),
and :func:`run_extraction` / :func:`extract_features` fill a feature store, batching clips of
several videos (``videolang extract-features``; stored ids skipped, failures listed). One row
per started second, like MMPT's S3D features: ``rows = ceil(seconds)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from videolang.data.stores.feature_store import EXTRACTION_INFO_NAME, read_extraction_info
from videolang.data.video import VideoReader, VideoSource
from videolang.errors import ConfigError, FrameIndexError, StoreError, VideoDecodeError
from videolang.pipelines.inputs import Frames
from videolang.utils.io import (
    atomic_write_text,
    check_complete,
    interrupted_build,
    partial_path,
    sha256_file,
)

if TYPE_CHECKING:
    from videolang.models.backbones import VideoBackbone

log = logging.getLogger(__name__)

__all__ = [
    "EXTRACTION_INFO_NAME",
    "ClipStream",
    "ExtractionReport",
    "extract_features",
    "finish_rows",
    "open_video_sources",
    "run_extraction",
    "scan_video_folder",
    "video_features",
]

_INFO_FORMAT = "videolang-extraction"
_INFO_VERSION = 1
# Decoded + transformed frames held per chunk: bounds memory for long or large videos.
CHUNK_BYTES = 64 << 20


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


@dataclass
class ExtractionReport:
    """What one extraction run did.

    ``written``: videos added to the store; ``already_present``: skipped because the store (or
    this run) already had their id; ``bad``: ``(video_id, reason)`` of videos that could not be
    decoded; ``rows``: feature rows written; ``seconds``: wall time of the run.
    """

    written: int = 0
    already_present: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0

    @property
    def videos_per_s(self) -> float:
        """Videos written per second of wall time (0 when nothing was written)."""
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "already_present": self.already_present,
            "bad": [list(b) for b in self.bad],
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "videos_per_s": round(self.videos_per_s, 2),
        }


# --------------------------------------------------------------------------------------------
# one video, streamed
# --------------------------------------------------------------------------------------------


def _chunks(bounds: np.ndarray, frame_bytes: int, clip_frames: int, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    """Row ranges ``[a, b)`` whose frames, at ``frame_bytes`` each, fit in ``chunk_bytes``."""
    rows = len(bounds) - 1
    if rows <= 0:
        return
    per_row = max(float(bounds[-1]) / rows, float(clip_frames), 1.0) * frame_bytes
    step = max(1, int(chunk_bytes // per_row))
    for a in range(0, rows, step):
        yield a, min(a + step, rows)


class ClipStream:
    """One video as a backbone's clips, chunk by chunk (see the module docstring).

    ``bounds`` (``rows + 1`` offsets into the model-input frames) is known on opening. Iterating
    yields ``clips`` tensors of whole rows, in order. The two halves of that work can run in two
    threads: :meth:`decoded_chunks` decodes (one pass, front to back) and :meth:`clips_of`
    converts, scales and transforms. A chunk holds at most ``chunk_bytes`` of frames (decoded
    frames at the source size, converted ones at the model's). Use as a context manager (it holds
    the open video). Raises :class:`~videolang.errors.VideoDecodeError` for unreadable videos.
    """

    def __init__(self, video: VideoSource | Frames, backbone: VideoBackbone, *, chunk_bytes: int | None = None):
        self.backbone = backbone
        self.chunk_bytes = int(chunk_bytes or CHUNK_BYTES)
        self._reader: VideoReader | None = None
        if isinstance(video, Frames):
            self._frames: torch.Tensor | None = video.data
            num_frames, self.fps = video.data.shape[0], video.fps
            frame_bytes = int(np.prod(video.data.shape[1:]))
            self.name = f"<{num_frames} frames>"
        else:
            self._frames = None
            reader = VideoReader(video)
            meta = reader.metadata
            try:
                if not meta.fps > 0:
                    raise VideoDecodeError(reader.source_name, "unknown frame rate")
                size = backbone.decode_size(meta.width, meta.height) if meta.width and meta.height else None
                reader.set_output_size(size)
            except BaseException:
                reader.close()
                raise
            self._reader = reader
            num_frames, self.fps = meta.num_frames, meta.fps
            # a decoded YUV 4:2:0 frame at the source size + its converted and transformed copies
            frame_bytes = meta.width * meta.height * 3 // 2 + 5 * reader.frame_bytes
            self.name = reader.source_name
        self.frame_bytes = max(frame_bytes, 1)
        self.num_frames = num_frames
        self.duration = num_frames / self.fps
        self.indices = backbone.frame_indices(num_frames, self.fps)
        self.bounds = backbone.row_bounds(num_frames, self.fps)
        if self._reader is not None:
            self._reader.expect(self.indices)  # chunks continue decoding, never seek back

    @property
    def rows(self) -> int:
        return len(self.bounds) - 1

    def __enter__(self) -> ClipStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def decoded_chunks(self) -> Iterator[tuple[int, int, Any]]:
        """``(lo, hi, decoded)`` for consecutive row ranges: the decoder's frames of rows
        ``[lo, hi)`` (unconverted), or the slice of the given uint8 frames."""
        for lo, hi in _chunks(self.bounds, self.frame_bytes, self.backbone.clip_frames, self.chunk_bytes):
            idx = self.indices[self.bounds[lo] : self.bounds[hi]]
            if self._frames is not None:
                yield lo, hi, self._frames[torch.from_numpy(idx)]
            else:
                assert self._reader is not None
                yield lo, hi, self._reader.read_raw(idx)

    def clips_of(self, lo: int, hi: int, decoded: Any) -> torch.Tensor:
        """The backbone's clips of rows ``[lo, hi)`` from :meth:`decoded_chunks`' frames."""
        frames = decoded if self._reader is None else self._reader.convert(decoded)
        x = self.backbone.transform(frames)
        del frames
        return self.backbone.to_clips(x, self.bounds[lo : hi + 1] - self.bounds[lo])

    def __iter__(self) -> Iterator[torch.Tensor]:
        for lo, hi, decoded in self.decoded_chunks():
            yield self.clips_of(lo, hi, decoded)


def finish_rows(rows: np.ndarray, *, l2_normalize: bool = False, dtype: str = "float32") -> np.ndarray:
    """Rows as a feature store keeps them: unit-normed if asked, rounded through ``dtype``."""
    from videolang.models.backbones import l2_normalize_rows

    rows = np.asarray(rows, dtype=np.float32)
    if l2_normalize:
        rows = l2_normalize_rows(rows)
    if dtype != "float32":
        rows = rows.astype(dtype).astype(np.float32)
    return rows


def video_features(
    video: VideoSource | Frames,
    backbone: VideoBackbone,
    *,
    batch_size: int | None = None,
    l2_normalize: bool = False,
    dtype: str = "float32",
    chunk_bytes: int | None = None,
    prefetch: bool = True,
) -> np.ndarray:
    """Feature rows ``(rows, D)`` float32 of one video, streamed (see :class:`ClipStream`).

    Runs ``backbone`` (on its own device, under ``inference_mode``) on batches of
    ``batch_size`` clips whatever the chunks; the result depends on the video only, not on what
    else is being encoded. With ``prefetch`` a thread decodes while this one converts, scales
    and runs the backbone (on CPU a decode-bound backbone then leaves one core to it).
    """
    device = next(iter(backbone.parameters()), torch.empty(0)).device
    batcher = _Batcher(backbone, int(batch_size or backbone.default_batch_size), device)
    threads = torch.get_num_threads()
    with ClipStream(video, backbone, chunk_bytes=chunk_bytes) as stream, torch.inference_mode():
        job = _Job("video", RowPooler(backbone, stream.bounds))
        chunks: Iterator[tuple[Any, ...]] = ((_CLIPS, *chunk) for chunk in stream.decoded_chunks())
        prefetcher = _Prefetcher(chunks, depth=1) if prefetch else None
        if prefetcher is not None and device.type == "cpu" and backbone.decode_bound and threads > 1:
            torch.set_num_threads(threads - 1)
        try:
            for _, lo, hi, decoded in prefetcher if prefetcher is not None else chunks:
                batcher.put(job, stream.clips_of(lo, hi, decoded))
            batcher.flush()
        finally:
            if prefetcher is not None:
                prefetcher.close()
            torch.set_num_threads(threads)
    return finish_rows(job.pooler.finish().numpy(), l2_normalize=l2_normalize, dtype=dtype)


# --------------------------------------------------------------------------------------------
# batching clips of several videos
# --------------------------------------------------------------------------------------------


class RowPooler:
    """A video's clip outputs -> its feature rows, pooled as the outputs arrive.

    Only what later rows still need is kept: for frame-pooling backbones (one clip per frame) the
    frames of rows not yet complete and the frame before them (``temporal_diff`` looks one frame
    past each side of a row); for clip backbones (one clip per row) nothing. Memory therefore
    does not grow with the video's length; the rows equal ``backbone.pool`` over the whole video.
    """

    def __init__(self, backbone: VideoBackbone, bounds: np.ndarray):
        self.backbone = backbone
        self.bounds = np.asarray(bounds, dtype=np.int64) - int(bounds[0])
        self.per_frame = backbone.frames_per_feature is None
        self.total = int(self.bounds[-1]) if self.per_frame else len(self.bounds) - 1
        self._buffer: list[torch.Tensor] = []
        self._start = 0  # clip index of the buffer's first entry
        self.received = 0
        self.next_row = 0
        self._rows: list[torch.Tensor] = []

    def add(self, outputs: torch.Tensor) -> None:
        """The next clip outputs ``(k, D)`` of the video, in order."""
        self._buffer.append(outputs)
        self.received += outputs.shape[0]
        self._pool_ready()

    def _ready_rows(self) -> int:
        if not self.per_frame:
            return self.received
        # row r is complete once the frame after it (or the video's end) has arrived
        needed = np.minimum(self.bounds[1:] + 1, self.total)
        return int(np.searchsorted(needed, self.received, side="right"))

    def _pool_ready(self) -> None:
        a, b = self.next_row, self._ready_rows()
        if b <= a:
            return
        feats = torch.cat(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        bounds = self.bounds if self.per_frame else np.arange(len(self.bounds))
        lo = max(int(bounds[a]) - 1, 0) if self.per_frame else int(bounds[a])
        hi = min(int(bounds[b]) + 1, self.total) if self.per_frame else int(bounds[b])
        self._rows.append(self.backbone.pool(feats[lo - self._start : hi - self._start],
                                             self.bounds[a : b + 1] - (self.bounds[a] if not self.per_frame else lo)))
        keep = max(int(bounds[b]) - 1, 0) if self.per_frame else int(bounds[b])
        self._buffer = [feats[keep - self._start :]]
        self._start, self.next_row = keep, b

    def finish(self) -> torch.Tensor:
        """All rows ``(rows, D)`` (every output must have arrived)."""
        if self.received != self.total:
            raise RuntimeError(f"RowPooler: {self.received} of {self.total} clip outputs arrived")
        self._pool_ready()
        return torch.cat(self._rows) if self._rows else torch.zeros((0, self.backbone.feature_dim))


@dataclass(eq=False)
class _Job:
    vid: str
    pooler: RowPooler
    queued: int = 0  # clips waiting in the batcher
    read_done: bool = False


class _Batcher:
    """Queue clips of many videos; run ``batch_size`` of them per forward pass, in order."""

    def __init__(self, backbone: VideoBackbone, batch_size: int, device: torch.device):
        self.backbone = backbone
        self.batch_size = batch_size
        self.device = device
        self.queue: deque[tuple[_Job, torch.Tensor]] = deque()
        self.pending = 0

    def put(self, job: _Job, clips: torch.Tensor) -> None:
        if clips.shape[0] == 0:
            return
        if self.queue and self.queue[-1][1].shape[1:] != clips.shape[1:]:
            self.flush()  # clips of another shape cannot share a batch
        self.queue.append((job, clips))
        job.queued += clips.shape[0]
        self.pending += clips.shape[0]
        while self.pending >= self.batch_size:
            self._step()

    def drop(self, job: _Job) -> None:
        kept = deque((j, c) for j, c in self.queue if j is not job)
        self.pending -= sum(c.shape[0] for j, c in self.queue if j is job)
        self.queue = kept
        job.queued = 0

    def flush(self) -> None:
        while self.pending:
            self._step()

    def _step(self) -> None:
        parts: list[tuple[_Job, torch.Tensor]] = []
        n = 0
        while self.queue and n < self.batch_size:
            job, clips = self.queue.popleft()
            take = min(clips.shape[0], self.batch_size - n)
            if take < clips.shape[0]:
                self.queue.appendleft((job, clips[take:]))
                clips = clips[:take]
            parts.append((job, clips))
            n += take
        batch = torch.cat([c for _, c in parts]) if len(parts) > 1 else parts[0][1]
        batch = batch.to(self.device, non_blocking=self.device.type == "cuda")
        out = self.backbone(batch).float().cpu()
        s = 0
        for job, clips in parts:
            k = clips.shape[0]
            job.pooler.add(out[s : s + k])
            job.queued -= k
            s += k
        self.pending -= n


# --------------------------------------------------------------------------------------------
# the extraction loop
# --------------------------------------------------------------------------------------------


# Events passed from the decoding thread to the model loop.
_SKIP, _START, _CLIPS, _END, _BAD, _ERROR, _DONE = range(7)


def _decode_events(
    sources: Iterable[tuple[str, VideoSource]],
    backbone: VideoBackbone,
    is_stored: Callable[[str], bool],
) -> Iterator[tuple[Any, ...]]:
    """Decode and transform every new video in bounded chunks, as a stream of events."""
    seen: set[str] = set()
    for vid, source in sources:
        if vid in seen or is_stored(vid):
            yield (_SKIP, vid)
            continue
        seen.add(vid)
        started = False
        try:
            with ClipStream(source, backbone) as stream:
                yield (_START, vid, stream.bounds)
                started = True
                for clips in stream:
                    yield (_CLIPS, clips)
            yield (_END, vid)
        except (VideoDecodeError, FrameIndexError) as exc:
            yield (_BAD, vid, getattr(exc, "reason", str(exc)), started)


class _Prefetcher:
    """Run an event generator in a thread, ``depth`` events ahead of the consumer.

    PyAV decodes with the GIL released, so decoding the next videos overlaps the forward
    passes of the current ones. Exceptions of the generator are re-raised in the consumer;
    :meth:`close` stops the thread.
    """

    def __init__(self, events: Iterator[tuple[Any, ...]], depth: int = 2):
        self._events = events
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="videolang-decode", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[Any, ...]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for ev in self._events:
                if not self._put(ev):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((_ERROR, exc))
        finally:
            self._put((_DONE,))
            close = getattr(self._events, "close", None)
            if close is not None:  # closes the video open in a stopped generator now
                with contextlib.suppress(Exception):
                    close()

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while True:
            ev = self._queue.get()
            if ev[0] == _DONE:
                return
            if ev[0] == _ERROR:
                raise ev[1]
            yield ev

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=10)


def extract_features(
    sources: Iterable[tuple[str, VideoSource]],
    backbone: VideoBackbone,
    writer: Any,
    *,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    l2_normalize: bool = False,
    progress: bool = True,
    total: int | None = None,
    prefetch: bool = True,
    num_threads: int | None = None,
) -> ExtractionReport:
    """Fill ``writer`` (a :class:`~videolang.data.stores.FeatureStoreWriter`) from
    ``(video_id, source)`` pairs with ``backbone`` features, one row per second.

    * **Batched across videos**: clips of consecutive videos share forward passes of
      ``batch_size`` clips (default: the backbone's; frames for the 2D backbones, 30-frame
      clips for S3D-G). Each video is decoded in chunks of bounded size, so memory does not
      grow with video length or resolution.
    * **Overlapped**: with ``prefetch`` (default) a thread decodes the next videos while the
      model runs; ``sources`` is then iterated in that thread. ``num_threads`` sets torch's
      intra-op threads for the run (restored afterwards); by default a decode-bound backbone
      (``backbone.decode_bound``: the 2D ones) on CPU leaves one core to the decoding thread,
      which on 2 cores is ~1.5x faster than letting the two fight (measured).
    * **Resumable**: ids already in ``writer`` (or seen earlier in this run) are skipped and
      counted in ``already_present``.
    * **Bad videos** (:class:`~videolang.errors.VideoDecodeError`, also mid-file) are logged,
      listed in ``report.bad`` and skipped; the run goes on.
    * ``l2_normalize``: scale every row to unit norm (the MMPT scripts' default).

    The backbone is moved to ``device`` and run in eval mode under ``torch.inference_mode``;
    videos are written in input order. Returns an :class:`ExtractionReport`.
    """
    from tqdm.auto import tqdm

    dev = torch.device(device)
    backbone.to(dev).eval()
    bs = int(batch_size or backbone.default_batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    threads_before = torch.get_num_threads()
    if num_threads is None and prefetch and dev.type == "cpu" and backbone.decode_bound:
        num_threads = max(1, threads_before - 1)
    if num_threads is not None:
        torch.set_num_threads(max(1, int(num_threads)))
    report = ExtractionReport()
    batcher = _Batcher(backbone, bs, dev)
    open_jobs: deque[_Job] = deque()
    start = time.perf_counter()

    def finish_ready() -> None:
        while open_jobs and open_jobs[0].read_done and open_jobs[0].queued == 0:
            job = open_jobs.popleft()
            rows = job.pooler.finish().numpy().astype(np.float32, copy=False)
            writer.add(job.vid, finish_rows(rows, l2_normalize=l2_normalize))
            report.written += 1
            report.rows += len(rows)

    events = _decode_events(sources, backbone, writer.__contains__)
    prefetcher = _Prefetcher(events) if prefetch else None
    bar = tqdm(total=total, disable=not progress, desc=f"features ({backbone.name})",
               unit="video", dynamic_ncols=True)  # fmt: skip
    job: _Job | None = None
    try:
        with torch.inference_mode():
            for ev in prefetcher if prefetcher is not None else events:
                kind = ev[0]
                if kind == _START:
                    job = _Job(ev[1], RowPooler(backbone, ev[2]))
                    open_jobs.append(job)
                elif kind == _CLIPS:
                    assert job is not None
                    batcher.put(job, ev[1])
                elif kind == _END:
                    assert job is not None
                    job.read_done, job = True, None
                    finish_ready()
                    bar.update(1)
                elif kind == _SKIP:
                    report.already_present += 1
                    bar.update(1)
                elif kind == _BAD:
                    _, vid, reason, started = ev
                    log.warning("skipping video %s: %s", vid, reason)
                    report.bad.append((vid, reason))
                    if started and job is not None:
                        batcher.drop(job)
                        open_jobs.remove(job)
                    job = None
                    bar.update(1)
                    bar.set_postfix(bad=len(report.bad), refresh=False)
            batcher.flush()
            finish_ready()
    finally:
        if prefetcher is not None:
            prefetcher.close()
        bar.close()
        torch.set_num_threads(threads_before)
        report.seconds = time.perf_counter() - start
    return report


# --------------------------------------------------------------------------------------------
# video sources
# --------------------------------------------------------------------------------------------

_VIDEO_EXTS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif", ".m4v", ".mpg",
                         ".mpeg", ".ts", ".flv", ".wmv", ".ogv"})  # fmt: skip


def scan_video_folder(root: str | os.PathLike) -> list[tuple[str, Path]]:
    """Sorted ``(id, path)`` of the video files under ``root`` (recursive, hidden entries
    skipped): id = path relative to ``root`` without extension (as LMDB keys)."""
    root = Path(root)
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if name.startswith(".") or not stem or ext.lower() not in _VIDEO_EXTS:
                continue
            path = Path(dirpath) / name
            vid = Path(os.path.relpath(path, root)).with_name(stem).as_posix()
            if vid in found:
                raise StoreError(f"two videos map to id {vid!r}: {found[vid]} and {path}; rename one")
            found[vid] = path
    return sorted(found.items())


def _is_webdataset_dir(path: Path) -> bool:
    """Written by ``write_webdataset`` (its ``index.json``), or ``*.tar`` and no video files."""
    index = path / "index.json"
    if index.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return json.loads(index.read_text(encoding="utf-8")).get("format") == "videolang-webdataset"
        return False
    names = [p.name for p in path.iterdir() if p.is_file()]
    has_tar = any(n.endswith(".tar") for n in names)
    return has_tar and not any(os.path.splitext(n)[1].lower() in _VIDEO_EXTS for n in names)


def open_video_sources(videos: str | os.PathLike) -> tuple[str, int | None, Iterator[tuple[str, VideoSource]]]:
    """``(kind, total, pairs)`` for a video collection; ``pairs`` yields ``(video_id, source)``.

    ``videos`` is one of:

    * an LMDB store (a folder with ``data.mdb``, from :func:`~videolang.data.stores.pack_videos`):
      ids are its keys, sources the stored bytes; ``kind="lmdb"``;
    * WebDataset shards: a folder written by :func:`~videolang.data.stores.write_webdataset`
      (``index.json``), a folder holding ``*.tar`` and no video files, one ``.tar`` or a glob
      pattern: ids are the sample keys; ``kind="shards"`` (samples the shard reader cannot
      parse are logged by it and are not in the report);
    * a folder of video files (searched recursively, hidden entries skipped): ids are paths
      relative to it without extension, like the LMDB keys of the same folder; ``kind="folder"``.

    ``total`` is the number of videos when known without reading them (else ``None``).
    """
    spec = os.fspath(videos)
    path = Path(spec)
    is_glob = any(c in spec for c in "*?[")
    if not is_glob and not path.exists():
        raise ConfigError(interrupted_build(path) or f"videos {spec}: no such file or folder")
    if path.is_dir():
        check_complete(path, "video store", required=False)  # an interrupted `data shards` / `data pack`
    if path.is_dir() and (path / "data.mdb").is_file():
        from videolang.data.stores import LmdbVideoStore

        store = LmdbVideoStore(path)
        keys = store.keys()
        return "lmdb", len(keys), ((k, store[k]) for k in keys)
    if is_glob or (path.is_file() and path.suffix == ".tar") or (path.is_dir() and _is_webdataset_dir(path)):
        from videolang.data.stores import WebVideoDataset

        src = spec if is_glob or path.is_file() or (path / "index.json").is_file() else str(path / "*.tar")
        dataset = WebVideoDataset(src, rank=0, world_size=1)  # every shard, whatever RANK says
        try:
            total: int | None = len(dataset)
        except TypeError:
            total = None
        return "shards", total, ((s["key"], s["video"]) for s in dataset)
    if path.is_dir():
        files = scan_video_folder(path)
        return "folder", len(files), iter(files)
    raise ConfigError(
        f"videos {spec}: not a folder of videos, an LMDB store (data.mdb) or WebDataset shards"
    )


# --------------------------------------------------------------------------------------------
# the whole job
# --------------------------------------------------------------------------------------------

def _weights_info(weights: str | os.PathLike | None) -> dict[str, str] | str:
    if weights is None:
        return "random-init"
    p = Path(weights)
    return {"path": str(p.resolve()), "sha256": sha256_file(p)}


# extraction.json entries that may differ between runs on one store; everything else (the
# backbone's description, its weights, l2_normalize) must agree before a store is resumed:
# mixing features of two backbones or normalisations in one store would be a silent error.
_MAY_DIFFER = frozenset({"format", "version", "videos", "last_run", "dtype", "batch_size", "device", "options"})


def _comparable(info: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in info.items() if k not in _MAY_DIFFER}
    if isinstance(out.get("weights"), dict):
        # the same file may have moved: compare contents; the seed is irrelevant with weights
        out["weights"] = out["weights"].get("sha256")
        out.pop("seed", None)
    return out


def _check_resumable(info_path: Path, info: Mapping[str, Any]) -> None:
    if not info_path.is_file():
        log.warning("%s is missing: cannot check that the stored features come from the same "
                    "backbone; resuming anyway", info_path)  # fmt: skip
        return
    try:
        old = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {info_path}: {exc}") from exc
    a, b = _comparable(old), _comparable(info)
    diff = [f"{k}: stored {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]  # fmt: skip
    if diff:
        raise ConfigError(
            f"cannot resume {info_path.parent}: it was extracted with other settings ("
            + "; ".join(diff)
            + "); pass overwrite=True (CLI: --overwrite) or choose another output folder"
        )


def run_extraction(
    videos: str | os.PathLike,
    backbone: str,
    out: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    dtype: str | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    l2_normalize: bool = False,
    progress: bool = True,
    seed: int = 0,
    backbone_options: Mapping[str, Any] | None = None,
) -> ExtractionReport:
    """Extract ``backbone`` features of every video in ``videos`` into the store ``out``.

    ``videos``: a folder of videos, an LMDB store or WebDataset shards (see
    :func:`open_video_sources`). ``backbone``: a name from
    :func:`~videolang.models.backbones.list_backbones`, with ``weights`` a local file (without
    it: seeded random init, ``seed``) and ``backbone_options`` (e.g. ``{"grid": 4}`` for
    pooled-pixels). ``dtype``: ``"float16"`` (default for a new store, like MMPT's features) or
    ``"float32"``; a resumed store keeps its own.

    The store is built next to ``out`` and swapped in when complete (the old one stays readable
    until then); a second run on ``out`` fails at once. An existing store at ``out`` is extended
    (ids already stored are skipped) unless ``overwrite=True`` replaces it; resuming refuses a
    store made with other settings (``extraction.json`` differs). An interrupted run keeps its
    finished shards (small: ``shard_size`` videos or a minute of work) and the same call resumes
    after them. ``out/extraction.json`` records the backbone, weights path and SHA-256 (or
    ``"random-init"`` and the seed), frames per feature, fps and options, and the run's report.
    """
    from videolang.data.stores import FeatureStoreWriter
    from videolang.models.backbones import create_backbone

    kind, total, sources = open_video_sources(videos)
    model = create_backbone(backbone, weights=weights, seed=seed, **dict(backbone_options or {}))
    out = Path(out)
    info: dict[str, Any] = {
        "format": _INFO_FORMAT,
        "version": _INFO_VERSION,
        **model.describe(),  # backbone, feature_dim, frames_per_feature, fps, its own options
        "options": model.build_options(),  # create_backbone(backbone, **options) rebuilds it
        "weights": _weights_info(weights),
        "l2_normalize": bool(l2_normalize),
        "batch_size": batch_size or model.default_batch_size,
        "device": str(device),
        "videos": {"source": os.fspath(videos), "kind": kind, "total": total},
    }
    # an interrupted run with these settings is resumed, even by --overwrite (it is the new store)
    resume = not overwrite or _same_settings(partial_path(out) / EXTRACTION_INFO_NAME, info)
    writer = FeatureStoreWriter(out, dtype=dtype, overwrite=overwrite, resume=resume)
    info["dtype"] = writer.dtype_name
    info_path = writer.folder / EXTRACTION_INFO_NAME
    try:
        if len(writer) or info_path.is_file():
            _check_resumable(info_path, info)
        atomic_write_text(info_path, json.dumps(info, indent=1), overwrite=True)
        report = extract_features(sources, model, writer, batch_size=batch_size, device=device,
                                  l2_normalize=l2_normalize, progress=progress, total=total)  # fmt: skip
        writer.flush()
        info["last_run"] = report.to_dict()
        atomic_write_text(info_path, json.dumps(info, indent=1), overwrite=True)
    except BaseException:
        # Every video added so far is complete: keep them in the build (a rerun resumes after them).
        with contextlib.suppress(Exception):
            writer.flush()
        writer.abort()
        raise
    writer.close()  # the completeness marker, then the store is swapped in
    log.info("features (%s) -> %s: %d written, %d already present, %d bad; %.1f videos/s",
             model.name, out, report.written, report.already_present, len(report.bad),
             report.videos_per_s)  # fmt: skip
    return report


def _same_settings(info_path: Path, info: Mapping[str, Any]) -> bool:
    """Whether ``info_path`` (an interrupted build's ``extraction.json``) records ``info``'s settings."""
    if not info_path.is_file():
        return False
    try:
        _check_resumable(info_path, info)
    except (ConfigError, StoreError):
        return False
    return True


# --------------------------------------------------------------------------------------------
# the backbone of a feature store, for model folders
# --------------------------------------------------------------------------------------------

# describe() keys that are create_backbone options, for stores written before "options" existed
_LEGACY_OPTION_KEYS = ("grid", "rows_per_second", "temporal_diff", "output")


def backbone_from_store(features: str | os.PathLike):
    """``(backbone, BackboneSpec)`` that made a feature store's features, or ``(None, None)``.

    Rebuilt from ``extraction.json``: the same registry name and options, the same weights file
    (checked by SHA-256) or the same seeded random init, the same normalisation and precision.
    A model folder stores the backbone's weights, so inference runs exactly what extraction ran.
    """
    from videolang.models.backbones import create_backbone
    from videolang.pipelines.folder import BackboneSpec

    info = read_extraction_info(features)
    if not info.get("backbone"):
        log.warning("%s has no %s: the exported model takes features only", features, EXTRACTION_INFO_NAME)
        return None, None
    options = info.get("options")
    if options is None:
        options = {k: info[k] for k in _LEGACY_OPTION_KEYS if k in info}
        options = {k: v for k, v in options.items() if not (k == "rows_per_second" and v == 1.0)}
    weights = info.get("weights")
    path = weights.get("path") if isinstance(weights, dict) else None
    where = Path(features) / EXTRACTION_INFO_NAME
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"{where}: the backbone's weights {path} are not on this machine; "
                              "they are needed to put the backbone into the model folder")
        if weights.get("sha256") and sha256_file(path) != weights["sha256"]:
            raise ConfigError(f"{where}: {path} changed since the features were extracted (SHA-256 differs)")
    backbone = create_backbone(info["backbone"], weights=path, seed=int(info.get("seed", 0)), **options)
    spec = BackboneSpec(name=info["backbone"], options=backbone.build_options(), feature_dim=backbone.feature_dim,
                        l2_normalize=bool(info.get("l2_normalize", False)), dtype=info.get("dtype", "float32"))
    return backbone, spec
