"""VidLanKD: a video-language teacher distilled into a text-only BERT (Tang et al., 2021).

:class:`VidLanKDTeacher` (text BERT + MLM head + :class:`VideoTower` over per-second clip
features), :class:`VidLanKDStudent` (text BERT + MLM head + the NST and contrastive KD heads;
the teacher only ever sees text during KD) and :class:`VidLanKDClassifier` (GLUE), all on
:class:`~videolang.models.bert.BertEncoder`; :mod:`videolang.models.convert.vidlankd` loads the
original checkpoints. Layouts and the differences from the original (each with a switch):
docs/vidlankd.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from videolang.config_types import dataclass_from_dict
from videolang.errors import ConfigError
from videolang.models.bert import BertConfig, BertEncoder, BertMLMHead
from videolang.models.layers import ProjectionHead, masked_mean
from videolang.models.weights import load_strict

log = logging.getLogger(__name__)

__all__ = [
    "VidLanKDClassifier",
    "VidLanKDClassifierConfig",
    "VidLanKDStudent",
    "VidLanKDStudentConfig",
    "VidLanKDTeacher",
    "VidLanKDTeacherConfig",
    "VideoTower",
    "masked_mlm_logits",
]


def _bert_from(d: dict, key: str, source: str) -> BertConfig | None:
    value = d.get(key)
    if value is None or isinstance(value, BertConfig):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: '{key}' must be a BERT config mapping, got {type(value).__name__}")
    return BertConfig.from_dict(value, source=f"{source} '{key}'")


def _from_dict(cls: type, d: Mapping[str, Any], source: str) -> Any:
    """``cls`` from a config mapping whose BERT sections may carry Hugging Face extras."""
    d = dict(d)
    for key in ("bert", "video"):
        if key in d:
            d[key] = _bert_from(d, key, source)
    return dataclass_from_dict(cls, d, source, ignore=("architecture", "model_type"))


@dataclass
class VidLanKDTeacherConfig:
    """Architecture of the video-language teacher (saved as ``config.json``)."""

    bert: BertConfig = field(default_factory=BertConfig)
    video: BertConfig | None = None  # video transformer; None: the same config as ``bert``
    feature_dim: int = 4096  # 2048 2D + 2048 3D features in the original
    video_inner_dim: int = 1024  # the original's Linear(F, 1024) -> Linear(1024, H)
    max_video_len: int = 384
    video_dropout: float = 0.3  # inside mlp_map
    # LayerNorm over each input feature row (not in the original): features with a small spread
    # (pooled pixels, un-normalised CNN outputs) otherwise vanish under the position embeddings.
    video_input_norm: bool = False
    # "first": tanh pooler over the first frame (the original); "mean": masked mean of the
    # last hidden states over the valid frames, then the pooler.
    video_pooling: Literal["first", "mean"] = "first"
    double_video_embeddings: bool = False  # True: the original's double position/type embedding
    tie_word_embeddings: bool = True
    tokenizer: str = "minilm"  # bert-base-uncased word pieces

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VidLanKDTeacherConfig:
        return _from_dict(cls, d, "VidLanKD teacher config")

    def to_dict(self) -> dict:
        return {**asdict(self), "architecture": "vidlankd-teacher"}

    @property
    def video_bert(self) -> BertConfig:
        return self.video if self.video is not None else self.bert


@dataclass
class VidLanKDStudentConfig:
    """Architecture of the text-only student."""

    bert: BertConfig = field(default_factory=BertConfig)
    nst_head: bool = True  # the original's kd1_student_head (NST / MMD)
    contrastive_head: bool = True  # the original's kd2_student_head (token NT-Xent, "CRD")
    teacher_hidden_size: int | None = None  # KD head output size; None: the student's hidden size
    tie_word_embeddings: bool = True
    tokenizer: str = "minilm"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VidLanKDStudentConfig:
        return _from_dict(cls, d, "VidLanKD student config")

    def to_dict(self) -> dict:
        return {**asdict(self), "architecture": "vidlankd-student"}


@dataclass
class VidLanKDClassifierConfig:
    """A BERT sequence classifier / regressor for GLUE fine-tuning."""

    bert: BertConfig = field(default_factory=BertConfig)
    num_labels: int = 2
    problem: Literal["classification", "regression"] = "classification"
    classifier_dropout: float | None = None  # None: bert.hidden_dropout_prob
    tokenizer: str = "minilm"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VidLanKDClassifierConfig:
        cfg = _from_dict(cls, d, "VidLanKD classifier config")
        if cfg.problem == "regression" and cfg.num_labels != 1:
            raise ConfigError(f"a regression head has num_labels 1, got {cfg.num_labels}")
        return cfg

    def to_dict(self) -> dict:
        return {**asdict(self), "architecture": "vidlankd-classifier"}


# ---------------------------------------------------------------------------------------------
# heads


def masked_mlm_logits(model: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM logits at the labelled positions only, ``(N, V)``, and their targets ``(N,)``.

    The original scores every position and lets cross-entropy ignore -100; scoring only the
    ~15% chosen tokens gives the same loss at a fraction of the vocabulary matmul.
    """
    chosen = labels != -100
    logits = model.cls.predictions(hidden[chosen], model.bert.embeddings.word_embeddings.weight)
    return logits, labels[chosen]


