"""Masked-modality losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mtm_loss"]


def mtm_loss(video_logits: torch.Tensor, text_logits: torch.Tensor, text_targets: torch.Tensor,
             *, zero_logit: bool = True) -> torch.Tensor:
    """VLM's masked token modelling loss (MMPT ``MTM``, ``videoclip_vlm.md`` §3.3).

    Frame rows ``[positive, non-masked frames, vocabulary]`` have target 0; word rows
    ``[vocabulary, non-masked frames]`` have the word id as target. With ``zero_logit`` (the
    original's behaviour) every word row gets one extra constant 0 logit so both groups have the
    same width; it enters the softmax denominator. One mean cross-entropy over all rows.
    """
    if zero_logit:
        text_logits = torch.cat([text_logits, text_logits.new_zeros(text_logits.shape[0], 1)], 1)
    if video_logits.shape[1] != text_logits.shape[1]:
        raise ValueError(f"frame logits have {video_logits.shape[1]} columns, word logits {text_logits.shape[1]}")
    logits = torch.cat([video_logits, text_logits])
    targets = torch.cat([video_logits.new_zeros(video_logits.shape[0], dtype=torch.long), text_targets.long()])
    return F.cross_entropy(logits, targets)
