"""The run folder ``<run.root>/<name>/<version>/`` and the callbacks that fill it.

It holds the resolved ``config.yaml``, ``metrics.json``, CSV (and TensorBoard) logs, plots,
checkpoints and ``export/``; layout in docs/engine.md, "The run folder". Only global rank 0
writes, and every file (checkpoints included, :class:`AtomicCheckpointIO`) goes to a temporary
sibling first and is renamed into place.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import random
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from videolang.engine.config import RunConfig, dump_config
from videolang.errors import ConfigError, VideolangError
from videolang.utils.io import atomic_output, atomic_write_bytes, atomic_write_text

__all__ = [
    "AtomicCheckpointIO",
    "RngStateCallback",
    "RunCheckpoint",
    "RunHistory",
    "build_loggers",
    "find_last_checkpoint",
    "is_rank_zero_process",
    "plot_history",
    "prepare_run_dir",
    "read_metrics",
    "resolve_checkpoint",
    "update_metrics",
    "write_pretrained",
]

log = logging.getLogger(__name__)

RUN_DIR_ENV = "VIDEOLANG_RUN_DIR"  # rank 0's run folder, for ranks launched as subprocesses

# The loggers write into the run folder, which already holds config.yaml: Lightning's CSV logger
# would warn that it is "not empty" (set at import so that spawned processes have it too).
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")


# --------------------------------------------------------------------------------------------
# run folder


def is_rank_zero_process() -> bool:
    """Whether this process is global rank 0 according to the launcher's environment.

    torchrun, SLURM and Lightning's own subprocess launcher set these before the Trainer
    exists; a process without any of them is a plain single-process (or ddp_spawn) run.
    """
    keys = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
    return all(os.environ.get(key, "0") == "0" for key in keys)


def _version_name(version: int | str) -> str:
    return f"version_{version}" if isinstance(version, int) else version


def _next_version(parent: Path) -> int:
    numbers = [int(m.group(1)) for p in parent.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(numbers, default=-1) + 1


def _make_run_dir(parent: Path, version: int | str | None) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    if version is not None:
        path = parent / _version_name(version)
        try:
            path.mkdir()
        except FileExistsError:
            raise ConfigError(f"run.version: run folder {path} already exists; pick another version "
                              "or leave run.version empty for the next free one") from None
        return path
    while True:  # another process may take the same number: try the next one
        path = parent / _version_name(_next_version(parent))
        with contextlib.suppress(FileExistsError):
            path.mkdir()
            return path


def prepare_run_dir(cfg: RunConfig) -> Path:
    """Create ``<root>/<name>/<version>/`` and write ``config.yaml`` (rank 0 only).

    Other ranks return rank 0's folder when the launcher passed it down, else the folder they
    would pick; they never write into it (Lightning broadcasts rank 0's checkpoint folder).
    """
    parent = Path(cfg.run.root) / cfg.name
    if not is_rank_zero_process():
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited:
            return Path(inherited)
        version = cfg.run.version if cfg.run.version is not None else _next_version(parent)
        return parent / _version_name(version)
    run_dir = _make_run_dir(parent, cfg.run.version)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    return run_dir


@contextlib.contextmanager
def shared_run_dir(run_dir: Path) -> Iterator[None]:
    """Expose the run folder to processes that Lightning launches while inside the block."""
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = os.fspath(run_dir.absolute())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous


def _newest_first(parent: Path, relative: str) -> list[Path]:
    candidates = [p for p in parent.glob(f"*/{relative}") if p.is_file()]
    return sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True)


def find_last_checkpoint(cfg: RunConfig) -> Path | None:
    """The newest resumable checkpoint of runs named ``cfg.name``: a ``checkpoints/last.ckpt``
    or an ``hpc_ckpt_*.ckpt`` that Lightning saved when SLURM pre-empted the job."""
    parent = Path(cfg.run.root) / cfg.name
    candidates = _newest_first(parent, "checkpoints/last.ckpt") + _newest_first(parent, "hpc_ckpt_*.ckpt")
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def _newest_best_checkpoint(parent: Path) -> Path | None:
    for metrics_file in _newest_first(parent, "metrics.json"):
        best = (read_metrics(metrics_file.parent).get("checkpoints") or {}).get("best")
        if best and Path(best).is_file():
            return Path(best)
    return None


def resolve_checkpoint(spec: str | os.PathLike, cfg: RunConfig | None = None) -> Path:
    """Turn ``--resume`` / ``--ckpt`` into a checkpoint file.

    ``last``: the newest ``checkpoints/last.ckpt`` (or SLURM ``hpc_ckpt_*.ckpt``) under
    ``<run.root>/<name>/`` (:func:`find_last_checkpoint`); ``best``: the
    best checkpoint recorded by the newest run there that has one; a run folder: its
    ``checkpoints/last.ckpt``; otherwise a ``.ckpt`` path.
    """
    text = os.fspath(spec)
    if text in ("last", "best"):
        if cfg is None:
            raise ConfigError(f"--resume {text}: needs --config (to know the run name and folder)")
        parent = Path(cfg.run.root) / cfg.name
        found = find_last_checkpoint(cfg) if text == "last" else _newest_best_checkpoint(parent)
        if found is None:
            raise ConfigError(f"--resume {text}: no {text} checkpoint under {parent}")
        return found
    path = Path(text)
    for candidate in (path, path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"--resume {text}: no such checkpoint file or run folder")


def config_path_for_checkpoint(ckpt: Path) -> Path:
    """The ``config.yaml`` of the run folder that holds ``checkpoints/<ckpt>``."""
    path = ckpt.parent.parent / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{ckpt}: no config.yaml in its run folder ({path.parent}); pass --config")
    return path


# --------------------------------------------------------------------------------------------
# atomic checkpoints and exports


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file in the target folder, fsync, then rename.

    Lightning 2.6 (``_atomic_save``) writes through an fsspec transaction whose temporary
    file lies in the *system* temp folder and is moved into place with ``shutil.move``: when
    the run folder is on another filesystem (a cluster's shared disk) that move is a plain
    copy, and a crash during it leaves a truncated checkpoint. Remote URLs keep Lightning's
    path.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        target = Path(str(path).removeprefix("file://"))
        with atomic_output(target, overwrite=True) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())


def write_pretrained(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                     out_dir: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir`` (replaced as a whole)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()
               if isinstance(v, torch.Tensor)}
    with atomic_output(out_dir, overwrite=True, is_dir=True) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(out_dir)


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that keeps the best-so-far score across a resume into a new folder.

    Lightning forgets ``best_model_score`` when the checkpoint folder changed, so the first
    validation after a resume would become "best" even when it is worse. Here the old best
    (its file stays in the old run folder, which ModelCheckpoint never deletes from) stays
    the one to beat.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if self._last_global_step_saved == trainer.global_step:
            self._saved_in_batch = trainer.global_step  # a step checkpoint: the epoch's end is not in it

    def _refresh_last(self, trainer: L.Trainer) -> None:
        """Lightning 2.6 rewrites ``last.ckpt`` only when a top-k checkpoint was written at the
        same step, so an epoch whose monitored metric did not improve left a stale ``last.ckpt``
        and resuming from it silently repeated that epoch. Write it whenever it is behind, and
        at an epoch's end also over a step checkpoint of the same step (``checkpoint_every_n_steps``):
        that one was written before the epoch's validation and end, which a resume from it would
        skip (no validation of that epoch in the history, no best checkpoint from it)."""
        behind = self._last_global_step_saved != trainer.global_step
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run
        if self.save_last and fitting and (behind or getattr(self, "_saved_in_batch", None) == trainer.global_step):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._saved_in_batch = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        self.best_model_score = state_dict["best_model_score"]
        self.best_model_path = state_dict["best_model_path"]
        self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        self.best_k_models = dict(state_dict.get("best_k_models", self.best_k_models))


# --------------------------------------------------------------------------------------------
# RNG state in checkpoints


def _collect_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as checkpoint-safe plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _restore_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _distributed_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class RngStateCallback(Callback):
    """Save every rank's Python / NumPy / torch RNG state in checkpoints; restore on resume.

    Lightning 2.6 restores model, optimizer, scheduler and loop progress but no RNG state,
    so after a resume dropout masks and the shuffle order of a ``RandomSampler`` (seeded from
    the global torch RNG when its iterator is created) would differ from an uninterrupted
    run. The states are captured when the checkpoint is written and set back while the
    checkpoint is restored, before the training dataloader's iterator is created.
    """

    def __init__(self) -> None:
        self._stage: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stage = stage

    def state_dict(self) -> dict[str, Any]:
        state = _collect_rng_state()
        _, world = _distributed_world()
        if world == 1:
            return {"per_rank": [state]}
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, state)  # every rank dumps checkpoints
        return {"per_rank": gathered}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._stage != "fit":
            return
        rank, world = _distributed_world()
        states = state_dict.get("per_rank") or []
        if not states:
            return
        if len(states) != world:
            warnings.warn(f"the checkpoint holds RNG states of {len(states)} processes, this run has "
                          f"{world}: every rank restores rank 0's state", stacklevel=2)
        _restore_rng_state(states[rank] if len(states) == world else states[0])


# --------------------------------------------------------------------------------------------
# metrics.json and plots


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run folder's ``metrics.json`` (empty when there is none yet)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_metrics(run_dir: Path, metrics: Mapping[str, Any]) -> None:
    text = json.dumps(metrics, indent=2, sort_keys=False, allow_nan=True) + "\n"
    atomic_write_text(run_dir / "metrics.json", text, overwrite=True)


def update_metrics(run_dir: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``metrics.json`` (atomically); returns the new content."""
    metrics = read_metrics(run_dir)
    metrics.update(fields)
    _write_metrics(Path(run_dir), metrics)
    return metrics


def _scalar_metrics(metrics: Mapping[str, Any], keep: Any) -> dict[str, float]:
    out = {}
    for key, value in sorted(metrics.items()):
        if not keep(key):
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def _is_eval_metric(key: str) -> bool:
    """Validation / test metrics: every logged value except training ones and learning rates."""
    return not key.startswith(("train", "lr/", "lr-")) and key not in ("epoch", "step")


def _best_entry(entries: list[dict], monitor: str | None, mode: str) -> dict | None:
    scored = [e for e in entries if monitor and isinstance(e.get(monitor), float) and not math.isnan(e[monitor])]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda e: e[monitor])


