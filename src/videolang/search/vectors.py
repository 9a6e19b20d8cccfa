"""The faiss side of an index: window embeddings -> a maximum-inner-product index.

Embeddings of cosine models are stored unit-normed, so inner product is every model's
similarity. ``kind="auto"`` picks exact search up to ``EXACT_MAX`` windows, IVF-Flat up to
``HNSW_MAX`` and IVF-PQ with 8-bit refinement beyond; search settings are tuned on held-out
windows to ``RECALL_TARGET``, and updates are incremental (``previous=``). The tiers, the
measurements behind them and the rebuild rules: docs/search.md ("Vector search at scale").
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videolang.errors import StoreError
from videolang.utils.io import atomic_output, atomic_write_text

__all__ = ["EXACT_MAX", "HNSW_MAX", "KINDS", "RECALL_TARGET", "VectorIndex", "build_vector_index",
           "recall_at_k"]

log = logging.getLogger(__name__)

EXACT_MAX = 50_000
HNSW_MAX = 4_000_000  # bounds the full-precision approximate tier (IVF-Flat); name kept
RECALL_TARGET = 0.95
KINDS = ("flat", "ivf", "hnsw", "ivfpq")
MAX_DEAD_SHARE = 0.25
REGROW = 4
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 120
REFINE_K_FACTOR = 16
VECTORS_FILE, VECTORS_INFO = "vectors.faiss", "vectors.json"
IDS_FILE, FINGERPRINTS_FILE = "vectors.ids.npy", "vectors.fingerprints.npy"
_HELD_OUT = 1000  # recall@10 measured on this many held-out windows (fewer for small additions)
_MIN_UPDATE_HELD = 50  # an update adding fewer new windows keeps the recall measured before
_MIN_APPROX = 64  # fewer windows than this: exact search whatever the kind asked
# Settings are tuned to reach the target plus this margin on the held-out sample: recall over
# 1,000 queries varies by about +-0.005 from sample to sample, and the target is for all queries.
_MARGIN = 0.01
_MEASURED = ("recall@", "held_out", "recall_measured")  # report keys of the last recall measurement
_CHUNK = 65536
_TUNING = {"hnsw": ("efSearch", [16, 32, 48, 64, 96, 128, 192, 256, 384, 512]),
           "ivf": ("nprobe", [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024]),
           "ivfpq": ("nprobe", [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024])}


@dataclass
class VectorIndex:
    """A faiss index over window embeddings; ``ids[i]`` is the window id of faiss row ``i``
    (``-1``: a removed window, masked out of search). ``fingerprints[i]`` hashes row ``i``'s
    embedding, so an update can tell unchanged windows from reused ids."""

    index: Any
    ids: np.ndarray
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    fingerprints: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self._live = int(np.count_nonzero(self.ids >= 0))
        self._search_params, self._keep_alive = _search_parameters(self.kind, self.params, self.ids)
        self.apply_params()

    def __len__(self) -> int:
        """Searchable windows (masked rows not counted)."""
        return self._live

    @property
    def dead_rows(self) -> int:
        return len(self.ids) - self._live

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, window ids)``, each ``(Q, k)``, best first; id ``-1`` where fewer exist."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self._live == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        scores, rows = self._rows(q, min(int(k), self._live))
        ids = np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], -1)
        return scores, ids

    def _rows(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._search_params is None:
            return self.index.search(q, k)
        return self.index.search(q, k, params=self._search_params)

    def save(self, folder: str | os.PathLike) -> None:
        """``vectors.faiss``, the window ids, their fingerprints and ``vectors.json``, each
        atomically; the JSON (written last) names what the other files must be, so a save
        killed half-way is seen as incomplete by :meth:`load`."""
        import faiss

        folder = Path(folder)
        with atomic_output(folder / VECTORS_FILE, overwrite=True) as tmp:
            faiss.write_index(self.index, str(tmp))
        _save_npy(folder / IDS_FILE, self.ids)
        info = {"kind": self.kind, "params": self.params, "generation": self.generation, "count": len(self),
                "rows": len(self.ids), "faiss": _digest(folder / VECTORS_FILE),
                "ids_sha256": _sha256(folder / IDS_FILE)}
        if self.fingerprints is not None:
            _save_npy(folder / FINGERPRINTS_FILE, self.fingerprints)
            info["fingerprints_sha256"] = _sha256(folder / FINGERPRINTS_FILE)
        atomic_write_text(folder / VECTORS_INFO, json.dumps(info, indent=1), overwrite=True)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> VectorIndex | None:
        """The saved index, or ``None`` when there is none (or it is incomplete)."""
        import faiss

        folder = Path(folder)
        paths = [folder / VECTORS_FILE, folder / IDS_FILE, folder / VECTORS_INFO]
        if not all(p.is_file() for p in paths):
            return None
        try:
            info = json.loads(paths[2].read_text())
            if not _consistent(folder, info):
                log.warning("%s: the vector index files do not match %s (a save was interrupted)", folder,
                            VECTORS_INFO)
                return None
            ids = np.load(paths[1], allow_pickle=False)
            fps = np.load(folder / FINGERPRINTS_FILE, allow_pickle=False) if "fingerprints_sha256" in info else None
            index = faiss.read_index(str(paths[0]))
        except Exception as exc:  # a damaged file: rebuilt from the catalog
            raise StoreError(f"{folder}: cannot read the vector index ({exc})") from exc
        if index.ntotal != len(ids) or (fps is not None and len(fps) != len(ids)):
            log.warning("%s: the vector index has %d rows for %d ids", folder, index.ntotal, len(ids))
            return None
        return cls(index, ids, info["kind"], info.get("params", {}), int(info.get("generation", -1)), fps)

    def apply_params(self) -> None:
        """Search-time settings (``efSearch``, ``nprobe``, ``k_factor``) onto the faiss index, so
        that calling ``index.search`` directly uses them too (without the removed-row mask)."""
        import faiss

        if "efSearch" in self.params:
            self.index.hnsw.efSearch = int(self.params["efSearch"])
        if "nprobe" in self.params:
            faiss.extract_index_ivf(self.index).nprobe = int(self.params["nprobe"])
        if "k_factor" in self.params:
            self.index.k_factor = float(self.params["k_factor"])


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of each query's true ``k`` nearest found among its ``k`` results."""
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / k if hits else 1.0


