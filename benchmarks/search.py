"""Vector search at scale: the index ``videolang index`` builds, on 1M clustered 512-d vectors.

Builds the index through ``videolang.search.vectors.build_vector_index`` (``--kind auto`` by
default, the choice ``videolang index`` makes for this size) and prints what it measured:

* build time (and the index's own report: kind, settings, recall on its held-out windows);
* memory: the saved index's bytes and the process's peak RSS while building;
* latency per query on ONE thread (``faiss.omp_set_num_threads(1)``), queries issued one at a
  time through ``VectorIndex.search``: p50 / p99 / mean, plus exact search's for comparison;
* recall@10 of those queries against exact search (``IndexFlatIP``);
* the cost of an incremental update (``--update``: windows removed and added, ``previous=``).

Data, as embeddings of many videos' windows would be: ``--clusters`` Gaussian clusters (one per
video, N/clusters windows each). A cluster's centre leans towards one of ``--topics`` shared
directions (videos about the same thing are alike: cos 0.5 between centres of a topic); its
windows vary mostly along ``--rank`` directions of its own (a video drifts along a few
directions) with ``--spread``, plus isotropic ``--noise``; every vector is unit-normed. The
queries are further draws from the same clusters: none is in the index. Everything is seeded.

Usage: ``python benchmarks/search.py [--n 1000000] [--dim 512] [--clusters 4000] [--kind auto]``
(``--n 100000`` runs in about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from videolang.search.vectors import RECALL_TARGET, VectorIndex, build_vector_index, recall_at_k


def clustered(n: int, d: int, clusters: int, topics: int, rank: int, spread: float, noise: float,
              seed: int) -> np.ndarray:
    """``n`` unit vectors from the clusters (whose shapes depend on ``clusters``/``topics``
    only); ``seed`` picks the draws, so two seeds give two samples of the same clusters."""
    shape_rng, rng = np.random.default_rng(1234), np.random.default_rng(seed)
    centres = _unit(shape_rng.standard_normal((clusters, d), dtype=np.float32))
    if topics:
        topic = _unit(shape_rng.standard_normal((topics, d), dtype=np.float32))
        centres = np.sqrt(0.5) * topic[shape_rng.integers(0, topics, clusters)] + np.sqrt(0.5) * centres
    axes = shape_rng.standard_normal((clusters, rank, d), dtype=np.float32) / np.sqrt(d)
    labels = rng.integers(0, clusters, n)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(clusters + 1))
    out = np.empty((n, d), np.float32)
    for c in range(clusters):  # one cluster at a time: rows stay in random order
        rows = order[bounds[c]:bounds[c + 1]]
        z = rng.standard_normal((len(rows), rank), dtype=np.float32) * (spread / np.sqrt(rank))
        x = centres[c] + z @ axes[c] + rng.standard_normal((len(rows), d), dtype=np.float32) * (noise / np.sqrt(d))
        out[rows] = _unit(x)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rss_gib(field: str = "VmRSS") -> float:
    """The process's resident memory (``VmHWM``: its peak) from /proc, in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: ``5`` to clear_refs); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def latencies(vi: VectorIndex, queries: np.ndarray, k: int, warmup: int = 50) -> np.ndarray:
    """Seconds per call of one query each, on the current faiss thread count."""
    for q in queries[:warmup]:
        vi.search(q[None], k)
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t = time.perf_counter()
        vi.search(q[None], k)
        out[i] = time.perf_counter() - t
    return out


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.machine()}, python "
            f"{platform.python_version()}, faiss {faiss.__version__}, numpy {np.__version__}")


