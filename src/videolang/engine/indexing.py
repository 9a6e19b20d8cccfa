"""``videolang index --devices N --num-nodes M``: index building as a Lightning ``predict`` job over DDP.

:func:`index_distributed` does the work of :func:`videolang.search.builder.build_index` with one
process per device: rank 0 plans, every rank embeds its share into ``parts/rank{R}.sqlite`` (one
transaction per video) and rank 0 merges the parts into ``index.sqlite``. A killed run keeps its
parts; the next run merges them first. The index folder must be on a file system every node sees.
Steps and launchers: docs/search.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from torch.utils.data import DataLoader, Dataset

from videolang.engine.run import is_rank_zero_process
from videolang.search.builder import (
    FileInfo,
    IndexReport,
    VideoJobs,
    finish_run,
    index_lock,
    prepare_run,
    run_settings,
    write_video,
)
from videolang.search.catalog import CATALOG_FILE, Catalog, part_path
from videolang.utils.io import sha256_file

__all__ = ["IndexJob", "PartWriter", "index_distributed"]

log = logging.getLogger(__name__)

Todo = list[tuple[FileInfo, "str | None"]]  # files to embed, with their SHA-256 when already known

# A rerun with nothing to do still starts every process: an empty predict loop is intended.
warnings.filterwarnings("ignore", message=r"Total length of `DataLoader` across ranks is zero")


# --------------------------------------------------------------------------------------------
# parts


class PartWriter(BasePredictionWriter):
    """Writes each embedded video (or failure) of this rank to its part, one transaction each."""

    def __init__(self, index_dir: str | os.PathLike):
        super().__init__(write_interval="batch")
        self.index_dir = Path(index_dir)
        self._part: Catalog | None = None

    def _open(self, rank: int, model: dict[str, Any]) -> Catalog:
        if self._part is None:
            path = part_path(self.index_dir, rank)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._part = Catalog(path)
            self._part.set_meta("model", model)
        return self._part

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        if prediction is None:  # padding: fewer videos than ranks
            return
        part = self._open(trainer.global_rank, pl_module.settings["model"])
        write_video(part, prediction["file"], prediction)

    def close(self) -> None:
        if self._part is not None:
            self._part.close()
            self._part = None

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.close()
        trainer.strategy.barrier("videolang-index-parts")  # every part complete before rank 0 merges

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# the job


class _Hashed(Dataset):
    """Item ``i``: the to-do entry's index with the file's SHA-256 (read in a DataLoader worker
    while the rank embeds another video). Indices past the list pad it to one item per rank."""

    def __init__(self, todo: Todo, size: int):
        self.todo, self.size = todo, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i >= len(self.todo):
            return {"index": i}
        info, sha = self.todo[i]
        try:
            return {"index": i, "sha256": sha or sha256_file(info.abs_path)}
        except OSError as exc:
            return {"index": i, "error": str(exc)}


def _only(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batches of one video, as they are (batch size 1 lets Lightning track the indices)."""
    return batch[0]


class IndexJob(L.LightningModule):
    """Embeds the videos of rank 0's to-do list, each on one rank (see the module docstring).

    ``settings`` (model meta, windows, root) and ``todo`` are known to rank 0's process; the
    other ranks receive them in :meth:`setup`.
    """

    def __init__(self, model_dir: str, settings: dict[str, Any] | None, todo: Todo | None, *, workers: int = 2,
                 thumbnails: bool = True):
        super().__init__()
        self.model_dir, self.settings, self.todo = model_dir, settings, todo
        self.workers, self.thumbnails = workers, thumbnails
        self._jobs: VideoJobs | None = None

    def setup(self, stage: str) -> None:
        self.settings, self.todo = self.trainer.strategy.broadcast((self.settings, self.todo), src=0)
        device = self.trainer.strategy.root_device
        windows = self.settings["windows"]
        self._jobs = VideoJobs(self.todo, self.model_dir, windows["window"], windows["stride"], str(device),
                               self.thumbnails)

    def predict_dataloader(self) -> DataLoader:
        n = len(self.todo)
        # Lightning's unrepeated sampler needs an item per rank: pad with no-ops, never repeats.
        size = max(n, self.trainer.world_size) if n else 0
        workers = self.workers if n > 1 else 0
        return DataLoader(_Hashed(self.todo, size), batch_size=1, collate_fn=_only, num_workers=workers,
                          prefetch_factor=2 if workers else None)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        i = int(batch["index"])
        if i >= len(self.todo):
            return None
        info = self.todo[i][0]
        if "error" in batch:
            return {**batch, "file": info}
        assert self._jobs is not None
        return {**self._jobs.item(i, batch["sha256"]), "file": info}


# --------------------------------------------------------------------------------------------
# the run


def index_distributed(model_dir: str | os.PathLike, video_dir: str | os.PathLike, index_dir: str | os.PathLike,
                      *, window: float | None = None, stride: float | None = None, workers: int = 2,
                      accelerator: str = "auto", devices: int = 1, num_nodes: int = 1, strategy: str | None = None,
                      vector_kind: str = "auto", thumbnails: bool = True, progress: bool = True,
                      callbacks: Sequence[Callback] = ()) -> IndexReport | None:
    """``build_index`` as a Lightning predict job over ``devices`` x ``num_nodes`` processes.

    Call it in every process a launcher starts (torchrun, SLURM's srun, or once: Lightning's
    ``ddp`` / ``ddp_spawn`` launch the other processes themselves). Returns the report in the
    process of global rank 0 (the launching process for ``ddp_spawn``), None in the others.
    ``strategy``: ``"ddp"`` (the default beyond one process), ``"ddp_spawn"``, or any Lightning
    strategy name; ``workers``: DataLoader workers per rank, hashing files ahead of the model.
    """
    start = time.perf_counter()
    index_dir = Path(index_dir)
    model_dir = str(Path(model_dir).resolve())
    root = Path(video_dir).resolve()
    if strategy is None:
        strategy = "ddp" if devices * num_nodes > 1 else "auto"
    leader = is_rank_zero_process()  # rank 0, or the launcher of ddp_spawn's processes
    with index_lock(index_dir) if leader else contextlib.nullcontext():
        settings = todo = report = known = None
        if leader:
            settings = run_settings(model_dir, root, window, stride)
            with Catalog(index_dir / CATALOG_FILE) as catalog:
                todo, report, known = prepare_run(catalog, index_dir, settings)
        trainer = L.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                            callbacks=[PartWriter(index_dir), *callbacks], logger=False,
                            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
                            default_root_dir=index_dir)
        job = IndexJob(model_dir, settings, todo, workers=workers, thumbnails=thumbnails)
        trainer.predict(job, return_predictions=False)
        if report is None:
            return None
        with Catalog(index_dir / CATALOG_FILE) as catalog:  # every rank closed its part: merge them
            return finish_run(catalog, index_dir, report, todo, known, vector_kind, start)
