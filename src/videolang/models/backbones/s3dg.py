"""S3D-G (Xie et al. 2018) as released with MIL-NCE (Miech et al. 2020): VideoCLIP's features.

:class:`S3DG` has the parameter names and shapes of the HowTo100M release
(``s3d_howto100m.pth``), so ``create_backbone("s3dg", weights="s3d_howto100m.pth")`` loads it;
one 512-d ``video_embedding`` per 30-frame clip at 30 fps, 224x224. Written from the paper and
the release's layout; with the same weights its outputs equal the release's exactly.
Architecture, preprocessing and dropped keys: docs/inference.md ("S3D-G").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videolang.models.backbones import VideoBackbone

__all__ = ["S3DG", "InceptionBlock", "SelfGating", "Unit3D"]


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm + ReLU; with ``separable=True`` a 3D kernel ``(t, k, k)`` is
    factorised into a spatial ``(1, k, k)`` and a temporal ``(t, 1, 1)`` conv, each with BN+ReLU.

    Parameter names (``conv1``/``bn1``, ``conv2``/``bn2``) match the MIL-NCE release.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        separable: bool = False,
    ):
        super().__init__()
        kt, kh, kw = kernel
        st = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        pd = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        self.separable = separable and kt != 1
        if self.separable:
            self.conv1 = nn.Conv3d(in_channels, out_channels, (1, kh, kw), stride=(1, st[1], st[2]),
                                   padding=(0, pd[1], pd[2]), bias=False)  # fmt: skip
            self.bn1 = nn.BatchNorm3d(out_channels)
            self.conv2 = nn.Conv3d(out_channels, out_channels, (kt, 1, 1), stride=(st[0], 1, 1),
                                   padding=(pd[0], 0, 0), bias=False)  # fmt: skip
            self.bn2 = nn.BatchNorm3d(out_channels)
        else:
            self.conv1 = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), stride=st,
                                   padding=pd, bias=False)  # fmt: skip
            self.bn1 = nn.BatchNorm3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        if self.separable:
            x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        return x


class SelfGating(nn.Module):
    """Feature gating of S3D-G: each channel scaled by ``sigmoid(fc(spatiotemporal mean))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * gate[:, :, None, None, None]


class InceptionBlock(nn.Module):
    """Four branches concatenated on channels: 1x1x1; 1x1x1 -> sep 3x3x3; 1x1x1 -> sep 3x3x3;
    3x3x3 max-pool -> 1x1x1; each branch gated (S3D-G)."""

    def __init__(self, in_channels: int, b0: int, b1a: int, b1b: int, b2a: int, b2b: int, b3: int):
        super().__init__()
        self.conv_b0 = Unit3D(in_channels, b0, (1, 1, 1))
        self.conv_b1_a = Unit3D(in_channels, b1a, (1, 1, 1))
        self.conv_b1_b = Unit3D(b1a, b1b, (3, 3, 3), padding=1, separable=True)
        self.conv_b2_a = Unit3D(in_channels, b2a, (1, 1, 1))
        self.conv_b2_b = Unit3D(b2a, b2b, (3, 3, 3), padding=1, separable=True)
        self.conv_b3_b = Unit3D(in_channels, b3, (1, 1, 1))
        self.gating_b0 = SelfGating(b0)
        self.gating_b1 = SelfGating(b1b)
        self.gating_b2 = SelfGating(b2b)
        self.gating_b3 = SelfGating(b3)
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = self.gating_b0(self.conv_b0(x))
        y1 = self.gating_b1(self.conv_b1_b(self.conv_b1_a(x)))
        y2 = self.gating_b2(self.conv_b2_b(self.conv_b2_a(x)))
        pooled = F.max_pool3d(x, kernel_size=3, stride=1, padding=1)
        y3 = self.gating_b3(self.conv_b3_b(pooled))
        return torch.cat((y0, y1, y2, y3), dim=1)


