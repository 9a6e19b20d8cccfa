"""`videolang index --devices N`: Lightning predict over DDP (2 CPU processes, gloo) gives the
catalog and the search results of the single-process `build_index`; parts left by a run killed
before its merge, or in the middle, are merged by the next run (any world size), not redone; the
command under torchrun updates an index incrementally."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback
from tests.conftest import make_videoclip_folder

import videolang
from videolang.engine.indexing import index_distributed
from videolang.search.builder import build_index
from videolang.search.catalog import PARTS_DIR

WINDOWS = {"window": 2.0, "stride": 1.0}
QUERIES = ["a dark square", "bright frames", "a grey moving picture"]
GOOD = ["a.mp4", "c.mkv", "d.mp4", "sub/b.mp4", "sub/deep/e.mp4"]


def write_video(path: Path, seed: int, num_frames: int) -> None:
    """10 fps random frames (blocky, so the codec keeps them apart): no two videos share a window."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 48
        stream.pix_fmt = "yuv420p"
        for _ in range(num_frames):
            frame = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A model folder, five videos of different content and lengths (2 to 6 s, several windows
    each) and one broken file, indexed once by the single-process path."""
    root = tmp_path_factory.mktemp("distributed-index")
    model = make_videoclip_folder(root / "model")
    videos = root / "videos"
    (videos / "sub" / "deep").mkdir(parents=True)
    for k, (name, frames) in enumerate(zip(GOOD, (30, 45, 60, 25, 20), strict=True)):
        write_video(videos / name, k, frames)
    (videos / "broken.mp4").write_bytes((videos / "a.mp4").read_bytes()[:300])
    build_index(model, videos, root / "reference", workers=0, progress=False, **WINDOWS)
    return root, model, videos


def catalog_content(index_dir: Path) -> tuple[dict, dict]:
    """``(videos by path with their windows, failures by path)``, without ids, times or the
    indexed folder's place."""
    db = sqlite3.connect(f"file:{index_dir / 'index.sqlite'}?mode=ro", uri=True)
    root = json.loads(db.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()[0])
    videos = {}
    for vid, path, *meta in db.execute("SELECT id, path, size, mtime_ns, sha256, duration, fps, width, height, "
                                       "num_frames FROM videos"):
        rows = db.execute('SELECT start, "end", embedding, thumbnail FROM windows WHERE video_id = ? ORDER BY start',
                          (vid,)).fetchall()
        videos[path] = (tuple(meta), [(s, e, np.frombuffer(emb, np.float32), thumb) for s, e, emb, thumb in rows])
    failures = {p: (size, mtime, reason.replace(root, "<root>")) for p, size, mtime, reason in
                db.execute("SELECT path, size, mtime_ns, reason FROM failures")}
    db.close()
    return videos, failures


def assert_same_index(index_dir: Path, reference: Path) -> None:
    """Same files, metadata, windows, thumbnails, embeddings (to 1e-5), failures and search hits."""
    got, got_failed = catalog_content(index_dir)
    want, want_failed = catalog_content(reference)
    assert sorted(got) == sorted(want) == GOOD
    assert got_failed == want_failed and list(got_failed) == ["broken.mp4"]
    for path, (meta, windows) in want.items():
        assert got[path][0] == meta, path
        assert [(s, e, t) for s, e, _, t in got[path][1]] == [(s, e, t) for s, e, _, t in windows], path
        np.testing.assert_allclose(np.stack([w[2] for w in got[path][1]]), np.stack([w[2] for w in windows]),
                                   atol=1e-5, err_msg=path)
    assert not (index_dir / PARTS_DIR).exists()
    ours, theirs = videolang.open_index(index_dir), videolang.open_index(reference)
    assert ours.vectors.generation == ours.catalog.generation  # the saved vectors reflect the merge
    for query in QUERIES:
        a, b = ours.search(query, k=4), theirs.search(query, k=4)
        assert [(h.video, h.start, h.end) for h in a] == [(h.video, h.start, h.end) for h in b], query
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    ours.close()
    theirs.close()


def part_paths(index_dir: Path) -> dict[str, list[str]]:
    """The files (videos and failures) in each part a run left behind."""
    out = {}
    for part in sorted((index_dir / PARTS_DIR).glob("rank*.sqlite")):
        db = sqlite3.connect(part)
        out[part.name] = sorted(r[0] for r in db.execute("SELECT path FROM videos UNION ALL SELECT path FROM failures"))
        db.close()
    return out


def indexed_at(index_dir: Path) -> dict[str, float]:
    db = sqlite3.connect(f"file:{index_dir / 'index.sqlite'}?mode=ro", uri=True)
    out = dict(db.execute("SELECT path, indexed_at FROM videos").fetchall())
    db.close()
    return out


