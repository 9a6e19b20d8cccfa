"""Atomic writes: nothing the user wrote is ever lost or left half-written.

Every writer in videolang writes to a temporary sibling first and renames it into place, so a
crash leaves either the old file (or nothing) or the complete new one. Writers refuse to
replace an existing path unless ``overwrite=True``. Long writers build a folder in a stable
sibling (:func:`resumable_output`) that a rerun resumes; :func:`exclusive_lock` keeps a second
writer out; folders carry a completeness marker written last (:func:`check_complete`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videolang.errors import StoreError

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete.json"  # written last into a finished output folder
PARTIAL_MARKER = ".partial.json"  # in a folder still being built (settings, writer, start time)


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise StoreError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")


def current_umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it races threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary_prefix(target: Path) -> str:
    # The writer's pid in the name lets a later writer remove what a killed one left behind.
    return f".{target.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary siblings of ``target`` whose writing process is gone (killed before
    it could clean up); returns them. Also puts back a directory moved aside by a swap that was
    interrupted (``.<name>.old`` while ``<name>`` is missing)."""
    removed = []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\..*\.tmp")
    with contextlib.suppress(FileNotFoundError):
        for entry in target.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and not _pid_alive(int(match.group(1))):
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                removed.append(entry)
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():
        os.replace(old, target)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    libc = _libc()
    if libc is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: the file system cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), os.fspath(b))


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        return libc
    except (OSError, AttributeError):
        return None


def _replace_dir(tmp: Path, target: Path) -> None:
    """Put the directory ``tmp`` at ``target``, which exists: swapped in one step where the
    system can, else the old one is moved aside first (put back by the next writer if a crash
    falls between the two renames)."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    With ``is_dir=True`` the temporary path is a fresh directory (for LMDB environments and
    other multi-file outputs). On error the temporary is removed and ``path`` is untouched, and
    with ``overwrite`` the old output stays in place until the new one is complete. The output
    gets the permissions the umask gives new files (temporaries are private while written).
    """
    target = Path(path)
    _check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    prefix, mask = _temporary_prefix(target), current_umask()
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():  # a writer may replace the temporary file itself (np.save, LMDB)
            tmp.chmod((0o777 if tmp.is_dir() else 0o666) & ~mask)
        if target.exists():
            _check_target(target, overwrite)  # someone created it meanwhile
            if target.is_dir() and not target.is_symlink():
                _replace_dir(tmp, target)  # a directory cannot be renamed onto a full one
                return
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (fsync before rename)."""
    with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# one writer at a time


def _holder(info: Mapping[str, Any]) -> str:
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('started', '?')}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _writer_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _lock_open_file(lock_path: Path, what: str) -> int:
    """Open and ``flock`` the lock file; retried when a releasing holder unlinked it meanwhile."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_json(lock_path)
            os.close(fd)
            raise StoreError(f"{what} is being written by another run ({_holder(holder)}); "
                             "wait for it to finish") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file its holder had just removed: lock the new one


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``lock_path`` (``flock``) for one writer of ``what``: a second one fails at once with
    a :class:`StoreError` naming the holder (pid, host, start time). The kernel drops the lock
    of a process that dies; its file is then taken over with a warning naming that process."""
    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock_open_file(path, what)
    try:
        previous = _read_json(path)
        if previous:  # a holder releases by removing the file: this one died holding it
            alive = previous.get("host") == socket.gethostname() and _pid_alive(int(previous.get("pid", 0)))
            log.warning("%s: taking over the lock of %s, which %s", what, _holder(previous),
                        "no longer holds it" if alive else "is no longer running")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_writer_info()).encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: a waiting writer re-checks the inode
        os.close(fd)


def output_lock(target: str | os.PathLike) -> contextlib.AbstractContextManager[None]:
    """The writer lock of an output: ``.<name>.lock`` next to it (outside the folder swapped in)."""
    target = Path(target)
    return exclusive_lock(target.with_name(f".{target.name}.lock"), str(target))


# --------------------------------------------------------------------------------------------
# completeness markers and resumable folders


def partial_path(target: str | os.PathLike) -> Path:
    """Where a resumable writer builds ``target``: ``.<name>.partial`` next to it."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial")


def check_complete(folder: str | os.PathLike, what: str, *, required: bool = True) -> None:
    """Refuse an output folder whose build was interrupted (it holds the partial marker, or lacks
    the completeness marker when ``required``), saying how to resume it."""
    folder = Path(folder)
    partial = folder / PARTIAL_MARKER
    if partial.exists() or (required and not (folder / COMPLETE_MARKER).is_file()):
        started = _read_json(partial)
        by = f" (started by {_holder(started)})" if started else ""
        raise StoreError(f"{folder} is an incomplete {what}{by}: the run writing it did not finish. Rerun the "
                         "same command to resume it from its finished parts, or pass --overwrite to start over")


