"""Shared transformer blocks on ``torch.nn.functional.scaled_dot_product_attention``.

Parameter names follow Hugging Face's ``BertModel``, so BERT-family checkpoints load by name.
``attention_mask`` of :meth:`TransformerLayer.forward` is bool ``(B, L)`` key padding (True = real
token), bool ``(B, L, L)`` / ``(B, heads, L, L)`` (True = may attend), or the additive float form
of :func:`additive_mask`, which uses the dtype's most negative finite value so a query with
nothing to attend to gives finite (ignored) output instead of NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionHead", "SelfAttention", "TransformerLayer", "additive_mask", "gelu", "masked_mean"]


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, as BERT uses."""
    return F.gelu(x)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, dim: int | tuple[int, ...] = 1) -> torch.Tensor:
    """Mean of ``x`` ``(..., D)`` over ``dim`` where ``mask`` (``x``'s shape without ``D``; True or 1
    = keep) is set; 0 where nothing is kept. ``mask=None`` averages every position."""
    if mask is None:
        return x.mean(dim)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Turn a bool key-padding ``(B, L)`` or pattern ``(B, [H,] L, L)`` mask into an additive
    float mask broadcastable to ``(B, H, L, L)``. Float masks pass through (reshaped)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        neg = torch.finfo(dtype).min
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, neg)
    else:
        mask = mask.to(dtype)
    if mask.dim() == 2:  # (B, L) keys
        return mask[:, None, None, :]
    if mask.dim() == 3:  # (B, Lq, Lk)
        return mask[:, None, :, :]
    if mask.dim() == 4:
        return mask
    raise ValueError(f"attention mask must have 2, 3 or 4 dims, got shape {tuple(mask.shape)}")


class _SelfAttentionProjections(nn.Module):
    """``attention.self``: the q, k, v projections (HF naming)."""

    def __init__(self, hidden_size: int, all_head_size: int, bias: bool = True):
        super().__init__()
        self.query = nn.Linear(hidden_size, all_head_size, bias=bias)
        self.key = nn.Linear(hidden_size, all_head_size, bias=bias)
        self.value = nn.Linear(hidden_size, all_head_size, bias=bias)


class _Residual(nn.Module):
    """``attention.output`` / ``output``: dense, dropout, residual and LayerNorm."""

    def __init__(self, in_size: int, hidden_size: int, dropout: float, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)


class SelfAttention(nn.Module):
    """Multi-head self-attention (``attention.self`` + ``attention.output``) on SDPA."""

    def __init__(self, hidden_size: int, num_heads: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, eps: float = 1e-12):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.attention_dropout = attention_dropout
        self.self = _SelfAttentionProjections(hidden_size, hidden_size)
        self.output = _Residual(hidden_size, hidden_size, dropout, eps)

    def attend(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Attention output before the output projection: ``(B, L, hidden)``."""
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.self.query(x)), heads(self.self.key(x)), heads(self.self.value(x))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0,
            scale=1.0 / math.sqrt(self.head_dim),
        )
        return out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)


class TransformerLayer(nn.Module):
    """A BERT encoder layer (post-LN by default; ``norm_first=True`` for pre-LN).

    ``forward(x, attention_mask)`` with ``x`` of shape ``(B, L, hidden)``; see the module
    docstring for the mask forms. Parameter names match HF ``BertLayer``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        norm_first: bool = False,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.attention = SelfAttention(hidden_size, num_heads, dropout=dropout,
                                       attention_dropout=attention_dropout, eps=layer_norm_eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(hidden_size, intermediate_size)
        self.output = _Residual(intermediate_size, hidden_size, dropout, layer_norm_eps)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = additive_mask(attention_mask, x.dtype) if attention_mask is not None else None
        if mask is not None and mask.dtype != x.dtype:
            mask = mask.to(x.dtype)
        attn_out = self.attention.output
        ffn_out = self.output
        if self.norm_first:
            h = attn_out.LayerNorm(x)
            x = x + attn_out.dropout(attn_out.dense(self.attention.attend(h, mask)))
            h = ffn_out.LayerNorm(x)
            return x + ffn_out.dropout(ffn_out.dense(gelu(self.intermediate.dense(h))))
        h = attn_out.LayerNorm(x + attn_out.dropout(attn_out.dense(self.attention.attend(x, mask))))
        return ffn_out.LayerNorm(h + ffn_out.dropout(ffn_out.dense(gelu(self.intermediate.dense(h)))))


class ProjectionHead(nn.Module):
    """Linear projection, or a 2-layer MLP (Linear, GELU, LayerNorm, Linear) when
    ``hidden_dim`` is given; maps a tower's pooled output into a shared embedding space."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, eps: float = 1e-12):
        super().__init__()
        if hidden_dim is None:
            self.net = nn.Linear(in_dim, out_dim)
        else:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.LayerNorm(hidden_dim, eps=eps),
                nn.Linear(hidden_dim, out_dim),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
