"""Strict state-dict loading shared by every model: never a silent partial load.

The originals loaded with ``strict=False`` (MMPT, VIMPAC), so a renamed or missing key went
unnoticed; here any missing key, unexpected key or shape mismatch is one
:class:`~videolang.errors.ConfigError` that lists them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from videolang.errors import ConfigError

__all__ = ["format_keys", "load_strict"]


def format_keys(keys: Iterable[str], limit: int = 20) -> str:
    """``a, b, c`` with at most ``limit`` names, then ``(+N more)``."""
    keys = list(keys)
    head = ", ".join(keys[:limit])
    return head + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    ignore: tuple[str, ...] = (),
    optional_suffixes: tuple[str, ...] = (),
) -> None:
    """Load ``state`` into ``module`` strictly.

    ``ignore``: keys dropped from ``state`` when they equal an entry or end with ``.entry``
    (checkpoint extras we deliberately do not load, e.g. unused poolers). ``optional_suffixes``:
    module keys that may be absent from ``state`` (e.g. BatchNorm's ``num_batches_tracked``);
    they keep their current value. Floating tensors are cast to the module's dtype.
    """
    state = {k: v for k, v in state.items() if not any(k == i or k.endswith("." + i) for i in ignore)}
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(optional_suffixes)]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
                  for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {format_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {format_keys(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {format_keys(mismatched)}")
    if problems:
        raise ConfigError(f"cannot load {source}: " + "; ".join(problems))
    full = {k: state.get(k, own[k]) for k in own}
    module.load_state_dict({k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in full.items()})
