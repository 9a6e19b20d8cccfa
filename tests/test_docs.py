"""Every Python example of README.md and docs/*.md runs.

The blocks of one file run in order in one namespace (later blocks may use earlier names), in a
folder prepared by :mod:`tests.docs_workspace` (a synthetic world and one model folder per
family, paths such as ``world/videos/vid00000.mp4`` and ``models/videoclip``).
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line, code)`` of every fenced ``python`` block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


@pytest.mark.parametrize("doc", [d for d in DOCS if python_blocks(d)], ids=lambda d: d.name)
def test_python_examples_run(doc, workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    module = types.ModuleType(f"docs_{doc.stem}")  # a real module: dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for line, code in python_blocks(doc):
        exec(compile(code, f"{doc.relative_to(ROOT)}:{line}", "exec"), module.__dict__)


def test_every_page_with_an_api_has_an_example():
    """The pages that show loading and using models keep a runnable example."""
    with_examples = {d.name for d in DOCS if python_blocks(d)}
    assert {"README.md", "inference.md", "videoclip.md", "vlm.md", "clipbert.md", "vimpac.md", "anticipation.md",
            "vidlankd.md", "engine.md", "data.md", "search.md"} <= with_examples
