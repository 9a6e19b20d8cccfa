"""A method's datasets by split, in plain torch: what the engine's one DataModule serves.

Each method's data module (``data/clipbert.py``, ``data/videoclip.py``, ...) subclasses
:class:`DataSplits` and its data config subclasses :class:`LoaderConfig`; the engine wraps both
in :class:`videolang.engine.datamodule.SplitsDataModule` (loaders, shuffling, workers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from torch.utils.data import Dataset, Sampler

__all__ = ["DataSplits", "LoaderConfig"]


@dataclass
class LoaderConfig:
    """The keys of every ``data`` section that the loaders read (subclasses change defaults)."""

    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 0
    # Unreadable samples are skipped, counted and logged; a run stops once more than this share
    # of a split's samples was skipped in one pass (0: stop at the first).
    max_skipped_fraction: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError(f"'max_skipped_fraction' must lie in [0, 1], got {self.max_skipped_fraction}")
        for key in ("batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"'{key}' must be >= 1, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise ValueError(f"'num_workers' must be >= 0, got {self.num_workers}")


DataConfigT = TypeVar("DataConfigT", bound=LoaderConfig)


class DataSplits(Generic[DataConfigT]):
    """Datasets of the ``train`` / ``val`` / ``test`` splits of one method, each built once.

    Subclasses implement :meth:`build`; they override :meth:`collate_fn` when items need more
    than torch's default collate, :meth:`has_split` when a split is optional,
    :meth:`eval_loaders` when a stage reads more than its own split, and
    :meth:`train_batch_sampler` when training batches are not plain shuffled batches.
    Building is lazy: Lightning asks for the training loader more than once, and building reads
    and tokenizes every annotation.
    """

    def __init__(self, data: DataConfigT, seed: int = 0):
        self.data = data
        self.seed = seed
        self._sets: dict[str, Dataset] = {}

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (built on first use)."""
        if split not in self._sets:
            self._sets[split] = self.build(split)
        return self._sets[split]

    def build(self, split: str) -> Dataset:
        raise NotImplementedError

    def has_split(self, split: str) -> bool:
        """Whether the config gives data for ``split`` (an absent ``val`` split skips validation)."""
        return True

    def eval_loaders(self, stage: str) -> list[str]:
        """The splits evaluated at ``stage`` (``val`` or ``test``), one loader each: usually the
        stage's own; a kNN probe adds the split its neighbours come from."""
        return [stage]

    def batch_size(self, split: str, *, train: bool) -> int:
        """Items per batch of ``split``'s loader: ``batch_size`` for training, else ``eval_batch_size``
        (a method whose items expand, such as multiple-choice options, divides them)."""
        return self.data.batch_size if train else self.data.eval_batch_size

    def collate_fn(self, split: str) -> Callable[[list[Any]], Any] | None:
        """The collate function of ``split``'s loader; None means torch's default."""
        return None

    def train_batch_sampler(self, dataset: Dataset) -> Sampler | None:
        """A batch sampler for training, or None for shuffled ``batch_size`` batches."""
        return None
