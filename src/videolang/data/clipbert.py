"""ClipBERT data: the original's JSONL annotation files, answer vocabularies, datasets and collation.

Readers accept the original txt_db field names and return plain dicts with our names, so one
dataset class serves MSR-VTT, DiDeMo, ActivityNet Captions, TGIF-QA, MSRVTT-QA/MC and VQA. Clips
are read in one decoding pass from a folder or an LMDB store; :func:`collate_clipbert` stacks
visual inputs ``(B, N, T, 3, L, L)`` and points each text row at its video (``video_index``).
Field names and preprocessing: docs/clipbert.md ("Data").
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BeforeValidator, Field, model_validator
from torch.utils.data import Dataset

from videolang.data.annotations import (
    AnnotationError,
    Identifier,
    Record,
    RelativePath,
    Text,
    check_inside,
    line_of,
    read_json_text,
    read_jsonl_records,
    validate_record,
)
from videolang.data.datasets import SkippedSample, VideoFramesDataset, item_generator
from videolang.data.sampling import (
    ClipBertTaskSampling,
    clipbert_task_indices,
    clipbert_task_sampling,
)
from videolang.data.splits import DataSplits, LoaderConfig
from videolang.data.transforms import resize_longer_and_pad, to_float_tchw
from videolang.data.video import MAX_PIXELS, REFUSE_FACTOR, guarded_size
from videolang.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "DATA_CONFIG_OF_RECIPE",
    "AnswerVocab",
    "ClipBertDataConfig",
    "ClipBertItems",
    "ClipBertMCQADataConfig",
    "ClipBertPretrainDataConfig",
    "ClipBertQADataConfig",
    "ClipBertRetrievalDataConfig",
    "ClipBertSplits",
    "ClipBertTask",
    "ClipBertVQADataConfig",
    "TextEncoder",
    "VisualSource",
    "choice_text",
    "collate_clipbert",
    "load_annotations",
    "majority_answer_rate",
    "task_sampling",
]

ClipBertTask = Literal["retrieval", "qa", "mc", "vqa", "pretrain"]
UnknownAnswers = Literal["error", "skip"]
VIDEO_KEYS = ("clip_name", "gif_name", "video_id")
IMAGE_KEYS = ("image_id", "coco_id", "vg_id")


@dataclass
class ClipBertDataConfig(LoaderConfig):
    """``data.*`` of the ClipBERT recipes; each recipe registers a subclass fixing ``task``."""

    task: ClipBertTask = "retrieval"  # what the annotations hold and the model is trained for
    train_file: str | None = None  # ClipBERT JSONL
    val_file: str | None = None
    test_file: str | None = None
    video_root: str | None = None  # <root>/<clip_name><extension>
    video_lmdb: str | None = None  # LMDB store keyed by file basename (videolang data pack)
    image_root: str | None = None  # images (vqa, pretrain): <root>/<image_id>[.jpg|.png]
    extension: str = ".mp4"
    ans2label: str | None = None  # qa / vqa answer vocabulary; None: built from train_file
    unknown_answers: UnknownAnswers = "error"  # answers outside ans2label; skip: left out of training
    min_num_labels: int = 0  # the original: 1540 (TGIF FrameQA), 1500 (MSRVTT-QA), 3129 (VQA)
    tokenizer: str = "minilm"
    max_text_len: int = 20
    frame_size: int = 448
    max_frame_pixels: int | None = MAX_PIXELS  # larger frames are decoded downscaled; None: no guard
    antialias: bool = True  # False: the original's resize without antialiasing
    sampling: str = "msrvtt_ret"  # per-task defaults (videolang.data.sampling.CLIPBERT_TASK_SAMPLING)
    target_fps: float | None = None
    frames_per_clip: int | None = None
    train_clips: int | None = None
    test_clips: int | None = None
    compat_sampling: bool = False  # the original's frame positions and test windows
    itm_neg_size: int = 1
    itm_neg_prob: float = 0.5
    mlm_probability: float = 0.15
    batch_size: int = 16
    eval_batch_size: int = 16
    pair_batch_size: int = 2048  # retrieval evaluation: (text, clip) pairs per fusion pass


@dataclass
class ClipBertRetrievalDataConfig(ClipBertDataConfig):
    """``data.*`` of ``clipbert.retrieval``: captions of videos."""

    task: Literal["retrieval"] = "retrieval"


@dataclass
class ClipBertQADataConfig(ClipBertDataConfig):
    """``data.*`` of ``clipbert.qa``: open-ended questions about videos."""

    task: Literal["qa"] = "qa"


@dataclass
class ClipBertMCQADataConfig(ClipBertDataConfig):
    """``data.*`` of ``clipbert.mcqa``: multiple-choice questions about videos."""

    task: Literal["mc"] = "mc"


@dataclass
class ClipBertVQADataConfig(ClipBertDataConfig):
    """``data.*`` of ``clipbert.vqa``: questions about images with soft answer scores."""

    task: Literal["vqa"] = "vqa"


@dataclass
class ClipBertPretrainDataConfig(ClipBertDataConfig):
    """``data.*`` of ``clipbert.pretrain``: captions of images (MLM + ITM)."""

    task: Literal["pretrain"] = "pretrain"


DATA_CONFIG_OF_RECIPE: dict[str, type[ClipBertDataConfig]] = {
    "retrieval": ClipBertRetrievalDataConfig, "qa": ClipBertQADataConfig, "mcqa": ClipBertMCQADataConfig,
    "vqa": ClipBertVQADataConfig, "pretrain": ClipBertPretrainDataConfig,
}  # clipbert.<name> -> its data section


def _decimal_id(value: Any) -> Any:
    """A JSON integer id as its decimal text; anything but an int or a string is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"must be an id (a string or a non-negative integer), got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must be an id (a string or a non-negative integer), got {value}")
        return f"{value:d}"
    return value


