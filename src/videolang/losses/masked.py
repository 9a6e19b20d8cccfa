"""Masked-modality losses."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["IGNORE_INDEX", "masked_frame_nce_loss", "mlm_loss", "mtm_loss"]

IGNORE_INDEX = -100  # the label of a position that was not masked (PyTorch and HF convention)


def mtm_loss(video_logits: torch.Tensor, text_logits: torch.Tensor, text_targets: torch.Tensor,
             *, zero_logit: bool = True) -> torch.Tensor:
    """VLM's masked token modelling loss (MMPT ``MTM``; docs/vlm.md, "Implementation notes").

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


def masked_frame_nce_loss(video_logits: torch.Tensor, *, include_vocab: bool = True,
                          vocab_size: int | None = None) -> torch.Tensor:
    """Masked frame modelling as NCE: each masked frame's row ``[positive, non-masked frames of
    the batch, (vocabulary)]`` is classified to column 0 (its own original token). With
    ``include_vocab=False`` the last ``vocab_size`` columns (the word decoder) are dropped, the
    original's ``MFMMLM`` ablation. Mean over masked frames; 0 when there are none."""
    if video_logits.shape[0] == 0:
        return video_logits.sum() * 0.0
    if not include_vocab:
        if vocab_size is None:
            raise ValueError("include_vocab=False needs vocab_size")
        video_logits = video_logits[:, : video_logits.shape[1] - vocab_size]
    return F.cross_entropy(video_logits, video_logits.new_zeros(video_logits.shape[0], dtype=torch.long))


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor,
             reduction: Literal["masked", "all_positions"] = "masked", *,
             vocab_size: int | None = None) -> torch.Tensor:
    """Masked language modelling cross-entropy of ``logits`` ``(..., V)`` against ``targets``
    ``(...)``: either every position, -100 where a token was not masked, or the masked rows only.

    ``"masked"``: mean over the masked tokens; 0 when there are none (a batch where every item
    had its text left unmasked), with the graph kept. ``"all_positions"``: ClipBERT's original
    mean over every position, the unmasked ones counting as 0. ``vocab_size`` keeps only the
    vocabulary columns (dropping VLM's frame columns, the ``MFMMLM`` ablation).
    """
    logits = logits.reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1).long()
    if vocab_size is not None:
        logits = logits[:, :vocab_size]
    if reduction == "all_positions":
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="none").mean()
    total = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)
