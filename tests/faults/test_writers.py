"""Killed and concurrent writers, for every store (issue 26, item 3).

Each writer runs in a child process that SIGKILLs itself in the middle of its output (no
cleanup runs). Then: the old output (or nothing) is in place, nothing half written passes a
reader, the same call resumes from the finished parts and gives what an uninterrupted run gives.
A second writer of an output fails at once naming the first (pid, host, start time).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from videolang.data.stores import lmdb_store
from videolang.data.stores.feature_store import FeatureStore, FeatureStoreWriter
from videolang.data.stores.lmdb_store import LmdbTokenStore, LmdbVideoStore, pack_videos
from videolang.data.stores.webdataset_store import WebVideoDataset, write_webdataset
from videolang.errors import StoreError
from videolang.utils.io import COMPLETE_MARKER, exclusive_lock, output_lock

SRC = str(Path(lmdb_store.__file__).parents[3])

# Deterministic data, defined once for the child processes and for this one.
DATA = """
import numpy as np
def sample(i):
    return {"__key__": f"vid{i:04d}", "mp4": bytes([i % 256]) * (300 + 37 * i), "json": {"i": i}}
def features(i):
    return np.random.default_rng(i).standard_normal((i % 5 + 1, 6)).astype(np.float32)
def codes(i):
    return np.random.default_rng(i).integers(0, 64, (3, 2, 2))
class FakeTokenizer:
    tokenizer_id, vocab_size, downsample = "fake", 64, 16
    def fingerprint(self):
        return "f" * 16
class Entry:
    def __init__(self, i):
        self.video_id, self.path, self.label = f"vid{i:04d}", f"/nowhere/{i}.mp4", i % 3
def fake_view_tokens(path, tokenizer, views, device="cpu"):
    import torch
    return [torch.from_numpy(codes(int(path.rsplit("/", 1)[1].split(".")[0])))]
"""
data: dict = {}
exec(DATA, data)  # the fixed source above

# What each writer does in a child: `{stop}` is the statement run at item STOP (SIGKILL, or
# announce and wait to be killed), `{n}` items, `{out}` the output, `{overwrite}` the flag.
WRITERS = {
    "webdataset": """
from videolang.data.stores.webdataset_store import write_webdataset
def gen():
    for i in range({n}):
        if i == {stop_at}: {stop}
        yield sample(i)
write_webdataset(gen(), {out!r}, maxcount=3, overwrite={overwrite})
""",
    "features": """
from videolang.data.stores.feature_store import FeatureStoreWriter
w = FeatureStoreWriter({out!r}, dtype="float32", shard_size=3, overwrite={overwrite}, resume=True)
for i in range({n}):
    if i == {stop_at}: {stop}
    if f"vid{{i:04d}}" not in w:
        w.add(f"vid{{i:04d}}", features(i))
w.close()
""",
    "tokens": """
from videolang.pipelines import vimpac
vimpac.view_tokens = fake_view_tokens
class Stopping(list):
    def __iter__(self):
        for i, e in enumerate(list.__iter__(self)):
            if i == {stop_at}: {stop}
            yield e
vimpac.TOKENIZE_COMMIT_EVERY = 3
vimpac.tokenize_videos(Stopping([Entry(i) for i in range({n})]), FakeTokenizer(), {out!r}, fps=5.0,
                       frame_size=32, overwrite={overwrite})
""",
    "pack": """
import pathlib
from videolang.data.stores.lmdb_store import pack_videos
read, calls = pathlib.Path.read_bytes, [0]
def counted(self):
    calls[0] += 1
    if calls[0] == {stop_at} + 1: {stop}
    return read(self)
