"""WebDataset-style tar shards of raw videos: writer and a shard-aware streaming reader.

:func:`write_webdataset` writes plain tar shards in the WebDataset convention (members of a
sample share a dot-free key) plus ``<out_dir>/index.json`` with the sample counts;
:class:`WebVideoDataset` streams them, split by rank and worker. Key rules and layout:
docs/data.md ("Stores").
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import tarfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from glob import glob
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import IterableDataset, get_worker_info

from videolang.data.annotations import Identifier, Record, RelativePath
from videolang.data.video import VIDEO_EXTENSIONS as ALL_VIDEO_EXTENSIONS
from videolang.errors import StoreError
from videolang.utils.io import (
    COMPLETE_MARKER,
    PARTIAL_MARKER,
    atomic_output,
    atomic_write_text,
    carry_other_files,
    check_complete,
    interrupted_build,
    resumable_output,
)

__all__ = ["VIDEO_EXTENSIONS", "ShardAnnotation", "WebVideoDataset", "write_webdataset"]

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
FORMAT_NAME = "videolang-webdataset"
class ShardAnnotation(Record):
    """A line of ``data shards --annotations``: the sample's key and its video inside the folder
    (other fields are stored with the sample as its ``json``)."""

    id: Identifier
    path: RelativePath


FORMAT_VERSION = 1
ORIG_KEY_EXT = "key.txt"
VIDEO_EXTENSIONS: frozenset[str] = frozenset(ext.lstrip(".") for ext in ALL_VIDEO_EXTENSIONS)  # tar keys: no dot
_MTIME = 946684800  # 2000-01-01: fixed so that the same samples give byte-identical shards
_TAR_BLOCK = 512


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"%0?\d*d", pattern)
    if len(parts) != 2 or "/" in pattern or os.sep in pattern:
        raise ValueError(f"shard pattern must be a file name with one %d field, got {pattern!r}")
    return re.compile(re.escape(parts[0]) + r"\d+" + re.escape(parts[1]))


def _encode_member(key: str, ext: str, value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if ext == "json" or ext.endswith(".json"):
        try:
            return json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise StoreError(f"sample {key!r}: field {ext!r} is not JSON-serializable: {e}") from e
    raise StoreError(
        f"sample {key!r}: field {ext!r} must be bytes or str (or a JSON-serializable value for "
        f"'json'), got {type(value).__name__}"
    )


def _safe_key(key: Any, key_dots: str) -> tuple[str, str | None]:
    """Return (key used in the tar, original key to record or None)."""
    if not isinstance(key, str) or not key:
        raise StoreError(f"sample '__key__' must be a non-empty string, got {key!r}")
    if key.startswith("/") or "\\" in key or any(p in ("", "..") for p in key.split("/")):
        raise StoreError(f"sample key {key!r} is not a valid relative name")
    if "." not in key:
        return key, None
    if key_dots == "replace":
        return key.replace(".", "_"), key
    raise StoreError(
        f"sample key {key!r} contains a dot; WebDataset splits member names at the first dot. "
        "Rename it or pass key_dots='replace'"
    )


class _ShardWriter:
    """One tar shard written under a temporary name and renamed into place on close."""

    def __init__(self, path: Path):
        self.path = path
        self._cm = atomic_output(path, overwrite=True)  # inside the build: a killed run's shard goes
        tmp = self._cm.__enter__()
        try:
            self.f = open(tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
            self.tar = tarfile.open(fileobj=self.f, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        except BaseException:
            if getattr(self, "f", None) is not None:
                self.f.close()
            self._cm.__exit__(StoreError, StoreError("abort"), None)
            raise
        self.n_samples = 0
        self.n_bytes = 0

    def add(self, members: Sequence[tuple[str, bytes]]) -> None:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = _MTIME
            info.mode = 0o444
            self.tar.addfile(info, io.BytesIO(data))
            self.n_bytes += _TAR_BLOCK + (len(data) + _TAR_BLOCK - 1) // _TAR_BLOCK * _TAR_BLOCK
        self.n_samples += 1

    def close(self) -> None:
        try:
            self.tar.close()
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
        except BaseException:
            self.abort()
            raise
        self._cm.__exit__(None, None, None)

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        self._cm.__exit__(StoreError, StoreError("abort"), None)


def _sample_members(sample: Mapping[str, Any], key_dots: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The tar key of a sample and its ``(member name, bytes)`` list."""
    key, orig = _safe_key(sample.get("__key__"), key_dots)
    fields = [(k, v) for k, v in sample.items() if k != "__key__"]
    if not fields:
        raise StoreError(f"sample {key!r} has no fields besides '__key__'")
    members = []
    for ext, value in fields:
        if not isinstance(ext, str) or not ext or "/" in ext or ext.startswith("."):
            raise StoreError(f"sample {key!r}: invalid field name {ext!r}")
        if ext == ORIG_KEY_EXT:
            raise StoreError(f"sample {key!r}: field name {ext!r} is reserved")
        members.append((f"{key}.{ext}", _encode_member(key, ext, value)))
    if orig is not None:
        members.append((f"{key}.{ORIG_KEY_EXT}", orig.encode("utf-8")))
    return key, members