def ms(x: np.ndarray, q: float) -> str:
    return f"{np.percentile(x, q) * 1e3:.3f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="windows in the index")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--clusters", type=int, default=None, help="videos (default: one per 250 windows)")
    p.add_argument("--topics", type=int, default=None, help="shared directions (default: clusters / 20)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--spread", type=float, default=0.8)
    p.add_argument("--noise", type=float, default=0.6)
    p.add_argument("--queries", type=int, default=2000, help="held-out queries, one at a time")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--kind", default="auto", choices=["auto", "flat", "ivf", "hnsw", "ivfpq"])
    p.add_argument("--update", type=int, default=1000, help="windows removed and added in the update test (0: none)")
    p.add_argument("--exact-latency", type=int, default=50, help="one-thread exact queries timed for comparison")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    clusters = args.clusters or max(1, args.n // 250)
    topics = args.topics if args.topics is not None else max(1, clusters // 20)
    shape = dict(d=args.dim, clusters=clusters, topics=topics, rank=args.rank, spread=args.spread, noise=args.noise)
    print(f"machine: {machine()}; faiss build threads {faiss.omp_get_max_threads()}")
    print(f"data: {args.n:,} x {args.dim}, {clusters} clusters, {topics} topics, rank {args.rank}, "
          f"spread {args.spread}, noise {args.noise}; {args.queries} held-out queries; seed {args.seed}")

    t = time.perf_counter()
    vectors = clustered(args.n, seed=args.seed, **shape)
    queries = clustered(args.queries, seed=args.seed + 1, **shape)
    ids = np.arange(args.n, dtype=np.int64) * 2 + 1  # window ids are not row numbers
    print(f"generated in {time.perf_counter() - t:.1f} s; RSS {rss_gib():.2f} GiB (the vectors: "
          f"{vectors.nbytes / 2**30:.2f} GiB)")

    base_rss, windowed = rss_gib(), reset_peak_rss()
    t = time.perf_counter()
    vi, report = build_vector_index(ids, vectors, kind=args.kind, k=args.k, seed=args.seed)
    build = time.perf_counter() - t
    peak = rss_gib("VmHWM")
    print(f"build: {build:.1f} s wall ({report.get('build_seconds')} s reported)")
    print(f"index report: {report}")
    print(f"memory: peak RSS while building {peak:.2f} GiB ({'since' if windowed else 'process peak, incl.'} "
          f"the {base_rss:.2f} GiB before it), RSS after {rss_gib():.2f} GiB")

    faiss.omp_set_num_threads(1)
    lat = latencies(vi, queries, args.k)
    print(f"latency, 1 thread, {len(lat)} queries one at a time: p50 {ms(lat, 50)}, p99 {ms(lat, 99)}, "
          f"mean {lat.mean() * 1e3:.3f} ms")
    found = vi.search(queries, args.k)[1]

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(vectors)
    truth = ids[exact.search(queries, args.k)[1]]
    recall = recall_at_k(found, truth, args.k)
    print(f"recall@{args.k} against exact search (IndexFlatIP) on the {len(queries)} held-out queries: {recall:.4f}")
    if args.exact_latency:
        faiss.omp_set_num_threads(1)
        flat = VectorIndex(exact, ids, "flat")
        el = latencies(flat, queries[:args.exact_latency], args.k, warmup=2)
        print(f"exact search for comparison, 1 thread: p50 {ms(el, 50)} ({len(el)} queries)")
    del exact
    faiss.omp_set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory(prefix="vl-search-bench-") as folder:
        t = time.perf_counter()
        vi.save(folder)
        saved = time.perf_counter() - t
        size = sum(f.stat().st_size for f in Path(folder).iterdir())
        t = time.perf_counter()
        VectorIndex.load(folder)
        print(f"index on disk: {size / 2**30:.3f} GiB ({size / args.n:.0f} bytes a window); save "
              f"{saved:.1f} s, load {time.perf_counter() - t:.1f} s")

    p50 = float(np.percentile(lat, 50)) * 1e3
    met = p50 < 5.0 and recall >= RECALL_TARGET
    print(f"goal (p50 < 5 ms at recall@{args.k} >= {RECALL_TARGET}): {'met' if met else 'NOT met'} "
          f"(p50 {p50:.3f} ms, recall {recall:.4f}, kind {vi.kind})")

    if args.update:
        update(vi, ids, vectors, queries, args, shape)


def update(vi: VectorIndex, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, args: argparse.Namespace,
           shape: dict) -> None:
    """Remove ``--update`` windows and add as many new ones, incrementally (``previous=``);
    then latency and recall of the updated index."""
    u = min(args.update, len(ids) // 2)
    new_ids = np.concatenate([ids[u:], ids[-1] + 2 + 2 * np.arange(u)])
    new_vectors = np.concatenate([vectors[u:], clustered(u, seed=args.seed + 2, **shape)])
    del vectors
    t = time.perf_counter()
    vi, report = build_vector_index(new_ids, new_vectors, kind=args.kind, k=args.k, seed=args.seed,
                                    previous=vi, generation=1)
    print(f"incremental update (-{u} +{u} windows): {time.perf_counter() - t:.1f} s; report: {report}")
    faiss.omp_set_num_threads(1)
    lat = latencies(vi, queries, args.k)
    found = vi.search(queries, args.k)[1]
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    truth = new_ids[faiss.knn(queries, new_vectors, args.k, metric=faiss.METRIC_INNER_PRODUCT)[1]]
    print(f"after the update: p50 {ms(lat, 50)}, p99 {ms(lat, 99)}, recall@{args.k} "
          f"{recall_at_k(found, truth, args.k):.4f}")


if __name__ == "__main__":
    main()
