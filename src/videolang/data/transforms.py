"""Frame transforms in plain torch (no torchvision).

Functions take videos ``(T, C, H, W)`` or images ``(C, H, W)``, float or uint8;
:func:`to_float_tchw` converts the output of :func:`~videolang.data.video.read_frames`. Resizing
is antialiased by default; ``antialias=False`` with :func:`resize_longer_and_pad` matches
ClipBERT's original preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "center_crop",
    "hflip",
    "normalize",
    "random_crop",
    "resize_longer_and_pad",
    "resize_shorter_side",
    "to_float_tchw",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float_tchw(frames: torch.Tensor, scale: float = 1.0 / 255.0) -> torch.Tensor:
    """``(T, H, W, C)`` uint8 -> ``(T, C, H, W)`` float32 multiplied by ``scale``."""
    if frames.ndim != 4:
        raise ValueError(f"expected (T, H, W, C) frames, got shape {tuple(frames.shape)}")
    return frames.permute(0, 3, 1, 2).to(torch.float32) * scale


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.ndim == 3:
        return x.unsqueeze(0), True
    if x.ndim != 4:
        raise ValueError(f"expected (T, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x, False


def _resize(x: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    dtype = x.dtype
    y = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=antialias)
    if dtype == torch.uint8:
        y = y.round().clamp(0, 255).to(torch.uint8)
    return y


def resize_shorter_side(x: torch.Tensor, size: int, *, antialias: bool = True) -> torch.Tensor:
    """Resize so the shorter side is ``size``, keeping the aspect ratio (longer side truncated
    to an int, as ffmpeg's and the originals' scalers do)."""
    x, single = _as_batch(x)
    h, w = x.shape[-2:]
    if min(h, w) == size:
        out = x
    elif h <= w:
        out = _resize(x, (size, int(w * size / h)), antialias)
    else:
        out = _resize(x, (int(h * size / w), size), antialias)
    return out[0] if single else out


def resize_longer_and_pad(
    x: torch.Tensor, size: int, *, antialias: bool = False, pad_value: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """ClipBERT preprocessing: longer side -> ``size`` (shorter side truncated), zero padding
    on the bottom and right to ``size x size``.

    Returns the padded frames and a ``(size, size)`` bool mask that is True on real pixels,
    so models can ignore padding (the original ClipBERT had no such mask).
    """
    x, single = _as_batch(x)
    h, w = x.shape[-2:]
    if h >= w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    resized = _resize(x, (nh, nw), antialias) if (nh, nw) != (h, w) else x
    out = resized.new_full((*x.shape[:-2], size, size), pad_value)
    out[..., :nh, :nw] = resized
    valid = torch.zeros(size, size, dtype=torch.bool)
    valid[:nh, :nw] = True
    return (out[0] if single else out), valid


def center_crop(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Crop the centre ``size`` (int = square). Inputs smaller than the crop are an error."""
    th, tw = (size, size) if isinstance(size, int) else size
    h, w = x.shape[-2:]
    if th > h or tw > w:
        raise ValueError(f"crop {th}x{tw} larger than frames {h}x{w}")
    top, left = (h - th) // 2, (w - tw) // 2
    return x[..., top : top + th, left : left + tw]


def random_crop(
    x: torch.Tensor, size: int | tuple[int, int], *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Crop ``size`` at a uniformly random position, the same for every frame of the clip."""
    th, tw = (size, size) if isinstance(size, int) else size
    h, w = x.shape[-2:]
    if th > h or tw > w:
        raise ValueError(f"crop {th}x{tw} larger than frames {h}x{w}")
    top = int(torch.randint(0, h - th + 1, (), generator=generator))
    left = int(torch.randint(0, w - tw + 1, (), generator=generator))
    return x[..., top : top + th, left : left + tw]


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror left-right. Note: this turns "moves left" into "moves right"; captions and labels
    that name a direction must be flipped too (the synthetic world's do)."""
    return x.flip(-1)


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """``(x - mean) / std`` per channel, channels at dim -3."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s
