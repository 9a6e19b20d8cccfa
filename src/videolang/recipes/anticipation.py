"""Action-anticipation recipes: ``anticipation.mlm`` (masked-LM pretraining of the teacher's encoder
on action text), ``anticipation.teacher`` (a text encoder predicting the next action from the past
ones) and ``anticipation.student`` (a causal video transformer distilled from the teacher's logits
and features). Options and logged metrics: docs/anticipation.md ("Implementation notes")."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from videolang.data.anticipation import (
    ActionVocab,
    AnticipationDataConfig,
    AnticipationMLMDataConfig,
    AnticipationSplits,
    AnticipationStudentDataConfig,
    AnticipationTeacherDataConfig,
    HistoryTexts,
    ObservedClips,
    TeacherPredictions,
    read_action_vocab,
    read_many_shot_classes,
    save_teacher_predictions,
)
from videolang.data.stores import FeatureStore, feature_rows_per_second
from videolang.data.text import load_tokenizer, mask_tokens_for
from videolang.engine import RecipeModule, RunConfig, StagedEvalModule, register_recipe
from videolang.engine.evaluation import EvaluationBuffer, gather_stage, log_metrics
from videolang.engine.export import export_provenance
from videolang.errors import ConfigError
from videolang.losses import mlm_loss
from videolang.losses.distill import hidden_regression_loss, kd_kl_loss
from videolang.metrics.anticipation import anticipation_metrics, many_shot_actions
from videolang.models.registry import create_model, get_model_config, load_pretrained
from videolang.pipelines.anticipation import AnticipationSpec, HistoryTextSpec, action_labels
from videolang.pipelines.features import backbone_from_store
from videolang.pipelines.folder import VideoFeaturesSpec, write_model_folder

__all__ = ["StudentModelConfig", "TeacherModelConfig"]


@dataclass
class TeacherModelConfig:
    """``model.*`` of ``anticipation.teacher``."""

    name: str = "anticipation-teacher-tiny"  # a registered teacher config
    model_type: str | None = None  # override the config's encoder type (bert, roberta, ...)
    vocab_size: int | None = None  # override the config's (a small tokenizer trained on action text)
    text_pretrained: str | None = None  # local transformers folder (e.g. after MLM on recipes)
    init: str | None = None  # a saved teacher (videolang export folder)
    action_weight: float = 0.8
    verb_weight: float = 0.1
    noun_weight: float = 0.1
    class_weights: bool = False  # 'balanced' CE weights from the training targets
    mlm_weight: float = 0.0  # auxiliary MLM on the history text
    mlm_probability: float = 0.15
    export_splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])


@dataclass
class StudentModelConfig:
    """``model.*`` of ``anticipation.student``."""

    name: str = "anticipation-student-tiny"
    init: str | None = None
    feature_dim: int | None = None  # None: the feature store's
    action_weight: float = 1.0
    verb_weight: float = 0.0
    noun_weight: float = 0.0
    kd_weight: float = 0.0  # 0: no distillation
    kd_temperature: float = 1.0
    kd_top_k: int | None = None
    kd_selection: Literal["topk", "topk_other", "topmidbottom"] = "topk"
    kd_reduction: Literal["batchmean", "mean"] = "batchmean"
    feat_kd_weight: float = 0.0
    feat_kd_kind: Literal["cosine", "mse", "normalized_mse"] = "cosine"


def _check_vocab(m: TeacherModelConfig, tokens: int, tokenizer: str) -> None:
    """A tokenizer larger than the teacher's embedding table would index out of range."""
    size = None if m.init or m.text_pretrained else m.vocab_size or get_model_config(m.name).get("vocab_size")
    if size and tokens > size:
        raise ConfigError(f"data.tokenizer {tokenizer!r} has {tokens} tokens, the teacher {m.name!r} embeds "
                          f"{size}: set model.vocab_size={tokens}")


def masked_lm_loss(model: nn.Module, tokenizer: Any, batch: dict[str, Any], probability: float) -> torch.Tensor:
    """MLM loss of the teacher's encoder on ``batch``'s text, at least one token masked a row."""
    ids, labels = mask_tokens_for(tokenizer, batch["input_ids"], batch["attention_mask"],
                                  mlm_probability=probability, min_one_masked=True)
    return mlm_loss(model.mlm_logits(ids, batch["attention_mask"]), labels)


