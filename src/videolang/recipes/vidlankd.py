"""VidLanKD recipes: ``vidlankd.teacher`` (MLM + token-to-video hinge on captions and clip
features), ``vidlankd.student`` (text-only MLM distilled from the frozen teacher) and
``vidlankd.glue`` (GLUE fine-tuning of any BERT). Sampling, validation and the original's loss
normalisations: docs/vidlankd.md ("Implementation notes").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from videolang.data.corpus import CorpusFormat, TokenBlocks, load_token_stream
from videolang.data.datasets import DeferredDataLoader
from videolang.data.glue import get_task, read_glue
from videolang.data.vidlankd import (
    GlueFeatures,
    TeacherDataConfig,
    VideoCaptionWindows,
    caption_window,
    collate_glue,
    collate_teacher,
    read_caption_tracks,
    read_video_ids,
    remove_overlap,
)
from videolang.engine import RecipeModule, RunConfig, create_recipe_model, register_recipe
from videolang.engine.evaluation import EvaluationBuffer, batch_indices, log_metrics
from videolang.errors import ConfigError
from videolang.losses import mlm_loss
from videolang.metrics import retrieval_metrics
from videolang.metrics.glue import glue_metrics
from videolang.models import load_pretrained
from videolang.models.bert import BertEncoder
from videolang.models.layers import masked_mean
from videolang.models.vidlankd import VidLanKDClassifier, VidLanKDStudent, VidLanKDTeacher

log = logging.getLogger(__name__)

__all__ = [
    "GlueDataConfig",
    "GlueModelConfig",
    "StudentDataConfig",
    "StudentModelConfig",
    "TeacherDataConfig",
    "TeacherModelConfig",
    "caption_window",
    "remove_overlap",
]


# ---------------------------------------------------------------------------------------------
# shared helpers


def _tokenizer(name: str):
    from videolang.data.text import load_tokenizer

    return load_tokenizer(name)


def _mask(cfg_seed: int, step: int, ids: torch.Tensor, tok, attention_mask: torch.Tensor, p: float):
    """BERT's 15% / 80-10-10 corruption, seeded by (seed, step) so a resumed run masks alike."""
    from videolang.data.text import mask_tokens

    g = torch.Generator(device=ids.device).manual_seed(cfg_seed * 1_000_003 + step)
    return mask_tokens(ids, mask_token_id=tok.mask_token_id, vocab_size=len(tok),
                       special_token_ids=tok.all_special_ids, attention_mask=attention_mask,
                       mlm_probability=p, generator=g, min_one_masked=True)


def _check_vocab(model_vocab: int, tok, what: str) -> None:
    if len(tok) > model_vocab:
        raise ConfigError(f"{what}: the tokenizer has {len(tok)} tokens, the model's vocabulary {model_vocab}; "
                          "set the model's bert.vocab_size (or use the matching tokenizer)")


def _provenance(cfg: RunConfig) -> dict[str, Any]:
    from videolang.engine.export import export_provenance

    return export_provenance(cfg)


def _folder_tokenizer(folder: Path) -> str | None:
    """The tokenizer saved inside a model folder (``write_model_folder``), if any."""
    from videolang.pipelines.folder import PIPELINE_FILE, TOKENIZER_DIR

    saved = folder / TOKENIZER_DIR
    return str(saved) if (folder / PIPELINE_FILE).is_file() and saved.is_dir() else None


def _teacher_feature_rate(d: TeacherDataConfig) -> float:
    from videolang.recipes.videoclip import extraction_info

    if d.feature_rate is not None:
        return float(d.feature_rate)
    return float(extraction_info(d.features).get("rows_per_second", 1.0))


# ---------------------------------------------------------------------------------------------
# teacher data: caption windows over timestamped captions + clip features


@dataclass
class TeacherModelConfig:
    """``model.*`` of ``vidlankd.teacher``."""

    name: str = "vidlankd-teacher-small"  # a registered config (videolang.list_models())
    init: str | None = None  # a saved teacher folder to continue from
    feature_dim: int | None = None  # None: the feature store's dimension
    overrides: dict[str, Any] = field(default_factory=dict)  # registry overrides ("bert.num_hidden_layers": 2)
    freeze_video: bool = False  # True: the original code (video tower never trained)
    hinge: Literal["paired", "inbatch"] = "paired"  # paired: the original's half-batch swap
    margin: float = 1.0
    mlm_weight: float = 1.0
    mlm_probability: float = 0.15


