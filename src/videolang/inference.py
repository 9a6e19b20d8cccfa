"""One-call inference: ``videolang.load(path)`` -> ``encode_video``, ``encode_text``, ``score``.

``path`` is a folder written by a run's export (or :func:`videolang.models.save_pretrained`):
``config.json`` + ``model.safetensors``, and ``pipeline.json`` naming the tokenizer and the
feature extractor the model was trained on (copied from the feature store's
``extraction.json``). With it, ``encode_video`` takes raw videos (paths, bytes, decoded uint8
frames) and runs the same backbone; without it, videos must be given as feature tensors.

Videos longer than the model's ``max_video_len`` feature rows are encoded in consecutive
windows whose embeddings are averaged (the original limited videos to 32 s and batch size 1).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videolang.errors import ConfigError

__all__ = ["VideoCLIPPipeline", "load"]

VideoInput = str | os.PathLike | bytes | torch.Tensor | np.ndarray


class VideoCLIPPipeline:
    """A VideoCLIP model with its tokenizer and (optionally) its feature backbone."""

    def __init__(self, model, tokenizer, *, backbone=None, feature_rate: float = 1.0,
                 l2_normalize_features: bool = False, max_video_len: int | None = None,
                 device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.backbone = backbone.to(device) if backbone is not None else None
        self.feature_rate = feature_rate
        self.l2_normalize_features = l2_normalize_features
        self.max_video_len = max_video_len or model.config.max_video_len
        self.device = torch.device(device)

    # -- video --

    def video_features(self, video: VideoInput, fps: float | None = None) -> torch.Tensor:
        """Per-second features ``(T, D)`` of one video (a path, bytes, uint8 frames ``(T, H, W, 3)``
        at ``fps``, or features ``(T, D)`` already)."""
        if isinstance(video, np.ndarray):
            video = torch.from_numpy(video)
        if isinstance(video, torch.Tensor) and video.is_floating_point() and video.dim() == 2:
            return video.float()
        if self.backbone is None:
            raise ConfigError("this model folder has no pipeline.json naming its feature backbone: "
                              "give videos as (T, D) feature tensors")
        from videolang.models.backbones import video_to_features

        if isinstance(video, torch.Tensor):
            if video.dtype != torch.uint8 or video.dim() != 4:
                raise ValueError("frame tensors must be uint8 (T, H, W, 3); features must be float (T, D)")
            if fps is None:
                raise ValueError("decoded frames need their fps")
            frames = video
        else:
            from videolang.data.video import VideoReader

            with VideoReader(video) as reader:
                frames = reader.read(np.arange(reader.metadata.num_frames))
                fps = reader.metadata.fps
        feats = video_to_features(self.backbone, frames, fps, l2_normalize=self.l2_normalize_features)
        return torch.from_numpy(np.asarray(feats, dtype=np.float32))

    @torch.inference_mode()
    def encode_video(self, videos: Sequence[VideoInput], *, fps: float | None = None,
                     batch_size: int = 64) -> torch.Tensor:
        """Embeddings ``(len(videos), H)``; preprocessing (decoding, backbone) included."""
        windows: list[torch.Tensor] = []
        owner: list[int] = []
        for i, video in enumerate(videos):
            feats = self.video_features(video, fps)
            if len(feats) == 0:
                raise ValueError(f"video {i} has no frames")
            for start in range(0, len(feats), self.max_video_len):
                windows.append(feats[start : start + self.max_video_len])
                owner.append(i)
        out = torch.zeros(len(videos), self._dim(), device=self.device)
        counts = torch.zeros(len(videos), device=self.device)
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            width = max(len(w) for w in chunk)
            feats = torch.zeros(len(chunk), width, chunk[0].shape[1])
            mask = torch.zeros(len(chunk), width, dtype=torch.bool)
            for j, w in enumerate(chunk):
                feats[j, : len(w)], mask[j, : len(w)] = w, True
            emb = self.model.encode_video(feats.to(self.device), mask.to(self.device))
            idx = torch.tensor(owner[start : start + batch_size], device=self.device)
            out.index_add_(0, idx, emb)
            counts.index_add_(0, idx, torch.ones(len(chunk), device=self.device))
        return (out / counts.unsqueeze(1)).cpu()

    # -- text --

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """Embeddings ``(len(texts), H)`` of sentences (tokenized with the model's tokenizer)."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings")
        cfg = self.model.config
        out = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                 max_length=cfg.max_text_len + 2, return_tensors="pt")
            out.append(self.model.encode_text(enc["input_ids"].to(self.device),
                                              enc["attention_mask"].bool().to(self.device)))
        return torch.cat(out).cpu() if out else torch.zeros(0, self._dim())

    def score(self, videos: Sequence[VideoInput], texts: Sequence[str], **kw: Any) -> torch.Tensor:
        """Similarity ``(len(videos), len(texts))``: the dot product the model was trained on."""
        return self.encode_video(videos, **kw) @ self.encode_text(texts).t()

    def _dim(self) -> int:
        cfg = self.model.config
        return cfg.projection_dim or cfg.text.hidden_size


def _backbone_from_info(info: dict[str, Any]):
    from videolang.models.backbones import create_backbone

    weights = info.get("weights")
    path = weights.get("path") if isinstance(weights, dict) else None
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"pipeline.json: the feature backbone's weights {path} are not on this machine")
    # extraction.json records the backbone's options beside its description
    options = {k: info[k] for k in ("grid", "rows_per_second", "temporal_diff", "output") if k in info}
    return create_backbone(info["backbone"], weights=path, seed=int(info.get("seed", 0)), **options)


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu"):
    """Open a saved model folder for inference (see the module docstring)."""
    from videolang.data.text import load_tokenizer
    from videolang.models import load_pretrained

    path = Path(path)
    model = load_pretrained(path, map_location="cpu")
    arch = json.loads((path / "config.json").read_text()).get("architecture")
    if arch != "videoclip":
        raise ConfigError(f"{path}: no inference pipeline for architecture {arch!r} yet")
    pipeline_file = path / "pipeline.json"
    info = json.loads(pipeline_file.read_text()) if pipeline_file.is_file() else {}
    tokenizer = load_tokenizer(info.get("tokenizer", model.config.tokenizer))
    features = info.get("features")
    backbone = _backbone_from_info(features) if features else None
    return VideoCLIPPipeline(
        model, tokenizer, backbone=backbone, feature_rate=float(info.get("feature_rate", 1.0)),
        l2_normalize_features=bool(features.get("l2_normalize", False)) if features else False,
        max_video_len=info.get("max_video_len"), device=device,
    )
