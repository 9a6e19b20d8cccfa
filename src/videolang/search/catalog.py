"""The index's metadata and vectors of record: one SQLite file (``index.sqlite``).

Tables ``meta``, ``videos``, ``windows`` (embedding and JPEG thumbnail per window) and
``failures``. Every video is written in one transaction with all its windows, so a killed run
leaves whole videos only; ``generation`` grows with every change and the faiss file records the
generation it reflects. Table layout: docs/search.md ("The index folder").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videolang.errors import StoreError

__all__ = ["CATALOG_FILE", "PARTS_DIR", "Catalog", "VideoRecord", "WindowRecord", "merge_parts", "part_path"]

log = logging.getLogger(__name__)

CATALOG_FILE = "index.sqlite"
FORMAT, VERSION = "videolang-index", 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, duration REAL, fps REAL, width INTEGER, height INTEGER, num_frames INTEGER,
    indexed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY, video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    start REAL NOT NULL, "end" REAL NOT NULL, embedding BLOB NOT NULL, thumbnail BLOB);
CREATE INDEX IF NOT EXISTS windows_by_video ON windows(video_id);
CREATE TABLE IF NOT EXISTS failures (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, reason TEXT NOT NULL, at REAL NOT NULL);
"""


@dataclass
class WindowRecord:
    """One time window of a video: seconds, its embedding and a thumbnail (JPEG bytes)."""

    start: float
    end: float
    embedding: np.ndarray
    thumbnail: bytes | None = None


