"""VLM recipes: ``vlm.pretrain`` (masked modality modelling over ``[CLS] video [SEP] text``) and
the downstream ``vlm.retrieval``, ``vlm.mcqa``, ``vlm.captioning`` and ``vlm.segmentation``.
Masking draws come from a generator seeded by (seed, global step), so a resumed run masks as an
uninterrupted one. Objectives and evaluation: docs/vlm.md ("Implementation notes").
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from videolang.data.datasets import DeferredDataLoader
from videolang.data.stores import FeatureStore
from videolang.data.text import mask_tokens
from videolang.data.videoclip import protocol_name, read_eval_pairs, scale_pairs
from videolang.data.vlm import (
    CaptionItems,
    CaptionVideos,
    MultipleChoiceItems,
    SegmentationWindows,
    read_coin,
    read_mc_items,
)
from videolang.engine import RunConfig, StagedEvalModule, register_recipe
from videolang.engine.evaluation import EvaluationBuffer, gather_stage, log_metrics
from videolang.engine.export import export_provenance
from videolang.errors import ConfigError
from videolang.losses import masked_frame_nce_loss, mlm_loss, mtm_loss
from videolang.metrics import caption_metrics
from videolang.models import create_model, load_pretrained
from videolang.models.convert.vlm import convert_mmpt_vlm_state_dict
from videolang.models.vlm import VLM
from videolang.models.weights import load_strict, read_checkpoint
from videolang.recipes.videoclip import (
    VideoCLIPDataConfig,
    VideoCLIPDataModule,
    VideoCLIPModule,
    resolve_feature_rate,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# config sections


@dataclass
class VLMModelConfig:
    """``model.*`` shared by the VLM recipes."""

    name: str = "vlm-minilm"  # a registered model (videolang.list_models())
    feature_dim: int | None = None  # None: the feature store's dimension
    init: str | None = None  # a saved model folder (run export) or an original MMPT checkpoint
    init_format: Literal["videolang", "mmpt"] = "videolang"
    # A fresh model (no model.init) standardizes input features per dimension with the mean
    # and std of the feature store's rows (unlabelled statistics, stored in the model).
    standardize_features: bool = False


@dataclass
class VLMPretrainModelConfig(VLMModelConfig):
    objective: Literal["mlm_mfm", "mtm"] = "mlm_mfm"
    mlm_weight: float = 1.0
    mfm_weight: float = 1.0
    mm_prob: float = 0.5  # share of items with one whole modality masked (split evenly)
    mlm_probability: float = 0.15
    mfm_probability: float = 0.15
    zero_logit: bool = True  # objective mtm: the original's constant zero logit (parity)


@dataclass
class VLMRetrievalModelConfig(VLMModelConfig):
    loss: Literal["symmetric", "t2v", "v2t"] = "t2v"  # the original: T2VContra (V2T for QA)
    normalize: bool = False  # cosine similarity (the original: raw dot product)
    temperature: float = 1.0
    learn_temperature: bool = False
    gather_negatives: bool = False


@dataclass
class VLMMultipleChoiceModelConfig(VLMRetrievalModelConfig):
    # isolated: the original; each option's pooled text half against the pooled video half (any
    # retrieval model scores options). joint: one full-attention pass over [CLS] video [SEP]
    # option per option, scored by a linear head on [CLS] (trained on data.train_mc items).
    # hybrid: the isolated score plus a zero-initialized linear head on the mean text state of
    # the full-attention pass, so training starts from the isolated scorer and the head learns
    # what pooled halves cannot see (the order of events).
    scoring: Literal["isolated", "joint", "hybrid"] = "isolated"
    # isolated / hybrid: S > 0 compares the halves also run by run (the first S-th of the video
    # with the first S-th of the option's words, ...; VLM.encode_video(segments=S)), so options
    # that only swap the order of two events score differently. Needs normalize: true.
    temporal_segments: int = 0


@dataclass
class VLMCaptionModelConfig(VLMModelConfig):
    num_beams: int = 5  # the original: beam 5
    max_decode_length: int = 24  # the original: 24 tokens
    length_penalty: float = 1.0
    eval_greedy: bool = True  # also decode greedily and log those scores


@dataclass
class VLMSegmentationModelConfig(VLMModelConfig):
    num_classes: int | None = None  # None: 1 + the largest step id of the annotations


@dataclass
class VLMDataConfig(VideoCLIPDataConfig):
    """``data.*`` of ``vlm.retrieval``. VLM splices the video in after ``caps[0]``, so its text is
    always MMPT's ``[CLS] [SEP] words [SEP]``."""

    objective: Literal["retrieval"] = "retrieval"
    mmpt_text_layout: Literal[True] = True


