"""VidLanKD inference: the distilled text student, its GLUE classifiers, and the teacher.

>>> pipe = videolang.load("runs/vidlankd_glue_sst2/version_0/export")      # doctest: +SKIP
>>> pipe.classify(["a gripping, funny film"])                               # doctest: +SKIP

One pipeline class for ``text-encoder`` (student) and ``classification`` (GLUE) folders, and
:class:`VidLanKDTeacherPipeline` for ``teacher`` folders. Each text is tokenised on its own
terms, so an answer does not depend on the batch. What each returns: docs/inference.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from videolang.data.glue import glue_token_ids
from videolang.errors import ConfigError
from videolang.models.layers import masked_mean as _masked_mean
from videolang.pipelines.base import (
    Pipeline,
    Prediction,
    as_text_list,
    as_video_list,
    top_k_predictions,
)
from videolang.pipelines.folder import (
    BackboneSpec,
    PipelineSpec,
    StrictModel,
    TextSpec,
    VideoFeaturesSpec,
    load_folder_tokenizer,
)
from videolang.pipelines.inputs import VideoInput
from videolang.pipelines.video import FeatureVideoPipeline

__all__ = [
    "CONVERTED_TOKENIZER",
    "GlueSpec",
    "VidLanKDPipeline",
    "VidLanKDSpec",
    "VidLanKDTeacherPipeline",
    "spec_for_converted",
]


class GlueSpec(StrictModel):
    """The GLUE task a classifier was fine-tuned and evaluated on (``videolang.data.glue``)."""

    task: str  # GLUE task name (SST-2, QNLI, ...)
    labels: list[str] | None  # class names in class-id order; None: a regression (STS-B)
    pair: bool  # sentence pairs (text_a, text_b)
    max_length: int = Field(ge=2)  # tokens in all, [CLS] and [SEP]s included
    metrics: list[str] = Field(default_factory=list)  # what the run reported (videolang.metrics.glue)


class VidLanKDSpec(PipelineSpec):
    family: Literal["vidlankd"] = "vidlankd"
    task: Literal["text-encoder", "classification", "teacher"] = "text-encoder"
    text: TextSpec  # encode_text's layout: [CLS] pieces [SEP]
    glue: GlueSpec | None = None  # classification
    video: VideoFeaturesSpec | None = None  # teacher

    @model_validator(mode="after")
    def _sections(self) -> VidLanKDSpec:
        if self.task == "classification" and self.glue is None:
            raise ValueError("task 'classification' needs the section glue")
        if self.task == "teacher" and self.video is None:
            raise ValueError("task 'teacher' needs the section video")
        return self


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for b, r in enumerate(rows):
        out[b, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return out


class VidLanKDPipeline(Pipeline):
    """A student (``text-encoder``) or a GLUE classifier (``classification``) with its tokenizer."""

    family = "vidlankd"
    spec_class = VidLanKDSpec

    @classmethod
    def from_folder(cls, folder: Path, spec: VidLanKDSpec, *, device: str | torch.device = "cpu") -> Pipeline:
        from videolang.models import load_pretrained

        if spec.task == "teacher":
            return VidLanKDTeacherPipeline.from_folder(folder, spec, device=device)
        model = load_pretrained(folder)
        want = {"text-encoder": "VidLanKDStudent", "classification": "VidLanKDClassifier"}[spec.task]
        if type(model).__name__ != want:
            raise ConfigError(f"{folder}: task {spec.task!r} needs a {want}, config.json holds a {type(model).__name__}")
        return cls(model, spec, load_folder_tokenizer(folder, spec.text), folder=folder, device=device)

    @property
    def labels(self) -> list[str] | None:
        """Class names of a classifier (``None`` for a regression or a text encoder)."""
        return self.spec.glue.labels if self.spec.glue is not None else None

    # -- text encoder -------------------------------------------------------------------------

    def _hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.bert(ids.to(self.device), attention_mask=mask.to(self.device))

    def encode_text(self, texts: str | Sequence[str], *, batch_size: int = 128) -> torch.Tensor:
        """Sentence embeddings ``(N, H)`` (see the module docstring for the pooling)."""
        def embed(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            hidden = self._hidden(ids, mask)
            if self.spec.task == "classification":
                return torch.tanh(self.model.pooler(hidden[:, 0]))
            return _masked_mean(hidden, mask)

        return self.embed_sentences(texts, embed, self.model.config.bert.hidden_size, batch_size)

    # -- classifier ---------------------------------------------------------------------------

    def _glue(self) -> GlueSpec:
        if self.spec.glue is None:
            raise ConfigError(f"this folder is a VidLanKD {self.spec.task} (no classification head): fine-tune it "
                              "on a task with `videolang glue` or the vidlankd.glue recipe, then load that export")
        return self.spec.glue

    @torch.inference_mode()
    def logits(self, texts: str | Sequence[str], text_pairs: str | Sequence[str] | None = None, *,
               batch_size: int = 128) -> torch.Tensor:
        """The head's outputs: ``(N, C)`` class logits, or ``(N,)`` scores for a regression."""
        glue = self._glue()
        texts = as_text_list(texts)
        pairs = None if text_pairs is None else as_text_list(text_pairs, "text_pairs")
        if glue.pair != (pairs is not None):
            need = "sentence pairs: give text_pairs" if glue.pair else "single sentences: give no text_pairs"
            raise ValueError(f"{glue.task} takes {need}")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} text_pairs")
        out = []
        for s in range(0, len(texts), batch_size):
            chunk_pairs = None if pairs is None else pairs[s : s + batch_size]
            rows, types = glue_token_ids(self.tokenizer, texts[s : s + batch_size], chunk_pairs, glue.max_length)
            ids = _pad(rows, self.tokenizer.pad_token_id)
            mask = _pad([[1] * len(r) for r in rows], 0).bool()
            logits = self.model(ids.to(self.device), mask.to(self.device), _pad(types, 0).to(self.device))
            out.append(logits.float().cpu())
        if out:
            return torch.cat(out)
        return torch.zeros(0) if glue.labels is None else torch.zeros(0, len(glue.labels))

    def classify(self, texts: str | Sequence[str], text_pairs: str | Sequence[str] | None = None, *,
                 top_k: int = 1) -> list[list[Prediction]]:
        """The ``top_k`` labels of each text (or pair), best first, with softmax probabilities;
        the top label is the run's evaluated prediction (argmax of the logits)."""
        glue = self._glue()
        if glue.labels is None:
            raise ConfigError(f"{glue.task} is a regression: use logits() for its scores")
        return top_k_predictions(self.logits(texts, text_pairs).softmax(dim=-1), glue.labels, top_k)