def _l2(x: torch.Tensor) -> torch.Tensor:
    # x / ||x|| as the original (no epsilon: a zero vector would be a bug upstream).
    return x / x.norm(dim=-1, keepdim=True)


class KDHead(nn.Module):
    """The original's ``BertVLMSimpleHead`` / ``BertVLMHingeHead``: dense, GELU, LayerNorm,
    dense, per-token L2 normalisation (:class:`ProjectionHead` + L2)."""

    def __init__(self, hidden_size: int, out_size: int, eps: float):
        super().__init__()
        self.proj = ProjectionHead(hidden_size, out_size, hidden_dim=hidden_size, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _l2(self.proj(x))


# ---------------------------------------------------------------------------------------------
# teacher


class VideoTower(nn.Module):
    """Clip features ``(B, T, F)`` + frame mask ``(B, T)`` -> unit video embeddings ``(B, H)``."""

    def __init__(self, cfg: VidLanKDTeacherConfig):
        super().__init__()
        vb = cfg.video_bert
        self.double_embeddings = cfg.double_video_embeddings
        if cfg.video_pooling not in ("first", "mean"):
            raise ConfigError(f"video_pooling must be 'first' or 'mean', got {cfg.video_pooling!r}")
        self.pooling = cfg.video_pooling
        self.max_len = cfg.max_video_len
        if cfg.max_video_len > vb.max_position_embeddings:
            raise ConfigError(f"max_video_len {cfg.max_video_len} exceeds the video BERT's "
                              f"max_position_embeddings {vb.max_position_embeddings}")
        if vb.type_vocab_size < 2:
            raise ConfigError("the video BERT needs type_vocab_size >= 2 (video tokens have type 1)")
        self.input_norm = nn.LayerNorm(cfg.feature_dim, eps=vb.layer_norm_eps) if cfg.video_input_norm else None
        self.feature_proj = nn.Sequential(nn.Linear(cfg.feature_dim, cfg.video_inner_dim),
                                          nn.Linear(cfg.video_inner_dim, vb.hidden_size))
        self.bert = BertEncoder(vb)
        del self.bert.embeddings.word_embeddings  # video tokens come as inputs_embeds only
        self.pooler = nn.Linear(vb.hidden_size, vb.hidden_size)
        self.mlp_map = nn.Sequential(nn.Linear(vb.hidden_size, vb.hidden_size), nn.ReLU(),
                                     nn.Dropout(cfg.video_dropout), nn.Linear(vb.hidden_size, vb.hidden_size))
        for module in (self.feature_proj, self.pooler, self.mlp_map):
            module.apply(self.bert._init_weights)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = feats.shape
        if t > self.max_len:
            raise ValueError(f"{t} video frames exceed max_video_len={self.max_len}")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=feats.device)
        emb = self.bert.embeddings
        types = torch.ones(b, t, dtype=torch.long, device=feats.device)
        x = self.feature_proj(feats if self.input_norm is None else self.input_norm(feats))
        if self.double_embeddings:  # the original's manual embedding before HF BertModel's own
            pos = emb.position_embeddings(torch.arange(t, device=feats.device))
            x = emb.dropout(emb.LayerNorm(x + pos + emb.token_type_embeddings(types)))
        hidden = self.bert(inputs_embeds=x, token_type_ids=types, attention_mask=mask.bool())
        summary = masked_mean(hidden, mask) if self.pooling == "mean" else hidden[:, 0]
        pooled = torch.tanh(self.pooler(summary))
        return _l2(self.mlp_map(pooled))


