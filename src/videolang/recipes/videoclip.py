"""VideoCLIP recipes: ``videoclip.pretrain`` (contrastive pretraining on timestamped captions
over per-second features, retrieval-augmented batches) and ``videoclip.retrieval`` (fine-tuning
with the text-to-video loss, or zero-shot evaluation of ``model.init``). Their data is
:class:`videolang.data.videoclip.VideoCLIPSplits`; logged metric names and protocols:
docs/videoclip.md ("Implementation notes").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from videolang.data.datasets import SkippedSample
from videolang.data.stores import FeatureStore, feature_rows_per_second
from videolang.data.videoclip import (
    PretrainPairs,
    VideoCLIPDataConfig,
    VideoCLIPPretrainDataConfig,
    VideoCLIPRetrievalDataConfig,
    VideoCLIPSplits,
    all_skipped,
    collate_pairs,
)
from videolang.engine import RunConfig, StagedEvalModule, register_recipe
from videolang.engine.evaluation import EvaluationBuffer, gather_stage, log_metrics
from videolang.errors import ConfigError
from videolang.losses import t2v_loss, v2t_loss, videoclip_loss
from videolang.metrics import retrieval_metrics
from videolang.models import create_model, load_pretrained
from videolang.models.convert.videoclip import convert_mmpt_state_dict
from videolang.models.videoclip import VideoCLIP
from videolang.models.weights import read_checkpoint


@dataclass
class MMPTModelConfig:
    """The ``model.*`` keys of every MMPT recipe (VideoCLIP and VLM): which model, from where."""

    name: str = "videoclip-minilm"  # a registered model (videolang.list_models())
    feature_dim: int | None = None  # None: the feature store's dimension
    init: str | None = None  # a saved model folder (run export) or an original MMPT checkpoint
    init_format: Literal["videolang", "mmpt"] = "videolang"


@dataclass
class VideoCLIPModelConfig(MMPTModelConfig):
    """``model.*`` of the VideoCLIP recipes."""

    freeze_text: bool = False  # a frozen text tower runs in eval mode, its outputs cached
    loss: Literal["symmetric", "t2v", "v2t"] = "symmetric"
    normalize: bool = False  # cosine similarity (the original: raw dot product)
    temperature: float = 1.0  # the original: 1
    learn_temperature: bool = False
    gather_negatives: bool = False  # negatives from every rank (the original: local only)


def build_videoclip(m: VideoCLIPModelConfig, feature_dim: int, max_video_len: int) -> VideoCLIP:
    """The model of a run: from a saved folder / original checkpoint, or a registered config.

    Its ``max_video_len`` is the data's: the model pads every window to it (the video [SEP]'s
    position), so training, evaluation and the exported model agree.
    """
    if m.init and m.init_format == "videolang":
        model = load_pretrained(m.init)
        if model.config.feature_dim != feature_dim:
            raise ConfigError(f"model.init {m.init}: expects {model.config.feature_dim}-d features, "
                              f"the feature store has {feature_dim}")
        model.config.max_video_len = max_video_len
        return model.train()
    model = create_model(m.name, feature_dim=feature_dim, max_video_len=max_video_len)
    if m.init:  # original MMPT checkpoint
        convert_mmpt_state_dict(read_checkpoint(m.init), model, source=m.init)
    return model


class VideoCLIPModule(StagedEvalModule):
    """Shared by both recipes: the model, the loss, retrieval evaluation."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        m: VideoCLIPModelConfig = cfg.model
        dim = m.feature_dim or FeatureStore(cfg.data.features).dim
        self.model = self.build_model(m, dim)
        if getattr(m, "freeze_text", False):
            self.model.text_encoder.requires_grad_(False)
        self.logit_scale = (
            nn.Parameter(torch.tensor(math.log(1.0 / m.temperature))) if getattr(m, "learn_temperature", False) else None
        )
        self._eval: dict[str, EvaluationBuffer] = {}
        # Frozen text tower: pooled outputs by token sequence. Each caption span is encoded
        # once per run instead of once per step (the tower is deterministic in eval mode).
        self._text_cache: dict[tuple[int, ...], torch.Tensor] = {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The cached rows were computed in batches of other sizes than a resumed run would use
        # (float sums differ in the last bits): a resume must continue with the same rows.
        super().on_save_checkpoint(checkpoint)
        if self._text_cache:
            keys = list(self._text_cache)
            checkpoint["videolang_text_cache"] = {"keys": [list(k) for k in keys],
                                                  "rows": torch.stack([self._text_cache[k] for k in keys])}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cache = checkpoint.get("videolang_text_cache")
        if cache:
            self._text_cache = {tuple(k): row for k, row in zip(cache["keys"], cache["rows"], strict=True)}

    def build_model(self, m: Any, feature_dim: int) -> nn.Module:
        """The model of the run (VLM's recipes build theirs here)."""
        return build_videoclip(m, feature_dim, self.cfg.data.max_video_len)

    def encode_pairs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Video and text embeddings of a batch; the text side from the cache when frozen."""
        video = self.model.encode_video(batch["vfeats"], batch["vmask"])
        if not getattr(self.cfg.model, "freeze_text", False):
            return video, self.model.encode_text(batch["caps"], batch["cmask"])
        pooled = self._cached_text(batch["caps"], batch["cmask"])
        proj = self.model.text_proj
        return video, proj(pooled) if proj is not None else pooled

    @torch.no_grad()
    def _cached_text(self, caps: torch.Tensor, cmask: torch.Tensor) -> torch.Tensor:
        keys = [tuple(row[m].tolist()) for row, m in zip(caps, cmask, strict=True)]
        missing = [i for i, k in enumerate(keys) if k not in self._text_cache]
        if missing:
            tower = self.model.text_encoder
            was_training = tower.training
            tower.eval()
            pooled = self.model.pool_text(caps[missing], cmask[missing])
            tower.train(was_training)
            for i, row in zip(missing, pooled, strict=True):
                self._text_cache[keys[i]] = row
        return torch.stack([self._text_cache[k] for k in keys])

    def _train_loader(self) -> DataLoader:
        """The loader Lightning actually iterates (under DDP it re-creates ours with an
        injected sampler, so the datamodule's own objects may not be the ones in use)."""
        loader = self.trainer.train_dataloader
        if not isinstance(loader, DataLoader):
            raise TypeError(f"expected one training DataLoader, got {type(loader).__name__}")
        return loader

    def _loss(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        m: VideoCLIPModelConfig = self.cfg.model
        options: dict[str, Any] = {"normalize": m.normalize, "gather": m.gather_negatives}
        if self.logit_scale is not None:
            options["logit_scale"] = self.logit_scale.clamp(max=math.log(100.0)).exp()
        else:
            options["temperature"] = m.temperature
        fn = {"symmetric": videoclip_loss, "t2v": t2v_loss, "v2t": v2t_loss}[m.loss]
        return fn(video, text, **options)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if all_skipped(batch):
            return None  # the DataGuard counted the skipped items
        video, text = self.encode_pairs(batch)
        loss = self._loss(video, text)
        self.log("train/loss", loss, prog_bar=True, batch_size=video.shape[0])
        return loss

    # -- retrieval evaluation --

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        if all_skipped(batch):
            return
        video = self.model.encode_video(batch["vfeats"], batch["vmask"])
        text = self.model.encode_text(batch["caps"], batch["cmask"])
        self._eval.setdefault(stage, EvaluationBuffer()).add(batch["index"], video=video, text=text)

    def _eval_end(self, stage: str) -> None:
        outputs = gather_stage(self._eval, stage)
        if not outputs:
            return
        video, text = outputs["video"], outputs["text"]
        if getattr(self.cfg.model, "normalize", False):
            video, text = nn.functional.normalize(video, dim=-1), nn.functional.normalize(text, dim=-1)
        metrics = retrieval_metrics(text.float() @ video.float().t())
        protocol = self.trainer.datamodule.splits.protocol(stage)
        log_metrics(self, {**{f"{stage}/{protocol}/{name}": v for name, v in metrics.items()},
                           f"{stage}/R1": metrics["R1"], f"{stage}/chance_R1": 100.0 / len(text)})

    def export_pretrained(self, out_dir) -> Path:
        """A self-contained model folder: weights, tokenizer, feature backbone, and how the run
        evaluated (text layout, window, similarity), so that ``videolang.load`` answers alike."""
        from videolang.data.text import load_tokenizer
        from videolang.engine.export import export_provenance
        from videolang.pipelines.features import backbone_from_store
        from videolang.pipelines.folder import (
            SimilaritySpec,
            TextSpec,
            VideoFeaturesSpec,
            write_model_folder,
        )
        from videolang.pipelines.videoclip import VideoCLIPSpec

        d: VideoCLIPDataConfig = self.cfg.data
        m = self.cfg.model
        backbone, backbone_spec = backbone_from_store(d.features)
        spec = VideoCLIPSpec(
            text=TextSpec(max_len=d.max_text_len, layout="mmpt" if d.mmpt_text_layout else "cls_words_sep"),
            video=VideoFeaturesSpec(backbone=backbone_spec, feature_rate=feature_rows_per_second(d.features, d.feature_rate),
                                    max_len=d.max_video_len),
            similarity=SimilaritySpec(metric="cosine" if m.normalize else "dot", temperature=self.temperature()),
            provenance=export_provenance(self.cfg),
        )
        return write_model_folder(out_dir, self.model, spec, tokenizer=load_tokenizer(d.tokenizer), backbone=backbone)

    def temperature(self) -> float:
        """The softmax temperature the loss used (learned: ``1 / exp(logit_scale)``, clamped)."""
        if self.logit_scale is not None:
            return float(1.0 / self.logit_scale.detach().clamp(max=math.log(100.0)).exp())
        return float(self.cfg.model.temperature)


class VideoCLIPPretrain(VideoCLIPModule):
    """Pretraining with retrieval-augmented batches."""

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        d: VideoCLIPDataConfig = self.cfg.data
        if d.retrieval and self.current_epoch >= d.retrieval_start_epoch:
            loader = self._train_loader()
            loader.batch_sampler.set_embeddings(self.video_embeddings(loader.dataset))

    @torch.no_grad()
    def video_embeddings(self, ds: PretrainPairs) -> torch.Tensor:
        """z_V per training video: the mean over exact-aligned clips of (video + text) / 2,
        computed by every rank on its share of videos and gathered, so all ranks cluster the
        same, complete set (the original clustered each rank's shard separately)."""
        d: VideoCLIPDataConfig = self.cfg.data
        probe = PretrainPairs(
            ds.features, ds.captions, ds.video_ids, ds.layout, pairs_per_video=d.retrieval_pairs_per_video,
            max_video_len=d.max_video_len, overlapped=False, seed=self.cfg.seed + 1,
        )
        probe.set_epoch(self.current_epoch)
        rank, world = self.global_rank, self.trainer.world_size
        mine = list(range(rank, len(probe), world))
        was_training = self.model.training
        self.model.eval()
        out = torch.zeros(len(probe), self.model.config.projection_dim or self.model.config.text.hidden_size,
                          device=self.device)
        for start in range(0, len(mine), 64):
            items = [(i, probe[i]) for i in mine[start : start + 64]]
            chunk = [i for i, item in items if not isinstance(item, SkippedSample)]  # unreadable: a zero row
            if not chunk:
                continue
            batch = collate_pairs([item for _, item in items])
            v, t = self.encode_pairs({k: v.to(self.device) for k, v in batch.items() if k != "skipped"})
            z = ((v + t) / 2).view(len(chunk), d.retrieval_pairs_per_video, -1).mean(1)
            out[chunk] = z
        if world > 1:
            out = self.all_gather(out).sum(0)  # each row was filled by exactly one rank
        self.model.train(was_training)
        return out.cpu()


register_recipe("videoclip.pretrain", VideoCLIPPretrain, VideoCLIPSplits, VideoCLIPModelConfig,
                VideoCLIPPretrainDataConfig)
register_recipe("videoclip.retrieval", VideoCLIPModule, VideoCLIPSplits, VideoCLIPModelConfig,
                VideoCLIPRetrievalDataConfig)
