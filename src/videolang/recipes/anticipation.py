"""Action-anticipation recipes: ``anticipation.mlm`` (masked-LM pretraining of the teacher's
encoder on action text), ``anticipation.teacher`` (a text encoder predicting the next action from
the past ones) and ``anticipation.student`` (a causal video transformer distilled from the
teacher's logits and features). Options and logged metrics: docs/anticipation.md
("Implementation notes").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from videolang.data.anticipation import (
    ActionVocab,
    ObservedClips,
    Query,
    TeacherPredictions,
    build_queries,
    collate_clips,
    history_text,
    history_token_ids,
    read_action_vocab,
    read_segments,
    save_teacher_predictions,
)
from videolang.data.datasets import DeferredDataLoader
from videolang.engine import RecipeModule, RunConfig, register_recipe
from videolang.engine.evaluation import EvaluationBuffer, gather_stage, log_metrics
from videolang.errors import ConfigError
from videolang.losses import mlm_loss
from videolang.losses.distill import hidden_regression_loss, kd_kl_loss
from videolang.metrics.anticipation import anticipation_metrics, many_shot_actions
from videolang.models import create_model, load_pretrained

log = logging.getLogger(__name__)

__all__ = [
    "AnticipationData",
    "AnticipationDataConfig",
    "StudentModelConfig",
    "TeacherModelConfig",
    "class_balanced_weights",
    "read_queries",
]


@dataclass
class AnticipationDataConfig:
    """``data.*`` of the anticipation recipes; each registers a subclass fixing ``objective``."""

    objective: Literal["mlm", "teacher", "student"] = "teacher"  # which items the recipe reads
    format: Literal["synthetic", "epic55", "egtea"] = "synthetic"
    root: str = ""  # world folder / EPIC-55 folder / EGTEA folder
    fps: float | None = None  # EGTEA: frame rate of the frame numbers in the RULSTM lists
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str = "test"
    anticipation_gap: float = 1.0  # seconds between the end of the observation and the action
    min_observed: float = 0.0  # seconds of video a query must observe at least
    history_from_train: bool = False  # EGTEA "gappy" history: train segments as context too
    many_shot_dir: str | None = None  # folder with EPIC_many_shot_{verbs,nouns}.csv
    verb_noun_mode: Literal["marginalize", "decompose"] = "marginalize"  # RULSTM / the repo's verb_action_acc
    absent_classes: Literal["skip", "zero"] = "skip"  # class means: over present classes / all (AVT)
    batch_size: int = 32
    eval_batch_size: int = 256
    num_workers: int = 0
    # teacher
    tokenizer: str = "minilm"
    hist_len: int = 5
    max_text_len: int = 128
    mlm_corpus: str | None = None  # anticipation.mlm: action-sequence text, one sequence per line
    # student
    features: str = ""  # feature store (videolang extract-features --out)
    feature_rate: float | None = None  # rows per second; None: from the store's extraction.json
    max_rows: int = 20  # observed rows kept (the newest)
    teacher_predictions: str | None = None  # a teacher export's predictions/<train split>.safetensors
    missing_teacher: Literal["error", "uniform"] = "error"  # uniform: KD term masked for that clip


@dataclass
class AnticipationMLMDataConfig(AnticipationDataConfig):
    """``data.*`` of ``anticipation.mlm``: lines of ``mlm_corpus``."""

    objective: Literal["mlm"] = "mlm"


@dataclass
class AnticipationTeacherDataConfig(AnticipationDataConfig):
    """``data.*`` of ``anticipation.teacher``: history texts of the queries."""

    objective: Literal["teacher"] = "teacher"


@dataclass
class AnticipationStudentDataConfig(AnticipationDataConfig):
    """``data.*`` of ``anticipation.student``: observed feature rows of the queries."""

    objective: Literal["student"] = "student"


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


# --------------------------------------------------------------------------------------------
# data


def read_queries(d: AnticipationDataConfig, split: str, vocab: ActionVocab) -> list[Query]:
    """The anticipation queries of ``split`` (see :func:`~videolang.data.anticipation.build_queries`)."""
    if not d.root:
        raise ConfigError("data.root: give the dataset folder (synthetic world, EPIC-55 or EGTEA)")
    segments = read_segments(d.format, d.root, split, vocab=vocab, fps=d.fps)
    context = (read_segments(d.format, d.root, d.train_split, vocab=vocab, fps=d.fps)
               if d.history_from_train and split != d.train_split else [])
    queries = build_queries(segments, anticipation_gap=d.anticipation_gap, min_observed=d.min_observed,
                            context=context)
    if not queries:
        raise ConfigError(f"data.root {d.root}: no anticipation queries in split {split!r} "
                          f"(gap {d.anticipation_gap} s, min_observed {d.min_observed} s)")
    return queries


def _many_shot(d: AnticipationDataConfig, vocab: ActionVocab) -> list[int] | None:
    if not d.many_shot_dir:
        return None
    import csv

    def ids(name: str) -> set[int]:
        path = Path(d.many_shot_dir) / name
        if not path.is_file():
            raise ConfigError(f"data.many_shot_dir: {path} not found")
        with open(path, newline="", encoding="utf-8") as f:
            return {int(row[0]) for row in list(csv.reader(f))[1:] if row}

    return many_shot_actions(vocab.verbs, vocab.nouns, ids("EPIC_many_shot_verbs.csv"),
                             ids("EPIC_many_shot_nouns.csv"), rule="or")


class HistoryTexts(Dataset):
    """Teacher items: the history text of each query and its targets."""

    def __init__(self, queries: list[Query], vocab: ActionVocab, hist_len: int):
        self.queries = queries
        self.texts = [history_text(q.history, vocab, hist_len) for q in queries]

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        q = self.queries[i]
        return {"text": self.texts[i], "action": q.action, "verb": q.verb, "noun": q.noun, "index": i}


class TextCollator:
    """Tokenises a batch with :func:`~videolang.data.anticipation.history_token_ids` and pads it."""

    def __init__(self, tokenizer: Any, max_len: int):
        if max_len < 3:
            raise ConfigError(f"data.max_text_len must be >= 3, got {max_len}")
        self.tok, self.max_len = tokenizer, max_len
        self.pad = tokenizer.pad_token_id or 0

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = history_token_ids(self.tok, [it["text"] for it in items], self.max_len)
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r)
            mask[b, : len(r)] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        for key in ("action", "verb", "noun", "index"):
            if key in items[0]:
                out[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
        return out


class CorpusLines(Dataset):
    """``anticipation.mlm`` items: the non-empty lines of an action-sequence text file
    (``text/action_sequences.txt`` of the synthetic world; Recipe1M action text)."""

    def __init__(self, path: str):
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"data.mlm_corpus: file not found: {p}")
        self.lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not self.lines:
            raise ConfigError(f"data.mlm_corpus: {p} has no text")

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"text": self.lines[i]}


def _check_vocab(m: TeacherModelConfig, tokens: int, tokenizer: str) -> None:
    """A tokenizer larger than the teacher's embedding table would index out of range."""
    if m.init or m.text_pretrained:
        return
    from videolang.models.registry import get_model_config

    size = m.vocab_size or get_model_config(m.name).get("vocab_size")
    if size and tokens > size:
        raise ConfigError(f"data.tokenizer {tokenizer!r} has {tokens} tokens, the teacher {m.name!r} embeds "
                          f"{size}: set model.vocab_size={tokens}")


