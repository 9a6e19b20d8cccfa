"""ClipBERT inference on raw frames, exactly as the model was evaluated.

>>> pipe = videolang.load("runs/clipbert_synthetic_retrieval/version_0/export")   # doctest: +SKIP
>>> pipe.score(["a.mp4", "b.mp4"], ["a red circle moves left"])                   # doctest: +SKIP

A video becomes the test loop's ``N`` clips of ``T`` frames, resized and padded by the test
loop's own function (decoding is not scaled, which would change the pixels); clip scores are
combined by the recorded consensus. Details: docs/inference.md ("What each pipeline does").
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from videolang.data.clipbert import choice_text
from videolang.errors import ConfigError
from videolang.pipelines.base import (
    Pipeline,
    Prediction,
    as_text_list,
    as_video_list,
    top_k_predictions,
)
from videolang.pipelines.folder import PipelineSpec, StrictModel, TextSpec, load_folder_tokenizer
from videolang.pipelines.inputs import Features, Frames, VideoInput, as_video, describe_video

__all__ = [
    "CONVERTED_TOKENIZER",
    "ClipBERTPipeline",
    "ClipBERTSpec",
    "ClipSamplingSpec",
    "FramesSpec",
    "spec_for_converted",
]

Task = Literal["retrieval", "qa", "mc", "vqa", "pretrain"]


class ClipSamplingSpec(StrictModel):
    """The test loop's sparse sampling: ``num_clips`` windows of ``frames_per_clip`` frames,
    ``1 / target_fps`` seconds apart (``data.sampling`` with its overrides)."""

    target_fps: float = Field(gt=0)
    frames_per_clip: int = Field(ge=1)
    num_clips: int = Field(ge=1)  # N_test
    compat: bool = False  # data.compat_sampling: the original's frame positions and test windows
    compat_test_window: Literal["start", "middle"] = "middle"  # the original's single test window

    def task_sampling(self):
        """The data layer's :class:`~videolang.data.sampling.ClipBertTaskSampling` of this spec."""
        from videolang.data.sampling import ClipBertTaskSampling

        return ClipBertTaskSampling(self.target_fps, self.frames_per_clip, self.num_clips, self.num_clips,
                                    self.compat_test_window)


class FramesSpec(StrictModel):
    """How a decoded frame becomes model input."""

    size: int = Field(ge=1)  # L: longer side resized to L (bilinear), zero padding bottom/right to L x L
    antialias: bool = True  # False: the original's resize without antialiasing
    # RGB 0-255 in; the model flips to BGR and subtracts the MSRA mean itself (no std scaling).
    normalization: Literal["msra_bgr_mean"] = "msra_bgr_mean"


class ClipBERTSpec(PipelineSpec):
    family: Literal["clipbert"] = "clipbert"
    task: Task
    input: Literal["video", "image"] = "video"
    text: TextSpec  # max_len: word pieces between [CLS] and [SEP] (data.max_text_len - 2)
    frames: FramesSpec
    sampling: ClipSamplingSpec | None = None  # videos only
    consensus: Literal["mean", "max", "lse"]
    answers: list[str] = Field(default_factory=list)  # qa / vqa: the answer of each label index

    @model_validator(mode="after")
    def _consistent(self) -> ClipBERTSpec:
        if (self.input == "video") != (self.sampling is not None):
            raise ValueError("sampling is required for video input and absent for image input")
        if self.task in ("qa", "vqa") and not self.answers:
            raise ValueError(f"task {self.task} needs its answer vocabulary (answers)")
        if self.text.layout != "cls_words_sep":
            raise ValueError("ClipBERT lays text out as [CLS] words [SEP] (layout cls_words_sep)")
        return self


