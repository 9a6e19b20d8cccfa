"""Knowledge-distillation losses (VidLanKD and LM-to-video action anticipation).

Pure functions, batch first, with explicit ``mask`` and ``reduction`` arguments:
:func:`kd_kl_loss`, :func:`nst_loss`, :func:`hidden_regression_loss` /
:class:`HiddenRegression`, :func:`contrastive_distillation_loss` (what VidLanKD calls "CRD") and
:func:`paired_hinge_loss`. Each default is the corrected form; where an original normalises
differently, an option reproduces it bit for bit (the golden values of
tests/losses/test_distill.py test those options). Table and quirks: docs/anticipation.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from videolang.errors import ConfigError

__all__ = [
    "HiddenRegression",
    "contrastive_distillation_loss",
    "hidden_regression_loss",
    "kd_kl_loss",
    "nst_loss",
    "paired_hinge_loss",
    "select_teacher_classes",
]

KLReduction = Literal["none", "sum", "mean", "batchmean"]
Selection = Literal["topk", "topk_other", "topmidbottom"]


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _row_mask(mask: torch.Tensor | None, n: int, device: torch.device, name: str = "mask") -> torch.Tensor:
    """A bool ``(n,)`` mask (all True when ``mask`` is None)."""
    if mask is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    if mask.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


def _token_mask(mask: torch.Tensor | None, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """A float ``(B, L)`` token mask (all ones when ``mask`` is None)."""
    if mask is None:
        return torch.ones(shape, device=device)
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask must have shape {shape}, got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# Logit distillation
# --------------------------------------------------------------------------------------------


def select_teacher_classes(teacher_logits: torch.Tensor, k: int, selection: Selection = "topk") -> torch.Tensor:
    """Indices ``(B, k')`` of the classes a restricted KD term keeps, chosen per sample from
    the teacher's logits.

    ``"topk"`` and ``"topk_other"``: the teacher's ``k`` highest classes, best first (``k' = k``).
    ``"topmidbottom"``: the anticipation code's variant 2: with the classes sorted ascending
    (``o``) and ``n`` classes, ``o[:k] ++ o[(n-k)//2 : (n-k)//2 + k] ++ o[n-k:]`` (``k' = 3k``).
    """
    n = teacher_logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"top_k must be a positive int, got {k!r}")
    if k > n:
        raise ConfigError(f"top_k={k} exceeds the number of classes ({n})")
    if selection in ("topk", "topk_other"):
        return teacher_logits.topk(k, dim=-1).indices
    if 3 * k > n:
        raise ConfigError(f"selection 'topmidbottom' needs 3*top_k <= classes, got top_k={k}, {n} classes")
    order = teacher_logits.argsort(dim=-1)
    mid = (n - k) // 2
    return torch.cat([order[:, :k], order[:, mid : mid + k], order[:, n - k :]], dim=-1)


def _restricted_log_probs(logits: torch.Tensor, idx: torch.Tensor, temperature: float, other: bool) -> torch.Tensor:
    """Log-probabilities over the classes ``idx`` (renormalised), or over ``idx`` plus one
    "other" bucket holding the rest of the full distribution's mass (``other=True``)."""
    if not other:
        return F.log_softmax(logits.gather(-1, idx) / temperature, dim=-1)
    log_p = F.log_softmax(logits / temperature, dim=-1)
    kept = log_p.gather(-1, idx)
    tail = log_p.scatter(-1, idx, float("-inf")).logsumexp(dim=-1, keepdim=True)
    return torch.cat([kept, tail], dim=-1)


def kd_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    reduction: KLReduction = "batchmean",
    *,
    selection: Selection = "topk",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T**2 * KL(p_teacher || p_student)`` with ``p = softmax(logits / T)``.

    The teacher is detached (no gradient flows into it). Element ``(b, c)`` is
    ``p_t[b,c] * (log p_t[b,c] - log p_s[b,c]) * T**2``; ``reduction`` has
    :class:`torch.nn.KLDivLoss` semantics over those elements:

    * ``"batchmean"`` (default): sum over classes, mean over samples -- the per-sample KL, the
      textbook KD term (weights of order 1, independent of the class count);
    * ``"mean"``: mean over all ``B x C'`` elements -- the action-anticipation code
      (``kld_lm.py`` + ``torch.mean``), ``1/C'`` of ``"batchmean"``, hence its weights 150/20;
    * ``"sum"``; ``"none"``: the ``(B, C')`` elements.

    With ``top_k`` the two distributions are restricted per sample to classes chosen from the
    teacher (:func:`select_teacher_classes`):

    * ``"topk"``: the teacher's top-k, both renormalised over them (the original's EK55
      variant; gradient only reaches those k student logits). ``"none"`` columns are ordered
      by teacher rank. ``top_k`` equal to the class count is the full loss;
    * ``"topk_other"``: top-k plus one "other" bucket with each distribution's remaining mass
      (``C' = k + 1``), so the student is also pushed down on the tail (our addition);
    * ``"topmidbottom"``: bottom, middle and top k of the teacher (``C' = 3k``), renormalised.

    Args:
        student_logits, teacher_logits: ``(B, C)``.
        temperature: ``T > 0``.
        mask: optional bool ``(B,)``; False rows (e.g. a clip without a teacher prediction)
            contribute nothing and are not counted by ``"batchmean"`` / ``"mean"``; with no row
            kept the loss is 0 (still connected to the graph).
    """
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"kd_kl_loss expects (B, C) student and teacher logits of one shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}")
    _check_choice("reduction", reduction, ("none", "sum", "mean", "batchmean"))
    _check_choice("selection", selection, ("topk", "topk_other", "topmidbottom"))
    teacher = teacher_logits.detach().to(student_logits.dtype)
    n_classes = student_logits.shape[1]
    if top_k is None or (selection == "topk_other" and top_k == n_classes):
        # A tail bucket of zero mass would be log(0) - log(0); the full loss is the same thing.
        if top_k is not None:
            select_teacher_classes(teacher, top_k, selection)  # validates top_k
        log_s = F.log_softmax(student_logits / temperature, dim=-1)
        log_t = F.log_softmax(teacher / temperature, dim=-1)
    else:
        idx = select_teacher_classes(teacher, top_k, selection)
        other = selection == "topk_other"
        log_s = _restricted_log_probs(student_logits, idx, temperature, other)
        log_t = _restricted_log_probs(teacher, idx, temperature, other)
    elements = F.kl_div(log_s, log_t, reduction="none", log_target=True) * temperature**2
    keep = _row_mask(mask, elements.shape[0], elements.device)
    elements = elements * keep[:, None].to(elements.dtype)
    if reduction == "none":
        return elements
    total = elements.sum()
    if reduction == "sum":
        return total
    rows = keep.sum().clamp(min=1).to(elements.dtype)
    return total / rows if reduction == "batchmean" else total / (rows * elements.shape[1])


# --------------------------------------------------------------------------------------------
# Neural selectivity transfer (MMD over hidden units)
# --------------------------------------------------------------------------------------------


def _unit_patterns(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, L, H)`` -> each hidden unit's activation pattern over the valid tokens, unit norm
    (padded tokens zeroed first, so they add nothing to any dot product)."""
    return F.normalize(hidden * mask[..., None].to(hidden.dtype), dim=1)


def _kernel_mean(
    a: torch.Tensor, b: torch.Tensor, kernel: str, degree: int, coef0: float, sigma: float
) -> torch.Tensor:
    """Mean over the ``(H_a, H_b)`` unit pairs of ``k(a_j, b_k)`` per sample -> ``(B,)``."""
    gram = a.transpose(1, 2) @ b  # (B, H_a, H_b): dot products of unit patterns
    if kernel == "poly":
        values = (gram + coef0).pow(degree)
    elif kernel == "linear":
        values = gram
    else:  # gaussian
        sq_a = a.pow(2).sum(dim=1)[:, :, None]
        sq_b = b.pow(2).sum(dim=1)[:, None, :]
        values = torch.exp(-(sq_a + sq_b - 2 * gram).clamp(min=0) / (2 * sigma**2))
    return values.mean(dim=(1, 2))


def nst_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    mask: torch.Tensor | None = None,
    kernel: Literal["poly", "gaussian", "linear"] = "poly",
    *,
    degree: int = 2,
    coef0: float = 0.0,
    sigma: float = 1.0,
    include_teacher_term: bool = True,
    reduction: Literal["mean", "sum", "none", "vidlankd"] = "mean",
) -> torch.Tensor:
    """Neural selectivity transfer: MMD^2 between the student's and the teacher's hidden units.

    Per sample ``b``: ``S = colnorm(s_b)``, ``T = colnorm(t_b)`` where ``colnorm`` makes each
    hidden unit's activation pattern over the (valid) tokens unit-norm; the units are the
    samples of the two distributions, compared with kernel ``k``::

        NST_b = mean_jk k(S_j, S_k) - 2 mean_jk k(S_j, T_k) + mean_jk k(T_j, T_k)

    Kernels: ``"poly"`` ``(u.w + coef0) ** degree`` (VidLanKD: degree 2, coef0 0),
    ``"gaussian"`` ``exp(-|u - w|^2 / (2 sigma^2))``, ``"linear"`` ``u.w``. The student and
    teacher widths may differ. Vectorised with ``bmm``.

    VidLanKD's KD1 term (golden "student NST term", tests/models/test_vidlankd.py) is
    ``include_teacher_term=False, reduction="vidlankd"``: it drops the teacher-teacher term
    (constant for the student, so the loss can be negative) and returns ``sum_b NST_b / L`` with
    ``L`` the padded sequence length. The defaults are the true MMD^2, averaged over the batch.
    VidLanKD also L2-normalises each token's vector *before* calling this (a caller's choice:
    the result depends on it).

    Args:
        student_hidden: ``(B, L, H_s)``; teacher_hidden: ``(B, L, H_t)``.
        mask: optional ``(B, L)``, 1 for real tokens (the original has no mask).
        reduction: ``"mean"`` over samples, ``"sum"``, ``"none"`` (``(B,)``), or ``"vidlankd"``.
    """
    if student_hidden.dim() != 3 or teacher_hidden.dim() != 3 or student_hidden.shape[:2] != teacher_hidden.shape[:2]:
        raise ValueError(
            f"nst_loss expects (B, L, H) hidden states with equal B and L, got "
            f"{tuple(student_hidden.shape)} and {tuple(teacher_hidden.shape)}"
        )
    _check_choice("kernel", kernel, ("poly", "gaussian", "linear"))
    _check_choice("reduction", reduction, ("mean", "sum", "none", "vidlankd"))
    tokens = _token_mask(mask, tuple(student_hidden.shape[:2]), student_hidden.device)
    s = _unit_patterns(student_hidden, tokens)
    t = _unit_patterns(teacher_hidden.detach().to(s.dtype), tokens)
    per_sample = _kernel_mean(s, s, kernel, degree, coef0, sigma) - 2 * _kernel_mean(s, t, kernel, degree, coef0, sigma)
    if include_teacher_term:
        per_sample = per_sample + _kernel_mean(t, t, kernel, degree, coef0, sigma)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "vidlankd":
        return per_sample.sum() / student_hidden.shape[1]
    return per_sample.mean()


# --------------------------------------------------------------------------------------------
# Hidden-state regression
# --------------------------------------------------------------------------------------------


def _position_mask(mask: torch.Tensor | None, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    if mask is None:
        return torch.ones(shape, device=device)
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask must have shape {shape}, got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.float32)


def hidden_regression_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    mask: torch.Tensor | None = None,
    kind: Literal["mse", "normalized_mse", "cosine"] = "mse",
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> torch.Tensor:
    """Regress student hidden states (optionally projected) onto the teacher's.

    Per position (a sample ``(B, D)`` or a token ``(B, L, D)``):

    * ``"mse"``: mean over features of ``(proj(s) - t)^2``;
    * ``"normalized_mse"``: the same after L2-normalising both (the anticipation code's
      ``NormedMSE``);
    * ``"cosine"``: ``1 - cos(proj(s), t)`` (its ``CosineSim``).

    ``reduction="mean"`` averages over valid positions (so ``"mse"`` equals
    :func:`torch.nn.functional.mse_loss` without a mask); ``"none"`` returns the per-position
    values (masked ones zeroed). The teacher is detached.

    Args:
        projection: maps the student width to the teacher's (e.g. the ``nn.Linear`` owned by
            :class:`HiddenRegression`); required when the widths differ.
        mask: optional ``(B,)`` or ``(B, L)``, 1 where the position counts.
    """
    _check_choice("kind", kind, ("mse", "normalized_mse", "cosine"))
    _check_choice("reduction", reduction, ("mean", "sum", "none"))
    student = projection(student_hidden) if projection is not None else student_hidden
    teacher = teacher_hidden.detach().to(student.dtype)
    if student.shape != teacher.shape:
        raise ConfigError(
            f"student hidden {tuple(student.shape)} and teacher hidden {tuple(teacher.shape)} differ; "
            "pass a projection (HiddenRegression builds one) when the widths differ"
        )
    if kind == "cosine":
        values = 1.0 - F.cosine_similarity(student, teacher, dim=-1)
    else:
        if kind == "normalized_mse":
            student, teacher = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
        values = (student - teacher).pow(2).mean(dim=-1)
    weights = _position_mask(mask, tuple(values.shape), values.device).to(values.dtype)
    values = values * weights
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    return values.sum() / weights.sum().clamp(min=1)


class HiddenRegression(nn.Module):
    """Hidden-state regression with its own learned student-to-teacher projection.

    ``projection`` is ``nn.Linear(student_dim, teacher_dim)`` when the widths differ (or when
    ``project=True``), otherwise the identity. ``forward(student, teacher, mask)`` returns
    :func:`hidden_regression_loss` with this module's ``kind``.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        kind: Literal["mse", "normalized_mse", "cosine"] = "mse",
        *,
        project: bool | None = None,
    ):
        super().__init__()
        _check_choice("kind", kind, ("mse", "normalized_mse", "cosine"))
        self.kind = kind
        needs = student_dim != teacher_dim if project is None else project
        if not needs and student_dim != teacher_dim:
            raise ConfigError(f"project=False needs equal widths, got student {student_dim}, teacher {teacher_dim}")
        self.projection: nn.Module = nn.Linear(student_dim, teacher_dim) if needs else nn.Identity()

    def forward(
        self, student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return hidden_regression_loss(student_hidden, teacher_hidden, mask, self.kind, self.projection)


# --------------------------------------------------------------------------------------------
# Contrastive (NT-Xent) distillation
# --------------------------------------------------------------------------------------------


def contrastive_distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    *,
    reduction: Literal["mean", "vidlankd"] = "mean",
) -> torch.Tensor:
    """NT-Xent (SimCLR) between student and teacher embeddings of the same items.

    ``z = [student; teacher]`` (``2B`` rows), cosine similarities divided by ``temperature``;
    each anchor's positive is its counterpart (student ``b`` <-> teacher ``b``) and its
    negatives are the other ``2B - 2`` rows. For ``(B, L, D)`` inputs this is done per token
    position independently (negatives from the same position only, as VidLanKD), vectorised over
    positions. Gradients flow into both sides (VidLanKD's teacher output is a constant anyway).

    ``reduction="mean"``: mean cross-entropy over all valid anchors. ``"vidlankd"``: VidLanKD's
    KD2 term (its ``contrastive_loss_item``; golden "student NT-Xent term"): per
    position the CE mean over anchors divided once more by the anchor count ``2B`` (a double
    average), then summed over positions and divided by the padded length ``L``.

    This is what VidLanKD calls "CRD"; Tian et al.'s CRD (memory bank, critic) is not this.

    Args:
        student, teacher: ``(B, D)`` or ``(B, L, D)`` of one shape.
        mask: optional ``(B, L)`` (3-D inputs): padded tokens are neither anchors nor negatives.
    """
    if student.shape != teacher.shape or student.dim() not in (2, 3):
        raise ValueError(
            f"contrastive_distillation_loss expects (B, D) or (B, L, D) inputs of one shape, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}")
    _check_choice("reduction", reduction, ("mean", "vidlankd"))
    if student.dim() == 2:
        if mask is not None:
            raise ValueError("mask is only accepted for (B, L, D) inputs")
        student, teacher = student[:, None], teacher[:, None]
    b, length, _ = student.shape
    valid = _token_mask(mask, (b, length), student.device).bool()
    z = F.normalize(torch.cat([student, teacher.to(student.dtype)], dim=0), dim=-1).transpose(0, 1)  # (L, 2B, D)
    valid2 = torch.cat([valid, valid], dim=0).t()  # (L, 2B)
    sim = (z @ z.transpose(1, 2)) / temperature  # (L, 2B, 2B)
    blocked = torch.eye(2 * b, dtype=torch.bool, device=z.device)[None] | ~valid2[:, None, :]
    sim = sim.masked_fill(blocked, float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    ce = F.cross_entropy(sim.reshape(-1, 2 * b), target.repeat(length), reduction="none").reshape(length, 2 * b)
    ce = torch.where(valid2, ce, torch.zeros_like(ce))
    if reduction == "mean":
        return ce.sum() / valid2.sum().clamp(min=1)
    anchors = valid2.sum(dim=1).clamp(min=1).to(ce.dtype)  # per position
    return (ce.sum(dim=1) / anchors**2).sum() / length


# --------------------------------------------------------------------------------------------
# VidLanKD teacher: token-to-video hinge
# --------------------------------------------------------------------------------------------


def _paired_half(tokens: torch.Tensor, video: torch.Tensor, mask: torch.Tensor, margin: float) -> torch.Tensor:
    if tokens.shape[0] % 2:  # the original duplicates the last row
        tokens, video, mask = (torch.cat([x, x[-1:]]) for x in (tokens, video, mask))
    half = tokens.shape[0] // 2
    first, second = torch.arange(half), torch.arange(half, 2 * half)
    paired = torch.cat([second, first]).to(tokens.device)  # row i's negative video
    own = (tokens * video[:, None, :]).sum(-1)  # (B, L)
    swapped = (tokens * video[paired][:, None, :]).sum(-1)
    loss = (margin - own + swapped).clamp(min=0) * mask
    return loss.sum() / mask.sum().clamp(min=1)


def _in_batch(tokens: torch.Tensor, video: torch.Tensor, mask: torch.Tensor, margin: float) -> torch.Tensor:
    b = tokens.shape[0]
    score = torch.einsum("ild,jd->ijl", tokens, video)  # token t of text i vs video j
    own = score.diagonal(dim1=0, dim2=1).t()  # (B, L): s(l_it, v_i)
    off = ~torch.eye(b, dtype=torch.bool, device=tokens.device)[:, :, None]
    # text -> video: each valid token ranks its own video above every other video j
    text_side = (margin - own[:, None, :] + score).clamp(min=0) * (off * mask[:, None, :])
    # video -> text: video j ranks its own text's token t above token t of every other text i
    pair_valid = mask[:, None, :] * mask[None, :, :]  # (i, j, t): both tokens real
    video_side = (margin - own[None, :, :] + score).clamp(min=0) * (off * pair_valid)
    count = (mask.sum() * b).clamp(min=1)
    return text_side.sum() / count + video_side.sum() / count


def paired_hinge_loss(
    token_emb: torch.Tensor,
    video_emb: torch.Tensor,
    mask: torch.Tensor | None = None,
    margin: float = 1.0,
    negatives: Literal["paired_half", "in_batch"] = "paired_half",
) -> torch.Tensor:
    """VidLanKD's token-to-video hinge rank loss; scores are dot products, i.e.
    cosines for the L2-normalised embeddings VidLanKD passes (normalise before calling).

    ``"paired_half"`` (the original ``paired_hinge_rank_loss``; golden "teacher hinge"): rows
    ``i`` of the first and second halves of the batch are paired; each valid token of text
    ``i`` must score its own video at least ``margin`` above the paired video::

        L = sum_{i,t} mask * max(0, m - s(l_it, v_i) + s(l_it, v_pair(i))) / sum mask

    An odd batch duplicates its last row first, as the original does. Language side only.

    ``"in_batch"``: every other video in the batch is a negative for each token (text side),
    and every other text's token at the same position is a negative for each video (video
    side, counted where both tokens are real); each side is summed and divided by
    ``sum(mask) * B`` and the two are added. This is the *intent* of the original's unused
    ``batchwise_hinge_rank_loss``; the released function mis-broadcasts its positive scores
    (``(B, B, L)`` instead of ``(B, L)``), so its numbers are not reproduced (docs/anticipation.md).

    Args:
        token_emb: ``(B, L, D)``; video_emb: ``(B, D)``; mask: ``(B, L)``, 1 for tokens.
    """
    if token_emb.dim() != 3 or video_emb.dim() != 2 or video_emb.shape != (token_emb.shape[0], token_emb.shape[2]):
        raise ValueError(
            f"paired_hinge_loss expects token_emb (B, L, D) and video_emb (B, D), got "
            f"{tuple(token_emb.shape)} and {tuple(video_emb.shape)}"
        )
    if not margin > 0:
        raise ConfigError(f"margin must be > 0, got {margin!r}")
    _check_choice("negatives", negatives, ("paired_half", "in_batch"))
    tokens_mask = _token_mask(mask, tuple(token_emb.shape[:2]), token_emb.device).to(token_emb.dtype)
    video = video_emb.to(token_emb.dtype)
    if negatives == "paired_half":
        if token_emb.shape[0] < 2:
            raise ValueError("paired_half negatives need a batch of at least 2")
        return _paired_half(token_emb, video, tokens_mask, margin)
    return _in_batch(token_emb, video, tokens_mask, margin)
