"""Search your own videos: an index of moments, queried by text.

``videolang index`` (:func:`build_index`) embeds every video of a folder in overlapping windows
(SQLite + faiss; resumable, incremental); ``videolang search`` / :func:`open_index` return
ranked moments; ``videolang serve`` does the same over HTTP. See docs/search.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Hit", "Reranker", "SearchIndex", "ask", "build_index", "open_index"]


def __getattr__(name: str) -> Any:
    if name in ("Hit", "SearchIndex", "open_index", "ask", "Reranker"):
        from videolang.search import query

        return getattr(query, name)
    if name == "build_index":
        from videolang.search.builder import build_index

        return build_index
    raise AttributeError(f"module 'videolang.search' has no attribute {name!r}")
