"""The one Lightning DataModule: a method's :class:`~videolang.data.splits.DataSplits` served as
loaders with the ``data`` section's batch sizes and workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer import call
from torch.utils.data import DataLoader

from videolang.data.datasets import DeferredDataLoader
from videolang.data.splits import DataSplits
from videolang.engine.config import RunConfig

__all__ = ["ResumableLoader", "SplitsDataModule"]

Position = tuple[int, int]  # (epoch, batches the training loop has taken in it)


class ResumableLoader(DeferredDataLoader):
    """The training loader, which resumes mid-epoch exactly.

    :meth:`loader_state` is the torch RNG state at the epoch's iterator creation (what a
    ``RandomSampler`` and the workers' seeds draw from), the epoch, how many batches the loop had
    taken (``position()``) and the batch sampler's own state if it has one. Given that state as
    ``resume_state``, the epoch's iterator is made again from the saved RNG state (then the
    current one is put back), the epoch is handed to the dataset and batch sampler (Lightning
    calls no epoch-start hook when it resumes mid-epoch) and the batches already trained on are
    drawn and dropped, so the rest of the epoch is what an uninterrupted run saw.

    ``epoch_start`` (if given) is called first when an epoch's iterator is made: the data
    module's :meth:`SplitsDataModule.missed_epoch_start`, which runs the epoch-start hooks where
    Lightning entered the epoch without them.
    """

    def __init__(self, *args: Any, position: Callable[[], Position] | None = None,
                 resume_state: dict[str, Any] | None = None, epoch_start: Callable[[], None] | None = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.position = position
        self.resume_state = resume_state  # public: Lightning re-creates loaders from their attributes
        self.epoch_start = epoch_start
        self._epoch_rng: torch.Tensor | None = None

    def __iter__(self) -> Iterator:  # type: ignore[override]
        return _ResumingIterator(self)

    def loader_state(self) -> dict[str, Any]:
        epoch, taken = self.position() if self.position is not None else (0, 0)
        state: dict[str, Any] = {"epoch": epoch, "batches": taken, "epoch_rng": self._epoch_rng}
        if hasattr(self.batch_sampler, "state_dict"):
            state["batch_sampler"] = self.batch_sampler.state_dict()
        return state

    # Lightning's stateful-loader protocol, so that Lightning knows the loader resumes. The state
    # itself travels in the DataModule's checkpoint entry (Lightning 2.6 hands loaders their state
    # before it has read the checkpoint), so it is not stored twice (a retrieval batch sampler's
    # epoch embeddings can be large).
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def _start(self) -> Iterator:
        """The epoch's real iterator (made by the first ``next``)."""
        if self.epoch_start is not None:
            self.epoch_start()
        resume, self.resume_state = self.resume_state, None
        epoch = self.position()[0] if self.position is not None else 0
        if not resume or resume.get("epoch_rng") is None or resume["epoch"] != epoch or not resume["batches"]:
            self._epoch_rng = torch.get_rng_state()
            return DataLoader.__iter__(self)
        for part in (self.dataset, self.batch_sampler):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)
        if "batch_sampler" in resume and hasattr(self.batch_sampler, "load_state_dict"):
            self.batch_sampler.load_state_dict(resume["batch_sampler"])
        now = torch.get_rng_state()
        torch.set_rng_state(resume["epoch_rng"])
        self._epoch_rng = resume["epoch_rng"]
        iterator = DataLoader.__iter__(self)
        next(iterator)  # a RandomSampler draws its seed at the first batch, not at iter()
        torch.set_rng_state(now)
        for _ in range(resume["batches"] - 1):  # samples draw from (seed, epoch, index), not the RNG
            next(iterator)
        return iterator


class _ResumingIterator(Iterator):
    def __init__(self, loader: ResumableLoader):
        self._loader = loader
        self._iterator: Iterator | None = None

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._loader._start()
        return next(self._iterator)

    def __len__(self) -> int:
        return len(self._loader)


