"""VIMPAC recipes on token stores: ``vimpac.pretrain`` (block-masked token prediction plus the
long-range contrastive loss between two clips of each video) and ``vimpac.finetune`` (action
recognition, multi-view multi-clip evaluation). Where each piece lives: docs/vimpac.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from videolang.data.vimpac import VimpacFinetuneDataConfig, VimpacPretrainDataConfig, VimpacSplits
from videolang.engine import (
    RecipeModule,
    RunConfig,
    StagedEvalModule,
    create_recipe_model,
    register_recipe,
)
from videolang.engine.evaluation import EvaluationBuffer, gather_stage, log_metrics
from videolang.engine.export import export_provenance
from videolang.errors import ConfigError
from videolang.losses.vimpac import arrow_of_time_loss, vimpac_nce_loss
from videolang.masking import apply_mask, block_mask, iid_mask
from videolang.metrics import knn_predict, topk_accuracy
from videolang.models import load_pretrained
from videolang.models.convert.vimpac import convert_vimpac_state_dict
from videolang.models.vimpac import (
    BACKBONE_ARCHITECTURE_KEYS,
    VimpacForClassification,
    VimpacForPretraining,
)
from videolang.models.weights import load_strict, read_checkpoint
from videolang.pipelines.vimpac import stores_frame_tokenizer, write_vimpac_folder

__all__ = ["VimpacFinetune", "VimpacModelConfig", "VimpacPretrain", "build_classifier", "build_pretrain_model"]


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
    # re-draw the loaded backbone's temporal position table (VimpacBackbone.redraw_temporal_positions);
    # without model.init it changes nothing, the table is fresh anyway
    reinit_temporal_positions: bool = False


def _load_init(m: VimpacModelConfig, overrides: dict[str, Any]) -> VimpacForPretraining | VimpacForClassification:
    """The model of ``model.init``; its codebook must be the stores' (``overrides``)."""
    if m.init_format == "vimpac":
        model = create_recipe_model(m, overrides)
        convert_vimpac_state_dict(read_checkpoint(m.init), model, source=m.init)
    else:
        model = load_pretrained(m.init).train()
    codes, vocab_size = model.config.codebook_size, overrides["codebook_size"]
    if codes != vocab_size:
        raise ConfigError(f"model.init {m.init}: {codes} codes, the token store has {vocab_size}")
    return model


def build_pretrain_model(cfg: RunConfig, splits: VimpacSplits) -> VimpacForPretraining:
    """The pretraining model, fresh or from ``model.init``, at the stores' clip shape."""
    m, clip_len = cfg.model, cfg.data.clip_len
    if not 0 <= m.mask_last_frames < clip_len:
        raise ConfigError(f"model.mask_last_frames={m.mask_last_frames}: must be at least 0 and less than "
                          f"data.clip_len={clip_len} (some frames must stay visible)")
    if m.order_weight < 0:
        raise ConfigError(f"model.order_weight={m.order_weight}: must be at least 0")
    overrides = {**m.overrides, **splits.model_shape()}
    model = _load_init(m, overrides) if m.init else create_recipe_model(m, overrides)
    if not isinstance(model, VimpacForPretraining):
        raise ConfigError(f"model.init {m.init}: not a VIMPAC pretraining model")
    # continuing at another clip shape (the original's --different-shape): interpolate for good
    model.backbone.resize_positional_embeddings(clip_len, splits.height, splits.width)
    return model


def build_classifier(cfg: RunConfig, splits: VimpacSplits) -> VimpacForClassification:
    """The fine-tuning model: a fresh zero-initialised classifier on a pretrained (or new)
    backbone whose positional tables are interpolated to the fine-tuning clip shape."""
    m, shape = cfg.model, splits.model_shape()
    clf_overrides = {**m.overrides, **shape, "architecture": "vimpac-classifier",
                     "num_classes": m.num_classes or splits.num_classes()}
    model = create_recipe_model(m, clf_overrides)
    if m.init:
        source = _load_init(m, {**m.overrides, **shape})
        if source.config.hidden_size != model.config.hidden_size or source.config.layout != model.config.layout:
            kept = {k: getattr(source.config, k) for k in BACKBONE_ARCHITECTURE_KEYS}
            model = create_recipe_model(m, {**clf_overrides, **kept})
        source.backbone.resize_positional_embeddings(cfg.data.clip_len, splits.height, splits.width)
        load_strict(model.backbone, source.backbone.state_dict(), source=f"model.init {m.init} (backbone)")
        if m.reinit_temporal_positions:
            model.backbone.redraw_temporal_positions(torch.Generator().manual_seed(cfg.seed))
    return model


class _TokenModelModule(RecipeModule):
    """Both VIMPAC modules: ``build_model`` on the run's token stores at setup (or when a
    checkpoint is loaded into a fresh module), and their export as a model folder."""

    build_model: Callable[[RunConfig, VimpacSplits], torch.nn.Module]

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.model: VimpacForPretraining | VimpacForClassification | None = None
        self._eval: dict[str, EvaluationBuffer] = {}

    def setup(self, stage: str) -> None:
        if self.model is None:
            self.model = self.build_model(self.cfg, self.trainer.datamodule.splits)
        if stage == "fit":
            stores_frame_tokenizer(self.cfg.data)  # a wrong data.frame_tokenizer fails now, not at the export

    def load_state_dict(self, state_dict, *args, **kwargs):
        # `videolang export` loads a checkpoint into a fresh module, which setup() never built
        if self.model is None:
            self.model = self.build_model(self.cfg, VimpacSplits(self.cfg.data, self.cfg.seed))
        return super().load_state_dict(state_dict, *args, **kwargs)

    def _export(self, out_dir: str | Path, task: str, stores: Sequence[str], num_clips: int) -> Path:
        """The model as a folder with the views of ``stores`` and ``num_clips`` clips per view."""
        return write_vimpac_folder(out_dir, self.model, self.cfg.data, task=task, stores=stores, num_clips=num_clips,
                                   provenance=export_provenance(self.cfg))


