"""``synthesize_world``: render a seeded world of videos, images and annotations into a folder.

The folder is built in a temporary sibling and renamed into place at the end, so a crash never
leaves a half-written world; ``manifest.json`` (written last) lists every file with its size
and SHA-256. Videos are rendered by a process pool; each video depends only on
``(seed, index)``, so the bytes do not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from videolang.errors import ConfigError, StoreError
from videolang.utils.io import atomic_output, sha256_file

from . import language as lang
from .annotations import (
    TreeWriter,
    build_annotations,
    counts,
    event_middle_frame,
    extra_multiple_choice,
    image_file_name,
    write_annotations,
)
from .formats import write_formats
from .render import encode_video, render_video_frames, resolve_codec
from .world import ACTIONS, GENERATOR_VERSION, SHAPES, VERBS, check_video_args, sample_video_spec

DEFAULT_FPS = 10
DEFAULT_GOP = 10
DEFAULT_SIZE = 64
DEFAULT_DURATION = 4.0
MANIFEST = "manifest.json"
GENERATOR = "videolang.synth"
_CODEC_LABEL = {"libx264": "h264", "mpeg4": "mpeg4"}


def _render_job(
    job: tuple[int, int, int, int, float, int, str, str],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Worker: sample, draw and encode one video and its event stills; return spec and files."""
    from PIL import Image

    index, seed, size, fps, duration, gop, encoder, root = job
    spec = sample_video_spec(seed, index, size=size, fps=fps, duration=duration)
    frames = render_video_frames(spec)
    files = []
    rel = f"videos/{spec['id']}.mp4"
    data = encode_video(frames, os.path.join(root, rel), fps=fps, gop=gop, encoder=encoder)
    files.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    for ev in spec["events"]:
        rel = f"images/{image_file_name(spec['id'], ev['index'])}"
        path = os.path.join(root, rel)
        Image.fromarray(frames[event_middle_frame(ev)]).save(path, format="PNG")
        files.append({"path": rel, "size": os.path.getsize(path), "sha256": sha256_file(path)})
    return spec, files


def _mp_context():
    """fork on Linux: workers start in milliseconds and do not re-import the caller's main
    module (with spawn, a script without an ``if __name__ == "__main__"`` guard would make
    every worker re-run it). Workers only use numpy, PyAV (one thread) and Pillow, which are
    safe after fork. Elsewhere (macOS, Windows) spawn."""
    import multiprocessing as mp
    import sys

    if sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    return mp.get_context("spawn")


