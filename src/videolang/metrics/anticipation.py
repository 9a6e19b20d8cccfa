"""Action-anticipation metrics, each implemented once with the originals' conventions as flags.

The originals (RULSTM, AVT and the teacher of ``sayontang/Action_Anticipation``) disagree on the
classes a class-mean recall averages over (``absent``, :func:`mean_class_recall`), on what makes
an action many-shot (``rule``, :func:`many_shot_actions`) and on verb / noun accuracy from action
scores (``mode``, :func:`verb_noun_accuracy`). Ranks count ties against the target
(:mod:`videolang.metrics.classification`); results are percentages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from videolang.errors import ConfigError, VideolangError
from videolang.metrics.classification import target_ranks, topk_accuracy

__all__ = [
    "anticipation_metrics",
    "many_shot_actions",
    "mean_class_recall",
    "topk_accuracy",
    "verb_noun_accuracy",
]


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be (N, C), got shape {tuple(t.shape)}")
    return t.detach().to(torch.float64).cpu()


def mean_class_recall(
    logits: torch.Tensor | np.ndarray,
    targets: Any,
    k: int = 5,
    *,
    classes: Iterable[int] | None = None,
    absent: Literal["skip", "zero"] = "skip",
) -> float:
    """Mean over classes of the per-class top-``k`` recall (percent).

    ``k=5`` is EPIC's AR5 / mean top-5 recall; ``k=1`` the class-mean accuracy of EGTEA.
    ``classes`` restricts the mean to a subset (e.g. :func:`many_shot_actions`). ``absent``:
    ``"skip"`` averages over the (given) classes present in ``targets`` (the teacher's
    ``nanmean``; RULSTM's ``topk_recall``); ``"zero"`` over all given classes (default: all
    ``C``), absent ones counting 0 (AVT's ``mean_class_accuracy``).
    """
    if absent not in ("skip", "zero"):
        raise ConfigError(f"absent must be 'skip' or 'zero', got {absent!r}")
    s = _as_tensor(logits, "logits")
    n, c = s.shape
    if n == 0:
        raise VideolangError("mean_class_recall of zero samples is undefined")
    ranks = target_ranks(s, targets)
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
    counts = torch.bincount(t, minlength=c).to(torch.float64)
    hits = torch.bincount(t, weights=(ranks <= k).to(torch.float64), minlength=c)
    chosen = torch.zeros(c, dtype=torch.bool)
    if classes is None:
        chosen[:] = True
    else:
        ids = torch.as_tensor(sorted({int(x) for x in classes}), dtype=torch.long)
        if ids.numel() and (ids.min() < 0 or ids.max() >= c):
            raise ConfigError(f"classes must lie in [0, {c}), got {ids.min().item()}..{ids.max().item()}")
        chosen[ids] = True
    if absent == "skip":
        chosen &= counts > 0
    if not chosen.any():
        raise VideolangError("mean_class_recall: none of the chosen classes occurs in the targets")
    recall = torch.where(counts > 0, hits / counts.clamp(min=1), torch.zeros_like(hits))
    return float(recall[chosen].mean() * 100.0)


def many_shot_actions(
    action_verbs: Sequence[int],
    action_nouns: Sequence[int],
    many_shot_verbs: Iterable[int],
    many_shot_nouns: Iterable[int],
    rule: Literal["or", "and"] = "or",
) -> list[int]:
    """Ids of the many-shot actions: verb OR noun many-shot (RULSTM / AVT), or AND (the
    teacher's draft)."""
    if rule not in ("or", "and"):
        raise ConfigError(f"rule must be 'or' or 'and', got {rule!r}")
    verbs, nouns = set(many_shot_verbs), set(many_shot_nouns)
    out = []
    for a, (v, n) in enumerate(zip(action_verbs, action_nouns, strict=True)):
        hit_v, hit_n = v in verbs, n in nouns
        if (hit_v or hit_n) if rule == "or" else (hit_v and hit_n):
            out.append(a)
    return out


def verb_noun_accuracy(
    action_logits: torch.Tensor | np.ndarray,
    targets: Any,
    action_to_part: Sequence[int],
    k: int = 1,
    *,
    mode: Literal["marginalize", "decompose"] = "marginalize",
) -> float:
    """Top-``k`` verb (or noun) accuracy from action scores, percent.

    ``targets`` are verb (noun) ids; ``action_to_part[a]`` is the verb (noun) of action ``a``.
    ``"marginalize"`` (RULSTM): softmax over actions, probabilities summed per verb, then the
    verb's rank (ties against). ``"decompose"`` (the anticipation repository's
    ``verb_action_acc.py``): the verbs of the top-``k`` actions (ties broken by index); correct
    when any equals the target.
    """
    s = _as_tensor(action_logits, "action_logits")
    mapping = torch.as_tensor(list(action_to_part), dtype=torch.long)
    if mapping.numel() != s.shape[1]:
        raise ConfigError(f"action_to_part has {mapping.numel()} entries for {s.shape[1]} actions")
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
    if mode == "marginalize":
        parts = int(max(mapping.max().item(), t.max().item() if t.numel() else 0)) + 1
        probs = s.softmax(dim=-1)
        part_scores = torch.zeros(s.shape[0], parts, dtype=probs.dtype).index_add_(1, mapping, probs)
        return topk_accuracy(part_scores, t, k)
    if mode != "decompose":
        raise ConfigError(f"mode must be 'marginalize' or 'decompose', got {mode!r}")
    top = torch.topk(s, k, dim=-1).indices  # torch breaks ties by index
    hit = (mapping[top] == t[:, None]).any(dim=-1)
    return float(hit.to(torch.float64).mean() * 100.0)


def anticipation_metrics(
    logits: torch.Tensor | np.ndarray,
    targets: Any,
    *,
    action_verbs: Sequence[int] | None = None,
    action_nouns: Sequence[int] | None = None,
    verb_targets: Any = None,
    noun_targets: Any = None,
    many_shot: Iterable[int] | None = None,
    verb_noun_mode: Literal["marginalize", "decompose"] = "marginalize",
    absent: Literal["skip", "zero"] = "skip",
) -> dict[str, float]:
    """The usual table: ``top1``, ``top5``, ``mean_top5_recall`` (AR5), ``mean_top1``
    (class-mean accuracy), ``verb_top1`` / ``noun_top1`` (when the maps and targets are
    given) and ``many_shot_top5_recall`` (when ``many_shot`` is given)."""
    s = _as_tensor(logits, "logits")
    k5 = min(5, s.shape[1])
    out = {
        "top1": topk_accuracy(s, targets, 1),
        "top5": topk_accuracy(s, targets, k5),
        "mean_top5_recall": mean_class_recall(s, targets, k5, absent=absent),
        "mean_top1": mean_class_recall(s, targets, 1, absent=absent),
    }
    for name, mapping, part_targets in (("verb", action_verbs, verb_targets), ("noun", action_nouns, noun_targets)):
        if mapping is not None and part_targets is not None:
            out[f"{name}_top1"] = verb_noun_accuracy(s, part_targets, mapping, 1, mode=verb_noun_mode)
    if many_shot is not None:
        classes = list(many_shot)
        present = set(np.asarray(targets).reshape(-1).tolist()) & set(classes)
        if present:
            out["many_shot_top5_recall"] = mean_class_recall(s, targets, k5, classes=classes, absent=absent)
    return out