class ClipBERTPipeline(Pipeline):
    """A ClipBERT model with its tokenizer, sampling and frame preprocessing."""

    family = "clipbert"
    spec_class = ClipBERTSpec

    def __init__(self, model: torch.nn.Module, spec: ClipBERTSpec, tokenizer, *, folder=None,
                 device: str | torch.device = "cpu"):
        if model.config.task != spec.task:
            raise ConfigError(f"pipeline.json says task {spec.task!r}, the model is a {model.config.task!r} model")
        if len(spec.answers) > model.config.num_labels:
            raise ConfigError(f"{len(spec.answers)} answers for {model.config.num_labels} model outputs")
        super().__init__(model, spec, tokenizer, folder=folder, device=device)

    @classmethod
    def from_folder(cls, folder: Path, spec: ClipBERTSpec, *, device: str | torch.device = "cpu") -> ClipBERTPipeline:
        from videolang.models import load_pretrained

        return cls(load_pretrained(folder), spec, load_folder_tokenizer(folder, spec.text), folder=folder,
                   device=device)

    # -- visual input ----------------------------------------------------------------------------

    def visual_inputs(self, video: VideoInput, *, fps: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The model input of one video (or image): frames ``(N, T, 3, L, L)`` float RGB 0-255
        and the pixel mask ``(L, L)`` (True on real pixels), as the test loop prepared them."""
        v = as_video(video, fps)
        if isinstance(v, Features):
            raise TypeError("ClipBERT runs on raw frames: give a path, bytes or videolang.Frames, not features")
        if self.spec.input == "image":
            return self._resized([(0, _image_array(v))], [0], (1, 1))
        return self._video_inputs(v)

    def _video_inputs(self, video: str | os.PathLike | bytes | Frames) -> tuple[torch.Tensor, torch.Tensor]:
        from videolang.data.sampling import clipbert_task_indices
        from videolang.data.video import VideoReader

        s = self.spec.sampling
        assert s is not None

        def indices(num_frames: int, rate: float) -> np.ndarray:
            return clipbert_task_indices(s.task_sampling(), num_frames, rate, train=False, compat=s.compat)

        if isinstance(video, Frames):
            idx = indices(video.data.shape[0], video.fps)
            frames = ((int(i), video.data[int(i)].numpy()) for i in np.unique(idx))
            return self._resized(frames, idx.reshape(-1).tolist(), idx.shape)
        with VideoReader(video) as reader:
            meta = reader.metadata
            idx = indices(meta.num_frames, meta.fps)
            return self._resized(reader.iter_frames(idx.reshape(-1)), idx.reshape(-1).tolist(), idx.shape)

    def _resized(self, frames, order: list[int], shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize and pad each ``(index, uint8 (H, W, 3))`` frame as it comes; stack them in
        ``order`` as ``(*shape, 3, L, L)``."""
        from videolang.data.transforms import resize_longer_and_pad, to_float_tchw

        f = self.spec.frames
        done: dict[int, torch.Tensor] = {}
        valid = None
        for i, rgb in frames:
            x = to_float_tchw(torch.from_numpy(np.ascontiguousarray(rgb))[None], scale=1.0)
            done[i], valid = resize_longer_and_pad(x, f.size, antialias=f.antialias)
        out = torch.cat([done[i] for i in order])
        return out.view(*shape, *out.shape[1:]), valid

    def _encode_visual(self, videos: list, fps: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual tokens ``(B, N, V, H)`` and mask ``(B, V)`` of a few videos."""
        inputs = [self.visual_inputs(v, fps=fps) for v in videos]
        frames = torch.stack([x for x, _ in inputs]).to(self.device)
        pixel_mask = torch.stack([m for _, m in inputs]).to(self.device)
        return self.model.encode_visual(frames, pixel_mask)

    # -- fusion ----------------------------------------------------------------------------------

    def _logits(self, visual: torch.Tensor, vmask: torch.Tensor, rows: list[list[int]], video_index: list[int],
                pad_id: int) -> torch.Tensor:
        """Consensus logits ``(M, C)`` of text rows against the clips of their videos."""
        from videolang.data.clipbert import pad_rows
        from videolang.models.clipbert import clip_consensus

        ids, am = pad_rows(rows, pad_id)
        out = self.model.score(visual, vmask, ids.to(self.device), am.to(self.device),
                               torch.tensor(video_index, device=self.device), mlm=False)
        clip_logits = out["itm_clip_logits" if self.spec.task == "pretrain" else "clip_logits"]
        return clip_consensus(clip_logits, self.spec.consensus).float().cpu()

    def _text(self):
        from videolang.data.clipbert import TextEncoder

        return TextEncoder(self.tokenizer, self.spec.text.max_len + 2)

    def _check_task(self, method: str, tasks: tuple[str, ...]) -> None:
        if self.spec.task not in tasks:
            raise ConfigError(f"{method} needs a {' or '.join(tasks)} model; this folder holds a "
                              f"{self.spec.task!r} model")

    @torch.inference_mode()
    def score(self, videos: VideoInput | Sequence[VideoInput], texts: str | Sequence[str], *,
              fps: float | None = None, batch_size: int = 8, pair_batch_size: int = 1024) -> torch.Tensor:
        """Matching scores ``(len(videos), len(texts))``: ``logit[match] - logit[no match]`` after
        clip consensus, the score the retrieval evaluation ranks by (retrieval and pretraining
        models). ``batch_size`` videos go through the CNN at once; the fusion runs about
        ``pair_batch_size`` (text, clip) pairs at a time."""
        self._check_task("score", ("retrieval", "pretrain"))
        items, texts = as_video_list(videos), as_text_list(texts)
        text = self._text()
        rows = [text(t) for t in texts]
        out = torch.zeros(len(items), len(texts))
        for v0 in range(0, len(items), batch_size):
            visual, vmask = self._encode_visual(items[v0 : v0 + batch_size], fps)
            nv, n_clips = visual.shape[:2]
            t_chunk = max(1, pair_batch_size // (nv * n_clips))
            for t0 in range(0, len(rows), t_chunk):
                chunk = rows[t0 : t0 + t_chunk]
                pairs = [r for r in chunk for _ in range(nv)]
                logits = self._logits(visual, vmask, pairs, list(range(nv)) * len(chunk), text.pad)
                out[v0 : v0 + nv, t0 : t0 + len(chunk)] = (logits[:, 1] - logits[:, 0]).view(len(chunk), nv).t()
        return out

    def _paired_logits(self, videos: list, rows: list[list[list[int]]], fps: float | None, batch_size: int,
                       pair_batch_size: int, pad_id: int) -> list[torch.Tensor]:
        """Logits ``(len(rows[i]), C)`` of the text rows of item i against video i. A video given
        for several items (the same path, or the same object) is decoded and encoded once."""
        distinct, owner = _distinct(videos)
        pairs_of: list[list[tuple[int, list[int]]]] = [[] for _ in distinct]
        for i, u in enumerate(owner):
            pairs_of[u].extend((i, r) for r in rows[i])
        parts: list[list[torch.Tensor]] = [[] for _ in videos]
        for u0 in range(0, len(distinct), batch_size):
            visual, vmask = self._encode_visual(distinct[u0 : u0 + batch_size], fps)
            flat = [(j, i, r) for j in range(visual.shape[0]) for i, r in pairs_of[u0 + j]]
            step = max(1, pair_batch_size // visual.shape[1])
            for s in range(0, len(flat), step):
                chunk = flat[s : s + step]
                logits = self._logits(visual, vmask, [r for _, _, r in chunk], [j for j, _, _ in chunk], pad_id)
                for (_, i, _), row in zip(chunk, logits, strict=True):
                    parts[i].append(row)
        width = self.model.config.num_labels
        return [torch.stack(p) if p else torch.zeros(0, width) for p in parts]

    @torch.inference_mode()
    def answer(self, videos: VideoInput | Sequence[VideoInput], questions: str | Sequence[str], top_k: int = 1, *,
               fps: float | None = None, batch_size: int = 8, pair_batch_size: int = 1024) -> list[list[Prediction]]:
        """The ``top_k`` answers of each (video, question) pair from the folder's answer
        vocabulary, best first (open-ended QA and VQA). One video with several questions, or
        several videos with one question, pair up too. Scores are softmax probabilities (QA)
        or sigmoid scores (VQA, trained with binary cross-entropy); the best answer is the
        evaluation's prediction. Output indices beyond the vocabulary (``data.min_num_labels``)
        are labelled ``""``."""
        self._check_task("answer", ("qa", "vqa"))
        items, qs = as_video_list(videos), as_text_list(questions, "questions")
        n = max(len(items), len(qs))
        if not items or not qs:
            return []
        items, qs = _broadcast(items, n, "videos"), _broadcast(qs, n, "questions")
        text = self._text()
        logits = torch.cat(self._paired_logits(items, [[text(q)] for q in qs], fps, batch_size, pair_batch_size,
                                               text.pad))
        probs = logits.sigmoid() if self.spec.task == "vqa" else logits.softmax(-1)
        labels = self.spec.answers + [""] * (logits.shape[1] - len(self.spec.answers))
        return top_k_predictions(probs, labels, top_k)

    @torch.inference_mode()
    def choice_scores(self, videos: VideoInput | Sequence[VideoInput], questions: str | Sequence[str | None] | None,
                      choices: Sequence[str] | Sequence[Sequence[str]], *, fps: float | None = None,
                      batch_size: int = 8, pair_batch_size: int = 1024) -> list[torch.Tensor]:
        """Raw scores of every choice of each (video, question): the option logit (multiple-choice
        models) or ``logit[match] - logit[no match]`` (retrieval models, MSRVTT-MC); the
        evaluation picks the highest. ``choices`` is one list of options per question (or one
        list shared by all); a question of ``None`` scores the options alone."""
        self._check_task("choice_scores", ("mc", "retrieval"))
        items, qs, opts = _choice_items(videos, questions, choices)
        text = self._text()
        rows = [[text(choice_text(q, o)) for o in options] for q, options in zip(qs, opts, strict=True)]
        logits = self._paired_logits(items, rows, fps, batch_size, pair_batch_size, text.pad)
        if self.spec.task == "mc":
            return [x[:, 0] for x in logits]
        return [x[:, 1] - x[:, 0] for x in logits]

    def answer_choices(self, videos: VideoInput | Sequence[VideoInput], questions: str | Sequence[str | None] | None,
                       choices: Sequence[str] | Sequence[Sequence[str]], *, top_k: int | None = None,
                       **kw) -> list[list[Prediction]]:
        """The choices of each (video, question) ranked best first (see :meth:`choice_scores`):
        ``Prediction(choice, probability)``, the probability a softmax over the choices
        (multiple-choice models) or the match probability of each choice (retrieval models)."""
        opts = _choice_items(videos, questions, choices)[2]
        out = []
        for scores, options in zip(self.choice_scores(videos, questions, choices, **kw), opts, strict=True):
            probs = scores.softmax(0) if self.spec.task == "mc" else scores.sigmoid()
            out.extend(top_k_predictions(probs[None], options, top_k or len(options)))
        return out


def _distinct(videos: list) -> tuple[list, list[int]]:
    """The distinct videos of a list (paths by name, other inputs by identity) and, for each
    item, the position of its video among them."""
    first: dict[tuple, int] = {}
    owner = []
    for v in videos:
        key = ("path", os.fspath(v)) if isinstance(v, (str, os.PathLike)) else ("object", id(v))
        owner.append(first.setdefault(key, len(first)))
    distinct = [None] * len(first)
    for v, u in zip(videos, owner, strict=True):
        distinct[u] = v
    return distinct, owner


def _broadcast(items: list, n: int, what: str) -> list:
    if len(items) == n:
        return items
    if len(items) == 1:
        return items * n
    raise ValueError(f"{len(items)} {what} for {n} items: give one, or one per item")


def _choice_items(videos, questions, choices) -> tuple[list, list[str | None], list[list[str]]]:
    """Videos, questions and option lists of a multiple-choice call, one of each per item."""
    items = as_video_list(videos)
    qs = [questions] if questions is None or isinstance(questions, str) else list(questions)
    opts = [list(choices)] if choices and isinstance(choices[0], str) else [list(c) for c in choices]
    n = max(len(items), len(qs), len(opts))
    if not items or not opts:
        return [], [], []
    return _broadcast(items, n, "videos"), _broadcast(qs, n, "questions"), _broadcast(opts, n, "choice lists")


def _image_array(image: str | os.PathLike | bytes | Frames) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB of an image file, its bytes, or one-frame :class:`Frames`,
    read as the data layer reads images (PIL, converted to RGB)."""
    if isinstance(image, Frames):
        if image.data.shape[0] != 1:
            raise ValueError(f"an image model takes one frame, got {describe_video(image)}")
        return image.data[0].numpy()
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as im:
            return np.asarray(im.convert("RGB")).copy()
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"{describe_video(image)}: not a readable image ({exc})") from None


# -- converted original checkpoints (videolang convert clipbert) -------------------------------------

# The original's text side: bert-base-uncased's vocabulary (the offline MiniLM package ships it).
CONVERTED_TOKENIZER = "minilm"
# How the released image-text pretrained model was used (the original's pretraining config): images resized
# (longer side, bilinear, no antialiasing) and padded to L = 768, captions of 30 tokens.
_PRETRAIN_MAX_TEXT_LEN = 30


def spec_for_converted(model, backbone=None) -> ClipBERTSpec:
    """The pipeline spec of a converted ``clipbert_image_text_pretrained.pt``: image-text
    matching through the ITM head, as the original's pretraining evaluation used it."""
    cfg = model.config
    if cfg.task != "pretrain":
        raise ConfigError(f"videolang convert clipbert: the original released only the image-text pretrained "
                          f"model (task pretrain), not {cfg.task!r}; fine-tune it (model.init) and use the "
                          "run's export")
    return ClipBERTSpec(task="pretrain", input="image", text=TextSpec(max_len=_PRETRAIN_MAX_TEXT_LEN - 2),
                        frames=FramesSpec(size=cfg.frame_size, antialias=False), consensus=cfg.consensus)
