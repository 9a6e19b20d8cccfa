"""AdamW with weight-decay groups by module type, and per-step learning-rate schedules.

:func:`build_optimizer` / :func:`build_scheduler` are what ``RecipeModule.configure_optimizers``
calls; the decay rule is on :func:`build_param_groups`, the schedule shapes on :class:`LrSchedule`
(both also in docs/engine.md, ``optim``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from videolang.engine.config import OptimConfig
from videolang.errors import ConfigError

__all__ = [
    "DEFAULT_NO_DECAY_NAMES",
    "DEFAULT_NO_DECAY_TYPES",
    "LrSchedule",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "lr_schedule",
    "warmup_steps_for",
]

DEFAULT_NO_DECAY_TYPES: tuple[type[nn.Module], ...] = tuple(
    t
    for t in (
        nn.LayerNorm,
        nn.GroupNorm,
        nn.modules.batchnorm._BatchNorm,
        nn.modules.instancenorm._InstanceNorm,
        nn.LocalResponseNorm,
        getattr(nn, "RMSNorm", None),
    )
    if t is not None
)

DEFAULT_NO_DECAY_NAMES: tuple[str, ...] = (
    "bias",
    "position_embeddings",
    "position_embedding",
    "positional_embedding",
    "pos_embed",
    "pos_embedding",
    "cls_token",
    "logit_scale",
    "temperature",
)


def _is_no_decay(
    module: nn.Module, module_name: str, param_name: str,
    no_decay_types: tuple[type[nn.Module], ...], no_decay_names: Iterable[str],
) -> bool:
    names = set(no_decay_names)
    owner = module_name.rsplit(".", 1)[-1]
    return isinstance(module, no_decay_types) or param_name in names or owner in names


def _lr_multiplier(name: str, multipliers: Mapping[str, float]) -> tuple[str, float]:
    """The longest prefix of ``multipliers`` that ``name`` starts with (whole name parts)."""
    best = ""
    for prefix in multipliers:
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return best, (multipliers[best] if best else 1.0)


def build_param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    lr: float | None = None,
    no_decay_types: tuple[type[nn.Module], ...] = DEFAULT_NO_DECAY_TYPES,
    no_decay_names: Iterable[str] = DEFAULT_NO_DECAY_NAMES,
    lr_multipliers: Mapping[str, float] | None = None,
) -> list[dict]:
    """Split the trainable parameters of ``model`` into decay / no-decay optimizer groups.

    A parameter gets no weight decay when its module is a normalization layer
    (``no_decay_types``), its own name is in ``no_decay_names`` (``bias``, a raw ``pos_embed`` /
    ``cls_token`` / ``logit_scale`` / ``temperature``, ...) or the module that owns it has such a
    name (an ``nn.Embedding`` called ``position_embeddings``, as in BERT); every other trainable
    parameter is decayed. Frozen parameters are left out; shared ones appear once.

    Returns one group per (lr multiplier, decay) pair that has parameters. Each group holds
    ``params``, ``param_names``, ``weight_decay``, ``name`` (``"decay"``, ``"no_decay"``,
    ``"<prefix>/decay"``, ...) and, when ``lr`` is given, ``lr`` (times its multiplier).
    ``lr_multipliers`` maps parameter-name prefixes to factors; a prefix that matches no
    parameter is a :class:`ConfigError`.
    """
    multipliers = dict(lr_multipliers or {})
    groups: dict[tuple[str, bool], dict] = {}
    used_prefixes: set[str] = set()
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            no_decay = _is_no_decay(module, module_name, param_name, no_decay_types, no_decay_names)
            prefix, factor = _lr_multiplier(full_name, multipliers)
            used_prefixes.add(prefix)
            group = groups.get((prefix, no_decay))
            if group is None:
                kind = "no_decay" if no_decay else "decay"
                group = groups[(prefix, no_decay)] = {
                    "name": f"{prefix}/{kind}" if prefix else kind,
                    "params": [], "param_names": [],
                    "weight_decay": 0.0 if no_decay else weight_decay,
                }
                if lr is not None:
                    group["lr"] = lr * factor
            group["params"].append(param)
            group["param_names"].append(full_name)
    unused = sorted(set(multipliers) - used_prefixes)
    if unused:
        raise ConfigError(f"optim.lr_multipliers: prefix '{unused[0]}' matches no trainable parameter")
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over :func:`build_param_groups` of ``model`` with the settings of ``cfg``."""
    groups = build_param_groups(model, cfg.weight_decay, lr=cfg.lr, lr_multipliers=cfg.lr_multipliers)
    if not groups:
        raise ConfigError("the model has no trainable parameter: nothing to optimize")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             weight_decay=cfg.weight_decay)


def warmup_steps_for(cfg: OptimConfig, total_steps: int) -> int:
    """Warm-up length in optimizer steps: ``warmup_steps``, or ``warmup_ratio * total``."""
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    if cfg.warmup_ratio is not None:
        return round(cfg.warmup_ratio * total_steps)
    return 0


@dataclass
class LrSchedule:
    """The learning-rate factor (of the peak lr) after ``step`` optimizer steps.

    Linear warm-up ``s / W`` reaching 1 exactly at ``s = W``, then with ``p = (s - W) / (T - W)``:
    ``linear`` ``1 - p``, ``cosine`` ``(1 + cos(pi p)) / 2``, ``polynomial`` ``(1 - p) ** power``,
    ``constant`` 1; the decaying ones end at ``end_lr_ratio`` (``r + (1 - r) * shape``).

    A plain dataclass (not a closure) so that ``LambdaLR`` can save it in checkpoints and
    ``ddp_spawn`` can pickle it.
    """

    schedule: str
    total_steps: int
    warmup_steps: int = 0
    power: float = 1.0
    end_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
        if self.schedule == "linear":
            shape = 1.0 - progress
        elif self.schedule == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.schedule == "polynomial":
            shape = (1.0 - progress) ** self.power
        else:
            raise ConfigError(f"optim.schedule: unknown schedule {self.schedule!r}")
        return self.end_lr_ratio + (1.0 - self.end_lr_ratio) * shape


def lr_schedule(cfg: OptimConfig, total_steps: int | float) -> LrSchedule:
    """The :class:`LrSchedule` of ``cfg`` over ``total_steps`` optimizer steps.

    ``total_steps`` is infinite for an iterable dataset without length and no
    ``trainer.max_steps``: only the constant schedule without ``warmup_ratio`` works then.
    """
    if math.isinf(total_steps):
        if cfg.schedule != "constant" or cfg.warmup_ratio is not None:
            raise ConfigError(
                f"optim.schedule={cfg.schedule!r} needs the total number of steps, which is unknown "
                "(the training data has no length): set trainer.max_steps"
            )
        total_steps = 0
    total = int(total_steps)
    return LrSchedule(cfg.schedule, total, warmup_steps_for(cfg, total), cfg.power, cfg.end_lr_ratio)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int | float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping :func:`lr_schedule` once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg, total_steps))
