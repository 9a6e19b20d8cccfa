"""Sharded, memory-mapped feature store (MMPT ``ShardedTensor`` layout).

Each shard is ``<prefix>_data.npy`` (per-video ``(T_i, D)`` rows concatenated) and
``<prefix>_starts.npy`` (offsets), so MMPT's ``ShardedTensor.load`` reads our shards;
``root/index.json`` maps ids to shards. Readers memory-map, so resident memory does not grow with
the data set; writers are atomic per shard and resume after a crash (``resume=True``). Layout:
docs/data.md ("Stores").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import shutil
import struct
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from videolang.errors import StoreError
from videolang.utils.io import (
    PartialOutput,
    atomic_output,
    atomic_write_text,
    carry_other_files,
    check_complete,
    interrupted_build,
    partial_path,
    resumable_output,
)

__all__ = ["FeatureStore", "FeatureStoreWriter", "ShardedTensor"]

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
FORMAT_NAME = "videolang-features"
FORMAT_VERSION = 1
_DTYPES = {"float16": np.dtype(np.float16), "float32": np.dtype(np.float32)}


# --------------------------------------------------------------------------------------------
# .npy helpers
# --------------------------------------------------------------------------------------------


def _save_npy(path: Path, arr: np.ndarray, *, overwrite: bool) -> None:
    """``np.save`` through a temporary file renamed onto ``path`` (fsync'ed first)."""
    with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        # write through the file object: np.save(path) would append ".npy" to the temp name
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


_HEADER_LEN = 128  # bytes; a multiple of 64 so the data stays aligned for mmap


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version-1.0 ``.npy`` header of exactly ``_HEADER_LEN`` bytes.

    Fixed size so that the header of a data file written row by row can be rewritten in place
    with the final shape once the number of rows is known.
    """
    descr = np.lib.format.dtype_to_descr(dtype)
    body = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}".encode("latin1")
    hlen = _HEADER_LEN - 10  # magic (6) + version (2) + header length (2)
    pad = hlen - len(body) - 1
    if pad < 0:  # pragma: no cover - needs > 100-digit shapes
        raise StoreError(f"shape {shape} too large for a fixed-size .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", hlen) + body + b" " * pad + b"\n"


# --------------------------------------------------------------------------------------------
# ShardedTensor
# --------------------------------------------------------------------------------------------


class ShardedTensor:
    """Variable-length items stored as one concatenated array plus offsets (MMPT layout).

    ``data`` holds the items concatenated along axis 0; ``starts`` (int64, length ``N + 1``,
    ``starts[0] == 0``, ``starts[-1] == len(data)``, non-decreasing) delimits them. Item ``i`` is
    ``data[starts[i]:starts[i + 1]]`` (a view; with a memory-mapped ``data`` it reads nothing
    until used). Empty items are allowed.
    """

    def __init__(self, data: np.ndarray, starts: np.ndarray | Sequence[int]):
        starts_arr = np.asarray(starts)
        if starts_arr.ndim != 1 or starts_arr.size < 1:
            raise StoreError(
                f"starts must be a 1-D array of N+1 offsets, got shape {starts_arr.shape}"
            )
        if starts_arr.size and not np.issubdtype(starts_arr.dtype, np.integer):
            raise StoreError(f"starts must be integers, got dtype {starts_arr.dtype}")
        if int(starts_arr[0]) != 0:
            raise StoreError(f"starts[0] must be 0, got {int(starts_arr[0])}")
        if int(starts_arr[-1]) != len(data):
            raise StoreError(f"starts[-1] = {int(starts_arr[-1])} but data has {len(data)} rows")
        diffs = np.diff(starts_arr)
        if diffs.size and diffs.min() < 0:
            bad = int(np.argmax(diffs < 0))
            raise StoreError(f"starts must be non-decreasing; starts[{bad + 1}] < starts[{bad}]")
        self.data = data
        self.starts = starts_arr.astype(np.int64, copy=False)

    @classmethod
    def from_list(cls, arrays: Sequence[np.ndarray], dtype: Any = None) -> ShardedTensor:
        """Concatenate ``arrays`` (same trailing shape) into one ShardedTensor."""
        arrays = [np.asarray(a) for a in arrays]
        starts = np.zeros(len(arrays) + 1, dtype=np.int64)
        if arrays:
            np.cumsum([len(a) for a in arrays], out=starts[1:])
            data = np.concatenate(arrays, axis=0)
            if dtype is not None:
                data = data.astype(dtype, copy=False)
        else:
            data = np.zeros((0,), dtype=dtype or np.float32)
        return cls(data, starts)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"item {i} out of range for a ShardedTensor of {n} items")
        return self.data[self.starts[i] : self.starts[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def lengths(self) -> np.ndarray:
        """Number of rows of every item (int64, length N)."""
        return np.diff(self.starts)

    def save(self, prefix: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write ``<prefix>_data.npy`` and ``<prefix>_starts.npy``, each atomically.

        ``prefix`` is concatenated with the suffixes, as in MMPT (not joined as a directory).
        """
        p = os.fspath(prefix)
        _save_npy(Path(p + "_data.npy"), np.asarray(self.data), overwrite=overwrite)
        _save_npy(Path(p + "_starts.npy"), self.starts, overwrite=overwrite)

    @classmethod
    def load(cls, prefix: str | os.PathLike, mmap_mode: str | None = "r") -> ShardedTensor:
        """Open ``<prefix>_{data,starts}.npy``; ``data`` is memory-mapped with ``mmap_mode``
        (``None`` reads it into memory); the small ``starts`` array is always read."""
        p = os.fspath(prefix)
        data_path, starts_path = p + "_data.npy", p + "_starts.npy"
        for f in (data_path, starts_path):
            if not os.path.isfile(f):
                raise StoreError(f"sharded tensor file {f} does not exist")
        try:
            data = np.load(data_path, mmap_mode=mmap_mode, allow_pickle=False)
            starts = np.load(starts_path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise StoreError(f"cannot read sharded tensor {p}_{{data,starts}}.npy: {e}") from e
        try:
            return cls(data, starts)
        except StoreError as e:
            raise StoreError(f"malformed sharded tensor {p}_{{data,starts}}.npy: {e}") from e

    def __repr__(self) -> str:
        return f"ShardedTensor(n={len(self)}, data={self.data.shape} {self.data.dtype})"


# --------------------------------------------------------------------------------------------
# index.json
# --------------------------------------------------------------------------------------------


def _read_index(root: Path, *, complete: bool = True) -> dict[str, Any]:
    """The store's index, checked; ``complete``: refuse a store whose build did not finish."""
    path = root / INDEX_NAME
    if not root.exists():
        raise StoreError(interrupted_build(root) or f"feature store {root} does not exist")
    if not path.is_file():
        raise StoreError(f"{root} is not a feature store: {INDEX_NAME} is missing")
    if complete:
        check_complete(root, "feature store")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read {path}: {e}") from e
    if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
        raise StoreError(f"{path} is not a {FORMAT_NAME} index (format field missing or wrong)")
    if index.get("version") != FORMAT_VERSION:
        raise StoreError(
            f"{path} has version {index.get('version')!r}; this reader supports {FORMAT_VERSION}"
        )
    if index.get("dtype") not in _DTYPES:
        raise StoreError(f"{path}: unsupported dtype {index.get('dtype')!r}")
    shards = index.get("shards")
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and isinstance(s.get("prefix"), str) and isinstance(s.get("ids"), list)
        for s in shards
    ):
        raise StoreError(f"{path}: 'shards' must be a list of {{prefix, ids}} objects")
    return index


def _shard_files(prefix: Path) -> tuple[Path, Path]:
    return Path(f"{prefix}_data.npy"), Path(f"{prefix}_starts.npy")


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------


class _Abort(Exception):
    """Thrown into an open ``atomic_output`` to discard its temporary file."""


class _OpenShard:
    """The shard being written: rows streamed to a temporary ``.npy`` with a fixed header."""

    def __init__(self, prefix: Path, dtype: np.dtype, dim: int):
        self.prefix = prefix
        self.dtype = dtype
        self.dim = dim
        self.data_path, self.starts_path = _shard_files(prefix)
        self._cm = atomic_output(self.data_path)
        tmp = self._cm.__enter__()
        try:
            self.f: BinaryIO = open(tmp, "wb")  # noqa: SIM115 - kept open across add() calls
            self.f.write(_npy_header(dtype, (0, dim)))
        except BaseException:
            self._cm.__exit__(_Abort, _Abort(), None)
            raise
        self.starts: list[int] = [0]
        self.ids: list[str] = []

    def append(self, video_id: str, rows: np.ndarray) -> None:
        pos = self.f.tell()
        try:
            self.f.write(np.ascontiguousarray(rows).reshape(-1).view(np.uint8))  # no copy
        except BaseException:
            # e.g. disk full: drop the partial rows so the shard stays consistent
            self.f.seek(pos)
            self.f.truncate()
            raise
        self.starts.append(self.starts[-1] + len(rows))
        self.ids.append(video_id)

    def finish(self) -> None:
        """Write the real header, rename the data file into place, write the starts file."""
        try:
            self.f.seek(0)
            self.f.write(_npy_header(self.dtype, (self.starts[-1], self.dim)))
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
        except BaseException:
            self.abort()
            raise
        self._cm.__exit__(None, None, None)  # rename onto <prefix>_data.npy
        _save_npy(self.starts_path, np.asarray(self.starts, dtype=np.int64), overwrite=False)

    def abort(self) -> None:
        """Close and delete the temporary data file."""
        if not self.f.closed:
            self.f.close()
        self._cm.__exit__(_Abort, _Abort(), None)


class FeatureStoreWriter:
    """Write per-video ``(T, D)`` feature arrays into a sharded store at ``root``.

    ``dtype`` is ``"float16"`` (MMPT's S3D features) or ``"float32"``; ``D`` is fixed by the first
    array. The store is built in ``.<name>.partial`` next to ``root`` (:attr:`folder`), under a
    lock that fails a second writer at once, and swapped in by :meth:`close` with its
    completeness marker, so readers never see it half written. Every ``shard_size`` videos, or
    ``flush_seconds`` after a shard was opened, the shard is completed: a crash loses at most
    that shard, and ``resume=True`` goes on from the finished ones.

    An existing store is refused unless ``overwrite=True`` (the new one replaces it when
    complete; other files in ``root`` are carried over) or ``resume=True`` (ids already stored
    are known to :meth:`__contains__`, new videos go to new shards; ``dtype``/``name`` default to
    the stored ones). ``resume=True`` on a missing store creates it; with ``overwrite=True`` too
    it resumes an interrupted replacement.

    Use as a context manager or call :meth:`close`; leaving the ``with`` block by an exception
    discards the unfinished shard and keeps the completed ones for a rerun with ``resume=True``.

    >>> with FeatureStoreWriter("feats", dtype="float16") as w:   # doctest: +SKIP
    ...     for vid, feats in extract():
    ...         if vid not in w:
    ...             w.add(vid, feats)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        name: str | None = None,
        dtype: str | None = None,
        shard_size: int = 256,
        flush_seconds: float | None = 60.0,
        overwrite: bool = False,
        resume: bool = False,
    ):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
        if name is not None and (not name or "/" in name or os.sep in name or name.startswith(".")):
            raise ValueError(f"invalid store name {name!r}")
        self.root = Path(root)
        self.shard_size = shard_size
        self.flush_seconds = flush_seconds
        self._shards: list[dict[str, Any]] = []
        self._known: set[str] = set()
        self.dim: int | None = None
        self._cur: _OpenShard | None = None
        self._closed = False
        self._build = contextlib.ExitStack()
        part = self._open_build(overwrite, resume)
        self.folder, self.resumed = part.path, part.resumed
        self._index_path = self.folder / INDEX_NAME
        self._added = 0
        try:
            self._load_state(name, dtype)
            self._remove_stale_temporaries()
            self._next_k = self._first_free_shard_number()
            self._write_index()
        except BaseException:
            self.abort()
            raise

    # -- setup helpers -----------------------------------------------------------------------

    def _open_build(self, overwrite: bool, resume: bool) -> PartialOutput:
        """Lock the store and open its build folder (resumed, extending the store, or fresh)."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"feature store path {self.root} exists and is not a directory")
        has_index = (self.root / INDEX_NAME).exists()
        if has_index and not (overwrite or resume):
            raise StoreError(f"{self.root} already holds a feature store; pass overwrite=True to replace it "
                             "or resume=True to add to it")
        if self.root.is_dir() and not has_index and not overwrite and any(self.root.iterdir()):
            raise StoreError(f"{self.root} is not empty and is not a feature store; "
                             "pass overwrite=True to write into it anyway")
        partial = partial_path(self.root)
        if partial.is_dir() and not (resume or overwrite):
            raise StoreError(f"an interrupted build of {self.root} is in {partial}: pass resume=True to go on "
                             "from its finished shards, or overwrite=True to start over")
        extend = has_index and resume and not overwrite
        own = re.compile(rf".+_\d+_(?:data|starts)\.npy|{re.escape(INDEX_NAME)}|{re.escape(EXTRACTION_INFO_NAME)}")
        seed = carry_other_files(self.root, lambda n: not extend and bool(own.fullmatch(n)))
        settings = {"format": FORMAT_NAME, "extends_old_store": extend}
        return self._build.enter_context(resumable_output(self.root, settings, overwrite=overwrite, resume=resume,
                                                          seed=seed if self.root.is_dir() else None))

    def _load_state(self, name: str | None, dtype: str | None) -> None:
        """Take the finished shards of a resumed or extended build (checking ``name`` and
        ``dtype`` against them), or start an empty store."""
        if self._index_path.is_file():
            index = _read_index(self.folder, complete=False)
            for key, given in (("dtype", dtype), ("name", name)):
                if given is not None and given != index[key]:
                    raise StoreError(
                        f"cannot resume {self.root}: it holds {key}={index[key]!r}, got {given!r}"
                    )
            self.name: str = index["name"]
            self.dtype_name: str = index["dtype"]
            self.dim = index.get("dim")
            self._shards = [dict(s) for s in index["shards"]]
            for s in self._shards:
                self._known.update(s["ids"])
        else:
            self.name = name or "features"
            self.dtype_name = dtype or "float16"
        self.dtype = _DTYPES[self.dtype_name]

    def _shard_re(self, name: str) -> re.Pattern[str]:
        return re.compile(rf"{re.escape(name)}_(\d+)_(?:data|starts)\.npy")

    def _remove_stale_temporaries(self) -> None:
        """Delete temporary shard files left by a writer that was killed (they can be large)."""
        pat = re.compile(rf"\.{re.escape(self.name)}_\d+_(?:data|starts)\.npy\..+\.tmp")
        for p in self.folder.iterdir():
            if pat.fullmatch(p.name) and p.is_file():
                log.info("removing %s, left by an interrupted writer", p)
                p.unlink()

    def _first_free_shard_number(self) -> int:
        used = [-1]
        pat = self._shard_re(self.name)
        for s in self._shards:
            m = re.fullmatch(rf"{re.escape(self.name)}_(\d+)", s["prefix"])
            if m:
                used.append(int(m.group(1)))
        listed = {s["prefix"] for s in self._shards}
        orphans = []
        for p in self.folder.iterdir():
            m = pat.fullmatch(p.name)
            if m:
                used.append(int(m.group(1)))
                if f"{self.name}_{m.group(1)}" not in listed:
                    orphans.append(p.name)
        if orphans:
            log.warning(
                "%s: ignoring shard files not listed in %s (left by an interrupted run): %s",
                self.root, INDEX_NAME, ", ".join(sorted(orphans)),
            )  # fmt: skip
        return max(used) + 1

    def _write_index(self) -> None:
        index = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "dim": self.dim,
            "dtype": self.dtype_name,
            "name": self.name,
            "shard_size": self.shard_size,
            "n_items": sum(len(s["ids"]) for s in self._shards),
            "shards": self._shards,
        }
        atomic_write_text(self._index_path, json.dumps(index, ensure_ascii=False), overwrite=True)

    # -- public API --------------------------------------------------------------------------

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._known

    def __len__(self) -> int:
        """Number of videos added so far (completed shards and the open one)."""
        return len(self._known)

    def add(self, video_id: str, array: np.ndarray) -> None:
        """Append the ``(T, D)`` features of ``video_id`` (``T`` may be 0).

        Raises :class:`StoreError` naming the id if it is already stored, if ``D`` differs from
        the store's, or if the array holds NaN/inf (or values that overflow float16).
        """
        if self._closed:
            raise StoreError(f"feature store writer for {self.root} is closed")
        if not isinstance(video_id, str) or not video_id:
            raise StoreError(f"video ids must be non-empty strings, got {video_id!r}")
        if video_id in self._known:
            raise StoreError(f"video {video_id!r} is already in feature store {self.root}")
        arr = np.asarray(array)
        if arr.ndim != 2:
            raise StoreError(f"features of {video_id!r} must have shape (T, D), got {arr.shape}")
        if arr.dtype == np.bool_ or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        ):
            raise StoreError(
                f"features of {video_id!r} must be real numbers, got dtype {arr.dtype}"
            )
        if self.dim is None:
            if arr.shape[1] < 1:
                raise StoreError(f"features of {video_id!r} have dimension 0")
            self.dim = int(arr.shape[1])
        elif arr.shape[1] != self.dim:
            raise StoreError(
                f"features of {video_id!r} have dimension {arr.shape[1]}, store {self.root} has {self.dim}"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(self.dtype, copy=False)
        if not np.isfinite(out).all():
            n_bad = (
                int(arr.size - np.isfinite(arr).sum())
                if np.issubdtype(arr.dtype, np.floating)
                else 0
            )
            if n_bad:
                raise StoreError(f"features of {video_id!r} contain {n_bad} NaN/inf values")
            raise StoreError(
                f"features of {video_id!r} overflow {self.dtype_name} (|x| > {np.finfo(self.dtype).max})"
            )
        if self._cur is None:
            self._cur = _OpenShard(self.folder / f"{self.name}_{self._next_k}", self.dtype, self.dim)
            self._opened = time.monotonic()
        self._cur.append(video_id, out)
        self._known.add(video_id)
        self._added += 1
        overdue = self.flush_seconds is not None and time.monotonic() - self._opened >= self.flush_seconds
        if len(self._cur.ids) >= self.shard_size or overdue:
            self.flush()

    def flush(self) -> None:
        """Complete the open shard now (it may hold fewer than ``shard_size`` videos)."""
        cur, self._cur = self._cur, None
        if cur is None:
            return
        try:
            cur.finish()
        except BaseException:
            # the build keeps its completed shards; reopen with resume=True to go on
            self._known.difference_update(cur.ids)
            self._end_build(failed=True)
            raise
        self._shards.append({"prefix": cur.prefix.name, "ids": cur.ids, "n_rows": cur.starts[-1]})
        self._next_k += 1
        self._write_index()

    def abort(self) -> None:
        """Discard the open shard (completed shards stay) and close the writer."""
        cur, self._cur = self._cur, None
        if cur is not None:
            self._known.difference_update(cur.ids)
            cur.abort()
        self._end_build(failed=True)

    def close(self) -> None:
        """Complete the open shard, swap the finished store in and close the writer (idempotent)."""
        if self._closed:
            return
        self.flush()
        self._write_index()
        self._end_build(failed=False)

    def _end_build(self, *, failed: bool) -> None:
        """Release the build: swapped in when complete, else kept for a rerun (dropped when this
        writer neither resumed it nor added anything: nothing would be lost)."""
        if self._closed:
            return
        self._closed = True
        if not failed:
            self._build.close()
            return
        discard = not self.resumed and not self._added
        self._build.__exit__(StoreError, StoreError("writer aborted"), None)
        if discard:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        cur = getattr(self, "_cur", None)
        if cur is not None:
            warnings.warn(
                f"FeatureStoreWriter for {self.root} was not closed; discarding "
                f"{len(cur.ids)} unflushed videos",
                ResourceWarning,
                stacklevel=1,
            )
            with contextlib.suppress(Exception):
                self.abort()


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------


class _MetaUnpickler(pickle.Unpickler):
    """Unpickler for MMPT ``*_meta.pkl`` files: plain containers, strings and numbers only."""

    _ALLOWED = frozenset(
        {
            ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"),
            ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "str"),
            ("builtins", "int"), ("builtins", "bytes"), ("collections", "OrderedDict"),
            ("numpy", "dtype"), ("numpy", "ndarray"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        }
    )  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a meta file")


def _as_id(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8")
    return str(x)


class _Shard:
    __slots__ = ("data_path", "ids", "starts_path")

    def __init__(self, prefix: Path, ids: list[str]):
        self.data_path, self.starts_path = _shard_files(prefix)
        self.ids = ids


class FeatureStore:
    """Read-only mapping ``video_id -> (T, D) array`` over sharded memory-mapped features.

    ``store[video_id]`` returns a **read-only view** into the memory-mapped shard (no copy: the
    rows are paged in when first used); it keeps the mapping alive by itself, even after
    :meth:`close`. Use ``store.get(video_id, copy=True)`` or ``np.array(x)`` for a writable copy
    (``torch.from_numpy`` wants one). With ``mmap=False`` a shard is read into memory the first
    time one of its videos is requested, and views of it are returned (also read-only).

    Shards are opened lazily and cached per store object; pickling drops the cache, so the store
    can be handed to DataLoader workers (forked or spawned).

    Alternative layouts with the same interface: :meth:`from_mmpt` (MMPT's pretraining shards
    with ``<split>_meta.pkl``) and :meth:`from_npy_dir` (one ``<video_id>.npy`` per video).
    """

    def __init__(self, root: str | os.PathLike, mmap: bool = True):
        self.root = Path(root)
        index = _read_index(self.root)
        shards = [
            _Shard(self.root / s["prefix"], [_as_id(i) for i in s["ids"]]) for s in index["shards"]
        ]
        self._setup(shards, mmap=mmap, dim=index.get("dim"), dtype=_DTYPES[index["dtype"]])

    # -- construction ------------------------------------------------------------------------

    def _setup(
        self,
        shards: list[_Shard] | None,
        *,
        mmap: bool,
        dim: int | None,
        dtype: np.dtype | None,
        npy_ids: list[str] | None = None,
    ) -> None:
        self.mmap = mmap
        self._shards = shards
        self._npy_ids = npy_ids
        self._dim = dim
        self._dtype = dtype
        self._loc: dict[str, tuple[int, int]] = {}
        self._data: dict[int, np.ndarray] = {}
        self._starts: dict[int, np.ndarray] = {}
        if shards is not None:
            for k, s in enumerate(shards):
                for i, vid in enumerate(s.ids):
                    if vid in self._loc:
                        raise StoreError(
                            f"video {vid!r} appears twice in feature store {self.root}"
                        )
                    self._loc[vid] = (k, i)
        else:
            assert npy_ids is not None
            self._loc = {vid: (i, 0) for i, vid in enumerate(npy_ids)}

    @classmethod
    def from_mmpt(cls, vfeat_dir: str | os.PathLike, split: str, mmap: bool = True) -> FeatureStore:
        """Open MMPT's sharded video features: ``<vfeat_dir>/<split>_meta.pkl`` (``{shard_k:
        [video_id, ...]}``) and ``<vfeat_dir>/<split>_<k>_{data,starts}.npy``."""
        root = Path(vfeat_dir)
        meta_path = root / f"{split}_meta.pkl"
        if not meta_path.is_file():
            raise StoreError(f"MMPT meta file {meta_path} does not exist")
        try:
            with open(meta_path, "rb") as f:
                meta = _MetaUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError, OSError) as e:
            raise StoreError(f"cannot read MMPT meta file {meta_path}: {e}") from e
        if not isinstance(meta, dict):
            raise StoreError(f"{meta_path} must hold a dict {{shard_k: [video_id, ...]}}")
        shards = []
        for k in sorted(meta, key=int):
            shards.append(_Shard(root / f"{split}_{int(k)}", [_as_id(v) for v in meta[k]]))
        obj = cls.__new__(cls)
        obj.root = root
        obj._setup(shards, mmap=mmap, dim=None, dtype=None)
        return obj

    @classmethod
    def from_npy_dir(cls, directory: str | os.PathLike, mmap: bool = True) -> FeatureStore:
        """Open a directory of per-video ``<video_id>.npy`` files, each ``(T, D)`` (MMPT's
        downstream layout). Files are mapped on access and not kept open."""
        root = Path(directory)
        if not root.is_dir():
            raise StoreError(f"feature directory {root} does not exist or is not a directory")
        ids = sorted(
            p.name[:-4]
            for p in root.iterdir()
            if p.name.endswith(".npy") and not p.name.startswith(".")
        )
        obj = cls.__new__(cls)
        obj.root = root
        obj._setup(None, mmap=mmap, dim=None, dtype=None, npy_ids=ids)
        return obj

    # -- loading -----------------------------------------------------------------------------

    def _shard_starts(self, k: int) -> np.ndarray:
        starts = self._starts.get(k)
        if starts is None:
            assert self._shards is not None
            s = self._shards[k]
            if not s.starts_path.is_file():
                raise StoreError(
                    f"shard file {s.starts_path} of feature store {self.root} is missing"
                )
            try:
                starts = np.load(s.starts_path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise StoreError(f"cannot read {s.starts_path}: {e}") from e
            if starts.ndim != 1 or len(starts) != len(s.ids) + 1:
                raise StoreError(
                    f"{s.starts_path} has {len(starts)} offsets; its shard lists {len(s.ids)} videos "
                    f"(expected {len(s.ids) + 1})"
                )
            starts = starts.astype(np.int64, copy=False)
            self._starts[k] = starts
        return starts

    def _shard_data(self, k: int) -> np.ndarray:
        data = self._data.get(k)
        if data is None:
            assert self._shards is not None
            s = self._shards[k]
            if not s.data_path.is_file():
                raise StoreError(
                    f"shard file {s.data_path} of feature store {self.root} is missing"
                )
            try:
                data = np.load(
                    s.data_path, mmap_mode="r" if self.mmap else None, allow_pickle=False
                )
            except (ValueError, OSError, EOFError) as e:
                raise StoreError(f"cannot read {s.data_path}: {e}") from e
            if data.ndim != 2:
                raise StoreError(f"{s.data_path} must hold a 2-D (rows, D) array, got {data.shape}")
            starts = self._shard_starts(k)
            if int(starts[-1]) != len(data):
                raise StoreError(
                    f"{s.starts_path} ends at row {int(starts[-1])}; {s.data_path} has {len(data)}"
                )
            if not self.mmap:
                data.flags.writeable = False
            self._data[k] = data
        return data

    def _load_npy(self, video_id: str) -> np.ndarray:
        path = self.root / f"{video_id}.npy"
        try:
            arr = np.load(path, mmap_mode="r" if self.mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise StoreError(f"cannot read feature file {path}: {e}") from e
        if arr.ndim != 2:
            raise StoreError(f"feature file {path} must hold a (T, D) array, got shape {arr.shape}")
        if not self.mmap:
            arr.flags.writeable = False
        return arr

    # -- mapping interface -------------------------------------------------------------------

    def __getitem__(self, video_id: str) -> np.ndarray:
        loc = self._loc.get(video_id)
        if loc is None:
            raise KeyError(f"video {video_id!r} not found in feature store {self.root}")
        k, i = loc
        if self._shards is None:
            return np.asarray(self._load_npy(video_id))
        starts = self._shard_starts(k)
        return np.asarray(self._shard_data(k)[starts[i] : starts[i + 1]])

    def get(self, video_id: str, default: Any = None, *, copy: bool = False) -> np.ndarray | Any:
        """``store[video_id]`` (a writable copy with ``copy=True``), or ``default``."""
        try:
            x = self[video_id]
        except KeyError:
            return default
        return np.array(x) if copy else x

    def get_many(self, video_ids: Iterable[str], *, copy: bool = False) -> list[np.ndarray]:
        """``[store[v] for v in video_ids]``, copies with ``copy=True``."""
        out = [self[v] for v in video_ids]
        return [np.array(x) for x in out] if copy else out

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._loc

    def __len__(self) -> int:
        return len(self._loc)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    @property
    def ids(self) -> list[str]:
        """All video ids, in storage order (shard by shard; sorted for ``from_npy_dir``)."""
        return list(self._loc)

    @property
    def lengths(self) -> dict[str, int]:
        """Number of rows ``T`` of every video. Reads the small starts files (or every ``.npy``
        header for ``from_npy_dir``), never the features."""
        if self._shards is None:
            return {vid: int(self._load_npy(vid).shape[0]) for vid in self._loc}
        out: dict[str, int] = {}
        for k, s in enumerate(self._shards):
            lens = np.diff(self._shard_starts(k))
            out.update(zip(s.ids, lens.tolist(), strict=True))
        return out

    def _first_array(self) -> np.ndarray | None:
        if self._shards is None:
            return self._load_npy(next(iter(self._loc))) if self._loc else None
        for k, s in enumerate(self._shards):
            if s.ids:
                return self._shard_data(k)
        return None

    @property
    def dim(self) -> int | None:
        """Feature dimension ``D`` (None for an empty store)."""
        if self._dim is None:
            first = self._first_array()
            self._dim = None if first is None else int(first.shape[1])
        return self._dim

    @property
    def dtype(self) -> np.dtype | None:
        """Stored dtype (None for an empty store of unknown type)."""
        if self._dtype is None:
            first = self._first_array()
            self._dtype = None if first is None else first.dtype
        return self._dtype

    def close(self) -> None:
        """Drop the cached shard maps (arrays already returned stay valid)."""
        self._data.clear()
        self._starts.clear()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_data"] = {}
        state["_starts"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"FeatureStore({str(self.root)!r}, n={len(self)}, dim={self._dim}, dtype={self._dtype})"
        )


EXTRACTION_INFO_NAME = "extraction.json"


def read_extraction_info(features: str | os.PathLike) -> dict[str, Any]:
    """A feature store's ``extraction.json`` (what made its features), or ``{}`` without one."""
    path = Path(features) / EXTRACTION_INFO_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc


def feature_rows_per_second(features: str | os.PathLike, configured: float | None = None) -> float:
    """Feature rows per second of video: ``configured`` (a config's ``feature_rate``) when given,
    else what the store's ``extraction.json`` recorded, else 1 (one row per second, MMPT's S3D)."""
    if configured is not None:
        return float(configured)
    return float(read_extraction_info(features).get("rows_per_second", 1.0))
