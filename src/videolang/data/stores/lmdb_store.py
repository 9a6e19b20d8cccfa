"""LMDB stores: raw video bytes (ClipBERT layout) and VIMPAC frame-token archives.

Keys are the video's path relative to the corpus root without extension; values are the
container bytes, or an ``np.savez`` archive of ``tokens`` and ``label``. Readers open the
environment lazily, once per process, so a forked DataLoader worker never shares the parent's
(as the original ClipBERT loader did, undefined behaviour in LMDB). Layouts: docs/data.md
("Stores").
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from videolang.data.video import VIDEO_EXTENSIONS
from videolang.errors import StoreError
from videolang.utils.io import (
    atomic_output,
    check_complete,
    interrupted_build,
    mark_complete,
    output_lock,
)

__all__ = [
    "DEFAULT_VIDEO_EXTENSIONS",
    "LmdbTokenStore",
    "LmdbVideoStore",
    "PackReport",
    "pack_videos",
    "stored_keys",
    "write_token_lmdb",
]

log = logging.getLogger(__name__)

DEFAULT_VIDEO_EXTENSIONS: tuple[str, ...] = tuple(sorted(VIDEO_EXTENSIONS))
ERROR_LOG_NAME = "error_filepaths.log"

_PAGE = 4096
_MIN_MAP_SIZE = 16 << 20  # 16 MiB
_MAX_KEY_BYTES = 511  # LMDB's default compile-time limit


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _encode_key(key: str) -> bytes:
    kb = key.encode("utf-8")
    if not kb:
        raise StoreError("empty LMDB key")
    if len(kb) > _MAX_KEY_BYTES:
        raise StoreError(
            f"LMDB key {key!r} is {len(kb)} bytes; LMDB allows at most {_MAX_KEY_BYTES}"
        )
    return kb


class _BatchedLmdbWriter:
    """Write (key, value) pairs in batches of ``commit_every``; grow the map when it is full.

    Each pending item is kept as a *loader* (a callable returning the bytes) so that a batch can
    be replayed after ``MapFullError`` without holding its values in memory (video files are
    re-read from disk).
    """

    def __init__(self, path: Path, map_size: int, commit_every: int):
        if commit_every < 1:
            raise ValueError(f"commit_every must be >= 1, got {commit_every}")
        self.path = path
        self.map_size = max(int(map_size), _MIN_MAP_SIZE)
        self.commit_every = commit_every
        self.env = lmdb.open(
            str(path), map_size=self.map_size, subdir=True, readonly=False, lock=True,
            meminit=False, map_async=False, max_dbs=0,
        )  # fmt: skip
        self._pending: list[tuple[bytes, Callable[[], bytes]]] = []
        self._txn: lmdb.Transaction | None = None
        self.n_items = 0
        self.n_bytes = 0

    def put(self, key: bytes, value: bytes, reload: Callable[[], bytes]) -> None:
        """Write one item; ``reload()`` must give ``value`` again if the batch is replayed."""
        self._pending.append((key, reload))
        if self._txn is None:
            self._txn = self.env.begin(write=True)
        try:
            ok = self._txn.put(key, value, overwrite=False)
        except lmdb.MapFullError:
            ok = self._grow_and_replay()
        if not ok:
            raise StoreError(f"duplicate key {key.decode('utf-8', 'replace')!r} in {self.path}")
        self.n_items += 1
        self.n_bytes += len(value)
        if len(self._pending) >= self.commit_every:
            self.commit()

    def _grow_and_replay(self) -> bool:
        """Abort the open batch, double the map and write the whole batch again."""
        while True:
            assert self._txn is not None
            self._txn.abort()
            self.map_size *= 2
            log.info("LMDB map of %s is full; growing it to %d bytes", self.path, self.map_size)
            self.env.set_mapsize(self.map_size)
            self._txn = self.env.begin(write=True)
            try:
                ok = True
                for key, load in self._pending:
                    ok = self._txn.put(key, load(), overwrite=False)
                    if not ok:
                        break
                return ok
            except lmdb.MapFullError:
                continue

    def commit(self) -> None:
        """Commit the open batch (growing the map and replaying it if the commit hits the end
        of the map)."""
        while self._txn is not None:
            try:
                self._txn.commit()
            except lmdb.MapFullError as e:
                if not self._grow_and_replay():
                    raise StoreError(
                        f"duplicate key while replaying a batch into {self.path}"
                    ) from e
                continue
            self._txn = None
        self._pending = []

    def close(self) -> None:
        """Commit the open batch and close the environment."""
        self.commit()
        self.env.sync(True)
        self.env.close()

    def abort(self) -> None:
        """Drop the open batch and close the environment (used on errors)."""
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        self._pending = []
        self.env.close()


@dataclass
class PackReport:
    """What :func:`pack_videos` did.

    ``skipped`` lists ``(file path, reason)`` for every file that could not be read; the same
    paths are in ``<path>/error_filepaths.log``.
    """

    n_packed: int
    n_bytes: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    path: Path = field(default_factory=Path)

    @property
    def n_skipped(self) -> int:
        """Number of files skipped."""
        return len(self.skipped)


def _normalize_exts(extensions: Iterable[str]) -> frozenset[str]:
    out = set()
    for e in extensions:
        e = e.lower()
        out.add(e if e.startswith(".") else "." + e)
    return frozenset(out)


def _scan_videos(root: Path, extensions: frozenset[str]) -> list[tuple[str, Path]]:
    """Sorted ``(key, path)`` pairs of the video files under ``root`` (hidden entries skipped,
    symlinked folders followed once).

    Raises :class:`StoreError` naming both files when two files map to the same key.
    """
    found: dict[str, Path] = {}
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink loop, or two links to one folder
            log.warning("not descending into %s again (already packed as another path)", dirpath)
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            stem, ext = os.path.splitext(name)
            if ext.lower() not in extensions or not stem:
                continue
            path = Path(dirpath) / name
            if path.exists() and not path.is_file():  # a FIFO or device would block the reader
                log.warning("skipping %s: not a regular file", path)
                continue
            key = Path(os.path.relpath(path, root)).with_name(stem).as_posix()
            if key in found:
                raise StoreError(
                    f"duplicate key {key!r}: both {found[key]} and {path} map to it "
                    "(same name, different extension); rename or remove one of them"
                )
            found[key] = path
    return sorted(found.items())


def _default_map_size(sizes: Iterable[int]) -> int:
    # values larger than a page go to overflow pages: round each up, add a page of B-tree
    # overhead per item and a 25% margin. The writer still grows the map if this is short.
    total = sum(((s + _PAGE - 1) // _PAGE + 1) * _PAGE for s in sizes)
    return int(total * 1.25) + _MIN_MAP_SIZE


def _read_file(path: Path) -> bytes:
    return path.read_bytes()


def pack_videos(
    video_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    extensions: Iterable[str] = DEFAULT_VIDEO_EXTENSIONS,
    overwrite: bool = False,
    commit_every: int = 1000,
    progress: bool = True,
    map_size: int | None = None,
) -> PackReport:
    """Pack every video file under ``video_dir`` into a new LMDB environment at ``out_path``.

        Keys are paths relative to ``video_dir`` without the extension, with ``/`` separators
        (``vid00001``, ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01``); values are the file bytes,
        unchanged. Files and directories whose name starts with ``.`` are ignored; symbolic links are
    followed (a folder reached twice is packed once). Unreadable or
        empty files are skipped, reported in the returned :class:`PackReport` and listed (one path
        per line) in ``<out_path>/error_filepaths.log``. Two files with the same key (``a.mp4`` and
        ``a.avi``) are an error.

        The environment is built in a temporary directory next to ``out_path`` and renamed into
        place when complete (completeness marker last; a killed run's temporary is removed by the
        next one); an existing ``out_path`` is only replaced with ``overwrite=True``, and stays
        readable until then. A second writer of ``out_path`` fails at once naming the first.
        ``map_size`` defaults to the summed file sizes plus a margin and grows if it is exceeded.
    """
    root = Path(video_dir)
    if not root.is_dir():
        raise StoreError(f"video directory {root} does not exist or is not a directory")
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise StoreError(
            f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    items = _scan_videos(root, _normalize_exts(extensions))
    for key, _ in items:
        _encode_key(key)

    skipped: list[tuple[str, str]] = []
    sizes: list[int] = []
    readable: list[tuple[str, Path]] = []
    for key, path in items:
        try:
            size = path.stat().st_size
        except OSError as e:
            skipped.append((str(path), f"cannot stat: {e.strerror or e}"))
            continue
        sizes.append(size)
        readable.append((key, path))

    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        progress = False

    with output_lock(out), atomic_output(out, overwrite=overwrite, is_dir=True) as tmp:
        writer = _BatchedLmdbWriter(tmp, map_size or _default_map_size(sizes), commit_every)
        bar = (
            tqdm(total=len(readable), unit="video", desc=f"packing {out.name}")
            if progress
            else None
        )
        try:
            for key, path in readable:
                try:
                    data = path.read_bytes()
                except OSError as e:
                    skipped.append((str(path), f"cannot read: {e.strerror or e}"))
                    log.warning("skipping unreadable video %s: %s", path, e)
                    continue
                finally:
                    if bar is not None:
                        bar.update(1)
                if not data:
                    skipped.append((str(path), "empty file"))
                    log.warning("skipping empty video file %s", path)
                    continue
                # on replay (after growing the map) the file is read again: the batch's bytes
                # are not kept in memory
                writer.put(key.encode("utf-8"), data, functools.partial(_read_file, path))
                del data
        except BaseException:
            writer.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        writer.close()
        skipped.sort()
        (tmp / ERROR_LOG_NAME).write_text("".join(f"{p}\n" for p, _ in skipped), encoding="utf-8")
        mark_complete(tmp, videos=writer.n_items)
        report = PackReport(writer.n_items, writer.n_bytes, skipped, out)
    if skipped:
        log.warning("packed %d videos into %s; skipped %d (see %s)", report.n_packed, out,
                    len(skipped), out / ERROR_LOG_NAME)  # fmt: skip
    return report


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


# One environment per (process, LMDB file): py-lmdb refuses to open the same environment twice
# in a process, so every reader of one LMDB shares it (read-only environments are thread-safe).
# Entries inherited through fork() belong to the parent and are closed, never used, in the child.
_ENVS: dict[tuple[int, int], list[Any]] = {}  # file id -> [pid, env, n_users]
_ENVS_LOCK = threading.Lock()


def _reset_lock_after_fork() -> None:
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_after_fork)


def _file_id(path: Path) -> tuple[int, int]:
    st = (path / "data.mdb").stat()
    return st.st_dev, st.st_ino


def _acquire_env(path: Path) -> tuple[tuple[int, int], lmdb.Environment]:
    try:
        fid = _file_id(path)
    except OSError as e:
        raise StoreError(f"LMDB store {path} is not readable: {e}") from e
    pid = os.getpid()
    with _ENVS_LOCK:
        entry = _ENVS.get(fid)
        if entry is not None and entry[0] != pid:
            with contextlib.suppress(Exception):
                entry[1].close()  # the parent's handle: release our copy of the mapping
            del _ENVS[fid]
            entry = None
        if entry is None:
            try:
                env = lmdb.open(
                    str(path), readonly=True, lock=False, readahead=False, create=False,
                    subdir=True, meminit=False, max_readers=1024,
                )  # fmt: skip
            except lmdb.Error as e:
                raise StoreError(f"cannot open LMDB store {path}: {e}") from e
            entry = [pid, env, 0]
            _ENVS[fid] = entry
        entry[2] += 1
        return fid, entry[1]


def _release_env(fid: tuple[int, int]) -> None:
    with _ENVS_LOCK:
        entry = _ENVS.get(fid)
        if entry is None or entry[0] != os.getpid():
            return
        entry[2] -= 1
        if entry[2] <= 0:
            del _ENVS[fid]
            entry[1].close()


class _LmdbReader:
    """Read-only LMDB environment opened lazily, once per process.

    ``lock=False`` (no reader table: the environment is never written while read),
    ``readahead=False`` (random access to large values). Pickling drops the environment; the
    unpickled copy, or a forked child, opens its own on first access. Readers of the same LMDB
    in one process share one environment.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._env: lmdb.Environment | None = None
        self._fid: tuple[int, int] | None = None
        self._pid: int | None = None
        self._keys: list[str] | None = None
        if not self.path.exists():
            raise StoreError(interrupted_build(self.path) or f"LMDB store {self.path} does not exist")
        if not self.path.is_dir() or not (self.path / "data.mdb").is_file():
            raise StoreError(f"{self.path} is not an LMDB environment (no data.mdb inside)")
        # LMDBs of other tools have no marker: refuse only a build that says it is unfinished
        check_complete(self.path, "LMDB store", required=False)
        self._get_env()  # validate now, in the constructing process

    # -- environment -------------------------------------------------------------------------

    def _get_env(self) -> lmdb.Environment:
        pid = os.getpid()
        if self._env is None or self._pid != pid:
            # After a fork the inherited handle belongs to the parent: never use it here.
            self._env = None
            self._fid, env = _acquire_env(self.path)
            self._env, self._pid = env, pid
        return self._env

    @property
    def env_pid(self) -> int | None:
        """Id of the process that opened the current environment (None when closed)."""
        return self._pid if self._env is not None else None

    def close(self) -> None:
        """Release this process's environment; the next access reopens it."""
        if self._env is not None and self._pid == os.getpid() and self._fid is not None:
            _release_env(self._fid)
        self._env = None
        self._pid = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> _LmdbReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_env"] = None
        state["_pid"] = None
        state["_fid"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- mapping interface -------------------------------------------------------------------

    @staticmethod
    def _key_bytes(key: str | bytes) -> bytes:
        return key if isinstance(key, bytes) else key.encode("utf-8")

    def _get_raw(self, key: str | bytes) -> bytes | None:
        if not isinstance(key, (str, bytes)):
            raise TypeError(f"LMDB keys are str or bytes, got {type(key).__name__}")
        kb = self._key_bytes(key)
        if not kb or len(kb) > _MAX_KEY_BYTES:
            return None
        with self._get_env().begin(buffers=False) as txn:
            return txn.get(kb)

    def keys(self) -> list[str]:
        """All keys, sorted (LMDB's byte order, which equals ``sorted()`` on the strings)."""
        if self._keys is None:
            with self._get_env().begin() as txn:
                self._keys = [
                    bytes(k).decode("utf-8") for k in txn.cursor().iternext(keys=True, values=False)
                ]
        return list(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return int(self._get_env().stat()["entries"])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, bytes)):
            return False
        return self._get_raw(key) is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def _missing(self, key: str | bytes) -> KeyError:
        return KeyError(f"key {key!r} not found in LMDB store {self.path}")


