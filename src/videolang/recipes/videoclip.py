"""VideoCLIP recipes: ``videoclip.pretrain`` (contrastive pretraining on timestamped captions
over per-second features, retrieval-augmented batches) and ``videoclip.retrieval`` (fine-tuning
with the text-to-video loss, or zero-shot evaluation of ``model.init``). Data, logged metric
names and protocols: docs/videoclip.md ("Implementation notes").
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from videolang.data.datasets import DeferredDataLoader
from videolang.data.stores import FeatureStore
from videolang.data.videoclip import (
    EvalFormat,
    FineTunePairs,
    PretrainPairs,
    RetrievalBatchSampler,
    TextLayout,
    VideoTextPairs,
    collate_pairs,
    load_timestamped_captions,
    protocol_name,
    read_eval_pairs,
    read_video_list,
    scale_pairs,
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

log = logging.getLogger(__name__)

@dataclass
class VideoCLIPModelConfig:
    """``model.*`` of the VideoCLIP recipes."""

    name: str = "videoclip-minilm"  # a registered model (videolang.list_models())
    feature_dim: int | None = None  # None: the feature store's dimension
    init: str | None = None  # a saved model folder (run export) or an original MMPT checkpoint
    init_format: Literal["videolang", "mmpt"] = "videolang"
    freeze_text: bool = False  # a frozen text tower runs in eval mode, its outputs cached
    loss: Literal["symmetric", "t2v", "v2t"] = "symmetric"
    normalize: bool = False  # cosine similarity (the original: raw dot product)
    temperature: float = 1.0  # the original: 1
    learn_temperature: bool = False
    gather_negatives: bool = False  # negatives from every rank (the original: local only)


@dataclass
class VideoCLIPDataConfig:
    """``data.*`` of the VideoCLIP recipes; each recipe registers a subclass fixing ``objective``."""

    objective: Literal["pretrain", "retrieval"] = "retrieval"  # which training set the recipe builds
    features: str = ""
    feature_rate: float | None = None  # rows per second; None: from the store's extraction.json, else 1
    tokenizer: str = "minilm"
    max_video_len: int = 32
    max_text_len: int = 61
    mmpt_text_layout: bool = False  # text as [CLS] [SEP] words [SEP] (MMPT); always on for VLM
    # pretraining (videoclip.pretrain)
    captions: str | None = None
    train_list: str | None = None  # one video id per line; default: every captioned video
    pairs_per_video: int = 4
    videos_per_batch: int = 32
    overlapped: bool = True
    min_video_len: int = 3
    min_text_tokens: int = 8
    max_text_tokens: int = 64
    retrieval: bool = True
    retrieval_start_epoch: int = 1
    retrieval_candidates: int = 2  # sample k videos from the k * this nearest
    retrieval_nprobe: int = 8
    retrieval_pairs_per_video: int = 4  # clips averaged into a video's embedding
    # fine-tuning (videoclip.retrieval)
    train_pairs: str | None = None
    train_format: EvalFormat = "jsonl"
    train_split: str = "train"
    batch_size: int = 64
    # evaluation
    val_pairs: str | None = None
    val_format: EvalFormat = "jsonl"
    val_split: str = "val"
    test_pairs: str | None = None
    test_format: EvalFormat = "msrvtt"
    test_split: str = "test"
    eval_batch_size: int = 256
    num_workers: int = 0


@dataclass
class VideoCLIPPretrainDataConfig(VideoCLIPDataConfig):
    """``data.*`` of ``videoclip.pretrain``: (video window, caption span) pairs from timed captions."""

    objective: Literal["pretrain"] = "pretrain"


@dataclass
class VideoCLIPRetrievalDataConfig(VideoCLIPDataConfig):
    """``data.*`` of ``videoclip.retrieval``: fine-tuning on (video, sentence) pairs."""

    objective: Literal["retrieval"] = "retrieval"


# ---------------------------------------------------------------------------------------------
# annotation readers: (video_id, start, end | None, sentence) pairs


# ---------------------------------------------------------------------------------------------
# data module


class VideoCLIPDataModule(L.LightningDataModule):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg = cfg
        self.d: VideoCLIPDataConfig = cfg.data
        if not self.d.features:
            raise ConfigError("data.features: give the feature store folder (videolang extract-features --out)")
        self.pretraining = self.d.objective == "pretrain"
        self.mmpt_text_layout = self.d.mmpt_text_layout
        self._ready = False
        self._train_set: Dataset | None = None

    def _prepare(self) -> None:
        if self._ready:
            return
        from videolang.data.text import load_tokenizer

        self.features = FeatureStore(self.d.features)
        self.feature_rate = resolve_feature_rate(self.d)
        tok = load_tokenizer(self.d.tokenizer)
        self.tokenizer = tok
        self.tokenize = lambda texts: tok(list(texts), add_special_tokens=False)["input_ids"]
        self.layout = TextLayout(tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, self.d.max_text_len,
                                 sep_after_cls=self.mmpt_text_layout)
        self._ready = True

    # -- datasets --

    def train_dataset(self) -> Dataset:
        """Built once: Lightning calls ``train_dataloader`` more than once (to count the steps,
        then to train), and building reads and tokenizes every caption."""
        if self._train_set is None:
            self._train_set = self._build_train_dataset()
        return self._train_set

    def _build_train_dataset(self) -> Dataset:
        self._prepare()
        d = self.d
        if self.pretraining:
            if not d.captions:
                raise ConfigError("data.captions: videoclip.pretrain needs timestamped captions (raw_caption.json)")
            ids = read_video_list(d.train_list) if d.train_list else None
            tracks = load_timestamped_captions(d.captions, self.tokenize, video_ids=ids)
            if self.feature_rate != 1.0:  # caption times are seconds, feature rows are not
                for t in tracks.values():
                    t.starts, t.ends = t.starts * self.feature_rate, t.ends * self.feature_rate
            ids = [v for v in (ids or sorted(tracks)) if v in tracks and v in self.features]
            return PretrainPairs(
                self.features, tracks, ids, self.layout, pairs_per_video=d.pairs_per_video,
                max_video_len=d.max_video_len, min_text_tokens=d.min_text_tokens,
                max_text_tokens=d.max_text_tokens, min_video_len=d.min_video_len,
                overlapped=d.overlapped, seed=self.cfg.seed,
            )
        if not d.train_pairs:
            raise ConfigError("data.train_pairs: videoclip.retrieval fine-tuning needs (video, sentence) pairs")
        pairs = scale_pairs(read_eval_pairs(d.train_pairs, d.train_format, d.train_split, all_captions=True),
                             self.feature_rate)
        return FineTunePairs(pairs, self.features, self.tokenize, self.layout, d.max_video_len, self.cfg.seed)

    def eval_dataset(self, stage: str) -> tuple[VideoTextPairs, str]:
        self._prepare()
        path = getattr(self.d, f"{stage}_pairs")
        fmt, split = getattr(self.d, f"{stage}_format"), getattr(self.d, f"{stage}_split")
        if not path:
            raise ConfigError(f"data.{stage}_pairs: no {stage} annotations given")
        pairs = scale_pairs(read_eval_pairs(path, fmt, split), self.feature_rate)
        ds = VideoTextPairs(pairs, self.features, self.tokenize, self.layout, max_video_len=self.d.max_video_len)
        return ds, protocol_name(fmt, split)

    # -- loaders --

    def train_dataloader(self) -> DataLoader:
        ds = self.train_dataset()
        if self.pretraining:
            sampler = RetrievalBatchSampler(
                SequentialSampler(ds), self.d.videos_per_batch, seed=self.cfg.seed,
                candidates_factor=self.d.retrieval_candidates, nprobe=self.d.retrieval_nprobe,
            )
            return DeferredDataLoader(ds, batch_sampler=sampler, collate_fn=collate_pairs,
                              num_workers=self.d.num_workers)
        return DeferredDataLoader(ds, batch_size=self.d.batch_size, shuffle=True, drop_last=len(ds) > self.d.batch_size,
                          num_workers=self.d.num_workers)

    def _eval_loader(self, stage: str) -> DataLoader:
        ds, protocol = self.eval_dataset(stage)
        setattr(self, f"{stage}_protocol", protocol)
        return DataLoader(ds, batch_size=self.d.eval_batch_size, shuffle=False, num_workers=self.d.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val") if self.d.val_pairs else []

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def extraction_info(features: str) -> dict:
    """The feature store's ``extraction.json`` (backbone, weights, rows per second), or {}."""
    from videolang.pipelines.features import read_extraction_info

    return read_extraction_info(features)


