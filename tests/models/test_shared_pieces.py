"""The pieces every family shares: the BERT MLM head, the masked mean, strict loading's report."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from videolang.errors import ConfigError
from videolang.models.bert import BertConfig, BertMLMHead
from videolang.models.layers import masked_mean
from videolang.models.weights import LoadReport, load_strict

TINY = BertConfig(vocab_size=11, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)


@pytest.mark.parametrize(("tied", "bias", "keys"), [
    (True, True, {"bias", "transform.dense.weight", "transform.dense.bias", "transform.LayerNorm.weight",
                  "transform.LayerNorm.bias"}),
    (False, False, {"decoder.weight", "transform.dense.weight", "transform.dense.bias",
                    "transform.LayerNorm.weight", "transform.LayerNorm.bias"}),
])
def test_mlm_head_keeps_the_hugging_face_names(tied, bias, keys):
    assert set(BertMLMHead(TINY, tied=tied, bias=bias).state_dict()) == keys


def test_mlm_head_decodes_with_the_tied_table_or_its_own():
    torch.manual_seed(0)
    hidden, words = torch.randn(3, 5, 8), torch.randn(11, 8)
    tied = BertMLMHead(TINY)
    nn.init.normal_(tied.bias)
    t = tied.transform
    expected = F.layer_norm(F.gelu(t.dense(hidden)), (8,), t.LayerNorm.weight, t.LayerNorm.bias, 1e-12) @ words.t()
    torch.testing.assert_close(tied(hidden, words), expected + tied.bias)
    with pytest.raises(ValueError, match="word embeddings"):
        tied(hidden)
    untied = BertMLMHead(TINY, tied=False, bias=False)
    torch.testing.assert_close(untied(hidden), untied.transform(hidden) @ untied.decoder.weight.t())


def test_masked_mean_counts_only_kept_positions_and_gives_zero_for_none():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor([[2.0], [0.0]]))
    torch.testing.assert_close(masked_mean(x, None), x.mean(1))
    grid = torch.arange(8.0).view(1, 2, 2, 2, 1)
    keep = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    keep[0, 1, 1, 1] = keep[0, 0, 0, 0] = True
    torch.testing.assert_close(masked_mean(grid, keep, dim=(1, 2, 3)), torch.tensor([[3.5]]))


def _pair() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3))
    source = {k: torch.full_like(v, 7.0) for k, v in model.state_dict().items()}
    return model, source


def test_load_strict_reports_fresh_and_dropped_keys(caplog):
    model, source = _pair()
    head_before = model[1].weight.detach().clone()
    source["1.weight"] = torch.zeros(5, 2)  # another task's head: another shape, dropped with it
    source["pooler.dense.weight"] = torch.zeros(1)
    with caplog.at_level(logging.INFO, logger="videolang.models.weights"):
        report = load_strict(model, source, source="ckpt", fresh=("1.",), ignore=("pooler.dense.weight",))
    assert report == LoadReport("ckpt", 2, missing=("1.weight", "1.bias"),
                                unexpected=("1.weight", "1.bias", "pooler.dense.weight"))
    assert torch.equal(model[0].weight, torch.full((2, 2), 7.0)) and torch.equal(model[1].weight, head_before)
    assert "kept as initialised: 1.weight, 1.bias" in caplog.text


def test_load_strict_names_every_missing_and_unexpected_key():
    model, source = _pair()
    del source["1.bias"]
    source["extra"] = torch.zeros(1)
    with pytest.raises(ConfigError, match=r"missing keys: 1\.bias; unexpected keys: extra"):
        load_strict(model, source, source="ckpt")