def feature_rate(d: AnticipationDataConfig) -> float:
    if d.feature_rate is not None:
        return float(d.feature_rate)
    from videolang.recipes.videoclip import extraction_info

    return float(extraction_info(d.features).get("rows_per_second", 1.0))


class AnticipationData(L.LightningDataModule):
    """Teacher (history text) or student (observed features) batches, by recipe."""

    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg, self.d = cfg, cfg.data
        self.student = self.d.objective == "student"
        self.mlm = self.d.objective == "mlm"
        self.vocab = read_action_vocab(self.d.format, self.d.root)
        self._sets: dict[str, Dataset] = {}
        self._collate: Any = None

    def dataset(self, split: str) -> Dataset:
        if split not in self._sets:
            self._sets[split] = self._build(split)
        return self._sets[split]

    def _build(self, split: str) -> Dataset:
        d = self.d
        if not self.student and self._collate is None:
            from videolang.data.text import load_tokenizer

            tok = load_tokenizer(d.tokenizer)
            _check_vocab(self.cfg.model, len(tok), d.tokenizer)
            self._collate = TextCollator(tok, d.max_text_len)
        if self.mlm:
            if not d.mlm_corpus:
                raise ConfigError("data.mlm_corpus: anticipation.mlm needs an action-sequence text file")
            return CorpusLines(d.mlm_corpus)
        queries = read_queries(d, split, self.vocab)
        if not self.student:
            return HistoryTexts(queries, self.vocab, d.hist_len)
        from videolang.data.stores import FeatureStore

        if not d.features:
            raise ConfigError("data.features: the student needs a feature store (videolang extract-features)")
        self._collate = collate_clips
        teacher = None
        if split == d.train_split and d.teacher_predictions:
            teacher = TeacherPredictions(d.teacher_predictions)
            if teacher.num_classes != self.vocab.num_actions:
                raise ConfigError(f"data.teacher_predictions {teacher.path}: {teacher.num_classes} classes, "
                                  f"the dataset has {self.vocab.num_actions} actions")
        return ObservedClips(queries, FeatureStore(d.features), feature_rate(d), d.max_rows,
                             teacher=teacher, missing_teacher=d.missing_teacher)

    def collate(self, items):
        return self._collate(items)

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset(self.d.train_split)
        return DeferredDataLoader(ds, batch_size=self.d.batch_size, shuffle=True, collate_fn=self.collate,
                          drop_last=len(ds) > self.d.batch_size, num_workers=self.d.num_workers)

    def _eval(self, split: str | None) -> DataLoader | list:
        if not split or self.mlm:
            return []
        return DataLoader(self.dataset(split), batch_size=self.d.eval_batch_size, shuffle=False,
                          collate_fn=self.collate, num_workers=self.d.num_workers)

    def val_dataloader(self):
        return self._eval(self.d.val_split)

    def test_dataloader(self):
        return self._eval(self.d.test_split)


