"""VLM: an original MMPT ``MMFusionMTM`` checkpoint -> :class:`~videolang.models.vlm.VLM`.

Our names equal the original's after ``mmmodel.mm_encoder.``; the conversion strips that prefix
and drops unused tables (tested in tests/models/test_vlm.py against the original's golden outputs).
"""

from __future__ import annotations

import torch

from videolang.models.bert import IGNORED_KEYS
from videolang.models.vlm import VLM
from videolang.models.weights import load_strict

__all__ = ["CONVERTER", "MMPT_VLM_IGNORED", "convert_mmpt_vlm_state_dict"]

# MMPT keys we drop: BERT's unused pooler, the never-used seg_embeddings table, position ids.
MMPT_VLM_IGNORED = (*IGNORED_KEYS, "position_ids", "seg_embeddings.weight")


def convert_mmpt_vlm_state_dict(state: dict[str, torch.Tensor], model: VLM, *, source: str = "checkpoint") -> None:
    """Load an original ``MMFusionMTM`` state dict (``mmmodel.mm_encoder.*`` or bare) strictly."""
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    prefix = "mmmodel.mm_encoder."
    state = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
    load_strict(model, state, source=source, ignore=MMPT_VLM_IGNORED)


def _load_vlm_checkpoint(state: dict, model: VLM, *, source: str = "checkpoint") -> None:
    convert_mmpt_vlm_state_dict(state, model, source=source)


# `videolang convert vlm`: how the original was used is in videolang.pipelines.vlm.
CONVERTER = {"default_model": "vlm-base", "load_state": _load_vlm_checkpoint,
             "description": "MMPT VLM (MMFusionMTM) checkpoint_best.pt"}
