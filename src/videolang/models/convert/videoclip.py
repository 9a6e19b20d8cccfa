"""VideoCLIP: an original MMPT ``MMFusionSeparate`` checkpoint -> :class:`~videolang.models.videoclip.VideoCLIP`.

Our parameter names equal the original's after its ``mmmodel.`` prefix, so the conversion only
strips it and drops unused buffers (tested in tests/models/test_videoclip.py against the golden
outputs of the original).
"""

from __future__ import annotations

import torch

from videolang.models.bert import IGNORED_KEYS
from videolang.models.videoclip import VideoCLIP
from videolang.models.weights import load_strict

__all__ = ["CONVERTER", "MMPT_IGNORED", "convert_mmpt_state_dict"]

# Original MMPT keys we intentionally drop: BERT poolers (unused by VideoCLIP) and
# position-id buffers (recomputed).
MMPT_IGNORED = ("position_ids", "pooler.dense.weight", "pooler.dense.bias")


def convert_mmpt_state_dict(state: dict[str, torch.Tensor], model: VideoCLIP, *, source: str = "checkpoint") -> None:
    """Load an original VideoCLIP (MMPT ``MMFusionSeparate``) state_dict into ``model``.

    Accepts a fairseq checkpoint dict (``{"model": ...}``), a ``{"state_dict": ...}`` wrapper or
    a bare state_dict; strips ``mmmodel.``; drops :data:`MMPT_IGNORED`; casts fp16 to fp32;
    loads strictly: a missing or unexpected key is an error listing it.
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    state = {(k[len("mmmodel."):] if k.startswith("mmmodel.") else k): v for k, v in state.items()}
    ignore = (*MMPT_IGNORED, *IGNORED_KEYS)
    load_strict(model, state, source=source, ignore=ignore)


# `videolang convert videoclip` (videolang.pipelines.convert).
CONVERTER = {"default_model": "videoclip-base", "load_state": convert_mmpt_state_dict,
             "description": "MMPT VideoCLIP checkpoint_best.pt"}
