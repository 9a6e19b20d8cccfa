"""Classification metrics: top-k accuracy and class-mean recall, ties counted against.

The rank of the target class of sample ``n`` is ``1 + #{other classes j with
logits[n, j] >= logits[n, target]}``, the same pessimistic rule as
:mod:`videolang.metrics.retrieval`: a class tied with the target at the top-k boundary (or
anywhere above it) pushes the target down. A sample is correct at ``k`` when its rank is
``<= k``. Constant logits are therefore correct only when ``k >= K`` (all classes). Results
are **percentages** (0-100), like ``R@k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from videolang.errors import ConfigError, VideolangError
from videolang.metrics.retrieval import _as_matrix, _count_at_least, as_index_vector

__all__ = ["class_mean_recall", "target_ranks", "topk_accuracy"]


def _as_targets(targets: Any, n: int, k_classes: int, device: torch.device) -> torch.Tensor:
    return as_index_vector(targets, n, k_classes, device, name="targets", what="classes")


def target_ranks(logits: torch.Tensor | np.ndarray, targets: Any) -> torch.Tensor:
    """1-based rank of each target class: ``1 + #{j != t : logits[n, j] >= logits[n, t]}``.

    Args:
        logits: ``(N, K)`` scores (any real dtype; NaN raises ``VideolangError``).
        targets: ``(N,)`` integer class indices in ``[0, K)``.

    Returns:
        int64 CPU tensor ``(N,)``.
    """
    s = _as_matrix(logits, "logits")
    n, k_classes = s.shape
    t = _as_targets(targets, n, k_classes, s.device)
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    true = s[torch.arange(n, device=s.device), t]
    return _count_at_least(s, true).cpu()


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive int, got {k!r}")
    return int(k)


def topk_accuracy(
    logits: torch.Tensor | np.ndarray, targets: Any, k: int | Sequence[int] = 1
) -> float | dict[int, float]:
    """Top-k accuracy in percent (0-100), ties counted against the target.

    A sample is correct when fewer than ``k`` *other* classes score ``>=`` its target (rank
    ``<= k``, see :func:`target_ranks`). E.g. logits ``[2, 2, 1]`` with target 0: rank 2, wrong
    at k=1, right at k=2.

    Args:
        logits: ``(N, K)`` scores.
        targets: ``(N,)`` class indices.
        k: an int, or a sequence of ints.

    Returns:
        A float for an int ``k``; ``{k: accuracy}`` for a sequence.

    Raises:
        VideolangError: no samples (``N == 0``) or NaN logits.
    """
    ranks = target_ranks(logits, targets)
    if ranks.numel() == 0:
        raise VideolangError("topk_accuracy of zero samples is undefined")
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        kk = _check_k(k)
        return float((ranks <= kk).to(torch.float64).mean() * 100.0)
    ks = [_check_k(x) for x in k]
    if not ks:
        raise ConfigError("k must be an int or a non-empty sequence of ints")
    return {kk: float((ranks <= kk).to(torch.float64).mean() * 100.0) for kk in ks}


def class_mean_recall(logits: torch.Tensor | np.ndarray, targets: Any, k: int = 1) -> float:
    """Mean over classes of the per-class top-``k`` recall, in percent (0-100).

    For each class ``c`` **present in** ``targets``, recall_c = percent of the samples of class
    ``c`` whose target rank is ``<= k`` (ties against, as :func:`topk_accuracy`); the result is
    the unweighted mean of recall_c. **Classes absent from ``targets`` are excluded** from the
    mean (their recall is undefined), so the denominator is the number of distinct target
    classes, not ``K``.

    Raises:
        VideolangError: no samples or NaN logits.
    """
    kk = _check_k(k)
    s = _as_matrix(logits, "logits")
    n, k_classes = s.shape
    t = _as_targets(targets, n, k_classes, s.device).cpu()
    ranks = target_ranks(s, t)
    if n == 0:
        raise VideolangError("class_mean_recall of zero samples is undefined")
    counts = torch.bincount(t, minlength=k_classes).to(torch.float64)
    hits = torch.bincount(t, weights=(ranks <= kk).to(torch.float64), minlength=k_classes)
    present = counts > 0
    return float((hits[present] / counts[present]).mean() * 100.0)
