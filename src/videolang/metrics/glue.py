"""GLUE metrics as the GLUE reference scorers compute them, with scikit-learn and SciPy.

The per-metric functions return fractions (their degenerate cases are on each); :func:`glue_metrics`
reports a task's metrics (:data:`GLUE_TASK_METRICS`) as percentages, plus their mean as ``score``
when a task has two (MRPC/QQP: accuracy and F1, STS-B: Pearson and Spearman).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as sk

from videolang.errors import ConfigError

__all__ = [
    "GLUE_TASK_METRICS",
    "accuracy",
    "binary_f1",
    "glue_metrics",
    "matthews_corr",
    "metrics_of_task",
    "pearson",
    "spearman",
]

#: The metrics the GLUE benchmark defines for each task, in the order they are reported.
GLUE_TASK_METRICS: dict[str, tuple[str, ...]] = {
    "CoLA": ("mcc",),
    "SST-2": ("accuracy",),
    "MRPC": ("accuracy", "f1"),
    "STS-B": ("pearson", "spearman"),
    "QQP": ("accuracy", "f1"),
    "MNLI": ("accuracy",),
    "QNLI": ("accuracy",),
    "RTE": ("accuracy",),
}


def metrics_of_task(task: str) -> tuple[str, ...]:
    """The metric names of a GLUE task, named case- and dash-insensitively (``sst2``, ``STS-B``)."""
    key = task.replace("-", "").replace("_", "").lower()
    for name, names in GLUE_TASK_METRICS.items():
        if name.replace("-", "").lower() == key:
            return names
    raise ConfigError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASK_METRICS)}")


def _pair(pred: Any, target: Any, *, floats: bool = False) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred), np.asarray(target)
    if p.ndim != 1 or t.ndim != 1 or p.shape != t.shape:
        raise ConfigError(f"predictions {p.shape} and targets {t.shape} must be 1-D of the same length")
    if p.size == 0:
        raise ConfigError("no predictions to score")
    dtype = np.float64 if floats else np.int64
    return p.astype(dtype), t.astype(dtype)


def accuracy(pred: Any, target: Any) -> float:
    """Fraction of predictions equal to the target."""
    p, t = _pair(pred, target)
    return float(sk.accuracy_score(t, p))


def binary_f1(pred: Any, target: Any, positive: int = 1) -> float:
    """F1 of class ``positive`` (``sklearn.metrics.f1_score``): 2 TP / (2 TP + FP + FN), 0 with
    neither predicted nor true positives."""
    p, t = _pair(pred, target)
    return float(sk.f1_score(t, p, labels=[positive], average="micro", zero_division=0.0))


def matthews_corr(pred: Any, target: Any) -> float:
    """Matthews correlation (``matthews_corrcoef``: Gorodkin's 2004 multi-class form, the binary
    MCC for two classes); 0 when the predictions (or targets) are all one class."""
    p, t = _pair(pred, target)
    return float(sk.matthews_corrcoef(t, p))


def pearson(pred: Any, target: Any) -> float:
    """Pearson correlation (``scipy.stats``); NaN for a constant input (SciPy warns) or a single
    pair."""
    p, t = _pair(pred, target, floats=True)
    if p.size < 2:  # SciPy refuses one pair rather than answering NaN
        return float("nan")
    return float(stats.pearsonr(p, t).statistic)


def spearman(pred: Any, target: Any) -> float:
    """Spearman rank correlation, ties at their average rank; NaN as :func:`pearson`."""
    p, t = _pair(pred, target, floats=True)
    return float(stats.spearmanr(p, t).statistic)


_METRICS = {"accuracy": accuracy, "f1": binary_f1, "mcc": matthews_corr, "pearson": pearson, "spearman": spearman}


def glue_metrics(task_metrics: Sequence[str] | str, pred: Any, target: Any) -> dict[str, float]:
    """A task's metrics in percent. ``task_metrics`` is a GLUE task name (``"SST-2"``,
    ``"sts-b"``) or a list of metric names (``accuracy``, ``f1``, ``mcc``, ``pearson``,
    ``spearman``). ``pred`` are class ids (argmax) or, for Pearson/Spearman, scores."""
    names = metrics_of_task(task_metrics) if isinstance(task_metrics, str) else tuple(task_metrics)
    unknown = [m for m in names if m not in _METRICS]
    if unknown:
        raise ConfigError(f"unknown GLUE metric(s) {', '.join(unknown)}; known: {', '.join(_METRICS)}")
    out = {m: 100.0 * _METRICS[m](pred, target) for m in names}
    if len(out) > 1:
        out["score"] = float(np.mean(list(out.values())))
    return out
