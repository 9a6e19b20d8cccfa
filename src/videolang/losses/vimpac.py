"""VIMPAC's long-range contrastive loss (``vimpac.md`` §5).

``a`` and ``b`` are the projections (N, D) of the first and second clip of N videos, taken
uniformly and independently from each video. After L2 normalisation, for every anchor the
positive is the other clip of its video and the negatives are both clips of every other video
(``2N - 2``); the anchor itself is excluded::

    logits_a = [a B^T | a A^T - 1e9 I] / t      (positive at column i)
    logits_b = [b A^T | b B^T - 1e9 I] / t
    loss     = (CE(logits_a) + CE(logits_b)) * t

both directions **summed** (not averaged) and multiplied by the temperature, as the original
(paper eq. 6 puts the temperature ``t = 0.2`` in front of the loss). When a process group is
up, the other ranks' clips join as negatives through
:func:`videolang.losses.contrastive.all_gather_with_grad` (gradients flow back to them), so the
loss equals that of one process holding the whole global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from videolang.losses.contrastive import all_gather_with_grad

__all__ = ["vimpac_nce_loss"]

_SELF = 1e9  # the original's penalty on the anchor's own column


def vimpac_nce_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2, *,
                    gather: bool = True) -> torch.Tensor:
    """Long-range InfoNCE between first clips ``a`` (N, D) and second clips ``b`` (N, D)."""
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
