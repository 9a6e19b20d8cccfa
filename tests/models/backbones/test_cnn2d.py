"""2D CNN and pooled-pixels backbones, the registry, and ``video_to_features``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from videolang.errors import ConfigError
from videolang.models.backbones import (
    VideoBackbone,
    create_backbone,
    list_backbones,
    per_second_bounds,
    video_to_features,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pooled_pixels(frames: torch.Tensor, fps: float, grid: int = 4) -> np.ndarray:
    """Reference: the per-second mean of ``grid x grid`` pooled RGB, computed per video."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got {tuple(frames.shape)}")
    t = frames.shape[0]
    seconds = max(math.ceil(t / fps), 1) if t else 0
    if t == 0:
        return np.zeros((0, 3 * grid * grid), np.float32)
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    pooled = F.adaptive_avg_pool2d(x, grid).flatten(1)  # (T, 3*grid*grid)
    second_of_frame = torch.clamp((torch.arange(t) / fps).long(), max=seconds - 1)
    sums = torch.zeros(seconds, pooled.shape[1]).index_add_(0, second_of_frame, pooled)
    counts = torch.bincount(second_of_frame, minlength=seconds).clamp(min=1).unsqueeze(1)
    return (sums / counts).numpy().astype(np.float32)


def _video(t: int, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=g)


def test_registry_lists_and_refuses_unknown():
    assert {"s3dg", "cnn2d-tiny", "cnn2d-small", "pooled-pixels"} <= set(list_backbones())
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet'.*cnn2d-tiny"):
        create_backbone("resnet")
    with pytest.raises(ConfigError, match="bad options"):
        create_backbone("pooled-pixels", nope=1)
    with pytest.raises(ConfigError, match="no weights to load"):
        create_backbone("pooled-pixels", weights="x.pth")


@pytest.mark.parametrize("name", ["cnn2d-tiny", "cnn2d-small"])
def test_cnn2d_shapes_and_seeded_init(name):
    bb = create_backbone(name, seed=3)
    assert isinstance(bb, VideoBackbone) and not bb.training
    assert bb.fps is None and bb.frames_per_feature is None  # one row per source second
    frames = _video(25, 48, 80)
    feats = video_to_features(bb, frames, fps=10.0)
    assert feats.shape == (3, bb.feature_dim) and feats.dtype == np.float32  # ceil(2.5 s)
    assert np.array_equal(feats, video_to_features(create_backbone(name, seed=3), frames, 10.0))
    assert not np.allclose(feats, video_to_features(create_backbone(name, seed=4), frames, 10.0))


def test_cnn2d_rows_are_means_of_the_frames_of_each_second():
    bb = create_backbone("cnn2d-tiny")
    frames = _video(23)
    feats = video_to_features(bb, frames, fps=10.0, batch_size=7)
    with torch.inference_mode():
        per_frame = bb(bb.transform(frames)).numpy()
    for j, (a, b) in enumerate([(0, 10), (10, 20), (20, 23)]):
        np.testing.assert_allclose(feats[j], per_frame[a:b].mean(0), rtol=1e-5, atol=1e-5)
    unit = video_to_features(bb, frames, fps=10.0, l2_normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


def test_cnn2d_eval_forward_equals_the_unfused_modules():
    bb = create_backbone("cnn2d-tiny")
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in bb.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x = torch.rand(6, 3, 64, 64)
    with torch.inference_mode():
        fused = bb(x)
        plain = torch.nn.functional.adaptive_avg_pool2d(bb.stages((x - 0.5) / 0.25), 2).flatten(1)
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("suffix", ["safetensors", "pt"])
def test_cnn2d_weights_load_by_path(tmp_path, suffix):
    src = create_backbone("cnn2d-tiny", seed=7)
    path = tmp_path / f"w.{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    if suffix == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)  # the wrapper is unwrapped
    bb = create_backbone("cnn2d-tiny", weights=path, seed=0)
    frames = _video(10)
    assert np.array_equal(video_to_features(bb, frames, 10.0), video_to_features(src, frames, 10.0))
    state.pop("stages.0.weight")
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ConfigError, match=r"missing keys: stages\.0\.weight"):
        create_backbone("cnn2d-tiny", weights=tmp_path / "bad.safetensors")


@pytest.mark.parametrize(("t", "fps"), [(40, 10.0), (90, 30.0), (47, 29.97), (1, 10.0)])
def test_pooled_pixels_backbone_equals_pooled_pixels(t, fps):
    frames = _video(t, 32, 48)
    bb = create_backbone("pooled-pixels", grid=2)
    got = video_to_features(bb, frames, fps)
    np.testing.assert_allclose(got, pooled_pixels(frames, fps, grid=2), rtol=0, atol=1e-6)
    assert len(got) == len(per_second_bounds(t, fps)) - 1 == int(np.ceil(t / fps))


def test_temporal_diff_appends_the_feature_change_across_each_row():
    bb = create_backbone("cnn2d-tiny", temporal_diff=True)
    plain = create_backbone("cnn2d-tiny")
    assert bb.feature_dim == 2 * plain.feature_dim and bb.describe()["temporal_diff"] is True
    assert "temporal_diff" not in plain.describe()  # older stores keep resuming
    frames = _video(23)
    feats = video_to_features(bb, frames, fps=10.0, batch_size=7)
    with torch.inference_mode():
        per_frame = bb(bb.transform(frames)).numpy()
    d = plain.feature_dim
    np.testing.assert_allclose(feats[:, :d], video_to_features(plain, frames, 10.0), rtol=1e-5, atol=1e-5)
    # the frame just before the row to the frame just after it, clamped to the video
    for j, (before, after) in enumerate([(0, 10), (9, 20), (19, 22)]):
        np.testing.assert_allclose(feats[j, d:], per_frame[after] - per_frame[before], rtol=1e-5, atol=1e-5)


def test_temporal_diff_tells_opposite_motions_apart():
    # a bright bar sweeping right, and the same frames reversed: equal means, opposite changes
    frames = torch.zeros(10, 32, 32, 3, dtype=torch.uint8)
    for t in range(10):
        frames[t, :, 3 * t : 3 * t + 4] = 255
    bb = create_backbone("pooled-pixels", grid=4, temporal_diff=True)
    right = video_to_features(bb, frames, fps=10.0)
    left = video_to_features(bb, frames.flip(0), fps=10.0)
    d = bb.feature_dim // 2
    np.testing.assert_allclose(right[:, :d], left[:, :d], atol=1e-6)
    np.testing.assert_allclose(right[:, d:], -left[:, d:], atol=1e-6)
    assert np.abs(right[:, d:]).max() > 0.1


def test_temporal_diff_is_refused_where_it_makes_no_sense():
    with pytest.raises(ConfigError, match="temporal_diff is only for frame-pooling"):
        create_backbone("s3dg", temporal_diff=True)
    with pytest.raises(ConfigError, match="true or false"):
        create_backbone("cnn2d-tiny", temporal_diff="yes")
