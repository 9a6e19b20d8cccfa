"""Converters from the original systems' checkpoints to videolang model folders.

Each modelling module declares its converter (``CONVERTER``, see :data:`CONVERTER_MODULES`);
this module does the common part: load the file, build the registered model, load strictly,
write the folder atomically.

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

__all__ = ["available_converters", "convert_checkpoint"]

# method -> modelling module whose ``CONVERTER`` dict has ``default_model`` (registered
# config name), ``load_state(obj, model, source=...)`` (strict; raises on any missing or
# unexpected key), optional ``pipeline(model) -> dict`` (written to pipeline.json) and
# ``description`` (what file it reads).
CONVERTER_MODULES = {"videoclip": "videoclip", "vlm": "vlm", "clipbert": "clipbert", "vimpac": "vimpac",
                     "vidlankd": "vidlankd"}


def available_converters() -> dict[str, dict]:
    """method -> its converter spec, for the modelling modules that are installed."""
    import importlib
    import importlib.util

    out = {}
    for method, short in CONVERTER_MODULES.items():
        name = f"videolang.models.{short}"
        if importlib.util.find_spec(name) is None:
            continue
        spec = getattr(importlib.import_module(name), "CONVERTER", None)
        if spec is not None:
            out[method] = spec
    return out


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
    """Convert ``checkpoint`` of ``method`` into a model folder at ``out_dir``.

    Nothing is written unless every key maps (the converters load strictly).
    """
    converters = available_converters()
    if method not in converters:
        raise ConfigError(f"no converter for {method!r} (available: {', '.join(sorted(converters))})")
    spec = converters[method]
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    model = create_model(model_name or spec["default_model"], **_parse_overrides(overrides))
    # The originals pickle their argparse/omegaconf args (fairseq) or whole state: a full
    # (trusted) unpickle of a file the user chose.
    state = torch.load(path, map_location="cpu", weights_only=False)
    spec["load_state"](state, model, source=str(path))
    pipeline = dict(spec["pipeline"](model)) if spec.get("pipeline") else {}
    pipeline["converted_from"] = {"method": method, "checkpoint": str(path)}
    return save_pretrained(model, out_dir, overwrite=overwrite,
                           extra_files={"pipeline.json": json.dumps(pipeline, indent=2, sort_keys=True)})