pathlib.Path.read_bytes = counted
pack_videos({videos!r}, {out!r}, overwrite={overwrite}, progress=False, commit_every=2)
""",
}
KILL = "os.kill(os.getpid(), signal.SIGKILL)"
HOLD = "print('HOLDING', flush=True); time.sleep(120)"
N = 10


def child_code(kind: str, out: Path, *, stop: str, stop_at: int, overwrite: bool, videos: Path | None = None) -> str:
    body = WRITERS[kind].format(n=N, out=str(out), stop=stop, stop_at=stop_at, overwrite=overwrite,
                                videos=str(videos))
    return "import os, signal, time\n" + DATA + textwrap.dedent(body)


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def killed_run(kind: str, out: Path, *, stop_at: int, overwrite: bool = False, videos: Path | None = None) -> None:
    code = child_code(kind, out, stop=KILL, stop_at=stop_at, overwrite=overwrite, videos=videos)
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def write_in_process(kind: str, out: Path, *, overwrite: bool = False, videos: Path | None = None,
                     monkeypatch: pytest.MonkeyPatch | None = None, first: int = 0) -> None:
    """The same writer, uninterrupted, in this process (items ``first`` .. ``first + N - 1``)."""
    if kind == "webdataset":
        write_webdataset((data["sample"](i) for i in range(first, first + N)), out, maxcount=3, overwrite=overwrite)
    elif kind == "features":
        with FeatureStoreWriter(out, dtype="float32", shard_size=3, overwrite=overwrite, resume=True) as w:
            for i in range(first, first + N):
                if f"vid{i:04d}" not in w:
                    w.add(f"vid{i:04d}", data["features"](i))
    elif kind == "tokens":
        from videolang.pipelines import vimpac

        assert monkeypatch is not None
        monkeypatch.setattr(vimpac, "view_tokens", data["fake_view_tokens"])
        vimpac.tokenize_videos([data["Entry"](i) for i in range(first, first + N)], data["FakeTokenizer"](), out,
                               fps=5.0, frame_size=32, overwrite=overwrite)
    else:
        pack_videos(videos, out, overwrite=overwrite, progress=False)


def contents(kind: str, out: Path) -> dict:
    """What a reader gets from the output: every item, compared across runs."""
    if kind == "webdataset":
        return {s["key"]: (s["video"], s["json"]) for s in WebVideoDataset(out)}
    if kind == "features":
        store = FeatureStore(out)
        return {k: store.get(k, copy=True).tobytes() for k in store.ids}
    if kind == "tokens":
        store = LmdbTokenStore(out)
        try:
            return {k: (store[k]["tokens"].tobytes(), store[k]["label"]) for k in store}
        finally:
            store.close()
    store = LmdbVideoStore(out)
    try:
        return {k: store[k] for k in store}
    finally:
        store.close()


def folder_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


@pytest.fixture
def video_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(N):
        (folder / f"v{i:02d}.mp4").write_bytes(data["sample"](i)["mp4"])
    return folder


RESUMABLE = ["webdataset", "features", "tokens"]
ALL = [*RESUMABLE, "pack"]


@pytest.mark.parametrize("kind", ALL)
def test_killed_first_write_leaves_nothing_a_reader_accepts_and_reruns_to_the_same_output(
        kind, tmp_path, video_dir, monkeypatch):
    out, reference = tmp_path / "out", tmp_path / "reference"
    write_in_process(kind, reference, videos=video_dir, monkeypatch=monkeypatch)
    killed_run(kind, out, stop_at=7, videos=video_dir)
    assert not out.exists()  # built next to it: nothing half written under the name
    with pytest.raises(StoreError, match=r"interrupted|does not exist"):
        contents(kind, out)
    partial = tmp_path / ".out.partial"
    if kind in RESUMABLE:  # the finished parts wait for the rerun, and readers refuse them
        assert partial.is_dir()
        with pytest.raises(StoreError, match="incomplete"):
            contents(kind, partial)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out."))
    parts_kept = len([p for p in partial.rglob("*") if p.is_file()]) if partial.is_dir() else 0
    write_in_process(kind, out, videos=video_dir, monkeypatch=monkeypatch)
    assert contents(kind, out) == contents(kind, reference)
    assert (out / COMPLETE_MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")) == []  # temporaries gone
    if kind == "webdataset":  # the resumed shards are byte-identical to an uninterrupted run's
        for shard in sorted(reference.glob("*.tar")):
            assert (out / shard.name).read_bytes() == shard.read_bytes()
    print(f"\n{kind}: killed at item 7 of {N}; left {leftovers}, {parts_kept} files kept for the rerun; "
          f"result {folder_bytes(out)} bytes, equal to an uninterrupted run")


@pytest.mark.parametrize("kind", ALL)
def test_killed_overwrite_keeps_the_old_output_readable(kind, tmp_path, video_dir, monkeypatch):
    out, reference = tmp_path / "out", tmp_path / "reference"
    write_in_process(kind, out, videos=video_dir, monkeypatch=monkeypatch, first=100)
    old = contents(kind, out)
    if kind == "pack":  # new bytes under the same names
        for p in video_dir.iterdir():
            p.write_bytes(p.read_bytes() + b"new")
    write_in_process(kind, reference, videos=video_dir, monkeypatch=monkeypatch)
    killed_run(kind, out, stop_at=5, overwrite=True, videos=video_dir)
    assert contents(kind, out) == old  # the old output, whole, until the new one is complete
    write_in_process(kind, out, overwrite=True, videos=video_dir, monkeypatch=monkeypatch)
    assert contents(kind, out) == contents(kind, reference) != old


@pytest.mark.parametrize("kind", ALL)
def test_a_second_writer_fails_at_once_naming_the_first(kind, tmp_path, video_dir, monkeypatch):
    out = tmp_path / "out"
    code = child_code(kind, out, stop=HOLD, stop_at=4, overwrite=False, videos=video_dir)
    proc = subprocess.Popen([sys.executable, "-c", code], env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "HOLDING"
        holder = rf"being written by another run \(pid {proc.pid} on {socket.gethostname()} since \d{{4}}-"
        with pytest.raises(StoreError, match=holder):
            write_in_process(kind, out, overwrite=True, videos=video_dir, monkeypatch=monkeypatch)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_dead_writers_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "out"
    lock = tmp_path / ".out.lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": "2020-01-01"}))
    with caplog.at_level(logging.WARNING):
        write_webdataset([data["sample"](0)], out)
    assert f"taking over the lock of pid {int(dead.stdout)}" in caplog.text and "no longer running" in caplog.text
    assert not lock.exists() and [s["key"] for s in WebVideoDataset(out)] == ["vid0000"]


def test_the_lock_is_released_on_errors_and_refuses_a_second_holder(tmp_path):
    with pytest.raises(RuntimeError), output_lock(tmp_path / "x"):
        raise RuntimeError("writer failed")
    second = pytest.raises(StoreError, match=r"thing is being written.*pid")
    with exclusive_lock(tmp_path / "l", "thing"), second, exclusive_lock(tmp_path / "l", "thing"):
        pass


def test_resume_refuses_other_samples(tmp_path):
    out = tmp_path / "out"
    killed_run("webdataset", out, stop_at=7)
    with pytest.raises(StoreError, match="cannot resume: sample 0 is 'vid0100'"):
        write_webdataset((data["sample"](i) for i in range(100, 110)), out, maxcount=3)
    with pytest.raises(StoreError, match="other settings"):
        write_webdataset((data["sample"](i) for i in range(N)), out, maxcount=4)
    write_webdataset((data["sample"](i) for i in range(100, 110)), out, maxcount=4, overwrite=True)
    assert len(list(WebVideoDataset(out))) == N
    assert np.array_equal(sorted(s["json"]["i"] for s in WebVideoDataset(out)), np.arange(100, 110))
