"""Losses shared by the recipes (contrastive, masked modelling, distillation)."""

from videolang.losses.contrastive import (
    all_gather_with_grad,
    contrastive_logits,
    t2v_loss,
    v2t_loss,
    videoclip_loss,
)
from videolang.losses.masked import mtm_loss

__all__ = ["all_gather_with_grad", "contrastive_logits", "mtm_loss", "t2v_loss", "v2t_loss", "videoclip_loss"]
