"""The wheel carries the package data: every run config (videolang/configs/<method>/<task>.yaml)
and every model config (videolang/models/configs/*.json) of the source tree.

The wheel is built from a copy of pyproject.toml, README.md and src/ (so the checkout gets no
build/ or egg-info), without build isolation (this environment's setuptools; from 70.1 on it builds wheels itself).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "videolang"

pytestmark = pytest.mark.skipif(
    not (ROOT / "pyproject.toml").is_file() or not PACKAGE.is_dir()
    or importlib.util.find_spec("setuptools") is None,
    reason="needs a source checkout with setuptools installed",
)


def _source_files(folder: str, pattern: str) -> set[str]:
    return {f"videolang/{folder}/{p.relative_to(PACKAGE / folder).as_posix()}"
            for p in (PACKAGE / folder).rglob(pattern)}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copy2(ROOT / "pyproject.toml", src.parent / "pyproject.toml")
    shutil.copy2(ROOT / "README.md", src.parent / "README.md")
    shutil.copytree(PACKAGE, src / "videolang", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--wheel-dir", str(out), str(src.parent)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("videolang-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_has_every_run_config(wheel_names):
    expected = _source_files("configs", "*.yaml")
    assert len(expected) >= 50  # the source tree has them (58 when this test was written)
    assert {n for n in wheel_names if n.startswith("videolang/configs/")} == expected


def test_wheel_has_every_model_config(wheel_names):
    expected = _source_files("models/configs", "*.json")
    assert expected
    assert {n for n in wheel_names if n.startswith("videolang/models/configs/")} == expected


def test_wheel_has_the_cli_demos_and_typing_marker(wheel_names):
    assert {"videolang/py.typed", "videolang/cli/demo.py", "videolang/engine/config.py"} <= wheel_names
