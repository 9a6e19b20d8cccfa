"""GLUE metrics in numpy: accuracy, binary F1, Matthews correlation, Pearson and Spearman.

The per-metric functions return fractions in [0, 1] (correlations in [-1, 1]);
:func:`glue_metrics` reports a task's metrics as **percentages** (x100), as the GLUE
leaderboard and our other metrics do, plus their mean as ``score`` when a task has two
(MRPC/QQP: accuracy and F1, STS-B: Pearson and Spearman).

Conventions (the same as scikit-learn / SciPy, which the tests check by hand-computed values):
F1 is 0 when there are neither predicted nor true positives; Matthews correlation is 0 when a
row or column of the confusion matrix is all zero; Pearson and Spearman are NaN when either
input is constant; Spearman ranks ties by their average rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from videolang.errors import ConfigError

__all__ = ["accuracy", "binary_f1", "glue_metrics", "matthews_corr", "pearson", "spearman"]


def _pair(pred: Any, target: Any, *, floats: bool = False) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred), np.asarray(target)
    if p.ndim != 1 or t.ndim != 1 or p.shape != t.shape:
        raise ConfigError(f"predictions {p.shape} and targets {t.shape} must be 1-D of the same length")
    if p.size == 0:
        raise ConfigError("no predictions to score")
    if floats:
        return p.astype(np.float64), t.astype(np.float64)
    return p.astype(np.int64), t.astype(np.int64)


def accuracy(pred: Any, target: Any) -> float:
    p, t = _pair(pred, target)
    return float((p == t).mean())


def binary_f1(pred: Any, target: Any, positive: int = 1) -> float:
    """F1 of class ``positive``: 2 TP / (2 TP + FP + FN)."""
    p, t = _pair(pred, target)
    tp = int(((p == positive) & (t == positive)).sum())
    denom = int((p == positive).sum() + (t == positive).sum())
    return 0.0 if denom == 0 else 2.0 * tp / denom


def matthews_corr(pred: Any, target: Any) -> float:
    """Matthews correlation (multi-class form, Gorodkin 2004; binary MCC for two classes)."""
    p, t = _pair(pred, target)
    classes, idx = np.unique(np.concatenate([t, p]), return_inverse=True)
    k = len(classes)
    ti, pi = idx[: len(t)], idx[len(t):]
    conf = np.zeros((k, k), dtype=np.float64)
    np.add.at(conf, (ti, pi), 1.0)
    n = conf.sum()
    correct = np.trace(conf)
    true_sum, pred_sum = conf.sum(1), conf.sum(0)
    cov_tp = correct * n - true_sum @ pred_sum
    cov_pp = n * n - pred_sum @ pred_sum
    cov_tt = n * n - true_sum @ true_sum
    denom = np.sqrt(cov_pp * cov_tt)
    return 0.0 if denom == 0 else float(cov_tp / denom)


def pearson(pred: Any, target: Any) -> float:
    p, t = _pair(pred, target, floats=True)
    p, t = p - p.mean(), t - t.mean()
    denom = np.sqrt((p * p).sum() * (t * t).sum())
    return float("nan") if denom == 0 else float((p * t).sum() / denom)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span (SciPy's 'average')."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # last rank of each distinct value
    mean_rank = ends - (counts - 1) / 2.0
    return mean_rank[inverse]


def spearman(pred: Any, target: Any) -> float:
    p, t = _pair(pred, target, floats=True)
    return pearson(_average_ranks(p), _average_ranks(t))


_METRICS = {"accuracy": accuracy, "f1": binary_f1, "mcc": matthews_corr, "pearson": pearson, "spearman": spearman}


def glue_metrics(task_metrics: Sequence[str] | str, pred: Any, target: Any) -> dict[str, float]:
    """A task's metrics in percent. ``task_metrics`` is a GLUE task name (``"SST-2"``, ``"sts-b"``)
    or a list of metric names (``accuracy``, ``f1``, ``mcc``, ``pearson``, ``spearman``).
    ``pred`` are class ids (argmax) or, for Pearson/Spearman, scores."""
    if isinstance(task_metrics, str):
        from videolang.data.glue import get_task

        task_metrics = get_task(task_metrics).metrics
    unknown = [m for m in task_metrics if m not in _METRICS]
    if unknown:
        raise ConfigError(f"unknown GLUE metric(s) {', '.join(unknown)}; known: {', '.join(_METRICS)}")
    out = {m: 100.0 * _METRICS[m](pred, target) for m in task_metrics}
    if len(out) > 1:
        out["score"] = float(np.mean(list(out.values())))
    return out
