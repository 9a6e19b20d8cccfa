"""Recipes by name: ``"<method>.<objective>"`` -> a LightningModule, a DataModule and the
dataclasses of their ``model`` / ``data`` config sections.

:func:`register_recipe` records a recipe; :func:`get_recipe` imports ``videolang.recipes.<method>``
(or ``some.module`` for ``"some.module:name"``) on demand; :func:`load_config` validates a run
config against its recipe's schema. What a recipe must do: docs/engine.md, "Recipes".
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from torch import nn
from torch.utils.data import DataLoader

from videolang.data.splits import DataSplits
from videolang.engine.config import (
    OptimConfig,
    RunConfig,
    RunFolderConfig,
    TrainerConfig,
    config_to_dict,
    load_config_dict,
    validate_config,
)
from videolang.engine.optim import build_optimizer, build_scheduler
from videolang.errors import ConfigError, VideolangError

__all__ = ["Recipe", "RecipeModule", "StagedEvalModule", "create_recipe_model", "get_recipe", "list_recipes", "load_config", "recipe", "register_recipe"]

RECIPE_PACKAGE = "videolang.recipes"


@dataclass(frozen=True)
class Recipe:
    """A registered recipe: its classes and the dataclasses of its config sections."""

    name: str
    module_cls: type[L.LightningModule]
    datamodule_cls: type[L.LightningDataModule] | type[DataSplits]
    model_config_cls: type
    data_config_cls: type
    section_classes: Mapping[str, type] = field(default_factory=dict)

    def make_datamodule(self, cfg: RunConfig) -> L.LightningDataModule:
        """The run's DataModule: the recipe's own, or its data splits served by the engine's."""
        if issubclass(self.datamodule_cls, DataSplits):
            from videolang.engine.datamodule import SplitsDataModule

            return SplitsDataModule(cfg, self.datamodule_cls)
        return self.datamodule_cls(cfg)

    def schema(self) -> dict[str, type]:
        """Section name -> dataclass, for :func:`videolang.engine.config.validate_config`."""
        return {"model": self.model_config_cls, "data": self.data_config_cls, **self.section_classes}


_RECIPES: dict[str, Recipe] = {}


def _check_dataclass(cls: type, what: str, name: str) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise VideolangError(f"recipe {name!r}: {what} must be a dataclass, got {cls!r}")


def register_recipe(
    name: str,
    module_cls: type[L.LightningModule],
    datamodule_cls: type[L.LightningDataModule] | type[DataSplits],
    model_config_cls: type,
    data_config_cls: type,
    *,
    optim_config_cls: type[OptimConfig] = OptimConfig,
    trainer_config_cls: type[TrainerConfig] = TrainerConfig,
    run_config_cls: type[RunFolderConfig] = RunFolderConfig,
) -> Recipe:
    """Register a recipe under ``name``; returns the :class:`Recipe`.

    ``optim_config_cls`` / ``trainer_config_cls`` / ``run_config_cls`` may be subclasses of
    the engine's sections that add keys the recipe reads. ``datamodule_cls`` is a
    :class:`~videolang.data.splits.DataSplits` subclass (served by the engine's DataModule) or,
    for a recipe with unusual loaders, a LightningDataModule taking the run config.
    """
    _check_dataclass(model_config_cls, "the model config", name)
    _check_dataclass(data_config_cls, "the data config", name)
    sections = {}
    for key, cls, base in (("optim", optim_config_cls, OptimConfig), ("trainer", trainer_config_cls, TrainerConfig),
                           ("run", run_config_cls, RunFolderConfig)):
        if not (isinstance(cls, type) and issubclass(cls, base) and dataclasses.is_dataclass(cls)):
            raise VideolangError(f"recipe {name!r}: the {key} config must be a dataclass subclassing {base.__name__}")
        if cls is not base:
            sections[key] = cls
    entry = Recipe(name, module_cls, datamodule_cls, model_config_cls, data_config_cls, sections)
    previous = _RECIPES.get(name)
    if previous is not None and previous.module_cls.__qualname__ != module_cls.__qualname__:
        raise VideolangError(f"recipe {name!r} is already registered by {previous.module_cls.__qualname__}")
    _RECIPES[name] = entry
    return entry


def recipe(
    name: str, *, datamodule: type[L.LightningDataModule] | type[DataSplits], model_config: type, data_config: type, **sections: type
) -> Callable[[type[L.LightningModule]], type[L.LightningModule]]:
    """Class decorator form of :func:`register_recipe` for the LightningModule."""

    def decorate(module_cls: type[L.LightningModule]) -> type[L.LightningModule]:
        register_recipe(name, module_cls, datamodule, model_config, data_config, **sections)
        return module_cls

    return decorate