class VidLanKDTeacher(nn.Module):
    """Text BERT + MLM head + :class:`VideoTower`.

    ``forward(input_ids, attention_mask, video_feats, video_mask, mlm_labels=None)`` returns a
    dict: ``hidden`` (B, L, H) last hidden states, ``token_emb`` (B, L, H) unit per token and
    zero at padding (the hinge loss's language side), ``video_emb`` (B, H) when video is given,
    and ``mlm_logits`` (N, V) / ``mlm_targets`` (N,) at the labelled positions when
    ``mlm_labels`` is given, else ``mlm_logits`` (B, L, V) for every position.
    """

    def __init__(self, cfg: VidLanKDTeacherConfig):
        super().__init__()
        self.config = cfg
        self.bert = BertEncoder(cfg.bert)
        self.cls = nn.Module()
        self.cls.predictions = BertMLMHead(cfg.bert, tied=cfg.tie_word_embeddings)
        self.cls.predictions.apply(self.bert._init_weights)
        self.video = VideoTower(cfg)

    def text_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden states of the text BERT: what the student distils from."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.bert.pad_token_id
        return self.bert(input_ids, attention_mask=attention_mask.bool())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        video_feats: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if attention_mask is None:
            attention_mask = input_ids != self.config.bert.pad_token_id
        hidden = self.text_hidden(input_ids, attention_mask)
        out = {"hidden": hidden, "token_emb": _l2(hidden) * attention_mask.unsqueeze(-1).to(hidden.dtype)}
        if video_feats is not None:
            out["video_emb"] = self.video(video_feats, video_mask)
        if mlm_labels is not None:
            out["mlm_logits"], out["mlm_targets"] = masked_mlm_logits(self, hidden, mlm_labels)
        else:
            out["mlm_logits"] = self.cls.predictions(hidden, self.bert.embeddings.word_embeddings.weight)
        return out

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1, self.config.bert.vocab_size, (batch_size, 7), generator=g)
        mask = torch.ones_like(ids, dtype=torch.bool)
        mask[0, 5:] = False
        ids = ids.masked_fill(~mask, self.config.bert.pad_token_id)
        feats = torch.randn(batch_size, 4, self.config.feature_dim, generator=g)
        vmask = torch.ones(batch_size, 4, dtype=torch.bool)
        vmask[-1, 3:] = False
        labels = torch.full_like(ids, -100)
        labels[:, 2] = ids[:, 2]
        return {"input_ids": ids, "attention_mask": mask, "video_feats": feats, "video_mask": vmask,
                "mlm_labels": labels}


# ---------------------------------------------------------------------------------------------
# student and classifier


