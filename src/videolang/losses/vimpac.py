"""VIMPAC's long-range contrastive loss (Tan et al., 2021, eq. 6).

:func:`vimpac_nce_loss`: InfoNCE between two clips of each video, both directions summed and
multiplied by the temperature, as the original; under a process group the other ranks' clips join
as negatives with gradients, so the loss equals one process holding the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from videolang.losses.contrastive import all_gather_with_grad

__all__ = ["arrow_of_time_loss", "vimpac_nce_loss"]

_SELF = 1e9  # the original's penalty on the anchor's own column


def vimpac_nce_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2, *,
                    gather: bool = True) -> torch.Tensor:
    """Long-range InfoNCE between first clips ``a`` (N, D) and second clips ``b`` (N, D).

    After L2 normalisation, for every anchor the positive is the other clip of its video and the
    negatives are both clips of every other video (``2N - 2``; the anchor itself excluded)::

        logits_a = [a B^T | a A^T - 1e9 I] / t      (positive at column i)
        logits_b = [b A^T | b B^T - 1e9 I] / t
        loss     = (CE(logits_a) + CE(logits_b)) * t

    Both directions are summed and multiplied by ``t``, as the original (paper eq. 6). With
    ``gather`` and a process group up, other ranks' clips join as negatives with gradients.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"a and b must be (N, D) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    all_a, offset = all_gather_with_grad(a) if gather else (a, 0)
    all_b, _ = all_gather_with_grad(b) if gather else (b, 0)
    n = a.shape[0]
    targets = torch.arange(n, device=a.device) + offset
    self_mask = F.one_hot(targets, all_a.shape[0]).to(a.dtype) * _SELF
    logits_a = torch.cat([a @ all_b.t() / temperature, a @ all_a.t() / temperature - self_mask], 1)
    logits_b = torch.cat([b @ all_a.t() / temperature, b @ all_b.t() / temperature - self_mask], 1)
    return (F.cross_entropy(logits_a, targets) + F.cross_entropy(logits_b, targets)) * temperature


def arrow_of_time_loss(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor,
                       temperature: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Arrow-of-time loss (not VIMPAC's) on the projections of the first clips ``a``, the
    second clips ``b`` and the first clips played backwards ``r`` (N, D each).

    Each clip of a pair against the reverse of the first: ``b`` must be more similar to ``a``
    than to ``r``, and ``a`` more similar to ``b`` than to its own reverse, two-way
    cross-entropies averaged. ``a`` and ``r`` hold the same codes, so only the direction of time
    can separate them. As one more negative inside the contrastive loss above the reverse left a
    clip and its reverse at cosine 1.0000 after the synthetic demo's pretraining, and with the
    backbone's dropout at 0.1 this loss stayed at chance too (docs/vimpac.md). Returns the loss
    and the share of pairs ranked the right way round from ``b``.
    """
    a, b, r = (F.normalize(x, dim=-1) for x in (a, b, r))
    ab = (a * b).sum(-1)
    from_b = torch.stack([ab, (b * r).sum(-1)], 1) / temperature
    from_a = torch.stack([ab, (a * r).sum(-1)], 1) / temperature
    zero = torch.zeros(len(ab), dtype=torch.long, device=ab.device)
    loss = (F.cross_entropy(from_b, zero) + F.cross_entropy(from_a, zero)) / 2
    return loss, (from_b[:, 0] > from_b[:, 1]).float().mean()
