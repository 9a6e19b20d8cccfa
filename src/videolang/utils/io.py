"""Atomic writes: nothing the user wrote is ever lost or left half-written.

Every writer in videolang writes to a temporary sibling first and renames it into place, so a
crash leaves either the old file (or nothing) or the complete new one. Writers refuse to
replace an existing path unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from videolang.errors import StoreError


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
