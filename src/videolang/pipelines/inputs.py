"""What pipelines accept as a video or a clip of text, and how each is told apart.

A video is a path or the bytes of a file (decoded while streaming), :class:`Frames` (uint8
``(T, H, W, 3)`` and a frame rate; a bare uint8 array with ``fps=``) or :class:`Features` (float
``(T, D)`` rows at the model's feature rate; a bare float 2-D array), for feature-based models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Features", "Frames", "VideoInput", "as_video", "describe_video"]


@dataclass(frozen=True)
class Frames:
    """Decoded video: uint8 ``(T, H, W, 3)`` frames shown at ``fps`` frames per second."""

    data: torch.Tensor
    fps: float

    def __post_init__(self) -> None:
        data = torch.from_numpy(np.ascontiguousarray(self.data)) if isinstance(self.data, np.ndarray) else self.data
        if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or data.ndim != 4 or data.shape[-1] != 3:
            raise ValueError(f"Frames needs uint8 (T, H, W, 3) frames, got {_shape_of(self.data)}")
        if data.shape[0] == 0:
            raise ValueError("Frames: the video has no frames")
        if not float(self.fps) > 0:
            raise ValueError(f"Frames: fps must be positive, got {self.fps!r}")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "fps", float(self.fps))


@dataclass(frozen=True)
class Features:
    """Feature rows ``(T, D)`` of one video, at the rate the model was trained on."""

    data: torch.Tensor

    def __post_init__(self) -> None:
        data = torch.from_numpy(np.asarray(self.data)) if isinstance(self.data, np.ndarray) else self.data
        if not isinstance(data, torch.Tensor) or not data.is_floating_point() or data.ndim != 2:
            raise ValueError(f"Features needs float (T, D) rows, got {_shape_of(self.data)}")
        object.__setattr__(self, "data", data.float())


VideoInput = str | os.PathLike | bytes | bytearray | memoryview | Frames | Features | torch.Tensor | np.ndarray


def _shape_of(x: object) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    return f"{type(x).__name__} {tuple(shape)} {dtype}" if shape is not None else type(x).__name__


def as_video(video: VideoInput, fps: float | None = None) -> str | os.PathLike | bytes | Frames | Features:
    """One video input in its canonical form (see the module docstring).

    Raises ``TypeError`` / ``ValueError`` naming what was given when it is none of them, e.g. a
    uint8 array without ``fps``.
    """
    if isinstance(video, (Frames, Features, str, os.PathLike)):
        return video
    if isinstance(video, (bytes, bytearray, memoryview)):
        return bytes(video)
    if isinstance(video, (np.ndarray, torch.Tensor)):
        if video.dtype in (np.uint8, torch.uint8) and video.ndim == 4:
            if fps is None:
                raise ValueError("decoded frames need their frame rate: pass fps=... or videolang.Frames(frames, fps)")
            return Frames(video, fps)
        is_float = video.is_floating_point() if isinstance(video, torch.Tensor) else np.issubdtype(video.dtype, np.floating)
        if is_float and video.ndim == 2:
            return Features(video)
        raise ValueError(f"a video array must be uint8 (T, H, W, 3) frames or float (T, D) features, "
                         f"got {_shape_of(video)}")
    raise TypeError(f"not a video input: {type(video).__name__} (give a path, bytes, Frames or Features)")


def describe_video(video: object) -> str:
    """A short name of a video input for messages and outputs."""
    if isinstance(video, (str, os.PathLike)):
        return os.fspath(video)
    if isinstance(video, (bytes, bytearray, memoryview)):
        return f"<{len(video)} bytes>"
    if isinstance(video, Frames):
        return f"<{video.data.shape[0]} frames at {video.fps:g} fps>"
    if isinstance(video, Features):
        return f"<{video.data.shape[0]} feature rows>"
    return _shape_of(video)


def is_path(video: object) -> bool:
    return isinstance(video, (str, os.PathLike)) and not isinstance(video, bytes)


def path_name(video: object) -> str | None:
    return Path(video).name if is_path(video) else None  # type: ignore[arg-type]