ImagePath = Annotated[(Identifier, *RelativePath.__metadata__)]
"""An image file relative to ``data.image_root``: an identifier that is a relative path."""
ImageId = Annotated[Identifier, BeforeValidator(_decimal_id)]
"""An image or question id: a string, or a non-negative JSON integer (VQA, COCO) kept as its decimal text."""
Score = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A VQA soft answer score: finite, not negative."""


class _VisualKeys(Record):
    """The video or image of a record: the first of ``KEYS`` that the record gives."""

    KEYS: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _one_visual(self):
        if not self.visual_field:
            first, *others = self.KEYS
            raise ValueError(f"field '{first}' (or {', '.join(repr(k) for k in others)}): Field required")
        return self

    @property
    def visual_field(self) -> str:
        return next((k for k in self.KEYS if getattr(self, k) != ""), "")

    @property
    def visual(self) -> str:
        return getattr(self, self.visual_field)


class _VideoKeys(_VisualKeys):
    """The video of a record: the first of ``clip_name``, ``gif_name``, ``video_id``."""

    KEYS: ClassVar[tuple[str, ...]] = VIDEO_KEYS
    clip_name: Identifier = ""
    gif_name: Identifier = ""
    video_id: Identifier = ""


class _ImageKeys(_VisualKeys):
    """The image of a record: ``file_name`` (relative to the image root), else the first of
    ``image_id``, ``coco_id``, ``vg_id`` (an integer id is written in decimal)."""

    KEYS: ClassVar[tuple[str, ...]] = ("file_name", *IMAGE_KEYS)
    file_name: ImagePath = ""
    image_id: ImageId = ""
    coco_id: ImageId = ""
    vg_id: ImageId = ""


class _Captions(Record):
    caption: Text = ""
    captions: Annotated[list[Text], Field(min_length=1)] | None = None  # several per image / video

    @model_validator(mode="after")
    def _some_caption(self):
        if self.caption == "" and self.captions is None:
            raise ValueError("field 'caption' (or 'captions'): Field required")
        return self

    def rows(self, position: int) -> list[dict[str, Any]]:
        texts = self.captions if self.captions is not None else [self.caption]
        return [{"visual": self.visual, "text": t} for t in texts]  # type: ignore[attr-defined]


class RetrievalRecord(_VideoKeys, _Captions):
    """A caption of a video (MSR-VTT, DiDeMo, ActivityNet Captions retrieval)."""


class PretrainRecord(_ImageKeys, _Captions):
    """Captions of an image (COCO, Visual Genome; the synthetic world's image_captions.jsonl)."""


class QARecord(_VideoKeys):
    """An open-ended question about a video (TGIF FrameQA, MSRVTT-QA)."""

    question: Text
    answer: Text
    answer_type: Identifier = "all"

    def rows(self, position: int) -> list[dict[str, Any]]:
        return [{"visual": self.visual, "text": self.question, "answer": self.answer,
                 "answer_type": self.answer_type}]


class MCRecord(_VideoKeys):
    """A multiple-choice question (TGIF action / transition, MSRVTT-MC): ``answer`` indexes
    ``options``; each option row is prefixed with the question when there is one."""

    question: Text = ""  # absent in MSRVTT-MC: the options alone are the text rows
    options: Annotated[list[Text], Field(min_length=2)]
    answer: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _answer_is_an_option(self):
        if self.answer >= len(self.options):
            raise ValueError(f"field 'answer': {self.answer} is not an index of the {len(self.options)} options")
        return self

    def rows(self, position: int) -> list[dict[str, Any]]:
        return [{"visual": self.visual, "texts": [choice_text(self.question, o) for o in self.options],
                 "answer": self.answer}]


class VQARecord(_ImageKeys):
    """A question about an image with soft answer scores (``labels``, absent in test files)."""

    question: Text
    labels: dict[Text, Score] = Field(default_factory=dict)
    answer_type: Identifier = "all"
    question_id: ImageId | None = None

    def rows(self, position: int) -> list[dict[str, Any]]:
        qid = f"{position:d}" if self.question_id is None else self.question_id
        return [{"visual": self.visual, "text": self.question, "labels": dict(self.labels),
                 "answer_type": self.answer_type, "question_id": qid}]


ANNOTATION_SCHEMAS: dict[str, type[Record]] = {
    "retrieval": RetrievalRecord, "pretrain": PretrainRecord, "qa": QARecord, "mc": MCRecord, "vqa": VQARecord,
}
"""The schema of each task's JSONL records (extra fields are ignored)."""
IMAGE_EXTENSIONS = ("", ".jpg", ".png", ".jpeg")  # an image key names <root>/<key>[ext]


def load_annotations(path: str | os.PathLike, kind: ClipBertTask, *, visual_root: str | os.PathLike | None = None,
                     extensions: Sequence[str] = ("",), vocab: AnswerVocab | None = None, training: bool = False,
                     unknown_answers: UnknownAnswers = "error") -> list[dict]:
    """Read a ClipBERT JSONL file, each line checked against ``ANNOTATION_SCHEMAS[kind]``, as
    records with our field names; the first problem is an :class:`AnnotationError` naming
    file, line and field.

    * ``retrieval`` / ``pretrain``: ``{visual, text}`` (``caption``; a ``captions`` list
      gives one record per caption);
    * ``qa``: ``{visual, text, answer, answer_type}`` (``question``, ``answer`` string);
    * ``mc``: ``{visual, texts, answer}``: ``options`` (the same number in every record),
      prefixed with ``question + " "`` when there is a question, ``answer`` an index;
    * ``vqa``: ``{visual, text, labels, answer_type, question_id}`` (``labels`` soft scores,
      empty when absent).

    ``visual`` is the video key (``clip_name``, ``gif_name`` or ``video_id``) or, for
    ``vqa``/``pretrain``, the image key (``file_name`` if present, else ``image_id``,
    ``coco_id`` or ``vg_id``). With ``visual_root`` every key must lead to a file inside it
    (``<root>/<key><ext>`` for the first of ``extensions`` that exists; links resolved). With
    a closed ``vocab`` (``data.ans2label``) answers outside it are errors, or with
    ``unknown_answers="skip"`` left out of ``training`` files and kept (scored wrong) in others.
    """
    schema = ANNOTATION_SCHEMAS.get(kind)
    if schema is None:
        raise ConfigError(f"unknown annotation kind {kind!r}")
    out, left_out = [], []
    records = read_jsonl_records(path, schema)
    for position, (line, record) in enumerate(records):
        where = f"{path}:{line}"
        if isinstance(record, MCRecord):
            _check_option_count(record, records[0], where)
        if visual_root is not None:
            _check_visual_path(record, visual_root, extensions, where)
        for row in record.rows(position):  # type: ignore[attr-defined]
            if vocab is not None and not _answers_known(row, vocab, where, unknown_answers, training):
                left_out.append(where)
                continue
            out.append(row)
    if left_out:
        log.warning("%s: %d training answers outside the answer vocabulary left out (first: %s)", path,
                    len(left_out), left_out[0])
        if not out:
            raise AnnotationError(f"{path}: no training answer is in the answer vocabulary")
    return out


def _check_option_count(record: MCRecord, first: tuple[int, Any], where: str) -> None:
    """Every question of a file offers as many options as the first (a batch is one tensor)."""
    line, head = first
    if len(record.options) != len(head.options):
        raise AnnotationError(f"{where}: field 'options': {len(record.options)} options, line {line} has "
                              f"{len(head.options)} (every question of a file needs as many)")


def _check_visual_path(record: Any, root: str | os.PathLike, extensions: Sequence[str], where: str) -> None:
    """A record's video / image must be a file inside ``root`` (the one a reader opens)."""
    key, field = record.visual, record.visual_field
    check_inside(root, key, f"{where}: field '{field}'")
    for ext in extensions:
        if ext and (Path(root) / (key + ext)).exists():
            check_inside(root, key + ext, f"{where}: field '{field}'")
            return


def _answers_known(row: Mapping[str, Any], vocab: AnswerVocab, where: str, unknown_answers: UnknownAnswers,
                   training: bool) -> bool:
    """Whether ``row``'s answers are in the closed vocabulary; an error when they must be."""
    if "labels" in row:  # vqa: unknown answers add nothing to the soft targets
        unknown = [a for a in row["labels"] if a not in vocab.ans2label]
        field = f"labels.{unknown[0]}" if unknown else ""
    else:
        unknown = [row["answer"]] if row["answer"] not in vocab.ans2label else []
        field = "answer"
    if not unknown or unknown_answers == "skip":
        return not (unknown and training and field == "answer")
    raise AnnotationError(f"{where}: field '{field}': {unknown[0]!r} is not in the answer vocabulary "
                          f"(data.ans2label; data.unknown_answers=skip leaves such training answers out "
                          "and scores them wrong in evaluation)")


class _Answer(Record):
    answer: Text
    label: Annotated[int, Field(ge=0)]


@dataclass
class AnswerVocab:
    """``ans2label`` of an open-ended QA task. ``num_labels = max(len, min_labels)`` as the
    original (1540 for TGIF FrameQA, 1500 for MSRVTT-QA, 3129 for VQA)."""

    ans2label: dict[str, int]
    min_labels: int = 0

    @classmethod
    def from_file(cls, path: str | os.PathLike, min_labels: int = 0) -> AnswerVocab:
        """A JSON object ``{answer: label index}`` with indices ``0..n-1``; the first bad entry
        is an :class:`AnnotationError` naming file, line and answer."""
        p = Path(path)
        if not p.is_file():
            raise AnnotationError(f"answer vocabulary not found: {p}")
        data, text = read_json_text(p)
        if not isinstance(data, dict) or not data:
            raise AnnotationError(f"{p}: expected a JSON object {{answer: label index}} with at least one answer")

        def where(answer: str) -> str:
            return f"{p}:{line_of(text, json.dumps(answer) + ':')}"

        for answer, label in data.items():
            validate_record(_Answer, {"answer": answer, "label": label}, lambda answer=answer: where(answer))
        labels = sorted(data.values())
        if labels != list(range(len(data))):
            first = next(i for i, v in enumerate(labels) if v != i)
            answer = next(a for a, v in data.items() if v == labels[first])
            raise AnnotationError(f"{where(answer)}: field '{answer}': label indices must be "
                                  f"0..{len(data) - 1} without gaps or repeats, got {labels[first]}")
        return cls(dict(data), min_labels)
    @classmethod
    def from_records(cls, records: Sequence[Mapping], min_labels: int = 0) -> AnswerVocab:
        """Answers sorted by frequency (ties alphabetically)."""
        counts: dict[str, int] = {}
        for r in records:
            counts[r["answer"]] = counts.get(r["answer"], 0) + 1
        order = sorted(counts, key=lambda a: (-counts[a], a))
        return cls({a: i for i, a in enumerate(order)}, min_labels)

    @property
    def answers(self) -> list[str]:
        """The answer of each label index."""
        return sorted(self.ans2label, key=self.ans2label.__getitem__)

    @property
    def num_labels(self) -> int:
        return max(len(self.ans2label), self.min_labels)

    def label(self, answer: str) -> int:
        """Label of ``answer``, or -1 when it is outside the vocabulary (always wrong at eval)."""
        return self.ans2label.get(answer, -1)

    def soft_targets(self, labels: Mapping[str, float]) -> torch.Tensor:
        """VQA soft-score vector ``(num_labels,)`` (out-of-vocabulary answers dropped)."""
        t = torch.zeros(self.num_labels)
        for answer, score in labels.items():
            if answer in self.ans2label:
                t[self.ans2label[answer]] = score
        return t


class TextEncoder:
    """``[CLS] text [SEP]`` token ids, cut to ``max_len`` tokens (special tokens included)."""

    def __init__(self, tokenizer: Any, max_len: int):
        if max_len < 3:
            raise ConfigError(f"max_text_len must be at least 3, got {max_len}")
        self.tokenizer, self.max_len = tokenizer, max_len
        self.cls, self.sep, self.pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
        self._cache: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            body = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_len - 2]
            ids = self._cache[text] = [self.cls, *body, self.sep]
        return ids

    def batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self(t) for t in texts]
        return pad_rows(rows, self.pad)


