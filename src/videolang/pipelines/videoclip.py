"""VideoCLIP inference: ``encode_video``, ``encode_text``, ``score`` as the model was evaluated.

>>> pipe = videolang.load("runs/videoclip_synthetic/version_0/export")   # doctest: +SKIP
>>> pipe.score(["a.mp4"], ["a red circle moves left"])                   # doctest: +SKIP

Videos go through the folder's backbone at its rate and size (streamed), are cut into windows
of the model's ``max_video_len`` rows and padded as in training; sentences are laid out as the
training data were. ``score`` is the similarity the model trained with (cosine or dot product,
from ``pipeline.json``); ``logits`` divides it by the temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from videolang.pipelines.folder import (
    BackboneSpec,
    PipelineSpec,
    SimilaritySpec,
    TextSpec,
    VideoFeaturesSpec,
)
from videolang.pipelines.inputs import VideoInput
from videolang.pipelines.video import FeatureVideoPipeline

__all__ = ["VideoCLIPPipeline", "VideoCLIPSpec", "similarity", "spec_for_converted"]


class VideoCLIPSpec(PipelineSpec):
    family: Literal["videoclip"] = "videoclip"
    task: Literal["retrieval"] = "retrieval"
    text: TextSpec
    video: VideoFeaturesSpec
    similarity: SimilaritySpec = SimilaritySpec()


def similarity(a: torch.Tensor, b: torch.Tensor, spec: SimilaritySpec) -> torch.Tensor:
    """``(len(a), len(b))`` similarities: cosine or dot product, as ``spec`` says."""
    if spec.metric == "cosine":
        a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    return a.float() @ b.float().t()


class VideoCLIPPipeline(FeatureVideoPipeline):
    """A VideoCLIP model with its tokenizer and feature backbone."""

    family = "videoclip"
    spec_class = VideoCLIPSpec

    def _embed_windows(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_video(feats, mask)

    def encode_text(self, texts: str | Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """Embeddings ``(N, H)`` of sentences."""
        return self.embed_sentences(texts, self.model.encode_text, self.embedding_dim, batch_size)

    @property
    def embedding_dim(self) -> int:
        cfg = self.model.config
        return cfg.projection_dim or cfg.text.hidden_size

    def similarity(self, video_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Similarities ``(V, T)`` of embeddings, as the model was trained and evaluated."""
        return similarity(video_embeddings, text_embeddings, self.spec.similarity)

    def score(self, videos: VideoInput | Sequence[VideoInput], texts: str | Sequence[str], *,
              fps: float | None = None, pooling: Literal["mean", "first"] = "mean") -> torch.Tensor:
        """Similarity ``(len(videos), len(texts))`` of every video with every sentence."""
        return self.similarity(self.encode_video(videos, fps=fps, pooling=pooling), self.encode_text(texts))

    def logits(self, videos: VideoInput | Sequence[VideoInput], texts: str | Sequence[str], **kw) -> torch.Tensor:
        """``score / temperature``: softmax over texts (or videos) gives the model's probabilities."""
        return self.score(videos, texts, **kw) / self.spec.similarity.temperature


# -- converted MMPT checkpoints (videolang convert videoclip) -------------------------------------

# The release's text side: bert-base-uncased's vocabulary (the offline MiniLM package ships it).
CONVERTED_TOKENIZER = "minilm"
# MMPT's features: MIL-NCE S3D-G, 30 fps, 224 px, one 512-d row per second; the released
# extraction scripts (MMPT scripts/video_feature_extractor) L2-normalise them and store fp16.
CONVERTED_BACKBONE = {"name": "s3dg", "l2_normalize": True, "dtype": "float16"}


def spec_for_converted(model, backbone: BackboneSpec | None) -> VideoCLIPSpec:
    """How the released VideoCLIP was used: text tower input ``[CLS] + caps[2:]`` (61 words),
    32 one-second rows per window, raw dot product."""
    cfg = model.config
    return VideoCLIPSpec(text=TextSpec(max_len=cfg.max_text_len),
                         video=VideoFeaturesSpec(backbone=backbone, feature_rate=1.0, max_len=cfg.max_video_len),
                         similarity=SimilaritySpec(metric="dot", temperature=1.0))
