"""Shared checks that a training dataset's items depend on (seed, epoch, index) alone.

:func:`assert_worker_independent` reads every item of a dataset for a few epochs three ways and
requires identical results: in the main process in index order, in the main process in reverse
order after reseeding the global RNGs (no hidden state, no global RNG), and through a
``DeferredDataLoader`` with worker processes seeded the way ``lightning.seed_everything(seed,
workers=True)`` seeds them (a draw from a worker's RNG state would differ). It also checks that
reading items leaves the global Python / NumPy / torch RNGs alone (the model's dropout and
masking draws must not depend on whether items were read in the main process).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function

from videolang.data.datasets import DeferredDataLoader


def _identity(item: Any) -> Any:
    return item


def same(a: Any, b: Any) -> bool:
    """Exact, recursive equality of items (tensors and arrays bit for bit, dtype and shape too)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and same(dataclasses.asdict(a), dataclasses.asdict(b))
    return type(a) is type(b) and a == b


def _global_rng_state() -> tuple:
    return random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state()


def _set_epoch(ds: Any, epoch: int) -> None:
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)


def read_in_main(ds: Any, epoch: int, order: Sequence[int] | None = None) -> list[Any]:
    """Items ``0..len-1`` read in this process (in ``order`` if given), listed by index."""
    _set_epoch(ds, epoch)
    order = list(range(len(ds))) if order is None else list(order)
    got = {i: ds[i] for i in order}
    return [got[i] for i in range(len(ds))]


def read_with_workers(ds: Any, epoch: int, num_workers: int = 2, seed: int = 0) -> list[Any]:
    """Items ``0..len-1`` read by ``num_workers`` worker processes (Lightning's worker seeding)."""
    _set_epoch(ds, epoch)
    torch.manual_seed(seed + 1000 + epoch)  # the loader's base seed, hence each worker's RNG state
    loader = DeferredDataLoader(ds, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                                worker_init_fn=pl_worker_init_function, multiprocessing_context="fork")
    return list(loader)


def assert_worker_independent(
    make_dataset: Callable[[], Any],
    *,
    epochs: Sequence[int] = (0, 1),
    num_workers: int = 2,
    varies_with_epoch: bool = True,
) -> list[list[Any]]:
    """Check that items depend on (seed, epoch, index) only; returns the items per epoch.

    ``make_dataset`` builds a fresh dataset (the comparison runs on separate instances);
    ``varies_with_epoch``: the dataset draws at random, so two epochs must differ somewhere.
    """
    per_epoch = []
    for epoch in epochs:
        ds = make_dataset()
        torch.manual_seed(1)
        np.random.seed(1)
        random.seed(1)
        before = _global_rng_state()
        main = read_in_main(ds, epoch)
        after = _global_rng_state()
        assert same(before, after), "reading items used the global Python / NumPy / torch RNG"

        torch.manual_seed(12345)
        np.random.seed(12345)
        random.seed(12345)
        backwards = read_in_main(make_dataset(), epoch, order=range(len(ds) - 1, -1, -1))
        bad = [i for i in range(len(ds)) if not same(main[i], backwards[i])]
        assert not bad, f"epoch {epoch}: items {bad[:5]} depend on the reading order or the global RNG"

        workers = read_with_workers(make_dataset(), epoch, num_workers=num_workers)
        assert len(workers) == len(main)
        bad = [i for i in range(len(ds)) if not same(main[i], workers[i])]
        assert not bad, f"epoch {epoch}: items {bad[:5]} differ when read by {num_workers} workers"
        per_epoch.append(main)
    if varies_with_epoch and len(per_epoch) > 1:
        assert not all(same(a, b) for a, b in zip(per_epoch[0], per_epoch[1], strict=True)), \
            "the items do not change with the epoch (set_epoch has no effect)"
    return per_epoch
