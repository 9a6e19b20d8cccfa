"""GLUE metrics against values computed by hand and those of the numpy implementation that
scikit-learn and SciPy replaced."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ConstantInputWarning

from videolang.data.glue import GLUE_TASKS
from videolang.errors import ConfigError
from videolang.metrics.glue import (
    GLUE_TASK_METRICS,
    accuracy,
    binary_f1,
    glue_metrics,
    matthews_corr,
    metrics_of_task,
    pearson,
    spearman,
)

PRED = [1, 1, 0, 1, 0, 0, 1, 0]
GOLD = [1, 0, 0, 1, 1, 0, 1, 1]  # TP 3, FP 1, FN 2, TN 2


def test_accuracy_and_f1_by_hand():
    assert accuracy(PRED, GOLD) == pytest.approx(5 / 8)
    assert binary_f1(PRED, GOLD) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))  # 6/9
    assert binary_f1([0, 0], [0, 0]) == 0.0  # no positives anywhere: 0 (sklearn's zero_division)


def test_matthews_by_hand():
    tp, fp, fn, tn = 3, 1, 2, 2
    want = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corr(PRED, GOLD) == pytest.approx(want)  # 4 / sqrt(240)
    assert matthews_corr(GOLD, GOLD) == pytest.approx(1.0)
    assert matthews_corr([1 - g for g in GOLD], GOLD) == pytest.approx(-1.0)
    assert matthews_corr([1] * 8, GOLD) == 0.0  # constant predictions
    # three classes: Gorodkin's R_K on a small confusion matrix, worked out by hand
    # t = [0,0,1,1,2,2], p = [0,1,1,1,2,0]: c = 4, s = 6, t_k = [2,2,2], p_k = [2,3,1]
    want3 = (4 * 6 - (2 * 2 + 2 * 3 + 2 * 1)) / math.sqrt((36 - (4 + 9 + 1)) * (36 - 12))
    assert matthews_corr([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2]) == pytest.approx(want3)


def test_pearson_and_spearman_by_hand():
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0]
    # centred: [-1.5,-.5,.5,1.5] and [-.5,-1.5,1.5,.5]: sum xy = .75+.75+.75+.75 = 3, |x|^2 = |y|^2 = 5
    assert pearson(x, y) == pytest.approx(3 / 5)
    assert spearman(x, y) == pytest.approx(3 / 5)  # already ranks
    assert spearman([10, 20, 30, 1000], [1, 2, 3, 4]) == pytest.approx(1.0)  # monotone, not linear
    assert pearson([10, 20, 30, 1000], [1, 2, 3, 4]) < 0.9
    # ties take the average rank: [1, 2.5, 2.5, 4] vs [1, 2, 3, 4] -> r = 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))



def test_glue_metrics_per_task():
    sst = glue_metrics("sst2", PRED, GOLD)
    assert sst == {"accuracy": pytest.approx(62.5)}
    mrpc = glue_metrics("MRPC", PRED, GOLD)
    assert mrpc["f1"] == pytest.approx(100 * 6 / 9)
    assert mrpc["score"] == pytest.approx((62.5 + 100 * 6 / 9) / 2)
    assert set(glue_metrics("cola", PRED, GOLD)) == {"mcc"}
    sts = glue_metrics("STS-B", np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 1.0, 4.0, 3.0]))
    assert sts["pearson"] == pytest.approx(60.0) and sts["spearman"] == pytest.approx(60.0)
    with pytest.raises(ConfigError, match="same length"):
        accuracy([1, 0], [1])
    with pytest.raises(ConfigError, match="unknown GLUE metric"):
        glue_metrics(["bleu"], PRED, GOLD)
    with pytest.raises(ConfigError, match="unknown GLUE task"):
        glue_metrics("squad", PRED, GOLD)


# Fixed inputs and what the hand-written numpy metrics of commit f6f0827 gave for them.
P12 = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1]
T12 = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1]
P3 = [0, 2, 1, 1, 2, 0, 0, 1, 2, 2]
T3 = [0, 2, 1, 0, 2, 1, 0, 1, 1, 2]
X = [0.5, 2.25, 3.0, 1.75, 4.5, 3.0, 0.0, 2.25, 5.0, 3.75]  # ties in both, for Spearman's average ranks
Y = [1.0, 2.0, 2.8, 2.0, 4.2, 3.6, 0.2, 1.8, 4.6, 3.0]


def test_matches_the_hand_written_implementation():
    assert accuracy(P12, T12) == 0.75 and accuracy(P3, T3) == pytest.approx(0.7, abs=1e-15)
    assert binary_f1(P12, T12) == pytest.approx(0.7692307692307693, abs=1e-15)
    assert matthews_corr(P12, T12) == pytest.approx(0.50709255283711, abs=1e-14)
    assert matthews_corr(P3, T3) == pytest.approx(0.5606060606060606, abs=1e-14)
    assert pearson(X, Y) == pytest.approx(0.9662808464788093, abs=1e-14)
    assert spearman(X, Y) == pytest.approx(0.9510747836274875, abs=1e-14)
    assert glue_metrics("QQP", P12, T12) == pytest.approx(
        {"accuracy": 75.0, "f1": 76.92307692307693, "score": 75.96153846153847}, abs=1e-12)
    assert glue_metrics("sts-b", X, Y) == pytest.approx(
        {"pearson": 96.62808464788093, "spearman": 95.10747836274875, "score": 95.86778150531484}, abs=1e-12)


def test_degenerate_inputs_have_defined_values():
    assert matthews_corr([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0  # constant predictions
    with pytest.warns(UserWarning, match="single label"):
        assert matthews_corr([1, 1], [1, 1]) == 0.0  # one class everywhere
    assert binary_f1([0, 2, 1], [0, 2, 2]) == 0.0  # no predicted class-1 item, no true one
    assert binary_f1([0, 2, 1], [0, 2, 1], positive=2) == 1.0
    for corr in (pearson, spearman):
        with pytest.warns(ConstantInputWarning):
            assert math.isnan(corr([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]))  # as SciPy and GLUE's scorer
        assert math.isnan(corr([1.0], [2.0]))  # one pair
    assert accuracy([1], [1]) == 1.0
    with pytest.raises(ConfigError, match="no predictions"):
        glue_metrics("SST-2", [], [])


def test_task_table_is_the_data_layers():
    assert {name: task.metrics for name, task in GLUE_TASKS.items()} == GLUE_TASK_METRICS
    assert metrics_of_task("qqp") == metrics_of_task("QQP") == ("accuracy", "f1")
    assert glue_metrics(["mcc", "accuracy"], P12, T12) == pytest.approx(
        {"mcc": 50.709255283710995, "accuracy": 75.0, "score": (50.709255283710995 + 75.0) / 2}, abs=1e-12)
