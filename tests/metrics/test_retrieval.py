"""Retrieval metrics: hand-computed cases, ties against the query, reference comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import videolang.metrics.retrieval as retrieval_mod
from videolang.errors import ConfigError, VideolangError
from videolang.metrics import (
    rank_metrics,
    retrieval_metrics,
    retrieval_metrics_multi,
    retrieval_ranks,
    retrieval_ranks_multi,
)

# ---------------------------------------------------------------- slow references


def ref_ranks(sim: np.ndarray) -> list[int]:
    """rank_i = 1 + #{j != i : sim[i, j] >= sim[i, i]}, one row at a time."""
    out = []
    for i in range(sim.shape[0]):
        out.append(1 + sum(1 for j in range(sim.shape[1]) if j != i and sim[i, j] >= sim[i, i]))
    return out


def ref_multi(sim: np.ndarray, q2c: list[int]) -> tuple[list[int], list[int], list[int]]:
    n_q, n_c = sim.shape
    t2v = []
    for q in range(n_q):
        true = sim[q, q2c[q]]
        t2v.append(1 + sum(1 for j in range(n_c) if j != q2c[q] and sim[q, j] >= true))
    v2t, videos = [], []
    for v in range(n_c):
        pos = [q for q in range(n_q) if q2c[q] == v]
        if not pos:
            continue
        # best rank among the true captions, only wrong captions counted against
        best = min(
            1 + sum(1 for q2 in range(n_q) if q2c[q2] != v and sim[q2, v] >= sim[q, v]) for q in pos
        )
        v2t.append(best)
        videos.append(v)
    return t2v, v2t, videos


# ---------------------------------------------------------------- hand-computed cases

# Query 2's true score 0.5 ties with candidate 0 -> rank 2 (a tie counts against the query).
TIE_4x4 = torch.tensor(
    [
        [0.9, 0.1, 0.2, 0.3],
        [0.2, 0.8, 0.1, 0.0],
        [0.5, 0.1, 0.5, 0.4],
        [0.1, 0.2, 0.3, 0.7],
    ]
)


def test_tie_counts_against_query():
    assert retrieval_ranks(TIE_4x4).tolist() == [1, 1, 2, 1]
    m = retrieval_metrics(TIE_4x4)
    # MMPT's RetrievalMetric gives 0.8 here (5 hits over 4 queries); ClipBERT depends on sort order.
    assert m == {"R1": 75.0, "R5": 100.0, "R10": 100.0, "MedR": 1.0, "MeanR": 1.25}


def test_hand_computed_ranks():
    sim = torch.tensor(
        [
            [0.1, 0.9, 0.8, 0.7, 0.0],  # 3 others above 0.1 (col 4 below): rank 4
            [0.3, 0.3, 0.3, 0.3, 0.3],  # 4 ties: rank 5
            [0.0, 0.0, 1.0, 0.0, 0.0],  # rank 1
            [0.5, 0.6, 0.4, 0.5, 0.1],  # 0.6 > 0.5, 0.5 ties: rank 3
            [0.2, 0.1, 0.0, 0.3, 0.25],  # only 0.3 above: rank 2
        ]
    )
    assert retrieval_ranks(sim).tolist() == [4, 5, 1, 3, 2]
    m = retrieval_metrics(sim, ks=(1, 2, 5))
    assert m["R1"] == pytest.approx(20.0)
    assert m["R2"] == pytest.approx(40.0)
    assert m["R5"] == pytest.approx(100.0)
    assert m["MedR"] == 3.0
    assert m["MeanR"] == pytest.approx(3.0)


def test_constant_scores_are_worst_case_not_perfect():
    m = retrieval_metrics(torch.full((20, 20), 0.5))
    assert m["R1"] == 0.0
    assert m["R5"] == 0.0
    assert m["R10"] == 0.0
    assert m["MedR"] == 20.0
    assert m["MeanR"] == 20.0
    assert retrieval_ranks(torch.zeros(3, 3)).tolist() == [3, 3, 3]


def test_identity_is_perfect():
    m = retrieval_metrics(torch.eye(7))
    assert m == {"R1": 100.0, "R5": 100.0, "R10": 100.0, "MedR": 1.0, "MeanR": 1.0}


def test_even_count_median_is_midpoint():
    # ranks [1, 2, 3, 4] -> MedR 2.5 (numpy.median)
    assert rank_metrics([1, 2, 3, 4])["MedR"] == 2.5
    sim = torch.tensor([[4.0, 3, 2, 1], [4, 3, 2, 1], [4, 3, 2, 1], [4, 3, 2, 1]])
    assert retrieval_ranks(sim).tolist() == [1, 2, 3, 4]
    assert retrieval_metrics(sim)["MedR"] == 2.5


