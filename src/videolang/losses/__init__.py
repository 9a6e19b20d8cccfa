"""Losses shared by the recipes (contrastive, masked modelling, distillation)."""

from videolang.losses.contrastive import (
    all_gather_with_grad,
    contrastive_logits,
    t2v_loss,
    v2t_loss,
    videoclip_loss,
)
from videolang.losses.distill import (
    HiddenRegression,
    contrastive_distillation_loss,
    hidden_regression_loss,
    kd_kl_loss,
    nst_loss,
    paired_hinge_loss,
)
from videolang.losses.masked import masked_frame_nce_loss, mlm_loss, mtm_loss
from videolang.losses.vimpac import arrow_of_time_loss, vimpac_nce_loss

__all__ = [
    "HiddenRegression",
    "all_gather_with_grad",
    "arrow_of_time_loss",
    "contrastive_distillation_loss",
    "contrastive_logits",
    "hidden_regression_loss",
    "kd_kl_loss",
    "masked_frame_nce_loss",
    "mlm_loss",
    "mtm_loss",
    "nst_loss",
    "paired_hinge_loss",
    "t2v_loss",
    "v2t_loss",
    "videoclip_loss",
    "vimpac_nce_loss",
]
