"""The training engine: configs, recipes, run folders and the Lightning Trainer.

The only part of videolang that imports Lightning. Entry points: :func:`fit`, :func:`validate`,
:func:`test`, :func:`predict` (``fit("videoclip/synthetic_pretrain", ["optim.lr=1e-4"], seed=0)``)
and :func:`load_config`; docs/engine.md is the reference.
"""

from videolang.engine.config import (
    OptimConfig,
    RunConfig,
    RunFolderConfig,
    TrainerConfig,
    config_to_dict,
    dump_config,
)
from videolang.engine.optim import build_optimizer, build_param_groups, build_scheduler, lr_schedule
from videolang.engine.registry import (
    Recipe,
    RecipeModule,
    StagedEvalModule,
    create_recipe_model,
    get_recipe,
    list_recipes,
    load_config,
    recipe,
    register_recipe,
)
from videolang.engine.trainer import (
    RunResult,
    build_trainer,
    fit,
    load_run_config,
    predict,
    test,
    validate,
)

__all__ = [
    "OptimConfig",
    "Recipe",
    "RecipeModule",
    "RunConfig",
    "RunFolderConfig",
    "RunResult",
    "StagedEvalModule",
    "TrainerConfig",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "build_trainer",
    "config_to_dict",
    "create_recipe_model",
    "dump_config",
    "fit",
    "get_recipe",
    "list_recipes",
    "load_config",
    "load_run_config",
    "lr_schedule",
    "predict",
    "recipe",
    "register_recipe",
    "test",
    "validate",
]
