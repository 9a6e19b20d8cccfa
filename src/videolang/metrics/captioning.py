"""Caption metrics from the COCO caption toolkit (``pycocoevalcap``): BLEU-1..4, ROUGE-L, CIDEr-D.

Captions are lower-cased and split on whitespace here (as the earlier hand-written metrics did,
so numbers stay comparable; tokens given as lists must not contain whitespace), then scored by
the toolkit's pure-Python Bleu, Rouge and Cider; its PTB tokenizer, METEOR and SPICE need Java
and are not used. Each metric's definition is on its function.
"""

from __future__ import annotations

from collections.abc import Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

__all__ = ["caption_metrics", "cider", "corpus_bleu", "rouge_l"]

Tokens = Sequence[str]
#: ``{caption id: [caption]}``, the form the toolkit's scorers take.
CocoCaptions = dict[int, list[str]]


def _joined(text: str | Tokens, lowercase: bool) -> str:
    words = text.split() if isinstance(text, str) else list(text)
    return " ".join(w.lower() for w in words) if lowercase else " ".join(words)


def _coco_inputs(hypotheses: Sequence[str | Tokens], references: Sequence[Sequence[str | Tokens]],
                 lowercase: bool) -> tuple[CocoCaptions, CocoCaptions]:
    """References and hypotheses keyed by position, as ``(gts, res)``."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every hypothesis needs at least one reference")
    gts = {i: [_joined(r, lowercase) for r in refs] for i, refs in enumerate(references)}
    res = {i: [_joined(h, lowercase)] for i, h in enumerate(hypotheses)}
    return gts, res


def corpus_bleu(hypotheses: Sequence[str | Tokens], references: Sequence[Sequence[str | Tokens]], *,
                max_n: int = 4, lowercase: bool = True) -> dict[str, float]:
    """``{"BLEU-1": .., ..., "BLEU-<max_n>": ..}`` (fractions) of ``hypotheses[i]`` against the
    list ``references[i]``: corpus-level, with the closest reference length.

    It differs from the hand-written BLEU it replaced (at commit f6f0827) in the toolkit's
    smoothing: 1e-15 added to n-gram matches, 1e-9 to n-gram counts and lengths. Ordinary
    corpora move by under 1e-8 relative; where no k-gram matches, BLEU-n (n >= k) is a small
    positive number instead of 0: at most ``(1e-15 / #k-grams) ** (1 / n)``, or ``1e-6 ** (1 / n)`` when every
    hypothesis is shorter than k words (up to 3.2 points of BLEU-4 when all have three words),
    as in every paper scored with the toolkit.
    """
    gts, res = _coco_inputs(hypotheses, references, lowercase)
    scores, _ = Bleu(max_n).compute_score(gts, res, verbose=0)
    return {f"BLEU-{n}": float(s) for n, s in enumerate(scores, start=1)}


def rouge_l(hypotheses: Sequence[str | Tokens], references: Sequence[Sequence[str | Tokens]], *,
            beta: float = 1.2, lowercase: bool = True) -> float:
    """Mean ROUGE-L F-measure over the corpus (a fraction; 0 for no hypotheses): per hypothesis
    the LCS F-measure with ``beta``, from the best precision and the best recall over its
    references."""
    gts, res = _coco_inputs(hypotheses, references, lowercase)
    scorer = Rouge()
    scorer.beta = beta
    # The toolkit splits "" into one empty token, which would match an empty reference.
    scores = [scorer.calc_score(res[i], gts[i]) if res[i][0] else 0.0 for i in res]
    return sum(scores) / len(scores) if scores else 0.0


def cider(hypotheses: Sequence[str | Tokens], references: Sequence[Sequence[str | Tokens]], *,
          lowercase: bool = True) -> float:
    """Mean CIDEr-D over the corpus (0 to 10; 0 for no hypotheses). Its IDF comes from the
    evaluated references, so it needs several videos to mean anything."""
    gts, res = _coco_inputs(hypotheses, references, lowercase)
    if not res:
        return 0.0
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def caption_metrics(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 and ROUGE-L as percentages, and CIDEr-D x 100 (papers print this or the raw 0-10)."""
    out = {k: 100.0 * v for k, v in corpus_bleu(hypotheses, references).items()}
    out["ROUGE-L"] = 100.0 * rouge_l(hypotheses, references)
    out["CIDEr"] = 100.0 * cider(hypotheses, references)
    return out
