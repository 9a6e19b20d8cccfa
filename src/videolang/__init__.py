"""videolang: video-and-language learning on one data layer, one model library and one engine.

The library imports without Lightning; the trainer (``videolang.engine``) and the CLI sit on top.
Shortcuts, imported on first use::

    pipe = videolang.load("runs/videoclip_synthetic/version_0/export")   # a model folder
    pipe.score(["a.mp4"], ["a red circle moves left"])
    videolang.open_index("my_index").search("a red circle moves left", k=5)
    videolang.create_model("videoclip-tiny")   # videolang.list_models() names the others
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
