"""videolang: video-and-language learning on one data layer, one model library and one engine.

The library (``videolang.data``, ``videolang.models``, ``videolang.metrics``, ...) imports
without the training stack; the trainer (``videolang.engine``) and the CLI sit on top.

Top-level shortcuts (imported on first use)::

    videolang.list_models()              # registered architectures
    videolang.create_model("videoclip-tiny")
    pipe = videolang.load("runs/videoclip_synthetic/version_0/export")
    pipe.score(["a.mp4"], ["a red circle moves left"])
    videolang.open_index("my_index").search("a red circle moves left", k=5)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Features", "Frames", "__version__", "create_model", "list_models", "load", "open_index"]


def __getattr__(name: str):
    if name in ("create_model", "list_models"):
        from videolang.models import registry

        return getattr(registry, name)
    if name in ("load", "Frames", "Features"):
        import videolang.pipelines as pipelines

        return getattr(pipelines, name)
    if name == "open_index":
        from videolang.search.query import open_index

        return open_index
    raise AttributeError(f"module 'videolang' has no attribute {name!r}")