class _AnticipationModule(StagedEvalModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        d: AnticipationDataConfig = cfg.data
        self.vocab = read_action_vocab(d.format, d.root)
        many_shot = read_many_shot_classes(d.many_shot_dir, self.vocab) if d.many_shot_dir else None
        self.many_shot = many_shot_actions(self.vocab.verbs, self.vocab.nouns, *many_shot) if many_shot else None
        self._outputs: dict[str, EvaluationBuffer] = {}

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        if "action" in batch:  # else every clip of the batch was skipped (DataGuard counts them)
            out = self(batch)
            self._outputs.setdefault(stage, EvaluationBuffer()).add(
                batch["index"], logits=out["action"].float(), action=batch["action"], verb=batch["verb"],
                noun=batch["noun"])

    def _eval_end(self, stage: str) -> None:
        outputs = gather_stage(self._outputs, stage)
        if not outputs:
            return
        metrics = anticipation_metrics(outputs["logits"], outputs["action"], action_verbs=self.vocab.verbs,
                                       action_nouns=self.vocab.nouns, verb_targets=outputs["verb"],
                                       noun_targets=outputs["noun"], many_shot=self.many_shot,
                                       verb_noun_mode=self.cfg.data.verb_noun_mode, absent=self.cfg.data.absent_classes)
        log_metrics(self, {f"{stage}/{name}": value for name, value in metrics.items()})

    def _spec(self, task: str, **parts: Any) -> AnticipationSpec:
        """The model folder's spec: ``parts`` plus the class names and the observation setting."""
        d: AnticipationDataConfig = self.cfg.data
        return AnticipationSpec(task=task, labels=action_labels(self.vocab), anticipation_gap=d.anticipation_gap,
                                verb_noun_mode=d.verb_noun_mode, provenance=export_provenance(self.cfg), **parts)

    def _heads_loss(self, out, batch, m, class_weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        loss = out["action"].new_zeros(())
        for head in ("action", "verb", "noun"):
            if w := getattr(m, f"{head}_weight"):
                ce = F.cross_entropy(out[head], batch[head], weight=(class_weights or {}).get(head))
                self.log(f"train/ce_{head}", ce, batch_size=batch[head].shape[0])
                loss = loss + w * ce
        return loss


def build_teacher(cfg: RunConfig, vocab: ActionVocab, tokenizer: Any) -> nn.Module:
    """The teacher of a run: a saved one (``model.init``) or a registered config sized to the
    dataset's actions, verbs and nouns (and large enough for ``tokenizer``)."""
    m: TeacherModelConfig = cfg.model
    _check_vocab(m, len(tokenizer), cfg.data.tokenizer)
    if m.init:
        model = load_pretrained(m.init).train()
        sizes, want = tuple(getattr(model.config, key) for key in vocab.head_sizes), tuple(vocab.head_sizes.values())
        if sizes != want:
            raise ConfigError(f"model.init {m.init}: heads for {sizes} (actions, verbs, nouns), the dataset has {want}")
        return model
    given = {key: value for key in ("model_type", "vocab_size", "text_pretrained") if (value := getattr(m, key))}
    return create_model(m.name, **vocab.head_sizes, **given)


class AnticipationMLMModule(RecipeModule):
    """``anticipation.mlm``: masked-LM pretraining of the teacher's encoder on action text (the
    original's Recipe1M stage). The export is a whole teacher (heads untrained) for the
    teacher recipe's ``model.init``."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.tokenizer = load_tokenizer(cfg.data.tokenizer)
        self.model = build_teacher(cfg, read_action_vocab(cfg.data.format, cfg.data.root), self.tokenizer)

    def training_step(self, batch, batch_idx):
        loss = masked_lm_loss(self.model, self.tokenizer, batch, self.cfg.model.mlm_probability)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def export_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """The encoder and its tokenizer; ``pipeline.json`` says it is an intermediate (a teacher's
        ``model.init``), so ``videolang.load`` explains what to load instead."""
        spec = AnticipationSpec(task="mlm", provenance=export_provenance(self.cfg))
        return write_model_folder(out_dir, self.model, spec, tokenizer=self.tokenizer)


class AnticipationTeacherModule(_AnticipationModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.tokenizer = load_tokenizer(cfg.data.tokenizer)
        self.model = build_teacher(cfg, self.vocab, self.tokenizer)
        self._class_weights: dict[str, torch.Tensor] | None = None

    def forward(self, batch):
        return self.model(batch["input_ids"], batch["attention_mask"])

    def on_fit_start(self) -> None:
        if self.cfg.model.class_weights:
            train: HistoryTexts = self.trainer.datamodule.splits.dataset("train")
            self._class_weights = {head: w.to(self.device) for head, w in train.class_weights(self.vocab).items()}

    def training_step(self, batch, batch_idx):
        m: TeacherModelConfig = self.cfg.model
        out = self(batch)
        loss = self._heads_loss(out, batch, m, self._class_weights)
        if m.mlm_weight:
            mlm = masked_lm_loss(self.model, self.tokenizer, batch, m.mlm_probability)
            self.log("train/mlm", mlm, batch_size=batch["input_ids"].shape[0])
            loss = loss + m.mlm_weight * mlm
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["action"].shape[0])
        return loss

    @torch.no_grad()
    def predict_split(self, split: str) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Teacher logits and pooled features of every query of ``split`` (eval mode)."""
        splits = AnticipationSplits(self.cfg.data, self.cfg.seed)
        ds = splits.annotation_split(split)
        was_training, outputs = self.model.training, []
        self.model.eval()
        for batch in DataLoader(ds, batch_size=self.cfg.data.eval_batch_size, collate_fn=splits.collate_fn(split)):
            out = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            outputs.append((out["action"].float().cpu(), out["features"].float().cpu()))
        self.model.train(was_training)
        logits, feats = (torch.cat(part) for part in zip(*outputs, strict=True))
        return [q.uid for q in ds.queries], logits, feats

    def export_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """A model folder (weights, tokenizer, history text layout, action names) plus the
        teacher's predictions, ``predictions/<split>.safetensors`` per ``model.export_splits``."""
        d: AnticipationDataConfig = self.cfg.data
        predictions = {split: self.predict_split(split) for split in self.cfg.model.export_splits}

        def write_predictions(folder: Path) -> None:
            for split, (uids, logits, feats) in predictions.items():
                info = {"recipe": self.cfg.recipe, "split": split, "format": d.format, "hist_len": d.hist_len,
                        "model": self.model.config.to_dict(), "in_sample": split == d.train_split}
                save_teacher_predictions(folder / "predictions" / f"{split}.safetensors", uids, logits, feats,
                                         info=info, overwrite=True)

        spec = self._spec("teacher", text=HistoryTextSpec(max_len=d.max_text_len, hist_len=d.hist_len))
        return write_model_folder(out_dir, self.model, spec, tokenizer=self.tokenizer, extra=write_predictions)


class AnticipationStudentModule(_AnticipationModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        m: StudentModelConfig = cfg.model
        d: AnticipationDataConfig = cfg.data
        for weight in ("feat_kd_weight", "kd_weight"):
            if getattr(m, weight) and not d.teacher_predictions:
                raise ConfigError(f"model.{weight} needs data.teacher_predictions (a teacher export's predictions)")
        # feature KD regresses the teacher's pooled features of each training clip, looked up by uid
        self._teacher_store = TeacherPredictions(d.teacher_predictions) if m.feat_kd_weight else None
        if self._teacher_store is not None and self._teacher_store.features is None:
            raise ConfigError(f"{d.teacher_predictions}: holds no teacher features for model.feat_kd_weight")
        teacher_dim = None if self._teacher_store is None else int(self._teacher_store.features.shape[1])
        if m.init:
            self.model = load_pretrained(m.init).train()
        else:
            self.model = create_model(m.name, feature_dim=m.feature_dim or FeatureStore(d.features).dim,
                                      max_rows=d.max_rows, teacher_feature_dim=teacher_dim, **self.vocab.head_sizes)

    def forward(self, batch):
        return self.model(batch["feats"], batch["mask"])

    def training_step(self, batch, batch_idx):
        if "feats" not in batch:  # every clip was skipped: Lightning skips the step
            return None
        m: StudentModelConfig = self.cfg.model
        out = self(batch)
        n = batch["action"].shape[0]
        loss = self._heads_loss(out, batch, m)
        if m.kd_weight:
            kd = kd_kl_loss(out["action"], batch["teacher"], m.kd_temperature, top_k=m.kd_top_k,
                            reduction=m.kd_reduction, selection=m.kd_selection, mask=batch["has_teacher"])
            self.log("train/kd", kd, batch_size=n)
            loss = loss + m.kd_weight * kd
        if m.feat_kd_weight:
            ds: ObservedClips = self.trainer.datamodule.splits.dataset("train")
            uids = [ds.queries[i].uid for i in batch["index"].tolist()]
            target, found = self._teacher_store.lookup(uids, fallback="uniform", what="features")
            feat = hidden_regression_loss(out["projected_features"], target.to(self.device), found.to(self.device),
                                          kind=m.feat_kd_kind)
            self.log("train/feat_kd", feat, batch_size=n)
            loss = loss + m.feat_kd_weight * feat
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def export_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """A self-contained model folder: weights, the feature store's backbone (and precision),
        the observation its evaluation used (feature rate, newest ``data.max_rows`` rows,
        anticipation gap) and the class names, so ``videolang.load`` anticipates alike."""
        d: AnticipationDataConfig = self.cfg.data
        backbone, backbone_spec = backbone_from_store(d.features)
        rate = feature_rows_per_second(d.features, d.feature_rate)
        spec = self._spec("anticipation", video=VideoFeaturesSpec(backbone=backbone_spec, feature_rate=rate,
                                                                  max_len=d.max_rows))
        return write_model_folder(out_dir, self.model, spec, backbone=backbone)


register_recipe("anticipation.teacher", AnticipationTeacherModule, AnticipationSplits, TeacherModelConfig,
                AnticipationTeacherDataConfig)
register_recipe("anticipation.mlm", AnticipationMLMModule, AnticipationSplits, TeacherModelConfig,
                AnticipationMLMDataConfig)
register_recipe("anticipation.student", AnticipationStudentModule, AnticipationSplits, StudentModelConfig,
                AnticipationStudentDataConfig)