def _run_jobs(jobs: list, workers: int, progress: bool) -> list[tuple[dict[str, Any], list]]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="synth videos", unit="video", disable=not progress)
    results: list = []
    try:
        if workers <= 1:
            for job in jobs:
                results.append(_render_job(job))
                bar.update(1)
        else:
            ctx = _mp_context()
            chunk = max(1, min(16, len(jobs) // (workers * 4)))
            with ctx.Pool(workers) as pool:
                for res in pool.imap(_render_job, jobs, chunksize=chunk):
                    results.append(res)
                    bar.update(1)
    finally:
        bar.close()
    return results


def synthesize_world(
    out_dir: str | os.PathLike,
    num_videos: int,
    seed: int = 0,
    *,
    size: int = DEFAULT_SIZE,
    fps: int | None = DEFAULT_FPS,
    duration: float = DEFAULT_DURATION,
    gop: int | None = DEFAULT_GOP,
    codec: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Render ``num_videos`` videos of world ``seed`` with all annotations into ``out_dir``.

    Same arguments give byte-identical files (whatever ``workers`` is). ``fps``/``gop`` of
    None mean the defaults (10 and 10). ``codec``: ``auto`` (H.264 when PyAV has libx264, else
    MPEG-4 part 2), ``h264`` or ``mpeg4``. Refuses an existing ``out_dir`` unless
    ``overwrite=True`` (:class:`StoreError`). Returns the manifest dict.
    """
    fps = DEFAULT_FPS if fps is None else fps
    gop = DEFAULT_GOP if gop is None else gop
    if not isinstance(num_videos, int) or num_videos < 1:
        raise ConfigError(f"num_videos={num_videos!r}: must be a positive integer")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r}: must be a non-negative integer")
    if num_videos > 10**5:
        raise ConfigError(f"num_videos={num_videos}: at most 100000 (5-digit ids)")
    duration = float(duration)
    check_video_args(size, fps, duration, gop)
    encoder = resolve_codec(codec)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    workers = max(1, min(workers, num_videos))

    with atomic_output(out_dir, overwrite=overwrite, is_dir=True) as tmp:
        (tmp / "videos").mkdir()
        (tmp / "images").mkdir()
        jobs = [(i, seed, size, fps, duration, gop, encoder, str(tmp)) for i in range(num_videos)]
        results = _run_jobs(jobs, workers, progress)
        out = TreeWriter(tmp)
        for _, files in results:
            for f in files:
                out.add(f["path"], f["size"], f["sha256"])
        specs = [spec for spec, _ in results]
        ann = build_annotations(specs, seed, codec=_CODEC_LABEL[encoder], gop=gop)
        write_annotations(ann, out)
        write_formats(ann, out)
        manifest = _manifest(
            ann,
            out,
            num_videos=num_videos,
            seed=seed,
            size=size,
            fps=fps,
            duration=duration,
            gop=gop,
            codec=codec,
            encoder=encoder,
        )
        _write_manifest(tmp, manifest)
    return manifest


def _manifest(ann, out: TreeWriter, **args: Any) -> dict[str, Any]:
    import av

    encoder = args.pop("encoder")
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": args["seed"],
        "args": args,
        "video": {
            "codec": _CODEC_LABEL[encoder],
            "encoder": encoder,
            "container": "mp4",
            "pix_fmt": "yuv420p",
            "width": args["size"],
            "height": args["size"],
            "fps": args["fps"],
            "gop": args["gop"],
            "num_frames": round(args["fps"] * args["duration"]),
        },
        "environment": {
            "av": av.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "splits": {s: ann.split_ids(s) for s in ("train", "val", "test")},
        "counts": counts(ann),
        "vocabulary_sizes": {
            "verbs": len(VERBS),
            "nouns": len(SHAPES),
            "actions": len(ACTIONS),
            "answers": len(lang.ANSWER_VOCAB),
        },
        "files": [out.files[k] for k in sorted(out.files)],
    }


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    data = json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    (root / MANIFEST).write_text(data, encoding="utf-8")


def load_manifest(world_dir: str | os.PathLike, *, verify: bool = False) -> dict[str, Any]:
    """Read ``world_dir/manifest.json``; with ``verify=True`` also check every file's size and
    SHA-256 (raises :class:`StoreError` naming the first bad file)."""
    root = Path(world_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise StoreError(f"{path}: no manifest; not a synthetic world (run `videolang data synth`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: malformed manifest ({exc})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("generator") != GENERATOR
        or "files" not in manifest
    ):
        raise StoreError(f"{path}: not a {GENERATOR} manifest")
    if verify:
        for f in manifest["files"]:
            p = root / f["path"]
            if not p.is_file():
                raise StoreError(f"{p}: listed in the manifest but missing")
            if p.stat().st_size != f["size"] or sha256_file(p) != f["sha256"]:
                raise StoreError(f"{p}: size or checksum differs from the manifest")
    return manifest


def load_videos(world_dir: str | os.PathLike, split: str | None = None) -> list[dict[str, Any]]:
    """The records of ``annotations/videos.jsonl`` (optionally one split), in index order."""
    path = Path(world_dir) / "annotations" / "videos.jsonl"
    if not path.is_file():
        raise StoreError(f"{path}: missing; not a synthetic world")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StoreError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
            if split is None or rec["split"] == split:
                rows.append(rec)
    return rows


def write_extra_multiple_choice(
    world_dir: str | os.PathLike, out_path: str | os.PathLike, per_video: int, *,
    split: str = "train", overwrite: bool = False,
) -> int:
    """Write ``per_video`` fresh multiple-choice items for every ``split`` video of a world to
    ``out_path`` (JSONL, the layout of ``annotations/mc.jsonl``, atomically); returns the count.

    The items are drawn from the world's seed, so the same arguments give the same file.
    """
    manifest = load_manifest(world_dir)
    items = extra_multiple_choice(load_videos(world_dir, split), manifest["args"]["seed"], per_video,
                                  first_qid=manifest["args"]["num_videos"])
    with atomic_output(out_path, overwrite=overwrite) as tmp:
        TreeWriter(tmp.parent).jsonl(tmp.name, items)  # the serialization of the world's own files
    return len(items)


def world_videos(world_dir: str | os.PathLike, split: str | None = None) -> tuple[list[Any], list[str]]:
    """The videos of a synthetic world as :class:`~videolang.data.tokens.VideoEntry` (label =
    motion class) and the class names: what ``videolang tokenize --world`` reads."""
    from videolang.data.tokens import VideoEntry

    from .world import CLASS_NAMES

    root = Path(world_dir)
    rows = load_videos(root, split)
    return [VideoEntry(r["id"], root / r["path"], int(r["label"]["id"])) for r in rows], list(CLASS_NAMES)