def _file_name(metric: str) -> str:
    return re.sub(r"[^\w.-]+", "_", metric).strip("_") or "metric"


def _save_figure(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue(), overwrite=True)


def _line_plot(xs: list, ys: list, xlabel: str, ylabel: str, title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    ax = fig.add_subplot()
    ax.plot(xs, ys, marker="o" if len(xs) < 50 else None, markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_history(history: Mapping[str, list[dict]], plots_dir: str | os.PathLike) -> list[Path]:
    """PNG plots: ``train_loss.png`` (loss vs step) and one per validation metric.

    Validation metrics are plotted against the epoch when there is one validation per
    epoch, else against the step. Returns the files written.
    """
    plots_dir = Path(plots_dir)
    written = []
    train = history.get("train", [])
    if train:
        path = plots_dir / "train_loss.png"
        _line_plot([e["step"] for e in train], [e["loss"] for e in train], "step", "loss",
                   "training loss", path)
        written.append(path)
    val = history.get("val", [])
    epochs = [e["epoch"] for e in val]
    by_epoch = len(set(epochs)) == len(epochs)
    names = sorted({k for e in val for k in e if k not in ("epoch", "step")})
    for name in names:
        points = [(e["epoch"] if by_epoch else e["step"], e[name]) for e in val if name in e]
        path = plots_dir / f"{_file_name(name)}.png"
        _line_plot([p[0] for p in points], [p[1] for p in points], "epoch" if by_epoch else "step",
                   name, f"validation {name}", path)
        written.append(path)
    return written


class RunHistory(Callback):
    """Record the training loss and validation metrics; write ``metrics.json`` and plots.

    The training loss (what ``training_step`` returns) is averaged over windows of
    ``trainer.log_every_n_steps`` optimizer steps. Validation metrics are the logged values
    whose names do not start with ``train``. ``metrics.json`` is rewritten at the end of
    every validation and at the end of fit / validate / test; the history travels in
    checkpoints so that a resumed run's files hold the whole run.
    """

    def __init__(self, run_dir: str | os.PathLike, cfg: RunConfig, extra: Mapping[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.monitor = cfg.trainer.monitor
        self.mode = cfg.trainer.monitor_mode
        self.window = cfg.trainer.log_every_n_steps
        self.plots = cfg.run.plots
        self.extra = dict(extra or {})
        self.history: dict[str, list[dict]] = {"train": [], "val": []}
        self.results: dict[str, dict[str, float]] = {}
        self._pending = [0.0, 0]  # loss sum, count since the last recorded window
        self._window_start = 0
        self._stage: str | None = None

    # -- checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "pending": list(self._pending), "window_start": self._window_start}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._stage != "fit":
            return
        self.history = {k: [dict(e) for e in v] for k, v in state_dict["history"].items()}
        self._pending = list(state_dict["pending"])
        self._window_start = int(state_dict["window_start"])

    # -- hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stage = stage

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._pending[0] += float(loss.detach())
            self._pending[1] += 1
        if trainer.global_step - self._window_start >= self.window:
            self._flush_window(trainer)

    def _flush_window(self, trainer: L.Trainer) -> None:
        total, count = self._pending
        if count:
            self.history["train"].append(
                {"step": trainer.global_step, "epoch": trainer.current_epoch, "loss": total / count})
        self._pending = [0.0, 0]
        self._window_start = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = _scalar_metrics(trainer.callback_metrics, _is_eval_metric)
        if trainer.state.fn == "fit":
            self.history["val"].append({"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics})
            self._write(trainer, plots=True)
        else:
            self.results["validate"] = metrics
            self._write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.results["test"] = _scalar_metrics(trainer.callback_metrics, _is_eval_metric)
        self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_window(trainer)
        self._write(trainer, plots=True, checkpoints=self._checkpoint_paths(trainer))

    def _checkpoint_paths(self, trainer: L.Trainer) -> dict[str, str | None]:
        cb = trainer.checkpoint_callback
        if cb is None:
            return {"best": None, "last": None}
        last = getattr(cb, "last_model_path", "") or None
        best = (getattr(cb, "best_model_path", "") or None) if self.monitor else None
        return {"best": best, "last": last}

    # -- writing
    def summary(self, stage: str) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        out: dict[str, Any] = {"stage": stage}
        if stage == "fit":
            val = self.history["val"]
            out.update(monitor=self.monitor, mode=self.mode, best=_best_entry(val, self.monitor, self.mode),
                       final=val[-1] if val else None, history=self.history)
        out.update(self.results)
        out.update(self.extra)
        return out

    def _write(self, trainer: L.Trainer, plots: bool = False, checkpoints: dict | None = None) -> None:
        if not trainer.is_global_zero:
            return
        fn = trainer.state.fn
        summary = self.summary(getattr(fn, "value", str(fn)))
        if checkpoints is not None:
            self.extra["checkpoints"] = checkpoints
            summary["checkpoints"] = checkpoints
        _write_metrics(self.run_dir, summary)
        if plots and self.plots:
            try:
                plot_history(self.history, self.run_dir / "plots")
            except Exception as exc:  # a plot must never stop training
                log.warning("could not write plots: %s", exc)


# --------------------------------------------------------------------------------------------
# loggers


def _tensorboard_available() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


def build_loggers(run_dir: Path) -> list[Any]:
    """CSV (``metrics.csv``) and TensorBoard event files, both directly in the run folder."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers: list[Any] = [CSVLogger(save_dir=run_dir, name="", version="")]
    if _tensorboard_available():
        loggers.append(TensorBoardLogger(save_dir=run_dir, name="", version="", default_hp_metric=False))
    else:
        log.warning("neither tensorboard nor tensorboardX is installed: no TensorBoard logs "
                    "(pip install tensorboardX)")
    return loggers


def checkpoint_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model weights stored in a Lightning checkpoint file."""
    fs = get_filesystem(os.fspath(path))
    if fs.isdir(os.fspath(path)):
        raise VideolangError(f"{path}: a sharded (folder) checkpoint; export needs a single-file one "
                             "(FSDP: strategy with state_dict_type='full')")
    from videolang.models.weights import load_tensors_file

    with fs.open(os.fspath(path), "rb") as f:
        checkpoint = load_tensors_file(f, f"checkpoint {path}")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise VideolangError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return checkpoint["state_dict"]
