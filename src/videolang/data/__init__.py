"""The data layer: decoding, sampling, transforms, datasets, stores, text and the synthetic world.

Submodules load lazily so that ``import videolang.data`` stays cheap; import what you need,
e.g. ``from videolang.data.video import read_frames``.
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("datasets", "sampling", "stores", "synth", "text", "transforms", "video")

__all__ = list(_SUBMODULES)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"videolang.data.{name}")
    raise AttributeError(f"module 'videolang.data' has no attribute {name!r}")
