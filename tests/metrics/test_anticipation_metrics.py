"""Anticipation metrics on hand-checked examples, one per convention flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videolang.errors import ConfigError, VideolangError
from videolang.metrics.anticipation import (
    anticipation_metrics,
    many_shot_actions,
    mean_class_recall,
    verb_noun_accuracy,
)

# 5 samples, 4 classes; class 3 never occurs as a target.
LOGITS = torch.tensor(
    [
        [0.9, 0.1, 0.0, 0.0],  # target 0: rank 1
        [0.1, 0.2, 0.9, 0.0],  # target 0: rank 3
        [0.0, 0.8, 0.1, 0.3],  # target 1: rank 1
        [0.5, 0.4, 0.1, 0.2],  # target 1: rank 2
        [0.3, 0.1, 0.2, 0.9],  # target 2: rank 3
    ]
)
TARGETS = [0, 0, 1, 1, 2]


def test_mean_class_recall_absent_conventions():
    # top-1 recall per class: c0 1/2, c1 1/2, c2 0, c3 absent
    assert mean_class_recall(LOGITS, TARGETS, 1) == pytest.approx(100 * (0.5 + 0.5 + 0) / 3)
    assert mean_class_recall(LOGITS, TARGETS, 1, absent="zero") == pytest.approx(100 * 1.0 / 4)
    # top-2: c0 1/2, c1 1, c2 0
    assert mean_class_recall(LOGITS, TARGETS, 2) == pytest.approx(100 * 1.5 / 3)
    # a class subset (many-shot): classes {1, 3} -> only class 1 is present
    assert mean_class_recall(LOGITS, TARGETS, 2, classes=[1, 3]) == pytest.approx(100.0)
    assert mean_class_recall(LOGITS, TARGETS, 2, classes=[1, 3], absent="zero") == pytest.approx(50.0)
    with pytest.raises(VideolangError, match="none of the chosen"):
        mean_class_recall(LOGITS, TARGETS, 1, classes=[3])
    with pytest.raises(ConfigError, match="absent"):
        mean_class_recall(LOGITS, TARGETS, 1, absent="nan")


def test_many_shot_rules():
    verbs, nouns = [0, 0, 1, 1], [0, 1, 0, 1]
    assert many_shot_actions(verbs, nouns, {0}, {1}, rule="or") == [0, 1, 3]
    assert many_shot_actions(verbs, nouns, {0}, {1}, rule="and") == [1]


def test_verb_noun_marginalize_vs_decompose():
    # actions 0, 1 have verb 0; action 2 has verb 1. Action 2 wins alone, verb 0 wins in sum.
    logits = torch.log(torch.tensor([[0.3, 0.3, 0.4]]))
    mapping = [0, 0, 1]
    assert verb_noun_accuracy(logits, [0], mapping, 1, mode="marginalize") == 100.0
    assert verb_noun_accuracy(logits, [0], mapping, 1, mode="decompose") == 0.0
    assert verb_noun_accuracy(logits, [0], mapping, 2, mode="decompose") == 100.0
    with pytest.raises(ConfigError, match="entries"):
        verb_noun_accuracy(logits, [0], [0, 1], 1)


def test_anticipation_metrics_table():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 6, 40)
    logits = rng.normal(size=(40, 6))
    logits[np.arange(40), targets] += 2.0
    verbs, nouns = [0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1]
    out = anticipation_metrics(
        logits, targets, action_verbs=verbs, action_nouns=nouns,
        verb_targets=np.array(verbs)[targets], noun_targets=np.array(nouns)[targets], many_shot=[0, 1],
    )
    assert set(out) == {"top1", "top5", "mean_top5_recall", "mean_top1", "verb_top1", "noun_top1",
                        "many_shot_top5_recall"}
    assert out["top1"] == pytest.approx(100 * float((logits.argmax(1) == targets).mean()))
    decomposed = verb_noun_accuracy(logits, np.array(verbs)[targets], verbs, 1, mode="decompose")
    assert decomposed >= out["top1"]  # the verb of a correct top-1 action is correct
    assert 0 <= out["many_shot_top5_recall"] <= 100
