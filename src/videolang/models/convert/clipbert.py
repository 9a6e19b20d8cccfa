"""ClipBERT: the released ``clipbert_image_text_pretrained.pt`` (jayleicn/ClipBERT) -> :class:`~videolang.models.clipbert.ClipBert`.

The detectron2 ResNet keys map to torchvision's layout; the rest keep their names (tested in
tests/models/test_clipbert.py).
"""

from __future__ import annotations

import torch

from videolang.errors import ConfigError
from videolang.models.backbones.resnet import convert_detectron2_resnet
from videolang.models.clipbert import ClipBert
from videolang.models.weights import load_strict

__all__ = ["CONVERTER", "ORIGINAL_DROPPED_KEYS", "ORIGINAL_DROPPED_PREFIXES", "convert_clipbert_state_dict"]


# Keys of the original checkpoint that are dropped on purpose (prefixes / exact names).
ORIGINAL_DROPPED_PREFIXES = (
    "cnn.feature.proposal_generator.",  # RPN of the detectron2 detector: unused
    "cnn.feature.roi_heads.",  # box and attribute heads: unused
)
ORIGINAL_DROPPED_KEYS = (
    "cnn.feature.pixel_mean", "cnn.feature.pixel_std",  # unused buffers (normalisation is fixed)
    "transformer.bert.visual_embeddings.position_embeddings.weight",  # never used in forward
    "transformer.bert.embeddings.position_ids",
)


def convert_clipbert_state_dict(state: dict[str, torch.Tensor], model: ClipBert, *,
                                source: str = "checkpoint") -> None:
    """Load an original ClipBERT state dict (``torch.save(model.state_dict())`` of ``ClipBert``,
    e.g. ``clipbert_image_text_pretrained.pt``) into ``model``, strictly.

    ``cnn.feature.backbone.*`` (detectron2 layout) -> ``cnn.backbone.*`` (torchvision layout);
    ``transformer.*`` and ``cnn.grid_encoder.*`` keep their names; the dropped keys are listed
    in :data:`ORIGINAL_DROPPED_PREFIXES` / :data:`ORIGINAL_DROPPED_KEYS`. The MLM decoder's
    ``weight`` and ``bias`` must equal the word embeddings and ``predictions.bias`` (tied in
    the original) and are then dropped. fp16 tensors are cast to the model's dtype. Any other
    missing, unexpected or mis-shaped key is a :class:`ConfigError` listing them.
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in ORIGINAL_DROPPED_KEYS or key.startswith(ORIGINAL_DROPPED_PREFIXES):
            continue
        if key.startswith("cnn.feature.backbone."):
            continue  # mapped below
        out[key] = value
    resnet = convert_detectron2_resnet(state, prefix="cnn.feature.backbone.")
    out.update({f"cnn.backbone.{k}": v for k, v in resnet.items()})
    dec_w, dec_b = "transformer.cls.predictions.decoder.weight", "transformer.cls.predictions.decoder.bias"
    word, bias = "transformer.bert.embeddings.word_embeddings.weight", "transformer.cls.predictions.bias"
    for dec, ref in ((dec_w, word), (dec_b, bias)):
        if dec in out:
            if ref in out and not torch.equal(out[dec].float(), out[ref].float()):
                raise ConfigError(f"cannot load {source}: {dec} is not tied to {ref}")
            del out[dec]
    load_strict(model, out, source=source)


# `videolang convert clipbert`: the folder's pipeline spec comes from
# videolang.pipelines.clipbert.spec_for_converted.
CONVERTER = {"default_model": "clipbert-base", "load_state": convert_clipbert_state_dict,
             "description": "ClipBERT clipbert_image_text_pretrained.pt (image-text pretrained, e2e)"}