class LmdbVideoStore(_LmdbReader):
    """Read-only mapping ``key -> raw video bytes`` over a ClipBERT-layout LMDB.

    >>> store = LmdbVideoStore("msrvtt.lmdb")          # doctest: +SKIP
    >>> frames = read_frames(store["video7010"], [0, 8])  # doctest: +SKIP

    Safe to use in DataLoader workers: each process opens its own environment lazily.
    """

    def __getitem__(self, key: str | bytes) -> bytes:
        value = self._get_raw(key)
        if value is None:
            raise self._missing(key)
        return value

    def get(self, key: str | bytes, default: bytes | None = None) -> bytes | None:
        """The bytes stored under ``key``, or ``default``."""
        value = self._get_raw(key)
        return default if value is None else value


class LmdbTokenStore(_LmdbReader):
    """Read-only mapping ``key -> {"tokens": (T, h, w) int array, "label": int}`` over a VIMPAC
    token LMDB (values are uncompressed ``np.savez`` archives)."""

    def __getitem__(self, key: str | bytes) -> dict[str, Any]:
        value = self._get_raw(key)
        if value is None:
            raise self._missing(key)
        try:
            with np.load(io.BytesIO(value), allow_pickle=False) as npz:
                tokens = npz["tokens"]
                label = int(npz["label"])
        except Exception as e:
            raise StoreError(
                f"value of key {key!r} in {self.path} is not a token archive: {e}"
            ) from e
        return {"tokens": tokens, "label": label}

    def get(self, key: str | bytes, default: Any = None) -> dict[str, Any] | Any:
        """The decoded item stored under ``key``, or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default


# --------------------------------------------------------------------------------------------
# VIMPAC token writer
# --------------------------------------------------------------------------------------------


def _encode_tokens(key: str, tokens: Any, label: int) -> bytes:
    arr = np.asarray(tokens)
    if arr.ndim != 3:
        raise StoreError(f"tokens of {key!r} must have shape (T, h, w), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise StoreError(f"tokens of {key!r} must be integers, got dtype {arr.dtype}")
    if arr.dtype not in (np.int16, np.int32):
        info16 = np.iinfo(np.int16)
        fits16 = arr.size == 0 or (arr.min() >= info16.min and arr.max() <= info16.max)
        if not fits16:
            info32 = np.iinfo(np.int32)
            if arr.min() < info32.min or arr.max() > info32.max:
                raise StoreError(f"tokens of {key!r} do not fit in int32")
        arr = arr.astype(np.int16 if fits16 else np.int32)
    label_i = int(label)
    if not -(2**15) <= label_i < 2**15:
        raise StoreError(f"label {label_i} of {key!r} does not fit in int16")
    buf = io.BytesIO()
    np.savez(buf, tokens=np.ascontiguousarray(arr), label=np.asarray(label_i, dtype=np.int16))
    return buf.getvalue()


def _same(value: bytes) -> bytes:
    return value


def write_token_lmdb(
    items: Iterable[tuple[str, Any, int]],
    out_path: str | os.PathLike,
    *,
    overwrite: bool = False,
    commit_every: int = 100,
    map_size: int = 256 << 20,
    append: bool = False,
) -> PackReport:
    """Write ``(key, tokens (T, h, w) int, label)`` items as a VIMPAC-layout token LMDB.

    Tokens are stored as int16 (int32 when they do not fit or were given as int32), the label
    as a 0-d int16, both in an uncompressed ``np.savez`` archive. Built in a temporary
    directory and renamed into place; the map grows as needed. Duplicate keys are an error.
    With ``append=True`` the items go into the LMDB at ``out_path`` itself (a resumable build's
    folder: LMDB keeps every committed batch of a killed writer), created if missing.
    """
    out = Path(out_path)
    if append:
        return _write_tokens(items, out, commit_every, map_size)
    with atomic_output(out, overwrite=overwrite, is_dir=True) as tmp:
        report = _write_tokens(items, tmp, commit_every, map_size)
    return PackReport(report.n_packed, report.n_bytes, [], out)


def _write_tokens(items: Iterable[tuple[str, Any, int]], folder: Path, commit_every: int,
                  map_size: int) -> PackReport:
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "data.mdb").is_file():
        map_size = max(map_size, (folder / "data.mdb").stat().st_size * 2)
    writer = _BatchedLmdbWriter(folder, map_size, commit_every)
    try:
        for key, tokens, label in items:
            value = _encode_tokens(key, tokens, label)
            writer.put(_encode_key(key), value, functools.partial(_same, value))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return PackReport(writer.n_items, writer.n_bytes, [], folder)


def stored_keys(path: str | os.PathLike) -> set[str]:
    """The keys of the LMDB at ``path`` (empty when there is none yet): what a resumed build
    already holds."""
    path = Path(path)
    if not (path / "data.mdb").is_file():
        return set()
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True, create=False)
    try:
        with env.begin() as txn:
            return {bytes(k).decode("utf-8") for k in txn.cursor().iternext(keys=True, values=False)}
    finally:
        env.close()
