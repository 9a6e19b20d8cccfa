"""BLEU and ROUGE-L against published values and hand computations."""

from __future__ import annotations

import math

import pytest

from videolang.metrics import caption_metrics, corpus_bleu, rouge_l

# The worked example of nltk's corpus_bleu / sentence_bleu documentation (case-sensitive).
HYP1 = "It is a guide to action which ensures that the military always obeys the commands of the party"
REF1A = "It is a guide to action that ensures that the military will forever heed Party commands"
REF1B = "It is the guiding principle which guarantees the military forces always being under the command of the Party"
REF1C = "It is the practical guide for the army always to heed the directions of the party"
HYP2 = "he read the book because he was interested in world history"
REF2A = "he was interested in world history because he read the book"


def test_bleu_matches_the_published_example():
    corpus = corpus_bleu([HYP1, HYP2], [[REF1A, REF1B, REF1C], [REF2A]], lowercase=False)
    assert corpus["BLEU-4"] == pytest.approx(0.5920778868801042, abs=1e-12)
    single = corpus_bleu([HYP1], [[REF1A, REF1B, REF1C]], lowercase=False)
    assert single["BLEU-4"] == pytest.approx(0.5045666840058485, abs=1e-12)


def test_bleu_hand_computed_with_brevity_penalty():
    # hypothesis "a b c" vs reference "a b c d e": every n-gram precision is 1 up to n = 3,
    # brevity = exp(1 - 5/3)
    out = corpus_bleu(["a b c"], [["a b c d e"]], max_n=3)
    assert out["BLEU-3"] == pytest.approx(math.exp(1 - 5 / 3))
    # clipping: "the the the" vs "the cat": 1 of 3 unigrams count; no bigram matches -> 0
    out = corpus_bleu(["the the the"], [["the cat"]])
    assert out["BLEU-1"] == pytest.approx(1 / 3) and out["BLEU-2"] == 0.0
    with pytest.raises(ValueError, match="reference lists"):
        corpus_bleu(["a"], [])


def test_rouge_l_hand_computed():
    assert rouge_l(["a b c d"], [["a c d e"]]) == pytest.approx(0.75)
    # LCS("a b", "a x b y z") = 2: P = 1, R = 0.4, F = (1 + b^2) P R / (R + b^2 P)
    b2 = 1.2**2
    assert rouge_l(["a b"], [["a x b y z"]]) == pytest.approx((1 + b2) * 0.4 / (0.4 + b2))
    # best precision and best recall are taken over references separately, then averaged
    assert rouge_l(["a b", "q"], [["a b"], ["z"]]) == pytest.approx(0.5)


def test_caption_metrics_are_percentages():
    out = caption_metrics(["the red square moves left"], [["the red square moves left"]])
    assert out["BLEU-4"] == pytest.approx(100.0) and out["ROUGE-L"] == pytest.approx(100.0)