def pad_rows(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows to the longest: ``(ids (M, L), mask (M, L) bool)``."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = True
    return ids, mask


class VisualSource:
    """Frames of videos (sampled clips) or images, resized and padded to ``frame_size``.

    ``sampling`` gives the per-task clip layout; ``train`` picks random (training) or evenly
    spaced (test) windows; ``compat`` the original's window choice. Exactly one of
    ``video_root``, ``video_store`` (LMDB) or ``image_root`` is used. Frames and images above
    ``max_pixels`` are decoded downscaled (beyond ``REFUSE_FACTOR`` times that, skipped).
    """

    def __init__(self, keys: Sequence[str], *, sampling: ClipBertTaskSampling, train: bool, frame_size: int,
                 video_root: str | None = None, video_store: Mapping[str, bytes] | None = None,
                 image_root: str | None = None, extension: str = ".mp4", antialias: bool = True,
                 compat: bool = False, num_clips: int | None = None, seed: int = 0,
                 max_pixels: int | None = MAX_PIXELS):
        self.keys = list(keys)
        self.frame_size, self.antialias, self.max_pixels = frame_size, antialias, max_pixels
        self.image_root = Path(image_root) if image_root else None
        self.videos: VideoFramesDataset | None = None
        if self.image_root is None:
            if video_root is None and video_store is None:
                raise ConfigError("data: give video_root or video_lmdb (videos) or image_root (images)")

            def sampler(meta, generator: torch.Generator) -> np.ndarray:
                return clipbert_task_indices(sampling, meta.num_frames, meta.fps, train=train, num_clips=num_clips,
                                             generator=generator, compat=compat)

            self.videos = VideoFramesDataset([{"video": k} for k in self.keys], sampler, video_root=video_root,
                                             store=video_store, extension=extension, seed=seed,
                                             max_pixels=max_pixels)

    def set_epoch(self, epoch: int) -> None:
        if self.videos is not None:
            self.videos.set_epoch(epoch)

    def _image_path(self, key: str) -> Path:
        assert self.image_root is not None
        for ext in IMAGE_EXTENSIONS:
            path = check_inside(self.image_root, key + ext, f"image {key!r}")
            if path.is_file():
                return path
        raise FileNotFoundError(f"image {key!r} not found in {self.image_root}")

    def _image(self, key: str) -> torch.Tensor:
        """An image as ``(1, 1, H, W, 3)`` uint8; one above ``max_pixels`` is decoded downscaled
        (JPEG at a reduced DCT scale), one beyond ``REFUSE_FACTOR`` times that is refused."""
        from PIL import Image

        with Image.open(self._image_path(key)) as im:
            w, h = im.size
            if self.max_pixels is not None and w * h > self.max_pixels:
                if w * h > self.max_pixels * REFUSE_FACTOR:
                    raise OSError(f"{w}x{h} image is beyond the decoding guard (max_pixels={self.max_pixels} "
                                  f"x {REFUSE_FACTOR})")
                im.thumbnail(guarded_size(w, h, self.max_pixels))
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy())[None, None]

    def __call__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | SkippedSample:
        """``(frames (N, T, 3, L, L) float 0-255, pixel_mask (L, L))`` of visual ``index``."""
        if self.videos is None:
            from PIL import Image

            try:
                raw = self._image(self.keys[index])
            except (OSError, Image.DecompressionBombError) as exc:  # unreadable, truncated, not an image, huge
                log.warning("skipping image %s: %s", self.keys[index], exc)
                return SkippedSample(index, self.keys[index], str(exc))
        else:
            item = self.videos[index]
            if isinstance(item, SkippedSample):
                return item
            raw = item["frames"]  # (N, T, H, W, 3) uint8
        n, t = raw.shape[:2]
        x = to_float_tchw(raw.flatten(0, 1), scale=1.0)
        x, valid = resize_longer_and_pad(x, self.frame_size, antialias=self.antialias)
        return x.view(n, t, *x.shape[1:]), valid


