"""Bad data never kills a run, and never passes unnoticed: :class:`DataGuard` counts the samples
the datasets skipped (``batch["skipped"]``, see :func:`videolang.data.datasets.collate_skipping`),
logs each file once, writes ``skipped.json`` in the run folder, and stops the run with a
:class:`~videolang.errors.DataError` once a split's skipped share passes
``data.max_skipped_fraction`` or a training batch gives a non-finite loss (naming its samples).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from videolang.errors import DataError
from videolang.utils.io import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["DataGuard", "batch_size_of", "sample_names"]

SKIPPED_FILE = "skipped.json"
_NAME_KEYS = ("video", "video_id", "key", "source", "path", "uid", "id", "index")


def batch_size_of(batch: Any) -> int:
    """The number of samples in a collated batch (the first dimension of its first tensor)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        values = [v for k, v in batch.items() if k != "skipped"]
    elif isinstance(batch, (list, tuple)):
        values = list(batch)
    else:
        return 0
    for value in values:
        n = batch_size_of(value)
        if n:
            return n
    return 0


def sample_names(batch: Any, limit: int = 8) -> str:
    """What identifies a batch's samples (ids, files or indices), for an error message."""
    if isinstance(batch, Mapping):
        for key in _NAME_KEYS:
            if key in batch:
                value = batch[key]
                names = value.tolist() if isinstance(value, torch.Tensor) else list(value)
                shown = ", ".join(str(n) for n in names[:limit])
                more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
                return f"{key} {shown}{more}"
    return f"{batch_size_of(batch)} samples (their ids are not in the batch)"


class DataGuard(Callback):
    """Counts skipped samples per stage, enforces ``data.max_skipped_fraction``, refuses
    non-finite training losses. Counts restart with every pass over a split."""

    def __init__(self, run_dir: str | Path | None, max_skipped_fraction: float):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.limit = max_skipped_fraction
        self.seen: dict[str, int] = {}
        self.skipped: dict[str, list[dict[str, Any]]] = {}
        self.totals: dict[str, int] = {}

    # -- counting ----------------------------------------------------------------------------

    def _start(self, stage: str) -> None:
        self.seen[stage] = 0
        self.skipped[stage] = []

    def _count(self, stage: str, batch: Any, split_size: int | None) -> None:
        skipped = batch.get("skipped", []) if isinstance(batch, Mapping) else []
        self.seen[stage] = self.seen.get(stage, 0) + batch_size_of(batch) + len(skipped)
        for sample in skipped:
            record = {"source": str(getattr(sample, "source", sample)), "reason": str(getattr(sample, "reason", ""))}
            self.skipped.setdefault(stage, []).append(record)
            log.warning("skipped a %s sample: %s (%s)", stage, record["source"], record["reason"])
        n = len(self.skipped.get(stage, []))
        if n and split_size and n > self.limit * split_size:
            self._stop(stage, n, split_size)

    def _stop(self, stage: str, n: int, total: int) -> None:
        self._write()
        first = self.skipped[stage][0]
        raise DataError(f"{n} of {total} {stage} samples could not be read, more than data.max_skipped_fraction="
                        f"{self.limit} allows; first: {first['source']} ({first['reason']}); all in "
                        f"{self.run_dir / SKIPPED_FILE if self.run_dir else 'the log'}")

    def _end(self, stage: str) -> None:
        n, seen = len(self.skipped.get(stage, [])), self.seen.get(stage, 0)
        self.totals[stage] = self.totals.get(stage, 0) + n
        if n:
            log.warning("%d of %d %s samples were skipped (unreadable); listed in %s", n, seen, stage,
                        self.run_dir / SKIPPED_FILE if self.run_dir else "the log")
        self._write()
        if n and seen and n > self.limit * seen:
            self._stop(stage, n, seen)

    def _write(self) -> None:
        if self.run_dir is None or not self.run_dir.is_dir() or not any(self.skipped.values()):
            return
        report = {"max_skipped_fraction": self.limit, "seen": self.seen, "skipped": self.skipped}
        atomic_write_text(self.run_dir / SKIPPED_FILE, json.dumps(report, indent=2) + "\n", overwrite=True)

    # -- checkpointed: a run resumed mid-epoch keeps counting where it stopped ------------------

    def state_dict(self) -> dict[str, Any]:
        return {"seen": dict(self.seen), "skipped": {k: list(v) for k, v in self.skipped.items()},
                "totals": dict(self.totals)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seen = dict(state_dict.get("seen", {}))
        self.skipped = {k: list(v) for k, v in state_dict.get("skipped", {}).items()}
        self.totals = dict(state_dict.get("totals", {}))

    # -- Lightning hooks -----------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # (Lightning calls no epoch-start hook when it resumes mid-epoch: the restored counts stay)
        self._start("train")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._count("train", batch, _split_size(trainer.train_dataloader))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss.detach()).all():
            raise DataError(f"training batch {batch_idx} of epoch {trainer.current_epoch} gave a non-finite loss "
                            f"({float(loss.detach().float().mean())}); its samples: {sample_names(batch)}; "
                            "check their annotations and the learning rate")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("train")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("val")

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._count("val", batch, None)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._end("val")

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("test")

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                            batch_idx: int, dataloader_idx: int = 0) -> None:
        self._count("test", batch, None)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("test")


def _split_size(loader: Any) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None