def test_more_candidates_than_queries():
    sim = torch.tensor([[1.0, 0.0, 0.5, 2.0], [0.0, 1.0, 0.5, 0.2]])
    assert retrieval_ranks(sim).tolist() == [2, 1]


def test_more_queries_than_candidates_rejected():
    with pytest.raises(ConfigError, match="more queries than candidates"):
        retrieval_ranks(torch.zeros(3, 2))


def test_nan_rejected():
    sim = torch.eye(3)
    sim[1, 2] = float("nan")
    with pytest.raises(VideolangError, match=r"NaN.*row 1, column 2"):
        retrieval_metrics(sim)
    with pytest.raises(VideolangError, match="NaN"):
        retrieval_metrics_multi(sim, [0, 1, 2])


def test_bad_shapes_and_ks():
    with pytest.raises(ConfigError):
        retrieval_ranks(torch.zeros(3))
    with pytest.raises(ConfigError):
        retrieval_metrics(torch.eye(3), ks=(0,))
    with pytest.raises(VideolangError, match="empty"):
        retrieval_metrics(torch.zeros(0, 3))


def test_numpy_integer_and_half_inputs():
    sim = TIE_4x4.numpy()
    assert retrieval_ranks(sim).tolist() == [1, 1, 2, 1]
    assert retrieval_ranks(sim.astype(np.float64)).tolist() == [1, 1, 2, 1]
    assert retrieval_ranks(TIE_4x4.half()).tolist() == [1, 1, 2, 1]
    assert retrieval_ranks(np.array([[1, 2], [3, 1]], dtype=np.int64)).tolist() == [2, 2]
    assert retrieval_ranks([[1.0, 0.0], [0.0, 1.0]]).tolist() == [1, 1]


def test_no_rounding_of_close_scores():
    # ClipBERT rounded to 4 decimals before ranking; here 0.50001 beats 0.50000.
    sim = torch.tensor([[0.50001, 0.5], [0.5, 0.50001]], dtype=torch.float64)
    assert retrieval_ranks(sim).tolist() == [1, 1]


def test_infinities_are_ordinary_values():
    inf = float("inf")
    sim = torch.tensor([[inf, inf], [-inf, 0.0]])
    assert retrieval_ranks(sim).tolist() == [2, 1]


