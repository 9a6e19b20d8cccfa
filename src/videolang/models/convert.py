"""Converters from the original systems' checkpoints to videolang model folders.

``videolang convert videoclip CKPT OUT_DIR`` reads the released MMPT checkpoint
(``checkpoint_best.pt``: a fairseq dict whose ``model`` keys start with ``mmmodel.``), maps it
onto ``videoclip-base`` (``videoclip_vlm.md`` §6.2), and writes ``config.json`` +
``model.safetensors`` + ``pipeline.json``. Any missing or unexpected key is an error that lists
them (the original loaded with ``strict=False``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from videolang.errors import ConfigError
from videolang.models.registry import create_model, save_pretrained

__all__ = ["convert_checkpoint"]

DEFAULT_MODELS = {"videoclip": "videoclip-base"}


def _parse_overrides(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def convert_checkpoint(method: str, checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *,
                       model_name: str | None = None, overrides: Sequence[str] = (),
                       overwrite: bool = False) -> Path:
    """Convert ``checkpoint`` of ``method`` into a model folder at ``out_dir``."""
    if method != "videoclip":
        raise ConfigError(f"no converter for {method!r} yet (available: videoclip)")
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    model = create_model(model_name or DEFAULT_MODELS[method], **_parse_overrides(overrides))
    # fairseq checkpoints pickle their argparse/omegaconf args: a full (trusted) unpickle.
    state = torch.load(path, map_location="cpu", weights_only=False)
    from videolang.models.videoclip import convert_mmpt_state_dict

    convert_mmpt_state_dict(state, model, source=str(path))
    # The release was trained on S3D-G features of the MIL-NCE weights (one 512-d row per
    # second); the backbone's weights are a separate local file the user points to later.
    pipeline = {"tokenizer": model.config.tokenizer, "feature_rate": 1.0,
                "max_video_len": model.config.max_video_len,
                "converted_from": {"method": method, "checkpoint": str(path)}}
    return save_pretrained(model, out_dir, overwrite=overwrite,
                           extra_files={"pipeline.json": json.dumps(pipeline, indent=2, sort_keys=True)})