class ClipBertItems(Dataset):
    """Items of one ClipBERT task over a :class:`VisualSource`.

    ``kind``: ``retrieval`` (training: the caption and ``itm_neg_size`` captions of other
    videos, labels 1, 0..; ``eval_visual_only``: one item per video), ``qa`` (question, answer
    label), ``mc`` (question + option rows, answer index), ``vqa`` (question, soft targets),
    ``pretrain`` (caption replaced with probability ``itm_neg_prob`` by one of another image;
    ITM label 1 if kept). Draws come from (seed, epoch, index) generators.
    """

    def __init__(self, records: Sequence[Mapping], kind: ClipBertTask, text: TextEncoder,
                 visual_factory: Callable[[Sequence[str]], VisualSource], *, vocab: AnswerVocab | None = None,
                 itm_neg_size: int = 1, itm_neg_prob: float = 0.5, eval_visual_only: bool = False, seed: int = 0):
        self.records = list(records)
        self.kind, self.text, self.vocab = kind, text, vocab
        self.itm_neg_size, self.itm_neg_prob = itm_neg_size, itm_neg_prob
        self.eval_visual_only = eval_visual_only
        self.seed, self.epoch = seed, 0
        self.visual_keys = sorted({r["visual"] for r in self.records})
        self.visual_pos = {k: i for i, k in enumerate(self.visual_keys)}
        self.visual = visual_factory(self.visual_keys)
        if kind in ("qa", "vqa") and vocab is None:
            raise ConfigError(f"{kind}: an answer vocabulary is required")
        if kind in ("retrieval", "pretrain") and not eval_visual_only and len(self.visual_keys) < 2:
            raise ConfigError(f"{kind}: negatives need captions of at least 2 different videos/images")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.visual.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.visual_keys) if self.eval_visual_only else len(self.records)

    def captions_of(self, visual_ids: Sequence[int]) -> tuple[list[str], list[int]]:
        """The captions of the visuals ``visual_ids`` (positions in ``visual_keys``) in record
        order, and for each the position of its visual in ``visual_ids``."""
        column = {v: j for j, v in enumerate(visual_ids)}
        kept = [r for r in self.records if self.visual_pos[r["visual"]] in column]
        return [r["text"] for r in kept], [column[self.visual_pos[r["visual"]]] for r in kept]

    def _other_caption(self, visual: str, g: torch.Generator) -> str:
        # Uniform over captions of *other* videos (re-draw on a hit, as the original).
        while True:
            j = int(torch.randint(len(self.records), (), generator=g))
            if self.records[j]["visual"] != visual:
                return self.records[j]["text"]

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        if self.eval_visual_only:
            got = self.visual(index)
            if isinstance(got, SkippedSample):
                return got
            return {"frames": got[0], "pixel_mask": got[1], "visual_id": index, "rows": []}
        rec = self.records[index]
        got = self.visual(self.visual_pos[rec["visual"]])
        if isinstance(got, SkippedSample):
            return SkippedSample(index, got.source, got.reason)
        item: dict[str, Any] = {"frames": got[0], "pixel_mask": got[1], "index": index,
                                "visual_id": self.visual_pos[rec["visual"]]}
        g = item_generator(self.seed + 1, self.epoch, index)
        if self.kind == "retrieval":
            negs = [self._other_caption(rec["visual"], g) for _ in range(self.itm_neg_size)]
            item["rows"] = [self.text(rec["text"]), *(self.text(t) for t in negs)]
            item["labels"] = [1] + [0] * len(negs)
        elif self.kind == "pretrain":
            keep = float(torch.rand((), generator=g)) >= self.itm_neg_prob
            caption = rec["text"] if keep else self._other_caption(rec["visual"], g)
            item["rows"], item["labels"] = [self.text(caption)], [int(keep)]
        elif self.kind == "qa":
            assert self.vocab is not None
            item["rows"], item["labels"] = [self.text(rec["text"])], [self.vocab.label(rec["answer"])]
        elif self.kind == "mc":
            item["rows"], item["labels"] = [self.text(t) for t in rec["texts"]], [rec["answer"]]
        else:  # vqa
            assert self.vocab is not None
            item["rows"], item["labels"] = [self.text(rec["text"])], [-1]
            item["soft_targets"] = self.vocab.soft_targets(rec["labels"])
        return item


