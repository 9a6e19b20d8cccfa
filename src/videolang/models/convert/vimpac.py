"""VIMPAC: the released checkpoints (``classifier.pt`` of pre-training or fine-tuning) -> our VIMPAC models.

Keys are renamed by the table below and the per-pattern q/k/v projections fused; details in
docs/vimpac.md ("Converting the released checkpoints"), tests in tests/models/test_vimpac.py.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from videolang.errors import ConfigError
from videolang.models.vimpac import VimpacForClassification
from videolang.models.weights import format_keys, load_strict

__all__ = ["CONVERTER", "convert_vimpac_state_dict", "original_to_videolang"]


_RENAMES = [  # original key regex -> ours (applied in order, first match wins)
    (r"^backbone\.cls_param$", "backbone.cls_token"),
    (r"^backbone\.embedding\.weight$", "backbone.token_embedding.weight"),
    (r"^backbone\.positional_embedding\.(cls|temporal|height|width)_pos_embedding$", r"backbone.pos_embed.\1"),
    (r"^backbone\.(ln_pre|ln_post)\.", r"backbone.\1."),
    (r"^backbone\.transformer\.resblocks\.(\d+)\.attention_blocks\.(\d+)\.(?:output\.)?dense\.",
     r"backbone.layers.\1.attention_blocks.\2.proj."),
    (r"^backbone\.transformer\.resblocks\.(\d+)\.attention_blocks\.(\d+)\.(?:output\.)?LayerNorm\.",
     r"backbone.layers.\1.attention_blocks.\2.norm."),
    (r"^backbone\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"backbone.layers.\1.mlp.fc1."),
    (r"^backbone\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"backbone.layers.\1.mlp.fc2."),
    (r"^backbone\.transformer\.resblocks\.(\d+)\.ln\.", r"backbone.layers.\1.norm."),
    (r"^mlm_head\.bias$", "mlm_head.bias"),
    (r"^mlm_head\.transform\.0\.", "mlm_head.dense."),
    (r"^mlm_head\.transform\.2\.", "mlm_head.norm."),
    (r"^cls_head\.mlp\.linear_(\d+)\.", r"cls_head.linears.\1."),
    (r"^cls_head\.mlp\.bn_(\d+)\.", r"cls_head.norms.\1."),
    (r"^cls_fc\.", "classifier."),
]
_QKV = re.compile(r"^backbone\.transformer\.resblocks\.(\d+)\.attention_blocks\.(\d+)\.attentions\.(\d+)"
                  r"\.attention\.(query|key|value)\.(weight|bias)$")


def _unwrap(obj: Any) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ConfigError(f"expected a state_dict, got {type(obj).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def original_to_videolang(state: dict[str, torch.Tensor], *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename an original ``ModelWithHead`` / fine-tuned state_dict to our keys, fusing the
    per-pattern q/k/v. The tied decoder weight and the aliased decoder bias are checked and dropped."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str, str], dict[tuple[int, str], torch.Tensor]] = {}
    unknown = []
    for key, value in state.items():
        m = _QKV.match(key)
        if m:
            layer, block, pattern, proj, kind = m.groups()
            qkv.setdefault((layer, block, kind), {})[(int(pattern), proj)] = value
            continue
        if key == "mlm_head.decoder.weight":
            emb = state.get("backbone.embedding.weight")
            if emb is None or not torch.equal(emb, value):
                raise ConfigError(f"{source}: mlm_head.decoder.weight is not tied to backbone.embedding.weight")
            continue
        if key == "mlm_head.decoder.bias":
            if "mlm_head.bias" in state and not torch.equal(state["mlm_head.bias"], value):
                raise ConfigError(f"{source}: mlm_head.decoder.bias differs from mlm_head.bias")
            continue
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"cannot convert {source}: unexpected keys {format_keys(unknown)}")
    for (layer, block, kind), parts in qkv.items():
        n_pat = 1 + max(p for p, _ in parts)
        try:
            fused = [parts[(p, proj)] for p in range(n_pat) for proj in ("query", "key", "value")]
        except KeyError as e:
            raise ConfigError(f"{source}: layer {layer} block {block} lacks the q/k/v {kind} {e}") from None
        out[f"backbone.layers.{layer}.attention_blocks.{block}.qkv.{kind}"] = torch.cat(fused, 0)
    return out


def convert_vimpac_state_dict(obj: Any, model: nn.Module, *, source: str = "checkpoint") -> None:
    """Load an original VIMPAC checkpoint (``classifier.pt`` of pre-training, or a fine-tuned
    one with ``cls_fc``) into ``model``, strictly. The clip shape (L, H, W) is taken from the
    checkpoint's positional tables (the 256-pixel release has 32x32 tokens)."""
    state = original_to_videolang(_unwrap(obj), source=source)
    has_fc = "classifier.weight" in state
    if has_fc != isinstance(model, VimpacForClassification):
        want = "vimpac-classifier (override architecture=vimpac-classifier num_classes=C)" if has_fc else "vimpac"
        raise ConfigError(f"{source}: this checkpoint needs the {want} architecture")
    sizes = [state.get(f"backbone.pos_embed.{n}") for n in ("temporal", "height", "width")]
    if all(s is not None for s in sizes):
        model.backbone.resize_positional_embeddings(*(int(s.shape[0]) for s in sizes))
    load_strict(model, state, source=source, optional_suffixes=("num_batches_tracked",))


# `videolang convert vimpac`: how the converted folder is used is videolang.pipelines.vimpac's
# spec_for_converted (the original's evaluation protocol).
CONVERTER = {"default_model": "vimpac-small", "load_state": convert_vimpac_state_dict,
             "description": "VIMPAC snap/pretrain/<name>/last/classifier.pt (or a fine-tuned classifier.pt)"}
