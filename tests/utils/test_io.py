"""Atomic outputs: the umask's permissions, the old output kept until the new one is complete,
and what a killed writer left behind cleaned by the next one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from videolang.errors import StoreError
from videolang.utils.io import (
    atomic_output,
    atomic_write_text,
    current_umask,
    remove_stale_temporaries,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_honour_the_umask(tmp_path, umask_022):
    assert current_umask() == 0o022
    assert _mode(atomic_write_text(tmp_path / "a.json", "{}")) == 0o644
    with atomic_output(tmp_path / "folder", is_dir=True) as tmp:
        (tmp / "inside").write_text("x")
    assert _mode(tmp_path / "folder") == 0o755
    os.umask(0o027)
    assert _mode(atomic_write_text(tmp_path / "b.json", "{}")) == 0o640


def test_existing_output_needs_overwrite_and_survives_a_failed_write(tmp_path):
    target = atomic_write_text(tmp_path / "out.txt", "old")
    with pytest.raises(StoreError, match="already exists"):
        atomic_write_text(target, "new")
    with pytest.raises(RuntimeError), atomic_output(target, overwrite=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_directory_is_replaced_whole(tmp_path):
    target = tmp_path / "store"
    for content in ("first", "second"):
        with atomic_output(target, overwrite=True, is_dir=True) as tmp:
            (tmp / "part").write_text(content)
    assert (target / "part").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_a_killed_writers_temporaries_are_removed_by_the_next_writer(tmp_path):
    # a child process opens an output and is killed (SIGKILL) before it finishes
    code = ("import os, sys\nfrom videolang.utils.io import atomic_output\n"
            "with atomic_output(sys.argv[1], is_dir=True) as tmp:\n"
            "    (tmp / 'part').write_text('x')\n    os.kill(os.getpid(), 9)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "shards")], check=False)
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1
    mine = tmp_path / f".shards.{os.getpid()}.live.tmp"  # a live writer's temporary stays
    mine.mkdir()
    assert remove_stale_temporaries(tmp_path / "shards") == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name]


def test_a_directory_moved_aside_by_an_interrupted_swap_is_put_back(tmp_path):
    aside = tmp_path / ".index.old"
    aside.mkdir()
    (aside / "data").write_text("kept")
    remove_stale_temporaries(tmp_path / "index")
    assert (tmp_path / "index" / "data").read_text() == "kept" and not aside.exists()