def test_chunked_path_matches(monkeypatch):
    g = torch.Generator().manual_seed(0)
    sim = torch.randint(0, 4, (37, 41), generator=g).float()
    q2c = torch.randint(0, 41, (37,), generator=g)
    expected = retrieval_ranks(sim)
    expected_multi = retrieval_ranks_multi(sim, q2c)
    monkeypatch.setattr(retrieval_mod, "_BLOCK_ELEMENTS", 50)  # forces 1-2 rows per chunk
    assert torch.equal(retrieval_ranks(sim), expected)
    got = retrieval_ranks_multi(sim, q2c)
    for a, b in zip(got, expected_multi, strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- several captions per video


def test_multi_hand_computed():
    # 5 captions, 3 videos; captions 0, 1 -> video 0; 2, 3 -> video 1; 4 -> video 0; video 2
    # has no caption (a distractor for t2v, not a query for v2t).
    sim = torch.tensor(
        [
            [0.9, 0.2, 0.1],  # caption 0 -> v0: rank 1
            [0.3, 0.3, 0.4],  # caption 1 -> v0: tie with v1 and v2 above: rank 3
            [0.1, 0.6, 0.6],  # caption 2 -> v1: tie with v2: rank 2
            [0.7, 0.2, 0.0],  # caption 3 -> v1: v0 above: rank 2
            [0.5, 0.5, 0.5],  # caption 4 -> v0: all tied: rank 3
        ]
    )
    q2c = torch.tensor([0, 0, 1, 1, 0])
    ranks = retrieval_ranks_multi(sim, q2c)
    assert ranks.t2v.tolist() == [1, 3, 2, 2, 3]
    # v0 column [.9, .3, .1, .7, .5]: best true .9 (caption 0); wrong captions 2 (.1), 3 (.7)
    #   none >= .9 -> rank 1.
    # v1 column [.2, .3, .6, .2, .5]: true captions 2 (.6), 3 (.2): best .6; wrong captions
    #   0 (.2), 1 (.3), 4 (.5) none >= .6 -> rank 1.
    assert ranks.v2t.tolist() == [1, 1]
    assert ranks.v2t_candidates.tolist() == [0, 1]
    m = retrieval_metrics_multi(sim, q2c)
    assert m["t2v"]["R1"] == pytest.approx(20.0)
    assert m["t2v"]["MedR"] == 2.0
    assert m["t2v"]["MeanR"] == pytest.approx(11 / 5)
    assert m["v2t"] == {"R1": 100.0, "R5": 100.0, "R10": 100.0, "MedR": 1.0, "MeanR": 1.0}


def test_multi_v2t_ties_between_true_captions_do_not_count_but_wrong_ones_do():
    # video 0 has captions 0, 1 (both 0.8); caption 2 (video 1) also scores 0.8 on video 0.
    sim = torch.tensor([[0.8, 0.1], [0.8, 0.0], [0.8, 0.9]])
    ranks = retrieval_ranks_multi(sim, [0, 0, 1])
    # v0: best true 0.8, wrong caption 2 ties at 0.8 -> rank 2 (the true tie 0/1 does not count).
    # v1: column [.1, .0, .9]: true caption 2 (.9) best -> rank 1.
    assert ranks.v2t.tolist() == [2, 1]
    assert ranks.t2v.tolist() == [1, 1, 1]
    # v2t best rank: video 0 with one good and one bad caption is still rank 1.
    sim2 = torch.tensor([[0.9, 0.0], [0.0, 0.5], [0.1, 0.8]])
    assert retrieval_ranks_multi(sim2, [0, 0, 1]).v2t.tolist() == [1, 1]
    assert retrieval_ranks_multi(sim2, [0, 0, 1]).t2v.tolist() == [1, 2, 1]


def test_multi_one_to_one_matches_plain():
    g = torch.Generator().manual_seed(1)
    sim = torch.randint(0, 3, (9, 9), generator=g).float()
    ranks = retrieval_ranks_multi(sim, torch.arange(9))
    assert torch.equal(ranks.t2v, retrieval_ranks(sim))
    assert torch.equal(ranks.v2t, retrieval_ranks(sim.T))
    assert retrieval_metrics_multi(sim, np.arange(9))["t2v"] == retrieval_metrics(sim)


def test_multi_bad_mapping():
    with pytest.raises(ConfigError, match="shape"):
        retrieval_ranks_multi(torch.eye(3), [0, 1])
    with pytest.raises(ConfigError, match="outside"):
        retrieval_ranks_multi(torch.eye(3), [0, 1, 3])
    with pytest.raises(ConfigError, match="integer"):
        retrieval_ranks_multi(torch.eye(3), torch.tensor([0.0, 1.0, 2.0]))


def test_multi_integer_scores():
    sim = torch.tensor([[1, 2, 0], [3, 1, 1]])
    ranks = retrieval_ranks_multi(sim, [0, 1])
    assert ranks.t2v.tolist() == [2, 3]
    assert ranks.v2t.tolist() == [2, 2]


# ---------------------------------------------------------------- against the references

small_ints = st.integers(min_value=0, max_value=3)  # few distinct values -> many ties


@st.composite
def square_or_wide(draw):
    q = draw(st.integers(1, 8))
    c = draw(st.integers(q, 10))
    vals = draw(st.lists(small_ints, min_size=q * c, max_size=q * c))
    return np.array(vals, dtype=np.float32).reshape(q, c)


@settings(max_examples=150, deadline=None)
@given(square_or_wide())
def test_ranks_match_reference(sim):
    assert retrieval_ranks(sim).tolist() == ref_ranks(sim)
    m = retrieval_metrics(sim)
    r = np.array(ref_ranks(sim))
    assert m["R1"] == pytest.approx(100 * np.mean(r <= 1))
    assert m["R5"] == pytest.approx(100 * np.mean(r <= 5))
    assert m["MedR"] == pytest.approx(float(np.median(r)))
    assert m["MeanR"] == pytest.approx(float(np.mean(r)))


@st.composite
def multi_case(draw):
    q = draw(st.integers(1, 9))
    c = draw(st.integers(1, 6))
    vals = draw(st.lists(small_ints, min_size=q * c, max_size=q * c))
    q2c = draw(st.lists(st.integers(0, c - 1), min_size=q, max_size=q))
    return np.array(vals, dtype=np.float64).reshape(q, c), q2c


@settings(max_examples=150, deadline=None)
@given(multi_case())
def test_multi_matches_reference(case):
    sim, q2c = case
    ranks = retrieval_ranks_multi(sim, q2c)
    t2v, v2t, videos = ref_multi(sim, q2c)
    assert ranks.t2v.tolist() == t2v
    assert ranks.v2t.tolist() == v2t
    assert ranks.v2t_candidates.tolist() == videos


def test_random_float_matrix_matches_reference():
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((60, 80)).astype(np.float32)
    assert retrieval_ranks(sim).tolist() == ref_ranks(sim)
    assert not math.isnan(retrieval_metrics(sim)["MeanR"])