def fingerprints(vectors: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's float32 bytes (exact integer arithmetic, so deterministic)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    weights = np.random.default_rng(0x5EED).integers(1, 2**63, size=vectors.shape[1], dtype=np.uint64) * 2 + 1
    out = np.empty(len(vectors), np.uint64)
    for s in range(0, len(vectors), 8192):
        words = vectors[s:s + 8192].view(np.uint32).astype(np.uint64)
        out[s:s + 8192] = (words * weights).sum(axis=1, dtype=np.uint64)  # wraps mod 2**64
    return out.view(np.int64)


def build_vector_index(ids: np.ndarray, vectors: np.ndarray, *, kind: str = "auto", generation: int = 0,
                       exact_max: int | None = None, hnsw_max: int | None = None,
                       recall_target: float | None = None, k: int = 10, seed: int = 0,
                       previous: VectorIndex | None = None) -> tuple[VectorIndex, dict[str, Any]]:
    """The index for ``vectors`` ``(N, d)`` with window ``ids`` ``(N,)`` (see the module
    docstring) and a report: kind, settings, seconds, recall@k against exact search on held-out
    windows, and whether it was updated from ``previous`` (whose faiss index it then extends in
    place) or rebuilt, and why. Thresholds left out are the module's at call time."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape if vectors.ndim == 2 else (0, 0)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} window ids for {n} vectors")
    kind, note = _resolve_kind(kind, n, EXACT_MAX if exact_max is None else exact_max,
                               HNSW_MAX if hnsw_max is None else hnsw_max)
    target = RECALL_TARGET if recall_target is None else recall_target
    start = time.perf_counter()
    fps = fingerprints(vectors) if n else np.zeros(0, np.int64)
    plan = _plan_update(previous, kind, d, ids, fps, n)
    fresh = isinstance(plan, str)
    held = _held_out(np.arange(n) if fresh else plan[2], kind, 1 if fresh else _MIN_UPDATE_HELD, seed)
    if fresh:
        builder = _Builder.fresh(kind, vectors, ids, fps, held, seed)
        how: dict[str, Any] = {"rebuilt": plan}
    else:
        builder = _Builder.update(previous, vectors, ids, fps, held, *plan)
        how = {"updated": {"kept": len(plan[1]), "added": len(plan[2]), "removed": int(plan[3])}}
    recall = builder.add_and_tune(k, target)
    vi = builder.result(generation)
    report = {"kind": kind, "windows": int(n), "dim": int(d), "build_seconds": round(time.perf_counter() - start, 3),
              **({"note": note} if note else {}), **how, **vi.params, "rows": len(vi.ids),
              "dead_rows": vi.dead_rows, "recall_target": target}
    if kind == "flat":
        report[f"recall@{k}"] = 1.0  # exact search
    elif recall is not None:
        report.update({f"recall@{k}": round(recall[0], 4), "held_out_queries": recall[1],
                       "recall_measured_at_generation": generation})
    elif previous is not None and "updated" in how:  # too few new windows to measure: the last measurement stands
        report.update({key: v for key, v in previous.params.items() if key.startswith(_MEASURED)})
    if report.get(f"recall@{k}", 1.0) < target:
        log.warning("vector index (%s): recall@%d %.3f is below the target %.2f even at the largest setting",
                    kind, k, report[f"recall@{k}"], target)
    # The measurement travels with the index, so a later small update can report it.
    vi.params.update({key: report[key] for key in report if key.startswith(_MEASURED)})
    return vi, report


def _resolve_kind(kind: str, n: int, exact_max: int, hnsw_max: int) -> tuple[str, str | None]:
    """The kind to build for ``n`` windows, and a note when the one asked for is not it."""
    if kind == "auto":
        kind = "flat" if n <= exact_max else "ivf" if n <= hnsw_max else "ivfpq"
    if kind not in KINDS:
        raise ValueError(f"unknown vector index kind {kind!r}; choose auto, {', '.join(KINDS)}")
    if kind != "flat" and n < _MIN_APPROX:
        return "flat", f"{n} windows: exact search (an approximate index needs {_MIN_APPROX})"
    return kind, None


# -- building ---------------------------------------------------------------------------------


def _held_out(todo: np.ndarray, kind: str, min_held: int, seed: int) -> np.ndarray:
    """Rows of ``todo`` (the windows being added) kept out of the index, and out of its
    training sample, while the search setting is tuned; none for exact search or when fewer
    than ``min_held`` would be drawn."""
    size = min(_HELD_OUT, len(todo) // 10) if kind != "flat" else 0
    if size < min_held:
        return np.zeros(0, np.int64)
    return np.sort(np.random.default_rng(seed).choice(todo, size=size, replace=False))


def _plan_update(previous: VectorIndex | None, kind: str, d: int, ids: np.ndarray, fps: np.ndarray,
                 n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | str:
    """``(previous rows kept, their rows in vectors, new rows in vectors, removed count)``, or
    why the index must be built from scratch."""
    if previous is None:
        return "no previous index"
    if previous.kind != kind:
        return f"kind {previous.kind} -> {kind}"
    if kind == "flat":
        return "exact index (rebuilding it costs no more than copying the vectors)"
    if previous.fingerprints is None or previous.index.d != d:
        return "previous index without fingerprints or of another dimension"
    live = np.flatnonzero(previous.ids >= 0)
    order = live[np.argsort(previous.ids[live], kind="stable")]
    sorted_ids = previous.ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(order) - 1, 0))
    candidate = order[pos] if len(order) else np.zeros(len(ids), np.int64)
    match = (sorted_ids[pos] == ids) & (previous.fingerprints[candidate] == fps) if len(order) else np.zeros(
        len(ids), bool)
    kept_rows, kept_vec, new_vec = candidate[match], np.flatnonzero(match), np.flatnonzero(~match)
    removed = len(live) - len(kept_rows)
    dead = previous.dead_rows + removed
    if dead > MAX_DEAD_SHARE * (len(previous.ids) + len(new_vec)):
        return f"{dead} removed rows would exceed {MAX_DEAD_SHARE:.0%} of the index"
    trained_on = int(previous.params.get("trained_on", 0))
    if kind in ("ivf", "ivfpq") and n > REGROW * trained_on:
        return f"{n} windows, over {REGROW}x the {trained_on} its lists were trained on"
    return kept_rows, kept_vec, new_vec, removed


class _Builder:
    """Rows go into ``index`` in order: those kept from before, new ones, then the held-out
    sample once the settings are tuned; ``source[row]`` is the row of ``vectors`` it holds."""

    def __init__(self, kind: str, index: Any, vectors: np.ndarray, ids: np.ndarray, fps: np.ndarray,
                 row_ids: np.ndarray, row_fps: np.ndarray, source: np.ndarray, todo: np.ndarray,
                 held: np.ndarray, params: dict[str, Any]):
        self.kind, self.index, self.vectors, self.ids, self.fps = kind, index, vectors, ids, fps
        self.row_ids, self.row_fps, self.source, self.params = row_ids, row_fps, source, params
        self.todo, self.held = todo, held

    @classmethod
    def fresh(cls, kind: str, vectors: np.ndarray, ids: np.ndarray, fps: np.ndarray, held: np.ndarray,
              seed: int) -> _Builder:
        index, params = _new_index(kind, vectors, held, seed)
        empty = np.zeros(0, np.int64)
        return cls(kind, index, vectors, ids, fps, empty, empty, empty, np.arange(len(vectors)), held, params)

    @classmethod
    def update(cls, previous: VectorIndex, vectors: np.ndarray, ids: np.ndarray, fps: np.ndarray,
               held: np.ndarray, kept_rows: np.ndarray, kept_vec: np.ndarray, new_vec: np.ndarray,
               removed: int) -> _Builder:
        del removed
        row_ids = np.full(len(previous.ids), -1, np.int64)
        row_ids[kept_rows] = previous.ids[kept_rows]
        source = np.full(len(previous.ids), -1, np.int64)
        source[kept_rows] = kept_vec
        params = {key: v for key, v in previous.params.items() if not key.startswith(_MEASURED)}
        return cls(previous.kind, previous.index, vectors, ids, fps, row_ids, previous.fingerprints.copy(), source,
                   new_vec, held, params)

    def _add(self, rows: np.ndarray) -> None:
        """Append ``vectors[rows]`` in chunks (no copy of the whole collection)."""
        for s in range(0, len(rows), _CHUNK):
            part = rows[s:s + _CHUNK]
            self.index.add(self.vectors[part])
        self.row_ids = np.concatenate([self.row_ids, self.ids[rows]])
        self.row_fps = np.concatenate([self.row_fps, self.fps[rows]])
        self.source = np.concatenate([self.source, rows])

    def add_and_tune(self, k: int, target: float) -> tuple[float, int] | None:
        """Add the new rows; tune the search setting on the held-out ones before adding them
        (``(recall, queries)``; ``None`` when none were held out)."""
        held = self.held
        self._add(self.todo[~np.isin(self.todo, held)])
        if not len(held):
            return None
        k_eff = min(k, int(np.count_nonzero(self.source >= 0)))
        queries = self.vectors[held]
        kth = _exact_kth(queries, self.vectors, k_eff, exclude=held)
        recall = self._tune(queries, kth, k_eff, target)
        self._add(held)
        return recall, len(held)

    def _tune(self, queries: np.ndarray, kth: np.ndarray, k: int, target: float) -> float:
        """The smallest setting whose recall@k reaches ``target`` plus the margin (else the
        largest: ``nprobe = nlist`` is exact for IVF-Flat)."""
        name, values = _TUNING[self.kind]
        if self.kind != "hnsw":
            nlist = _ivf(self.index).nlist
            values = [v for v in values if v < nlist] + [nlist]
        recall = 0.0
        for value in values:
            self.params[name] = value
            probe = self.result(-1)
            rows = probe._rows(queries, k)[1]
            recall = _tied_recall(queries, rows, self.source, self.vectors, kth, k)
            if recall >= min(target + _MARGIN, 1.0):
                break
        return recall

    def result(self, generation: int) -> VectorIndex:
        return VectorIndex(self.index, self.row_ids.copy(), self.kind, dict(self.params), generation,
                           self.row_fps.copy())


def _ivf(index: Any) -> Any:
    import faiss

    return faiss.extract_index_ivf(index)


def _new_index(kind: str, vectors: np.ndarray, held: np.ndarray, seed: int) -> tuple[Any, dict[str, Any]]:
    """An empty faiss index of ``kind``, trained on rows other than ``held`` (a held-out window
    in k-means' sample pulls its list's centroid towards itself, flattering the recall measured
    on it), and its build settings."""
    import faiss

    n, d = vectors.shape if vectors.ndim == 2 else (0, 0)
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(max(d, 1)), {}
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, ip)
        # efConstruction 120, not faiss's 40: on clustered data 40 left recall@10 stuck near 0.97
        # at any efSearch (the graph barely links the clusters); 120 costs ~1.8x the build time.
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return index, {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
    # 4 sqrt(N) lists (~250 windows each at 1M) with >= 39 training points per list, as k-means needs.
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, ip)
        params: dict[str, Any] = {"nlist": nlist}
    else:
        m = max(x for x in range(1, max(d // 4, 1) + 1) if d % x == 0)  # 4-bit codes: d/8 bytes a vector at most
        base = faiss.index_factory(d, f"IVF{nlist},PQ{m}x4fs", ip)
        index = faiss.IndexRefine(base, faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, ip))
        params = {"nlist": nlist, "pq_m": m, "k_factor": REFINE_K_FACTOR}
    rng = np.random.default_rng(seed)
    # 32 points a list is plenty for k-means and keeps training at ~2 min for 1M on 2 cores.
    pool = np.setdiff1d(np.arange(n), held, assume_unique=True)
    sample = vectors[np.sort(rng.choice(pool, size=min(len(pool), 32 * nlist), replace=False))]
    norms = np.linalg.norm(sample, axis=1)
    ivf = _ivf(index)
    ivf.cp.spherical = bool(np.allclose(norms, 1.0, atol=1e-3))  # unit vectors: centroids on the sphere
    ivf.cp.seed = seed
    index.train(sample)
    params["trained_on"] = int(n)
    return index, params


def _search_parameters(kind: str, params: dict[str, Any], ids: np.ndarray) -> tuple[Any, tuple]:
    """faiss search parameters for ``params``, masking rows whose id is ``-1``; and the objects
    they point to (SWIG does not keep them alive)."""
    import faiss

    keep: list[Any] = []
    sel = None
    if np.any(ids < 0):
        bitmap = np.packbits(ids >= 0, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(ids), faiss.swig_ptr(bitmap))
        keep += [bitmap, sel]
    extra = {"sel": sel} if sel is not None else {}
    if kind == "hnsw" and "efSearch" in params:
        sp = faiss.SearchParametersHNSW(efSearch=int(params["efSearch"]), **extra)
    elif kind == "ivf" and "nprobe" in params:
        sp = faiss.SearchParametersIVF(nprobe=int(params["nprobe"]), **extra)
    elif kind == "ivfpq" and "nprobe" in params:
        base = faiss.SearchParametersIVF(nprobe=int(params["nprobe"]), **extra)
        keep.append(base)
        sp = faiss.IndexRefineSearchParameters(k_factor=float(params["k_factor"]), base_index_params=base)
    elif sel is not None:
        raise StoreError(f"a {kind} vector index cannot mask removed rows; rebuild it")
    else:
        return None, ()
    keep.append(sp)
    return sp, tuple(keep)


def _exact_kth(queries: np.ndarray, vectors: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    """Each query's k-th largest inner product over ``vectors`` without the rows ``exclude``
    (exact, chunked BLAS: no copy of the collection)."""
    best = np.full((len(queries), k), -np.inf, np.float32)
    step = 16384  # 64 MB of scores for 1,000 queries
    for s in range(0, len(vectors), step):
        scores = queries @ vectors[s:s + step].T
        cut = exclude[(exclude >= s) & (exclude < s + step)] - s
        scores[:, cut] = -np.inf
        both = np.concatenate([best, scores], axis=1)
        best = -np.partition(-both, k - 1, axis=1)[:, :k]
    return best.min(axis=1)


def _tied_recall(queries: np.ndarray, rows: np.ndarray, source: np.ndarray, vectors: np.ndarray,
                 kth: np.ndarray, k: int) -> float:
    """Share of the ``k`` results whose exact score reaches the true k-th score (ties count)."""
    found = np.where(rows >= 0, source[np.clip(rows, 0, None)], -1)
    exact = np.einsum("qd,qkd->qk", queries, vectors[np.clip(found, 0, None)])
    hits = (found >= 0) & (exact >= kth[:, None] - 1e-5 * np.maximum(1.0, np.abs(kth[:, None])))
    return float(np.minimum(hits.sum(axis=1), k).mean()) / k


# -- files ------------------------------------------------------------------------------------


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(path: Path, edge: int = 1 << 20) -> str:
    """Size plus a hash of the first and last MiB: cheap (the file can be GBs), and a file
    with other rows or lists differs there (rows are appended; lists end the file)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(edge))
        f.seek(max(size - edge, 0))
        h.update(f.read(edge))
    return h.hexdigest()


def _consistent(folder: Path, info: dict[str, Any]) -> bool:
    """Do the files match what ``vectors.json`` recorded? (Files saved before these checks
    existed carry no record and pass.)"""
    checks = {"faiss": (VECTORS_FILE, _digest), "ids_sha256": (IDS_FILE, _sha256),
              "fingerprints_sha256": (FINGERPRINTS_FILE, _sha256)}
    for key, (name, digest) in checks.items():
        if key in info and (not (folder / name).is_file() or digest(folder / name) != info[key]):
            return False
    return True
