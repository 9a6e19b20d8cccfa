"""Per-second video features for the feature store.

``pooled_pixels`` is the dependency-free extractor used before a learned backbone exists (and
on CPU): every second of video becomes the mean of its frames, average-pooled to a
``grid x grid`` RGB image and flattened (``3 * grid * grid`` values in [0, 1]). One feature
row per started second, like the S3D features of VideoCLIP (``videoclip_vlm.md`` §1.1).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from videolang.data.video import VideoReader, VideoSource
from videolang.errors import VideoDecodeError

log = logging.getLogger(__name__)

__all__ = ["ExtractionReport", "extract_pooled_pixel_features", "pooled_pixels"]


def pooled_pixels(frames: torch.Tensor, fps: float, grid: int = 4) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames at ``fps`` -> ``(ceil(T / fps), 3 * grid * grid)`` float32."""
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


@dataclass
class ExtractionReport:
    written: int = 0
    already_present: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)


def extract_pooled_pixel_features(
    videos: Iterable[tuple[str, VideoSource]],
    writer,
    *,
    grid: int = 4,
    progress: bool = True,
    total: int | None = None,
) -> ExtractionReport:
    """Fill a feature-store writer from ``(video_id, source)`` pairs.

    Ids already in the writer are skipped (resume); videos that fail to decode are listed in
    the report and logged, never fatal.
    """
    from tqdm import tqdm

    report = ExtractionReport()
    for vid, source in tqdm(videos, total=total, disable=not progress, desc="features", unit="video"):
        if vid in writer:
            report.already_present += 1
            continue
        try:
            with VideoReader(source) as reader:
                frames = reader.read(np.arange(reader.metadata.num_frames))
                fps = reader.metadata.fps
        except VideoDecodeError as exc:
            log.warning("skipping %s: %s", vid, exc.reason)
            report.bad.append((vid, exc.reason))
            continue
        writer.add(vid, pooled_pixels(frames, fps, grid))
        report.written += 1
    return report