class TeacherDataModule(L.LightningDataModule):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg, self.d = cfg, cfg.data
        for key in ("features", "captions"):
            if not getattr(self.d, key):
                raise ConfigError(f"data.{key}: required by vidlankd.teacher")
        self._sets: dict[str, VideoCaptionWindows] = {}

    def dataset(self, stage: str) -> VideoCaptionWindows:
        if stage in self._sets:
            return self._sets[stage]
        from videolang.data.stores import FeatureStore
        from videolang.recipes.videoclip import extraction_info

        d = self.d
        features = FeatureStore(d.features)
        rate = d.feature_rate if d.feature_rate is not None else float(
            extraction_info(d.features).get("rows_per_second", 1.0))
        captions = read_caption_tracks(d.captions)
        listed = getattr(d, f"{stage}_list")
        if stage == "val" and not listed:
            raise ConfigError("data.val_list: no validation videos given")
        ids = read_video_ids(listed, f"data.{stage}_list") if listed else sorted(captions)
        ids = [v for v in ids if v in captions and v in features]
        if not ids:
            raise ConfigError(f"data.{stage}_list: no video has both captions ({d.captions}) and features ({d.features})")
        ds = VideoCaptionWindows(ids, captions, features, _tokenizer(d.tokenizer), d, rate, self.cfg.seed,
                                 random_window=stage == "train" and d.window == "random")
        self._sets[stage] = ds
        return ds

    def _loader(self, stage: str, batch_size: int, shuffle: bool) -> DataLoader:
        ds = self.dataset(stage)
        pad = ds.tok.pad_token_id
        return DeferredDataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle and len(ds) > batch_size,
                          collate_fn=lambda items: collate_teacher(items, pad), num_workers=self.d.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.d.batch_size, True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", self.d.eval_batch_size, False) if self.d.val_list else []


def _hinge(kind: str, token_emb: torch.Tensor, video_emb: torch.Tensor, mask: torch.Tensor, margin: float):
    from videolang.losses import distill

    negatives = "paired_half" if kind == "paired" else "in_batch"
    return distill.paired_hinge_loss(token_emb, video_emb, mask, margin, negatives=negatives)


def text_video_scores(token_emb: torch.Tensor, mask: torch.Tensor, video_emb: torch.Tensor) -> torch.Tensor:
    """``(texts, videos)``: mean over each text's real tokens of the token-video cosine."""
    return masked_mean(token_emb, mask) @ video_emb.t()


