"""ResNet with frozen BatchNorm for end-to-end training on raw frames (ClipBERT's 2D CNN).

A torchvision-layout bottleneck ResNet with the options of the detectron2/MSRA ResNet-50 that
ClipBERT trains (frozen BatchNorm, stride in the 1x1 conv, frozen stem and res2; see
:class:`ResNetConfig`). :data:`PRESETS`: ``resnet50`` (25.6M parameters with the 1000-way
classifier, as torchvision's) and ``resnet-small`` (about 0.2M, for CPU work).
:func:`convert_detectron2_resnet` maps detectron2 keys (``stem.conv1.norm.*``,
``res{2..5}.{i}.conv{1..3}[.norm].*``, ``res{k}.0.shortcut[.norm].*``) onto this layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from videolang.config_types import dataclass_from_dict
from videolang.errors import ConfigError

__all__ = [
    "PRESETS",
    "Bottleneck",
    "FrozenBatchNorm2d",
    "ResNet",
    "ResNetConfig",
    "convert_detectron2_resnet",
    "count_weights",
]


@dataclass
class ResNetConfig:
    """Shape and training options of a :class:`ResNet`.

    * ``norm="frozen_bn"``: :class:`FrozenBatchNorm2d` everywhere (affine and statistics are
      buffers, eps 1e-5), detectron2's default; ``"bn"`` gives ordinary BatchNorm (ImageNet-style
      training, and the torchvision parameter count).
    * ``stride_in_1x1=True`` (MSRA): the stride of a stage's first block sits on its 1x1
      ``conv1``; ``False`` puts it on the 3x3 ``conv2`` (torchvision v1.5).
    * ``freeze_at``: 0 trains everything, 1 freezes the stem, 2 the stem and ``layer1`` (res2),
      ... (detectron2's ``BACKBONE.FREEZE_AT``; ClipBERT: 2).
    * ``res5_dilation``: 1 keeps the last stage's stride 2 (output stride 32, ClipBERT); 2
      replaces it by dilation 2 (output stride 16, how the grid-feats-vqa weights were trained).
    """

    blocks: tuple[int, ...] = (3, 4, 6, 3)
    stem_channels: int = 64
    width: int = 64  # bottleneck width of the first stage; doubles per stage
    expansion: int = 4
    stride_in_1x1: bool = True
    res5_dilation: Literal[1, 2] = 1
    freeze_at: int = 2
    norm: Literal["frozen_bn", "bn"] = "frozen_bn"
    num_classes: int | None = None  # ImageNet-style classifier (avgpool + fc)

    def __post_init__(self) -> None:
        self.blocks = tuple(int(b) for b in self.blocks)
        if not self.blocks or any(b < 1 for b in self.blocks):
            raise ConfigError(f"resnet: blocks must be positive, got {self.blocks}")
        if self.res5_dilation not in (1, 2):
            raise ConfigError(f"resnet: res5_dilation must be 1 or 2, got {self.res5_dilation}")
        if self.norm not in ("frozen_bn", "bn"):
            raise ConfigError(f"resnet: norm must be 'frozen_bn' or 'bn', got {self.norm!r}")
        if not 0 <= self.freeze_at <= len(self.blocks) + 1:
            raise ConfigError(f"resnet: freeze_at must be in [0, {len(self.blocks) + 1}], got {self.freeze_at}")

    @property
    def out_channels(self) -> int:
        return self.width * 2 ** (len(self.blocks) - 1) * self.expansion

    @property
    def output_stride(self) -> int:
        return 4 * 2 ** (len(self.blocks) - 1) // (self.res5_dilation if len(self.blocks) > 1 else 1)

    @classmethod
    def from_dict(cls, d: Mapping) -> ResNetConfig:
        return dataclass_from_dict(cls, d, "resnet config")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["blocks"] = list(self.blocks)
        return out


PRESETS: dict[str, ResNetConfig] = {
    "resnet50": ResNetConfig(),
    "resnet-small": ResNetConfig(blocks=(1, 1, 1, 1), stem_channels=16, width=8),
}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine (all buffers): ``y = x * s + b`` with
    ``s = weight / sqrt(running_var + eps)``, ``b = bias - running_mean * s``."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _norm(kind: str, channels: int) -> nn.Module:
    return FrozenBatchNorm2d(channels) if kind == "frozen_bn" else nn.BatchNorm2d(channels)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with a projection shortcut on the first block of a stage."""

    def __init__(self, in_ch: int, width: int, out_ch: int, *, stride: int, dilation: int,
                 stride_in_1x1: bool, norm: str):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_ch, width, 1, stride=s1, bias=False)
        self.bn1 = _norm(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=s3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _norm(norm, width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = _norm(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            _norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet: ``forward(x (N, 3, H, W)) -> (N, out_channels, H/32, W/32)`` (the
    last stage's map; ``H/16`` with ``res5_dilation=2``). With ``num_classes``,
    :meth:`classify` adds global average pooling and ``fc``."""

    def __init__(self, config: ResNetConfig | None = None):
        super().__init__()
        cfg = config or ResNetConfig()
        self.config = cfg
        self.conv1 = nn.Conv2d(3, cfg.stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(cfg.norm, cfg.stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = cfg.stem_channels
        last = len(cfg.blocks) - 1
        for k, n in enumerate(cfg.blocks):
            width = cfg.width * 2**k
            out_ch = width * cfg.expansion
            dilated = k == last and k > 0 and cfg.res5_dilation == 2
            stride = 1 if k == 0 or dilated else 2
            dilation = 2 if dilated else 1
            blocks = [Bottleneck(in_ch if i == 0 else out_ch, width, out_ch, stride=stride if i == 0 else 1,
                                 dilation=dilation, stride_in_1x1=cfg.stride_in_1x1, norm=cfg.norm)
                      for i in range(n)]
            self.add_module(f"layer{k + 1}", nn.Sequential(*blocks))
            in_ch = out_ch
        self.fc = nn.Linear(in_ch, cfg.num_classes) if cfg.num_classes else None
        self._init_weights()
        self.freeze(cfg.freeze_at)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{k + 1}") for k in range(len(self.config.blocks))]

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # MSRA (He) init, like detectron2's c2_msra_fill.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in self.modules():
            # Trainable BatchNorm: zero the last norm of each residual branch so blocks start
            # as identities (keeps a from-scratch net trainable at small batch sizes). Frozen
            # norms keep their identity init: a frozen zero would switch the branch off.
            if isinstance(block, Bottleneck) and isinstance(block.bn3, nn.BatchNorm2d):
                nn.init.zeros_(block.bn3.weight)

    def freeze(self, freeze_at: int) -> None:
        """Stop gradients into the stem (``freeze_at >= 1``) and the first ``freeze_at - 1``
        stages; their BatchNorms (if not frozen already) are kept in eval mode by :meth:`train`."""
        self._frozen = [self.conv1, self.bn1][: 2 if freeze_at >= 1 else 0] + self.stages[: max(freeze_at - 1, 0)]
        for m in self._frozen:
            m.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        for m in self._frozen:  # frozen layers never update BatchNorm statistics
            m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        return x

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc is None:
            raise ConfigError("this ResNet has no classifier (num_classes is None)")
        return self.fc(self.forward(x).mean(dim=(2, 3)))


def count_weights(module: nn.Module) -> int:
    """Trainable-shaped weights: parameters plus the affine buffers (``weight``, ``bias``) of
    :class:`FrozenBatchNorm2d`, i.e. what torchvision counts as parameters."""
    n = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n += m.weight.numel() + m.bias.numel()
    return n


_D2_BLOCK = re.compile(r"res(\d+)\.(\d+)\.(conv[123]|shortcut)(\.norm)?\.(\w+)$")
_D2_STEM = re.compile(r"stem\.conv1(\.norm)?\.(\w+)$")


def convert_detectron2_resnet(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """detectron2 ResNet keys under ``prefix`` (e.g. ``"backbone."``) -> :class:`ResNet` keys.

    ``stem.conv1`` -> ``conv1`` (its ``.norm`` -> ``bn1``); ``res{K}.{i}.conv{J}`` ->
    ``layer{K-1}.{i}.conv{J}`` (``.norm`` -> ``bn{J}``); ``shortcut`` -> ``downsample.0``
    (``.norm`` -> ``downsample.1``). Keys outside ``prefix`` are ignored; a key under it that
    matches neither pattern is an error (nothing is dropped silently).
    """
    out: dict[str, torch.Tensor] = {}
    bad = []
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if m := _D2_STEM.fullmatch(rest):
            out[f"{'bn1' if m.group(1) else 'conv1'}.{m.group(2)}"] = value
        elif m := _D2_BLOCK.fullmatch(rest):
            stage, idx, conv, norm, name = m.groups()
            base = f"layer{int(stage) - 1}.{idx}."
            if conv == "shortcut":
                base += "downsample.1" if norm else "downsample.0"
            else:
                base += f"bn{conv[-1]}" if norm else conv
            out[f"{base}.{name}"] = value
        else:
            bad.append(key)
    if bad:
        raise ConfigError(f"unrecognised detectron2 ResNet keys: {', '.join(bad[:10])}")
    return out