class _ShardSet:
    """The shards of one build: rolls over to a new shard at ``maxcount`` / ``maxsize`` and
    rewrites ``index.json`` after each, which is also what a resumed build reads back."""

    def __init__(self, folder: Path, pattern: str, maxcount: int, maxsize: int | None, resumed: bool):
        self.folder, self.pattern, self.maxcount, self.maxsize = folder, pattern, maxcount, maxsize
        self.shards: list[dict[str, Any]] = _read_progress(folder) if resumed else []
        self.resumed_shards = len(self.shards)
        self.cur: _ShardWriter | None = None
        self.first_key: str | None = None
        self.last_key = ""

    def add(self, key: str, members: list[tuple[str, bytes]]) -> None:
        size = sum(_TAR_BLOCK + len(d) for _, d in members)
        cur = self.cur
        if cur is not None and (
            cur.n_samples >= self.maxcount or (self.maxsize is not None and cur.n_bytes + size > self.maxsize)
        ):
            self.finish_shard(self.last_key)
        if self.cur is None:
            self.cur = _ShardWriter(self.folder / (self.pattern % len(self.shards)))
            self.first_key = key
        self.cur.add(members)
        self.last_key = key

    def finish_shard(self, last_key: str) -> None:
        cur, self.cur = self.cur, None
        if cur is None:
            return
        cur.close()
        self.shards.append({"name": cur.path.name, "n_samples": cur.n_samples, "n_bytes": cur.path.stat().st_size,
                            "first": self.first_key, "last": last_key})
        self.write_index()

    def abort(self) -> None:
        if self.cur is not None:
            self.cur.abort()
            self.cur = None

    def write_index(self) -> None:
        index = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                 "n_samples": sum(s["n_samples"] for s in self.shards), "shards": self.shards}
        atomic_write_text(self.folder / INDEX_NAME, json.dumps(index, indent=1), overwrite=True)