def interrupted_build(target: str | os.PathLike) -> str | None:
    """A sentence naming the interrupted build of ``target`` waiting to be resumed, or None."""
    partial = partial_path(target)
    if not partial.is_dir():
        return None
    return (f"{target} is not complete: a run writing it was interrupted and left its finished parts in "
            f"{partial}; rerun the same command to resume it")


@dataclass
class PartialOutput:
    """A folder being built by :func:`resumable_output`: write into ``path``."""

    path: Path
    target: Path
    resumed: bool


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (copy where links fail): writers only ever replace files by
    renaming, so a link shared with the old output is never changed under its readers."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def carry_other_files(old: Path, is_own: Callable[[str], bool]) -> Callable[[Path], None]:
    """A ``resumable_output`` seed linking the files of ``old`` that are not the output's own
    (notes, READMEs) into the new build, so replacing a store keeps them."""

    def seed(partial: Path) -> None:
        for p in old.iterdir() if old.is_dir() else []:
            if p.is_file() and not p.name.startswith(".") and not is_own(p.name):
                link_or_copy(p, partial / p.name)

    return seed


def _open_partial(target: Path, settings: Mapping[str, Any], overwrite: bool,
                  seed: Callable[[Path], None] | None, resume: bool) -> PartialOutput:
    partial = partial_path(target)
    if partial.is_dir():
        stored = _read_json(partial / PARTIAL_MARKER).get("settings")
        if stored == json.loads(json.dumps(settings)) and resume:
            return PartialOutput(partial, target, resumed=True)
        if stored is not None and not overwrite:
            diff = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
            raise StoreError(f"{partial} holds an interrupted build of {target} with other settings "
                             f"({', '.join(diff)}); rerun with its settings to resume it, or pass "
                             "overwrite=True (CLI: --overwrite) to discard it")
        shutil.rmtree(partial)  # discarded, or no marker: interrupted before it held anything
    if target.exists() and not overwrite and seed is None:
        _check_target(target, overwrite)
    partial.mkdir()
    if seed is not None:
        seed(partial)
    atomic_write_text(partial / PARTIAL_MARKER, json.dumps({**_writer_info(), "settings": dict(settings)}),
                      overwrite=True)
    return PartialOutput(partial, target, resumed=False)


def _finish_partial(out: PartialOutput, settings: Mapping[str, Any]) -> None:
    marker = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "settings": dict(settings)}
    atomic_write_text(out.path / COMPLETE_MARKER, json.dumps(marker), overwrite=True)
    (out.path / PARTIAL_MARKER).unlink()
    out.path.chmod(0o777 & ~current_umask())
    if out.target.exists() and out.target.is_dir() and not out.target.is_symlink():
        _replace_dir(out.path, out.target)
    else:
        os.replace(out.path, out.target)


@contextlib.contextmanager
def resumable_output(path: str | os.PathLike, settings: Mapping[str, Any], *, overwrite: bool = False,
                     seed: Callable[[Path], None] | None = None, resume: bool = True) -> Iterator[PartialOutput]:
    """Build the folder ``path`` in ``.<name>.partial`` next to it, under the output's lock.

    A partial build left by an interrupted run with the same ``settings`` (JSON values) is resumed
    (``resumed=True``: the writer skips its finished parts); one with other settings is refused
    unless ``overwrite`` (with ``resume=False``, ``overwrite`` discards any). A fresh build starts empty, or from ``seed(partial)`` (e.g. links to the
    old output's files). On success the completeness marker is written last and the folder is
    swapped in, so the old output stays readable until then; on error the finished parts stay
    for the rerun. An existing ``path`` is refused unless ``overwrite`` or ``seed`` is given.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(target):
        remove_stale_temporaries(target)
        out = _open_partial(target, settings, overwrite, seed, resume)
        if out.resumed:
            log.info("resuming the interrupted build of %s from %s", target, out.path)
        try:
            yield out
        except BaseException:
            log.warning("%s is unfinished; its finished parts stay in %s for a rerun", target, out.path)
            raise
        _finish_partial(out, settings)


def mark_complete(folder: str | os.PathLike, **info: Any) -> None:
    """Write the completeness marker into ``folder`` (the last write of a one-shot writer)."""
    marker = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), **info}
    atomic_write_text(Path(folder) / COMPLETE_MARKER, json.dumps(marker), overwrite=True)
