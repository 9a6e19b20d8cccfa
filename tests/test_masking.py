"""Block / i.i.d. masking (VIMPAC's ``mask_3d``, airsplay/vimpac vimpac/masking.py): exact ratios,
the paper's Table 2, legacy parity, pad, 80/10/10."""

from __future__ import annotations

import random

import pytest
import torch

from videolang.masking import (
    apply_mask,
    block_mask,
    block_mask_legacy,
    expected_block_mask_ratio,
    iid_mask,
)

# Exact expected mask ratios (in %) of the block-masking formula; they reproduce VIMPAC's Table 2.
SPEC_TABLE = {
    (5, 16): [11.82, 14.45, 16.96, 19.37, 21.67],
    (5, 32): [10.59, 12.96, 15.24, 17.42, 19.51],
    (10, 16): [10.40, 12.73, 14.97, 17.13, 19.19],
    (10, 32): [9.31, 11.42, 13.44, 15.39, 17.27],
}


def test_exact_formula_reproduces_spec_table():
    for (length, size), row in SPEC_TABLE.items():
        got = [100 * expected_block_mask_ratio(length, size, size, n) for n in range(4, 9)]
        assert got == pytest.approx(row, abs=0.006), (length, size)


@pytest.mark.parametrize(("length", "size", "blocks"), [(5, 16, 5), (5, 16, 8), (10, 16, 4)])
def test_monte_carlo_ratio_matches_spec(length, size, blocks):
    g = torch.Generator().manual_seed(length * 100 + blocks)
    mask = block_mask((20000, length, size, size), blocks, generator=g)
    ratio = 100 * mask.float().mean().item()
    assert abs(ratio - SPEC_TABLE[(length, size)][blocks - 4]) < 0.2


def test_block_shapes_and_marginals():
    g = torch.Generator().manual_seed(1)
    mask = block_mask((4000, 5, 16, 16), 1, generator=g)
    # one block: a single box per sample with sizes within (floor(2L/3), H/2, W/2)
    t_extent = mask.any(3).any(2).sum(1)
    h_extent = mask.any(3).any(1).sum(1)
    assert t_extent.min() >= 1 and t_extent.max() == 3
    assert h_extent.min() >= 1 and h_extent.max() == 8
    assert (mask.sum((1, 2, 3)) == t_extent * h_extent * mask.any(2).any(1).sum(1)).all()
    # frame marginals are symmetric and peak in the middle (mask_3d: 0.098 .. 0.198 for 5 blocks)
    frame = block_mask((20000, 5, 16, 16), 5, generator=g).float().mean((0, 2, 3))
    assert frame[2] > frame[1] > frame[0]
    assert frame[0] == pytest.approx(frame[4].item(), abs=0.01)


def test_generator_reproducible_and_pad_never_masked():
    pad = torch.zeros(3, 5, 8, 8, dtype=torch.bool)
    pad[0, 3:] = True
    a = block_mask(pad.shape, 6, generator=torch.Generator().manual_seed(3), pad=pad)
    b = block_mask(pad.shape, 6, generator=torch.Generator().manual_seed(3), pad=pad)
    assert torch.equal(a, b)
    assert not (a & pad).any() and a.any()
    assert not (iid_mask(pad.shape, 0.5, torch.Generator().manual_seed(0), pad) & pad).any()


def test_legacy_replays_original_draws():
    # the original mask_3d's recorded output: random.seed(1234), 2 blocks, last frame of sample 1
    # padded -> 13 masked
    codes = torch.arange(2 * 5 * 4 * 4).view(2, 5, 4, 4)
    pad = torch.zeros_like(codes, dtype=torch.bool)
    pad[1, -1] = True
    random.seed(1234)
    mask = block_mask_legacy(codes.shape, 2, pad=pad)
    assert int(mask.sum()) == 13
    # same sequence of draws from an explicit Random
    assert torch.equal(block_mask_legacy(codes.shape, 2, random.Random(1234), pad), mask)


def test_iid_ratio():
    mask = iid_mask((64, 5, 16, 16), 0.15, torch.Generator().manual_seed(0))
    assert mask.float().mean().item() == pytest.approx(0.15, abs=0.005)


def test_apply_mask_replacement():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 100, (8, 5, 16, 16), generator=g)
    mask = block_mask(codes.shape, 8, generator=g)
    inputs, labels = apply_mask(codes, mask, mask_id=104)
    assert torch.equal(inputs[mask], torch.full_like(inputs[mask], 104))
    assert torch.equal(inputs[~mask], codes[~mask])
    assert torch.equal(labels[mask], codes[mask]) and (labels[~mask] == -100).all()
    inputs, labels = apply_mask(codes, mask, 104, vocab_size=100, replace=(0.8, 0.1, 0.1), generator=g)
    masked_in, masked_codes = inputs[mask], codes[mask]
    frac_mask = (masked_in == 104).float().mean().item()
    frac_same = (masked_in == masked_codes).float().mean().item()
    assert frac_mask == pytest.approx(0.8, abs=0.03)
    assert frac_same == pytest.approx(0.1 + 0.1 / 100, abs=0.03)
    assert masked_in.max() <= 104 and torch.equal(inputs[~mask], codes[~mask])
    with pytest.raises(ValueError, match="vocab_size"):
        apply_mask(codes, mask, 104, replace=(0.8, 0.1, 0.1))