def collate_clipbert(batch: Sequence[Any], pad_id: int = 0) -> dict[str, Any]:
    """Stack visual inputs, concatenate text rows. Unreadable items are dropped and listed under
    ``skipped`` (see :func:`~videolang.data.datasets.collate_skipping`).

    Keys: ``frames`` ``(B, N, T, 3, L, L)``, ``pixel_mask`` ``(B, L, L)``, ``visual_id`` ``(B,)``;
    with text rows: ``input_ids``/``attention_mask`` ``(M, Lt)``, ``video_index`` ``(M,)``,
    ``labels`` (one per item for qa/mc/vqa, one per row for retrieval/pretrain), ``rows_per_item``;
    ``index`` (item indices), ``soft_targets`` ``(B, C)`` for VQA.
    """
    good = [b for b in batch if not isinstance(b, SkippedSample)]
    out: dict[str, Any] = {"skipped": [b for b in batch if isinstance(b, SkippedSample)]}
    if not good:
        return out
    out["frames"] = torch.stack([b["frames"] for b in good])
    out["pixel_mask"] = torch.stack([b["pixel_mask"] for b in good])
    out["visual_id"] = torch.tensor([b["visual_id"] for b in good])
    if "index" in good[0]:
        out["index"] = torch.tensor([b["index"] for b in good])
    rows = [r for b in good for r in b["rows"]]
    if rows:
        out["input_ids"], out["attention_mask"] = pad_rows(rows, pad_id)
        counts = torch.tensor([len(b["rows"]) for b in good])
        out["rows_per_item"] = counts
        out["video_index"] = torch.repeat_interleave(torch.arange(len(good)), counts)
        out["labels"] = torch.tensor([lab for b in good for lab in b["labels"]])
    if "soft_targets" in good[0]:
        out["soft_targets"] = torch.stack([b["soft_targets"] for b in good])
    return out


