"""Caption metrics: published and hand-computed values, and parity with the hand-written
implementation the COCO toolkit (pycocoevalcap) replaced."""

from __future__ import annotations

import math

import pytest

from videolang.metrics import caption_metrics, cider, corpus_bleu, rouge_l

# The worked example of nltk's corpus_bleu / sentence_bleu documentation (case-sensitive).
HYP1 = "It is a guide to action which ensures that the military always obeys the commands of the party"
REF1A = "It is a guide to action that ensures that the military will forever heed Party commands"
REF1B = "It is the guiding principle which guarantees the military forces always being under the command of the Party"
REF1C = "It is the practical guide for the army always to heed the directions of the party"
HYP2 = "he read the book because he was interested in world history"
REF2A = "he was interested in world history because he read the book"

# Fixed caption sets (hypotheses, references) and what the hand-written BLEU and ROUGE-L of
# commit f6f0827 (videolang/metrics/captioning.py before pycocoevalcap) gave for them.
SYNTHETIC = (
    ["the red square moves left", "a blue circle jumps over the green square",
     "The Cat sat on the mat", "a person slices an onion on a board"],
    [["the red square moves to the left", "a red square slides left"],
     ["a blue circle jumps over a green square", "the circle jumps"],
     ["the cat sat on the mat", "there is a cat on the mat", "a cat sits on a mat"],
     ["someone slices an onion", "a person cuts an onion on a cutting board"]],
)
EDGE = (  # an empty hypothesis, a single token, a perfect match
    ["", "onion", "a person cuts an onion on a cutting board"],
    [["someone slices an onion"], ["a person cuts an onion"], ["a person cuts an onion on a cutting board"]],
)
NO_TRIGRAM = (["red square blue circle", "green"], [["red square moves left"], ["a green circle jumps"]])
TOKENS = (
    [["A", "red", "square", "moves"], ["the", "circle"]],
    [[["a", "red", "square", "moves", "left"]], [["the", "circle", "jumps"], ["a", "circle"]]],
)
HAND_WRITTEN = {  # name: (BLEU-1..4, ROUGE-L), fractions
    "synthetic": (SYNTHETIC, (0.9636404443012863, 0.852486192826535, 0.7619137138121802, 0.6678205716093388),
                  0.8747260159556158),
    "edge": (EDGE, (0.44932896411722156,) * 4, 0.43252032520325207),
    "no_trigram": (NO_TRIGRAM, (0.32928698165641584, 0.24543602502982403, 0.0, 0.0), 0.4304733727810651),
    "tokens": (TOKENS, (0.846481724890614,) * 4, 0.8217902350813743),
}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_matches_the_hand_written_implementation(name):
    (hyps, refs), bleu, rouge = HAND_WRITTEN[name]
    got = corpus_bleu(hyps, refs)
    for n, old in enumerate(bleu, start=1):
        if old > 0:  # the toolkit's smoothing constants (1e-15, 1e-9) move ordinary values by < 1e-8
            assert got[f"BLEU-{n}"] == pytest.approx(old, rel=1e-8, abs=0)
        else:  # no matching n-gram: a floor of (1e-15 / #n-grams) ** (1 / n) instead of 0
            assert 0 < got[f"BLEU-{n}"] < 1e-15 ** (1 / n)
    assert rouge_l(hyps, refs) == pytest.approx(rouge, rel=1e-12)  # the same definition


def test_bleu_matches_the_published_example():
    corpus = corpus_bleu([HYP1, HYP2], [[REF1A, REF1B, REF1C], [REF2A]], lowercase=False)
    assert corpus["BLEU-4"] == pytest.approx(0.5920778868801042, rel=1e-8)
    single = corpus_bleu([HYP1], [[REF1A, REF1B, REF1C]], lowercase=False)
    assert single["BLEU-4"] == pytest.approx(0.5045666840058485, rel=1e-8)
    assert corpus_bleu(["The Cat"], [["the cat"]])["BLEU-2"] == pytest.approx(1.0, rel=1e-8)
    assert corpus_bleu(["The Cat"], [["the cat"]], lowercase=False)["BLEU-1"] < 1e-7


