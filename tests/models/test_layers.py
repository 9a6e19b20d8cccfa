"""The shared transformer blocks: every mask form, against attention written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from videolang.models.layers import SelfAttention, TransformerLayer, additive_mask

HIDDEN, HEADS = 8, 2


def reference_layer(layer: TransformerLayer, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """A post-LN BERT layer in plain tensor algebra; ``allowed`` is bool ``(B, Lq, Lk)``."""
    sa, b, n = layer.attention.self, x.shape[0], x.shape[1]
    d = HIDDEN // HEADS

    def heads(t):
        return t.view(b, n, HEADS, d).transpose(1, 2)

    q, k, v = heads(sa.query(x)), heads(sa.key(x)), heads(sa.value(x))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    scores = scores.masked_fill(~allowed[:, None], torch.finfo(x.dtype).min)
    context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, HIDDEN)
    out = layer.attention.output
    h = out.LayerNorm(x + out.dense(context))
    ffn = layer.output
    return ffn.LayerNorm(h + ffn.dense(torch.nn.functional.gelu(layer.intermediate.dense(h))))


@pytest.fixture
def layer():
    torch.manual_seed(0)
    return TransformerLayer(HIDDEN, HEADS, 16, dropout=0.0, attention_dropout=0.0).eval()


def test_additive_mask_forms():
    keys = torch.tensor([[True, True, False]])
    add = additive_mask(keys, torch.float32)
    assert add.shape == (1, 1, 1, 3)
    assert add[0, 0, 0, :2].tolist() == [0.0, 0.0] and add[0, 0, 0, 2] == torch.finfo(torch.float32).min
    pattern = torch.ones(2, 3, 3, dtype=torch.bool).tril()
    assert additive_mask(pattern, torch.float32).shape == (2, 1, 3, 3)
    assert additive_mask(torch.ones(2, HEADS, 3, 3, dtype=torch.bool), torch.float32).shape == (2, HEADS, 3, 3)
    floats = torch.zeros(1, 3)
    assert additive_mask(floats, torch.float64).dtype == torch.float64  # float masks pass through
    assert additive_mask(None, torch.float32) is None
    with pytest.raises(ValueError, match="2, 3 or 4 dims"):
        additive_mask(torch.ones(3, dtype=torch.bool), torch.float32)


def test_key_padding_matches_attention_by_hand_and_ignores_padding(layer):
    x = torch.randn(2, 5, HIDDEN)
    keys = torch.tensor([[True] * 5, [True, True, True, False, False]])
    got = layer(x, keys)
    allowed = keys[:, None, :].expand(2, 5, 5)
    torch.testing.assert_close(got, reference_layer(layer, x, allowed), atol=1e-5, rtol=1e-5)
    changed = x.clone()
    changed[1, 3:] = 100.0  # what sits in the padding cannot reach the real tokens
    torch.testing.assert_close(layer(changed, keys)[1, :3], got[1, :3], atol=1e-5, rtol=1e-5)


def test_causal_pattern_matches_attention_by_hand(layer):
    x = torch.randn(2, 4, HIDDEN)
    causal = torch.ones(4, 4, dtype=torch.bool).tril().expand(2, 4, 4)
    got = layer(x, causal)
    torch.testing.assert_close(got, reference_layer(layer, x, causal), atol=1e-5, rtol=1e-5)
    later = x.clone()
    later[:, 2:] = -7.0  # the future does not change the past
    torch.testing.assert_close(layer(later, causal)[:, :2], got[:, :2], atol=1e-5, rtol=1e-5)


def test_per_head_pattern_and_additive_float_mask_agree(layer):
    x = torch.randn(1, 3, HIDDEN)
    allowed = torch.tensor([[[True, False, True], [True, True, False], [False, True, True]]])
    as_bool = layer(x, allowed)
    as_float = layer(x, additive_mask(allowed, torch.float32)[:, 0])
    per_head = layer(x, allowed[:, None].expand(1, HEADS, 3, 3))
    torch.testing.assert_close(as_float, as_bool)
    torch.testing.assert_close(per_head, as_bool)


def test_a_row_with_nothing_to_attend_to_stays_finite():
    torch.manual_seed(0)
    attention = SelfAttention(HIDDEN, HEADS, dropout=0.0, attention_dropout=0.0)
    x = torch.randn(1, 3, HIDDEN)
    blocked = torch.zeros(1, 3, 3, dtype=torch.bool)
    blocked[0, 1:, :] = True  # query 0 may attend to nothing
    out = attention.attend(x, additive_mask(blocked, x.dtype))
    assert torch.isfinite(out).all()


def test_heads_must_divide_the_hidden_size():
    with pytest.raises(ValueError, match="not divisible"):
        SelfAttention(10, 3)