def choice_text(question: str | None, option: str) -> str:
    """The text row of one multiple-choice option, as the annotation reader builds it
    (``question + " " + option``, the option alone without a question)."""
    return f"{question} {option}" if question else option


def task_sampling(d: ClipBertDataConfig) -> ClipBertTaskSampling:
    """The run's clip layout: the defaults of ``data.sampling`` with the data section's overrides."""
    return clipbert_task_sampling(d.sampling, target_fps=d.target_fps, frames_per_clip=d.frames_per_clip,
                                  train_clips=d.train_clips, test_clips=d.test_clips)


def answer_vocab(d: ClipBertDataConfig) -> AnswerVocab | None:
    """The answer vocabulary of a qa / vqa run (``data.ans2label``, else built from train_file)."""
    if d.task not in ("qa", "vqa"):
        return None
    if d.ans2label:
        return AnswerVocab.from_file(d.ans2label, d.min_num_labels)
    if d.task == "vqa" or not d.train_file:
        raise ConfigError(f"data.ans2label: clipbert.{d.task} needs an answer vocabulary file")
    return AnswerVocab.from_records(load_annotations(d.train_file, "qa"), d.min_num_labels)


def majority_answer_rate(train_file: str | None, records: Sequence[Mapping]) -> float:
    """Accuracy (%) on ``records`` of always giving the most frequent answer of ``train_file``
    (ties: the answer that sorts last); NaN without training answers."""
    train = load_annotations(train_file, "qa") if train_file else []
    if not train:
        return float("nan")
    counts = Counter(r["answer"] for r in train)
    top = max(counts, key=lambda a: (counts[a], a))
    return 100.0 * sum(r["answer"] == top for r in records) / len(records)


