"""The faiss side of the search index: every kind on small clustered data, recall honesty,
save/load, the size thresholds of ``kind="auto"``, empty indexes, window ids, incremental updates."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from videolang.search import vectors as vmod
from videolang.search.vectors import RECALL_TARGET, VectorIndex, build_vector_index, recall_at_k

D = 32


def clustered(n: int, clusters: int = 40, seed: int = 0, noise: float = 0.5) -> np.ndarray:
    """Unit vectors around ``clusters`` fixed centres (the same centres for every seed)."""
    centres = np.random.default_rng(99).standard_normal((clusters, D)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_ids(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    return ids[faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)[1]]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = clustered(4000)
    ids = np.random.default_rng(1).choice(10**9, size=len(x), replace=False).astype(np.int64)  # not row numbers
    return ids, x


@pytest.fixture(scope="module")
def built(data) -> dict[str, tuple[VectorIndex, dict]]:
    ids, x = data
    return {kind: build_vector_index(ids, x, kind=kind) for kind in ("flat", "ivf", "hnsw", "ivfpq")}


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_each_kind_finds_in_index_vectors_and_reports_recall(data, built, kind):
    ids, x = data
    vi, report = built[kind]
    assert vi.kind == report["kind"] == kind and len(vi) == report["windows"] == len(x)
    scores, found = vi.search(x[:200], 10)
    assert found.shape == scores.shape == (200, 10)
    assert (found[:, 0] == ids[:200]).all()  # each stored vector is its own nearest neighbour
    assert np.isin(found, ids).all() and (np.diff(scores, axis=1) <= 1e-5).all()
    assert recall_at_k(found, exact_ids(x[:200], x, ids, 10), 10) >= RECALL_TARGET
    if kind == "flat":
        assert report["recall@10"] == 1.0 and (found == exact_ids(x[:200], x, ids, 10)).all()
    else:
        assert report["recall@10"] >= RECALL_TARGET and report["held_out_queries"] == 400
        assert report["recall_target"] == RECALL_TARGET
        setting = "efSearch" if kind == "hnsw" else "nprobe"
        assert report[setting] == vi.params[setting]


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq"])
def test_reported_recall_matches_new_queries(data, built, kind):
    """The held-out measurement predicts recall on queries the index never saw."""
    ids, x = data
    vi, report = built[kind]
    queries = clustered(500, seed=7)
    measured = recall_at_k(vi.search(queries, 10)[1], exact_ids(queries, x, ids, 10), 10)
    assert abs(measured - report["recall@10"]) < 0.05
    assert measured >= RECALL_TARGET - 0.02


def test_recall_measurement_is_not_flattering():
    """On structureless data a coarse IVF cannot reach the target with few probes: the tuner
    must raise nprobe, and what it reports must match an independent measurement."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(len(x))
    vi, report = build_vector_index(ids, x, kind="ivf")
    assert report["nprobe"] > 4  # with random data the true neighbours spread over many lists
    q = rng.standard_normal((300, D)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    measured = recall_at_k(vi.search(q, 10)[1], exact_ids(q, x, ids, 10), 10)
    assert abs(measured - report["recall@10"]) < 0.05


def test_ties_count_as_found():
    """Identical windows (a static video) make the k nearest ambiguous; that is not a miss."""
    x = np.concatenate([np.repeat(clustered(5, seed=4), 200, axis=0), clustered(2000, seed=5)])
    vi, report = build_vector_index(np.arange(len(x)), x, kind="ivf")
    assert report["recall@10"] >= RECALL_TARGET
    scores, found = vi.search(x[:1], 10)
    assert (found < 200).all() and np.allclose(scores, 1.0, atol=1e-4)  # ten of the copies


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_save_load_round_trip(data, built, kind, tmp_path):
    _, x = data
    vi, _ = built[kind]
    vi.generation = 7
    vi.save(tmp_path)
    back = VectorIndex.load(tmp_path)
    assert back is not None and back.kind == kind and back.generation == 7 and back.params == vi.params
    assert (back.ids == vi.ids).all() and (back.fingerprints == vi.fingerprints).all()
    q = clustered(50, seed=8)
    for a, b in zip(vi.search(q, 10), back.search(q, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / "vectors.json").read_text())["count"] == len(x)


def test_load_refuses_incomplete_saves(data, built, tmp_path):
    vi, _ = built["ivf"]
    assert VectorIndex.load(tmp_path) is None  # nothing saved
    vi.save(tmp_path)
    np.save(tmp_path / "vectors.ids.npy", vi.ids[::-1])  # as if killed between two files
    assert VectorIndex.load(tmp_path) is None
    vi.save(tmp_path)
    (tmp_path / "vectors.fingerprints.npy").unlink()
    assert VectorIndex.load(tmp_path) is None
    vi.save(tmp_path)
    assert VectorIndex.load(tmp_path) is not None


def test_auto_kind_follows_the_thresholds(monkeypatch):
    x = clustered(600)
    ids = np.arange(len(x))
    assert build_vector_index(ids, x)[0].kind == "flat"  # defaults: far below EXACT_MAX
    monkeypatch.setattr(vmod, "EXACT_MAX", 500)
    monkeypatch.setattr(vmod, "HNSW_MAX", 1000)
    assert build_vector_index(ids[:500], x[:500])[0].kind == "flat"
    assert build_vector_index(ids, x)[0].kind == "ivf"
    monkeypatch.setattr(vmod, "HNSW_MAX", 599)
    vi, report = build_vector_index(ids, x)
    assert vi.kind == "ivfpq" and report["recall@10"] >= RECALL_TARGET
    assert build_vector_index(ids, x, exact_max=10**6)[0].kind == "flat"  # arguments win
    with pytest.raises(ValueError, match="unknown vector index kind"):
        build_vector_index(ids, x, kind="lsh")


@pytest.mark.parametrize("kind", ["auto", "ivf", "hnsw"])
def test_empty_and_tiny_indexes(kind, tmp_path):
    vi, report = build_vector_index(np.zeros(0, np.int64), np.zeros((0, D), np.float32), kind=kind)
    assert len(vi) == 0 and vi.kind == "flat" and report["windows"] == 0
    scores, found = vi.search(clustered(3), 5)
    assert scores.shape == found.shape == (3, 0)
    vi.save(tmp_path)
    assert len(VectorIndex.load(tmp_path)) == 0
    x = clustered(5)
    vi, _ = build_vector_index(np.array([10, 20, 30, 40, 50]), x, kind=kind)
    scores, found = vi.search(x[:2], 10)  # k beyond the index: all of it
    assert found.shape == (2, 5) and found[0, 0] == 10 and found[1, 0] == 20
    with pytest.raises(ValueError, match="window ids"):
        build_vector_index(np.arange(4), x)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq"])
def test_incremental_update(data, kind, tmp_path):
    ids, x = data
    vi, _ = build_vector_index(ids, x, kind=kind)
    vi.save(tmp_path)
    previous = VectorIndex.load(tmp_path)  # as `videolang index` finds it
    new = clustered(600, seed=11)
    changed = 100  # ids kept, content replaced (a reused SQLite rowid)
    ids2 = np.concatenate([ids[300:], np.arange(600) + 2 * 10**9])
    x2 = np.concatenate([x[300:], new])
    x2[:changed] = clustered(changed, seed=12)
    vi2, report = build_vector_index(ids2, x2, kind=kind, previous=previous, generation=2)
    assert report["updated"] == {"kept": len(x) - 300 - changed, "added": 600 + changed, "removed": 300 + changed}
    assert len(vi2) == len(ids2) and vi2.dead_rows == 300 + changed and vi2.generation == 2
    assert report["recall@10"] >= RECALL_TARGET and report["held_out_queries"] == 70
    q = np.concatenate([x2[:changed], new[:100], clustered(200, seed=13)])
    found = vi2.search(q, 10)[1]
    assert not np.isin(found, ids[:300]).any()  # removed windows never come back
    assert (found[:changed + 100, 0] == ids2[np.r_[0:changed, len(ids2) - 600:len(ids2) - 500]]).all()
    assert recall_at_k(found, exact_ids(q, x2, ids2, 10), 10) >= RECALL_TARGET - 0.02
    vi2.save(tmp_path)
    back = VectorIndex.load(tmp_path)
    np.testing.assert_array_equal(back.search(q, 10)[1], found)  # the mask survives a save


def test_update_rebuilds_when_it_must(data):
    ids, x = data
    previous, _ = build_vector_index(ids, x, kind="ivf")
    _, report = build_vector_index(ids[:2000], x[:2000], kind="ivf", previous=previous)
    assert "removed rows" in report["rebuilt"] and report["dead_rows"] == 0  # half gone: compacted
    previous, _ = build_vector_index(ids, x, kind="ivf")
    _, report = build_vector_index(ids, x, kind="hnsw", previous=previous)
    assert report["rebuilt"] == "kind ivf -> hnsw"
    previous, _ = build_vector_index(ids[:500], x[:500], kind="ivf")
    _, report = build_vector_index(ids, x, kind="ivf", previous=previous)
    assert "trained on" in report["rebuilt"]  # 8x the data its lists were trained on


def test_small_update_keeps_the_last_measurement(data):
    ids, x = data
    previous, first = build_vector_index(ids, x, kind="ivf")
    vi, report = build_vector_index(ids[10:], x[10:], kind="ivf", previous=previous)
    assert len(vi) == len(x) - 10 and report["updated"] == {"kept": len(x) - 10, "added": 0, "removed": 10}
    assert report["recall@10"] == first["recall@10"] and report["held_out_queries"] == 400
    assert report["recall_measured_at_generation"] == first["recall_measured_at_generation"]


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 2, 9]]), 3) == pytest.approx(2 / 3)
    assert recall_at_k(np.zeros((0, 3)), np.zeros((0, 3)), 3) == 1.0


def test_fingerprints_tell_content_apart():
    x = clustered(1000)
    fp = vmod.fingerprints(x)
    assert len(np.unique(fp)) == len(x)
    np.testing.assert_array_equal(fp, vmod.fingerprints(x.copy()))
    y = x.copy()
    y[0, 0] = np.nextafter(y[0, 0], 2)  # one ulp
    assert vmod.fingerprints(y)[0] != fp[0] and (vmod.fingerprints(y)[1:] == fp[1:]).all()