class TeacherModule(RecipeModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        m: TeacherModelConfig = cfg.model
        self.tok = _tokenizer(cfg.data.tokenizer)
        if m.init:
            model = load_pretrained(m.init).train()
            if not isinstance(model, VidLanKDTeacher):
                raise ConfigError(f"model.init {m.init}: not a VidLanKD teacher ({type(model).__name__})")
        else:
            from videolang.data.stores import FeatureStore

            dim = m.feature_dim or FeatureStore(cfg.data.features).dim
            model = create_recipe_model(m, dict(feature_dim=dim, **m.overrides))
            model.config.tokenizer = cfg.data.tokenizer  # recorded in the export for the student
        _check_vocab(model.config.bert.vocab_size, self.tok, "vidlankd.teacher")
        self.model: VidLanKDTeacher = model
        if m.freeze_video:
            self.model.video.requires_grad_(False)
        self._val = EvaluationBuffer()

    def export_pretrained(self, out_dir) -> Path:
        """A model folder: weights, tokenizer, the feature store's backbone, and how the run
        read text (``block_size`` tokens with the specials) and video (rows per second, at most
        ``max_video_len``): ``videolang.load`` gives its text and video embeddings."""
        from videolang.pipelines.features import backbone_from_store
        from videolang.pipelines.folder import TextSpec, VideoFeaturesSpec, write_model_folder
        from videolang.pipelines.vidlankd import VidLanKDSpec

        d: TeacherDataConfig = self.cfg.data
        backbone, backbone_spec = backbone_from_store(d.features)
        video = VideoFeaturesSpec(backbone=backbone_spec, feature_rate=_teacher_feature_rate(d), max_len=d.max_video_len)
        spec = VidLanKDSpec(task="teacher", text=TextSpec(max_len=d.block_size - 2), video=video,
                            provenance=_provenance(self.cfg))
        return write_model_folder(out_dir, self.model, spec, tokenizer=self.tok, backbone=backbone)

    def on_train_epoch_start(self) -> None:
        self.trainer.train_dataloader.dataset.set_epoch(self.current_epoch)

    def _losses(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        m: TeacherModelConfig = self.cfg.model
        inputs, labels = _mask(self.cfg.seed, step, batch["ids"], self.tok, batch["mask"], m.mlm_probability)
        out = self.model(inputs, batch["mask"], batch["vfeats"], batch["vmask"], mlm_labels=labels)
        hinge = _hinge(m.hinge, out["token_emb"], out["video_emb"], batch["mask"], m.margin)
        mlm = mlm_loss(out["mlm_logits"], out["mlm_targets"])
        return {"loss": hinge + m.mlm_weight * mlm, "hinge": hinge, "mlm": mlm, "out": out}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        r = self._losses(batch, self.global_step)
        b = batch["ids"].shape[0]
        self.log("train/loss", r["loss"], prog_bar=True, batch_size=b)
        self.log("train/hinge", r["hinge"], batch_size=b)
        self.log("train/mlm", r["mlm"], batch_size=b)
        return r["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        r = self._losses(batch, 10**9 + batch_idx)  # fixed masks for validation
        b = batch["ids"].shape[0]
        # batch-level losses (masks by batch, in-batch negatives): averaged over processes
        self.log("val/mlm", r["mlm"], batch_size=b, sync_dist=True)
        self.log("val/hinge", r["hinge"], batch_size=b, sync_dist=True)
        # retrieval on the clean text
        out = self.model(batch["ids"], batch["mask"], batch["vfeats"], batch["vmask"])
        self._val.add(batch_indices(self.trainer, "val", batch_idx), text=masked_mean(out["token_emb"], batch["mask"]),
                      video=out["video_emb"])

    def on_validation_epoch_end(self) -> None:
        outputs, self._val = self._val.gather(), EvaluationBuffer()
        if not outputs:
            return
        text, video = outputs["text"], outputs["video"]
        metrics = {f"val/{k}": v for k, v in retrieval_metrics(text @ video.t()).items()}
        log_metrics(self, {**metrics, "val/chance_R1": 100.0 / len(video)})


# ---------------------------------------------------------------------------------------------
# student


@dataclass
class StudentModelConfig:
    """``model.*`` of ``vidlankd.student``."""

    name: str = "vidlankd-student-small"
    init: str | None = None  # a saved student folder to continue from
    overrides: dict[str, Any] = field(default_factory=dict)
    teacher: str | None = None  # a saved teacher folder (vidlankd.teacher export); None: MLM only
    kd: list[str] = field(default_factory=lambda: ["nst"])  # "nst" and/or "contrastive"
    kd_weight: float = 1.0  # the original's voken_ratio
    original_normalization: bool = False  # True: the original's NST / NT-Xent scaling (golden parity)
    nst_teacher_term: bool = True  # true MMD² (False: the original omits the teacher-teacher term)
    contrastive_temperature: float = 1.0
    mlm_probability: float = 0.15


@dataclass
class StudentDataConfig:
    """``data.*`` of ``vidlankd.student``."""

    train_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)
    format: CorpusFormat = "wikitext"
    tokenizer: str = "minilm"
    block_size: int = 126  # tokens per block, [CLS] and [SEP] added
    exclude_ranges: list[list[int]] = field(default_factory=list)
    cache_dir: str | None = None  # tokenised streams (.npy); None: next to nothing, re-tokenise
    batch_size: int = 32
    eval_batch_size: int = 64
    shuffle: bool = True  # the original scripts never shuffle (corpus order)
    num_workers: int = 0


class StudentDataModule(L.LightningDataModule):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg, self.d = cfg, cfg.data
        if not self.d.train_files:
            raise ConfigError("data.train_files: vidlankd.student needs a text corpus")
        self._sets: dict[str, TokenBlocks] = {}

    def dataset(self, stage: str) -> TokenBlocks:
        if stage not in self._sets:
            d = self.d
            tok = _tokenizer(d.tokenizer)
            files = d.train_files if stage == "train" else d.val_files
            stream = load_token_stream(files, tok, d.format, cache_dir=d.cache_dir, tokenizer_name=d.tokenizer)
            self._sets[stage] = TokenBlocks(stream, tok.cls_token_id, tok.sep_token_id, d.block_size,
                                            d.exclude_ranges if stage == "train" else ())
        return self._sets[stage]

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train")
        return DeferredDataLoader(ds, batch_size=self.d.batch_size, shuffle=self.d.shuffle,
                          drop_last=len(ds) > self.d.batch_size, num_workers=self.d.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        if not self.d.val_files:
            return []
        return DataLoader(self.dataset("val"), batch_size=self.d.eval_batch_size, num_workers=self.d.num_workers)


KD_TERMS = ("nst", "contrastive")


def student_kd_terms(out: dict[str, torch.Tensor], teacher_hidden: torch.Tensor, mask: torch.Tensor,
                     m: StudentModelConfig) -> dict[str, torch.Tensor]:
    """The distillation terms of one batch (teacher hidden states are L2-normalised per token
    first, as the original)."""
    from videolang.losses import distill

    t = F.normalize(teacher_hidden, dim=-1)
    terms = {}
    if "nst" in m.kd:
        terms["nst"] = distill.nst_loss(out["nst"], t, None if m.original_normalization else mask,
                                        **_nst_options(m))
    if "contrastive" in m.kd:
        terms["contrastive"] = distill.contrastive_distillation_loss(
            out["contrastive"], t, mask=None if m.original_normalization else mask, **_contrastive_options(m))
    return terms


def _nst_options(m: StudentModelConfig) -> dict[str, Any]:
    if m.original_normalization:
        return {"include_teacher_term": False, "reduction": "vidlankd"}
    return {"include_teacher_term": m.nst_teacher_term, "reduction": "mean"}


def _contrastive_options(m: StudentModelConfig) -> dict[str, Any]:
    if m.original_normalization:
        return {"temperature": 1.0, "reduction": "vidlankd"}
    return {"temperature": m.contrastive_temperature, "reduction": "mean"}


class StudentModule(RecipeModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        m: StudentModelConfig = cfg.model
        unknown = [k for k in m.kd if k not in KD_TERMS]
        if unknown:
            raise ConfigError(f"model.kd: unknown term(s) {', '.join(unknown)}; known: {', '.join(KD_TERMS)}")
        self.tok = _tokenizer(cfg.data.tokenizer)
        if m.init:
            model = load_pretrained(m.init).train()
            if not isinstance(model, VidLanKDStudent):
                raise ConfigError(f"model.init {m.init}: not a VidLanKD student ({type(model).__name__})")
        else:
            overrides = dict(m.overrides)
            overrides.setdefault("nst_head", "nst" in m.kd and m.teacher is not None)
            overrides.setdefault("contrastive_head", "contrastive" in m.kd and m.teacher is not None)
            model = create_recipe_model(m, overrides)
            model.config.tokenizer = cfg.data.tokenizer  # recorded in the export (GLUE reads it)
        _check_vocab(model.config.bert.vocab_size, self.tok, "vidlankd.student")
        self.model: VidLanKDStudent = model
        self.teacher: VidLanKDTeacher | None = None
        if m.teacher:
            teacher = load_pretrained(m.teacher)
            if not isinstance(teacher, VidLanKDTeacher):
                raise ConfigError(f"model.teacher {m.teacher}: not a VidLanKD teacher ({type(teacher).__name__})")
            teacher.requires_grad_(False)
            # Kept out of the module's children: not trained, not in checkpoints or the export.
            self.__dict__["teacher"] = teacher.eval()
            for term, head in (("nst", model.nst_head), ("contrastive", model.contrastive_head)):
                if term in m.kd and head is None:
                    raise ConfigError(f"model.kd has {term!r} but the student has no {term}_head")
            width = model.config.teacher_hidden_size or model.config.bert.hidden_size
            if width != teacher.config.bert.hidden_size:
                raise ConfigError(f"the student's KD heads give {width}-d vectors, the teacher's hidden size is "
                                  f"{teacher.config.bert.hidden_size}: set teacher_hidden_size in model.overrides")

    def export_pretrained(self, out_dir) -> Path:
        """A model folder: weights, tokenizer and the corpus blocks' layout (``[CLS]``
        ``block_size`` pieces ``[SEP]``) for ``encode_text``; GLUE fine-tunes from it."""
        from videolang.pipelines.folder import TextSpec, write_model_folder
        from videolang.pipelines.vidlankd import VidLanKDSpec

        spec = VidLanKDSpec(task="text-encoder", text=TextSpec(max_len=self.cfg.data.block_size),
                            provenance=_provenance(self.cfg))
        return write_model_folder(out_dir, self.model, spec, tokenizer=self.tok)

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device).eval()

    def _losses(self, ids: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        m: StudentModelConfig = self.cfg.model
        mask = ids != self.tok.pad_token_id
        inputs, labels = _mask(self.cfg.seed, step, ids, self.tok, mask, m.mlm_probability)
        out = self.model(inputs, mask, mlm_labels=labels)
        r = {"mlm": mlm_loss(out["mlm_logits"], out["mlm_targets"])}
        total = r["mlm"]
        if self.teacher is not None and m.kd:
            if self.teacher.bert.embeddings.word_embeddings.weight.device != ids.device:
                self.teacher.to(ids.device)  # not a child module: Lightning does not move it
            with torch.no_grad():  # the teacher reads the student's corrupted input (the original)
                t_hidden = self.teacher.text_hidden(inputs, mask)
            for k, v in student_kd_terms(out, t_hidden, mask, m).items():
                r[k] = v
                total = total + m.kd_weight * v
        r["loss"] = total
        return r

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        r = self._losses(batch, self.global_step)
        for k, v in r.items():
            self.log(f"train/{k}", v, prog_bar=k == "loss", batch_size=batch.shape[0])
        return r["loss"]

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        r = self._losses(batch, 10**9 + batch_idx)  # masks by batch: averaged over processes
        for k, v in r.items():
            self.log(f"val/{k}", v, batch_size=batch.shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        mlm = self.trainer.callback_metrics.get("val/mlm")
        if mlm is not None:
            self.log("val/perplexity", torch.exp(mlm))


# ---------------------------------------------------------------------------------------------
# GLUE


@dataclass
class GlueModelConfig:
    """``model.*`` of ``vidlankd.glue``."""

    init: str = "minilm"  # a student / teacher / classifier export, a local HF BERT folder, or "minilm"
    classifier_dropout: float | None = None


@dataclass
class GlueDataConfig:
    """``data.*`` of ``vidlankd.glue``."""

    task_dir: str = ""  # the task's folder (glue_data/SST-2), or the GLUE root holding it
    task: str = "SST-2"
    tokenizer: str | None = None  # None: the model's tokenizer
    max_seq_length: int = 128
    batch_size: int = 32
    eval_batch_size: int = 128
    train_split: str = "train"
    eval_split: str = "dev"
    skip_malformed: bool = False
    num_workers: int = 0


def load_glue_encoder(init: str) -> tuple[BertEncoder, str]:
    """The BERT to fine-tune and its tokenizer name."""
    p = Path(init)
    if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        import json

        if "architecture" in json.loads((p / "config.json").read_text()):
            model = load_pretrained(p)
            if isinstance(model, VidLanKDClassifier | VidLanKDStudent | VidLanKDTeacher):
                return model.bert, _folder_tokenizer(p) or model.config.tokenizer
            raise ConfigError(f"model.init {init}: a {type(model).__name__} has no BERT to fine-tune")
    from videolang.models.videoclip import resolve_pretrained_dir

    path = resolve_pretrained_dir(init)
    return BertEncoder.from_pretrained(path), str(path) if init != "minilm" else "minilm"


def _task_folder(d: GlueDataConfig) -> Path:
    task = get_task(d.task)
    root = Path(d.task_dir)
    return root / task.name if (root / task.name).is_dir() else root


class GlueDataModule(L.LightningDataModule):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg, self.d = cfg, cfg.data
        if not self.d.task_dir:
            raise ConfigError("data.task_dir: the GLUE task folder (or the GLUE root) is required")
        self._sets: dict[str, GlueFeatures] = {}
        self._tok = None

    def tokenizer(self):
        if self._tok is None:
            name = self.d.tokenizer or load_glue_encoder_tokenizer(self.cfg.model.init)
            self._tok = _tokenizer(name)
        return self._tok

    def dataset(self, split: str) -> GlueFeatures:
        if split not in self._sets:
            data = read_glue(_task_folder(self.d), self.d.task, split, skip_malformed=self.d.skip_malformed)
            if not data.labelled:
                raise ConfigError(f"{data.path}: split {split!r} has no labels to train or evaluate on")
            if data.skipped:
                log.warning("%s: skipped %d malformed rows", data.path, data.skipped)
            self._sets[split] = GlueFeatures(data, self.tokenizer(), self.d.max_seq_length)
        return self._sets[split]

    def _loader(self, split: str, bs: int, shuffle: bool) -> DataLoader:
        pad = self.tokenizer().pad_token_id
        return DeferredDataLoader(self.dataset(split), batch_size=bs, shuffle=shuffle, num_workers=self.d.num_workers,
                          collate_fn=lambda items: collate_glue(items, pad))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.d.train_split, self.d.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.d.eval_split, self.d.eval_batch_size, False)


def load_glue_encoder_tokenizer(init: str) -> str:
    p = Path(init)
    if saved := _folder_tokenizer(p):  # a complete model folder carries its tokenizer
        return saved
    if (p / "config.json").is_file():
        import json

        cfg = json.loads((p / "config.json").read_text())
        if "tokenizer" in cfg:
            return cfg["tokenizer"]
    return "minilm" if init == "minilm" else init


class GlueModule(RecipeModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        task = get_task(cfg.data.task)
        self.task = task
        encoder, tokenizer = load_glue_encoder(cfg.model.init)
        problem = "regression" if task.is_regression else "classification"
        self.model = VidLanKDClassifier.from_encoder(encoder, task.num_labels, problem=problem,
                                                     tokenizer=cfg.data.tokenizer or tokenizer)
        if cfg.model.classifier_dropout is not None:
            self.model.dropout.p = cfg.model.classifier_dropout
            self.model.config.classifier_dropout = cfg.model.classifier_dropout
        self._eval = EvaluationBuffer()

    def export_pretrained(self, out_dir) -> Path:
        """A model folder: weights, the tokenizer the run used, how it tokenised (``max_length``
        tokens, pair layout) and the task's label names, so ``classify`` answers as evaluated."""
        from videolang.pipelines.folder import TextSpec, write_model_folder
        from videolang.pipelines.vidlankd import GlueSpec, VidLanKDSpec

        d: GlueDataConfig = self.cfg.data
        task = self.task
        glue = GlueSpec(task=task.name, labels=None if task.labels is None else list(task.labels),
                        pair=task.text_b is not None, max_length=d.max_seq_length, metrics=list(task.metrics))
        spec = VidLanKDSpec(task="classification", text=TextSpec(max_len=max(1, d.max_seq_length - 2)), glue=glue,
                            provenance=_provenance(self.cfg))
        tokenizer = _tokenizer(d.tokenizer or load_glue_encoder_tokenizer(self.cfg.model.init))
        return write_model_folder(out_dir, self.model, spec, tokenizer=tokenizer)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.task.is_regression:
            return F.mse_loss(logits, labels, reduction=reduction)
        return F.cross_entropy(logits, labels, reduction=reduction)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["ids"], batch["mask"], batch["types"])
        loss = self._loss(logits, batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["ids"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.model(batch["ids"], batch["mask"], batch["types"])
        self._eval.add(batch_indices(self.trainer, "val", batch_idx),
                       pred=logits if self.task.is_regression else logits.argmax(-1), label=batch["label"],
                       loss=self._loss(logits, batch["label"], reduction="none"))

    def on_validation_epoch_end(self) -> None:
        outputs, self._eval = self._eval.gather(), EvaluationBuffer()
        if not outputs:
            return
        scores = glue_metrics(self.task.metrics, outputs["pred"].numpy(), outputs["label"].numpy())
        log_metrics(self, {"val/loss": float(outputs["loss"].mean()), **{f"val/{k}": v for k, v in scores.items()}})
        if "score" not in scores:
            log_metrics(self, {"val/score": next(iter(scores.values()))})


register_recipe("vidlankd.teacher", TeacherModule, TeacherDataModule, TeacherModelConfig, TeacherDataConfig)
register_recipe("vidlankd.student", StudentModule, StudentDataModule, StudentModelConfig, StudentDataConfig)
register_recipe("vidlankd.glue", GlueModule, GlueDataModule, GlueModelConfig, GlueDataConfig)
