"""VLM inference: retrieval, multiple-choice answers, captions and action segments, as evaluated.

>>> pipe = videolang.load("runs/vlm_mcqa/version_0/export")                       # doctest: +SKIP
>>> pipe.answer(["a.mp4"], [["a red circle moves left", "a blue square grows"]])  # doctest: +SKIP

A folder is exported for one task (``pipeline.json``'s ``task``) and offers the methods of that
task's evaluation; windows are padded to ``max_video_len`` as MMPT does, so an output depends on
its own video only. Methods per task: docs/inference.md ("What each pipeline does").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from pydantic import Field, model_validator

from videolang.data.sampling import window_spans
from videolang.errors import ConfigError
from videolang.pipelines.base import as_text_list, as_video_list, tokenize_sentences
from videolang.pipelines.folder import (
    BackboneSpec,
    PipelineSpec,
    SimilaritySpec,
    StrictModel,
    TextSpec,
    VideoFeaturesSpec,
)
from videolang.pipelines.inputs import VideoInput
from videolang.pipelines.video import FeatureVideoPipeline, VideoWindows
from videolang.pipelines.videoclip import similarity

__all__ = ["MultipleChoiceAnswer", "SegmentLabels", "VLMPipeline", "VLMSpec", "spec_for_converted"]

Task = Literal["retrieval", "mcqa", "captioning", "segmentation"]


class MultipleChoiceSpec(StrictModel):
    """How ``vlm.mcqa`` scored options (``model.scoring``)."""

    # isolated: similarity of the pooled halves / temperature; joint: the match head on [CLS] of
    # the full-attention pass; hybrid: the isolated score + the head on the mean text state.
    scoring: Literal["isolated", "joint", "hybrid"] = "isolated"


class CaptioningSpec(StrictModel):
    """How ``vlm.captioning`` decoded at evaluation (``num_beams: 1`` is greedy)."""

    num_beams: int = Field(default=5, ge=1)
    max_length: int = Field(default=24, ge=1)
    length_penalty: float = 1.0


class SegmentationSpec(StrictModel):
    """``vlm.segmentation``'s evaluation windows (``video.max_len`` rows every ``stride``) and
    its class names by id (0: background)."""

    stride: int = Field(ge=1)
    labels: list[str] = Field(min_length=1)


class VLMSpec(PipelineSpec):
    """``pipeline.json`` of a VLM folder: the task, text layout, feature windows, similarity,
    and the section of the task's evaluation (``multiple_choice`` / ``captioning`` /
    ``segmentation``)."""

    family: Literal["vlm"] = "vlm"
    task: Task = "retrieval"
    text: TextSpec | None = None  # None: no text side (segmentation)
    video: VideoFeaturesSpec
    similarity: SimilaritySpec = SimilaritySpec()
    # S > 0: order-aware pooling of both halves (VLM.encode_video(segments=S)), model.temporal_segments
    temporal_segments: int = Field(default=0, ge=0)
    multiple_choice: MultipleChoiceSpec | None = None
    captioning: CaptioningSpec | None = None
    segmentation: SegmentationSpec | None = None

    @model_validator(mode="after")
    def _task_sections(self) -> VLMSpec:
        section = {"mcqa": "multiple_choice", "captioning": "captioning", "segmentation": "segmentation"}
        for task, name in section.items():
            if (self.task == task) != (getattr(self, name) is not None):
                raise ValueError(f"task {self.task!r}: the {name!r} section must be given exactly for task {task!r}")
        if self.task != "segmentation" and self.text is None:
            raise ValueError(f"task {self.task!r} needs a 'text' section")
        if self.text is not None and self.text.layout != "mmpt":
            raise ValueError("VLM's text layout is 'mmpt' ([CLS] [SEP] words [SEP])")
        return self


class MultipleChoiceAnswer(NamedTuple):
    """The chosen option of one video: its ``index``, its text, and every option's score."""

    index: int
    answer: str
    scores: torch.Tensor  # (K,)


