from __future__ import annotations

import pytest
import torch

from videolang.data import transforms as T


def test_to_float_and_resize_shorter_side():
    frames = torch.randint(0, 256, (4, 36, 64, 3), dtype=torch.uint8)
    x = T.to_float_tchw(frames)
    assert x.shape == (4, 3, 36, 64) and x.max() <= 1.0
    assert T.resize_shorter_side(x, 18).shape == (4, 3, 18, 32)
    assert T.resize_shorter_side(x.transpose(-1, -2), 18).shape == (4, 3, 32, 18)
    assert T.resize_shorter_side(x[0], 36).shape == (3, 36, 64)  # single image, no-op
    assert T.resize_shorter_side(frames.permute(0, 3, 1, 2), 18).dtype == torch.uint8


def test_resize_longer_and_pad_matches_clipbert_golden_geometry():
    # as ClipBERT's image preprocessing (jayleicn/ClipBERT src/datasets/data_utils.py) gives:
    # 360x640 -> (252, 448) plus 196 rows of zero pad; 500x333 -> (448, 298)
    x = torch.ones(1, 3, 360, 640)
    out, valid = T.resize_longer_and_pad(x, 448)
    assert out.shape == (1, 3, 448, 448)
    assert valid[:252].all() and not valid[252:].any()
    assert out[..., 252:, :].abs().sum() == 0 and out[..., :252, :].min() > 0.99
    out, valid = T.resize_longer_and_pad(torch.ones(3, 500, 333), 448)
    assert valid[:, :298].all() and not valid[:, 298:].any()


def test_crops_and_flip():
    x = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).view(2, 3, 6, 8)
    c = T.center_crop(x, 4)
    assert torch.equal(c, x[..., 1:5, 2:6])
    g = torch.Generator().manual_seed(0)
    r = T.random_crop(x, (2, 3), generator=g)
    assert r.shape == (2, 3, 2, 3)
    # the same crop for every frame: frame 1 is frame 0 plus 3*6*8 everywhere
    assert torch.equal(r[1] - r[0], torch.full_like(r[0], 3 * 6 * 8))
    with pytest.raises(ValueError, match="larger"):
        T.center_crop(x, 10)
    assert torch.equal(T.hflip(T.hflip(x)), x) and torch.equal(T.hflip(x)[..., 0], x[..., -1])


def test_normalize():
    x = torch.full((1, 3, 2, 2), 0.5)
    y = T.normalize(x, mean=(0.5, 0.25, 0.0), std=(1.0, 0.5, 0.25))
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([0.0, 0.5, 2.0]))
