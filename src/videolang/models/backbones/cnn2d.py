"""Small 2D conv nets for feature extraction on CPU (``cnn2d-tiny``, ``cnn2d-small``).

Frames are resized, centre-cropped and run through a few ``conv3x3 (stride 2) - BN - ReLU``
stages pooled to a coarse grid; one feature row per second is the mean over that second's
frames. Without weights the network is initialised from a seed, so a seed always gives the same
features. Presets and sizes: docs/inference.md ("Small 2D CNNs").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from videolang.errors import ConfigError
from videolang.models.backbones import VideoBackbone

__all__ = ["CNN2D", "PRESETS", "CNN2DConfig"]


@dataclass(frozen=True)
class CNN2DConfig:
    """Shape of a :class:`CNN2D`: input side, channels of each stride-2 stage, output grid."""

    frame_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 64)
    pool_grid: int = 2

    @property
    def feature_dim(self) -> int:
        return self.channels[-1] * self.pool_grid * self.pool_grid


PRESETS: dict[str, CNN2DConfig] = {
    "cnn2d-tiny": CNN2DConfig(64, (16, 32, 64, 64), 2),
    "cnn2d-small": CNN2DConfig(112, (32, 64, 128, 128), 2),
}

# Input normalisation: [0, 1] pixels to roughly zero mean and unit spread, so that the ReLUs
# of a randomly initialised net respond to both dark and bright content.
_MEAN, _STD = 0.5, 0.25


class CNN2D(VideoBackbone):
    """Per-frame 2D CNN, features mean-pooled over the frames of each second."""

    # Frames per forward pass: beyond ~64 the early feature maps fall out of the CPU caches
    # and throughput drops (64x64 input: ~3x slower per frame at 512 than at 64, measured).
    default_batch_size = 64
    decode_bound = True

    def __init__(self, config: CNN2DConfig | None = None, name: str = "cnn2d"):
        super().__init__()
        cfg = config or CNN2DConfig()
        if cfg.frame_size < 2 ** len(cfg.channels) or not cfg.channels or cfg.pool_grid < 1:
            raise ConfigError(f"{name}: invalid config {cfg}")
        self.config = cfg
        self.name = name
        self.frame_size = cfg.frame_size
        self.feature_dim = cfg.feature_dim
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in cfg.channels:
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.stages = nn.Sequential(*layers)
        self._fused: tuple[tuple, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Kaiming keeps the activation scale through the ReLU stages (PyTorch's default
                # conv init shrinks it about 3x per layer).
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> CNN2D:
        """Build a registered preset; ``overrides`` replace fields of its :class:`CNN2DConfig`."""
        if name not in PRESETS:
            raise ConfigError(f"unknown cnn2d preset {name!r}; available: {', '.join(PRESETS)}")
        base = PRESETS[name]
        unknown = set(overrides) - {"frame_size", "channels", "pool_grid"}
        if unknown:
            raise ConfigError(f"{name}: unknown options {sorted(unknown)}")
        fields = {**base.__dict__, **overrides}
        fields["channels"] = tuple(fields["channels"])  # type: ignore[arg-type]
        return cls(CNN2DConfig(**fields), name=name)  # type: ignore[arg-type]

    def _fused_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Conv weights with the eval-mode BatchNorm folded in, cached until a parameter or
        buffer changes (new storage or in-place update)."""
        tensors = [t for m in self.stages for t in (*m.parameters(), *m.buffers())]
        key = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in tensors)
        if self._fused is None or self._fused[0] != key:
            fused = []
            with torch.no_grad():
                mods = list(self.stages)
                for conv, bn in zip(mods[0::3], mods[1::3], strict=True):
                    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                    assert bn.running_var is not None and bn.running_mean is not None
                    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                    weight = (conv.weight * scale[:, None, None, None]).contiguous(
                        memory_format=torch.channels_last
                    )
                    fused.append((weight, bn.bias - bn.running_mean * scale))
            self._fused = (key, fused)
        return self._fused[1]

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Frames ``(N, 3, s, s)`` in [0, 1] -> ``(N, feature_dim)``."""
        if clips.ndim != 4 or clips.shape[1] != 3:
            raise ValueError(f"expected frames (N, 3, H, W), got {tuple(clips.shape)}")
        x = (clips - _MEAN) / _STD
        if self.training or torch.is_grad_enabled():
            x = self.stages(x)
        else:
            # Inference: BatchNorm folded into cached conv weights, channels-last layout; about
            # 3x faster on CPU than the modules (BN passes over the large early maps, and
            # weights re-laid-out on every call, cost more than the convolutions).
            x = x.contiguous(memory_format=torch.channels_last)
            for weight, bias in self._fused_weights():
                x = F.relu(F.conv2d(x, weight, bias, stride=2, padding=1), inplace=True)
        return F.adaptive_avg_pool2d(x, self.config.pool_grid).flatten(1)

    def build_options(self) -> dict:
        cfg = self.config
        return {**super().build_options(), "frame_size": cfg.frame_size, "channels": list(cfg.channels),
                "pool_grid": cfg.pool_grid}

    def describe(self) -> dict:
        cfg = self.config
        return {**super().describe(), "channels": list(cfg.channels), "pool_grid": cfg.pool_grid}