def _same_max_pool(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Max-pool with TensorFlow-"SAME"-like padding as in the release: pad ``max(k - s, 0)``
    per dim (half before, the rest after) with zeros, then pool with ``ceil_mode``."""
    pads: list[int] = []
    for k, s in zip(reversed(kernel), reversed(stride), strict=True):  # F.pad wants W, H, T
        total = max(k - s, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool3d(F.pad(x, pads), kernel, stride, ceil_mode=True)


# Branch widths (b0, b1a, b1b, b2a, b2b, b3) of the Inception stages of S3D-G, in order; each
# block's input is the previous block's output (192 channels for mixed_3b).
_INCEPTION = (
    ("mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("mixed_5c", (384, 192, 384, 48, 128, 128)),
)


class S3DG(VideoBackbone):
    """S3D-G video tower of the MIL-NCE HowTo100M model; ``forward`` returns the 512-d
    ``video_embedding`` of each ``(3, T, H, W)`` clip (T, H, W even; 30x224x224 for features).

    ``output="mixed_5c"`` returns the 1024-d pooled ``mixed_5c`` instead (the release's
    feature for classification); ``fc`` stays in the model either way so weights load.
    """

    name = "s3dg"
    feature_dim = 512
    frames_per_feature = 30
    fps = 30.0
    frame_size = 224
    clip_frames = 30
    default_batch_size = 4
    #: state_dict prefixes of the release that are not part of the video tower.
    ignored_prefixes = ("text_module.",)

    def __init__(self, embedding_dim: int = 512, output: str = "video_embedding"):
        super().__init__()
        if output not in ("video_embedding", "mixed_5c"):
            raise ValueError(f"output must be 'video_embedding' or 'mixed_5c', got {output!r}")
        self.output = output
        # 3 channels x (2x2x2 space-to-depth) = 24 input channels.
        self.conv1 = Unit3D(24, 64, (2, 4, 4), stride=1, padding=(1, 2, 2))
        self.conv_2b = Unit3D(64, 64, (1, 1, 1))
        self.conv_2c = Unit3D(64, 192, (3, 3, 3), padding=1, separable=True)
        self.gating = SelfGating(192)
        channels = 192
        for name, widths in _INCEPTION:
            block = InceptionBlock(channels, *widths)
            self.add_module(name, block)
            channels = block.out_channels
        self.fc = nn.Linear(channels, embedding_dim)
        self.feature_dim = embedding_dim if output == "video_embedding" else channels

    @staticmethod
    def space_to_depth(x: torch.Tensor) -> torch.Tensor:
        """``(N, C, T, H, W)`` -> ``(N, 8C, T/2, H/2, W/2)``; channel = ((dt*2 + dh)*2 + dw)*C + c."""
        n, c, t, h, w = x.shape
        if t % 2 or h % 2 or w % 2:
            raise ValueError(f"S3D-G needs even T, H and W, got {(t, h, w)}")
        x = x.reshape(n, c, t // 2, 2, h // 2, 2, w // 2, 2)
        x = x.permute(0, 3, 5, 7, 1, 2, 4, 6)
        return x.reshape(n, 8 * c, t // 2, h // 2, w // 2)

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """Pooled ``mixed_5c`` (N, 1024) of clips ``(N, 3, T, H, W)`` in [0, 1]."""
        if clips.ndim != 5 or clips.shape[1] != 3:
            raise ValueError(f"expected clips (N, 3, T, H, W), got {tuple(clips.shape)}")
        x = self.conv1(self.space_to_depth(clips))
        x = x[:, :, 1:, 1:, 1:]  # the release's emulation of TF "SAME" padding
        x = _same_max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.gating(self.conv_2c(self.conv_2b(x)))
        x = _same_max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.mixed_3c(self.mixed_3b(x))
        x = _same_max_pool(x, (3, 3, 3), (2, 2, 2))
        for name in ("mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f"):
            x = getattr(self, name)(x)
        x = _same_max_pool(x, (2, 2, 2), (2, 2, 2))
        x = self.mixed_5c(self.mixed_5b(x))
        return x.mean(dim=(2, 3, 4))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``(N, 3, T, H, W)`` -> ``(N, 512)`` video embeddings (or ``(N, 1024)`` mixed_5c)."""
        pooled = self.features(clips)
        return self.fc(pooled) if self.output == "video_embedding" else pooled

    # -- preprocessing -----------------------------------------------------------------------

    def to_clips(self, frames: torch.Tensor, bounds: np.ndarray) -> torch.Tensor:
        """``(T, 3, 224, 224)`` -> ``(ceil(T/30), 3, 30, 224, 224)``, zero-padding the last clip."""
        t = frames.shape[0]
        k = self.clip_frames
        pad = (-t) % k
        if pad:
            frames = torch.cat([frames, frames.new_zeros((pad, *frames.shape[1:]))])
        n = frames.shape[0] // k
        return frames.reshape(n, k, *frames.shape[1:]).transpose(1, 2)

    def pool(self, clip_features: torch.Tensor, bounds: np.ndarray) -> torch.Tensor:
        """One clip per row already: identity."""
        return clip_features

    def build_options(self) -> dict:
        return {**super().build_options(), "embedding_dim": self.fc.out_features, "output": self.output}

    def describe(self) -> dict:
        return {**super().describe(), "output": self.output}