@dataclass
class SegmentLabels:
    """Per-row action labels of one video: row ``i`` covers ``[starts[i], ends[i])`` seconds.

    ``ids`` ``(T,)`` are class ids, ``labels`` their names, ``logits`` ``(T, C)`` the window
    logits averaged per row."""

    ids: torch.Tensor
    labels: list[str]
    logits: torch.Tensor
    starts: list[float]
    ends: list[float]

    def segments(self) -> list[tuple[float, float, str]]:
        """Runs of rows with the same label, as ``(start_s, end_s, label)``."""
        out: list[tuple[float, float, str]] = []
        for start, end, label in zip(self.starts, self.ends, self.labels, strict=True):
            if out and out[-1][2] == label:
                out[-1] = (out[-1][0], end, label)
            else:
                out.append((start, end, label))
        return out


# task -> the methods it supports (beyond the video features themselves)
_RETRIEVAL = ("encode_video", "encode_text", "similarity", "score", "logits", "encode_windows")
_METHODS: dict[str, tuple[str, ...]] = {
    "retrieval": (*_RETRIEVAL, "answer"),
    "mcqa": (*_RETRIEVAL, "answer"),
    "captioning": ("caption",),
    "segmentation": ("segment",),
}


class VLMPipeline(FeatureVideoPipeline):
    """A VLM model with its tokenizer, feature backbone and the evaluation's settings."""

    family = "vlm"
    spec_class = VLMSpec

    # -- what the task supports --------------------------------------------------------------

    def supports(self, method: str) -> bool:
        """Whether this folder's task offers ``method`` (module docstring)."""
        if method in _RETRIEVAL and self.scoring == "joint":
            return False  # a joint scorer's halves were not what it was evaluated with
        return method in _METHODS[self.spec.task]

    def _require(self, method: str) -> None:
        if not self.supports(method):
            offered = [m for m in (*_RETRIEVAL, "answer", "caption", "segment") if self.supports(m)]
            raise ConfigError(f"{method}: this VLM folder was exported for task {self.spec.task!r}"
                              f"{' (joint scoring)' if self.scoring == 'joint' else ''}; it offers "
                              f"{', '.join(offered)}")

    @property
    def scoring(self) -> str:
        """How ``answer`` scores options: the mcqa run's scorer, else isolated."""
        mc = self.spec.multiple_choice
        return mc.scoring if mc is not None else "isolated"

    # -- retrieval ---------------------------------------------------------------------------

    def _embed_windows(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_video(feats, mask, segments=self.spec.temporal_segments)

    def encode_video(self, videos: VideoInput | Sequence[VideoInput], *, fps: float | None = None,
                     batch_size: int = 64, pooling: Literal["mean", "first"] = "mean") -> torch.Tensor:
        """Embeddings ``(N, E)`` of the isolated video half, window by window (see
        :meth:`FeatureVideoPipeline.encode_video`; the evaluation embedded the first window)."""
        self._require("encode_video")
        return super().encode_video(videos, fps=fps, batch_size=batch_size, pooling=pooling)

    def encode_windows(self, video: VideoInput, *, window: float | None = None, stride: float | None = None,
                       fps: float | None = None, batch_size: int = 64) -> VideoWindows:
        """Embeddings of overlapping time windows of one video (as ``encode_video``)."""
        self._require("encode_windows")
        return super().encode_windows(video, window=window, stride=stride, fps=fps, batch_size=batch_size)

    @torch.inference_mode()
    def encode_text(self, texts: str | Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """Embeddings ``(N, E)`` of the isolated text half of sentences."""
        self._require("encode_text")
        return self._encode_text(as_text_list(texts), batch_size)

    def _encode_text(self, texts: list[str], batch_size: int) -> torch.Tensor:
        def embed(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.model.encode_text(ids, mask, segments=self.spec.temporal_segments)

        return self.embed_sentences(texts, embed, self.embedding_dim, batch_size)

    @property
    def embedding_dim(self) -> int:
        return self.model.config.bert.hidden_size * (1 + self.spec.temporal_segments)

    def similarity(self, video_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Similarities ``(V, T)`` of embeddings, as the model was trained and evaluated."""
        self._require("similarity")
        return similarity(video_embeddings, text_embeddings, self.spec.similarity)

    def score(self, videos: VideoInput | Sequence[VideoInput], texts: str | Sequence[str], *,
              fps: float | None = None, pooling: Literal["mean", "first"] = "mean") -> torch.Tensor:
        """Similarity ``(len(videos), len(texts))`` of every video with every sentence."""
        self._require("score")
        return self.similarity(self.encode_video(videos, fps=fps, pooling=pooling), self.encode_text(texts))

    def logits(self, videos: VideoInput | Sequence[VideoInput], texts: str | Sequence[str], **kw) -> torch.Tensor:
        """``score / temperature``: softmax over texts (or videos) gives the model's probabilities."""
        self._require("logits")
        return self.score(videos, texts, **kw) / self.spec.similarity.temperature

    # -- multiple choice ---------------------------------------------------------------------

    def _windows(self, videos: list[VideoInput], fps: float | None, size: int,
                 first_only: bool, stride: int | None = None) -> tuple[list[torch.Tensor], list[int]]:
        """Row windows of every video (at most ``size`` rows) and the video each belongs to."""
        windows, owner = [], []
        for i, video in enumerate(videos):
            rows, _ = self._features(video, fps)
            spans = window_spans(len(rows), size, stride or size)
            for a, b in spans[:1] if first_only else spans:
                windows.append(rows[a:b])
                owner.append(i)
        return windows, owner

    def _padded(self, windows: list[torch.Tensor], size: int) -> tuple[torch.Tensor, torch.Tensor]:
        feats = torch.zeros(len(windows), size, windows[0].shape[1])
        mask = torch.zeros(len(windows), size, dtype=torch.bool)
        for j, w in enumerate(windows):
            feats[j, : len(w)], mask[j, : len(w)] = w, True
        return feats.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def answer(self, videos: VideoInput | Sequence[VideoInput], choices: Sequence[Sequence[str]], *,
               fps: float | None = None, pooling: Literal["first", "mean"] = "first",
               batch_size: int = 64) -> list[MultipleChoiceAnswer]:
        """The best option of ``choices[i]`` for ``videos[i]``, scored as the evaluation did.

        The evaluation scored the first window (``video.max_len`` rows) of each video:
        ``pooling="first"``; ``"mean"`` averages the option scores over all windows.
        """
        self._require("answer")
        if pooling not in ("mean", "first"):
            raise ValueError(f"pooling must be 'mean' or 'first', got {pooling!r}")
        items = as_video_list(videos)
        options = [as_text_list(c, f"choices[{i}]") for i, c in enumerate(choices)]
        if len(options) != len(items):
            raise ValueError(f"{len(items)} videos but {len(options)} lists of choices")
        if any(not o for o in options):
            raise ValueError("every video needs at least one choice")
        windows, owner = self._windows(items, fps, self.video_spec.max_len, pooling == "first")
        scores = self._window_scores(windows, [options[o] for o in owner], batch_size)
        out = []
        for i, opts in enumerate(options):
            s = torch.stack([sc for sc, o in zip(scores, owner, strict=True) if o == i]).mean(0)
            index = int(s.argmax())
            out.append(MultipleChoiceAnswer(index, opts[index], s))
        return out

    def _window_scores(self, windows: list[torch.Tensor], options: list[list[str]],
                       batch_size: int) -> list[torch.Tensor]:
        """``(K,)`` scores of each window's options (``VLMMultipleChoice.item_scores``)."""
        out = [torch.zeros(len(o)) for o in options]
        if self.scoring != "joint":
            video = self._embed_all(windows, batch_size)
            flat = [t for o in options for t in o]
            text = self._encode_text(flat, batch_size * 4)
            start = 0
            for j, o in enumerate(options):
                sim = similarity(video[j : j + 1], text[start : start + len(o)], self.spec.similarity)[0]
                out[j] = out[j] + sim / self.spec.similarity.temperature
                start += len(o)
        if self.scoring != "isolated":
            pooling = "cls" if self.scoring == "joint" else "text"
            for j, s in enumerate(self._match_scores(windows, options, pooling, batch_size)):
                out[j] = out[j] + s
        return out

    def _match_scores(self, windows: list[torch.Tensor], options: list[list[str]], pooling: str,
                      batch_size: int) -> list[torch.Tensor]:
        """The match head on the full-attention pass of every (window, option) pair."""
        pairs = [(j, t) for j, o in enumerate(options) for t in o]
        flat = []
        for s in range(0, len(pairs), batch_size):
            chunk = pairs[s : s + batch_size]
            ids, mask = tokenize_sentences(self.tokenizer, self.spec.text, [t for _, t in chunk])
            feats, vmask = self._padded([windows[j] for j, _ in chunk], self.video_spec.max_len)
            flat.append(self.model.match_scores(ids.to(self.device), mask.to(self.device), feats, vmask,
                                                pooling=pooling).float().cpu())
        scores = torch.cat(flat)
        out, start = [], 0
        for o in options:
            out.append(scores[start : start + len(o)])
            start += len(o)
        return out

    # -- captioning --------------------------------------------------------------------------

    @torch.inference_mode()
    def caption(self, videos: VideoInput | Sequence[VideoInput], *, fps: float | None = None,
                num_beams: int | None = None, max_length: int | None = None,
                length_penalty: float | None = None, batch_size: int = 16) -> list[str]:
        """One caption per video, decoded as the evaluation did (``pipeline.json``'s beam size,
        maximum length and length penalty unless given; ``num_beams=1`` is greedy). Like the
        evaluation, the first window (``video.max_len`` rows) of a video is described."""
        self._require("caption")
        c = self.spec.captioning
        options = {"num_beams": c.num_beams if num_beams is None else num_beams,
                   "max_length": c.max_length if max_length is None else max_length,
                   "length_penalty": c.length_penalty if length_penalty is None else length_penalty}
        windows, _ = self._windows(as_video_list(videos), fps, self.video_spec.max_len, True)
        out: list[str] = []
        for s in range(0, len(windows), batch_size):
            feats, mask = self._padded(windows[s : s + batch_size], self.video_spec.max_len)
            ids = self.model.generate(feats, mask, **options)
            out.extend(self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids)
        return out

    # -- action segmentation -----------------------------------------------------------------

    @torch.inference_mode()
    def segment(self, video: VideoInput, *, fps: float | None = None, batch_size: int = 64) -> SegmentLabels:
        """An action label for every feature row of one video: windows of ``video.max_len`` rows
        every ``stride`` rows (the last one ends at the video's end), each row's logits averaged
        over the windows covering it, as the evaluation did."""
        self._require("segment")
        seg = self.spec.segmentation
        rows, _ = self._features(video, fps)
        size, rate = self.video_spec.max_len, self.video_spec.feature_rate
        spans = window_spans(len(rows), size, seg.stride)
        summed = torch.zeros(len(rows), len(seg.labels))
        counts = torch.zeros(len(rows), 1)
        for s in range(0, len(spans), batch_size):
            chunk = spans[s : s + batch_size]
            feats, mask = self._padded([rows[a:b] for a, b in chunk], size)
            logits = self.model.segment_logits(feats, mask).float().cpu()
            for (a, b), window in zip(chunk, logits, strict=True):
                summed[a:b] += window[: b - a]
                counts[a:b] += 1
        ids = summed.argmax(-1)
        return SegmentLabels(ids, [seg.labels[i] for i in ids.tolist()], summed / counts,
                             [i / rate for i in range(len(rows))],
                             [(i + 1) / rate for i in range(len(rows))])


# -- converted MMPT checkpoints (videolang convert vlm) --------------------------------------------

# The release's text side: bert-base-uncased's vocabulary (the offline MiniLM package ships it).
CONVERTED_TOKENIZER = "minilm"
# MMPT's features: MIL-NCE S3D-G, 30 fps, 224 px, one 512-d row per second; the released
# extraction scripts (MMPT scripts/video_feature_extractor) L2-normalise them and store fp16.
CONVERTED_BACKBONE = {"name": "s3dg", "l2_normalize": True, "dtype": "float16"}


def spec_for_converted(model, backbone: BackboneSpec | None) -> VLMSpec:
    """How the released VLM is used zero-shot (MMPT's MSR-VTT retrieval evaluation): the isolated
    halves, text ``[CLS] [SEP] w.. [SEP]`` with at most 61 words (64 tokens), windows of
    ``max_video_len`` one-second rows, raw dot product."""
    return VLMSpec(task="retrieval", text=TextSpec(max_len=62, layout="mmpt"),
                   video=VideoFeaturesSpec(backbone=backbone, feature_rate=1.0, max_len=model.config.max_video_len),
                   similarity=SimilaritySpec(metric="dot", temperature=1.0))
