"""Searching an index: ``videolang.open_index(INDEX_DIR).search("a person opens a red door", k=5)``.

A query is embedded by the model folder the index was built with (its identity is checked:
another model's embeddings would not be comparable) and matched against the window embeddings
with faiss. Overlapping windows of one video are folded into the best of them, so hits are
distinct moments: a video path relative to the indexed folder, start and end seconds, a score.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videolang.errors import ConfigError, QueryError, StoreError
from videolang.search.catalog import CATALOG_FILE, Catalog
from videolang.search.rerank import Reranker

__all__ = ["Hit", "Reranker", "SearchIndex", "ask", "open_index"]

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 500


@dataclass
class Hit:
    """One found moment: ``video`` (path relative to the indexed folder), ``start`` / ``end``
    seconds, ``score`` (the model's similarity; the re-ranker's when re-ranked)."""

    video: str
    start: float
    end: float
    score: float
    window_id: int
    video_id: int
    first_score: float | None = None  # the index's similarity, when a re-ranker set ``score``

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _overlap(a: Hit, b: Hit) -> float:
    inter = max(0.0, min(a.end, b.end) - max(a.start, b.start))
    shorter = max(min(a.end - a.start, b.end - b.start), 1e-9)
    return inter / shorter


class SearchIndex:
    """An index folder opened for search (read-only; safe to share between threads)."""

    def __init__(self, folder: str | os.PathLike, *, model: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu"):
        from videolang.search.builder import model_identity
        from videolang.search.vectors import VectorIndex, build_vector_index

        self.folder = Path(folder)
        self.catalog = Catalog(self.folder / CATALOG_FILE, readonly=True)
        self.meta = self.catalog.get_meta("model")
        if self.meta is None:
            raise StoreError(f"{self.folder}: the index has no model yet (its first `videolang index` run did not "
                             "finish)")
        self.root = Path(self.catalog.get_meta("root"))
        model_dir = Path(model) if model is not None else Path(self.meta["folder"])
        if not model_dir.is_dir():
            raise ConfigError(f"{self.folder} was built with the model folder {self.meta['folder']}, which is not "
                              "there: give its new place with --model")
        identity = model_identity(model_dir)
        if identity["sha256"] != self.meta["sha256"]:
            raise ConfigError(f"{model_dir} is not the model this index was built with ({self.meta['folder']}, "
                              f"sha256 {self.meta['sha256'][:12]}, this one {identity['sha256'][:12]}): its "
                              "embeddings are not comparable; index again with it")
        self.model_dir = model_dir
        self.device = device
        self._pipe: Any = None
        self._lock = threading.Lock()  # one model call at a time; SQLite reads under it too
        vectors = VectorIndex.load(self.folder)
        if vectors is None or vectors.generation != self.catalog.generation:
            log.warning("%s: the vector index is missing or older than the catalog; rebuilding it in memory "
                        "(run `videolang index` again to save it)", self.folder)
            ids, emb = self.catalog.embeddings(int(self.meta["dim"]))
            vectors, _ = build_vector_index(ids, emb, generation=self.catalog.generation)
        self.vectors = vectors

    @property
    def pipeline(self) -> Any:
        """The model folder's pipeline, loaded on first use."""
        if self._pipe is None:
            from videolang.pipelines import load

            self._pipe = load(self.model_dir, device=self.device)
        return self._pipe

    def close(self) -> None:
        self.catalog.close()

    # -- queries -----------------------------------------------------------------------------

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query embeddings as the index stores its windows' (unit norm for cosine models)."""
        for t in texts:
            check_query(t)
        with self._lock:
            emb = self.pipeline.encode_text(list(texts)).float()
        if self.meta.get("metric") == "cosine":
            emb = torch.nn.functional.normalize(emb, dim=-1)
        return emb.numpy()

    def search(self, text: str, k: int = 10, *, rerank: Reranker | None = None, rerank_top: int = 50) -> list[Hit]:
        """The ``k`` best moments for ``text``; with ``rerank``, the first stage's ``rerank_top``
        best re-scored by that model and the ``k`` best of those returned."""
        return self.search_many([text], k, rerank=rerank, rerank_top=rerank_top)[0]

    def search_many(self, texts: Sequence[str], k: int = 10, *, rerank: Reranker | None = None,
                    rerank_top: int = 50) -> list[list[Hit]]:
        """:meth:`search` for several queries at once (one model call for the first stage)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not texts:
            return []
        first = max(k, rerank_top) if rerank is not None else k
        queries = self.embed_queries(texts)
        wanted = min(len(self.vectors), 4 * first + 8)  # room for folding overlapping windows
        scores, ids = self.vectors.search(queries, wanted)
        with self._lock:
            info = self.catalog.windows_by_id(sorted({int(i) for i in ids.ravel() if i >= 0}))
        found = [self._fold(s, w, info, first) for s, w in zip(scores, ids, strict=True)]
        if rerank is None:
            return found
        return [self._rerank(rerank, text, hits)[:k] for text, hits in zip(texts, found, strict=True)]

    def _rerank(self, reranker: Reranker, text: str, hits: list[Hit]) -> list[Hit]:
        files = {h.video_id: self.video_file(h.video_id) for h in hits}
        kept = [h for h in hits if files[h.video_id] is not None]  # files gone since indexing drop out
        scores = reranker.score(text, [(files[h.video_id], h.start, h.end) for h in kept])
        for hit, score in zip(kept, scores, strict=True):
            hit.first_score, hit.score = hit.score, float(score)
        return sorted(kept, key=lambda h: -h.score)

    @staticmethod
    def _fold(scores: np.ndarray, ids: np.ndarray, info: dict, k: int) -> list[Hit]:
        """Best-first hits, dropping a window that mostly overlaps a better one of its video."""
        hits: list[Hit] = []
        for score, wid in zip(scores.tolist(), ids.tolist(), strict=True):
            if wid < 0 or wid not in info:
                continue
            video_id, path, start, end = info[wid]
            hit = Hit(path, start, end, float(score), int(wid), int(video_id))
            if any(h.video_id == hit.video_id and _overlap(h, hit) > 0.5 for h in hits):
                continue
            hits.append(hit)
            if len(hits) == k:
                break
        return hits

    # -- what the hits point to --------------------------------------------------------------

    def video_file(self, video_id: int) -> Path | None:
        """The indexed file of a video id, only if it is (still) inside the indexed folder."""
        with self._lock:
            video = self.catalog.video(video_id)
        return None if video is None else _file_inside(self.root, video.path)

    def thumbnail(self, window_id: int) -> bytes | None:
        with self._lock:
            return self.catalog.thumbnail(window_id)

    def stats(self) -> dict[str, Any]:
        """Videos, windows, model, index kind: what ``/api/stats`` reports."""
        with self._lock:
            videos, windows = self.catalog.counts()
            vectors_report = self.catalog.get_meta("vectors_report", {})
        return {"videos": videos, "windows": windows, "root": str(self.root),
                "model": {k: self.meta[k] for k in ("folder", "family", "task", "sha256", "metric", "dim")},
                "index": {"kind": self.vectors.kind, **self.vectors.params,
                          **{k: v for k, v in vectors_report.items() if k.startswith("recall")}}}


def check_query(text: object) -> str:
    """A query must be non-empty text of at most ``MAX_QUERY_CHARS`` characters
    (:class:`~videolang.errors.QueryError`, a ``ValueError``, otherwise)."""
    if not isinstance(text, str):
        raise QueryError(f"a query must be text, not {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise QueryError("the query is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query has {len(text)} characters; at most {MAX_QUERY_CHARS}")
    return stripped


def ask(index_dir: str | os.PathLike, video: str, question: str, model: str | os.PathLike, *,
        choices: Sequence[str] | None = None, start: float | None = None, end: float | None = None,
        top_k: int = 3, device: str | torch.device = "cpu") -> list[tuple[str, float]]:
    """Answer ``question`` about one indexed video (or its ``start``-``end`` moment) with a QA
    model folder: ClipBERT open-ended QA (its answer vocabulary), or a multiple-choice model
    (ClipBERT or VLM) over ``choices``. ``(answer, score)`` best first."""
    from videolang.pipelines import load
    from videolang.search.rerank import moment_frames

    check_query(question)
    path = _indexed_file(index_dir, video)
    pipe = load(model, device=device)
    target: Any = str(path)
    if start is not None or end is not None:
        fps = 2 * pipe.spec.sampling.target_fps if pipe.spec.family == "clipbert" else 10.0
        target = moment_frames(path, start or 0.0, end if end is not None else float("inf"), fps)
    family, task = pipe.spec.family, pipe.spec.task
    if family == "clipbert" and task in ("qa", "vqa"):
        return [(p.label, p.score) for p in pipe.answer(target, question, top_k=top_k)[0]]
    clipbert_choices = family == "clipbert" and task in ("mc", "retrieval")
    if not (clipbert_choices or (family == "vlm" and pipe.supports("answer"))):
        raise ConfigError(f"{model}: a {family} {task} model does not answer questions; give a ClipBERT QA folder, "
                          "or a ClipBERT / VLM multiple-choice folder with --choices")
    if not choices:
        raise ConfigError(f"a {family} {task} model answers among choices: give --choices")
    if clipbert_choices:
        return [(p.label, p.score) for p in pipe.answer_choices(target, question, list(choices), top_k=top_k)[0]]
    scores = pipe.answer(target, [list(choices)])[0].scores
    order = scores.argsort(descending=True).tolist()[:top_k]
    return [(choices[j], float(scores[j])) for j in order]


def _file_inside(root: str | os.PathLike, rel: str) -> Path | None:
    """The regular file ``root / rel`` with links resolved, or None when it is gone or its real
    path leads outside ``root`` (what search, the server and ``ask`` may ever open)."""
    root = Path(root).resolve()
    path = (root / rel).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def _indexed_file(index_dir: str | os.PathLike, video: str) -> Path:
    """The file of a video of the index (its path relative to the indexed folder)."""
    with Catalog(Path(index_dir) / CATALOG_FILE, readonly=True) as catalog:
        root = Path(catalog.get_meta("root")).resolve()
        rel = Path(video)
        rel = rel.resolve().relative_to(root) if rel.is_absolute() and rel.resolve().is_relative_to(root) else rel
        if catalog.video_at(rel.as_posix()) is None:
            raise ConfigError(f"{video} is not in the index {index_dir} (give the path as `videolang search` prints it)")
    path = _file_inside(root, rel.as_posix())
    if path is None:
        raise ConfigError(f"{video}: the indexed file is gone from {root}")
    return path


def open_index(folder: str | os.PathLike, *, model: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> SearchIndex:
    """Open an index folder (written by ``videolang index``) for search."""
    return SearchIndex(folder, model=model, device=device)