def _import_recipe_module(module_name: str, recipe_name: str) -> None:
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only "that module does not exist" means an unknown recipe; a missing import *inside*
        # the recipe module is a real error and propagates.
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise
        known = ", ".join(list_recipes()) or "none"
        raise ConfigError(f"unknown recipe {recipe_name!r}: no module {module_name} (known recipes: {known})") from None


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``, importing its module first if needed.

    ``"videoclip.pretrain"`` imports ``videolang.recipes.videoclip``;
    ``"my.module:toy.regress"`` imports ``my.module`` and looks up ``"toy.regress"``.
    """
    module_name, sep, short = name.rpartition(":")
    key = short if sep else name
    if key not in _RECIPES:
        if sep:
            _import_recipe_module(module_name, name)
        else:
            _import_recipe_module(f"{RECIPE_PACKAGE}.{key.split('.', 1)[0]}", name)
    if key not in _RECIPES:
        close = ", ".join(sorted(_RECIPES)) or "none"
        raise ConfigError(f"unknown recipe {name!r} (known recipes: {close})")
    return _RECIPES[key]


def list_recipes() -> list[str]:
    """Names of every recipe: those of ``videolang.recipes.*`` and any registered already."""
    try:
        package = importlib.import_module(RECIPE_PACKAGE)
    except ModuleNotFoundError:
        package = None
    if package is not None:
        import pkgutil

        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{RECIPE_PACKAGE}.{info.name}")
    return sorted(_RECIPES)


def recipe_key(name: str) -> str:
    """The registry key of a recipe name (``"mod:toy.regress"`` -> ``"toy.regress"``)."""
    return name.rpartition(":")[2]


def create_recipe_model(model_cfg: Any, overrides: Mapping[str, Any]) -> nn.Module:
    """``create_model(model_cfg.name, **overrides)`` for a recipe whose ``model`` section has a free
    ``overrides`` dict (registry keys) that the recipe merged into ``overrides``. The registry sees
    only the merged flat dict, so when it rejects the build and the user set ``model.overrides``,
    the error is re-raised naming that key and the model."""
    from videolang.models import create_model

    try:
        return create_model(model_cfg.name, **overrides)
    except ConfigError as err:
        if not model_cfg.overrides:
            raise
        raise ConfigError(f"model.overrides={model_cfg.overrides} (model.name={model_cfg.name}): {err}") from err


class RecipeModule(L.LightningModule):
    """Base LightningModule of every recipe: keeps the config, builds optimizer + schedule.

    ``configure_optimizers`` returns AdamW over the decay / no-decay groups of the whole
    module (:func:`~videolang.engine.optim.build_param_groups`, so ``optim.lr_multipliers``
    prefixes are module attribute paths such as ``model.video_encoder``) and a ``LambdaLR``
    stepped every optimizer step over ``trainer.estimated_stepping_batches`` steps.
    """

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self, self.cfg.optim)
        scheduler = build_scheduler(optimizer, self.cfg.optim, self.trainer.estimated_stepping_batches)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"},
        }

    def on_train_epoch_start(self) -> None:
        """Hand the epoch to the training dataset and batch sampler (``set_epoch``): per-epoch
        draws are seeded by (seed, epoch, index), and Lightning sets only a sampler's epoch.
        Recipes that override this call ``super().on_train_epoch_start()``."""
        loader = self.trainer.train_dataloader
        if isinstance(loader, DataLoader):
            for part in (loader.dataset, loader.batch_sampler):
                if hasattr(part, "set_epoch"):
                    part.set_epoch(self.current_epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the resolved config in every checkpoint (``checkpoint["videolang_config"]``)."""
        checkpoint["videolang_config"] = config_to_dict(self.cfg)

    def export_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` (this module's state dict) and ``config.json``.

        ``config.json`` holds the recipe name and the ``model`` section. Recipes whose model
        comes from the model library override this to write that library's format.
        """
        from videolang.engine.run import write_pretrained

        config = {"recipe": self.cfg.recipe, "model": config_to_dict(self.cfg).get("model")}
        return write_pretrained(self.state_dict(), config, out_dir)


class StagedEvalModule(RecipeModule):
    """A recipe whose validation and test loops differ only by the stage name: subclasses
    implement ``_eval_step(stage, batch)`` (collect a batch) and ``_eval_end(stage)`` (reduce
    and log ``<stage>/...``); this class wires them to Lightning's hooks."""

    def _eval_step(self, stage: str, batch: Any) -> None:
        raise NotImplementedError

    def _eval_end(self, stage: str) -> None:
        raise NotImplementedError

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")


# --------------------------------------------------------------------------------------------
# loading a run configuration (here, not in config.py: it needs the recipe's schema)


def load_config(
    source: str | os.PathLike | Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    seed: int | None = None,
) -> RunConfig:
    """Load, merge and validate a run configuration.

    ``source`` is a YAML path, a packaged config's name (``videoclip/synthetic_pretrain``,
    see :func:`list_configs`) or a mapping; ``overrides`` are ``key.sub=value`` strings
    (values parsed as YAML); ``seed`` replaces the ``seed`` key. The recipe named by the
    ``recipe`` key supplies the ``model`` / ``data`` dataclasses (imported on demand).
    Raises :class:`~videolang.errors.ConfigError` naming the key and the file.
    """
    data, origins, where = load_config_dict(source, overrides)
    if seed is not None:
        data["seed"] = seed
        origins["seed"] = f"command line '--seed {seed}'"
    recipe_name = data.get("recipe")
    if not isinstance(recipe_name, str) or not recipe_name:
        raise ConfigError(f"{origins.get('recipe', where)}: key 'recipe' must name a recipe "
                          f"(e.g. recipe: videoclip.pretrain), got {recipe_name!r}")
    try:
        recipe = get_recipe(recipe_name)
    except ConfigError as exc:
        raise ConfigError(f"{origins.get('recipe', where)}: {exc}") from None
    cfg = validate_config(data, recipe.schema(), origins, where)
    if not cfg.name:
        cfg.name = recipe_name.rpartition(":")[2]
    return cfg
