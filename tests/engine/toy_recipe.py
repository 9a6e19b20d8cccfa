"""A tiny recipe for the engine's tests: classify random vectors with a small MLP.

It has what exact resume must get right: dropout (torch RNG), a shuffled DataLoader
(``RandomSampler`` seeded from the torch RNG), warm-up + decay schedule, and parameters of
every decay kind (Linear weights, biases, LayerNorm, a positional embedding).
Referenced in configs as ``recipe: tests.engine.toy_recipe:toy.classify``.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from videolang.data.splits import DataSplits, LoaderConfig
from videolang.engine import RecipeModule, RunConfig, register_recipe

RECIPE = "tests.engine.toy_recipe:toy.classify"


@dataclass
class ToyModelConfig:
    """``model`` section of the toy recipe."""

    hidden: int = 16
    dropout: float = 0.2
    num_classes: int = 3


@dataclass
class ToyDataConfig:
    """``data`` section: sizes of the random splits (drawn from their own ``seed``)."""

    num_train: int = 64
    num_val: int = 32
    dim: int = 8
    batch_size: int = 8
    seed: int = 1234


class ToyNet(nn.Module):
    def __init__(self, cfg: ToyModelConfig, dim: int):
        super().__init__()
        self.embed = nn.Linear(dim, cfg.hidden)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.hidden))
        self.norm = nn.LayerNorm(cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(torch.relu(self.norm(self.embed(x) + self.pos_embed)))
        return self.head(h)


class ToyModule(RecipeModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.model = ToyNet(cfg.model, cfg.data.dim)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.log("train/loss", loss)
        return loss

    def _evaluate(self, batch, prefix: str) -> None:
        x, y = batch
        logits = self.model(x)
        self.log(f"{prefix}/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{prefix}/acc", (logits.argmax(-1) == y).float().mean() * 100, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx):
        return self.model(batch[0]).argmax(-1)


class ToyData(L.LightningDataModule):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg = cfg.data

    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(self.cfg.seed)
        weights = torch.randn(self.cfg.dim, 3, generator=g)

        def split(n: int) -> TensorDataset:
            x = torch.randn(n, self.cfg.dim, generator=g)
            return TensorDataset(x, (x @ weights).argmax(-1))

        self.train_set, self.val_set = split(self.cfg.num_train), split(self.cfg.num_val)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.cfg.batch_size, shuffle=True, num_workers=0)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.cfg.batch_size)

    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader


register_recipe("toy.classify", ToyModule, ToyData, ToyModelConfig, ToyDataConfig)


@dataclass
class ToySplitsConfig(LoaderConfig):
    """``data`` section of ``toy.splits``: the same random splits, served by the engine."""

    num_train: int = 64
    num_val: int = 32
    dim: int = 8
    batch_size: int = 8
    eval_batch_size: int = 8
    seed: int = 1234


class ToySplits(DataSplits[ToySplitsConfig]):
    def build(self, split: str) -> TensorDataset:
        g = torch.Generator().manual_seed(self.data.seed)
        weights = torch.randn(self.data.dim, 3, generator=g)
        for name, n in (("train", self.data.num_train), ("val", self.data.num_val)):
            x = torch.randn(n, self.data.dim, generator=g)
            if name == split or (split == "test" and name == "val"):
                return TensorDataset(x, (x @ weights).argmax(-1))
        raise KeyError(split)


SPLITS_RECIPE = "tests.engine.toy_recipe:toy.splits"
register_recipe("toy.splits", ToyModule, ToySplits, ToyModelConfig, ToySplitsConfig)


def toy_config(root, **trainer) -> dict:
    """A fast toy run configuration writing under ``root``; ``trainer`` keys override."""
    return {
        "recipe": RECIPE,
        "name": "toy",
        "seed": 7,
        "optim": {"lr": 0.01, "warmup_ratio": 0.25, "schedule": "cosine"},
        "trainer": {
            "max_epochs": 2, "enable_progress_bar": False, "log_every_n_steps": 2, "gradient_clip_val": 1.0,
            "monitor": "val/acc", "monitor_mode": "max", **trainer,
        },
        "run": {"root": str(root)},
    }
