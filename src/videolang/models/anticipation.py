"""LM-to-video action anticipation ("Text-Derived Knowledge Helps Vision", Ghosh et al., 2023).

Two models, trained in turn: :class:`AnticipationTeacher`, a ``transformers`` encoder built from
a config or a local folder (no download) that reads the text of the past actions, and
:class:`AnticipationStudent`, a small causal AVT-h-like transformer over per-time-step video
features that predicts the action starting after the anticipation gap. Both have action, verb
and noun heads. Details and the differences from the original: docs/anticipation.md ("Models").
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from videolang.config_types import dataclass_from_dict
from videolang.errors import ConfigError
from videolang.models.layers import TransformerLayer

__all__ = [
    "ARCHITECTURES",
    "TEACHER_TYPES",
    "TEST_OVERRIDES",
    "AnticipationStudent",
    "AnticipationStudentConfig",
    "AnticipationTeacher",
    "AnticipationTeacherConfig",
    "build_hf_config",
]

TEACHER_TYPES = ("bert", "roberta", "distilbert", "albert", "deberta", "electra")


def _from_dict(cls: type, d: dict, what: str) -> Any:
    return dataclass_from_dict(cls, d, f"{what} config", ignore=("architecture",))


# --------------------------------------------------------------------------------------------
# teacher


@dataclass
class AnticipationTeacherConfig:
    """Teacher architecture. The size keys are mapped onto each ``model_type``'s own names
    (distilbert: ``dim``, ``n_layers`` ...); ``encoder_options`` adds any other key of the
    ``transformers`` config (e.g. ``{"embedding_size": 128}`` for albert / electra)."""

    model_type: str = "bert"
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    dropout: float = 0.1
    pad_token_id: int = 0
    encoder_options: dict[str, Any] = field(default_factory=dict)
    # A local transformers folder (save_pretrained layout) whose weights initialise the
    # encoder; None: random init from the config above. Never downloads.
    text_pretrained: str | None = None
    num_actions: int = 106
    num_verbs: int = 19
    num_nouns: int = 51

    def __post_init__(self) -> None:
        if self.model_type not in TEACHER_TYPES:
            raise ConfigError(f"teacher model_type {self.model_type!r}: use one of {', '.join(TEACHER_TYPES)}")

    @classmethod
    def from_dict(cls, d: dict) -> AnticipationTeacherConfig:
        return _from_dict(cls, d, "anticipation teacher")

    def to_dict(self) -> dict:
        return {**asdict(self), "architecture": "anticipation-teacher"}


def build_hf_config(cfg: AnticipationTeacherConfig):
    """The ``transformers`` config of the teacher's encoder (no network access)."""
    from transformers import AutoConfig

    if cfg.model_type == "distilbert":
        sizes = {"dim": cfg.hidden_size, "n_layers": cfg.num_layers, "n_heads": cfg.num_heads,
                 "hidden_dim": cfg.intermediate_size, "dropout": cfg.dropout, "attention_dropout": cfg.dropout}
    else:
        sizes = {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
                 "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.intermediate_size,
                 "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout}
    positions = cfg.max_position_embeddings
    if cfg.model_type == "roberta":
        positions += cfg.pad_token_id + 1  # RoBERTa's positions start after the padding index
    options = {"vocab_size": cfg.vocab_size, "max_position_embeddings": positions,
               "pad_token_id": cfg.pad_token_id, **sizes, **cfg.encoder_options}
    try:
        return AutoConfig.for_model(cfg.model_type, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"teacher encoder config ({cfg.model_type}): {exc}") from exc


def _untie_output_embeddings(lm: nn.Module) -> None:
    """Give every shared parameter (the MLM decoder's weight and bias are the word embeddings
    and the head's bias in HF masked LMs) its own copy, equal at the start.

    safetensors (our ``save_pretrained``) refuses tensors that share memory; the copies then
    train separately (an untied MLM decoder).
    """
    seen: set[int] = set()
    for name, param in list(lm.named_parameters(remove_duplicate=False)):
        if id(param) in seen:
            owner_name, _, attr = name.rpartition(".")
            owner = lm.get_submodule(owner_name) if owner_name else lm
            setattr(owner, attr, nn.Parameter(param.detach().clone()))
        seen.add(id(param))
    lm.config.tie_word_embeddings = False


class AnticipationTeacher(nn.Module):
    """A text encoder with MLM and action / verb / noun heads on the first token."""

    def __init__(self, config: AnticipationTeacherConfig):
        super().__init__()
        from transformers import AutoModelForMaskedLM

        self.config = config
        if config.text_pretrained:
            path = os.fspath(config.text_pretrained)
            if not os.path.isdir(path):
                raise ConfigError(f"teacher text_pretrained {path!r}: not a local folder (nothing is downloaded)")
            self.lm = AutoModelForMaskedLM.from_pretrained(path, local_files_only=True)
        else:
            self.lm = AutoModelForMaskedLM.from_config(build_hf_config(config))
        _untie_output_embeddings(self.lm)
        width = self.feature_dim
        self.dropout = nn.Dropout(config.dropout)
        self.action_head = nn.Linear(width, config.num_actions)
        self.verb_head = nn.Linear(width, config.num_verbs)
        self.noun_head = nn.Linear(width, config.num_nouns)

    @property
    def feature_dim(self) -> int:
        hf = self.lm.config
        return int(getattr(hf, "dim", None) or hf.hidden_size)

    @property
    def encoder(self) -> nn.Module:
        return self.lm.base_model

    def mlm_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, L, vocab)`` masked-LM logits (action-text pretraining)."""
        return self.lm(input_ids=input_ids, attention_mask=attention_mask).logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = hidden[:, 0]
        x = self.dropout(pooled)
        return {"action": self.action_head(x), "verb": self.verb_head(x), "noun": self.noun_head(x),
                "features": pooled}

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        length = 8
        ids = torch.randint(5, self.lm.config.vocab_size, (batch_size, length))
        mask = torch.ones(batch_size, length, dtype=torch.long)
        mask[0, length - 2 :] = 0
        ids[0, length - 2 :] = self.config.pad_token_id
        return {"input_ids": ids, "attention_mask": mask}


# --------------------------------------------------------------------------------------------
# student


@dataclass
class AnticipationStudentConfig:
    """Causal transformer over ``feature_dim``-d rows, at most ``max_rows`` observed steps."""

    feature_dim: int = 2048
    hidden_size: int = 512
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 2048
    max_rows: int = 32
    dropout: float = 0.2
    num_actions: int = 106
    num_verbs: int = 19
    num_nouns: int = 51
    # Width of the teacher's pooled feature: adds a learned projection for feature KD.
    teacher_feature_dim: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> AnticipationStudentConfig:
        return _from_dict(cls, d, "anticipation student")

    def to_dict(self) -> dict:
        return {**asdict(self), "architecture": "anticipation-student"}


class AnticipationStudent(nn.Module):
    """``forward(feats (B, T, D), mask (B, T) bool)`` -> logits of the next action (and its verb
    and noun) from the newest observed step, plus its pooled ``features``. Rows are
    right-padded; position ``p`` of a row is its distance to the sample's newest row."""

    def __init__(self, config: AnticipationStudentConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.input_proj = nn.Linear(config.feature_dim, h)
        self.position = nn.Embedding(config.max_rows, h)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(h, config.num_heads, config.intermediate_size, dropout=config.dropout,
                             attention_dropout=config.dropout, layer_norm_eps=1e-6, norm_first=True)
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(h, eps=1e-6)
        self.action_head = nn.Linear(h, config.num_actions)
        self.verb_head = nn.Linear(h, config.num_verbs)
        self.noun_head = nn.Linear(h, config.num_nouns)
        self.feature_proj = (nn.Linear(h, config.teacher_feature_dim)
                             if config.teacher_feature_dim else None)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        b, t, _ = feats.shape
        if t > self.config.max_rows:
            raise ValueError(f"{t} observed rows exceed the student's max_rows={self.config.max_rows}")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=feats.device)
        mask = mask.bool()
        lengths = mask.sum(dim=1)
        if bool((lengths == 0).any()):
            raise ValueError("every sample needs at least one observed row")
        steps = torch.arange(t, device=feats.device)
        back = (lengths[:, None] - 1 - steps[None]).clamp(min=0)  # distance to the newest row
        x = self.dropout(self.input_proj(feats) + self.position(back))
        causal = torch.ones(t, t, dtype=torch.bool, device=feats.device).tril()
        attn = causal[None] & mask[:, None, :]
        for layer in self.layers:
            x = layer(x, attn)
        x = self.norm(x)
        pooled = x[torch.arange(b, device=feats.device), lengths - 1]
        out = {"action": self.action_head(pooled), "verb": self.verb_head(pooled),
               "noun": self.noun_head(pooled), "features": pooled}
        if self.feature_proj is not None:
            out["projected_features"] = self.feature_proj(pooled)
        return out

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        t = min(5, self.config.max_rows)
        mask = torch.ones(batch_size, t, dtype=torch.bool)
        mask[0, t // 2 + 1 :] = False
        return {"feats": torch.randn(batch_size, t, self.config.feature_dim), "mask": mask}


# --------------------------------------------------------------------------------------------
# registry


def test_overrides(cfg: dict) -> dict[str, Any]:
    """Registry overrides that shrink any anticipation config to a sub-second CPU model."""
    common = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
    if cfg.get("architecture") == "anticipation-teacher":
        return {**common, "vocab_size": 128, "max_position_embeddings": 64, "text_pretrained": None}
    return {**common, "feature_dim": 16, "max_rows": 8}


TEST_OVERRIDES = test_overrides

ARCHITECTURES = {
    "anticipation-teacher": (AnticipationTeacherConfig.from_dict, AnticipationTeacher),
    "anticipation-student": (AnticipationStudentConfig.from_dict, AnticipationStudent),
}
