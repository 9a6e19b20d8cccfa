"""Losses shared by the recipes (contrastive, masked modelling, distillation)."""

from videolang.losses.contrastive import (
    all_gather_with_grad,
    contrastive_logits,
    t2v_loss,
    v2t_loss,
    videoclip_loss,
)
from videolang.losses.masked import masked_frame_nce_loss, mlm_loss, mtm_loss

__all__ = ["all_gather_with_grad", "contrastive_logits", "masked_frame_nce_loss", "mlm_loss", "mtm_loss", "t2v_loss", "v2t_loss", "videoclip_loss"]
