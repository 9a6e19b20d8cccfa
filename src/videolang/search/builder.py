"""``videolang index MODEL_DIR VIDEO_DIR INDEX_DIR``: a searchable index of a folder of videos.

:func:`build_index` embeds each video in overlapping windows (the model pipeline's
``encode_windows``) with a thumbnail per window, in DataLoader workers, and writes each video to
the catalog in one transaction; reruns are incremental and resume a killed run. At the end the
faiss index is updated and ``report.json`` written. Details: docs/search.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from videolang.data.video import VIDEO_EXTENSIONS
from videolang.errors import ConfigError, VideolangError
from videolang.search.catalog import CATALOG_FILE, Catalog, VideoRecord, WindowRecord
from videolang.utils.io import atomic_write_text, exclusive_lock, sha256_file

__all__ = [
    "IndexReport",
    "VideoJobs",
    "build_index",
    "check_same_settings",
    "finish_run",
    "load_pipeline",
    "model_identity",
    "plan",
    "prepare_run",
    "refresh_vectors",
    "run_settings",
    "scan_videos",
    "write_video",
]

log = logging.getLogger(__name__)

REPORT_FILE, LOCK_FILE = "report.json", ".lock"
THUMBNAIL_WIDTH = 192


# --------------------------------------------------------------------------------------------
# what is there, and what changed


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the indexed folder, POSIX separators
    abs_path: Path
    size: int
    mtime_ns: int


def scan_videos(root: str | os.PathLike) -> list[FileInfo]:
    """Video files under ``root`` (recursive, sorted, hidden entries skipped). Links that lead
    outside ``root`` are skipped: an index never points outside the folder it indexes."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder of videos")
    found = []
    seen_dirs: set[tuple[int, int]] = set()  # a link back up (loop -> .) is walked once
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and Path(dirpath, d).resolve().is_relative_to(root))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or path.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            real = path.resolve()
            if not real.is_relative_to(root):
                log.warning("skipping %s: it leads outside %s", path, root)
                continue
            if not real.is_file():  # a FIFO or device would block or never end
                log.warning("skipping %s: not a regular file", path)
                continue
            st = real.stat()
            found.append(FileInfo(path.relative_to(root).as_posix(), path, st.st_size, st.st_mtime_ns))
    return sorted(found, key=lambda f: f.path)


def model_identity(folder: str | os.PathLike) -> dict[str, Any]:
    """What identifies a model folder: its files' SHA-256 combined (the weights, the backbone's,
    the config and ``pipeline.json``), with its family and task."""
    folder = Path(folder).resolve()
    from videolang.pipelines.folder import read_pipeline_json

    spec = read_pipeline_json(folder)
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "backbone.safetensors", "pipeline.json"):
        if (folder / name).is_file():
            digest.update(f"{name}:{sha256_file(folder / name)};".encode())
    return {"folder": str(folder), "sha256": digest.hexdigest(), "family": spec["family"], "task": spec["task"]}


# --------------------------------------------------------------------------------------------
# embedding one video (in a DataLoader worker)


_PIPELINES: dict[tuple[str, str], Any] = {}


def load_pipeline(model_dir: str, device: str):
    """One pipeline per process (each DataLoader worker loads its own)."""
    key = (model_dir, device)
    if key not in _PIPELINES:
        from videolang.pipelines import load

        _PIPELINES[key] = load(model_dir, device=device)
    return _PIPELINES[key]


