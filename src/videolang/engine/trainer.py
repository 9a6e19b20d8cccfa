"""Build the Lightning Trainer from a :class:`RunConfig`; ``fit`` / ``validate`` / ``test`` / ``predict``.

Each entry point loads the config, seeds everything, creates the run folder, builds the recipe's
LightningModule and DataModule, runs the Trainer and returns a :class:`RunResult` (run folder and
``metrics.json``). ``resume`` (a checkpoint, a run folder, ``last``, ``best`` or ``auto``) is
described on :func:`fit` and in docs/engine.md, with the multi-GPU / multi-node commands.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor

from videolang.data.splits import LoaderConfig
from videolang.engine.config import RunConfig
from videolang.engine.faults import DataGuard
from videolang.engine.registry import get_recipe, load_config
from videolang.engine.run import (
    AtomicCheckpointIO,
    RngStateCallback,
    RunCheckpoint,
    RunHistory,
    build_loggers,
    checkpoint_state_dict,
    config_path_for_checkpoint,
    find_last_checkpoint,
    is_rank_zero_process,
    prepare_run_dir,
    read_metrics,
    resolve_checkpoint,
    shared_run_dir,
    update_metrics,
)
from videolang.errors import ConfigError
from videolang.utils.io import atomic_output

__all__ = ["RunResult", "build_trainer", "fit", "load_run_config", "predict", "test", "validate"]

log = logging.getLogger(__name__)

ConfigSource = str | os.PathLike | Mapping[str, Any] | None

# TrainerConfig keys passed to lightning.Trainer under the same name (None: Lightning's default).
_TRAINER_KEYS = (
    "max_epochs", "max_steps", "precision", "accelerator", "devices", "strategy", "num_nodes",
    "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm", "log_every_n_steps",
    "val_check_interval", "check_val_every_n_epoch", "deterministic", "benchmark",
    "limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
    "num_sanity_val_steps", "enable_progress_bar",
)


@dataclass
class RunResult:
    """What an entry point returns: the run folder and its ``metrics.json`` content.

    ``predictions`` holds what ``predict`` returned (rank 0's batches) for ``predict`` runs.
    """

    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    predictions: list[Any] | None = None


# --------------------------------------------------------------------------------------------
# trainer


def _progress_bar(cfg: RunConfig) -> Callback | None:
    if not cfg.trainer.enable_progress_bar:
        return None
    choice = cfg.trainer.progress_bar
    if choice == "auto":
        import importlib.util

        rich = importlib.util.find_spec("rich") is not None
        choice = "rich" if rich and sys.stderr.isatty() else "tqdm"
    if choice == "rich":
        from lightning.pytorch.callbacks import RichProgressBar

        return RichProgressBar()
    from lightning.pytorch.callbacks import TQDMProgressBar

    return TQDMProgressBar()


def _checkpoint_callback(cfg: RunConfig, run_dir: Path) -> RunCheckpoint:
    t = cfg.trainer
    monitored = t.monitor is not None
    return RunCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best-epoch{epoch:03d}-step{step:07d}" if monitored else "epoch{epoch:03d}-step{step:07d}",
        monitor=t.monitor,
        mode=t.monitor_mode,
        save_top_k=t.save_top_k if monitored else 0,
        save_last=True,
        auto_insert_metric_name=False,
        every_n_train_steps=t.checkpoint_every_n_steps,
    )


def build_trainer(
    cfg: RunConfig,
    run_dir: str | os.PathLike,
    *,
    stage: str = "fit",
    callbacks: Sequence[Callback] = (),
    extra_metrics: Mapping[str, Any] | None = None,
) -> L.Trainer:
    """A ``lightning.Trainer`` for ``cfg`` writing into ``run_dir``.

    Adds the engine's callbacks (RNG state, metric history + plots, skipped samples and
    non-finite losses (:class:`~videolang.engine.faults.DataGuard`), and for ``fit``
    checkpoints, learning-rate logging and optional early stopping), the CSV / TensorBoard
    loggers, the progress bar and atomic checkpoint writes; ``callbacks`` come last.
    """
    run_dir = Path(run_dir)
    t = cfg.trainer
    guard = DataGuard(run_dir if is_rank_zero_process() else None,
                      getattr(cfg.data, "max_skipped_fraction", LoaderConfig.max_skipped_fraction))
    engine_callbacks: list[Callback] = [RngStateCallback(), RunHistory(run_dir, cfg, extra_metrics), guard]
    if stage == "fit":
        engine_callbacks += [_checkpoint_callback(cfg, run_dir), LearningRateMonitor(logging_interval="step")]
        if t.early_stopping_patience is not None:
            engine_callbacks.append(EarlyStopping(monitor=t.monitor, mode=t.monitor_mode,
                                                  patience=t.early_stopping_patience))
    bar = _progress_bar(cfg)
    if bar is not None:
        engine_callbacks.append(bar)
    kwargs = {key: getattr(t, key) for key in _TRAINER_KEYS if getattr(t, key) is not None}
    return L.Trainer(
        **kwargs,
        default_root_dir=run_dir,
        logger=build_loggers(run_dir),
        callbacks=[*engine_callbacks, *callbacks],
        enable_checkpointing=stage == "fit",
        enable_model_summary=stage == "fit",
        plugins=[AtomicCheckpointIO()],
    )


# --------------------------------------------------------------------------------------------
# entry points


def load_run_config(
    config: ConfigSource, overrides: Sequence[str] = (), seed: int | None = None,
    resume: str | os.PathLike | None = None,
) -> tuple[RunConfig, Path | None]:
    """The validated config and the checkpoint file named by ``resume`` (if any).

    Without ``config``, ``resume`` must be a checkpoint path: its run folder's config is used.
    """
    if config is None:
        if resume is None or os.fspath(resume) in ("last", "best", "auto"):
            raise ConfigError("no config: pass --config (or --resume with a checkpoint path)")
        ckpt = resolve_checkpoint(resume)
        return load_config(config_path_for_checkpoint(ckpt), overrides, seed=seed), ckpt
    cfg = load_config(config, overrides, seed=seed)
    if resume is None:
        return cfg, None
    if os.fspath(resume) == "auto":  # a re-submitted job: continue if there is anything to continue
        return cfg, find_last_checkpoint(cfg)
    return cfg, resolve_checkpoint(resume, cfg)


def _export(module: L.LightningModule, run_dir: Path, metrics: Mapping[str, Any]) -> str | None:
    """Export the best (else last) checkpoint's weights with the recipe's ``export_pretrained``."""
    export = getattr(module, "export_pretrained", None)
    checkpoints = metrics.get("checkpoints") or {}
    source = checkpoints.get("best") or checkpoints.get("last")
    if export is None or not source:
        return None
    if Path(source).is_dir():
        log.warning("not exporting %s: a sharded checkpoint (FSDP with state_dict_type='sharded'); "
                    "use state_dict_type='full' to get export/", source)
        return None
    module.load_state_dict(checkpoint_state_dict(source))
    out_dir = run_dir / "export"
    export(out_dir)
    log.info("exported %s to %s", source, out_dir)
    return str(out_dir)


def _save_predictions(module: L.LightningModule, predictions: list[Any], run_dir: Path) -> None:
    saver = getattr(module, "save_predictions", None)
    if saver is not None:
        saver(predictions, run_dir)
        return
    with atomic_output(run_dir / "predictions.pt", overwrite=True) as tmp:
        torch.save(predictions, tmp)


@contextlib.contextmanager
def _quiet_expected_warnings() -> Iterator[None]:
    """Hide Lightning warnings that do not apply to the engine's runs.

    The CSV logger writes into the run folder, which already holds config.yaml (it is new,
    nothing gets deleted); evaluation deliberately does not restore the checkpoint callback.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks")
        yield


