"""The training engine: configs, recipes, run folders and the Lightning Trainer.

This is the only part of videolang that imports Lightning. Entry points::

    from videolang.engine import fit, test
    result = fit("configs/videoclip/pretrain.yaml", ["optim.lr=1e-4", "trainer.max_epochs=3"], seed=0)
    result.run_dir          # runs/videoclip.pretrain/version_0
    result.metrics["best"]  # best validation metrics (by trainer.monitor)
    test("configs/videoclip/pretrain.yaml", resume=result.run_dir / "checkpoints" / "last.ckpt")

See docs/engine.md for the config reference and multi-GPU / multi-node commands.
"""

from videolang.engine.config import (
    OptimConfig,
    RunConfig,
    RunFolderConfig,
    TrainerConfig,
    config_to_dict,
    dump_config,
    load_config,
)
from videolang.engine.optim import build_optimizer, build_param_groups, build_scheduler, lr_schedule
from videolang.engine.registry import (
    Recipe,
    RecipeModule,
    StagedEvalModule,
    create_recipe_model,
    get_recipe,
    list_recipes,
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
