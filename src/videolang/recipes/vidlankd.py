"""VidLanKD recipes: ``vidlankd.teacher`` (MLM + token-to-video hinge on captions and clip
features), ``vidlankd.student`` (text-only MLM distilled from the frozen teacher) and
``vidlankd.glue`` (GLUE fine-tuning of any BERT, in recipes/vidlankd_glue.py). Sampling,
validation and the original's loss normalisations: docs/vidlankd.md ("Implementation notes").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from videolang.data.stores import feature_rows_per_second
from videolang.data.text import load_tokenizer
from videolang.data.vidlankd import (
    GlueDataConfig,
    GlueSplits,
    StudentDataConfig,
    StudentSplits,
    TeacherDataConfig,
    TeacherSplits,
    mask_for_step,
)
from videolang.engine import RecipeModule, RunConfig, create_recipe_model, register_recipe
from videolang.engine.evaluation import EvaluationBuffer, batch_indices, log_metrics
from videolang.engine.export import export_provenance
from videolang.errors import ConfigError
from videolang.losses import distill, mlm_loss
from videolang.metrics import retrieval_metrics
from videolang.models import load_pretrained
from videolang.models.layers import masked_mean
from videolang.models.vidlankd import VidLanKDStudent, VidLanKDTeacher
from videolang.recipes.vidlankd_glue import GlueModelConfig, GlueModule

__all__ = ["StudentModelConfig", "TeacherModelConfig", "student_kd_terms"]


def _check_vocab(model_vocab: int, tok: Any, what: str) -> None:
    if len(tok) > model_vocab:
        raise ConfigError(f"{what}: the tokenizer has {len(tok)} tokens, the model's vocabulary {model_vocab}; "
                          "set the model's bert.vocab_size (or use the matching tokenizer)")


# ---------------------------------------------------------------------------------------------
# teacher: MLM + token-to-video hinge on caption windows and clip features


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


class TeacherModule(RecipeModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        m: TeacherModelConfig = cfg.model
        self.tok = load_tokenizer(cfg.data.tokenizer)
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
        rate = feature_rows_per_second(d.features, d.feature_rate)
        video = VideoFeaturesSpec(backbone=backbone_spec, feature_rate=rate, max_len=d.max_video_len)
        spec = VidLanKDSpec(task="teacher", text=TextSpec(max_len=d.block_size - 2), video=video,
                            provenance=export_provenance(self.cfg))
        return write_model_folder(out_dir, self.model, spec, tokenizer=self.tok, backbone=backbone)

    def _losses(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        m: TeacherModelConfig = self.cfg.model
        inputs, labels = mask_for_step(self.cfg.seed, step, batch["ids"], self.tok, batch["mask"], m.mlm_probability)
        out = self.model(inputs, batch["mask"], batch["vfeats"], batch["vmask"], mlm_labels=labels)
        negatives = "paired_half" if m.hinge == "paired" else "in_batch"
        hinge = distill.paired_hinge_loss(out["token_emb"], out["video_emb"], batch["mask"], m.margin,
                                          negatives=negatives)
        mlm = mlm_loss(out["mlm_logits"], out["mlm_targets"])
        return {"loss": hinge + m.mlm_weight * mlm, "hinge": hinge, "mlm": mlm, "out": out}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        if "ids" not in batch:  # every video of the batch was skipped (DataGuard counts them)
            return None
        r = self._losses(batch, self.global_step)
        b = batch["ids"].shape[0]
        self.log("train/loss", r["loss"], prog_bar=True, batch_size=b)
        self.log("train/hinge", r["hinge"], batch_size=b)
        self.log("train/mlm", r["mlm"], batch_size=b)
        return r["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if "ids" not in batch:
            return
        r = self._losses(batch, 10**9 + batch_idx)  # fixed masks for validation
        b = batch["ids"].shape[0]
        # batch-level losses (masks by batch, in-batch negatives): averaged over processes
        self.log("val/mlm", r["mlm"], batch_size=b, sync_dist=True)
        self.log("val/hinge", r["hinge"], batch_size=b, sync_dist=True)
        # retrieval on the clean text
        out = self.model(batch["ids"], batch["mask"], batch["vfeats"], batch["vmask"])
        self._val.add(batch["index"], text=masked_mean(out["token_emb"], batch["mask"]),
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


KD_TERMS = ("nst", "contrastive")


def student_kd_terms(out: dict[str, torch.Tensor], teacher_hidden: torch.Tensor, mask: torch.Tensor,
                     m: StudentModelConfig) -> dict[str, torch.Tensor]:
    """The distillation terms of one batch (teacher hidden states are L2-normalised per token
    first, as the original)."""
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
        self.tok = load_tokenizer(cfg.data.tokenizer)
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
        self._val = EvaluationBuffer()
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
                            provenance=export_provenance(self.cfg))
        return write_model_folder(out_dir, self.model, spec, tokenizer=self.tok)

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device).eval()

    def _forward(self, inputs: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> tuple[dict, torch.Tensor | None]:
        """The student's outputs on masked ``inputs`` and, when it distills, the teacher's hidden states."""
        out = self.model(inputs, mask, mlm_labels=labels)
        if self.teacher is None or not self.cfg.model.kd:
            return out, None
        if self.teacher.bert.embeddings.word_embeddings.weight.device != inputs.device:
            self.teacher.to(inputs.device)  # not a child module: Lightning does not move it
        with torch.no_grad():  # the teacher reads the student's corrupted input (the original)
            return out, self.teacher.text_hidden(inputs, mask)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        m: StudentModelConfig = self.cfg.model
        mask = batch != self.tok.pad_token_id
        out, t_hidden = self._forward(*mask_for_step(self.cfg.seed, self.global_step, batch, self.tok, mask,
                                                     m.mlm_probability), mask)
        kd = student_kd_terms(out, t_hidden, mask, m) if t_hidden is not None else {}
        r = {"mlm": mlm_loss(out["mlm_logits"], out["mlm_targets"]), **kd}
        r["loss"] = r["mlm"]
        for v in kd.values():
            r["loss"] = r["loss"] + m.kd_weight * v
        for k, v in r.items():
            self.log(f"train/{k}", v, prog_bar=k == "loss", batch_size=batch.shape[0])
        return r["loss"]

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        m: StudentModelConfig = self.cfg.model
        index, mask = batch_indices(self.trainer, "val", batch_idx), batch != self.tok.pad_token_id
        # Masks drawn per block, seeded by its dataset index: the same in any batch or process.
        inputs, labels = (torch.cat(x) for x in zip(*(
            mask_for_step(self.cfg.seed, 10**9 + int(i), batch[j : j + 1], self.tok, mask[j : j + 1], m.mlm_probability)
            for j, i in enumerate(index)), strict=True))
        out, t_hidden = self._forward(inputs, labels, mask)
        row = (labels != -100).nonzero(as_tuple=True)[0]  # the block of each masked token
        ce = F.cross_entropy(out["mlm_logits"].float(), out["mlm_targets"], reduction="none")
        rows = {"mlm_sum": torch.zeros(len(batch), device=ce.device).index_add_(0, row, ce),
                "mlm_count": torch.bincount(row, minlength=len(batch))}
        if t_hidden is not None:  # KD terms by batch (in-batch negatives): each block carries its batch's
            rows.update({k: v.detach().expand(len(batch)) for k, v in student_kd_terms(out, t_hidden, mask, m).items()})
        self._val.add(index, **rows)

    def on_validation_epoch_end(self) -> None:
        outputs, self._val = self._val.gather(), EvaluationBuffer()
        if not outputs:
            return
        mlm = outputs.pop("mlm_sum").sum() / outputs.pop("mlm_count").sum().clamp(min=1)
        kd = {k: v.float().mean() for k, v in outputs.items() if k != "index"}
        loss = mlm + self.cfg.model.kd_weight * sum(kd.values())
        log_metrics(self, {f"val/{k}": v for k, v in {"mlm": mlm, "perplexity": mlm.exp(), **kd, "loss": loss}.items()})


register_recipe("vidlankd.teacher", TeacherModule, TeacherSplits, TeacherModelConfig, TeacherDataConfig)
register_recipe("vidlankd.student", StudentModule, StudentSplits, StudentModelConfig, StudentDataConfig)
register_recipe("vidlankd.glue", GlueModule, GlueSplits, GlueModelConfig, GlueDataConfig)