class VidLanKDTeacherPipeline(FeatureVideoPipeline):
    """The video-language teacher: unit text and video embeddings in one space."""

    family = "vidlankd"
    spec_class = VidLanKDSpec

    def encode_text(self, texts: str | Sequence[str], *, batch_size: int = 128) -> torch.Tensor:
        """``(N, H)``: the mean over each text's real tokens of its unit token embeddings."""
        def embed(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model.text_hidden(ids, mask)
            return _masked_mean(hidden / hidden.norm(dim=-1, keepdim=True), mask)  # the teacher's token_emb

        return self.embed_sentences(texts, embed, self.model.config.bert.hidden_size, batch_size)

    def _embed_windows(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.video(feats, mask)

    def encode_video(self, videos: VideoInput | Sequence[VideoInput], *, fps: float | None = None,
                     batch_size: int = 64, pooling: str = "subsample") -> torch.Tensor:
        """Unit video embeddings ``(N, H)``. A video longer than ``max_video_len`` rows is
        evenly subsampled to that many (``pooling="subsample"``, as the teacher trained), or
        embedded window by window (``"mean"`` / ``"first"``, :class:`FeatureVideoPipeline`)."""
        if pooling != "subsample":
            return super().encode_video(videos, fps=fps, batch_size=batch_size, pooling=pooling)
        size = self.video_spec.max_len
        windows = []
        for video in as_video_list(videos):
            rows, _ = self._features(video, fps)
            if len(rows) > size:  # the dataset's np.linspace(...).round() subsampling
                rows = rows[torch.from_numpy(np.linspace(0, len(rows) - 1, size).round().astype(np.int64))]
            windows.append(rows)
        return self._embed_all(windows, batch_size)

    def similarity(self, video_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """``(V, T)``: text embedding · video embedding (both unit means), the teacher's retrieval score."""
        return video_embeddings.float() @ text_embeddings.float().t()

    def score(self, videos: VideoInput | Sequence[VideoInput], texts: str | Sequence[str], *,
              fps: float | None = None) -> torch.Tensor:
        """``(len(videos), len(texts))``: :meth:`similarity` of the embeddings."""
        return self.similarity(self.encode_video(videos, fps=fps), self.encode_text(texts))


# -- converted checkpoints (videolang convert vidlankd) -------------------------------------------

# The release's vocabulary: bert-base-uncased word pieces (the offline MiniLM package ships it).
CONVERTED_TOKENIZER = "minilm"
# The original's text blocks: [CLS] + 126 word pieces + [SEP] (block_size=126).
ORIGINAL_BLOCK_SIZE = 126


def spec_for_converted(model: torch.nn.Module, backbone: BackboneSpec | None) -> VidLanKDSpec:
    """How the released models read text: the student's [CLS] 126 pieces [SEP] blocks; the
    teacher's captions tokenised to 126 tokens with the specials, videos as 1 row/s features
    (2D ResNet-152 ⊕ 3D ResNeXt, not in videolang: give them as ``Features``)."""
    from videolang.models.vidlankd import VidLanKDStudent, VidLanKDTeacher

    if isinstance(model, VidLanKDStudent):
        return VidLanKDSpec(task="text-encoder", text=TextSpec(max_len=ORIGINAL_BLOCK_SIZE))
    if isinstance(model, VidLanKDTeacher):
        return VidLanKDSpec(task="teacher", text=TextSpec(max_len=ORIGINAL_BLOCK_SIZE - 2),
                            video=VideoFeaturesSpec(backbone=backbone, feature_rate=1.0,
                                                    max_len=model.config.max_video_len))
    raise ConfigError(f"no original VidLanKD layout for {type(model).__name__}")
