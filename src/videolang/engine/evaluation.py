"""One evaluation path for every recipe: collect per-sample outputs, gather them from every
process, drop the samples a ``DistributedSampler`` repeated, and reduce the full set once.

Lightning shards an evaluation set over the processes with a ``DistributedSampler``, which
repeats a few samples so that every shard has the same length. Metrics computed per shard, or
averaged over shards, then differ from a one-process run; metrics computed here do not, and
every process gets the same values (logging them needs no ``sync_dist``).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

__all__ = ["EvaluationBuffer", "batch_indices", "gather_stage", "log_metrics"]


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _as_cpu(value: Any, count: int, name: str) -> torch.Tensor | list:
    value = value.detach().cpu() if isinstance(value, torch.Tensor) else list(value)
    if len(value) != count:
        raise ValueError(f"EvaluationBuffer.add: {name!r} has {len(value)} rows, the index has {count}")
    return value


class EvaluationBuffer:
    """Per-sample outputs of one evaluation loop, keyed by their dataset index.

    ``add(index, video=..., caption=...)`` takes one row per index: tensors (kept on the CPU)
    or sequences of any picklable objects (strings, ...). ``gather()`` returns every process's
    rows as one set ordered by index, each index once.
    """

    def __init__(self) -> None:
        self._parts: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return sum(len(p["index"]) for p in self._parts)

    def add(self, index: torch.Tensor | Sequence[int], **values: Any) -> None:
        index = torch.as_tensor(index).detach().cpu().long().reshape(-1)
        if self._parts and set(self._parts[0]) != {"index", *values}:
            earlier = sorted(set(self._parts[0]) - {"index"})
            raise ValueError(f"EvaluationBuffer.add: fields {sorted(values)}, earlier batches had {earlier}")
        self._parts.append({"index": index, **{k: _as_cpu(v, len(index), k) for k, v in values.items()}})

    def reset(self) -> None:
        self._parts = []

    def local(self) -> dict[str, Any]:
        """This process's rows, concatenated in the order they were added."""
        return _concat(self._parts)

    def gather(self) -> dict[str, Any]:
        """Every process's rows ordered by index, repeats dropped (the first one kept), as
        ``{"index": (N,) tensor, field: (N, ...) tensor or N-long list}``; ``{}`` when no
        process added anything. Collective under DDP: every process must call it."""
        parts = [self.local()] if self._parts else []
        if _world_size() > 1:
            everyone: list[Any] = [None] * _world_size()
            dist.all_gather_object(everyone, parts)  # ragged shapes and objects alike
            parts = [p for rank_parts in everyone for p in rank_parts]
        if not parts:
            return {}
        return _unique_by_index(_concat(parts))


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if not parts:
        return {}
    out: dict[str, Any] = {}
    for name in parts[0]:
        rows = [p[name] for p in parts]
        out[name] = torch.cat(rows) if isinstance(rows[0], torch.Tensor) else [x for r in rows for x in r]
    return out


def _unique_by_index(rows: dict[str, Any]) -> dict[str, Any]:
    index = rows["index"]
    order = torch.argsort(index, stable=True)
    sorted_index = index[order]
    keep = torch.ones_like(sorted_index, dtype=torch.bool)
    keep[1:] = sorted_index[1:] != sorted_index[:-1]
    chosen = order[keep]
    positions = chosen.tolist()
    return {name: value[chosen] if isinstance(value, torch.Tensor) else [value[i] for i in positions]
            for name, value in rows.items()}


_BATCHES: weakref.WeakKeyDictionary[Any, list[list[int]]] = weakref.WeakKeyDictionary()


def batch_indices(trainer: Any, stage: str, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
    """The dataset indices of batch ``batch_idx`` of the running ``val`` / ``test`` loader, read
    from its batch sampler (under DDP the ``DistributedSampler`` Lightning injected), for
    datasets whose items carry no index of their own."""
    loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
    loader = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
    if not isinstance(loader, DataLoader) or loader.batch_sampler is None:
        raise TypeError(f"batch_indices: the {stage} loader has no batch sampler ({type(loader).__name__})")
    # Listed once per loader: evaluation loaders do not shuffle, so every epoch batches alike.
    batches = _BATCHES.get(loader.batch_sampler)
    if batches is None:
        batches = _BATCHES[loader.batch_sampler] = [list(b) for b in loader.batch_sampler]
    return torch.tensor(batches[batch_idx], dtype=torch.long)



def gather_stage(buffers: dict[Any, EvaluationBuffer], key: Any) -> dict[str, Any]:
    """Gather and forget ``buffers[key]`` (:meth:`EvaluationBuffer.gather`). Every process
    calls it, also one that collected nothing, so the collective never waits for a missing rank."""
    return buffers.pop(key, EvaluationBuffer()).gather()


def log_metrics(module: Any, metrics: Mapping[str, float]) -> None:
    """Log values computed from a gathered set. They are the same on every process, so nothing
    is reduced: ``rank_zero_only`` makes Lightning's sync a no-op, and ``sync_dist`` tells it
    the values are already global (which keeps its advice to sync epoch values quiet)."""
    for name, value in metrics.items():
        module.log(name, float(value), sync_dist=True, rank_zero_only=True)
