"""Search your own videos: an index of moments, queried by text.

* ``videolang index MODEL_DIR VIDEO_DIR INDEX_DIR`` (:func:`build_index`): every video of a folder
  embedded in overlapping time windows by a retrieval model folder; metadata, embeddings and
  thumbnails in SQLite, vectors in faiss; resumable and incremental.
* ``videolang search INDEX_DIR "query"`` / :func:`open_index`: ranked moments.
* ``videolang serve INDEX_DIR``: the same over HTTP, with a web page.

See docs/search.md.
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