class ClipBertSplits(DataSplits[ClipBertDataConfig]):
    """The ``{split}_file`` annotations of ``data.task`` as :class:`ClipBertItems` over videos
    (a folder or LMDB store) or images; retrieval evaluation reads one item per video."""

    def __init__(self, data: ClipBertDataConfig, seed: int = 0):
        super().__init__(data, seed)
        if data.max_frame_pixels is not None and data.max_frame_pixels <= 0:
            raise ConfigError(f"data.max_frame_pixels must be a positive pixel count or null, got {data.max_frame_pixels}")
        self.vocab = answer_vocab(data)
        self.sampling = task_sampling(data)
        self._text: TextEncoder | None = None

    @property
    def text(self) -> TextEncoder:
        if self._text is None:
            from videolang.data.text import load_tokenizer

            self._text = TextEncoder(load_tokenizer(self.data.tokenizer), self.data.max_text_len)
        return self._text

    def _visual_factory(self, train: bool) -> Callable[[Sequence[str]], VisualSource]:
        d = self.data
        store = None
        if d.video_lmdb:
            from videolang.data.stores import LmdbVideoStore

            store = LmdbVideoStore(d.video_lmdb)
        reads_images = d.task in ("vqa", "pretrain")
        if reads_images and not d.image_root:
            raise ConfigError(f"data.image_root: clipbert.{d.task} reads images")

        def make(keys: Sequence[str]) -> VisualSource:
            return VisualSource(keys, sampling=self.sampling, train=train, frame_size=d.frame_size,
                                video_root=d.video_root, video_store=store,
                                image_root=d.image_root if reads_images else None, extension=d.extension,
                                antialias=d.antialias, compat=d.compat_sampling, seed=self.seed,
                                max_pixels=d.max_frame_pixels)
        return make

    def _records(self, path: str, train: bool) -> list[dict]:
        """The split's annotations, their videos / images checked to lie inside the data root and,
        with a closed vocabulary (``data.ans2label``), their answers in it."""
        d = self.data
        root, extensions = (d.image_root, IMAGE_EXTENSIONS) if d.task in ("vqa", "pretrain") else \
            (None if d.video_lmdb else d.video_root, ("", d.extension))
        return load_annotations(path, d.task, visual_root=root, extensions=extensions,
                                vocab=self.vocab if d.ans2label else None, training=train,
                                unknown_answers=d.unknown_answers)

    def build(self, split: str) -> ClipBertItems:
        d = self.data
        path = getattr(d, f"{split}_file")
        if not path:
            raise ConfigError(f"data.{split}_file: no {split} annotations given")
        train = split == "train"
        return ClipBertItems(self._records(path, train), d.task, self.text, self._visual_factory(train),
                             vocab=self.vocab, itm_neg_size=d.itm_neg_size, itm_neg_prob=d.itm_neg_prob,
                             eval_visual_only=not train and d.task == "retrieval", seed=self.seed)

    def has_split(self, split: str) -> bool:
        return split != "val" or bool(self.data.val_file)

    def collate_fn(self, split: str) -> Callable[[list[Any]], dict[str, Any]]:
        return partial(collate_clipbert, pad_id=self.text.pad)