def test_bleu_hand_computed_with_brevity_penalty():
    # hypothesis "a b c" vs reference "a b c d e": every n-gram precision is 1 up to n = 3,
    # brevity = exp(1 - 5/3)
    out = corpus_bleu(["a b c"], [["a b c d e"]], max_n=3)
    assert list(out) == ["BLEU-1", "BLEU-2", "BLEU-3"]
    assert out["BLEU-3"] == pytest.approx(math.exp(1 - 5 / 3), rel=1e-8)
    # clipping: "the the the" vs "the cat": 1 of 3 unigrams count; no bigram matches
    out = corpus_bleu(["the the the"], [["the cat"]])
    assert out["BLEU-1"] == pytest.approx(1 / 3, rel=1e-8) and out["BLEU-2"] < 1e-7
    with pytest.raises(ValueError, match="reference lists"):
        corpus_bleu(["a"], [])
    with pytest.raises(ValueError, match="at least one reference"):
        corpus_bleu(["a"], [[]])


def test_degenerate_hypotheses():
    # an empty hypothesis scores 0 everywhere, even against an empty reference
    assert caption_metrics([""], [["a b c d"]]) == {k: 0.0 for k in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4",
                                                                      "ROUGE-L", "CIDEr")}
    assert rouge_l([""], [[""]]) == 0.0
    # a single correct token: BLEU-1 is 1; longer n-grams do not exist, so BLEU-n is the toolkit's
    # floor (1e-15 / 1e-9) ** ((n - 1) / n), not 0
    out = corpus_bleu(["onion"], [["onion"]])
    assert out["BLEU-1"] == pytest.approx(1.0, rel=1e-8)
    assert out["BLEU-2"] == pytest.approx(1e-3, rel=1e-6) and out["BLEU-4"] == pytest.approx(1e-6**0.75, rel=1e-6)
    assert rouge_l(["onion"], [["onion"]]) == 1.0
    assert corpus_bleu([], []) == {f"BLEU-{n}": 0.0 for n in range(1, 5)}
    assert rouge_l([], []) == 0.0 and cider([], []) == 0.0


def test_rouge_l_hand_computed():
    assert rouge_l(["a b c d"], [["a c d e"]]) == pytest.approx(0.75)
    # LCS("a b", "a x b y z") = 2: P = 1, R = 0.4, F = (1 + b^2) P R / (R + b^2 P)
    b2 = 1.2**2
    assert rouge_l(["a b"], [["a x b y z"]]) == pytest.approx((1 + b2) * 0.4 / (0.4 + b2))
    assert rouge_l(["a b"], [["a x b y z"]], beta=1.0) == pytest.approx(2 * 0.4 / 1.4)
    # best precision and best recall are taken over references separately, then averaged
    assert rouge_l(["a b", "q"], [["a b"], ["z"]]) == pytest.approx(0.5)
    assert rouge_l(["A B"], [["a b"]]) == 1.0 and rouge_l(["A B"], [["a b"]], lowercase=False) == 0.0


def test_cider_hand_computed():
    # CIDEr-D of a caption equal to its only reference is 10 when every n-gram (n <= 4) has a
    # non-zero IDF, i.e. does not occur in every video's references
    hyps = ["the red square moves left", "a blue circle jumps up"]
    assert cider(hyps, [[h] for h in hyps]) == pytest.approx(10.0)
    assert cider(["green triangle", "yellow star"], [[h] for h in hyps]) == 0.0
    # the IDF comes from the evaluated references: one video alone gives every n-gram IDF 0
    assert cider(hyps[:1], [hyps[:1]]) == 0.0


def test_caption_metrics_are_percentages():
    hyps = ["the red square moves left", "a blue circle jumps up"]
    out = caption_metrics(hyps, [[h] for h in hyps])
    assert list(out) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"]
    assert out["BLEU-4"] == pytest.approx(100.0) and out["ROUGE-L"] == pytest.approx(100.0)
    assert out["CIDEr"] == pytest.approx(1000.0)
    hyps, refs = SYNTHETIC
    assert caption_metrics(hyps, refs)["BLEU-4"] == pytest.approx(100 * corpus_bleu(hyps, refs)["BLEU-4"])