class SplitsDataModule(L.LightningDataModule):
    """Training: shuffled ``batch_size`` batches (the last partial one dropped when there is more
    than one batch) or the splits' own batch sampler; evaluation: in order, ``eval_batch_size``.

    Every loader is a :class:`~videolang.data.datasets.DeferredDataLoader`, so per-epoch state
    set in ``on_train_epoch_start`` reaches the workers. ``splits`` is the method's datasets; a
    split it does not have (``has_split``) gets no loader, and a stage whose ``eval_loaders`` names
    several splits gets a loader each (``dataloader_idx`` in the order named).
    """

    def __init__(self, cfg: RunConfig, splits_cls: type[DataSplits]):
        super().__init__()
        self.cfg = cfg
        self.splits = splits_cls(cfg.data, cfg.seed)
        self._resume_state: dict[str, Any] | None = None

    def loader(self, split: str, *, train: bool = False) -> DataLoader:
        """The loader of ``split``: training batches with ``train``, else evaluation batches."""
        d = self.cfg.data
        ds = self.splits.dataset(split)
        common: dict[str, Any] = {"collate_fn": self.splits.collate_fn(split), "num_workers": d.num_workers}
        size = self.splits.batch_size(split, train=train)
        if not train:
            # its own generator: each evaluation iterator draws a seed for its workers, which would
            # advance the global RNG that the next training epoch's shuffle draws from (see
            # missed_epoch_start: a resumed run may skip a validation an uninterrupted run ran)
            return DeferredDataLoader(ds, batch_size=size, shuffle=False, generator=torch.Generator(), **common)
        common.update(position=self._training_position, resume_state=self._resume_state,
                      epoch_start=self.missed_epoch_start)
        sampler = self.splits.train_batch_sampler(ds)
        if sampler is not None:
            return ResumableLoader(ds, batch_sampler=sampler, **common)
        return ResumableLoader(ds, batch_size=size, shuffle=True, drop_last=len(ds) > size, **common)

    # -- exact resume: the training loader's position is part of the checkpoint -----------------

    def _training_position(self) -> Position:
        """(epoch, batches the training loop has taken in it); (0, 0) outside a Trainer."""
        if self.trainer is None:
            return 0, 0
        return self.trainer.current_epoch, self.trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def missed_epoch_start(self) -> None:
        """Run the ``on_train_epoch_start`` hooks of the current epoch if Lightning skipped them.

        Lightning 2.6 resuming from a step checkpoint of an epoch's last batch (``last.ckpt`` with
        ``trainer.checkpoint_every_n_steps`` after a kill during that epoch's validation or end
        hooks; a kill between epochs resumes from the epoch-end rewrite of ``last.ckpt``, see
        ``RunCheckpoint``) counts that epoch as finished and enters the next one as if restarted
        mid-epoch: it calls no epoch-start hook. The recipe's hook (``set_epoch`` of the dataset, VideoCLIP's
        retrieval embeddings) and the callbacks' would then be missing for a whole epoch, whose
        data would differ from an uninterrupted run's. The epoch loop's counters tell: the hooks
        of the running epoch were called (here or before the checkpoint) once ``started`` exceeds
        ``processed``. Called by the training loader before it makes the epoch's iterator, where
        an uninterrupted run has just run the hooks; the counters are advanced as Lightning does.
        """
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return
        progress = trainer.fit_loop.epoch_progress.current
        if progress.started > progress.processed:
            return
        trainer.fit_loop.epoch_progress.increment_ready()
        call._call_callback_hooks(trainer, "on_train_epoch_start")
        call._call_lightning_module_hook(trainer, "on_train_epoch_start")
        trainer.fit_loop.epoch_progress.increment_started()

    def state_dict(self) -> dict[str, Any]:
        loader = self.trainer.train_dataloader if self.trainer is not None else None
        return {"train_loader": loader.loader_state()} if isinstance(loader, ResumableLoader) else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_state = state_dict.get("train_loader")
        loader = self.trainer.train_dataloader if self.trainer is not None else None
        if isinstance(loader, ResumableLoader):  # made before the checkpoint was read
            loader.resume_state = self._resume_state

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loaders("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loaders("test")

    def _eval_loaders(self, stage: str) -> DataLoader | list:
        """No loader for a split the config does not give; several when the stage reads more."""
        if not self.splits.has_split(stage):
            return []
        loaders = [self.loader(name) for name in self.splits.eval_loaders(stage)]
        return loaders[0] if len(loaders) == 1 else loaders
