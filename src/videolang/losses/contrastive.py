"""Video-text contrastive losses.

:func:`videoclip_loss` with its defaults is VideoCLIP's ``MMContraLoss`` (both directions
summed, temperature 1, local negatives); its options add cosine similarity, a (learned)
temperature and negatives gathered across ranks with gradients (:func:`all_gather_with_grad`).
:func:`t2v_loss` / :func:`v2t_loss` are the one-direction fine-tuning losses (``T2VContraLoss``,
``V2TContraLoss``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["all_gather_with_grad", "contrastive_logits", "t2v_loss", "v2t_loss", "videoclip_loss"]


def all_gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` from every rank along dim 0, keeping the autograd graph.

    Returns the gathered tensor and the offset of this rank's rows in it. Without an
    initialised process group (or with one rank) it returns ``x`` and 0.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(x.contiguous())
    rank = dist.get_rank()
    offset = sum(p.shape[0] for p in parts[:rank])
    return torch.cat(parts, dim=0), offset


def contrastive_logits(
    video: torch.Tensor,
    text: torch.Tensor,
    *,
    normalize: bool = False,
    temperature: float | torch.Tensor = 1.0,
    logit_scale: torch.Tensor | None = None,
    gather: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Video->text and text->video logits of the local rows, and their targets.

    Returns ``(logits_v2t (n, N), logits_t2v (n, N), targets (n,))`` where ``n`` is the local
    batch and ``N`` the gathered one (``N == n`` without ``gather``).
    """
    if video.shape != text.shape:
        raise ValueError(f"video {tuple(video.shape)} and text {tuple(text.shape)} embeddings differ in shape")
    if normalize:
        video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    all_video, offset = all_gather_with_grad(video) if gather else (video, 0)
    all_text, _ = all_gather_with_grad(text) if gather else (text, 0)
    scale = logit_scale if logit_scale is not None else 1.0 / temperature
    logits_v2t = video @ all_text.t() * scale
    logits_t2v = text @ all_video.t() * scale
    targets = torch.arange(video.shape[0], device=video.device) + offset
    return logits_v2t, logits_t2v, targets


def videoclip_loss(video: torch.Tensor, text: torch.Tensor, **options) -> torch.Tensor:
    """VideoCLIP's symmetric contrastive loss (MMPT ``MMContraLoss`` with the defaults).

    ``CE(V T^T, arange) + CE(T V^T, arange)``: each cross-entropy a mean over rows, the two
    directions **summed**, temperature 1, no L2 normalisation, local negatives only. Options,
    each off by default so the default stays the original's:

    * ``normalize=True``: cosine similarities (L2-normalised embeddings);
    * ``temperature``: a float, or a tensor (e.g. the reciprocal of a learned
      ``logit_scale.exp()``; pass ``logit_scale`` instead to multiply);
    * ``gather=True``: negatives gathered from every rank **with gradients** (each rank computes
      the loss of its own rows against all columns, so the summed gradient equals that of one
      process holding the whole batch, up to the 1/world_size of the mean that DDP's gradient
      averaging undoes).
    """
    v2t, t2v, targets = contrastive_logits(video, text, **options)
    return F.cross_entropy(v2t, targets) + F.cross_entropy(t2v, targets)


def t2v_loss(video: torch.Tensor, text: torch.Tensor, **options) -> torch.Tensor:
    """Text-to-video direction only (VideoCLIP retrieval fine-tuning)."""
    _, t2v, targets = contrastive_logits(video, text, **options)
    return F.cross_entropy(t2v, targets)


def v2t_loss(video: torch.Tensor, text: torch.Tensor, **options) -> torch.Tensor:
    """Video-to-text direction only (VideoCLIP's MSR-VTT QA fine-tuning)."""
    v2t, _, targets = contrastive_logits(video, text, **options)
    return F.cross_entropy(v2t, targets)