class VimpacPretrain(_TokenModelModule):
    build_model = staticmethod(build_pretrain_model)

    def pretraining_mask(self, pad: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Positions to predict for clips ``(N, L, H, W)`` whose PAD positions are ``pad``."""
        m = self.cfg.model
        if m.mask_prob is not None:
            mask = iid_mask(pad.shape, m.mask_prob, generator=generator, pad=pad)
        else:
            mask = block_mask(pad.shape, m.mask_blocks, generator=generator, pad=pad)
        if m.mask_last_frames:
            # Predicting the end of a clip from its start needs the direction of time; VIMPAC's
            # blocks are symmetric in time and can be filled in from both sides (docs/vimpac.md).
            mask[:, -m.mask_last_frames:] |= ~pad[:, -m.mask_last_frames:]
        return mask

    def losses(self, pairs: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Masked-token and contrastive losses of a batch of pairs ``(B, 2, L, H, W)``; masks
        drawn from ``generator`` (default: the global RNG, whose state checkpoints hold)."""
        m, mc = self.cfg.model, self.model.config
        b = pairs.shape[0]
        codes = pairs.transpose(0, 1).flatten(0, 1)  # rows 0..B-1 first clips, B..2B-1 second
        pad = codes == mc.pad_token_id
        mask = self.pretraining_mask(pad, generator)
        inputs, labels = apply_mask(codes, mask, mc.mask_token_id, vocab_size=mc.codebook_size,
                                    replace=tuple(m.mask_replace), generator=generator)
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
        if "pairs" not in batch:
            return None  # every video of the batch was unreadable (counted by the engine)
        pairs = batch["pairs"]
        values = self.losses(pairs)
        for name, value in values.items():
            self.log(f"train/{name}", value, prog_bar=name in ("loss", "mlm_acc"), batch_size=pairs.shape[0])
        return values["loss"]

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if dataloader_idx == 0:
            if "pairs" not in batch:
                return
            pairs, labels = batch["pairs"], batch["label"]
            # Validation masks come from their own generator, seeded by the batch: drawn from the
            # global RNG they would shift the next epoch's training draws by whether validation
            # ran, and a run resumed from the checkpoint of an epoch's last batch skips the
            # validation that an uninterrupted run ran there (Lightning), so it trained otherwise.
            g = torch.Generator(device=pairs.device).manual_seed(self.cfg.seed * 1_000_003 + batch_idx)
            values = self.losses(pairs, g)
            for name in ("loss", "mlm", "mlm_acc", "nce", "order", "order_acc"):
                if name in values:
                    # batch-level losses (in-batch negatives, random masks): averaged over processes
                    self.log(f"val/{name}", values[name], batch_size=pairs.shape[0], add_dataloader_idx=False,
                             sync_dist=True)
            if (labels >= 0).all():
                cls, _ = self.model.backbone(pairs[:, 0])
                self._eval.setdefault("queries", EvaluationBuffer()).add(batch["index"], cls=cls.float(),
                                                                         label=labels)
        else:
            if "views" not in batch:
                return
            index, views, labels = batch["index"], batch["views"], batch["label"]
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

    def export_pretrained(self, out_dir) -> Path:
        """A model folder of clip features (the kNN monitor's: CLS of the centre clip of the
        first training view), loadable as ``model.init`` and by ``videolang.load``."""
        return self._export(out_dir, "features", self.cfg.data.train_stores[:1], num_clips=1)


class VimpacFinetune(_TokenModelModule, StagedEvalModule):
    build_model = staticmethod(build_classifier)

    def training_step(self, batch, batch_idx):
        if "clip" not in batch:
            return None  # every video of the batch was unreadable (counted by the engine)
        clips, labels = batch["clip"], batch["label"]
        logits = self.model(clips)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.model.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        self.log("train/acc", (logits.argmax(-1) == labels).float().mean() * 100, batch_size=len(labels))
        return loss

    def _eval_step(self, stage: str, batch) -> None:
        if "views" not in batch:
            return
        index, views, labels = batch["index"], batch["views"], batch["label"]
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

    def export_pretrained(self, out_dir) -> Path:
        """A self-contained model folder: weights, frame tokenizer, class names and the test
        protocol (the test views, ``num_test_clips`` clips), so ``videolang.load`` answers alike."""
        d = self.cfg.data
        return self._export(out_dir, "classification", d.test_stores or d.val_stores or d.train_stores[:1],
                            num_clips=d.num_test_clips)


register_recipe("vimpac.pretrain", VimpacPretrain, VimpacSplits, VimpacModelConfig, VimpacPretrainDataConfig)
register_recipe("vimpac.finetune", VimpacFinetune, VimpacSplits, VimpacModelConfig, VimpacFinetuneDataConfig)