@dataclass
class VideoRecord:
    """One indexed video file (``path`` relative to the indexed folder, POSIX separators)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    duration: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    num_frames: int = 0
    id: int | None = None


_VIDEO_COLUMNS = "id, path, size, mtime_ns, sha256, duration, fps, width, height, num_frames"


def _video_record(r: tuple) -> VideoRecord:
    """A ``videos`` row selected as ``_VIDEO_COLUMNS``."""
    return VideoRecord(id=r[0], path=r[1], size=r[2], mtime_ns=r[3], sha256=r[4], duration=r[5], fps=r[6],
                       width=r[7], height=r[8], num_frames=r[9])


class Catalog:
    """The SQLite catalog of an index folder (see the module docstring).

    Writers hold it for a run; readers (search, the server) open it read-only. ``check_same_thread``
    is off so a server's worker threads can share one read-only connection under a lock.
    """

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False):
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise StoreError(f"{self.path}: no index here (run `videolang index` first)")
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        try:
            self.db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the index catalog ({exc})") from None
        self.readonly = readonly
        self.db.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            # WAL: readers (a running server) see the last committed state while a run writes.
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.executescript(_SCHEMA)
            if self.get_meta("format") is None:
                self.set_meta("format", FORMAT)
                self.set_meta("version", VERSION)
                self.set_meta("generation", 0)
        if self.get_meta("format") != FORMAT:
            raise StoreError(f"{self.path}: not a videolang index (format {self.get_meta('format')!r})")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: committed on success, rolled back on any error (or never, if killed)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta --------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", 0))

    def _bump(self, db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    # -- videos ------------------------------------------------------------------------------

    def videos(self) -> dict[str, VideoRecord]:
        """Every indexed video by relative path."""
        return {r[1]: _video_record(r) for r in self.db.execute(f"SELECT {_VIDEO_COLUMNS} FROM videos")}

    def video(self, video_id: int) -> VideoRecord | None:
        r = self.db.execute(f"SELECT {_VIDEO_COLUMNS} FROM videos WHERE id = ?", (int(video_id),)).fetchone()
        return None if r is None else _video_record(r)

    def video_at(self, path: str) -> VideoRecord | None:
        """The indexed video at ``path`` (relative to the indexed folder, POSIX separators)."""
        r = self.db.execute(f"SELECT {_VIDEO_COLUMNS} FROM videos WHERE path = ?", (path,)).fetchone()
        return None if r is None else _video_record(r)

    def failures(self) -> dict[str, tuple[int, int, str]]:
        """``path -> (size, mtime_ns, reason)`` of files that could not be indexed."""
        return {r[0]: (r[1], r[2], r[3]) for r in self.db.execute("SELECT path, size, mtime_ns, reason FROM failures")}

    def put_video(self, video: VideoRecord, windows: list[WindowRecord]) -> int:
        """Insert (or replace) one video with all its windows, in one transaction."""
        with self.transaction() as db:
            db.execute("DELETE FROM videos WHERE path = ?", (video.path,))
            db.execute("DELETE FROM failures WHERE path = ?", (video.path,))
            cur = db.execute(
                "INSERT INTO videos (path, size, mtime_ns, sha256, duration, fps, width, height, num_frames, "
                "indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (video.path, video.size, video.mtime_ns, video.sha256, video.duration, video.fps, video.width,
                 video.height, video.num_frames, time.time()))
            vid = int(cur.lastrowid)
            db.executemany(
                'INSERT INTO windows (video_id, start, "end", embedding, thumbnail) VALUES (?, ?, ?, ?, ?)',
                [(vid, float(w.start), float(w.end), np.ascontiguousarray(w.embedding, dtype=np.float32).tobytes(),
                  w.thumbnail) for w in windows])
            self._bump(db)
        return vid

    def put_failure(self, path: str, size: int, mtime_ns: int, reason: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM videos WHERE path = ?", (path,))
            db.execute("INSERT OR REPLACE INTO failures (path, size, mtime_ns, reason, at) VALUES (?, ?, ?, ?, ?)",
                       (path, size, mtime_ns, reason, time.time()))
            self._bump(db)

    def touch(self, path: str, mtime_ns: int) -> None:
        """A file whose content did not change but whose mtime did."""
        with self.transaction() as db:
            db.execute("UPDATE videos SET mtime_ns = ? WHERE path = ?", (mtime_ns, path))

    def remove(self, paths: list[str]) -> None:
        """Forget files that are gone (their windows go with them)."""
        if not paths:
            return
        with self.transaction() as db:
            db.executemany("DELETE FROM videos WHERE path = ?", [(p,) for p in paths])
            db.executemany("DELETE FROM failures WHERE path = ?", [(p,) for p in paths])
            self._bump(db)

    # -- windows -----------------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """``(videos, windows)``."""
        videos = self.db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]
        windows = self.db.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
        return int(videos), int(windows)

    def embeddings(self, dim: int, batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (N,) int64, embeddings (N, dim) float32)`` of every window, in id order."""
        n = self.counts()[1]
        ids = np.empty(n, dtype=np.int64)
        out = np.empty((n, dim), dtype=np.float32)
        cur = self.db.execute("SELECT id, embedding FROM windows ORDER BY id")
        i = 0
        while rows := cur.fetchmany(batch):
            for wid, blob in rows:
                ids[i] = wid
                out[i] = np.frombuffer(blob, dtype=np.float32)
                i += 1
        return ids[:i], out[:i]

    def windows_by_id(self, ids: list[int]) -> dict[int, tuple[int, str, float, float]]:
        """``window id -> (video id, video path, start, end)``."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f'SELECT w.id, v.id, v.path, w.start, w."end" FROM windows w JOIN videos v ON v.id = w.video_id '
            f"WHERE w.id IN ({marks})", [int(i) for i in ids]).fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def windows_of(self, video_id: int) -> list[tuple[int, float, float]]:
        return [(r[0], r[1], r[2]) for r in self.db.execute(
            'SELECT id, start, "end" FROM windows WHERE video_id = ? ORDER BY start', (int(video_id),))]

    def thumbnail(self, window_id: int) -> bytes | None:
        row = self.db.execute("SELECT thumbnail FROM windows WHERE id = ?", (int(window_id),)).fetchone()
        return None if row is None else row[0]


# --------------------------------------------------------------------------------------------
# parts: what the ranks of a distributed run write, merged into the catalog at its end

PARTS_DIR = "parts"  # inside the index folder: rank{R}.sqlite, one per rank, until merged


def part_path(index_dir: Path, rank: int) -> Path:
    return Path(index_dir) / PARTS_DIR / f"rank{rank}.sqlite"


def merge_parts(catalog: Catalog, parts_dir: Path, model_sha: str) -> int:
    """Move every part of ``parts_dir`` into ``catalog`` (one transaction per part) and delete
    it; the number of files (videos and failures) merged."""
    if not parts_dir.is_dir():
        return 0
    merged = 0
    parts = sorted(parts_dir.glob("rank*.sqlite"), key=lambda p: (len(p.name), p.name))
    for part in parts:
        merged += _merge_part(catalog, part, model_sha)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{part}{suffix}").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        parts_dir.rmdir()
    return merged


def _part_model(part: Path) -> str | None:
    """The SHA-256 of the model a part was made with; None when it has none or is unreadable (a
    rank killed while creating it: nothing in it yet)."""
    try:
        with contextlib.closing(sqlite3.connect(part)) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
    except sqlite3.DatabaseError:
        return None
    return None if row is None else json.loads(row[0]).get("sha256")


def _merge_part(catalog: Catalog, part: Path, model_sha: str) -> int:
    """A part's videos (with their windows) and failures replace the catalog's for those paths."""
    if _part_model(part) != model_sha:
        log.warning("%s: unreadable, or made with another model; dropped", part)
        return 0
    db = catalog.db
    db.execute("ATTACH DATABASE ? AS part", (str(part),))
    try:
        with catalog.transaction() as tx:
            paths = "SELECT path FROM part.videos UNION SELECT path FROM part.failures"
            tx.execute(f"DELETE FROM main.videos WHERE path IN ({paths})")  # their windows go too
            tx.execute(f"DELETE FROM main.failures WHERE path IN ({paths})")
            tx.execute("INSERT INTO main.videos (path, size, mtime_ns, sha256, duration, fps, width, height, "
                       "num_frames, indexed_at) SELECT path, size, mtime_ns, sha256, duration, fps, width, height, "
                       "num_frames, indexed_at FROM part.videos ORDER BY id")
            tx.execute('INSERT INTO main.windows (video_id, start, "end", embedding, thumbnail) '
                       'SELECT v.id, w.start, w."end", w.embedding, w.thumbnail FROM part.windows w '
                       "JOIN part.videos p ON p.id = w.video_id JOIN main.videos v ON v.path = p.path "
                       "ORDER BY w.id")
            tx.execute("INSERT INTO main.failures (path, size, mtime_ns, reason, at) "
                       "SELECT path, size, mtime_ns, reason, at FROM part.failures")
            merged = tx.execute(f"SELECT COUNT(*) FROM ({paths})").fetchone()[0]
            catalog._bump(tx)
        return int(merged)
    finally:
        db.execute("DETACH DATABASE part")
