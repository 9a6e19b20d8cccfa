"""VIMPAC recipes on token stores: ``vimpac.pretrain`` (block-masked token prediction plus the
long-range contrastive loss between two clips of each video) and ``vimpac.finetune`` (action
recognition, multi-view multi-clip evaluation); :func:`split_averaged` averages over splits.
Clips, masking options and evaluation: docs/vimpac.md ("Implementation notes").
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from videolang.data.datasets import DeferredDataLoader
from videolang.data.sampling import vimpac_clip_indices, vimpac_clip_starts
from videolang.data.tokens import TokenStore
from videolang.engine import (
    RecipeModule,
    RunConfig,
    StagedEvalModule,
    create_recipe_model,
    register_recipe,
)
from videolang.engine.evaluation import EvaluationBuffer, batch_indices, gather_stage, log_metrics
from videolang.errors import ConfigError
from videolang.losses.vimpac import arrow_of_time_loss, vimpac_nce_loss
from videolang.masking import apply_mask, block_mask, iid_mask
from videolang.metrics import topk_accuracy
from videolang.models import load_pretrained
from videolang.models.convert.vimpac import convert_vimpac_state_dict
from videolang.models.vimpac import (
    VimpacBackbone,
    VimpacConfig,
    VimpacForClassification,
    VimpacForPretraining,
)
from videolang.models.weights import load_strict, read_checkpoint

log = logging.getLogger(__name__)

__all__ = ["TokenClips", "VimpacDataConfig", "VimpacModelConfig", "knn_predict", "split_averaged"]


@dataclass
class VimpacModelConfig:
    """``model.*`` of the VIMPAC recipes."""

    name: str = "vimpac-small"  # a registered config; codebook and clip shape come from the data
    init: str | None = None  # a saved model folder, or an original checkpoint (init_format: vimpac)
    init_format: Literal["videolang", "vimpac"] = "videolang"
    overrides: dict[str, Any] = field(default_factory=dict)  # registry overrides (dropout=0.0 ...)
    # pretraining
    mask_blocks: int = 5
    mask_prob: float | None = None  # i.i.d. masking with this probability instead of blocks
    mask_replace: tuple[float, float, float] = (1.0, 0.0, 0.0)  # [MASK] / random / keep
    mask_last_frames: int = 0  # also mask the last N frames of every clip (future prediction; not VIMPAC's)
    order_weight: float = 0.0  # weight of the arrow-of-time loss (not VIMPAC's; losses.vimpac.arrow_of_time_loss)
    mlm_weight: float = 1.0
    nce_weight: float = 1.0
    temperature: float = 0.2
    knn_k: int = 200
    knn_temperature: float = 0.07
    # fine-tuning
    num_classes: int | None = None  # None: the train store's header classes, else max label + 1
    label_smoothing: float = 0.0
    # re-draw the loaded backbone's temporal position table (redraw_temporal_positions); without
    # model.init it changes nothing, the table is fresh anyway
    reinit_temporal_positions: bool = False


@dataclass
class VimpacDataConfig:
    """``data.*`` of the VIMPAC recipes; each registers a subclass fixing ``objective``."""

    objective: Literal["pretrain", "finetune"] = "finetune"  # clip pairs (pretrain) or labelled clips
    train_stores: list[str] = field(default_factory=list)  # spatial views (one drawn per sample)
    val_stores: list[str] = field(default_factory=list)  # evaluation views (all used)
    test_stores: list[str] = field(default_factory=list)
    train_list: str | None = None  # MMAction split files restricting the videos
    val_list: str | None = None
    test_list: str | None = None
    label_fraction: float = 1.0  # fine-tuning on this fraction of the labelled training videos
    clip_len: int = 5
    stride: int = 1
    relevance_range: int | None = None  # frames: bound on the distance of a pretraining pair
    num_test_clips: int = 1
    legacy_first_clip: bool = False
    batch_size: int = 8
    eval_batch_size: int = 16
    num_workers: int = 0
    # The frame tokenizer that made the stores (a tokenizer folder or dalle:PATH): the export
    # puts it into the model folder, so that videolang.load classifies raw videos.
    frame_tokenizer: str | None = None


@dataclass
class VimpacPretrainDataConfig(VimpacDataConfig):
    """``data.*`` of ``vimpac.pretrain``: pairs of clips of one video."""

    objective: Literal["pretrain"] = "pretrain"


@dataclass
class VimpacFinetuneDataConfig(VimpacDataConfig):
    """``data.*`` of ``vimpac.finetune``: labelled clips."""

    objective: Literal["finetune"] = "finetune"


# ---------------------------------------------------------------------------------------------
# data


def _read_keys(list_file: str | None) -> set[str] | None:
    if list_file is None:
        return None
    path = Path(list_file)
    if not path.is_file():
        raise ConfigError(f"video list not found: {path}")
    return {str(Path(line.split()[0]).with_suffix("")) for line in path.read_text().splitlines() if line.strip()}


class TokenClips(Dataset):
    """Clips of token stores. ``mode``: ``train`` -> ``(clip (L, H, W), label)``; ``pairs`` ->
    ``((2, L, H, W), label)`` two clips of one view; ``eval`` -> ``(index, (V*K, L, H, W), label)``."""

    def __init__(self, stores: Sequence[TokenStore], keys: list[str], *, clip_len: int, stride: int, pad_id: int,
                 mode: Literal["train", "pairs", "eval"], num_clips: int = 1, relevance_range: int | None = None,
                 legacy_first_clip: bool = False, seed: int = 0):
        self.stores, self.keys = list(stores), keys
        self.clip_len, self.stride, self.pad_id = clip_len, stride, pad_id
        self.mode, self.num_clips, self.relevance_range = mode, num_clips, relevance_range
        self.legacy_first_clip, self.seed, self.epoch = legacy_first_clip, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.keys)

    def _clip(self, tokens: np.ndarray, start: int) -> torch.Tensor:
        idx, valid = vimpac_clip_indices(tokens.shape[0], int(start), self.clip_len, self.stride)
        clip = torch.from_numpy(tokens[idx].astype(np.int64))
        clip[torch.from_numpy(~valid)] = self.pad_id
        return clip

    def __getitem__(self, i: int):
        key = self.keys[i]
        # Per-sample generator from (seed, epoch, index): the same clips whatever the workers.
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.mode == "eval":
            clips = []
            for store in self.stores:
                tokens = store[key]
                starts = vimpac_clip_starts(tokens.shape[0], self.clip_len, self.stride, mode="uniform",
                                            num_clips=self.num_clips, legacy=self.legacy_first_clip)
                clips += [self._clip(tokens, s) for s in starts]
            return i, torch.stack(clips), self.stores[0].label(key)
        store = self.stores[int(rng.integers(len(self.stores)))]
        item = store.item(key)
        tokens, n = item["tokens"], item["tokens"].shape[0]
        first = vimpac_clip_starts(n, self.clip_len, self.stride, generator=rng)[0]
        if self.mode == "train":
            return self._clip(tokens, first), item["label"]
        r = self.relevance_range
        bounds = (first - r, first + r) if r is not None else None
        second = vimpac_clip_starts(n, self.clip_len, self.stride, generator=rng, bounds=bounds)[0]
        return torch.stack([self._clip(tokens, first), self._clip(tokens, second)]), item["label"]


def _open(paths: Sequence[str], what: str) -> list[TokenStore]:
    stores = [TokenStore(p) for p in paths]
    if stores:
        grids = {(s.header.grid, s.header.vocab_size) for s in stores}
        if len(grids) > 1:
            raise ConfigError(f"data.{what}: the stores differ in token grid or vocabulary ({sorted(grids)})")
    return stores


def _keys(stores: list[TokenStore], list_file: str | None, what: str) -> list[str]:
    keys = sorted(set(stores[0].keys()).intersection(*(s.keys() for s in stores[1:])))
    wanted = _read_keys(list_file)
    if wanted is not None:
        missing = wanted - set(keys)
        if missing:
            log.warning("data.%s: %d listed videos are not in the stores (e.g. %s)", what, len(missing), min(missing))
        keys = [k for k in keys if k in wanted]
    if not keys:
        raise ConfigError(f"data.{what}: no videos")
    return keys


class VimpacDataModule(L.LightningDataModule):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        if not d.train_stores:
            raise ConfigError("data.train_stores: give at least one token store")
        self.train = _open(d.train_stores, "train_stores")
        self.val = _open(d.val_stores, "val_stores")
        self.test = _open(d.test_stores, "test_stores")
        header = self.train[0].header
        self.vocab_size, (self.height, self.width) = header.vocab_size, header.grid
        self.classes = header.classes
        self.pairs = d.objective == "pretrain"
        self.train_keys = _keys(self.train, d.train_list, "train_stores")
        if not self.pairs and d.label_fraction < 1.0:
            # A fixed, seed-determined subset of labelled videos (low-label fine-tuning).
            rng = np.random.default_rng(cfg.seed)
            n = max(1, round(len(self.train_keys) * d.label_fraction))
            self.train_keys = sorted(rng.choice(self.train_keys, n, replace=False).tolist())

    @property
    def pad_id(self) -> int:
        return self.vocab_size + 1

    def _dataset(self, stores, keys, mode: str) -> TokenClips:
        d = self.cfg.data
        return TokenClips(stores, keys, clip_len=d.clip_len, stride=d.stride, pad_id=self.pad_id, mode=mode,
                          num_clips=d.num_test_clips, relevance_range=d.relevance_range,
                          legacy_first_clip=d.legacy_first_clip, seed=self.cfg.seed)

    def train_dataset(self) -> TokenClips:
        return self._dataset(self.train, self.train_keys, "pairs" if self.pairs else "train")

    def eval_dataset(self, stage: str) -> TokenClips | None:
        stores = self.val if stage == "val" else self.test
        if not stores:
            return None
        list_file = self.cfg.data.val_list if stage == "val" else self.cfg.data.test_list
        keys = _keys(stores, list_file, f"{stage}_stores")
        if self.pairs:
            return self._dataset(stores[:1], keys, "pairs")
        return self._dataset(stores, keys, "eval")

    def train_dataloader(self) -> DataLoader:
        ds = self.train_dataset()
        if self.trainer is not None:
            ds.set_epoch(self.trainer.current_epoch)
        d = self.cfg.data
        return DeferredDataLoader(ds, batch_size=d.batch_size, shuffle=True, drop_last=len(ds) >= d.batch_size,
                          num_workers=d.num_workers, persistent_workers=False)

    def _eval_loaders(self, stage: str) -> list[DataLoader]:
        ds = self.eval_dataset(stage)
        if ds is None:
            return []
        d = self.cfg.data
        loaders = [DataLoader(ds, batch_size=d.eval_batch_size, num_workers=d.num_workers)]
        if self.pairs and stage == "val":  # the kNN monitor's bank: one centre clip per train video
            bank = self._dataset(self.train[:1], self.train_keys, "eval")
            bank.num_clips = 1
            loaders.append(DataLoader(bank, batch_size=d.eval_batch_size, num_workers=d.num_workers))
        return loaders

    def val_dataloader(self):
        return self._eval_loaders("val")

    def test_dataloader(self):
        return self._eval_loaders("test")


# ---------------------------------------------------------------------------------------------
# models


def _shape_overrides(dm: VimpacDataModule) -> dict[str, Any]:
    return {"codebook_size": dm.vocab_size, "length": dm.cfg.data.clip_len, "height": dm.height, "width": dm.width}


def _load_init(m: VimpacModelConfig, overrides: dict[str, Any]) -> VimpacForPretraining | VimpacForClassification:
    if m.init_format == "vimpac":
        model = create_recipe_model(m, overrides)
        convert_vimpac_state_dict(read_checkpoint(m.init), model, source=m.init)
        return model
    return load_pretrained(m.init).train()


def _check_vocab(cfg: VimpacConfig, dm: VimpacDataModule, source: str) -> None:
    if cfg.codebook_size != dm.vocab_size:
        raise ConfigError(f"model.init {source}: {cfg.codebook_size} codes, the token store has {dm.vocab_size}")


def build_pretrain_model(cfg: RunConfig, dm: VimpacDataModule) -> VimpacForPretraining:
    m = cfg.model
    if not 0 <= m.mask_last_frames < dm.cfg.data.clip_len:
        raise ConfigError(f"model.mask_last_frames={m.mask_last_frames}: must be at least 0 and less than "
                          f"data.clip_len={dm.cfg.data.clip_len} (some frames must stay visible)")
    if m.order_weight < 0:
        raise ConfigError(f"model.order_weight={m.order_weight}: must be at least 0")
    overrides = {**m.overrides, **_shape_overrides(dm)}
    model = _load_init(m, overrides) if m.init else create_recipe_model(m, overrides)
    if not isinstance(model, VimpacForPretraining):
        raise ConfigError(f"model.init {m.init}: not a VIMPAC pretraining model")
    _check_vocab(model.config, dm, str(m.init))
    # continuing at another clip shape (the original's --different-shape): interpolate for good
    model.backbone.resize_positional_embeddings(dm.cfg.data.clip_len, dm.height, dm.width)
    return model


def build_classifier(cfg: RunConfig, dm: VimpacDataModule) -> VimpacForClassification:
    """The fine-tuning model: a fresh zero-initialised classifier on a pretrained (or new)
    backbone whose positional tables are interpolated to the fine-tuning clip shape."""
    m = cfg.model
    num_classes = m.num_classes or (len(dm.classes) if dm.classes else None)
    if num_classes is None:
        num_classes = 1 + max(dm.train[0].label(k) for k in dm.train_keys)
    clf_overrides = {**m.overrides, **_shape_overrides(dm), "architecture": "vimpac-classifier",
                     "num_classes": num_classes}
    model = create_recipe_model(m, clf_overrides)
    if m.init:
        source = _load_init(m, {**m.overrides, **_shape_overrides(dm)}) if m.init_format == "vimpac" \
            else load_pretrained(m.init)
        _check_vocab(source.config, dm, m.init)
        if source.config.hidden_size != model.config.hidden_size or source.config.layout != model.config.layout:
            model = create_recipe_model(m, {**clf_overrides, **_architecture_of(source.config)})
        backbone = source.backbone
        backbone.resize_positional_embeddings(dm.cfg.data.clip_len, dm.height, dm.width)
        load_strict(model.backbone, backbone.state_dict(), source=f"model.init {m.init} (backbone)")
        if m.reinit_temporal_positions:
            redraw_temporal_positions(model.backbone, torch.Generator().manual_seed(cfg.seed))
    return model


def redraw_temporal_positions(backbone: VimpacBackbone, generator: torch.Generator) -> None:
    """Draw the temporal position table afresh, at the initial ratio to the token embeddings.

    Fine-tuning clips often space their frames differently from the pretraining clips (the
    synthetic demo: 0.2 s versus 0.8 s), so the pretrained table describes the wrong spacing.
    It also breaks a symmetry: in a world where a video and its time reverse are equally likely,
    a time-symmetric pretraining loss leaves the backbone almost blind to frame order, and the
    order-blind point is a fixed point of fine-tuning as well (docs/vimpac.md); a fresh table at
    the scale of the trained embeddings gives it the asymmetry a freshly initialised backbone has.
    """
    table = backbone.pos_embed.temporal
    scale = backbone.token_embedding.weight.detach().pow(2).mean().sqrt() / backbone.pos_embed.TABLE_DIVISOR
    with torch.no_grad():
        table.copy_(torch.randn(table.shape, generator=generator) * scale)


def _architecture_of(cfg: VimpacConfig) -> dict[str, Any]:
    """The backbone-defining keys of a pretrained model (fine-tuning keeps them, like the
    original restoring them from ``args.pickle``)."""
    keys = ("hidden_size", "num_layers", "num_heads", "attention_size", "mlp_size", "layout", "pre_norm",
            "layer_norm_eps")
    return {k: getattr(cfg, k) for k in keys}


# ---------------------------------------------------------------------------------------------
# modules


def knn_predict(feature: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.07) -> torch.Tensor:
    """Weighted kNN class scores (N, C): cosine similarity to the bank, the top ``k``
    neighbours vote with weight ``exp(sim / temperature)`` (the original's kNN monitor)."""
    sim = F.normalize(feature, dim=-1) @ F.normalize(bank, dim=-1).t()
    k = min(k, bank.shape[0])
    weight, idx = sim.topk(k, dim=-1)
    votes = F.one_hot(bank_labels[idx], num_classes).to(sim.dtype) * (weight / temperature).exp()[..., None]
    return votes.sum(1)


class VimpacPretrain(RecipeModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.model: VimpacForPretraining | None = None
        self._eval: dict[str, EvaluationBuffer] = {}

    def setup(self, stage: str) -> None:
        if self.model is None:
            self.model = build_pretrain_model(self.cfg, self.trainer.datamodule)
        if stage == "fit":
            export_frame_tokenizer(self.cfg)  # a wrong data.frame_tokenizer fails now, not at the export

    def pretraining_mask(self, pad: torch.Tensor) -> torch.Tensor:
        """Positions to predict for clips ``(N, L, H, W)`` whose PAD positions are ``pad``."""
        m = self.cfg.model
        if m.mask_prob is not None:
            mask = iid_mask(pad.shape, m.mask_prob, pad=pad)
        else:
            mask = block_mask(pad.shape, m.mask_blocks, pad=pad)
        if m.mask_last_frames:
            # Predicting the end of a clip from its start needs the direction of time; VIMPAC's
            # blocks are symmetric in time and can be filled in from both sides (docs/vimpac.md).
            mask[:, -m.mask_last_frames:] |= ~pad[:, -m.mask_last_frames:]
        return mask

    def losses(self, pairs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masked-token and contrastive losses of a batch of pairs ``(B, 2, L, H, W)``."""
        m, mc = self.cfg.model, self.model.config
        b = pairs.shape[0]
        codes = pairs.transpose(0, 1).flatten(0, 1)  # rows 0..B-1 first clips, B..2B-1 second
        pad = codes == mc.pad_token_id
        mask = self.pretraining_mask(pad)
        inputs, labels = apply_mask(codes, mask, mc.mask_token_id, vocab_size=mc.codebook_size,
                                    replace=tuple(m.mask_replace))
        if m.order_weight > 0:
            # The first clips backwards, masked alike (the masks tell nothing apart), forwarded
            # with the pairs (one batch for the projection head's BatchNorm), no tokens predicted.
            inputs = torch.cat([inputs, inputs[:b].flip(1)])
            mask = torch.cat([mask, torch.zeros_like(mask[:b])])
        out = self.model(inputs, mlm_mask=mask)
        mask = mask[:2 * b]
        targets = labels[mask]
        mlm = F.cross_entropy(out["mlm_logits"], targets) if targets.numel() else out["mlm_logits"].sum() * 0
        acc = (out["mlm_logits"].argmax(-1) == targets).float().mean() if targets.numel() else mlm.detach() * 0
        projection = out["projection"]
        nce = vimpac_nce_loss(projection[:b], projection[b:2 * b], m.temperature)
        loss = m.mlm_weight * mlm + m.nce_weight * nce
        values = {"mlm": mlm.detach(), "mlm_acc": acc * 100, "nce": nce.detach(),
                  "mask_ratio": mask.float().sum() / (~pad).float().sum().clamp(min=1) * 100}
        if m.order_weight > 0:
            order, order_acc = arrow_of_time_loss(*projection.split(b), m.temperature)
            loss = loss + m.order_weight * order
            values.update(order=order.detach(), order_acc=order_acc * 100)
        return {"loss": loss, **values}

    def training_step(self, batch, batch_idx):
        pairs, _ = batch
        values = self.losses(pairs)
        for name, value in values.items():
            self.log(f"train/{name}", value, prog_bar=name in ("loss", "mlm_acc"), batch_size=pairs.shape[0])
        return values["loss"]

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        if loader is not None and hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(self.current_epoch)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if dataloader_idx == 0:
            pairs, labels = batch
            values = self.losses(pairs)
            for name in ("loss", "mlm", "mlm_acc", "nce", "order", "order_acc"):
                if name in values:
                    # batch-level losses (in-batch negatives, random masks): averaged over processes
                    self.log(f"val/{name}", values[name], batch_size=pairs.shape[0], add_dataloader_idx=False,
                             sync_dist=True)
            if (labels >= 0).all():
                cls, _ = self.model.backbone(pairs[:, 0])
                index = batch_indices(self.trainer, "val", batch_idx, dataloader_idx)
                self._eval.setdefault("queries", EvaluationBuffer()).add(index, cls=cls.float(), label=labels)
        else:
            index, views, labels = batch
            cls, _ = self.model.backbone(views[:, 0])
            self._eval.setdefault("bank", EvaluationBuffer()).add(index, cls=cls.float(), label=labels)

    def on_validation_epoch_end(self) -> None:
        queries, bank = gather_stage(self._eval, "queries"), gather_stage(self._eval, "bank")
        if not queries or not bank:
            return
        q, ql, f, fl = queries["cls"], queries["label"], bank["cls"], bank["label"]
        num_classes = int(max(fl.max(), ql.max())) + 1
        scores = knn_predict(q, f, fl, num_classes, self.cfg.model.knn_k, self.cfg.model.knn_temperature)
        log_metrics(self, {"val/knn_top1": topk_accuracy(scores, ql, 1)})

    def load_state_dict(self, state_dict, *args, **kwargs):
        # `videolang export` loads a checkpoint into a fresh module, which setup() never built
        if self.model is None:
            self.model = build_pretrain_model(self.cfg, VimpacDataModule(self.cfg))
        return super().load_state_dict(state_dict, *args, **kwargs)

    def export_pretrained(self, out_dir) -> Path:
        """A model folder of clip features (the kNN monitor's: CLS of the centre clip of the
        first training view), loadable as ``model.init`` and by ``videolang.load``."""
        d = self.cfg.data
        return export_model_folder(self.model, self.cfg, out_dir, task="features", stores=d.train_stores[:1],
                                   num_clips=1)


class VimpacFinetune(StagedEvalModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.model: VimpacForClassification | None = None
        self._eval: dict[str, EvaluationBuffer] = {}

    def setup(self, stage: str) -> None:
        if self.model is None:
            self.model = build_classifier(self.cfg, self.trainer.datamodule)
        if stage == "fit":
            export_frame_tokenizer(self.cfg)  # a wrong data.frame_tokenizer fails now, not at the export

    def training_step(self, batch, batch_idx):
        clips, labels = batch
        logits = self.model(clips)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.model.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        self.log("train/acc", (logits.argmax(-1) == labels).float().mean() * 100, batch_size=len(labels))
        return loss

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        if loader is not None and hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(self.current_epoch)

    def _eval_step(self, stage: str, batch) -> None:
        index, views, labels = batch
        b, v = views.shape[:2]
        logits = self.model(views.flatten(0, 1)).float().view(b, v, -1)
        probs = logits.softmax(-1).mean(1)  # softmax averaged over spatial views x temporal clips
        loss = F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(v), reduction="none").view(b, v)
        self._eval.setdefault(stage, EvaluationBuffer()).add(index, probs=probs, labels=labels, loss=loss.mean(1))

    def _eval_end(self, stage: str) -> None:
        outputs = gather_stage(self._eval, stage)
        if not outputs:
            return
        probs, labels = outputs["probs"], outputs["labels"]
        top = topk_accuracy(probs, labels, [1, 5] if probs.shape[1] >= 5 else [1])
        chance = torch.bincount(labels, minlength=probs.shape[1]).max().item() / len(labels) * 100
        log_metrics(self, {f"{stage}/top{k}": value for k, value in top.items()})
        log_metrics(self, {f"{stage}/loss": float(outputs["loss"].mean()),
                           f"{stage}/chance": chance})  # chance: the majority-class accuracy

    def load_state_dict(self, state_dict, *args, **kwargs):
        # `videolang export` loads a checkpoint into a fresh module, which setup() never built
        if self.model is None:
            self.model = build_classifier(self.cfg, VimpacDataModule(self.cfg))
        return super().load_state_dict(state_dict, *args, **kwargs)

    def export_pretrained(self, out_dir) -> Path:
        """A self-contained model folder: weights, frame tokenizer, class names and the test
        protocol (the test views, ``num_test_clips`` clips), so ``videolang.load`` answers alike."""
        d = self.cfg.data
        return export_model_folder(self.model, self.cfg, out_dir, task="classification",
                                   stores=d.test_stores or d.val_stores or d.train_stores[:1],
                                   num_clips=d.num_test_clips)


# ---------------------------------------------------------------------------------------------
# export


def export_frame_tokenizer(cfg: RunConfig):
    """``data.frame_tokenizer`` loaded and checked against the fingerprint every store of the run
    records (``None`` when it is not set)."""
    from videolang.models.frame_tokenizers import load_frame_tokenizer

    source = cfg.data.frame_tokenizer
    if source is None:
        return None
    tokenizer = load_frame_tokenizer(source)
    fingerprint = tokenizer.fingerprint()
    d = cfg.data
    for path in dict.fromkeys([*d.train_stores, *d.val_stores, *d.test_stores]):
        recorded = TokenStore(path).header.tokenizer_hash
        if recorded is None:
            log.warning("%s records no tokenizer fingerprint (an original LMDB): data.frame_tokenizer %s is "
                        "assumed to be the one that made it", path, source)
        elif recorded != fingerprint:
            raise ConfigError(f"data.frame_tokenizer {source}: not the tokenizer of {path} (its fingerprint is "
                              f"{fingerprint}, the store records {recorded})")
    return tokenizer


def export_model_folder(model: torch.nn.Module, cfg: RunConfig, out_dir: str | Path, *, task: str,
                        stores: Sequence[str], num_clips: int) -> Path:
    """Write ``model`` with the views of ``stores``, the run's clips, class names and frame
    tokenizer (:class:`~videolang.pipelines.vimpac.VIMPACSpec`)."""
    from videolang.engine.export import export_provenance
    from videolang.pipelines.folder import write_model_folder
    from videolang.pipelines.vimpac import (
        ClipSpec,
        VIMPACSpec,
        frame_tokenizer_files,
        view_from_header,
    )

    d = cfg.data
    tokenizer = export_frame_tokenizer(cfg)
    section, extra = frame_tokenizer_files(tokenizer) if tokenizer is not None else (None, None)
    if tokenizer is None:
        log.warning("no data.frame_tokenizer: the model folder takes token codes only (set it to the tokenizer "
                    "that made the stores to classify raw videos)")
    labels = None
    if task == "classification":
        classes, n = TokenStore(d.train_stores[0]).header.classes, model.config.num_classes
        labels = list(classes) if classes and len(classes) == n else [str(i) for i in range(n)]
    spec = VIMPACSpec(task=task, tokenizer=section, views=[view_from_header(TokenStore(p).header) for p in stores],
                      clips=ClipSpec(clip_len=d.clip_len, stride=d.stride, num_clips=num_clips,
                                     legacy_first_clip=d.legacy_first_clip),
                      labels=labels, provenance=export_provenance(cfg))
    return write_model_folder(out_dir, model, spec, extra=extra)


register_recipe("vimpac.pretrain", VimpacPretrain, VimpacDataModule, VimpacModelConfig, VimpacPretrainDataConfig)
register_recipe("vimpac.finetune", VimpacFinetune, VimpacDataModule, VimpacModelConfig, VimpacFinetuneDataConfig)


def split_averaged(config: Any, split_ids: Sequence[int] = (1, 2, 3), overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Fine-tune and test once per split (UCF101 / HMDB51 protocol) and average ``test/top1``.

    ``split_<n>`` in ``data.train_list`` / ``val_list`` / ``test_list`` (the UCF101 / HMDB51
    file names, e.g. ``ucf101_train_split_1_videos.txt``) becomes ``split_<id>``; each run is
    named ``<name>_split<id>``. Returns ``{"per_split": {id: top1}, "mean_top1": float}``."""
    from videolang.engine import config_to_dict, fit, load_run_config, test

    per_split = {}
    base = config_to_dict(load_run_config(config, overrides)[0])
    for sid in split_ids:
        cfg = json.loads(json.dumps(base))
        for key in ("train_list", "val_list", "test_list"):
            if cfg["data"].get(key):
                cfg["data"][key] = re.sub(r"split_\d+", f"split_{sid}", cfg["data"][key])
        cfg["name"] = f"{cfg.get('name') or cfg['recipe']}_split{sid}"
        result = fit(cfg)
        tested = test(cfg, resume=result.run_dir / "checkpoints" / "last.ckpt")
        per_split[sid] = float(tested.metrics["test"]["test/top1"])
    return {"per_split": per_split, "mean_top1": float(np.mean(list(per_split.values())))}
