"""Top-k accuracy and class-mean recall: hand-computed cases and a reference loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from videolang.errors import ConfigError, VideolangError
from videolang.metrics import class_mean_recall, target_ranks, topk_accuracy


def ref_rank(row: np.ndarray, t: int) -> int:
    return 1 + sum(1 for j in range(len(row)) if j != t and row[j] >= row[t])


def test_hand_computed_topk():
    logits = torch.tensor(
        [
            [0.1, 0.7, 0.2],  # target 1: rank 1
            [0.5, 0.3, 0.2],  # target 2: rank 3
            [0.4, 0.4, 0.2],  # target 0: tied with class 1 -> rank 2
            [0.2, 0.3, 0.5],  # target 1: rank 2
        ]
    )
    targets = torch.tensor([1, 2, 0, 1])
    assert target_ranks(logits, targets).tolist() == [1, 3, 2, 2]
    assert topk_accuracy(logits, targets) == pytest.approx(25.0)
    assert topk_accuracy(logits, targets, k=2) == pytest.approx(75.0)
    assert topk_accuracy(logits, targets, k=(1, 2, 3)) == {1: 25.0, 2: 75.0, 3: 100.0}


def test_tie_at_topk_boundary_counts_against():
    # target 2 ties with class 0 for the 2nd place: rank 3 -> wrong at k=2.
    logits = torch.tensor([[0.9, 0.5, 0.5, 0.1]])
    assert topk_accuracy(logits, [2], k=2) == 0.0
    assert topk_accuracy(logits, [2], k=3) == 100.0
    assert topk_accuracy(logits, [1], k=(2, 3)) == {2: 0.0, 3: 100.0}


def test_constant_logits():
    logits = torch.zeros(6, 4)
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    assert topk_accuracy(logits, targets, k=(1, 3, 4)) == {1: 0.0, 3: 0.0, 4: 100.0}
    assert class_mean_recall(logits, targets) == 0.0


def test_class_mean_recall_excludes_absent_classes():
    # 4 classes; class 2 never appears in the targets.
    logits = torch.tensor(
        [
            [0.9, 0.0, 0.0, 0.1],  # t=0 correct
            [0.9, 0.0, 0.0, 0.1],  # t=0 correct
            [0.1, 0.0, 0.0, 0.9],  # t=0 wrong
            [0.0, 0.8, 0.9, 0.0],  # t=1 wrong (class 2 above)
            [0.0, 0.1, 0.0, 0.9],  # t=3 correct
        ]
    )
    targets = [0, 0, 0, 1, 3]
    # per class: 0 -> 2/3, 1 -> 0, 3 -> 1; mean over the 3 present classes.
    assert class_mean_recall(logits, targets) == pytest.approx(100 * (2 / 3 + 0 + 1) / 3)
    # plain accuracy weights samples instead: 3/5.
    assert topk_accuracy(logits, targets) == pytest.approx(60.0)
    # top-2: class 1 sample now correct (rank 2); class 0 sample 2 rank 2 -> correct.
    assert class_mean_recall(logits, targets, k=2) == pytest.approx(100.0)


def test_numpy_inputs():
    logits = np.array([[1.0, 2.0], [3.0, 0.0]])
    assert topk_accuracy(logits, np.array([1, 1])) == 50.0


def test_errors():
    with pytest.raises(VideolangError, match="zero samples"):
        topk_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(VideolangError, match="zero samples"):
        class_mean_recall(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ConfigError, match="outside"):
        topk_accuracy(torch.zeros(2, 3), [0, 3])
    with pytest.raises(ConfigError, match="shape"):
        topk_accuracy(torch.zeros(2, 3), [0])
    with pytest.raises(ConfigError, match="positive"):
        topk_accuracy(torch.zeros(2, 3), [0, 1], k=0)
    with pytest.raises(ConfigError, match="integer"):
        topk_accuracy(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    bad = torch.zeros(2, 3)
    bad[0, 1] = float("nan")
    with pytest.raises(VideolangError, match="NaN"):
        topk_accuracy(bad, [0, 1])


@st.composite
def cls_case(draw):
    n = draw(st.integers(1, 12))
    k = draw(st.integers(1, 6))
    vals = draw(st.lists(st.integers(0, 3), min_size=n * k, max_size=n * k))
    targets = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    return np.array(vals, dtype=np.float32).reshape(n, k), targets


@settings(max_examples=150, deadline=None)
@given(cls_case(), st.integers(1, 6))
def test_matches_reference(case, k):
    logits, targets = case
    ranks = [ref_rank(logits[i], t) for i, t in enumerate(targets)]
    assert target_ranks(logits, targets).tolist() == ranks
    assert topk_accuracy(logits, targets, k=k) == pytest.approx(
        100 * np.mean([r <= k for r in ranks])
    )
    per_class = {}
    for r, t in zip(ranks, targets, strict=True):
        per_class.setdefault(t, []).append(r <= k)
    expected = 100 * np.mean([np.mean(v) for v in per_class.values()])
    assert class_mean_recall(logits, targets, k=k) == pytest.approx(expected)