def class_balanced_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """sklearn's ``'balanced'`` weights ``n / (n_present * count_c)`` for the classes present;
    absent classes get 1 (they never are a target, so their weight does not matter; the
    original's sklearn ``compute_class_weight`` call fails on them instead)."""
    counts = torch.bincount(targets, minlength=num_classes).double()
    present = counts > 0
    weights = torch.ones(num_classes, dtype=torch.float64)
    weights[present] = targets.numel() / (present.sum() * counts[present])
    return weights.float()


# --------------------------------------------------------------------------------------------
# shared evaluation


class _AnticipationModule(RecipeModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.vocab = read_action_vocab(cfg.data.format, cfg.data.root)
        self.many_shot = _many_shot(cfg.data, self.vocab)
        self._outputs: dict[str, EvaluationBuffer] = {}

    def _collect(self, stage: str, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        self._outputs.setdefault(stage, EvaluationBuffer()).add(
            batch["index"], logits=out["action"].float(), action=batch["action"], verb=batch["verb"],
            noun=batch["noun"])

    def _report(self, stage: str) -> None:
        outputs = gather_stage(self._outputs, stage)
        if not outputs:
            return
        d: AnticipationDataConfig = self.cfg.data
        metrics = anticipation_metrics(outputs["logits"], outputs["action"], action_verbs=self.vocab.verbs,
                                       action_nouns=self.vocab.nouns, verb_targets=outputs["verb"],
                                       noun_targets=outputs["noun"], many_shot=self.many_shot,
                                       verb_noun_mode=d.verb_noun_mode, absent=d.absent_classes)
        log_metrics(self, {f"{stage}/{name}": value for name, value in metrics.items()})

    def validation_step(self, batch, batch_idx):
        self._collect("val", self(batch), batch)

    def on_validation_epoch_end(self):
        self._report("val")

    def test_step(self, batch, batch_idx):
        self._collect("test", self(batch), batch)

    def on_test_epoch_end(self):
        self._report("test")

    def _heads_loss(self, out, batch, m, class_weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        loss = out["action"].new_zeros(())
        for head in ("action", "verb", "noun"):
            w = getattr(m, f"{head}_weight")
            if w:
                weight = class_weights.get(head) if class_weights else None
                ce = F.cross_entropy(out[head], batch[head], weight=weight)
                self.log(f"train/ce_{head}", ce, batch_size=batch[head].shape[0])
                loss = loss + w * ce
        return loss


# --------------------------------------------------------------------------------------------
# teacher


def build_teacher(m: TeacherModelConfig, vocab: ActionVocab) -> nn.Module:
    """The teacher of a run: a saved one (``model.init``) or a registered config sized to the
    dataset's actions, verbs and nouns."""
    if m.init:
        model = load_pretrained(m.init).train()
        sizes = (model.config.num_actions, model.config.num_verbs, model.config.num_nouns)
        if sizes != (vocab.num_actions, vocab.num_verbs, vocab.num_nouns):
            raise ConfigError(f"model.init {m.init}: heads for {sizes} (actions, verbs, nouns), the dataset has "
                              f"{(vocab.num_actions, vocab.num_verbs, vocab.num_nouns)}")
        return model
    overrides: dict[str, Any] = {"num_actions": vocab.num_actions, "num_verbs": vocab.num_verbs,
                                 "num_nouns": vocab.num_nouns}
    if m.model_type:
        overrides["model_type"] = m.model_type
    if m.vocab_size:
        overrides["vocab_size"] = m.vocab_size
    if m.text_pretrained:
        overrides["text_pretrained"] = m.text_pretrained
    return create_model(m.name, **overrides)


class AnticipationMLMModule(RecipeModule):
    """``anticipation.mlm``: masked-LM pretraining of the teacher's encoder on action text (the
    original's Recipe1M stage). The export is a whole teacher (heads untrained) for the
    teacher recipe's ``model.init``."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.model = build_teacher(cfg.model, read_action_vocab(cfg.data.format, cfg.data.root))

    def training_step(self, batch, batch_idx):
        from videolang.data.text import mask_tokens_for

        tok = self.trainer.datamodule._collate.tok
        ids, labels = mask_tokens_for(tok, batch["input_ids"], batch["attention_mask"],
                                      mlm_probability=self.cfg.model.mlm_probability, min_one_masked=True)
        logits = self.model.mlm_logits(ids, batch["attention_mask"])
        loss = mlm_loss(logits, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=ids.shape[0])
        return loss

    def export_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """The encoder and its tokenizer; ``pipeline.json`` says it is an intermediate (a teacher's
        ``model.init``), so ``videolang.load`` explains what to load instead."""
        from videolang.data.text import load_tokenizer
        from videolang.pipelines.anticipation import AnticipationSpec
        from videolang.pipelines.folder import write_model_folder

        spec = AnticipationSpec(task="mlm", provenance=_provenance(self.cfg))
        return write_model_folder(out_dir, self.model, spec, tokenizer=load_tokenizer(self.cfg.data.tokenizer))


def _provenance(cfg: RunConfig) -> dict[str, Any]:
    from videolang.engine.export import export_provenance

    return export_provenance(cfg)


class AnticipationTeacherModule(_AnticipationModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.model = build_teacher(cfg.model, self.vocab)
        self._class_weights: dict[str, torch.Tensor] | None = None
        self._tokenizer = None

    def forward(self, batch):
        return self.model(batch["input_ids"], batch["attention_mask"])

    def on_fit_start(self) -> None:
        m: TeacherModelConfig = self.cfg.model
        if m.class_weights:
            ds = self.trainer.datamodule.dataset(self.cfg.data.train_split)
            sizes = {"action": self.vocab.num_actions, "verb": self.vocab.num_verbs, "noun": self.vocab.num_nouns}
            self._class_weights = {
                head: class_balanced_weights(torch.tensor([getattr(q, head) for q in ds.queries]), n).to(self.device)
                for head, n in sizes.items()
            }

    def training_step(self, batch, batch_idx):
        m: TeacherModelConfig = self.cfg.model
        out = self(batch)
        loss = self._heads_loss(out, batch, m, self._class_weights)
        if m.mlm_weight:
            from videolang.data.text import mask_tokens_for

            tok = self.trainer.datamodule._collate.tok
            ids, labels = mask_tokens_for(tok, batch["input_ids"], batch["attention_mask"],
                                          mlm_probability=m.mlm_probability, min_one_masked=True)
            logits = self.model.mlm_logits(ids, batch["attention_mask"])
            mlm = mlm_loss(logits, labels)
            self.log("train/mlm", mlm, batch_size=ids.shape[0])
            loss = loss + m.mlm_weight * mlm
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["action"].shape[0])
        return loss

    @torch.no_grad()
    def predict_split(self, split: str) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Teacher logits and pooled features of every query of ``split`` (eval mode)."""
        datamodule = AnticipationData(self.cfg)
        ds = datamodule.dataset(split)
        loader = DataLoader(ds, batch_size=self.cfg.data.eval_batch_size, collate_fn=datamodule.collate)
        was_training = self.model.training
        self.model.eval()
        logits, feats = [], []
        for batch in loader:
            out = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            logits.append(out["action"].float().cpu())
            feats.append(out["features"].float().cpu())
        self.model.train(was_training)
        return [q.uid for q in ds.queries], torch.cat(logits), torch.cat(feats)

    def export_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """A model folder (weights, tokenizer, history text layout, action names) plus the
        teacher's predictions, ``predictions/<split>.safetensors`` per ``model.export_splits``."""
        from videolang.data.text import load_tokenizer
        from videolang.pipelines.anticipation import (
            AnticipationSpec,
            HistoryTextSpec,
            action_labels,
        )
        from videolang.pipelines.folder import write_model_folder

        d: AnticipationDataConfig = self.cfg.data
        predictions = {split: self.predict_split(split) for split in self.cfg.model.export_splits}

        def write_predictions(folder: Path) -> None:
            for split, (uids, logits, feats) in predictions.items():
                info = {"recipe": self.cfg.recipe, "split": split, "format": d.format, "hist_len": d.hist_len,
                        "model": self.model.config.to_dict(), "in_sample": split == d.train_split}
                save_teacher_predictions(folder / "predictions" / f"{split}.safetensors", uids, logits, feats,
                                         info=info, overwrite=True)

        spec = AnticipationSpec(task="teacher", text=HistoryTextSpec(max_len=d.max_text_len, hist_len=d.hist_len),
                                labels=action_labels(self.vocab), anticipation_gap=d.anticipation_gap,
                                verb_noun_mode=d.verb_noun_mode, provenance=_provenance(self.cfg))
        return write_model_folder(out_dir, self.model, spec, tokenizer=load_tokenizer(d.tokenizer),
                                  extra=write_predictions)


# --------------------------------------------------------------------------------------------
# student


class AnticipationStudentModule(_AnticipationModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        m: StudentModelConfig = cfg.model
        d: AnticipationDataConfig = cfg.data
        teacher_dim = None
        if m.feat_kd_weight:
            if not d.teacher_predictions:
                raise ConfigError("model.feat_kd_weight needs data.teacher_predictions")
            feats = TeacherPredictions(d.teacher_predictions).features
            if feats is None:
                raise ConfigError(f"{d.teacher_predictions}: holds no teacher features for model.feat_kd_weight")
            teacher_dim = int(feats.shape[1])
        if m.kd_weight and not d.teacher_predictions:
            raise ConfigError("model.kd_weight needs data.teacher_predictions (a teacher export's predictions)")
        if m.init:
            self.model = load_pretrained(m.init).train()
        else:
            from videolang.data.stores import FeatureStore

            dim = m.feature_dim or FeatureStore(d.features).dim
            self.model = create_model(m.name, feature_dim=dim, max_rows=d.max_rows,
                                      num_actions=self.vocab.num_actions, num_verbs=self.vocab.num_verbs,
                                      num_nouns=self.vocab.num_nouns, teacher_feature_dim=teacher_dim)
        if m.feat_kd_weight:
            self._teacher_store = TeacherPredictions(d.teacher_predictions)

    def forward(self, batch):
        return self.model(batch["feats"], batch["mask"])

    def training_step(self, batch, batch_idx):
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
            ds: ObservedClips = self.trainer.datamodule.dataset(self.cfg.data.train_split)
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
        from videolang.pipelines.anticipation import AnticipationSpec, action_labels
        from videolang.pipelines.features import backbone_from_store
        from videolang.pipelines.folder import VideoFeaturesSpec, write_model_folder

        d: AnticipationDataConfig = self.cfg.data
        backbone, backbone_spec = backbone_from_store(d.features)
        spec = AnticipationSpec(
            task="anticipation",
            video=VideoFeaturesSpec(backbone=backbone_spec, feature_rate=feature_rate(d), max_len=d.max_rows),
            labels=action_labels(self.vocab), anticipation_gap=d.anticipation_gap, verb_noun_mode=d.verb_noun_mode,
            provenance=_provenance(self.cfg),
        )
        return write_model_folder(out_dir, self.model, spec, backbone=backbone)


register_recipe("anticipation.teacher", AnticipationTeacherModule, AnticipationData, TeacherModelConfig,
                AnticipationTeacherDataConfig)
register_recipe("anticipation.mlm", AnticipationMLMModule, AnticipationData, TeacherModelConfig,
                AnticipationMLMDataConfig)
register_recipe("anticipation.student", AnticipationStudentModule, AnticipationData, StudentModelConfig,
                AnticipationStudentDataConfig)
