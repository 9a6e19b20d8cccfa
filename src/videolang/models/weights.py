"""The one way weights enter a model: :func:`read_checkpoint` (no code from the file runs) and
:func:`load_strict` (every key accounted for, a :class:`LoadReport` of what was deliberately
kept or dropped). The originals loaded with ``strict=False`` (MMPT, VIMPAC), so a renamed or
missing key went unnoticed; here it is one :class:`~videolang.errors.ConfigError` listing them all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videolang.errors import ConfigError

__all__ = ["LoadReport", "format_keys", "load_strict", "read_checkpoint"]

log = logging.getLogger(__name__)


def format_keys(keys: Iterable[str], limit: int = 20) -> str:
    """``a, b, c`` with at most ``limit`` names, then ``(+N more)``."""
    keys = list(keys)
    head = ", ".join(keys[:limit])
    return head + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


@dataclass(frozen=True)
class LoadReport:
    """What a strict load did beyond a one-to-one copy: ``missing`` model keys kept their
    current value (``fresh`` heads, optional buffers), ``unexpected`` file keys were dropped on
    purpose (``ignore`` / ``fresh``). Anything else would have been an error."""

    source: str
    loaded: int
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = [f"{self.source}: {self.loaded} tensors loaded"]
        if self.missing:
            parts.append(f"kept as initialised: {format_keys(self.missing)}")
        if self.unexpected:
            parts.append(f"dropped from the file: {format_keys(self.unexpected)}")
        return "; ".join(parts)


def load_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    ignore: tuple[str, ...] = (),
    optional_suffixes: tuple[str, ...] = (),
    fresh: tuple[str, ...] = (),
) -> LoadReport:
    """Load ``state`` into ``module`` strictly and return (and log) a :class:`LoadReport`.

    ``ignore``: file keys dropped when they equal an entry or end with ``.entry`` (checkpoint
    extras we deliberately do not load, e.g. unused poolers). ``optional_suffixes``: module keys
    that may be absent from ``state`` (e.g. BatchNorm's ``num_batches_tracked``). ``fresh``:
    key prefixes of parts that start anew (a new task head): the file's keys under them are
    dropped, the module's keep their current value. Floating tensors are cast to the module's dtype.
    """
    def dropped(key: str) -> bool:
        return key.startswith(fresh) or any(key == i or key.endswith("." + i) for i in ignore)

    own = module.state_dict()
    skipped = tuple(k for k in state if dropped(k))
    state = {k: v for k, v in state.items() if not dropped(k)}
    kept = tuple(k for k in own if k not in state and (k.endswith(optional_suffixes) or k.startswith(fresh)))
    missing = [k for k in own if k not in state and k not in kept]
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
    report = LoadReport(source, len(state), kept, skipped)
    log.log(logging.INFO if kept or skipped else logging.DEBUG, "%s", report)
    return report


def _refusal(exc: BaseException) -> str:
    """The one line of torch's weights-only refusal that says what the file wanted."""
    text = str(exc)
    for line in text.splitlines():
        if "Unsupported" in line or "not an allowed global" in line:
            return line.strip().removeprefix("WeightsUnpickler error: ")
    return text.splitlines()[0] if text else type(exc).__name__


def load_tensors_file(source: Any, what: str) -> Any:
    """``torch.load(source, weights_only=True)`` (a path or an open file): tensors, containers and
    plain values only; anything else (code to run) is a :class:`ConfigError` naming ``what``."""
    import pickle

    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as exc:
        raise ConfigError(f"{what}: refused to load it: it needs more than tensors and plain values "
                          f"({_refusal(exc)})") from None


def _inert_class(qualified_name: str) -> type:
    """A stand-in for a class named in a checkpoint: it keeps the pickled state, runs nothing."""

    def __setstate__(self, state):
        self.state = state

    module, _, name = qualified_name.rpartition(".")
    return type(name, (), {"__module__": module, "__setstate__": __setstate__,
                           "__repr__": lambda self: f"<inert {qualified_name}>"})


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Read an original checkpoint (``torch.save`` file) without running any code from it.

    Tensors, containers and plain values load as usual; other objects the originals pickled
    beside their weights (fairseq's ``argparse.Namespace`` or omegaconf args) become inert
    stand-ins that keep their state. A file that needs more (code to run) is refused.
    """
    import pickle

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"checkpoint not found: {p}")
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(p))
    except Exception as exc:
        raise ConfigError(f"{p}: not a readable torch checkpoint ({exc})") from None
    try:
        with torch.serialization.safe_globals([(_inert_class(name), name) for name in unsafe]):
            return torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{p}: refused to load it: it needs more than tensors and plain objects "
                          f"({_refusal(exc)})") from None