def _read_progress(folder: Path) -> list[dict[str, Any]]:
    """The finished shards of an interrupted build (its last ``index.json``)."""
    path = folder / INDEX_NAME
    if not path.is_file():
        return []
    try:
        shards = json.loads(path.read_text(encoding="utf-8"))["shards"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreError(f"cannot resume from {path}: {e}; pass overwrite=True to start over") from e
    return [s for s in shards if (folder / s["name"]).is_file()]


def _skip_finished(samples: Iterator[Mapping[str, Any]], shards: list[dict[str, Any]], key_dots: str,
                   seen: set[str]) -> None:
    """Consume the samples the finished shards hold, checking they are the ones written before."""
    for shard in shards:
        for i in range(shard["n_samples"]):
            sample = next(samples, None)
            key = None if sample is None else _safe_key(sample.get("__key__"), key_dots)[0]
            expected = shard["first"] if i == 0 else shard["last"] if i == shard["n_samples"] - 1 else key
            if key is None or key != expected:
                raise StoreError(f"cannot resume: sample {len(seen)} is {key!r}, the interrupted run wrote "
                                 f"{expected!r} there; give the same samples or pass overwrite=True")
            seen.add(key)


def _own_file(name: str, shard_re: re.Pattern[str]) -> bool:
    return name in (INDEX_NAME, COMPLETE_MARKER, PARTIAL_MARKER) or bool(shard_re.fullmatch(name))


def write_webdataset(
    samples: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    pattern: str = "shard-%06d.tar",
    maxcount: int = 100,
    maxsize: int | None = None,
    overwrite: bool = False,
    key_dots: Literal["error", "replace"] = "error",
) -> list[Path]:
    """Write samples into tar shards ``out_dir/<pattern % k>`` plus ``out_dir/index.json``.

    Each sample is a mapping ``{"__key__": str, "<ext>": bytes | str, "json": dict, ...}``, e.g.
    ``{"__key__": "vid001", "mp4": b"...", "json": {"caption": "..."}}``. A shard holds at most
    ``maxcount`` samples and, if given, about ``maxsize`` bytes (a single larger sample gets a
    shard of its own). Keys must be unique and dot-free (see the module docstring).

    The folder is built in ``.<name>.partial`` next to ``out_dir`` and swapped in when complete
    (completeness marker last), under a lock that fails a second writer at once. A killed run
    keeps its finished shards: the same call resumes after them (the samples it skips must be
    the same) and gives byte-identical shards. A non-empty ``out_dir`` is refused unless
    ``overwrite=True``, which keeps it readable until the new shards are complete (its other
    files are carried over). Returns the shard paths.
    """
    if maxcount < 1:
        raise ValueError(f"maxcount must be >= 1, got {maxcount}")
    if maxsize is not None and maxsize < 1:
        raise ValueError(f"maxsize must be >= 1, got {maxsize}")
    if key_dots not in ("error", "replace"):
        raise ValueError(f"key_dots must be 'error' or 'replace', got {key_dots!r}")
    shard_re = _pattern_regex(pattern)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StoreError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise StoreError(f"{out} is not empty; pass overwrite=True (CLI: --overwrite) to replace its shards")
    settings = {"format": FORMAT_NAME, "pattern": pattern, "maxcount": maxcount, "maxsize": maxsize,
                "key_dots": key_dots}
    seed = carry_other_files(out, lambda name: _own_file(name, shard_re)) if out.is_dir() else None
    with resumable_output(out, settings, overwrite=overwrite, seed=seed) as part:
        shards = _ShardSet(part.path, pattern, maxcount, maxsize, part.resumed)
        _write_samples(iter(samples), shards, key_dots)
        if part.resumed:
            log.info("%s: resumed after %d finished shards", out, shards.resumed_shards)
    return [out / s["name"] for s in shards.shards]


def _write_samples(samples: Iterator[Mapping[str, Any]], shards: _ShardSet, key_dots: str) -> None:
    seen: set[str] = set()
    _skip_finished(samples, shards.shards, key_dots, seen)
    try:
        for sample in samples:
            key, members = _sample_members(sample, key_dots)
            if key in seen:
                orig = sample.get("__key__")
                raise StoreError(f"duplicate sample key {key!r}"
                                 + (f" (from {orig!r} after replacing dots)" if orig != key else ""))
            seen.add(key)
            shards.add(key, members)
        if shards.cur is not None:
            shards.finish_shard(shards.last_key)
        shards.write_index()
    except BaseException:
        shards.abort()
        raise


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------


def _split_name(name: str) -> tuple[str, str] | None:
    """WebDataset's key/extension split: the key ends at the first dot of the base name."""
    d, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem or not ext:
        return None
    return (f"{d}/{stem}" if d else stem), ext


def _resolve_shards(
    src: str | os.PathLike | Sequence[str | os.PathLike],
) -> tuple[list[str], dict[str, int] | None]:
    """Shard paths and, when an ``index.json`` is known, their sample counts."""
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if p.is_dir():
            index_path = p / INDEX_NAME
            check_complete(p, "WebDataset shard folder", required=index_path.is_file())
            if not index_path.is_file():
                raise StoreError(
                    f"{p} has no {INDEX_NAME} (incomplete write, or not written by videolang); "
                    "pass the shard paths or a glob pattern instead"
                )
            try:
                index = json.loads(index_path.read_text(encoding="utf-8"))
                if index.get("format") != FORMAT_NAME:
                    raise ValueError("format field missing or wrong")
                entries = [(str(p / s["name"]), int(s["n_samples"])) for s in index["shards"]]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise StoreError(f"cannot read shard index {index_path}: {e}") from e
            return [e[0] for e in entries], dict(entries)
        s = os.fspath(src)
        if any(c in s for c in "*?["):
            shards = sorted(glob(s))
            if not shards:
                raise StoreError(f"no shard matches {s!r}")
            return shards, None
        if not p.is_file():
            raise StoreError(interrupted_build(p) or f"shard {p} does not exist")
        return [s], None
    shards = [os.fspath(x) for x in src]
    if not shards:
        raise StoreError("empty shard list")
    return shards, None


def _dist_rank_world() -> tuple[int, int]:
    """Rank and world size from ``torch.distributed`` if initialized, else RANK/WORLD_SIZE."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as e:
        raise StoreError(f"cannot parse RANK/WORLD_SIZE from the environment: {e}") from e


class WebVideoDataset(IterableDataset):
    """Stream ``{"key", "video", "ext", "json"}`` samples from local WebDataset tar shards.

    ``urls_or_dir``: a directory written by :func:`write_webdataset` (its ``index.json`` gives
    the shards and sample counts), one shard path, a glob pattern, or a list of shard paths.

    **Splitting.** The shard list (in index / sorted order) is partitioned first by rank —
    ``rank``/``world_size`` arguments, else ``torch.distributed`` when initialized, else the
    ``RANK``/``WORLD_SIZE`` environment variables, else a single process — taking
    ``shards[rank::world_size]``, then by DataLoader worker (``[worker_id::num_workers]``). Each
    shard is read by exactly one (rank, worker), so every sample is read exactly once per epoch
    across ranks × workers. When the shard count is not a multiple of ``world_size *
    num_workers`` the split is still exact but unbalanced: some ranks read one shard more than
    others (a DDP job must then cap its steps per epoch, e.g. with ``len(dataset)`` of the
    smallest rank), and with fewer shards than readers some workers get no shard and sit idle.
    A warning is issued in both cases. Write at least ``world_size * num_workers`` shards, ideally
    a multiple.

    **Shuffling.** With ``shuffle=n > 0`` each reader's shards are read in a random order and
    samples pass through a shuffle buffer of ``n`` samples, seeded by ``(seed, epoch, rank,
    worker)``; call :meth:`set_epoch` each epoch (it reaches the workers if they are created per
    epoch, the DataLoader default ``persistent_workers=False``).

    **Errors.** A sample whose JSON does not parse, that has no video member or that is cut by a
    truncated tar is skipped with a warning; a corrupt member header is skipped and reading
    resumes at the next valid header; an unreadable shard is skipped. Counts are in
    :attr:`stats` (per process) and a warning compares each shard's count with ``index.json``.

    ``video`` holds the bytes of the first member whose extension is in ``video_exts``; ``ext``
    is that extension; ``json`` is the parsed ``.json`` member (raw bytes with
    ``decode_json=False``; None if the sample has none).
    """

    def __init__(
        self,
        urls_or_dir: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        shuffle: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        decode_json: bool = True,
        video_exts: Iterable[str] = VIDEO_EXTENSIONS,
        seed: int = 0,
    ):
        super().__init__()
        if (rank is None) != (world_size is None):
            raise ValueError("pass both rank and world_size, or neither")
        if world_size is not None and rank is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if shuffle < 0:
            raise ValueError(f"shuffle must be >= 0, got {shuffle}")
        self.shards, self.shard_sizes = _resolve_shards(urls_or_dir)
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.decode_json = decode_json
        self.video_exts = frozenset(e.lower().lstrip(".") for e in video_exts)
        self.seed = seed
        self.epoch = 0
        self.stats = {"samples": 0, "skipped_samples": 0, "bad_shards": 0}
        self._warned = False

    # -- splitting ---------------------------------------------------------------------------

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        return _dist_rank_world()

    def rank_shards(self) -> list[str]:
        """The shards this rank reads (all its workers together)."""
        rank, world = self._rank_world()
        return self.shards[rank::world]

    def worker_shards(self) -> list[str]:
        """The shards read by the calling process (a DataLoader worker, or the main process)."""
        shards = self.rank_shards()
        info = get_worker_info()
        if info is None:
            return shards
        return shards[info.id :: info.num_workers]

    def __len__(self) -> int:
        """Samples this rank reads per epoch (needs ``index.json``; TypeError otherwise)."""
        if self.shard_sizes is None:
            raise TypeError("length unknown: the shards were not given through an index.json")
        return sum(self.shard_sizes[s] for s in self.rank_shards())

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch mixed into the shuffling seed."""
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        # Pickled when a DataLoader starts spawned workers: freeze the rank seen by the parent
        # (a spawned worker has no torch.distributed state of its own).
        state = self.__dict__.copy()
        if state["rank"] is None:
            with_rank = torch.distributed.is_available() and torch.distributed.is_initialized()
            if with_rank:
                state["rank"], state["world_size"] = _dist_rank_world()
        return state

    def _warn_balance(self, rank: int, world: int, n_workers: int) -> None:
        if self._warned:
            return
        self._warned = True
        n = len(self.shards)
        readers = world * n_workers
        msg = None
        if n < readers:
            msg = (
                f"{n} shards for {world} rank(s) x {n_workers} worker(s): "
                f"{readers - n} reader(s) get no shard and stay idle"
            )
        elif n % readers:
            msg = (
                f"{n} shards do not divide evenly over {world} rank(s) x {n_workers} worker(s): "
                "readers get unequal numbers of shards"
            )
        if msg and rank == 0:
            warnings.warn(msg, stacklevel=3)
            log.warning(msg)

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = self._rank_world()
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        self._warn_balance(rank, world, nw)
        shards = self.shards[rank::world][wid::nw]
        if self.shuffle:
            rng = random.Random(f"{self.seed}:{self.epoch}:{rank}:{wid}")
            shards = list(shards)
            rng.shuffle(shards)
            yield from self._shuffled(self._samples(shards), rng)
        else:
            yield from self._samples(shards)

    def _shuffled(
        self, it: Iterator[dict[str, Any]], rng: random.Random
    ) -> Iterator[dict[str, Any]]:
        buf: list[dict[str, Any]] = []
        for sample in it:
            if len(buf) < self.shuffle:
                buf.append(sample)
                continue
            j = rng.randrange(len(buf))
            buf[j], sample = sample, buf[j]
            yield sample
        rng.shuffle(buf)
        yield from buf

    def _samples(self, shards: Iterable[str]) -> Iterator[dict[str, Any]]:
        for shard in shards:
            n_ok = 0
            n_bad = 0
            for sample in self._read_shard(shard):
                if sample is None:
                    n_bad += 1
                    continue
                n_ok += 1
                yield sample
            expected = None if self.shard_sizes is None else self.shard_sizes.get(shard)
            if expected is not None and n_ok != expected:
                log.warning(
                    "shard %s: read %d of its %d samples (%d skipped as corrupt)",
                    shard, n_ok, expected, n_bad,
                )  # fmt: skip

    def _skip(self, shard: str, key: str | None, reason: str) -> None:
        self.stats["skipped_samples"] += 1
        log.warning("skipping sample %r of shard %s: %s", key, shard, reason)

    def _read_shard(self, shard: str) -> Iterator[dict[str, Any] | None]:
        """Yield samples of one shard; None for each sample skipped."""
        try:
            f = open(shard, "rb")  # noqa: SIM115 - closed in finally
        except OSError as e:
            self.stats["bad_shards"] += 1
            log.warning("skipping unreadable shard %s: %s", shard, e)
            return
        try:
            # ignore_zeros: skip a corrupt member header and resume at the next valid one
            # instead of silently stopping at it.
            tar = tarfile.open(fileobj=f, mode="r|", ignore_zeros=True)  # noqa: SIM115
        except (tarfile.TarError, OSError, EOFError) as e:
            f.close()
            self.stats["bad_shards"] += 1
            log.warning("skipping shard %s: not a readable tar file (%s)", shard, e)
            return
        cur_key: str | None = None
        members: dict[str, bytes] = {}
        try:
            while True:
                key = None
                try:
                    info = tar.next()
                    if info is None:
                        break
                    if not info.isfile():
                        continue
                    split = _split_name(info.name)
                    if split is None:
                        continue
                    key, ext = split
                    fobj = tar.extractfile(info)
                    data = fobj.read() if fobj is not None else b""
                    if len(data) != info.size:
                        raise tarfile.ReadError("unexpected end of data")
                except (tarfile.TarError, OSError, EOFError) as e:
                    self.stats["bad_shards"] += 1
                    log.warning("stopping early in shard %s: %s", shard, e)
                    if key is not None and key != cur_key:
                        # the damage is in the next sample: the current one is complete
                        if members:
                            yield self._make_sample(shard, cur_key, members)
                        lost: str | None = key
                    else:  # in the current sample, or in a header (sample may be incomplete)
                        lost = cur_key if members else None
                    if lost is not None:
                        self._skip(shard, lost, f"shard is truncated or corrupt ({e})")
                        yield None
                    return
                if key != cur_key:
                    if members:
                        yield self._make_sample(shard, cur_key, members)
                    cur_key, members = key, {}
                members[ext.lower()] = data
            if members:
                yield self._make_sample(shard, cur_key, members)
        finally:
            tar.close()
            f.close()

    def _make_sample(
        self, shard: str, key: str | None, members: dict[str, bytes]
    ) -> dict[str, Any] | None:
        assert key is not None
        video_ext = next((e for e in members if e in self.video_exts), None)
        if video_ext is None:
            self._skip(shard, key, f"no video member (found {sorted(members)})")
            return None
        js: Any = members.get("json")
        if js is not None and self.decode_json:
            try:
                js = json.loads(js.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                self._skip(shard, key, f"invalid JSON ({e})")
                return None
        orig = members.get(ORIG_KEY_EXT)
        if orig is not None:
            key = orig.decode("utf-8", "replace")
        self.stats["samples"] += 1
        return {"key": key, "video": members[video_ext], "ext": video_ext, "json": js}

    def __repr__(self) -> str:
        return f"WebVideoDataset({len(self.shards)} shards, shuffle={self.shuffle})"
