"""Golden fixtures of the original implementations, stored in the repository (tests/fixtures/golden).

Each fixture ``NAME`` is two files: ``NAME.safetensors`` holds the tensors, ``NAME.json`` the
skeleton of the original nested dict, in the original key order, with plain values (configs,
scalar outputs) stored as they are and each tensor replaced by ``{"$tensor": KEY}``, a key of the
safetensors file. Tied weights (bitwise-equal tensors of the original) are stored once and referenced
twice. Nothing here runs pickled code. Provenance and checksums: tests/fixtures/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

GOLDEN_DIR = Path(__file__).resolve().parent / "fixtures" / "golden"
TENSOR = "$tensor"


def golden_names() -> list[str]:
    """The fixtures present (a name per .json skeleton)."""
    return sorted(p.stem for p in GOLDEN_DIR.glob("*.json"))


def load_golden(name: str) -> dict[str, Any]:
    """Rebuild the nested dict that ``torch.load(NAME.pt)`` of the golden specs returned.

    Fails the calling test (never skips) when the fixture is missing or inconsistent."""
    skeleton_path, tensors_path = GOLDEN_DIR / f"{name}.json", GOLDEN_DIR / f"{name}.safetensors"
    missing = [str(p) for p in (skeleton_path, tensors_path) if not p.is_file()]
    if missing:
        pytest.fail(f"golden fixture {name!r} is missing: {', '.join(missing)} "
                    "(it is part of the repository; see tests/fixtures/README.md)", pytrace=False)
    skeleton = json.loads(skeleton_path.read_text(encoding="utf-8"))
    tensors = load_file(tensors_path)
    used: set[str] = set()

    def build(node: Any, where: str) -> Any:
        if isinstance(node, dict):
            if set(node) == {TENSOR}:
                key = node[TENSOR]
                if key not in tensors:
                    pytest.fail(f"golden fixture {name!r}: {where} refers to tensor {key!r}, "
                                f"absent from {tensors_path.name}", pytrace=False)
                used.add(key)
                return tensors[key]
            return {k: build(v, f"{where}/{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [build(v, f"{where}/{i}") for i, v in enumerate(node)]
        return node

    out = build(skeleton, "")
    unused = sorted(set(tensors) - used)
    if unused:
        pytest.fail(f"golden fixture {name!r}: tensors {unused} of {tensors_path.name} are not in "
                    f"{skeleton_path.name}", pytrace=False)
    return out
