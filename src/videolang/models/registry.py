"""Model registry: architectures as small JSON config files (open_clip style).

``list_models()`` names every config under ``videolang/models/configs/``;
``create_model(name, **overrides)`` builds one (overrides are config keys, dotted for nested
sections: ``create_model("videoclip-tiny", feature_dim=48, **{"text.num_hidden_layers": 1})``).
``save_pretrained`` / ``load_pretrained`` write and read a folder with ``config.json`` and
``model.safetensors``: what the engine exports and what :func:`videolang.load` opens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videolang.errors import ConfigError
from videolang.utils.io import atomic_output

__all__ = [
    "create_model",
    "get_model_config",
    "list_models",
    "load_pretrained",
    "register_architecture",
    "save_pretrained",
    "write_model_files",
]


@dataclass(frozen=True)
class Architecture:
    config_from_dict: Callable[[dict], Any]
    build: Callable[[Any], nn.Module]


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(name: str, config_from_dict: Callable[[dict], Any], build: Callable[[Any], nn.Module]) -> None:
    _ARCHITECTURES[name] = Architecture(config_from_dict, build)


# Modelling modules that define built-in architectures. Each has a module-level
# ``ARCHITECTURES = {"name": (config_from_dict, build)}``; they are imported on first use.
BUILTIN_MODEL_MODULES = ("videoclip", "vlm", "clipbert", "vimpac", "vidlankd", "anticipation")


def _register_builtin() -> None:
    if _ARCHITECTURES:
        return
    import importlib
    import importlib.util

    for short in BUILTIN_MODEL_MODULES:
        module_name = f"videolang.models.{short}"
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        for arch, (config_from_dict, build) in getattr(module, "ARCHITECTURES", {}).items():
            register_architecture(arch, config_from_dict, build)


def _config_files() -> dict[str, Any]:
    root = resources.files("videolang.models") / "configs"
    return {p.name[: -len(".json")]: p for p in root.iterdir() if p.name.endswith(".json")}


def list_models() -> list[str]:
    """Names of the registered model configs, sorted."""
    return sorted(_config_files())


def _flatten(overrides: dict[str, Any], cfg: dict | None, prefix: str = "") -> dict[str, Any]:
    """Nested override dicts as dotted keys wherever the config has a section of that name, so
    ``{"bert": {"hidden_dropout_prob": 0}}`` (what ``model.overrides.bert.hidden_dropout_prob=0``
    on the command line gives) changes one key instead of replacing the whole section."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        node = cfg.get(key) if isinstance(cfg, dict) else None
        if isinstance(value, dict) and isinstance(node, dict):
            flat.update(_flatten(value, node, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _apply_overrides(cfg: dict, overrides: dict[str, Any], name: str) -> dict:
    cfg = json.loads(json.dumps(cfg))
    resolved: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node: Any = cfg
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        resolved.update(_flatten({leaf: value}, node, "".join(f"{p}." for p in parents)))
    for key, value in resolved.items():
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"model {name!r}: no config section {part!r} (in override {key!r})")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"model {name!r}: unknown config key {key!r}")
        node[parts[-1]] = value
    return cfg


def get_model_config(name: str, **overrides: Any) -> dict:
    """The JSON config of model ``name`` with ``overrides`` applied (a plain dict)."""
    files = _config_files()
    if name not in files:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(files))}")
    cfg = json.loads(files[name].read_text())
    return _apply_overrides(cfg, overrides, name)


def _build(cfg: dict, source: str) -> nn.Module:
    _register_builtin()
    arch = cfg.get("architecture")
    if arch not in _ARCHITECTURES:
        raise ConfigError(f"{source}: unknown architecture {arch!r}; known: {', '.join(sorted(_ARCHITECTURES))}")
    body = {k: v for k, v in cfg.items() if k != "architecture"}
    a = _ARCHITECTURES[arch]
    return a.build(a.config_from_dict(body))


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build model ``name`` from its registered config (random or config-specified init)."""
    return _build(get_model_config(name, **overrides), f"model {name!r}")


def write_model_files(model: nn.Module, folder: str | os.PathLike) -> None:
    """Write ``config.json`` + ``model.safetensors`` of ``model`` into an existing ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    cfg = model.config.to_dict()
    # Weights are in the file: loading must not re-initialise from a pretrained directory.
    cfg.pop("text_pretrained", None)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def save_pretrained(model: nn.Module, out_dir: str | os.PathLike, *, overwrite: bool = True,
                    extra_files: dict[str, str] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (and ``extra_files``: name -> text) into
    ``out_dir``, atomically as a folder."""
    with atomic_output(out_dir, overwrite=overwrite, is_dir=True) as tmp:
        write_model_files(model, tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return Path(out_dir)


def load_pretrained(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_pretrained` (strict load)."""
    from safetensors.torch import load_file

    from videolang.models.bert import load_strict

    path = Path(path)
    cfg_file, weights = path / "config.json", path / "model.safetensors"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise ConfigError(f"{path}: missing {f.name} (expected a folder written by save_pretrained)")
    cfg = json.loads(cfg_file.read_text())
    cfg.pop("text_pretrained", None)
    model = _build(cfg, str(cfg_file))
    load_strict(model, load_file(str(weights), device=str(map_location)), source=str(weights))
    return model.eval()