class KilledBeforeMerge(Callback):
    """Every rank dies once its part is complete, before rank 0 merges."""

    def on_predict_end(self, trainer, pl_module):
        raise RuntimeError("killed before the merge")


class KilledAfter(Callback):
    """The rank dies after writing ``n`` videos (the writer runs first)."""

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.seen += 1
        if self.seen == self.n:
            raise RuntimeError(f"killed after {self.n} videos")


def test_two_processes_killed_before_merge_then_merged_by_one(world, tmp_path):
    root, model, videos = world
    index = tmp_path / "index"
    with pytest.raises(Exception, match="killed before the merge"):
        index_distributed(model, videos, index, workers=0, accelerator="cpu", devices=2, strategy="ddp_spawn",
                          progress=False, callbacks=[KilledBeforeMerge()], **WINDOWS)
    parts = part_paths(index)
    assert sorted(parts) == ["rank0.sqlite", "rank1.sqlite"]
    done = [p for paths in parts.values() for p in paths]
    assert sorted(done) == sorted([*GOOD, "broken.mp4"])  # every file exactly once, no padding repeats
    assert len(parts["rank0.sqlite"]) == 3 and len(parts["rank1.sqlite"]) == 3
    assert not catalog_content(index)[0]  # nothing merged yet

    report = index_distributed(model, videos, index, workers=0, accelerator="cpu", devices=1, progress=False,
                               **WINDOWS)
    assert (report.new, report.changed, report.unchanged, report.removed) == (0, 0, 5, 0)  # merged, not redone
    assert (report.videos, [p for p, _ in report.failed]) == (5, ["broken.mp4"])
    assert_same_index(index, root / "reference")


def test_killed_mid_run_resumes_without_redoing_and_updates_incrementally(world, tmp_path):
    root, model, videos = world
    videos = Path(shutil.copytree(videos, tmp_path / "videos"))  # same sizes and mtimes; one file is added
    index = tmp_path / "index"
    with pytest.raises(RuntimeError, match="killed after 2 videos"):
        index_distributed(model, videos, index, workers=0, accelerator="cpu", devices=1, strategy=None,
                          progress=False, callbacks=[KilledAfter(2)], **WINDOWS)
    left = part_paths(index)["rank0.sqlite"]
    assert left == ["a.mp4", "broken.mp4"]  # the first two of the sorted to-do list, in one transaction each
    (index / PARTS_DIR / "rank7.sqlite").write_bytes(b"half-created by a rank killed at once" * 20)

    report = index_distributed(model, videos, index, workers=1, accelerator="cpu", devices=1, progress=False,
                               **WINDOWS)
    assert (report.new, report.unchanged) == (4, 1)  # a.mp4 (and the broken file) merged, not redone
    assert_same_index(index, root / "reference")
    before = indexed_at(index)

    write_video(videos / "sub" / "new.mp4", 99, 35)
    report = index_distributed(model, videos, index, workers=0, accelerator="cpu", devices=1, progress=False,
                               **WINDOWS)
    assert (report.new, report.changed, report.unchanged, report.videos) == (1, 0, 5, 6)
    after = indexed_at(index)
    assert {p: after[p] for p in before} == before  # the others were not embedded again


def torchrun_index(model: Path, videos: Path, index: Path) -> str:
    """``videolang index`` in 2 processes started by torchrun; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "videolang.cli.main", "index", str(model), str(videos), str(index), "--devices", "2",
         "--accelerator", "cpu", "--window", "2", "--stride", "1", "--workers", "1", "--quiet"],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summaries = [line for line in done.stdout.splitlines() if line.startswith("index ")]
    assert len(summaries) == 1, done.stdout  # rank 0 prints, the other rank does not
    return summaries[0]


def test_cli_under_torchrun_adds_one_video_to_a_single_process_index(world, tmp_path):
    """One new video for two processes (the other rank idles: no repeat), after the
    single-process command indexed the rest: the reference index, exactly."""
    root, model, videos = world
    copy = Path(shutil.copytree(videos, tmp_path / "videos", ignore=shutil.ignore_patterns("e.mp4")))
    index = tmp_path / "index"
    build_index(model, copy, index, workers=0, progress=False, **WINDOWS)
    before = indexed_at(index)
    shutil.copy2(videos / "sub" / "deep" / "e.mp4", copy / "sub" / "deep" / "e.mp4")  # same size and mtime

    summary = torchrun_index(model, copy, index)
    assert "5 videos" in summary and "(1 new, 0 changed, 4 unchanged, 0 removed, 1 unreadable)" in summary
    assert_same_index(index, root / "reference")
    after = indexed_at(index)
    assert {p: after[p] for p in before} == before  # the others were not embedded again
