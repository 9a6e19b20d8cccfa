"""VIMPAC: a factorized-attention transformer over grids of discrete frame tokens.

:class:`VimpacBackbone` maps frame-tokenizer codes ``(B, L, H, W)`` to a CLS vector and hidden
states; :class:`VimpacForPretraining` adds the masked-token and contrastive heads (architecture
``vimpac``), :class:`VimpacForClassification` a classifier (``vimpac-classifier``). Special ids
follow the original: ``[PAD] = codebook_size + 1``, ``[MASK] = codebook_size + 4``. Layout
strings, CLS handling and the differences from the original: docs/vimpac.md ("Model").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from videolang.config_types import dataclass_from_dict
from videolang.errors import ConfigError
from videolang.models import layers

__all__ = [
    "BACKBONE_ARCHITECTURE_KEYS",
    "ContrastiveHead",
    "MaskedTokenHead",
    "SyncBatchNorm1d",
    "VimpacBackbone",
    "VimpacConfig",
    "VimpacForClassification",
    "VimpacForPretraining",
    "parse_layout",
]

_AXES = {"T": 1, "H": 2, "W": 3}  # axis of each letter in a (B, L, H, W, D) tensor
# What fine-tuning keeps of a pretrained backbone's config (the original's args.pickle).
BACKBONE_ARCHITECTURE_KEYS = ("hidden_size", "num_layers", "num_heads", "attention_size", "mlp_size", "layout",
                              "pre_norm", "layer_norm_eps")


def parse_layout(layout: str) -> list[list[str]]:
    """``"T,H|W"`` -> ``[["T"], ["H", "W"]]``; each pattern a set of the letters T, H, W."""
    blocks = [[p.strip().upper() for p in block.split("|")] for block in layout.split(",")]
    for block in blocks:
        for pattern in block:
            if not pattern or set(pattern) - set(_AXES) or len(set(pattern)) != len(pattern):
                raise ConfigError(f"layout {layout!r}: bad attention pattern {pattern!r} "
                                  "(use T, H, W or axis combinations such as HW and THW)")
    return blocks


@dataclass
class VimpacConfig:
    """Architecture of a VIMPAC model (``config.json`` of a saved model)."""

    codebook_size: int = 8192  # tokenizer codes; embedding rows = codebook_size + 5
    hidden_size: int = 512
    num_layers: int = 6
    num_heads: int | None = None  # None: hidden_size // 64 (the original)
    attention_size: int | None = None  # None: hidden_size (Large-Half: hidden_size // 2)
    mlp_size: int | None = None  # None: 4 * hidden_size (Large-Half: 2 * hidden_size)
    layout: str = "T,H|W"
    length: int = 5  # frames (L) the positional tables are built for
    height: int = 16  # token rows (H)
    width: int = 16  # token columns (W)
    pre_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    gradient_checkpointing: bool = False
    # contrastive projection head (pretraining architecture)
    proj_layers: int = 2
    proj_hidden_size: int = 2048
    proj_size: int = 256
    # fine-tuning architecture
    num_classes: int = 0
    classifier_dropout: float = 0.0
    # what the classifier reads: "cls" (the original's fine-tuning head) or "mean" (the non-PAD
    # mean of the final hidden states, the original backbone's "pooling" output without its PAD)
    pooling: str = "cls"
    # standardize the pooled feature with a BatchNorm without affine parameters before the
    # classifier (as MAE's linear probe); not in the original
    classifier_norm: bool = False
    architecture: str = "vimpac"

    @property
    def pad_token_id(self) -> int:
        return self.codebook_size + 1

    @property
    def mask_token_id(self) -> int:
        return self.codebook_size + 4

    @property
    def num_embeddings(self) -> int:
        return self.codebook_size + 5

    @property
    def heads(self) -> int:
        return self.num_heads if self.num_heads is not None else max(1, self.hidden_size // 64)

    @property
    def att_size(self) -> int:
        return self.attention_size if self.attention_size is not None else self.hidden_size

    @property
    def ffn_size(self) -> int:
        return self.mlp_size if self.mlp_size is not None else 4 * self.hidden_size

    @classmethod
    def from_dict(cls, d: dict) -> VimpacConfig:
        cfg = dataclass_from_dict(cls, d, "VIMPAC config", ignore=("model_type",))
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"VIMPAC config: architecture {self.architecture!r} is not one of {sorted(ARCHITECTURES)}")
        if self.architecture == "vimpac-classifier" and self.num_classes < 1:
            raise ConfigError("VIMPAC config: vimpac-classifier needs num_classes >= 1")
        for block in parse_layout(self.layout):
            p = len(block)
            if self.heads % p or self.att_size % self.heads:
                raise ConfigError(
                    f"VIMPAC config: layout block {'|'.join(block)!r} needs num_heads ({self.heads}) divisible by "
                    f"{p} and attention_size ({self.att_size}) divisible by num_heads")
        if self.proj_layers < 1:
            raise ConfigError("VIMPAC config: proj_layers must be >= 1")
        if self.pooling not in ("cls", "mean"):
            raise ConfigError(f"VIMPAC config: pooling {self.pooling!r} is not 'cls' or 'mean'")


# ---------------------------------------------------------------------------------------------
# backbone


class FactorizedPositions(nn.Module):
    """``pos(t, i, j) = temporal[t] + height[i] + width[j]``, plus a CLS position."""

    # the three tables are summed, so each is drawn at the token embeddings' std / sqrt(3)
    TABLE_DIVISOR = math.sqrt(3)

    def __init__(self, length: int, height: int, width: int, dim: int):
        super().__init__()
        self.cls = nn.Parameter(torch.empty(1, dim))
        self.temporal = nn.Parameter(torch.empty(length, dim))
        self.height = nn.Parameter(torch.empty(height, dim))
        self.width = nn.Parameter(torch.empty(width, dim))

    def reset_parameters(self) -> None:
        nn.init.normal_(self.cls, std=0.02)
        for table in (self.temporal, self.height, self.width):
            nn.init.normal_(table, std=0.02 / self.TABLE_DIVISOR)

    @staticmethod
    def _resize(table: torch.Tensor, n: int) -> torch.Tensor:
        if table.shape[0] == n:
            return table
        return F.interpolate(table.t()[None], size=n, mode="linear", align_corners=False)[0].t()

    def forward(self, length: int, height: int, width: int) -> torch.Tensor:
        t, h, w = (self._resize(p, n) for p, n in ((self.temporal, length), (self.height, height), (self.width, width)))
        return t[:, None, None] + h[None, :, None] + w[None, None, :]


class AttentionBlock(nn.Module):
    """One comma-separated entry of the layout: parallel patterns + projection + residual + LN."""

    def __init__(self, cfg: VimpacConfig, patterns: list[str]):
        super().__init__()
        self.patterns = patterns
        self.pre_norm = cfg.pre_norm
        self.heads = cfg.heads // len(patterns)
        self.head_dim = cfg.att_size // cfg.heads
        self.attention_dropout = cfg.attention_dropout
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.att_size)
        self.proj = nn.Linear(cfg.att_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def _pattern(self, pattern: str, qkv: torch.Tensor, cls_qkv: torch.Tensor,
                 pad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of one pattern: tokens ``(B, L, H, W, d)`` and CLS ``(B, d)`` outputs."""
        attended = sorted(_AXES[a] for a in pattern)
        rest = [a for a in (1, 2, 3) if a not in attended]
        order = [0, *rest, *attended]
        b = qkv.shape[0]
        rows_shape = [qkv.shape[a] for a in rest]
        seq_shape = [qkv.shape[a] for a in attended]
        n_rows, n = math.prod(rows_shape), math.prod(seq_shape)
        # One copy builds the rows with the CLS in front: (B, rows..., 1 + n, 3 d)
        seq = qkv.new_empty(b, *rows_shape, n + 1, qkv.shape[-1])
        seq[..., 1:, :].view(b, *rows_shape, *seq_shape, -1).copy_(qkv.permute(*order, 4))
        seq[..., 0, :] = cls_qkv.view(b, *([1] * len(rows_shape)), -1)
        seq = seq.view(b * n_rows, n + 1, 3, self.heads, self.head_dim)
        q, k, v = seq.permute(2, 0, 3, 1, 4).unbind(0)  # each (rows, heads, 1 + n, head_dim)
        mask = None
        if pad is not None:
            keys = pad.permute(*order).reshape(b * n_rows, n)
            keys = torch.cat([keys.new_zeros(b * n_rows, 1), keys], dim=1)  # the CLS key is never masked
            mask = (~keys)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.attention_dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b * n_rows, n + 1, -1)
        cls_out = out[:, 0].view(b, n_rows, -1).mean(1)  # the mean of every row's CLS output
        tokens = out[:, 1:].reshape(b, *rows_shape, *seq_shape, -1)
        inverse = [order.index(a) for a in range(4)]
        return tokens.permute(*inverse, 4), cls_out

    def _attend(self, x: torch.Tensor, cls: torch.Tensor, pad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        n_pat = len(self.patterns)
        parts = [self._pattern(p, q, c, pad) for p, q, c in
                 zip(self.patterns, self.qkv(x).chunk(n_pat, -1), self.qkv(cls).chunk(n_pat, -1), strict=True)]
        if n_pat == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts], -1), torch.cat([p[1] for p in parts], -1)

    def forward(self, x: torch.Tensor, cls: torch.Tensor, pad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pre_norm:
            a, c = self._attend(self.norm(x), self.norm(cls), pad)
            return x + self.dropout(self.proj(a)), cls + self.dropout(self.proj(c))
        a, c = self._attend(x, cls, pad)
        return self.norm(x + self.dropout(self.proj(a))), self.norm(cls + self.dropout(self.proj(c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(F.gelu(self.fc1(x))))


class VimpacLayer(nn.Module):
    """The attention blocks of the layout, then the MLP with its residual and LayerNorm."""

    def __init__(self, cfg: VimpacConfig):
        super().__init__()
        self.pre_norm = cfg.pre_norm
        self.attention_blocks = nn.ModuleList(AttentionBlock(cfg, b) for b in parse_layout(cfg.layout))
        self.mlp = Mlp(cfg.hidden_size, cfg.ffn_size, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, cls: torch.Tensor, pad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.attention_blocks:
            x, cls = block(x, cls, pad)
        if self.pre_norm:
            return x + self.mlp(self.norm(x)), cls + self.mlp(self.norm(cls))
        return self.norm(x + self.mlp(x)), self.norm(cls + self.mlp(cls))


class VimpacBackbone(nn.Module):
    """Codes ``(B, L, H, W)`` -> ``(cls (B, D), hidden (B, L, H, W, D))``."""

    def __init__(self, cfg: VimpacConfig):
        super().__init__()
        self.config = cfg
        d = cfg.hidden_size
        self.token_embedding = nn.Embedding(cfg.num_embeddings, d)
        self.cls_token = nn.Parameter(torch.empty(d))
        self.pos_embed = FactorizedPositions(cfg.length, cfg.height, cfg.width, d)
        self.ln_pre = None if cfg.pre_norm else nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.ln_post = nn.LayerNorm(d, eps=cfg.layer_norm_eps) if cfg.pre_norm else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(VimpacLayer(cfg) for _ in range(cfg.num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original's BERT init: Linear/Embedding N(0, 0.02) (PAD row included), zero
        biases, unit LayerNorms; pre-LN re-draws the residual-branch outputs with
        std 0.02 / sqrt(#residual branches)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        self.pos_embed.reset_parameters()
        if self.config.pre_norm:
            branches = sum(len(layer.attention_blocks) + 1 for layer in self.layers)
            for layer in self.layers:
                for linear in [b.proj for b in layer.attention_blocks] + [layer.mlp.fc2]:
                    nn.init.normal_(linear.weight, std=0.02 / math.sqrt(branches))

    def resize_positional_embeddings(self, length: int, height: int, width: int) -> None:
        """Interpolate the T, H, W tables to a new clip shape for good (and update the config)."""
        pe = self.pos_embed
        with torch.no_grad():
            for name, n in (("temporal", length), ("height", height), ("width", width)):
                setattr(pe, name, nn.Parameter(pe._resize(getattr(pe, name).detach(), n).clone()))
        self.config.length, self.config.height, self.config.width = length, height, width

    def redraw_temporal_positions(self, generator: torch.Generator) -> None:
        """Draw the temporal position table afresh, at the initial ratio to the token embeddings:
        a pretrained table describes another frame spacing, and a fresh one breaks the symmetry
        that leaves a time-symmetric pretraining blind to frame order (docs/vimpac.md)."""
        table = self.pos_embed.temporal
        scale = self.token_embedding.weight.detach().pow(2).mean().sqrt() / self.pos_embed.TABLE_DIVISOR
        with torch.no_grad():
            table.copy_(torch.randn(table.shape, generator=generator) * scale)

    def embed(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, length, height, width = codes.shape
        x = self.token_embedding(codes) + self.pos_embed(length, height, width)
        cls = (self.cls_token + self.pos_embed.cls[0]).expand(codes.shape[0], -1)
        if self.ln_pre is not None:
            x, cls = self.ln_pre(x), self.ln_pre(cls)
        return self.dropout(x), self.dropout(cls)

    def forward(self, codes: torch.Tensor, pad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``pad`` (bool, like ``codes``): padded positions; default ``codes == pad_token_id``."""
        if codes.dim() != 4:
            raise ValueError(f"VIMPAC expects codes of shape (B, L, H, W), got {tuple(codes.shape)}")
        if pad is None:
            pad = codes == self.config.pad_token_id
        # Unpadded batches skip the mask (SDPA's fastest kernels); not under torch.compile,
        # which prefers no data-dependent branch.
        if not torch.compiler.is_compiling() and not bool(pad.any()):
            pad = None
        x, cls = self.embed(codes)
        for layer in self.layers:
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, cls = checkpoint(layer, x, cls, pad, use_reentrant=False)
            else:
                x, cls = layer(x, cls, pad)
        if self.ln_post is not None:
            x, cls = self.ln_post(x), self.ln_post(cls)
        return cls, x


def masked_mean(hidden: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``hidden (B, L, H, W, D)`` over non-PAD positions (the original also averaged PAD)."""
    return layers.masked_mean(hidden, None if pad is None else ~pad, dim=(1, 2, 3))


# ---------------------------------------------------------------------------------------------
# heads


class MaskedTokenHead(nn.Module):
    """Linear -> GELU -> LayerNorm, then logits with the (tied) token embedding + own bias."""

    def __init__(self, cfg: VimpacConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.num_embeddings))
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.dense(hidden))), embedding, self.bias)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class SyncBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are averaged over every rank when a process group
    is up (differentiable all-reduce, works with gloo on CPU, unlike ``nn.SyncBatchNorm``);
    a plain BatchNorm1d otherwise. Parameters and buffers are BatchNorm1d's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        local = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])])
        total = all_reduce(local)
        count = total[-1]
        mean = total[:c] / count
        var = (total[c:2 * c] / count - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp(min=1), m)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        return out * self.weight + self.bias if self.affine else out


class ContrastiveHead(nn.Module):
    """MLP on the CLS: (Linear -> BatchNorm -> ReLU) x (layers - 1), then Linear without bias."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.linears = nn.ModuleList(
            nn.Linear(dims[i], dims[i + 1], bias=i < layers - 1) for i in range(layers))
        self.norms = nn.ModuleList(SyncBatchNorm1d(hidden) for _ in range(layers - 1))
        for linear in self.linears:
            nn.init.normal_(linear.weight, std=0.02)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, norm in zip(self.linears[:-1], self.norms, strict=True):
            x = F.relu(norm(linear(x)))
        return self.linears[-1](x)


# ---------------------------------------------------------------------------------------------
# models


def _example_codes(cfg: VimpacConfig, batch_size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, cfg.codebook_size, (batch_size, cfg.length, cfg.height, cfg.width), generator=g)
    if cfg.length > 1:
        codes[0, -1] = cfg.pad_token_id  # a padded frame, as short clips have
    return codes


class VimpacForPretraining(nn.Module):
    """Backbone + masked-token head + contrastive head.

    ``forward(codes, mlm_mask=None)`` returns a dict: ``cls`` (B, D), ``hidden``
    (B, L, H, W, D), ``projection`` (B, proj_size) and ``mlm_logits``: at the ``mlm_mask``
    positions (N, V) when a mask is given, else at every position (B, L, H, W, V).
    """

    def __init__(self, cfg: VimpacConfig):
        super().__init__()
        self.config = cfg
        self.backbone = VimpacBackbone(cfg)
        self.mlm_head = MaskedTokenHead(cfg)
        self.cls_head = ContrastiveHead(cfg.hidden_size, cfg.proj_hidden_size, cfg.proj_size, cfg.proj_layers)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mlm_head(hidden, self.backbone.token_embedding.weight)

    def forward(self, codes: torch.Tensor, mlm_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        cls, hidden = self.backbone(codes)
        selected = hidden[mlm_mask] if mlm_mask is not None else hidden
        return {"cls": cls, "hidden": hidden, "projection": self.cls_head(cls), "mlm_logits": self.mlm_logits(selected)}

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        return {"codes": _example_codes(self.config, batch_size)}


class VimpacForClassification(nn.Module):
    """Backbone CLS -> dropout -> zero-initialised Linear (the original's fine-tuning model).

    ``pooling="mean"`` reads the mean of the final non-PAD hidden states instead of the CLS. It
    helps a from-scratch model on small data: at initialisation the CLS is an almost
    input-independent average of every row's attention output, so the zero-initialised
    classifier gets little signal and the loss sits at the class prior for hundreds of steps
    (measured on the synthetic world at lr 1e-3: the CLS head still at the majority class after
    400 steps, mean pooling off it by then).
    """

    def __init__(self, cfg: VimpacConfig):
        super().__init__()
        if cfg.num_classes < 1:
            raise ConfigError("VimpacForClassification needs num_classes >= 1")
        self.config = cfg
        self.backbone = VimpacBackbone(cfg)
        self.norm = SyncBatchNorm1d(cfg.hidden_size, affine=False) if cfg.classifier_norm else nn.Identity()
        self.dropout = nn.Dropout(cfg.classifier_dropout)
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_classes)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        cls, hidden = self.backbone(codes)
        if self.config.pooling == "mean":
            cls = masked_mean(hidden, codes == self.config.pad_token_id)
        return self.classifier(self.dropout(self.norm(cls)))

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        return {"codes": _example_codes(self.config, batch_size)}


def _build(cfg: VimpacConfig) -> nn.Module:
    return VimpacForClassification(cfg) if cfg.architecture == "vimpac-classifier" else VimpacForPretraining(cfg)


def _config_for(arch: str):
    def from_dict(d: dict) -> VimpacConfig:
        return VimpacConfig.from_dict({**d, "architecture": arch})
    return from_dict


ARCHITECTURES = {
    "vimpac": (_config_for("vimpac"), _build),
    "vimpac-classifier": (_config_for("vimpac-classifier"), _build),
}
TEST_OVERRIDES: dict[str, Any] = {
    "codebook_size": 64, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "attention_size": None,
    "mlp_size": 64, "length": 3, "height": 4, "width": 4, "proj_hidden_size": 32, "proj_size": 16,
    "proj_layers": 2,
}
