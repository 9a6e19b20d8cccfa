"""Export a checkpoint's weights as a self-contained model folder (what ``videolang.load`` opens).

A run exports its best (or last) weights by itself at the end of ``fit``; this is the same for
any checkpoint afterwards: ``videolang export --config CFG --ckpt PATH OUT``, and what
``videolang predict --config`` does before predicting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.model_helpers import is_overridden

from videolang.engine.config import RunConfig
from videolang.engine.registry import get_recipe
from videolang.engine.run import checkpoint_state_dict
from videolang.engine.trainer import ConfigSource, load_run_config
from videolang.errors import ConfigError, VideolangError

__all__ = ["export_checkpoint", "export_provenance", "has_predict_loop"]


def export_checkpoint(config: ConfigSource, checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *,
                      overrides: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Build the recipe of ``config``, load ``checkpoint`` (a path, a run folder, ``last`` or
    ``best``) into it and write its model folder to ``out_dir``."""
    cfg, ckpt = load_run_config(config, overrides, None, checkpoint)
    if ckpt is None:
        raise ConfigError(f"no checkpoint found for {checkpoint!r}")
    recipe = get_recipe(cfg.recipe)
    module = recipe.module_cls(cfg)
    export = getattr(module, "export_pretrained", None)
    if export is None:
        raise VideolangError(f"recipe {cfg.recipe} has no export (no model folder to write)")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise VideolangError(f"{out} already exists; pass --overwrite to replace it")
    module.load_state_dict(checkpoint_state_dict(ckpt))
    return Path(export(out))


def has_predict_loop(recipe_name: str) -> bool:
    """Whether a recipe defines Lightning's ``predict_step`` and a predict dataloader."""
    recipe = get_recipe(recipe_name)
    datamodule = recipe.datamodule_cls
    return (is_overridden("predict_step", recipe.module_cls, parent=L.LightningModule)
            and issubclass(datamodule, L.LightningDataModule)
            and is_overridden("predict_dataloader", datamodule, parent=L.LightningDataModule))


def export_provenance(cfg: RunConfig) -> dict[str, Any]:
    """What made a model folder (``pipeline.json``'s ``provenance``; informational only,
    nothing here is read to load it)."""
    from videolang import __version__

    return {"recipe": cfg.recipe, "model": getattr(cfg.model, "name", None), "seed": cfg.seed,
            "videolang": __version__}
