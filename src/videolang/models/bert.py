"""A BERT encoder on SDPA whose parameter names match Hugging Face's ``BertModel``.

Every BERT-shaped tower in videolang. Built from a :class:`BertConfig` (BERT's N(0, 0.02) init)
or loaded from a local HF folder (``config.json`` + ``model.safetensors`` /
``pytorch_model.bin``); nothing is downloaded. The pooler is not built: loading drops its keys
explicitly (:data:`IGNORED_KEYS`), never silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from videolang.errors import ConfigError
from videolang.models.layers import TransformerLayer
from videolang.models.weights import load_strict

__all__ = ["IGNORED_KEYS", "BertConfig", "BertEmbeddings", "BertEncoder", "BertMLMHead", "load_bert_state_dict",
           "load_strict"]

# Keys of HF / original checkpoints we deliberately do not load: position-id buffers (we
# compute them) and the unused pooler.
IGNORED_KEYS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


@dataclass
class BertConfig:
    """The subset of HF ``BertConfig`` a BERT encoder needs (same field names)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config") -> BertConfig:
        """Read the fields we know; HF extras (architectures, model_type, ...) are ignored,
        but a BERT config that needs something we do not implement is an error."""
        act = d.get("hidden_act", "gelu")
        if act != "gelu":
            raise ConfigError(f"{source}: hidden_act {act!r} is not supported (only exact 'gelu')")
        pos = d.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise ConfigError(f"{source}: position_embedding_type {pos!r} is not supported")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return {**asdict(self), "model_type": "bert", "hidden_act": "gelu"}


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (HF names).

    ``inputs_embeds`` replaces the word lookup; VideoCLIP and VLM splice projected video
    features between word embeddings of ``[CLS]`` and ``[SEP]`` this way.
    """

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds")
            inputs_embeds = self.word_embeddings(input_ids)
        b, n, _ = inputs_embeds.shape
        if n > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"sequence of {n} tokens is longer than max_position_embeddings "
                f"({self.position_embeddings.num_embeddings})"
            )
        if position_ids is None:
            position_ids = torch.arange(n, device=inputs_embeds.device).expand(b, n)
        if token_type_ids is None:
            token_type_ids = torch.zeros(b, n, dtype=torch.long, device=inputs_embeds.device)
        x = inputs_embeds + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertEncoder(nn.Module):
    """``embeddings`` + ``encoder.layer.{i}``: returns the last hidden states ``(B, L, H)``.

    ``attention_mask`` may be one mask for all layers, or a list with one mask per layer
    (VLM's per-layer isolation).
    """

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            TransformerLayer(
                cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
                dropout=cfg.hidden_dropout_prob, attention_dropout=cfg.attention_probs_dropout_prob,
                layer_norm_eps=cfg.layer_norm_eps,
            )
            for _ in range(cfg.num_hidden_layers)
        )
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | list[torch.Tensor] | None = None,
        inputs_embeds: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.embeddings(input_ids, inputs_embeds=inputs_embeds, token_type_ids=token_type_ids,
                            position_ids=position_ids)
        return self.encode(x, attention_mask)

    def encode(self, x: torch.Tensor, attention_mask: torch.Tensor | list[torch.Tensor] | None = None) -> torch.Tensor:
        """Run the layers on already embedded ``x`` (B, L, H)."""
        layers = self.encoder.layer
        masks = attention_mask if isinstance(attention_mask, list) else [attention_mask] * len(layers)
        if len(masks) != len(layers):
            raise ValueError(f"{len(masks)} per-layer masks for {len(layers)} layers")
        for layer, mask in zip(layers, masks, strict=True):
            x = layer(x, mask)
        return x

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, num_hidden_layers: int | None = None) -> BertEncoder:
        """Load a local HF BERT directory (``config.json`` + weights); ``num_hidden_layers``
        keeps only the first layers (VideoCLIP's video tower takes BERT's first 6)."""
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ConfigError(f"{path}: no config.json (expected a local Hugging Face BERT directory)")
        raw = json.loads(cfg_file.read_text())
        if raw.get("model_type", "bert") != "bert":
            raise ConfigError(f"{cfg_file}: model_type {raw.get('model_type')!r} is not 'bert'")
        cfg = BertConfig.from_dict(raw, source=str(cfg_file))
        full_layers = cfg.num_hidden_layers
        if num_hidden_layers is not None:
            if num_hidden_layers > full_layers:
                raise ConfigError(f"{path}: has {full_layers} layers, {num_hidden_layers} requested")
            cfg.num_hidden_layers = num_hidden_layers
        model = cls(cfg)
        state = load_bert_state_dict(path)
        drop = {f"encoder.layer.{i}." for i in range(cfg.num_hidden_layers, full_layers)}
        state = {k: v for k, v in state.items() if not any(k.startswith(p) for p in drop)}
        load_strict(model, state, source=str(path), ignore=IGNORED_KEYS)
        return model


class _PredictionTransform(nn.Module):
    """BERT's prediction transform: dense, GELU, LayerNorm (HF names)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertMLMHead(nn.Module):
    """HF ``cls.predictions``: :attr:`transform`, then a vocabulary decoder.

    ``tied``: the decoder weight is the word-embedding matrix, passed to :meth:`forward` (no
    parameter of its own); untied: its own ``decoder.weight``. ``bias``: a ``bias`` vector over
    the vocabulary (BERT, ClipBERT, VidLanKD); MMPT's VLM decoder has none.
    """

    def __init__(self, cfg: BertConfig, *, tied: bool = True, bias: bool = True):
        super().__init__()
        self.transform = _PredictionTransform(cfg)
        self.decoder = None if tied else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if bias else None

    def decode(self, transformed: torch.Tensor, word_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Vocabulary logits of already transformed states (VLM scores frames with them too)."""
        if self.decoder is None and word_embeddings is None:
            raise ValueError("a tied MLM head needs the word embeddings")
        weight = word_embeddings if self.decoder is None else self.decoder.weight
        return F.linear(transformed, weight, self.bias)

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Vocabulary logits ``(..., vocab)`` of hidden states ``(..., hidden)``."""
        return self.decode(self.transform(hidden), word_embeddings)


def load_bert_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights of a local HF BERT directory, with any ``bert.`` prefix removed."""
    path = Path(path)
    st, bin_ = path / "model.safetensors", path / "pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        state = load_file(str(st))
    elif bin_.is_file():
        from videolang.models.weights import load_tensors_file

        state = load_tensors_file(bin_, os.fspath(bin_))
    else:
        raise ConfigError(f"{path}: no model.safetensors or pytorch_model.bin")
    if all(k.startswith("bert.") for k in state if not k.startswith("cls.")):
        state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
    return state