def resolve_feature_rate(d: VideoCLIPDataConfig) -> float:
    if d.feature_rate is not None:
        return float(d.feature_rate)
    return float(extraction_info(d.features).get("rows_per_second", 1.0))


# ---------------------------------------------------------------------------------------------
# lightning module


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

    def on_train_epoch_start(self) -> None:
        # Per-epoch draws (pairs, captions, batches) are seeded by (seed, epoch, index).
        # Lightning sets the epoch of a loader's ``sampler`` but not of a ``batch_sampler``.
        loader = self._train_loader()
        loader.dataset.set_epoch(self.current_epoch)
        if hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(self.current_epoch)

    def _loss(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        m: VideoCLIPModelConfig = self.cfg.model
        options: dict[str, Any] = {"normalize": m.normalize, "gather": m.gather_negatives}
        if self.logit_scale is not None:
            options["logit_scale"] = self.logit_scale.clamp(max=math.log(100.0)).exp()
        else:
            options["temperature"] = m.temperature
        fn = {"symmetric": videoclip_loss, "t2v": t2v_loss, "v2t": v2t_loss}[m.loss]
        return fn(video, text, **options)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        video, text = self.encode_pairs(batch)
        loss = self._loss(video, text)
        self.log("train/loss", loss, prog_bar=True, batch_size=video.shape[0])
        return loss

    # -- retrieval evaluation --

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
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
        protocol = getattr(self.trainer.datamodule, f"{stage}_protocol", stage)
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
            video=VideoFeaturesSpec(backbone=backbone_spec, feature_rate=resolve_feature_rate(d),
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
            chunk = mine[start : start + 64]
            batch = collate_pairs([probe[i] for i in chunk])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            v, t = self.encode_pairs(batch)
            z = ((v + t) / 2).view(len(chunk), d.retrieval_pairs_per_video, -1).mean(1)
            out[chunk] = z
        if world > 1:
            out = self.all_gather(out).sum(0)  # each row was filled by exactly one rank
        self.model.train(was_training)
        return out.cpu()


register_recipe("videoclip.pretrain", VideoCLIPPretrain, VideoCLIPDataModule, VideoCLIPModelConfig,
                VideoCLIPPretrainDataConfig)
register_recipe("videoclip.retrieval", VideoCLIPModule, VideoCLIPDataModule, VideoCLIPModelConfig,
                VideoCLIPRetrievalDataConfig)
