"""Caption metrics: corpus BLEU-1..4 and ROUGE-L, as the COCO caption toolkit computes them.

Both take whitespace-tokenized strings (or token lists). ``corpus_bleu`` sums clipped n-gram
matches and the "closest" reference lengths over the whole corpus (Papineni et al., the
definition of ``pycocoevalcap``'s Bleu and of ``nltk``'s ``corpus_bleu``); a zero n-gram
precision gives 0 (no smoothing). ``rouge_l`` is the mean over candidates of the LCS F-measure
with beta = 1.2, taking the best precision and the best recall over the references
(``pycocoevalcap``'s Rouge). Scores are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

__all__ = ["caption_metrics", "corpus_bleu", "rouge_l"]

Tokens = Sequence[str]


def _tokens(text: str | Tokens, lowercase: bool) -> list[str]:
    words = text.split() if isinstance(text, str) else list(text)
    return [w.lower() for w in words] if lowercase else words


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(hypotheses: Sequence[str | Tokens], references: Sequence[Sequence[str | Tokens]], *,
                max_n: int = 4, lowercase: bool = True) -> dict[str, float]:
    """``{"BLEU-1": .., ..., "BLEU-<max_n>": ..}`` of ``hypotheses[i]`` against the list
    ``references[i]``."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        h = _tokens(hyp, lowercase)
        rs = [_tokens(r, lowercase) for r in refs]
        if not rs:
            raise ValueError("every hypothesis needs at least one reference")
        hyp_len += len(h)
        ref_len += min((len(r) for r in rs), key=lambda n: (abs(n - len(h)), n))  # closest, shorter on ties
        for n in range(1, max_n + 1):
            counts = _ngrams(h, n)
            best: Counter = Counter()
            for r in rs:
                best |= _ngrams(r, n)  # the max count of each n-gram over the references
            matches[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if hyp_len == 0:
        return {f"BLEU-{n}": 0.0 for n in range(1, max_n + 1)}
    brevity = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    out, log_sum = {}, 0.0
    for n in range(1, max_n + 1):
        if matches[n - 1] == 0:
            log_sum = float("-inf")
        else:
            log_sum += math.log(matches[n - 1] / totals[n - 1])
        out[f"BLEU-{n}"] = brevity * math.exp(log_sum / n) if log_sum > float("-inf") else 0.0
    return out


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hypotheses: Sequence[str | Tokens], references: Sequence[Sequence[str | Tokens]], *,
            beta: float = 1.2, lowercase: bool = True) -> float:
    """Mean ROUGE-L F-measure over the corpus."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        return 0.0
    scores = []
    for hyp, refs in zip(hypotheses, references, strict=True):
        h = _tokens(hyp, lowercase)
        precision = recall = 0.0
        for ref in refs:
            r = _tokens(ref, lowercase)
            lcs = _lcs(h, r)
            precision = max(precision, lcs / len(h) if h else 0.0)
            recall = max(recall, lcs / len(r) if r else 0.0)
        if precision == 0 or recall == 0:
            scores.append(0.0)
        else:
            scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
    return sum(scores) / len(scores)


def caption_metrics(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 and ROUGE-L as percentages."""
    out = {k: 100.0 * v for k, v in corpus_bleu(hypotheses, references).items()}
    out["ROUGE-L"] = 100.0 * rouge_l(hypotheses, references)
    return out