class VidLanKDStudent(nn.Module):
    """Text-only BERT with the MLM head and the KD heads.

    ``forward(input_ids, attention_mask, mlm_labels=None)`` returns ``hidden`` (B, L, H),
    ``mlm_logits`` (as the teacher), and the per-token unit vectors ``nst`` / ``contrastive``
    (B, L, D) of the KD heads that exist.
    """

    def __init__(self, cfg: VidLanKDStudentConfig):
        super().__init__()
        self.config = cfg
        self.bert = BertEncoder(cfg.bert)
        self.cls = nn.Module()
        self.cls.predictions = BertMLMHead(cfg.bert, tied=cfg.tie_word_embeddings)
        h, eps = cfg.bert.hidden_size, cfg.bert.layer_norm_eps
        out = cfg.teacher_hidden_size or h
        self.nst_head = KDHead(h, out, eps) if cfg.nst_head else None
        self.contrastive_head = KDHead(h, out, eps) if cfg.contrastive_head else None
        for module in (self.cls.predictions, self.nst_head, self.contrastive_head):
            if module is not None:
                module.apply(self.bert._init_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                mlm_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if attention_mask is None:
            attention_mask = input_ids != self.config.bert.pad_token_id
        hidden = self.bert(input_ids, attention_mask=attention_mask.bool())
        out = {"hidden": hidden}
        if mlm_labels is not None:
            out["mlm_logits"], out["mlm_targets"] = masked_mlm_logits(self, hidden, mlm_labels)
        else:
            out["mlm_logits"] = self.cls.predictions(hidden, self.bert.embeddings.word_embeddings.weight)
        if self.nst_head is not None:
            out["nst"] = self.nst_head(hidden)
        if self.contrastive_head is not None:
            out["contrastive"] = self.contrastive_head(hidden)
        return out

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1, self.config.bert.vocab_size, (batch_size, 7), generator=g)
        labels = torch.full_like(ids, -100)
        labels[:, 3] = ids[:, 3]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool), "mlm_labels": labels}


class VidLanKDClassifier(nn.Module):
    """BERT -> tanh pooler over [CLS] -> dropout -> linear: logits ``(B, num_labels)``
    (``(B,)`` scores for regression). The pooler starts fresh, as the original's GLUE runs
    (its students are ``BertForMaskedLM`` checkpoints without a pooler)."""

    def __init__(self, cfg: VidLanKDClassifierConfig):
        super().__init__()
        self.config = cfg
        self.bert = BertEncoder(cfg.bert)
        h = cfg.bert.hidden_size
        self.pooler = nn.Linear(h, h)
        p = cfg.bert.hidden_dropout_prob if cfg.classifier_dropout is None else cfg.classifier_dropout
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(h, cfg.num_labels)
        for module in (self.pooler, self.classifier):
            module.apply(self.bert._init_weights)

    @classmethod
    def from_encoder(cls, encoder: BertEncoder, num_labels: int, *, problem: str = "classification",
                     tokenizer: str = "minilm") -> VidLanKDClassifier:
        """A classifier whose BERT starts from ``encoder``'s weights (student, teacher text
        tower, or any local BERT); the pooler and classifier are new."""
        cfg = VidLanKDClassifierConfig(bert=encoder.config, num_labels=num_labels, problem=problem,
                                       tokenizer=tokenizer)
        model = cls(cfg)
        load_strict(model.bert, encoder.state_dict(), source="the encoder to fine-tune")
        return model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = input_ids != self.config.bert.pad_token_id
        hidden = self.bert(input_ids, attention_mask=attention_mask.bool(), token_type_ids=token_type_ids)
        logits = self.classifier(self.dropout(torch.tanh(self.pooler(hidden[:, 0]))))
        return logits.squeeze(-1) if self.config.problem == "regression" else logits

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1, self.config.bert.vocab_size, (batch_size, 6), generator=g)
        types = torch.zeros_like(ids)
        types[:, 3:] = 1
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool), "token_type_ids": types}


# Registry entry (videolang.models.registry) and the overrides that shrink any of our configs to
# a CPU-test size (registry contract).
ARCHITECTURES = {
    "vidlankd-teacher": (VidLanKDTeacherConfig.from_dict, VidLanKDTeacher),
    "vidlankd-student": (VidLanKDStudentConfig.from_dict, VidLanKDStudent),
    "vidlankd-classifier": (VidLanKDClassifierConfig.from_dict, VidLanKDClassifier),
}
TEST_OVERRIDES: dict[str, Any] = {
    "bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 2,
    "bert.intermediate_size": 64, "bert.vocab_size": 100,
}
