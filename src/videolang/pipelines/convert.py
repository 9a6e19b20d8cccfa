"""``videolang convert FAMILY CHECKPOINT OUT``: an original checkpoint -> a complete model folder.

Each converter module (:mod:`videolang.models.convert`) declares its mapping (``CONVERTER``) and
each pipeline module how the original was used (``spec_for_converted``, ``CONVERTED_TOKENIZER``). This module does the common
part: read the file without running code from it, load strictly and write the folder atomically,
with the feature backbone where the original had one. Details: docs/inference.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from videolang.errors import ConfigError

__all__ = ["FAMILIES", "available_converters", "convert_checkpoint"]

log = logging.getLogger(__name__)

# family -> converter module (videolang.models.convert.<name>) holding its CONVERTER
FAMILIES = ("videoclip", "vlm", "clipbert", "vimpac", "vidlankd")


def available_converters() -> dict[str, dict]:
    """family -> its converter spec, for the modelling modules that are installed."""
    out = {}
    for family in FAMILIES:
        name = f"videolang.models.convert.{family}"
        if importlib.util.find_spec(name) is None:
            continue
        spec = getattr(importlib.import_module(name), "CONVERTER", None)
        if spec is not None:
            out[family] = spec
    return out


def _parse_overrides(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def _backbone(family_module: Any, weights: str | os.PathLike | None, l2_normalize: bool | None):
    """The original pipeline's feature backbone with local ``weights``, and its spec."""
    from videolang.models.backbones import create_backbone
    from videolang.pipelines.folder import BackboneSpec

    described = getattr(family_module, "CONVERTED_BACKBONE", None)
    if not _wanted(described is not None, weights, "--backbone-weights", "feature backbone",
                   "feature rows only (give the original feature extractor's weights, e.g. s3d_howto100m.pth, "
                   "to encode raw videos)"):
        return None, None
    options = dict(described.get("options", {}))
    backbone = create_backbone(described["name"], weights=weights, **options)
    norm = described.get("l2_normalize", False) if l2_normalize is None else l2_normalize
    spec = BackboneSpec(name=described["name"], options=backbone.build_options(), feature_dim=backbone.feature_dim,
                        l2_normalize=bool(norm), dtype=described.get("dtype", "float32"))
    return backbone, spec


def _frame_tokenizer(family_module: Any, model: Any, spec: Any, source: str | os.PathLike | None):
    """The spec with the original's frame tokenizer (VIMPAC's DALL-E dVAE) and its ``extra=`` writer."""
    attach = getattr(family_module, "converted_frame_tokenizer", None)
    if not _wanted(attach is not None, source, "--frame-tokenizer", "frame tokenizer",
                   "token codes only (give the original frame tokenizer's weights, e.g. DALL-E's encoder.pkl, "
                   "to classify raw videos)"):
        return spec, None
    return attach(model, spec, source)


def _wanted(exists: bool, given: object, flag: str, what: str, without: str) -> bool:
    """Whether a part of the original pipeline goes into the folder: ``flag`` given for a family
    without that part is an error; a family with it but no ``flag`` gets a warning."""
    if not exists:
        if given is not None:
            raise ConfigError(f"{flag}: this family's original pipeline has no {what}")
        return False
    if given is None:
        log.warning("no %s: the model folder takes %s", flag, without)
        return False
    return True


def convert_checkpoint(family: str, checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *,
                       model_name: str | None = None, overrides: Sequence[str] = (), overwrite: bool = False,
                       backbone_weights: str | os.PathLike | None = None, l2_normalize: bool | None = None,
                       frame_tokenizer: str | os.PathLike | None = None) -> Path:
    """Convert ``checkpoint`` of ``family`` into a model folder at ``out_dir``.

    Nothing is written unless every key maps (the converters load strictly).
    """
    from videolang.data.text import load_tokenizer
    from videolang.models.registry import create_model
    from videolang.models.weights import read_checkpoint
    from videolang.pipelines.folder import write_model_folder
    from videolang.utils.io import sha256_file

    converters = available_converters()
    if family not in converters:
        raise ConfigError(f"no converter for {family!r} (available: {', '.join(sorted(converters))})")
    converter = converters[family]
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    pipeline_module = importlib.import_module(f"videolang.pipelines.{family}")
    model = create_model(model_name or converter["default_model"], **_parse_overrides(overrides))
    converter["load_state"](read_checkpoint(path), model, source=str(path))
    backbone, backbone_spec = _backbone(pipeline_module, backbone_weights, l2_normalize)
    spec = pipeline_module.spec_for_converted(model, backbone_spec)
    spec = spec.model_copy(update={"provenance": {
        "converted_from": {"family": family, "file": path.name, "sha256": sha256_file(path)},
        "description": converter.get("description", ""),
    }})
    tokenizer_name = getattr(pipeline_module, "CONVERTED_TOKENIZER", None)
    tokenizer = load_tokenizer(tokenizer_name) if tokenizer_name else None
    spec, extra = _frame_tokenizer(pipeline_module, model, spec, frame_tokenizer)
    return write_model_folder(out_dir, model, spec, tokenizer=tokenizer, backbone=backbone, extra=extra,
                              overwrite=overwrite)
