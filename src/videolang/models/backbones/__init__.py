"""Frozen video backbones that turn decoded frames into one feature row per second of video.

:func:`create_backbone` builds a registered :class:`VideoBackbone` (``s3dg``, ``cnn2d-tiny``,
``cnn2d-small``, ``pooled-pixels``; :func:`list_backbones`) from a local weights file, never a
download; :func:`video_to_features` runs one on a decoded video. The six-step contract that lets
:mod:`videolang.pipelines.features` batch clips of many videos: docs/inference.md ("Feature
backbones").
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videolang.data.sampling import resample_frame_indices
from videolang.errors import ConfigError
from videolang.models.weights import load_strict

__all__ = [
    "PooledPixelsBackbone",
    "VideoBackbone",
    "create_backbone",
    "l2_normalize_rows",
    "list_backbones",
    "load_state_dict_file",
    "per_second_bounds",
    "register_backbone",
    "resize_short_side_center_crop",
    "short_side_size",
    "video_to_features",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# frame arithmetic shared by the backbones
# --------------------------------------------------------------------------------------------


def per_second_bounds(num_frames: int, fps: float) -> np.ndarray:
    """Offsets ``b`` (``seconds + 1`` of them) such that frames ``b[j]:b[j+1]`` are second ``j``.

    Frame ``i`` belongs to second ``floor(i / fps)``; there are ``ceil(num_frames / fps)``
    seconds (the last one may be partial), and none for an empty video.
    """
    if num_frames <= 0:
        return np.zeros(1, dtype=np.int64)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    second = np.floor(np.arange(num_frames, dtype=np.float64) / fps).astype(np.int64)
    seconds = int(second[-1]) + 1
    bounds = np.searchsorted(second, np.arange(seconds + 1), side="left")
    return bounds.astype(np.int64)


def short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``(width, height)`` after scaling the short side to ``size`` keeping the aspect ratio.

    The long side is truncated like MMPT's ``VideoLoader._get_output_dim`` (``int(h * s / w)``).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    if height >= width:
        return size, int(height * size / width)
    return int(width * size / height), size


def resize_short_side_center_crop(
    frames: torch.Tensor, size: int, *, chunk: int = 64
) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> uint8 ``(T, size, size, 3)``: short side to ``size``, centre crop.

    Resizing is bicubic with antialiasing and rounds back to uint8, like ffmpeg's ``scale``
    filter feeding MMPT's extractor; frames already at the target size are only cropped. The
    crop offset is ``int((side - size) / 2)`` as in MMPT. Works in chunks of ``chunk`` frames
    so that float copies of large frames stay small.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got {tuple(frames.shape)}")
    t, h, w = frames.shape[0], frames.shape[1], frames.shape[2]
    new_w, new_h = short_side_size(w, h, size)
    top, left = int((new_h - size) / 2), int((new_w - size) / 2)
    if (new_h, new_w) == (h, w):
        return frames[:, top : top + size, left : left + size]
    out = torch.empty((t, size, size, 3), dtype=torch.uint8)
    for s in range(0, t, chunk):
        x = frames[s : s + chunk].permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False,
                          antialias=True)  # fmt: skip
        x = x[:, :, top : top + size, left : left + size].clamp_(0, 255).round_()
        out[s : s + chunk] = x.to(torch.uint8).permute(0, 2, 3, 1)
    return out


def l2_normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def segment_mean(values: torch.Tensor, bounds: np.ndarray) -> torch.Tensor:
    """Mean of ``values[bounds[j]:bounds[j+1]]`` for every ``j`` (an empty segment gives 0).

    ``bounds`` need not start at 0: values outside ``[bounds[0], bounds[-1])`` are context only.
    """
    values = values[int(bounds[0]) : int(bounds[-1])]
    n_seg = len(bounds) - 1
    lengths = torch.as_tensor(np.diff(bounds), dtype=torch.long, device=values.device)
    seg = torch.repeat_interleave(torch.arange(n_seg, device=values.device), lengths)
    sums = torch.zeros((n_seg, *values.shape[1:]), dtype=values.dtype, device=values.device)
    sums.index_add_(0, seg, values)
    counts = lengths.clamp(min=1).to(values.dtype).reshape(-1, *([1] * (values.ndim - 1)))
    return sums / counts


# --------------------------------------------------------------------------------------------
# the interface
# --------------------------------------------------------------------------------------------


class VideoBackbone(nn.Module):
    """Base class: frames in, one ``feature_dim`` row per second of video out.

    Attributes:
        name: registry name (``"s3dg"``, ``"cnn2d-tiny"`` ...).
        feature_dim: ``D`` of the output rows.
        frames_per_feature: model-input frames per output row (S3D-G: 30), or ``None`` for
            "one second of source frames" (the 2D backbones keep the source rate).
        fps: the rate the input is resampled to (S3D-G: 30.0), or ``None`` to keep the
            source rate.
        frame_size: side of the square frames the network sees, or ``None`` for any size.
        clip_frames: frames per clip given to :meth:`forward` (S3D-G: 30, 2D backbones: 1).
        default_batch_size: clips per forward pass when the caller does not choose.
        decode_bound: True when decoding costs about as much as the model (the 2D backbones),
            so that the extraction loop leaves a CPU core to its decoding thread.
        weights_path: the file the weights came from, or ``None`` for seeded random init.
        seed: the seed of the random init (also recorded when weights were loaded).
    """

    name: str = "backbone"
    feature_dim: int = 0
    frames_per_feature: int | None = None
    fps: float | None = None
    frame_size: int | None = None
    clip_frames: int = 1
    default_batch_size: int = 256
    decode_bound: bool = False
    # Output rows per second for backbones that pool source frames (frames_per_feature None):
    # 1 is VideoCLIP's per-second layout; more rows keep motion inside a second visible.
    rows_per_second: float = 1.0
    # Frame-pooling backbones only: append to each row the change of the frame features across
    # it (see :meth:`pool`). A mean over frames is the same whichever way an object moves, so
    # without this a row cannot tell "moves left" from "moves right"; with it the row carries
    # the direction (TSN's RGB-difference idea applied to features). Doubles ``feature_dim``.
    temporal_diff: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.weights_path: str | None = None
        self.seed: int = 0

    # -- temporal plan -----------------------------------------------------------------------

    def frame_indices(self, num_frames: int, source_fps: float) -> np.ndarray:
        """Source frame index of every model-input frame, in order (int64)."""
        if self.fps is None:
            return np.arange(max(num_frames, 0), dtype=np.int64)
        return resample_frame_indices(num_frames, source_fps, self.fps)

    def row_bounds(self, num_frames: int, source_fps: float) -> np.ndarray:
        """Offsets into :meth:`frame_indices`: output row ``j`` uses inputs ``b[j]:b[j+1]``."""
        if self.frames_per_feature is None:
            return per_second_bounds(num_frames, source_fps / self.rows_per_second)
        n = len(self.frame_indices(num_frames, source_fps))
        rows = math.ceil(n / self.frames_per_feature)
        return np.minimum(np.arange(rows + 1, dtype=np.int64) * self.frames_per_feature, n)

    def num_rows(self, num_frames: int, source_fps: float) -> int:
        """Feature rows a video of ``num_frames`` frames at ``source_fps`` gets (ceil(seconds))."""
        return len(self.row_bounds(num_frames, source_fps)) - 1

    # -- spatial -----------------------------------------------------------------------------

    def decode_size(self, width: int, height: int) -> tuple[int, int] | None:
        """Size ``(w, h)`` frames may be scaled to while decoding, or ``None`` to keep them.

        Scaling in the decoder (swscale, bicubic, as ffmpeg's ``scale`` filter in MMPT) keeps
        full-resolution frames out of memory; :meth:`transform` accepts frames either way.
        """
        if self.frame_size is None:
            return None
        return short_side_size(width, height, self.frame_size)

    def transform(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` -> float ``(T, 3, s, s)`` in [0, 1] (short side, centre crop)."""
        if self.frame_size is not None:
            frames = resize_short_side_center_crop(frames, self.frame_size)
        return frames.permute(0, 3, 1, 2).float().div_(255.0)

    def to_clips(self, frames: torch.Tensor, bounds: np.ndarray) -> torch.Tensor:
        """Transformed frames of whole rows (``bounds`` relative to them) -> :meth:`forward` input.

        Default: one frame per clip.
        """
        return frames

    def pool(self, clip_features: torch.Tensor, bounds: np.ndarray) -> torch.Tensor:
        """``(num_clips, D)`` clip features of whole rows -> ``(rows, D)``.

        Default (one frame per clip): the mean over the frames of each row. With
        :attr:`temporal_diff`, each row is ``[mean, f(after) - f(before)]``, where ``before`` and
        ``after`` are the frames just outside the row (clamped to the video's first and last),
        so that every row spans at least two frames of motion.
        """
        mean = segment_mean(clip_features, bounds)
        if not self.temporal_diff:
            return mean
        n = clip_features.shape[0]
        if n == 0:
            return torch.cat([mean, mean], dim=1)
        starts = torch.as_tensor(bounds[:-1], dtype=torch.long, device=clip_features.device)
        ends = torch.as_tensor(bounds[1:], dtype=torch.long, device=clip_features.device)
        before = (starts - 1).clamp(0, n - 1)
        after = ends.clamp(0, n - 1)
        return torch.cat([mean, clip_features[after] - clip_features[before]], dim=1)

    def preprocess(self, frames: torch.Tensor, source_fps: float) -> torch.Tensor:
        """Whole decoded video (uint8 ``(T, H, W, 3)`` at ``source_fps``) -> tensor of clips."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {tuple(frames.shape)}")
        idx = self.frame_indices(frames.shape[0], source_fps)
        bounds = self.row_bounds(frames.shape[0], source_fps)
        x = self.transform(frames[torch.from_numpy(idx)])
        return self.to_clips(x, bounds)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``(num_clips, ...)`` -> ``(num_clips, feature_dim)``."""
        raise NotImplementedError

    def build_options(self) -> dict[str, Any]:
        """Keyword options that rebuild this backbone: ``create_backbone(name, **options)``."""
        options: dict[str, Any] = {}
        if self.rows_per_second != 1.0:
            options["rows_per_second"] = self.rows_per_second
        if self.temporal_diff:
            options["temporal_diff"] = True
        return options

    def describe(self) -> dict[str, Any]:
        """What produced the features, for ``extraction.json``."""
        described = {
            "backbone": self.name,
            "feature_dim": self.feature_dim,
            "frames_per_feature": self.frames_per_feature
            if self.frames_per_feature is not None
            else "source frames of 1 / rows_per_second seconds",
            "fps": self.fps if self.fps is not None else "source",
            "frame_size": self.frame_size,
            "clip_frames": self.clip_frames,
            "rows_per_second": self.rows_per_second,
            "seed": self.seed,
        }
        if self.temporal_diff:  # recorded only when on, so older stores still resume
            described["temporal_diff"] = True
        return described


def video_to_features(
    backbone: VideoBackbone,
    frames: torch.Tensor,
    fps: float,
    batch_size: int | None = None,
    *,
    l2_normalize: bool = False,
) -> np.ndarray:
    """Features of one decoded video: uint8 ``(T, H, W, 3)`` at ``fps`` -> float32 ``(rows, D)``.

    One row per second of video (``rows = ceil(seconds)``); the last partial second is
    zero-padded for clip backbones (S3D-G) and averaged over its frames for the 2D ones.
    Runs under ``torch.inference_mode`` on the backbone's device, ``batch_size`` clips per
    forward pass (default: the backbone's).
    """
    device = next(iter(backbone.parameters()), torch.empty(0)).device
    bs = batch_size or backbone.default_batch_size
    bounds = backbone.row_bounds(frames.shape[0], fps)
    with torch.inference_mode():
        clips = backbone.preprocess(frames, fps)
        outs = [backbone(clips[s : s + bs].to(device)) for s in range(0, clips.shape[0], bs)]
        feats = torch.cat(outs) if outs else torch.zeros((0, backbone.feature_dim), device=device)
        rows = backbone.pool(feats.float(), bounds).cpu().numpy().astype(np.float32)
    return l2_normalize_rows(rows) if l2_normalize else rows


# --------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    from videolang.models.weights import load_tensors_file

    obj = load_tensors_file(path, f"weights file {path}")
    # Common wrappers: {"state_dict": ...} (Lightning and others), {"model": ...} (fairseq).
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{path} does not hold a state_dict (a dict of tensors)")
    return dict(obj)


def load_state_dict_file(
    module: nn.Module,
    path: str | os.PathLike,
    *,
    ignore_prefixes: tuple[str, ...] = (),
    optional_suffixes: tuple[str, ...] = ("num_batches_tracked",),
) -> None:
    """Load a local ``.pth``/``.pt``/``.safetensors`` state_dict into ``module``, strictly.

    Keys starting with one of ``ignore_prefixes`` are dropped on purpose (e.g. the word2vec
    ``text_module.*`` of the MIL-NCE S3D file); a leading ``module.`` (DataParallel) is
    stripped. Buffers ending in ``optional_suffixes`` may be absent (BatchNorm's
    ``num_batches_tracked`` is not in every export). Any other missing or unexpected key, or a
    shape mismatch, raises :class:`~videolang.errors.ConfigError` listing them.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"weights file {p} does not exist (weights are loaded from a local path)")
    raw = _read_state_dict(p)
    if raw and all(k.startswith("module.") for k in raw):
        raw = {k[len("module.") :]: v for k, v in raw.items()}
    state = {k: v for k, v in raw.items() if not k.startswith(ignore_prefixes)}
    ignored = len(raw) - len(state)
    name = getattr(module, "name", type(module).__name__)
    load_strict(module, state, source=f"weights file {p} into backbone {name}",
                optional_suffixes=optional_suffixes)
    if ignored:
        log.info("%s: ignored %d keys with prefixes %s", p, ignored, ", ".join(ignore_prefixes))


# --------------------------------------------------------------------------------------------
# pooled pixels (no learned weights)
# --------------------------------------------------------------------------------------------


class PooledPixelsBackbone(VideoBackbone):
    """The dependency-free baseline as a backbone: per-second mean of ``grid x grid`` pooled RGB.

    ``3 * grid * grid`` values in [0, 1] per second, computed per frame so that clips of many
    videos batch together (the test compares it with a direct per-video computation).
    """

    name = "pooled-pixels"
    frame_size = None
    default_batch_size = 1024
    decode_bound = True

    def __init__(self, grid: int = 4) -> None:
        super().__init__()
        if grid < 1:
            raise ConfigError(f"pooled-pixels: grid must be >= 1, got {grid}")
        self.grid = grid
        self.feature_dim = 3 * grid * grid

    def transform(self, frames: torch.Tensor) -> torch.Tensor:
        # Pool at once: frames of different videos differ in size, their grids do not.
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        return F.adaptive_avg_pool2d(x, self.grid)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return clips.flatten(1)

    def build_options(self) -> dict[str, Any]:
        return {**super().build_options(), "grid": self.grid}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "grid": self.grid}


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

_Factory = Callable[..., VideoBackbone]
_REGISTRY: dict[str, _Factory] = {}


def register_backbone(name: str) -> Callable[[_Factory], _Factory]:
    """Decorator: register ``factory(**options) -> VideoBackbone`` under ``name``."""

    def deco(factory: _Factory) -> _Factory:
        _REGISTRY[name] = factory
        return factory

    return deco


@register_backbone("pooled-pixels")
def _pooled_pixels(**options: Any) -> VideoBackbone:
    return PooledPixelsBackbone(**options)


@register_backbone("s3dg")
def _s3dg(**options: Any) -> VideoBackbone:
    from videolang.models.backbones.s3dg import S3DG

    return S3DG(**options)


@register_backbone("cnn2d-tiny")
def _cnn2d_tiny(**options: Any) -> VideoBackbone:
    from videolang.models.backbones.cnn2d import CNN2D

    return CNN2D.from_preset("cnn2d-tiny", **options)


@register_backbone("cnn2d-small")
def _cnn2d_small(**options: Any) -> VideoBackbone:
    from videolang.models.backbones.cnn2d import CNN2D

    return CNN2D.from_preset("cnn2d-small", **options)


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`."""
    return sorted(_REGISTRY)


def create_backbone(
    name: str, *, weights: str | os.PathLike | None = None, seed: int = 0, **options: Any
) -> VideoBackbone:
    """Build backbone ``name`` in eval mode, with weights from the local file ``weights``.

    Without ``weights`` the parameters are initialised from ``seed`` (the global torch RNG is
    left untouched); for S3D-G this logs a warning, since its random features mean nothing.
    ``options`` go to the backbone (``grid`` for pooled-pixels); ``rows_per_second`` (frame-
    pooling backbones: 2D CNNs, pooled-pixels) sets how many feature rows each second of video
    gets (default 1, VideoCLIP's layout) and ``temporal_diff`` (same backbones) appends each row's
    feature change, which carries motion direction (``feature_dim`` doubles). Unknown names, unknown
    options and weights that do not fit raise :class:`~videolang.errors.ConfigError`.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ConfigError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    rows_per_second = float(options.pop("rows_per_second", 1.0))
    temporal_diff = options.pop("temporal_diff", False)
    if not isinstance(temporal_diff, bool):
        raise ConfigError(f"backbone {name!r}: temporal_diff must be true or false, got {temporal_diff!r}")
    # Seeded init without disturbing the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = factory(**options)
        except TypeError as exc:
            raise ConfigError(f"backbone {name!r}: bad options {sorted(options)} ({exc})") from exc
    model.seed = seed
    if rows_per_second != 1.0:
        if model.frames_per_feature is not None or rows_per_second <= 0:
            raise ConfigError(f"backbone {name!r}: rows_per_second={rows_per_second} is not supported "
                              "(only frame-pooling backbones take it, with a positive value)")
        model.rows_per_second = rows_per_second
    if temporal_diff:
        if model.frames_per_feature is not None:
            raise ConfigError(f"backbone {name!r}: temporal_diff is only for frame-pooling backbones "
                              "(2D CNNs, pooled-pixels); clip backbones see motion already")
        model.temporal_diff = True
        model.feature_dim *= 2
    has_params = any(True for _ in model.parameters())
    if weights is not None:
        if not has_params:
            raise ConfigError(f"backbone {name!r} has no weights to load (got {weights})")
        load_state_dict_file(model, weights, ignore_prefixes=getattr(model, "ignored_prefixes", ()))
        model.weights_path = os.fspath(weights)
        log.info("%s: loaded weights from %s", name, weights)
    elif name == "s3dg":
        log.warning("S3D-G has random weights (no --weights given): features are NOT meaningful")
    elif has_params:
        log.info("%s: seeded random init (seed=%d)", name, seed)
    return model.eval()