@dataclass
class VLMPretrainDataConfig(VLMDataConfig):
    """``data.*`` of ``vlm.pretrain``: VideoCLIP's pretraining pairs."""

    objective: Literal["pretrain"] = "pretrain"


@dataclass
class VLMQADataConfig(VLMDataConfig):
    """``data.*`` of ``vlm.mcqa``: retrieval pairs for training, multiple-choice items for
    evaluation (``msrvtt``: ``MSR_MC_test.csv``; ``jsonl``: our ``mc.jsonl``)."""

    # Optional multiple-choice training items (e.g. mc.jsonl's train split, TGIF-QA action):
    # when given, training is cross-entropy over each item's options instead of retrieval pairs.
    train_mc: str | None = None
    train_mc_format: Literal["msrvtt", "jsonl"] = "jsonl"
    train_mc_split: str = "train"
    val_mc: str | None = None
    val_mc_format: Literal["msrvtt", "jsonl"] = "jsonl"
    val_mc_split: str = "val"
    test_mc: str | None = None
    test_mc_format: Literal["msrvtt", "jsonl"] = "msrvtt"
    test_mc_split: str = "test"


@dataclass
class VLMCaptionDataConfig(VLMDataConfig):
    """``data.*`` of ``vlm.captioning``."""

    # Train on every caption of a video (MSR-VTT practice) or only its first one (the
    # synthetic world's canonical caption). Evaluation always uses every reference.
    train_all_captions: bool = True


@dataclass
class VLMSegmentationDataConfig:
    """``data.*`` of ``vlm.segmentation``."""

    features: str = ""
    feature_rate: float | None = None  # rows per second; None: from extraction.json, else 1
    annotations: str = ""  # COIN.json
    train_subset: str = "training"
    val_subset: str | None = None
    test_subset: str = "testing"
    window: int = 32  # rows per window (the original: 32 s)
    train_stride: int = 8
    eval_stride: int = 16
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 0


# ---------------------------------------------------------------------------------------------
# model


def _tokenizer_overrides(name: str, tokenizer: Any | None) -> dict[str, Any]:
    """A registered config without pretrained text weights takes the data's tokenizer (its
    vocabulary size and special ids); one with pretrained weights must already agree."""
    if tokenizer is None:
        return {}
    from videolang.models.registry import get_model_config

    cfg = get_model_config(name)
    ids = {"cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
           "pad_token_id": tokenizer.pad_token_id, "mask_token_id": tokenizer.mask_token_id}
    if not cfg.get("text_pretrained"):
        return {**ids, "bert.vocab_size": len(tokenizer), "bert.pad_token_id": tokenizer.pad_token_id}
    if cfg["bert"]["vocab_size"] != len(tokenizer) or any(cfg[k] != v for k, v in ids.items()):
        raise ConfigError(f"model.name {name!r} starts from pretrained text weights with a "
                          f"{cfg['bert']['vocab_size']}-token vocabulary; data.tokenizer has {len(tokenizer)} "
                          f"tokens or other special ids: use the matching tokenizer (e.g. minilm)")
    return {}