def _run(stage: str, cfg: RunConfig, ckpt: Path | None, callbacks: Sequence[Callback]) -> RunResult:
    recipe = get_recipe(cfg.recipe)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = prepare_run_dir(cfg)
    # Same seed and same thread count give bit-identical runs on one machine; the intra-op
    # thread count (the cores, or OMP_NUM_THREADS) sets the float reduction order, so it is
    # recorded beside the metrics.
    extra = {"resumed_from" if stage == "fit" else "checkpoint": str(ckpt) if ckpt else None,
             "torch_threads": torch.get_num_threads()}
    if stage != "fit" and ckpt is None:
        log.warning("%s without a checkpoint (--resume/--ckpt): the model keeps its initial weights", stage)
    try:
        module = recipe.module_cls(cfg)
        datamodule = recipe.make_datamodule(cfg)
        trainer = build_trainer(cfg, run_dir, stage=stage, callbacks=callbacks, extra_metrics=extra)
        with shared_run_dir(run_dir), _quiet_expected_warnings():
            output = getattr(trainer, stage)(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
    except BaseException:
        _remove_if_empty(run_dir)
        raise
    predictions = output if stage == "predict" else None
    if not trainer.is_global_zero:
        return RunResult(run_dir, {}, predictions)
    metrics = read_metrics(run_dir)
    skipped = _skipped_counts(trainer)
    if skipped:  # unreadable samples, per split: also in the printed summary
        metrics = update_metrics(run_dir, skipped=skipped)
    if stage == "fit" and cfg.run.export:
        metrics = update_metrics(run_dir, export=_export(module, run_dir, metrics))
    elif stage == "predict":
        _save_predictions(module, predictions or [], run_dir)
        metrics = update_metrics(run_dir, stage="predict", num_batches=len(predictions or []))
    return RunResult(run_dir, metrics, predictions)


def _remove_if_empty(run_dir: Path) -> None:
    """A run that failed before it logged anything (bad paths, bad data at setup) leaves no
    version folder behind: only its config and the loggers' empty files would be in it."""
    if not is_rank_zero_process() or not run_dir.is_dir():
        return
    made = [p for p in run_dir.rglob("*") if p.is_file()]
    if any(p.name not in ("config.yaml", "hparams.yaml") and not p.name.startswith("events.out.tfevents")
           for p in made):
        return
    log.info("removing %s: the run failed before it logged anything", run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):  # the run name's folder, when this was its only version
        run_dir.parent.rmdir()


def _skipped_counts(trainer: L.Trainer) -> dict[str, int]:
    guard = next((c for c in trainer.callbacks if isinstance(c, DataGuard)), None)
    return {stage: n for stage, n in guard.totals.items() if n} if guard is not None else {}


def fit(
    config: ConfigSource,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    resume: str | os.PathLike | None = None,
    *,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train the recipe of ``config``; ``resume`` continues exactly from a checkpoint.

    ``config``: a YAML path, a packaged config's name or a mapping (``None`` with a checkpoint
    path in ``resume``: that run's ``config.yaml``); ``overrides``: ``key.sub=value`` strings;
    ``seed`` replaces the config's seed; ``callbacks``: extra Lightning callbacks. ``resume`` is a
    ``.ckpt`` path, a run folder (its ``checkpoints/last.ckpt``), ``"last"`` (the newest
    ``last.ckpt`` of runs with this name), ``"best"``, or ``"auto"`` (``"last"`` when there is
    one, else a fresh start: for jobs a scheduler may re-submit); model, optimizer, schedule,
    loop progress, RNG states and metric history are restored. Exports the best (or last)
    weights to ``<run_dir>/export/`` unless ``run.export`` is false.
    """
    cfg, ckpt = load_run_config(config, overrides, seed, resume)
    return _run("fit", cfg, ckpt, callbacks)


def validate(config: ConfigSource, overrides: Sequence[str] = (), seed: int | None = None,
             resume: str | os.PathLike | None = None, *, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Run the validation loop once with the weights of the checkpoint ``resume``."""
    cfg, ckpt = load_run_config(config, overrides, seed, resume)
    return _run("validate", cfg, ckpt, callbacks)


def test(config: ConfigSource, overrides: Sequence[str] = (), seed: int | None = None,
         resume: str | os.PathLike | None = None, *, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Run the test loop with the weights of the checkpoint ``resume``."""
    cfg, ckpt = load_run_config(config, overrides, seed, resume)
    return _run("test", cfg, ckpt, callbacks)


test.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported into tests


def predict(config: ConfigSource, overrides: Sequence[str] = (), seed: int | None = None,
            resume: str | os.PathLike | None = None, *, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Run ``predict_step`` over the predict dataloader; saves ``predictions.pt`` (or calls the
    recipe's ``save_predictions(predictions, run_dir)``)."""
    cfg, ckpt = load_run_config(config, overrides, seed, resume)
    return _run("predict", cfg, ckpt, callbacks)