def _thumbnails(path: Path, times: list[float], width: int) -> list[bytes | None]:
    """A small JPEG of the frame on screen at each time."""
    from PIL import Image

    from videolang.data.video import VideoReader

    with VideoReader(path) as reader:
        meta = reader.metadata
        height = max(2, round(width * meta.height / max(meta.width, 1)) // 2 * 2)
        reader.set_output_size((width, height))
        idx = [meta.index_at(min(max(t, 0.0), meta.duration)) for t in times]
        frames = reader.read(idx).numpy()
    out = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def embed_video(pipe: Any, path: Path, window: float | None, stride: float | None, *, thumbnails: bool = True,
                thumbnail_width: int = THUMBNAIL_WIDTH) -> dict[str, Any]:
    """Everything the catalog keeps about one video: metadata, window times, embeddings
    (unit-normed for cosine models) and thumbnails."""
    from videolang.data.video import probe

    meta = probe(path)
    win = pipe.encode_windows(str(path), window=window, stride=stride)
    emb = win.embeddings.float()
    if getattr(pipe.spec, "similarity", None) is not None and pipe.spec.similarity.metric == "cosine":
        emb = torch.nn.functional.normalize(emb, dim=-1)
    mids = [(a + b) / 2 for a, b in zip(win.starts, win.ends, strict=True)]
    return {"duration": meta.duration, "fps": meta.fps, "width": meta.width, "height": meta.height,
            "num_frames": meta.num_frames, "starts": win.starts, "ends": win.ends, "embeddings": emb.numpy(),
            "thumbnails": _thumbnails(path, mids, thumbnail_width) if thumbnails else [None] * len(mids)}


class VideoJobs(Dataset):
    """Items: the index record of one video, or ``{"error": reason}`` (a bad file never stops a
    run), with the file's ``sha256`` (computed here when the plan left it unknown). The model
    folder's pipeline is loaded once per worker process."""

    def __init__(self, files: list[tuple[FileInfo, str | None]], model_dir: str, window: float | None,
                 stride: float | None, device: str = "cpu", thumbnails: bool = True):
        self.files, self.model_dir, self.window, self.stride = files, model_dir, window, stride
        self.device, self.thumbnails = device, thumbnails

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.item(i, self.files[i][1])

    def item(self, i: int, sha: str | None) -> dict[str, Any]:
        """The record of video ``i`` (``sha``: its SHA-256 when already known)."""
        info = self.files[i][0]
        out: dict[str, Any] = {"index": i}
        try:
            out["sha256"] = sha or sha256_file(info.abs_path)
            pipe = load_pipeline(self.model_dir, self.device)
            out.update(embed_video(pipe, info.abs_path, self.window, self.stride, thumbnails=self.thumbnails))
        except (VideolangError, OSError, ValueError) as exc:
            out["error"] = str(exc)
        return out


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and embed a video each: one core apiece


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class IndexReport:
    """What an ``index`` run did (also ``report.json``)."""

    videos: int = 0  # in the index after the run
    windows: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    vectors: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    window: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["failed"] = [{"path": p, "reason": r} for p, r in self.failed]
        return out


def index_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Only one writer per index: a second one fails at once, naming the holder."""
    return exclusive_lock(folder / LOCK_FILE, str(folder))


def run_settings(model_dir: str, root: Path, window: float | None, stride: float | None,
                 device: str = "cpu") -> dict[str, Any]:
    """What the catalog records about a run: the model (identity, family, task, embedding size,
    metric), the windows (seconds) and the indexed folder. Refuses models that cannot index."""
    pipe = load_pipeline(model_dir, device)
    video = getattr(pipe.spec, "video", None)
    if video is None or not hasattr(pipe, "encode_windows"):
        raise ConfigError(f"a {pipe.spec.family} {pipe.spec.task} model cannot index videos: give a retrieval "
                          "model folder (VideoCLIP, VLM retrieval)")
    full = video.max_len / video.feature_rate
    window = full if window is None else float(window)
    stride = window / 2 if stride is None else float(stride)
    if not 0 < window <= full + 1e-9 or stride <= 0:
        raise ConfigError(f"--window {window} s and --stride {stride} s: the window must be in (0, {full:g}] s "
                          "(the model's) and the stride positive")
    metric = getattr(getattr(pipe.spec, "similarity", None), "metric", "dot")
    model = {**model_identity(model_dir), "dim": int(pipe.embedding_dim), "metric": metric}
    return {"model": model, "windows": {"window": window, "stride": stride}, "root": str(root)}


def check_same_settings(catalog: Catalog, settings: dict[str, Any]) -> None:
    """A rerun must use the index's model, windows and folder (else the index would mix them)."""
    old, model = catalog.get_meta("model"), settings["model"]
    if old is None:
        return
    where = catalog.path.parent
    if old["sha256"] != model["sha256"]:
        raise ConfigError(f"{where} was built with another model ({old['folder']}, sha256 {old['sha256'][:12]}); "
                          "index with it, or give a new index folder")
    if catalog.get_meta("windows") != settings["windows"]:
        raise ConfigError(f"{where} has windows {catalog.get_meta('windows')}, not {settings['windows']}; "
                          "give a new index folder to change them")
    if catalog.get_meta("root") != settings["root"]:
        raise ConfigError(f"{where} indexes {catalog.get_meta('root')}, not {settings['root']}")


def plan(catalog: Catalog, files: list[FileInfo]) -> tuple[list[tuple[FileInfo, str | None]], list[str], int]:
    """``(to embed, gone, unchanged)``. A known file whose size or mtime changed is hashed: the
    same content only updates its mtime. New files are hashed later, by whoever embeds them
    (their hash is None here), so a large first run starts embedding at once."""
    known, failed = catalog.videos(), catalog.failures()
    todo: list[tuple[FileInfo, str | None]] = []
    unchanged = 0
    for f in files:
        old = known.get(f.path)
        if old is not None and (old.size, old.mtime_ns) == (f.size, f.mtime_ns):
            unchanged += 1
        elif old is None:
            if failed.get(f.path, (None, None))[:2] != (f.size, f.mtime_ns):  # an unchanged bad file stays bad
                todo.append((f, None))
        elif (sha := sha256_file(f.abs_path)) == old.sha256:
            catalog.touch(f.path, f.mtime_ns)  # same content, new mtime
            unchanged += 1
        else:
            todo.append((f, sha))
    present = {f.path for f in files}
    gone = [p for p in [*known, *failed] if p not in present]
    return todo, gone, unchanged


def prepare_run(catalog: Catalog, index_dir: Path, settings: dict[str, Any]) -> tuple[list, IndexReport, set[str]]:
    """Settings checked and recorded, parts a killed distributed run left merged, the plan made
    and gone files dropped: ``(to embed, report so far, paths indexed before)``."""
    from videolang.search.catalog import PARTS_DIR, merge_parts

    check_same_settings(catalog, settings)
    for key in ("model", "windows", "root"):
        catalog.set_meta(key, settings[key])
    if merged := merge_parts(catalog, index_dir / PARTS_DIR, settings["model"]["sha256"]):
        log.info("%s: merged %d videos finished by an interrupted run", index_dir, merged)
    identity = {k: settings["model"][k] for k in ("folder", "sha256", "family", "task")}
    report = IndexReport(model=identity, window=settings["windows"])
    known = set(catalog.videos())
    todo, gone, report.unchanged = plan(catalog, scan_videos(settings["root"]))
    catalog.remove(gone)
    report.removed = len(gone)
    return todo, report, known


def finish_run(catalog: Catalog, index_dir: Path, report: IndexReport, todo: list, known: set[str],
               vector_kind: str, start: float) -> IndexReport:
    """The parts of a distributed run merged (none otherwise), counts, failures, the faiss index
    (rebuilt when the catalog changed) and ``report.json``."""
    from videolang.search.catalog import PARTS_DIR, merge_parts

    merge_parts(catalog, index_dir / PARTS_DIR, report.model["sha256"])
    indexed = set(catalog.videos())
    done = {f.path for f, _ in todo} & indexed
    report.new, report.changed = len(done - known), len(done & known)
    report.failed = [(p, r) for p, (_, _, r) in sorted(catalog.failures().items())]
    report.videos, report.windows = catalog.counts()
    report.vectors = refresh_vectors(catalog, index_dir, vector_kind)
    report.seconds = round(time.perf_counter() - start, 3)
    atomic_write_text(index_dir / REPORT_FILE, json.dumps(report.to_dict(), indent=1), overwrite=True)
    log.info("index %s: %d videos, %d windows (%d new, %d changed, %d removed, %d unreadable) in %.1f s",
             index_dir, report.videos, report.windows, report.new, report.changed, report.removed,
             len(report.failed), report.seconds)
    return report


def build_index(model_dir: str | os.PathLike, video_dir: str | os.PathLike, index_dir: str | os.PathLike, *,
                window: float | None = None, stride: float | None = None, workers: int = 2, device: str = "cpu",
                vector_kind: str = "auto", thumbnails: bool = True, progress: bool = True) -> IndexReport:
    """Index (or update the index of) the videos of ``video_dir`` (see the module docstring)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    index_dir, model_dir = Path(index_dir), str(Path(model_dir).resolve())
    settings = run_settings(model_dir, Path(video_dir).resolve(), window, stride, device)
    with index_lock(index_dir), Catalog(index_dir / CATALOG_FILE) as catalog:
        todo, report, known = prepare_run(catalog, index_dir, settings)
        windows = settings["windows"]
        jobs = VideoJobs(todo, model_dir, windows["window"], windows["stride"], device, thumbnails)
        use_workers = workers if device == "cpu" and len(todo) > 1 else 0
        loader = DataLoader(jobs, batch_size=None, num_workers=use_workers, worker_init_fn=_one_thread,
                            prefetch_factor=2 if use_workers else None)
        with tqdm(total=len(todo), disable=not progress, desc="index", unit="video", dynamic_ncols=True) as bar:
            for item in loader:
                write_video(catalog, todo[item["index"]][0], item)
                bar.update(1)
        return finish_run(catalog, index_dir, report, todo, known, vector_kind, start)


def write_video(catalog: Catalog, info: FileInfo, item: dict[str, Any]) -> None:
    """One :class:`VideoJobs` item into a catalog: the video with its windows, or its failure."""
    if "error" in item:
        log.warning("skipping %s: %s", info.path, item["error"])
        catalog.put_failure(info.path, info.size, info.mtime_ns, item["error"])
        return
    video = VideoRecord(path=info.path, size=info.size, mtime_ns=info.mtime_ns, sha256=item["sha256"],
                        duration=float(item["duration"]), fps=float(item["fps"]), width=int(item["width"]),
                        height=int(item["height"]), num_frames=int(item["num_frames"]))
    emb = np.asarray(item["embeddings"], dtype=np.float32)
    catalog.put_video(video, [WindowRecord(float(a), float(b), e, t) for a, b, e, t in
                              zip(item["starts"], item["ends"], emb, item["thumbnails"], strict=True)])


def refresh_vectors(catalog: Catalog, index_dir: Path, kind: str) -> dict[str, Any]:
    """Rebuild the faiss index when the catalog changed since it was built; its report."""
    from videolang.search.vectors import VectorIndex, build_vector_index

    generation = catalog.generation
    current = VectorIndex.load(index_dir) if (index_dir / "vectors.json").is_file() else None
    previous = catalog.get_meta("vectors_report", {})
    if current is not None and current.generation == generation and (kind in ("auto", current.kind)):
        return previous
    ids, emb = catalog.embeddings(int(catalog.get_meta("model")["dim"]))
    vectors, report = build_vector_index(ids, emb, kind=kind, generation=generation)
    vectors.save(index_dir)
    catalog.set_meta("vectors_report", report)
    return report