def feature_statistics(features: str, max_videos: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over the rows of (up to ``max_videos``, evenly spread) videos
    of a feature store."""
    store = FeatureStore(features)
    ids = list(store)
    step = max(1, len(ids) // max_videos)
    rows = np.concatenate([np.asarray(store[i], dtype=np.float64) for i in ids[::step]])
    return torch.from_numpy(rows.mean(0)).float(), torch.from_numpy(rows.std(0)).float()


def build_vlm(m: VLMModelConfig, feature_dim: int, *, num_classes: int = 0, tokenizer: Any | None = None,
              features: str | None = None, zero_head: bool = False) -> VLM:
    """The run's VLM: from a saved folder / original checkpoint or a registered config; a
    ``num_classes`` head is added (freshly initialised, with zeros when ``zero_head``) when the
    source has none. A registered config without pretrained text weights is sized to
    ``tokenizer``."""
    model, fresh_head = _build_vlm(m, feature_dim, num_classes, tokenizer, features)
    if zero_head and fresh_head:
        nn.init.zeros_(model.classifier[-1].weight)
        nn.init.zeros_(model.classifier[-1].bias)
    return model


def _build_vlm(m: VLMModelConfig, feature_dim: int, num_classes: int, tokenizer: Any | None,
               features: str | None) -> tuple[VLM, bool]:
    """The model and whether its ``num_classes`` head is new (not loaded from ``model.init``)."""
    if m.init and m.init_format == "videolang":
        source = load_pretrained(m.init)
        if not isinstance(source, VLM):
            raise ConfigError(f"model.init {m.init}: not a VLM model folder ({type(source).__name__})")
        if source.config.feature_dim != feature_dim:
            raise ConfigError(f"model.init {m.init}: expects {source.config.feature_dim}-d features, "
                              f"the feature store has {feature_dim}")
        if source.config.num_classes == num_classes:
            return source.train(), False
        cfg = source.config
        cfg.num_classes = num_classes
        model = VLM(cfg)
        load_strict(model, source.state_dict(), source=f"model.init {m.init}", fresh=("classifier.",))
        return model, num_classes > 0
    overrides: dict[str, Any] = {"feature_dim": feature_dim, **_tokenizer_overrides(m.name, tokenizer)}
    if num_classes:
        overrides["num_classes"] = num_classes
    if m.init:  # an original MMPT checkpoint: its weights replace any pretrained init
        overrides["text_pretrained"] = None
    if m.standardize_features:
        overrides["standardize_features"] = True
    model = create_model(m.name, **overrides)
    if not isinstance(model, VLM):
        raise ConfigError(f"model.name {m.name!r} is not a VLM architecture")
    if m.init:
        state = read_checkpoint(m.init)
        head = {k: v for k, v in model.state_dict().items() if k.startswith("classifier.")}
        if head:  # the pretrained checkpoint has no classifier: keep our fresh one
            state = dict(state.get("model", state))
            state.update({f"mmmodel.mm_encoder.{k}": v for k, v in head.items()})
        convert_mmpt_vlm_state_dict(state, model, source=m.init)
    if m.standardize_features:
        if not features:
            raise ConfigError("model.standardize_features needs the feature store (data.features)")
        model.set_feature_statistics(*feature_statistics(features))
    return model, num_classes > 0


def _feature_dim(m: VLMModelConfig, features: str) -> int:
    return m.feature_dim or FeatureStore(features).dim


def _data_tokenizer(cfg: RunConfig) -> Any:
    from videolang.data.text import load_tokenizer

    return load_tokenizer(cfg.data.tokenizer)


def _mask_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


# ---------------------------------------------------------------------------------------------
# export: a self-contained model folder recording how the run evaluated (videolang.load)


def export_vlm_folder(module: L.LightningModule, out_dir, task: str, *, window: int, tokenizer: Any = None,
                      similarity: Any = None, **sections: Any) -> Path:
    """Write ``module.model`` as a VLM model folder for ``task``: the tokenizer (when the task
    has text), the feature store's backbone, the feature rate, the evaluation's ``window`` rows
    and the task's settings (:class:`videolang.pipelines.vlm.VLMSpec`)."""
    from videolang.pipelines.features import backbone_from_store
    from videolang.pipelines.folder import (
        SimilaritySpec,
        TextSpec,
        VideoFeaturesSpec,
        write_model_folder,
    )
    from videolang.pipelines.vlm import VLMSpec

    cfg = module.cfg
    d = cfg.data
    backbone, backbone_spec = backbone_from_store(d.features)
    spec = VLMSpec(
        task=task,
        text=TextSpec(max_len=d.max_text_len, layout="mmpt") if tokenizer is not None else None,
        video=VideoFeaturesSpec(backbone=backbone_spec, feature_rate=resolve_feature_rate(d), max_len=window),
        similarity=similarity or SimilaritySpec(),
        provenance=export_provenance(cfg),
        **sections,
    )
    return write_model_folder(out_dir, module.model, spec, tokenizer=tokenizer, backbone=backbone)


def _retrieval_export(module: VideoCLIPModule, out_dir, task: str = "retrieval", **sections: Any) -> Path:
    """The retrieval evaluation's settings: cosine when ``model.normalize``, the loss's
    temperature (pretraining has neither: dot product, 1)."""
    from videolang.pipelines.folder import SimilaritySpec

    m = module.cfg.model
    temperature = module.temperature() if hasattr(m, "temperature") else 1.0
    similarity = SimilaritySpec(metric="cosine" if getattr(m, "normalize", False) else "dot", temperature=temperature)
    return export_vlm_folder(module, out_dir, task, window=module.cfg.data.max_video_len,
                             tokenizer=_data_tokenizer(module.cfg), similarity=similarity, **sections)


def coin_label_names(annotations: str, num_classes: int) -> list[str]:
    """Class names by id for a segmentation export: COIN.json's step ``label`` of each ``id``
    (any subset), ``background`` for 0, the id itself where the file names none."""
    names = {0: "background"}
    try:
        db = json.loads(Path(annotations).read_text(encoding="utf-8"))["database"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{annotations}: cannot read COIN.json class names ({exc})") from None
    for entry in db.values():
        for a in entry.get("annotation", []):
            if "label" in a:
                names.setdefault(int(a["id"]), str(a["label"]))
    return [names.get(i, str(i)) for i in range(num_classes)]


# ---------------------------------------------------------------------------------------------
# pretraining


def whole_modality_masks(
    caps: torch.Tensor, cmask: torch.Tensor, vmask: torch.Tensor, *, special_ids: list[int], mask_token_id: int,
    vocab_size: int, mm_prob: float, mlm_probability: float, mfm_probability: float, generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VLM's masking (MMPT ``MFMMLMAligner``), vectorized over the batch.

    Returns ``(masked_caps, text_labels, video_label)``: an item gets all its text masked with
    probability ``mm_prob / 2``, all its valid frames with ``mm_prob / 2``, and otherwise
    ``mlm_probability`` of its words and ``mfm_probability`` of its frames. Chosen words are
    replaced 80 / 10 / 10 ([MASK] / random / kept); special tokens and padding never are.
    """
    b = caps.shape[0]
    draw = torch.rand(b, generator=generator)
    text_full = draw < mm_prob / 2
    video_full = (draw >= mm_prob / 2) & (draw < mm_prob)
    standard = ~(text_full | video_full)
    masked, labels = caps.clone(), torch.full_like(caps, -100)
    for rows, prob in ((standard, mlm_probability), (text_full, 1.0)):
        if not bool(rows.any()):
            continue
        m, lab = mask_tokens(caps[rows], mask_token_id=mask_token_id, vocab_size=vocab_size,
                             special_token_ids=special_ids, attention_mask=cmask[rows], mlm_probability=prob,
                             generator=generator)
        masked[rows], labels[rows] = m, lab
    frame_draw = torch.rand(vmask.shape, generator=generator) < mfm_probability
    video_label = vmask.bool() & ((frame_draw & standard[:, None]) | video_full[:, None])
    return masked, labels, video_label


class VLMPretrain(VideoCLIPModule):
    """Masked modality pretraining; zero-shot retrieval for validation."""

    def build_model(self, m: VLMPretrainModelConfig, feature_dim: int) -> nn.Module:
        return build_vlm(m, feature_dim, tokenizer=_data_tokenizer(self.cfg), features=self.cfg.data.features)

    def export_pretrained(self, out_dir) -> Path:
        """A model folder for zero-shot retrieval (this recipe's validation)."""
        return _retrieval_export(self, out_dir)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        m: VLMPretrainModelConfig = self.cfg.model
        cfg = self.model.config
        g = _mask_generator(self.cfg.seed, self.global_step)
        special = [cfg.cls_token_id, cfg.sep_token_id, cfg.pad_token_id, cfg.mask_token_id]
        caps, labels, video_label = whole_modality_masks(
            batch["caps"].cpu(), batch["cmask"].cpu(), batch["vmask"].cpu(), special_ids=special,
            mask_token_id=cfg.mask_token_id, vocab_size=cfg.bert.vocab_size, mm_prob=m.mm_prob,
            mlm_probability=m.mlm_probability, mfm_probability=m.mfm_probability, generator=g)
        dev = batch["caps"].device
        video_logits, text_logits, targets = self.model.mtm_logits(
            caps.to(dev), batch["cmask"], batch["vfeats"], batch["vmask"], video_label.to(dev), labels.to(dev))
        n = batch["caps"].shape[0]
        if m.objective == "mtm":
            rows = video_logits.shape[0] + text_logits.shape[0]
            loss = mtm_loss(video_logits, text_logits, targets, zero_logit=m.zero_logit) if rows else video_logits.sum() * 0
        else:
            mfm = masked_frame_nce_loss(video_logits)
            mlm = mlm_loss(text_logits, targets)
            loss = m.mlm_weight * mlm + m.mfm_weight * mfm
            self.log("train/mlm", mlm, batch_size=n)
            self.log("train/mfm", mfm, batch_size=n)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss


# ---------------------------------------------------------------------------------------------
# retrieval and multiple-choice QA


class VLMRetrieval(VideoCLIPModule):
    """Retrieval fine-tuning / evaluation with the isolated halves (``vlm.retrieval``)."""

    def build_model(self, m: VLMRetrievalModelConfig, feature_dim: int) -> nn.Module:
        return build_vlm(m, feature_dim, tokenizer=_data_tokenizer(self.cfg), features=self.cfg.data.features)

    def export_pretrained(self, out_dir) -> Path:
        """A model folder answering as the retrieval evaluation (window, text layout, similarity)."""
        return _retrieval_export(self, out_dir)


class VLMQADataModule(VideoCLIPDataModule):
    def _mc_items(self, stage: str) -> MultipleChoiceItems:
        self._prepare()
        d: VLMQADataConfig = self.d
        path = getattr(d, f"{stage}_mc")
        fmt, split = getattr(d, f"{stage}_mc_format"), getattr(d, f"{stage}_mc_split")
        return MultipleChoiceItems(read_mc_items(path, fmt, split), self.features, self.tokenize, self.layout,
                                   max_video_len=d.max_video_len)

    def _build_train_dataset(self):
        return self._mc_items("train") if self.d.train_mc else super()._build_train_dataset()

    def train_dataloader(self) -> DataLoader:
        if not self.d.train_mc:
            return super().train_dataloader()
        ds = self.train_dataset()
        return DeferredDataLoader(ds, batch_size=max(1, self.d.batch_size // len(ds.items[0].options)), shuffle=True,
                          drop_last=True, num_workers=self.d.num_workers)

    def _eval_loader(self, stage: str) -> DataLoader:
        self._prepare()
        d: VLMQADataConfig = self.d
        path = getattr(d, f"{stage}_mc")
        if not path:
            raise ConfigError(f"data.{stage}_mc: no {stage} multiple-choice items given")
        fmt, split = getattr(d, f"{stage}_mc_format"), getattr(d, f"{stage}_mc_split")
        ds = MultipleChoiceItems(read_mc_items(path, fmt, split), self.features, self.tokenize, self.layout,
                                 max_video_len=d.max_video_len)
        setattr(self, f"{stage}_protocol", f"{protocol_name(fmt, split)}-mc")
        return DataLoader(ds, batch_size=max(1, d.eval_batch_size // len(ds.items[0].options)), shuffle=False,
                          num_workers=d.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val") if self.d.val_mc else []


class VLMMultipleChoice(VLMRetrieval):
    """``vlm.mcqa``: retrieval training (or cross-entropy over the options of training items,
    with ``data.train_mc``), multiple-choice evaluation. ``model.scoring: joint`` scores each
    (video, option) pair with one full-attention pass instead of the isolated halves."""

    def build_model(self, m: VLMMultipleChoiceModelConfig, feature_dim: int) -> nn.Module:
        if m.temporal_segments < 0:
            raise ConfigError(f"model.temporal_segments={m.temporal_segments}: must be >= 0 (0: whole-sequence means)")
        if m.temporal_segments and (m.scoring == "joint" or not m.normalize):
            raise ConfigError(f"model.temporal_segments={m.temporal_segments} compares cosine similarities of the "
                              f"isolated halves: it needs model.normalize: true and model.scoring isolated or hybrid "
                              f"(got normalize={m.normalize}, scoring={m.scoring})")
        if m.scoring == "isolated":
            return super().build_model(m, feature_dim)
        if not self.cfg.data.train_mc:
            raise ConfigError(f"model.scoring={m.scoring} trains a fresh match head on multiple-choice items: "
                              "set data.train_mc (retrieval pairs train the isolated halves only)")
        return build_vlm(m, feature_dim, num_classes=1, tokenizer=_data_tokenizer(self.cfg),
                         features=self.cfg.data.features, zero_head=m.scoring == "hybrid")

    def on_train_epoch_start(self) -> None:
        if not self.cfg.data.train_mc:
            super().on_train_epoch_start()

    def export_pretrained(self, out_dir) -> Path:
        """A model folder answering as the multiple-choice evaluation: its scorer, the order-aware
        segments, the similarity and temperature of the isolated score."""
        from videolang.pipelines.vlm import MultipleChoiceSpec

        m: VLMMultipleChoiceModelConfig = self.cfg.model
        return _retrieval_export(self, out_dir, "mcqa", temporal_segments=m.temporal_segments,
                                 multiple_choice=MultipleChoiceSpec(scoring=m.scoring))

    def encode_pairs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training on retrieval pairs: pooled as the options are scored (``temporal_segments``)."""
        segments = self.cfg.model.temporal_segments
        return (self.model.encode_video(batch["vfeats"], batch["vmask"], segments=segments),
                self.model.encode_text(batch["caps"], batch["cmask"], segments=segments))

    def item_scores(self, batch: dict[str, torch.Tensor], video_shifts: Sequence[int] = (0,)) -> list[torch.Tensor]:
        """(B, K) logits of each item's options against the video of the item ``shift`` places
        earlier in the batch, one tensor per shift (shift 1: the text-only control). The
        isolated halves are encoded once for all shifts."""
        scoring = self.cfg.model.scoring
        if scoring != "joint":
            video, text = self.option_embeddings(batch)
            isolated = [self.option_scores(video.roll(shift, 0), text) for shift in video_shifts]
            if scoring == "isolated":
                return isolated
        b, k, length = batch["caps"].shape
        caps, cmask = batch["caps"].reshape(b * k, length), batch["cmask"].reshape(b * k, length)
        pooling = "cls" if scoring == "joint" else "text"
        joint = [self.model.match_scores(caps, cmask, batch["vfeats"].roll(shift, 0).repeat_interleave(k, 0),
                                         batch["vmask"].roll(shift, 0).repeat_interleave(k, 0),
                                         pooling=pooling).view(b, k)
                 for shift in video_shifts]
        if scoring == "joint":
            return joint
        return [a + j for a, j in zip(isolated, joint, strict=True)]

    def option_embeddings(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Video (B, E) and option (B, K, E) embeddings, normalized when the model compares
        cosine similarities; E is the hidden size, or (1 + S) times it with
        ``temporal_segments: S``."""
        b, k, length = batch["caps"].shape
        segments = self.cfg.model.temporal_segments
        video = self.model.encode_video(batch["vfeats"], batch["vmask"], segments=segments)
        text = self.model.encode_text(batch["caps"].reshape(b * k, length), batch["cmask"].reshape(b * k, length),
                                      segments=segments)
        text = text.view(b, k, -1)
        if self.cfg.model.normalize:
            video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
        return video, text

    def option_scores(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, K) similarity of each video to each of its options (over the temperature)."""
        scores = torch.einsum("bh,bkh->bk", video.float(), text.float())
        if self.logit_scale is not None:
            return scores * self.logit_scale.clamp(max=math.log(100.0)).exp()
        return scores / self.cfg.model.temperature

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if "answer" not in batch:
            return super().training_step(batch, batch_idx)
        loss = F.cross_entropy(self.item_scores(batch)[0], batch["answer"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["answer"].shape[0])
        return loss

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        k = batch["caps"].shape[1]
        # Control: the same options scored against another item's video. Accuracy above chance
        # there comes from the options' text alone.
        pred, control = (scores.argmax(-1) for scores in self.item_scores(batch, video_shifts=(0, 1)))
        self._eval.setdefault(stage, EvaluationBuffer()).add(
            batch["index"], correct=(pred == batch["answer"]).float(), options=torch.full_like(pred, k),
            control=(control == batch["answer"]).float())

    def _eval_end(self, stage: str) -> None:
        outputs = gather_stage(self._eval, stage)
        if not outputs:
            return
        accuracy = 100.0 * float(outputs["correct"].mean())
        protocol = getattr(self.trainer.datamodule, f"{stage}_protocol", stage)
        log_metrics(self, {f"{stage}/other_video_accuracy": 100.0 * float(outputs["control"].mean()),
                           f"{stage}/{protocol}/accuracy": accuracy, f"{stage}/accuracy": accuracy,
                           f"{stage}/chance_accuracy": 100.0 * float((1.0 / outputs["options"].float()).mean())})


# ---------------------------------------------------------------------------------------------
# captioning


class VLMCaptionDataModule(VideoCLIPDataModule):
    """Caption pairs read like retrieval pairs (``data.train_pairs`` / ``val_pairs`` /
    ``test_pairs`` with their formats); evaluation keeps every reference of a video."""

    def _build_train_dataset(self) -> CaptionItems:
        self._prepare()
        d = self.d
        if not d.train_pairs:
            raise ConfigError("data.train_pairs: vlm.captioning needs (video, caption) pairs")
        pairs = scale_pairs(read_eval_pairs(d.train_pairs, d.train_format, d.train_split,
                                         all_captions=d.train_all_captions), self.feature_rate)
        return CaptionItems(pairs, self.features, self.tokenize, self.layout, max_video_len=d.max_video_len,
                            seed=self.cfg.seed)

    def most_frequent_caption(self) -> str:
        """The baseline: the most frequent caption of the training captions the model learns
        from (lower-cased, ties: first seen)."""
        pairs = read_eval_pairs(self.d.train_pairs, self.d.train_format, self.d.train_split,
                            all_captions=self.d.train_all_captions)
        counts = Counter(p[3].strip().lower() for p in pairs)
        return counts.most_common(1)[0][0]

    def _eval_loader(self, stage: str) -> DataLoader:
        self._prepare()
        path = getattr(self.d, f"{stage}_pairs")
        fmt, split = getattr(self.d, f"{stage}_format"), getattr(self.d, f"{stage}_split")
        if not path:
            raise ConfigError(f"data.{stage}_pairs: no {stage} captions given")
        pairs = scale_pairs(read_eval_pairs(path, fmt, split, all_captions=True), self.feature_rate)
        ds = CaptionVideos(pairs, self.features, max_video_len=self.d.max_video_len)
        setattr(self, f"{stage}_protocol", protocol_name(fmt, split))
        setattr(self, f"{stage}_references", ds.references)
        return DataLoader(ds, batch_size=self.d.eval_batch_size, shuffle=False, num_workers=self.d.num_workers)

    def train_dataloader(self) -> DataLoader:
        ds = self.train_dataset()
        return DeferredDataLoader(ds, batch_size=self.d.batch_size, shuffle=True, drop_last=len(ds) > self.d.batch_size,
                          num_workers=self.d.num_workers)


class _VLMTaskModule(StagedEvalModule):
    """Captioning and segmentation: ``self.model`` is the whole model (its head included)."""


class VLMCaptioning(_VLMTaskModule):
    """``vlm.captioning``: teacher-forced training, greedy + beam decoding at evaluation."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        from videolang.data.text import load_tokenizer

        self.tokenizer = load_tokenizer(cfg.data.tokenizer)
        self.model = build_vlm(cfg.model, _feature_dim(cfg.model, cfg.data.features), tokenizer=self.tokenizer,
                               features=cfg.data.features)
        self._eval: dict[str, EvaluationBuffer] = {}

    def on_train_epoch_start(self) -> None:
        # CaptionItems draws each video's caption from (seed, epoch, index).
        loader = self.trainer.train_dataloader
        if isinstance(loader, DataLoader) and hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(self.current_epoch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        caps, cmask = batch["caps"], batch["cmask"]
        logits = self.model.caption_logits(caps, cmask, batch["vfeats"], batch["vmask"])[:, :-1]
        targets = caps[:, 3:].masked_fill(~cmask[:, 3:].bool(), -100)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        self.log("train/loss", loss, prog_bar=True, batch_size=caps.shape[0])
        return loss

    def _decode(self, ids: list[list[int]]) -> list[str]:
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]

    def export_pretrained(self, out_dir) -> Path:
        """A model folder captioning as the evaluation decoded (beam size, length, penalty)."""
        from videolang.pipelines.vlm import CaptioningSpec

        m: VLMCaptionModelConfig = self.cfg.model
        decoding = CaptioningSpec(num_beams=m.num_beams, max_length=m.max_decode_length,
                                  length_penalty=m.length_penalty)
        return export_vlm_folder(self, out_dir, "captioning", window=self.cfg.data.max_video_len,
                                 tokenizer=self.tokenizer, captioning=decoding)

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        m: VLMCaptionModelConfig = self.cfg.model
        beam = self.model.generate(batch["vfeats"], batch["vmask"], max_length=m.max_decode_length,
                                   num_beams=m.num_beams, length_penalty=m.length_penalty)
        greedy = (self.model.generate(batch["vfeats"], batch["vmask"], max_length=m.max_decode_length)
                  if m.eval_greedy and m.num_beams > 1 else beam)
        self._eval.setdefault(stage, EvaluationBuffer()).add(batch["index"], beam=self._decode(beam),
                                                             greedy=self._decode(greedy))

    def _eval_end(self, stage: str) -> None:
        outputs = gather_stage(self._eval, stage)
        if not outputs:
            return
        dm = self.trainer.datamodule
        references = getattr(dm, f"{stage}_references")
        order = outputs["index"].tolist()
        refs = [references[i] for i in order]
        protocol = getattr(dm, f"{stage}_protocol", stage)
        results = {"beam": caption_metrics(outputs["beam"], refs)}
        if self.cfg.model.eval_greedy:
            results["greedy"] = caption_metrics(outputs["greedy"], refs)
        baseline = dm.most_frequent_caption()
        results["most_frequent"] = caption_metrics([baseline] * len(order), refs)
        log_metrics(self, {f"{stage}/{protocol}/{kind}/{name}": value
                           for kind, metrics in results.items() for name, value in metrics.items()})
        log_metrics(self, {f"{stage}/BLEU-4": results["beam"]["BLEU-4"],
                           f"{stage}/baseline_BLEU-4": results["most_frequent"]["BLEU-4"]})
        for k, i in enumerate(order[:3]):
            log.info("%s caption %d: beam %r | greedy %r | reference %r", stage, i, outputs["beam"][k],
                     outputs["greedy"][k], references[i][0])


# ---------------------------------------------------------------------------------------------
# action segmentation


class VLMSegmentationDataModule(L.LightningDataModule):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg, self.d = cfg, cfg.data
        if not self.d.features or not self.d.annotations:
            raise ConfigError("data.features and data.annotations (COIN.json) are required for vlm.segmentation")
        self._sets: dict[str, SegmentationWindows] = {}

    def dataset(self, subset: str, stride: int) -> SegmentationWindows:
        if subset not in self._sets:
            videos, _ = read_coin(self.d.annotations, subset)
            self._sets[subset] = SegmentationWindows(videos, FeatureStore(self.d.features), rate=resolve_feature_rate(self.d),
                                                     window=self.d.window, stride=stride)
        return self._sets[subset]

    def majority_label(self) -> int:
        """The most frequent row label of the training videos (the majority-class baseline)."""
        labels = np.concatenate(self.dataset(self.d.train_subset, self.d.train_stride).labels)
        return int(np.bincount(labels).argmax())

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset(self.d.train_subset, self.d.train_stride)
        return DeferredDataLoader(ds, batch_size=self.d.batch_size, shuffle=True, drop_last=len(ds) > self.d.batch_size,
                          num_workers=self.d.num_workers)

    def _eval(self, subset: str) -> DataLoader:
        return DataLoader(self.dataset(subset, self.d.eval_stride), batch_size=self.d.eval_batch_size,
                          shuffle=False, num_workers=self.d.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval(self.d.val_subset) if self.d.val_subset else []

    def test_dataloader(self) -> DataLoader:
        return self._eval(self.d.test_subset)


class VLMSegmentation(_VLMTaskModule):
    """``vlm.segmentation``: per-row classification of the video tokens."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        d: VLMSegmentationDataConfig = cfg.data
        num_classes = cfg.model.num_classes or read_coin(d.annotations, d.train_subset)[1]
        self.model = build_vlm(cfg.model, _feature_dim(cfg.model, d.features), num_classes=num_classes,
                               features=d.features)
        self._eval: dict[str, EvaluationBuffer] = {}

    def export_pretrained(self, out_dir) -> Path:
        """A model folder segmenting as the evaluation: windows, stride, class names."""
        from videolang.pipelines.vlm import SegmentationSpec

        d: VLMSegmentationDataConfig = self.cfg.data
        labels = coin_label_names(d.annotations, self.model.config.num_classes)
        return export_vlm_folder(self, out_dir, "segmentation", window=d.window,
                                 segmentation=SegmentationSpec(stride=d.eval_stride, labels=labels))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model.segment_logits(batch["vfeats"], batch["vmask"])
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        logits = self.model.segment_logits(batch["vfeats"], batch["vmask"]).float()
        window_key = batch["video"] * 1_000_000 + batch["offset"]  # one window per (video, offset)
        self._eval.setdefault(stage, EvaluationBuffer()).add(
            window_key, video=batch["video"], offset=batch["offset"], logits=logits, labels=batch["labels"])

    def _eval_end(self, stage: str) -> None:
        outputs = gather_stage(self._eval, stage)
        if not outputs:
            return
        pred, row_label = row_predictions(outputs["video"], outputs["offset"], outputs["logits"], outputs["labels"])
        accuracy = 100.0 * float((pred == row_label).float().mean())
        majority = self.trainer.datamodule.majority_label()
        majority_rate = 100.0 * float((row_label == majority).float().mean())
        foreground = row_label != 0
        protocol = f"coin-{getattr(self.cfg.data, f'{stage}_subset')}"
        metrics = {f"{stage}/{protocol}/frame_accuracy": accuracy, f"{stage}/{protocol}/majority_rate": majority_rate}
        if bool(foreground.any()):
            fg = 100.0 * float((pred[foreground] == row_label[foreground]).float().mean())
            metrics[f"{stage}/{protocol}/foreground_accuracy"] = fg
        log_metrics(self, {**metrics, f"{stage}/frame_accuracy": accuracy, f"{stage}/majority_rate": majority_rate})


def row_predictions(video: torch.Tensor, offset: torch.Tensor, logits: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row predicted and true class of windows ``logits`` ``(N, window, C)`` starting at row
    ``offset`` of ``video``: the logits of every window covering a row are summed (rows labelled
    -100, padding, are left out)."""
    window = logits.shape[1]
    rows = (video[:, None] * 1_000_000 + offset[:, None] + torch.arange(window)).flatten()
    valid = labels.flatten() != -100
    rows, flat_logits, flat_labels = rows[valid], logits.flatten(0, 1)[valid], labels.flatten()[valid]
    unique, inverse = torch.unique(rows, return_inverse=True)
    summed = torch.zeros(len(unique), logits.shape[-1]).index_add_(0, inverse, flat_logits)
    row_label = torch.zeros(len(unique), dtype=torch.long).scatter_(0, inverse, flat_labels)
    return summed.argmax(-1), row_label


register_recipe("vlm.pretrain", VLMPretrain, VideoCLIPDataModule, VLMPretrainModelConfig, VLMPretrainDataConfig)
register_recipe("vlm.retrieval", VLMRetrieval, VideoCLIPDataModule, VLMRetrievalModelConfig, VLMDataConfig)
register_recipe("vlm.mcqa", VLMMultipleChoice, VLMQADataModule, VLMMultipleChoiceModelConfig, VLMQADataConfig)
register_recipe("vlm.captioning", VLMCaptioning, VLMCaptionDataModule, VLMCaptionModelConfig, VLMCaptionDataConfig)
register_recipe("vlm.segmentation", VLMSegmentation, VLMSegmentationDataModule, VLMSegmentationModelConfig,
                VLMSegmentationDataConfig)
