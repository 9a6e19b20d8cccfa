"""The video side of feature-based models (VideoCLIP, VLM): video -> feature rows -> windows.

A video becomes feature rows through the model folder's frozen backbone
(:func:`~videolang.pipelines.features.video_features`, streamed, rounded to the precision the
model trained on), or is given as rows. The rows are cut into windows of the model's
``max_len``; each window is embedded alone, padded as in training, so an embedding depends on
its video only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from videolang.data.sampling import window_spans
from videolang.errors import ConfigError, VideoDecodeError
from videolang.pipelines.base import Pipeline, as_video_list
from videolang.pipelines.folder import (
    VideoFeaturesSpec,
    load_folder_backbone,
    load_folder_tokenizer,
)
from videolang.pipelines.inputs import Features, VideoInput, as_video, describe_video

__all__ = ["FeatureVideoPipeline", "VideoWindows"]


@dataclass
class VideoWindows:
    """Embeddings of one video's time windows: ``embeddings (W, H)``, ``starts`` / ``ends``
    in seconds (``W`` each), and the video's ``duration`` in seconds."""

    embeddings: torch.Tensor
    starts: list[float]
    ends: list[float]
    duration: float


class FeatureVideoPipeline(Pipeline):
    """Shared video side; subclasses implement :meth:`_embed_windows` for their model."""

    def __init__(self, model: torch.nn.Module, spec: Any, tokenizer: Any = None, *,
                 backbone: torch.nn.Module | None = None, folder: str | Path | None = None,
                 device: str | torch.device = "cpu"):
        self.backbone = backbone.eval() if backbone is not None else None
        super().__init__(model, spec, tokenizer, folder=folder, device=device)

    @classmethod
    def from_folder(cls, folder: Path, spec: Any, *, device: str | torch.device = "cpu") -> FeatureVideoPipeline:
        """The model, its tokenizer (when the spec has a text section) and its feature backbone."""
        from videolang.models import load_pretrained

        text = getattr(spec, "text", None)
        tokenizer = load_folder_tokenizer(folder, text) if text is not None else None
        return cls(load_pretrained(folder), spec, tokenizer, backbone=cls.load_backbone(folder, spec.video),
                   folder=folder, device=device)

    @staticmethod
    def load_backbone(folder: Path, video: VideoFeaturesSpec):
        return load_folder_backbone(folder, video.backbone) if video.backbone is not None else None

    def modules(self) -> dict[str, torch.nn.Module]:
        mods = super().modules()
        if self.backbone is not None:
            mods["backbone"] = self.backbone
        return mods

    @property
    def video_spec(self) -> VideoFeaturesSpec:
        return self.spec.video

    # -- features ---------------------------------------------------------------------------

    def video_features(self, video: VideoInput, *, fps: float | None = None) -> torch.Tensor:
        """Feature rows ``(T, D)`` of one video (decoded and run through the backbone unless
        the video is given as features)."""
        return self._features(video, fps)[0]

    def _features(self, video: VideoInput, fps: float | None) -> tuple[torch.Tensor, float]:
        """Rows and the duration in seconds they cover."""
        from videolang.pipelines.features import video_features

        v = as_video(video, fps)
        rate = self.video_spec.feature_rate
        if isinstance(v, Features):
            rows = v.data
        else:
            b = self.video_spec.backbone
            if self.backbone is None or b is None:
                raise ConfigError("this model folder has no feature backbone: give videos as (T, D) features "
                                  "(videolang.Features) at the model's feature rate")
            rows = torch.from_numpy(video_features(v, self.backbone, l2_normalize=b.l2_normalize, dtype=b.dtype))
        if rows.shape[0] == 0:
            raise VideoDecodeError(describe_video(video), "no feature rows (the video has no frames)")
        dim = self.model.config.feature_dim
        if rows.shape[1] != dim:
            raise ValueError(f"{describe_video(video)}: {rows.shape[1]}-d features, the model expects {dim}")
        return rows, rows.shape[0] / rate

    # -- windows ----------------------------------------------------------------------------

    def _embed_windows(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, H)`` of padded windows ``(B, max_len, D)`` with masks ``(B, max_len)``."""
        raise NotImplementedError

    def _embed_all(self, windows: list[torch.Tensor], batch_size: int) -> torch.Tensor:
        """Embed rows windows (each at most ``max_len`` rows), ``batch_size`` at a time."""
        size = self.video_spec.max_len
        out = []
        with torch.inference_mode():
            for s in range(0, len(windows), batch_size):
                chunk = windows[s : s + batch_size]
                feats = torch.zeros(len(chunk), size, chunk[0].shape[1])
                mask = torch.zeros(len(chunk), size, dtype=torch.bool)
                for j, w in enumerate(chunk):
                    feats[j, : len(w)], mask[j, : len(w)] = w, True
                out.append(self._embed_windows(feats.to(self.device), mask.to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)

    def encode_video(self, videos: VideoInput | Sequence[VideoInput], *, fps: float | None = None,
                     batch_size: int = 64, pooling: Literal["mean", "first"] = "mean") -> torch.Tensor:
        """Embeddings ``(N, H)`` of ``videos`` (paths, bytes, frames or features).

        A video longer than the model's window (``max_len`` feature rows) is embedded window by
        window; ``pooling="mean"`` averages the windows, ``"first"`` keeps the first one only
        (the MSR-VTT evaluation protocol). Videos up to one window long get the embedding their
        evaluation gave, whichever pooling.
        """
        if pooling not in ("mean", "first"):
            raise ValueError(f"pooling must be 'mean' or 'first', got {pooling!r}")
        size = self.video_spec.max_len
        windows: list[torch.Tensor] = []
        owner: list[int] = []
        items = as_video_list(videos)
        for i, video in enumerate(items):
            rows, _ = self._features(video, fps)
            spans = window_spans(len(rows), size, size)
            for a, b in spans[:1] if pooling == "first" else spans:
                windows.append(rows[a:b])
                owner.append(i)
        emb = self._embed_all(windows, batch_size)
        if not items:
            return emb
        out = torch.zeros(len(items), emb.shape[1])
        counts = torch.zeros(len(items))
        idx = torch.tensor(owner)
        out.index_add_(0, idx, emb)
        counts.index_add_(0, idx, torch.ones(len(owner)))
        return out / counts.unsqueeze(1)

    def encode_windows(self, video: VideoInput, *, window: float | None = None, stride: float | None = None,
                       fps: float | None = None, batch_size: int = 64) -> VideoWindows:
        """Embeddings of overlapping time windows of one video (a hit is a moment, not a file).

        ``window`` / ``stride`` are seconds (default: the model's window, half of it); they are
        rounded to whole feature rows and capped at the model's window.
        """
        rows, duration = self._features(video, fps)
        rate, size = self.video_spec.feature_rate, self.video_spec.max_len
        n = size if window is None else max(1, min(size, round(window * rate)))
        step = max(1, n // 2) if stride is None else max(1, round(stride * rate))
        spans = window_spans(len(rows), n, step)
        emb = self._embed_all([rows[a:b] for a, b in spans], batch_size)
        starts = [a / rate for a, _ in spans]
        ends = [min(b / rate, duration) for _, b in spans]
        return VideoWindows(emb, starts, ends, duration)
