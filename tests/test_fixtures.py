"""The test suite stands alone: golden fixtures match the checksums of tests/fixtures/README.md, load
without pickles, and no test reads a path outside the repository."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
from tests.golden import GOLDEN_DIR, golden_names, load_golden

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
README = FIXTURES / "README.md"
ROW = re.compile(r"^\|\s*`(golden/[^`]+)`\s*\|\s*(\d+)\s*\|\s*`([0-9a-f]{64})`\s*\|\s*$")
# written so that this file does not match itself
OUTSIDE = [
    re.compile(r"\.\./share[d]"),  # a relative path to the shared folder beside the checkout
    re.compile(r"share[d]/specs"),
    re.compile(r"""['"]\.\.['"]\s*/\s*['"]share[d]['"]"""),  # a Path joined with ".." then the folder
    re.compile(r"/wor[k]/"),  # this machine's absolute layout
]
TEXT_SUFFIXES = {".py", ".md", ".json", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".txt"}


def listed() -> dict[str, tuple[int, str]]:
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        if m := ROW.match(line):
            assert m[1] not in rows, f"{m[1]} listed twice in {README}"
            rows[m[1]] = (int(m[2]), m[3])
    return rows


def test_readme_lists_every_fixture_file():
    rows = listed()
    assert rows, f"no checksum rows found in {README}"
    present = {p.relative_to(FIXTURES).as_posix() for p in GOLDEN_DIR.rglob("*") if p.is_file()}
    assert sorted(present - set(rows)) == [], "files in tests/fixtures/golden not listed in the README"
    assert sorted(set(rows) - present) == [], "files listed in the README are missing"
    assert {f"golden/{n}.{ext}" for n in golden_names() for ext in ("json", "safetensors")} == set(rows)


@pytest.mark.parametrize("name", sorted(listed()))
def test_fixture_checksum(name):
    size, sha = listed()[name]
    data = (FIXTURES / name).read_bytes()
    assert len(data) == size, f"{name}: {len(data)} bytes, README says {size}"
    assert hashlib.sha256(data).hexdigest() == sha, f"{name}: sha256 differs from tests/fixtures/README.md"


@pytest.mark.parametrize("name", ["videoclip_tiny_separate", "vlm_tiny_mtm", "vimpac_tiny", "vidlankd_tiny"])
def test_golden_loads_without_pickle(name):
    golden = load_golden(name)
    tensors = []

    def walk(node):
        if isinstance(node, torch.Tensor):
            tensors.append(node)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(golden)
    assert tensors and all(t.device.type == "cpu" for t in tensors)


def test_missing_fixture_fails_not_skips():
    with pytest.raises(pytest.fail.Exception, match="missing"):
        load_golden("no_such_fixture")


def test_no_test_reads_outside_the_repository():
    offenders = []
    for path in sorted(TESTS.rglob("*")):
        if not path.is_file() or path.suffix not in TEXT_SUFFIXES or "__pycache__" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(p.search(line) for p in OUTSIDE):
                offenders.append(f"{path.relative_to(TESTS)}:{number}: {line.strip()}")
    assert offenders == []


def test_outside_patterns_catch_the_old_forms():
    shared, work = "shar" + "ed", "/" + "work/"  # split, so this file does not match itself
    old = [
        f'GOLDEN = Path("{work}{shared}/specs/golden/vidlankd_tiny.pt")',
        f'GOLDEN = Path(__file__).resolve().parents[2] / ".." / "{shared}" / "specs" / "golden" / "x.pt"',
        f'torch.load("../{shared}/golden/x.pt")',
        f'Path("{work}other/x.pt")',
    ]
    for line in old:
        assert any(p.search(line) for p in OUTSIDE), line
