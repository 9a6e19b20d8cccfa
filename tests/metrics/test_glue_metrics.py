"""GLUE metrics against values computed by hand (and the SciPy / scikit-learn conventions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from videolang.errors import ConfigError
from videolang.metrics.glue import (
    accuracy,
    binary_f1,
    glue_metrics,
    matthews_corr,
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
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


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
