"""Data of the VLM recipes on per-second feature stores.

Pretraining's masking (:func:`whole_modality_masks`), multiple-choice QA
(:class:`MultipleChoiceItems`: MSR-VTT ``MSR_MC_test.csv`` or our ``mc.jsonl``), captioning
(:class:`CaptionItems` for training, :class:`CaptionVideos` with all references for evaluation)
and action segmentation (COIN's ``COIN.json``, :func:`read_coin`; :class:`SegmentationWindows`),
served by split by the ``*Splits`` classes. Retrieval pairs come from :mod:`videolang.data.videoclip`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BeforeValidator, Field, model_validator
from torch.utils.data import BatchSampler, Dataset, RandomSampler, Sampler

from videolang.data.annotations import (
    AnnotationError,
    Identifier,
    Record,
    Text,
    read_csv_records,
    read_json_document,
    read_jsonl_records,
)
from videolang.data.datasets import collate_skipping, epoch_choice
from videolang.data.sampling import window_spans
from videolang.data.splits import DataSplits, LoaderConfig
from videolang.data.stores import FeatureStore, feature_rows_per_second
from videolang.data.text import mask_tokens
from videolang.data.videoclip import (
    Segment,
    TextLayout,
    UnreadableFeatures,
    VideoCLIPDataConfig,
    VideoCLIPSplits,
    checked_window,
    feature_rows,
    keyed_records,
    protocol_name,
    read_eval_pairs,
    segment_window,
    skips_unreadable,
)
from videolang.errors import ConfigError, VideolangError

__all__ = [
    "CaptionItems",
    "CaptionVideos",
    "CoinStep",
    "CoinVideo",
    "McItem",
    "McLine",
    "MsrvttMcRow",
    "MultipleChoiceItems",
    "SegmentationWindows",
    "VLMCaptionDataConfig",
    "VLMCaptionSplits",
    "VLMDataConfig",
    "VLMPretrainDataConfig",
    "VLMQADataConfig",
    "VLMQASplits",
    "VLMSegmentationDataConfig",
    "VLMSegmentationSplits",
    "VideoSegments",
    "caption_layout",
    "coin_label_names",
    "feature_statistics",
    "read_coin",
    "read_coin_database",
    "read_mc_items",
    "row_labels",
    "whole_modality_masks",
]

log = logging.getLogger(__name__)
Tokenize = Callable[[list[str]], list[list[int]]]


def _missing_features(video_ids: Sequence[str], features: Mapping[str, np.ndarray], what: str) -> None:
    missing = sorted({v for v in video_ids if v not in features})
    if missing:
        raise VideolangError(f"{len(missing)} {what} videos have no features, e.g. {missing[:5]}")


# ---------------------------------------------------------------------------------------------
# the data sections


@dataclass
class VLMDataConfig(VideoCLIPDataConfig):
    """``data.*`` of ``vlm.retrieval``. VLM splices the video in after ``caps[0]``, so its text is
    always MMPT's ``[CLS] [SEP] words [SEP]``."""

    objective: Literal["retrieval"] = "retrieval"
    mmpt_text_layout: Literal[True] = True


@dataclass
class VLMPretrainDataConfig(VLMDataConfig):
    """``data.*`` of ``vlm.pretrain``: VideoCLIP's pretraining pairs."""

    objective: Literal["pretrain"] = "pretrain"


@dataclass
class VLMQADataConfig(VLMDataConfig):
    """``data.*`` of ``vlm.mcqa``: retrieval pairs for training, multiple-choice items for
    evaluation (``msrvtt``: ``MSR_MC_test.csv``; ``jsonl``: our ``mc.jsonl``)."""

    # Optional multiple-choice training items (e.g. mc.jsonl's train split, TGIF-QA action):
    # when given, training is cross-entropy over each item's options instead of retrieval pairs.
    train_mc: str | None = None
    train_mc_format: Literal["msrvtt", "jsonl"] = "jsonl"
    train_mc_split: str = "train"
    val_mc: str | None = None
    val_mc_format: Literal["msrvtt", "jsonl"] = "jsonl"
    val_mc_split: str = "val"
    test_mc: str | None = None
    test_mc_format: Literal["msrvtt", "jsonl"] = "msrvtt"
    test_mc_split: str = "test"


@dataclass
class VLMCaptionDataConfig(VLMDataConfig):
    """``data.*`` of ``vlm.captioning``."""

    # Train on every caption of a video (MSR-VTT practice) or only its first one (the
    # synthetic world's canonical caption). Evaluation always uses every reference.
    train_all_captions: bool = True


@dataclass
class VLMSegmentationDataConfig(LoaderConfig):
    """``data.*`` of ``vlm.segmentation``."""

    features: str = ""
    feature_rate: float | None = None  # rows per second; None: from extraction.json, else 1
    annotations: str = ""  # COIN.json
    train_subset: str = "training"
    val_subset: str | None = None
    test_subset: str = "testing"
    window: int = 32  # rows per window (the original: 32 s)
    train_stride: int = 8
    eval_stride: int = 16


# ---------------------------------------------------------------------------------------------
# pretraining


def whole_modality_masks(
    caps: torch.Tensor, cmask: torch.Tensor, vmask: torch.Tensor, *, special_ids: list[int], mask_token_id: int,
    vocab_size: int, mm_prob: float, mlm_probability: float, mfm_probability: float, generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VLM's masking (MMPT ``MFMMLMAligner``), vectorized over the batch.

    Returns ``(masked_caps, text_labels, video_label)``: an item gets all its text masked with
    probability ``mm_prob / 2``, all its valid frames with ``mm_prob / 2``, and otherwise
    ``mlm_probability`` of its words and ``mfm_probability`` of its frames. Chosen words are
    replaced 80 / 10 / 10 ([MASK] / random / kept); special tokens and padding never are.
    """
    b = caps.shape[0]
    draw = torch.rand(b, generator=generator)
    text_full = draw < mm_prob / 2
    video_full = (draw >= mm_prob / 2) & (draw < mm_prob)
    standard = ~(text_full | video_full)
    masked, labels = caps.clone(), torch.full_like(caps, -100)
    for rows, prob in ((standard, mlm_probability), (text_full, 1.0)):
        if not bool(rows.any()):
            continue
        m, lab = mask_tokens(caps[rows], mask_token_id=mask_token_id, vocab_size=vocab_size,
                             special_token_ids=special_ids, attention_mask=cmask[rows], mlm_probability=prob,
                             generator=generator)
        masked[rows], labels[rows] = m, lab
    frame_draw = torch.rand(vmask.shape, generator=generator) < mfm_probability
    video_label = vmask.bool() & ((frame_draw & standard[:, None]) | video_full[:, None])
    return masked, labels, video_label


def feature_statistics(features: str, max_videos: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over the rows of (up to ``max_videos``, evenly spread) videos
    of a feature store."""
    store = FeatureStore(features)
    ids = list(store)
    step = max(1, len(ids) // max_videos)
    parts, unreadable = [], []
    for vid in ids[::step]:
        try:
            rows = np.asarray(feature_rows(store, vid), dtype=np.float64)
        except UnreadableFeatures as exc:
            unreadable.append(str(exc))
            continue
        if np.isfinite(rows).all():  # NaN rows would make every statistic NaN
            parts.append(rows)
        else:
            unreadable.append(f"{vid}: non-finite feature values")
    if unreadable:
        log.warning("feature statistics leave out %d unreadable videos of %s, e.g. %s", len(unreadable), features,
                    unreadable[0])
    if not parts:
        raise VideolangError(f"{features}: no readable feature rows for the feature statistics")
    rows = np.concatenate(parts)
    return torch.from_numpy(rows.mean(0)).float(), torch.from_numpy(rows.std(0)).float()


# ---------------------------------------------------------------------------------------------
# multiple-choice QA


@dataclass(frozen=True)
class McItem:
    video_id: str
    options: tuple[str, ...]
    answer: int


MC_OPTION_COLUMNS = ("a1", "a2", "a3", "a4", "a5")


class MsrvttMcRow(Record):
    """A row of MSR-VTT's tab-separated ``MSR_MC_test.csv`` (``key vid_key a1..a5 answer``):
    ``answer`` indexes the five options from 0."""

    vid_key: Identifier
    a1: Text
    a2: Text
    a3: Text
    a4: Text
    a5: Text
    answer: int = Field(ge=0, lt=len(MC_OPTION_COLUMNS))

    def item(self) -> McItem:
        vid = "video" + self.vid_key[3:] if self.vid_key.startswith("msr") else self.vid_key
        return McItem(vid, tuple(getattr(self, c) for c in MC_OPTION_COLUMNS), self.answer)


class McLine(Record):
    """A line of our ``mc.jsonl``: ``answer`` indexes ``options`` (a list of two or more texts)."""

    video_id: Identifier
    options: list[Text] = Field(min_length=2)
    answer: int
    split: Identifier

    @model_validator(mode="after")
    def _answer_is_an_option(self) -> McLine:
        if not 0 <= self.answer < len(self.options):
            raise ValueError(f"answer {self.answer} is not an index of the {len(self.options)} options")
        return self


def read_mc_items(path: str | Path, fmt: Literal["msrvtt", "jsonl"], split: str = "test") -> list[McItem]:
    """Multiple-choice items, every record checked against its schema (:class:`MsrvttMcRow`,
    :class:`McLine`): ``msrvtt`` reads ``MSR_MC_test.csv`` (every row; MSR-VTT's ``msrXXXX``
    keys become ``videoXXXX`` as in MMPT, other ids are kept), ``jsonl`` reads ``mc.jsonl``
    records of ``split``."""
    p = Path(path)
    if fmt == "msrvtt":
        rows = read_csv_records(p, MsrvttMcRow, delimiter="\t", required_columns=("vid_key", *MC_OPTION_COLUMNS, "answer"))
        items = [row.item() for _, row in rows]
    else:
        items = [McItem(r.video_id, tuple(r.options), r.answer) for _, r in read_jsonl_records(p, McLine)
                 if r.split == split]
    if not items:
        raise AnnotationError(f"{p}: no multiple-choice items for split {split!r}")
    return items


class MultipleChoiceItems(Dataset):
    """The first ``max_video_len`` rows of the video, and every option in the text layout:
    ``caps``/``cmask`` are ``(K, L)``."""

    def __init__(self, items: Sequence[McItem], features: Mapping[str, np.ndarray], tokenize: Tokenize,
                 layout: TextLayout, *, max_video_len: int = 32):
        _missing_features([it.video_id for it in items], features, "multiple-choice")
        counts = {len(it.options) for it in items}
        if len(counts) != 1:
            raise ConfigError(f"multiple-choice items have different option counts: {sorted(counts)}")
        self.items = list(items)
        self.features = features
        flat = tokenize([o for it in self.items for o in it.options])
        k = counts.pop()
        self.options = [flat[i * k : (i + 1) * k] for i in range(len(self.items))]
        self.layout = layout
        self.max_video_len = max_video_len

    def __len__(self) -> int:
        return len(self.items)

    @skips_unreadable
    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        v, vm = segment_window(self.features, item.video_id, 0.0, float(self.max_video_len), self.max_video_len)
        built = [self.layout.build(words) for words in self.options[index]]
        return {"vfeats": v, "vmask": vm, "caps": torch.stack([b[0] for b in built]),
                "cmask": torch.stack([b[1] for b in built]), "answer": item.answer, "index": index}


# ---------------------------------------------------------------------------------------------
# captioning


def caption_layout(layout: TextLayout, words: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """MMPT's generation layout ``[CLS] [SEP] [BOS] words [SEP]`` ([BOS] is [CLS]): the
    model reads ``[BOS] words`` and predicts ``words [SEP]``."""
    if not layout.sep_after_cls:
        raise ConfigError("captioning needs the MMPT text layout (TextLayout(sep_after_cls=True))")
    return layout.build([layout.cls_id, *words])


class CaptionItems(Dataset):
    """Training items: one per video per epoch with one of its captions (drawn by seed, epoch
    and index), in :func:`caption_layout`."""

    def __init__(self, pairs: Sequence[tuple], features: Mapping[str, np.ndarray], tokenize: Tokenize,
                 layout: TextLayout, *, max_video_len: int = 32, seed: int = 0):
        _missing_features([p[0] for p in pairs], features, "captioning")
        tokens = tokenize([p[3] for p in pairs])
        by_video: dict[str, list[tuple[tuple, list[int]]]] = {}
        for p, t in zip(pairs, tokens, strict=True):
            by_video.setdefault(p[0], []).append((p, t))
        self.videos = sorted(by_video)
        self.by_video = by_video
        self.features, self.layout, self.max_video_len = features, layout, max_video_len
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos)

    @skips_unreadable
    def __getitem__(self, index: int) -> dict[str, Any]:
        options = self.by_video[self.videos[index]]
        (vid, start, end, _), words = options[epoch_choice(self.seed, self.epoch, index, len(options))]
        v, vm = segment_window(self.features, vid, start, end, self.max_video_len)
        ids, cm = caption_layout(self.layout, words)
        return {"vfeats": v, "vmask": vm, "caps": ids, "cmask": cm, "index": index}


class CaptionVideos(Dataset):
    """Evaluation: each (video, segment) once, with all its reference captions."""

    def __init__(self, pairs: Sequence[tuple], features: Mapping[str, np.ndarray], *, max_video_len: int = 32):
        _missing_features([p[0] for p in pairs], features, "captioning")
        refs: dict[tuple, list[str]] = {}
        for vid, start, end, text in pairs:
            refs.setdefault((vid, start, end), []).append(text)
        self.keys = list(refs)
        self.references = [refs[k] for k in self.keys]
        self.features, self.max_video_len = features, max_video_len

    def __len__(self) -> int:
        return len(self.keys)

    @skips_unreadable
    def __getitem__(self, index: int) -> dict[str, Any]:
        vid, start, end = self.keys[index]
        v, vm = segment_window(self.features, vid, start, end, self.max_video_len)
        return {"vfeats": v, "vmask": vm, "index": index}


# ---------------------------------------------------------------------------------------------
# action segmentation


@dataclass(frozen=True)
class VideoSegments:
    """A video's labelled segments ``(start_s, end_s, label)``; other times are background 0."""

    video_id: str
    segments: tuple[tuple[float, float, int], ...]


MAX_STEP_ID = 65_535
"""The largest step id COIN.json may use: the head has one output per id (COIN has 778 steps),
so a larger one is a broken file, not a class."""


def _step_id(value: Any) -> Any:
    """COIN writes step ids as digit strings (``"91"``); JSON integers are taken as they are."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


class CoinStep(Record):
    """A labelled segment of COIN.json: step ``id`` (1.., 0 is the background), ``[start, end]``."""

    id: Annotated[int, BeforeValidator(_step_id), Field(ge=1, le=MAX_STEP_ID)]
    segment: Segment
    label: Text


class CoinVideo(Record):
    """A video of COIN.json's ``database``."""

    subset: Identifier
    annotation: list[CoinStep]


def read_coin_database(path: str | Path) -> dict[str, CoinVideo]:
    """COIN.json's ``database``, every video checked against :class:`CoinVideo`; a step id
    named differently in two places is an error naming the second."""
    p = Path(path)
    doc = read_json_document(p)
    if not isinstance(doc, dict) or "database" not in doc:
        raise AnnotationError(f"{p}: expected COIN.json, a JSON object with a 'database' object")
    videos = dict(keyed_records(doc["database"], CoinVideo, f"{p}: database"))
    names: dict[int, str] = {}
    for vid, video in videos.items():
        for i, step in enumerate(video.annotation):
            if names.setdefault(step.id, step.label) != step.label:
                raise AnnotationError(f"{p}: database.{vid!r}: field 'annotation.{i}.label': step id {step.id} is "
                                      f"{names[step.id]!r} elsewhere, got {step.label!r}")
    return videos


def read_coin(path: str | Path, subset: str) -> tuple[list[VideoSegments], int]:
    """COIN's ``COIN.json`` (``{"database": {vid: {"subset", "annotation": [{"id", "segment",
    "label"}]}}}``): the videos of ``subset`` (``training`` / ``testing``) and the number of
    classes, ``1 + max step id`` over the whole file (0 is the background "O", as in MMPT)."""
    db = read_coin_database(path)
    top = max((step.id for video in db.values() for step in video.annotation), default=0)
    videos = [VideoSegments(vid, tuple((s.segment[0], s.segment[1], s.id) for s in db[vid].annotation))
              for vid in sorted(db) if db[vid].subset == subset]
    if not videos:
        raise AnnotationError(f"{path}: no videos in subset {subset!r}")
    return videos, top + 1


def row_labels(segments: Sequence[tuple[float, float, int]], num_rows: int, rate: float) -> np.ndarray:
    """One label per feature row: the segment containing the row's centre time, else 0."""
    centres = (np.arange(num_rows) + 0.5) / rate
    labels = np.zeros(num_rows, dtype=np.int64)
    for start, end, label in segments:
        labels[(centres >= start) & (centres < end)] = label
    return labels


class SegmentationWindows(Dataset):
    """Windows of ``window`` feature rows every ``stride`` rows (the last one ends at the
    video's end), with per-row labels (-100 on padding). Items carry ``video`` (index into
    ``videos``) and ``offset`` (first row) so predictions can be averaged per row."""

    def __init__(self, videos: Sequence[VideoSegments], features: Mapping[str, np.ndarray], *,
                 rate: float = 1.0, window: int = 32, stride: int = 16):
        _missing_features([v.video_id for v in videos], features, "segmentation")
        if window < 1 or stride < 1:
            raise ConfigError(f"segmentation windows need window >= 1 and stride >= 1, got {window}, {stride}")
        self.videos, self.features, self.window = list(videos), features, window
        self.labels = [row_labels(v.segments, _row_count(features, v.video_id), rate) for v in self.videos]
        self.windows: list[tuple[int, int]] = []
        for i, labels in enumerate(self.labels):
            starts = [a for a, _ in window_spans(len(labels), window, stride)] or [0]
            self.windows.extend((i, s) for s in starts)

    def __len__(self) -> int:
        return len(self.windows)

    @skips_unreadable
    def __getitem__(self, index: int) -> dict[str, Any]:
        i, start = self.windows[index]
        vid = self.videos[i].video_id
        v, vm = checked_window(vid, feature_rows(self.features, vid), start, start + self.window, self.window)
        labels = torch.full((self.window,), -100, dtype=torch.long)
        part = self.labels[i][start : start + self.window]
        labels[: len(part)] = torch.from_numpy(part)
        return {"vfeats": v, "vmask": vm, "labels": labels, "video": i, "offset": start}


def _row_count(features: Mapping[str, np.ndarray], video_id: str) -> int:
    """A video's feature rows; 0 for one that cannot be read, whose one window is then skipped
    (and counted) when it is loaded."""
    try:
        return len(feature_rows(features, video_id))
    except UnreadableFeatures:
        return 0


def coin_label_names(annotations: str, num_classes: int) -> list[str]:
    """Class names by id for a segmentation export: COIN.json's step ``label`` of each ``id``
    (any subset), ``background`` for 0, the id itself for ids no step of the file uses."""
    names = {0: "background"}
    for video in read_coin_database(annotations).values():
        for step in video.annotation:
            names.setdefault(step.id, step.label)
    return [names.get(i, str(i)) for i in range(num_classes)]


# ---------------------------------------------------------------------------------------------
# datasets by split (pretraining and retrieval use VideoCLIPSplits as they are)


class VLMQASplits(VideoCLIPSplits):
    """``vlm.mcqa``: retrieval pairs (or ``data.train_mc`` items) for training, multiple-choice
    items for evaluation. Batch sizes count texts: a batch holds ``size // K`` items of K options."""

    data: VLMQADataConfig

    def mc_items(self, split: str) -> MultipleChoiceItems:
        d = self.data
        path = getattr(d, f"{split}_mc")
        if not path:
            raise ConfigError(f"data.{split}_mc: no {split} multiple-choice items given")
        items = read_mc_items(path, getattr(d, f"{split}_mc_format"), getattr(d, f"{split}_mc_split"))
        return MultipleChoiceItems(items, self.features, self.tokenize, self.layout, max_video_len=d.max_video_len)

    def build(self, split: str) -> Dataset:
        if split == "train" and not self.data.train_mc:
            return super().build(split)
        return self.mc_items(split)

    def has_split(self, split: str) -> bool:
        return split != "val" or bool(self.data.val_mc)

    def protocol(self, split: str) -> str:
        d = self.data
        return f"{protocol_name(getattr(d, f'{split}_mc_format'), getattr(d, f'{split}_mc_split'))}-mc"

    def items_per_batch(self, split: str) -> int:
        """Multiple-choice items per batch of ``split``: its batch size over the option count."""
        size = self.data.batch_size if split == "train" else self.data.eval_batch_size
        return max(1, size // len(self.dataset(split).items[0].options))

    def batch_size(self, split: str, *, train: bool) -> int:
        """Evaluation batches hold whole items (``eval_batch_size`` counts texts, K per item)."""
        return super().batch_size(split, train=train) if train else self.items_per_batch(split)

    def train_batch_sampler(self, dataset: Dataset) -> Sampler | None:
        if not self.data.train_mc:
            return super().train_batch_sampler(dataset)
        return BatchSampler(RandomSampler(dataset), self.items_per_batch("train"), drop_last=True)


class VLMCaptionSplits(VideoCLIPSplits):
    """``vlm.captioning``: caption pairs read like retrieval pairs (``data.<split>_pairs`` in
    their formats); evaluation keeps every reference of a video."""

    data: VLMCaptionDataConfig

    def build(self, split: str) -> Dataset:
        d = self.data
        if split != "train":
            return CaptionVideos(self.pairs(split, all_captions=True), self.features, max_video_len=d.max_video_len)
        if not d.train_pairs:
            raise ConfigError("data.train_pairs: vlm.captioning needs (video, caption) pairs")
        return CaptionItems(self.pairs("train", all_captions=d.train_all_captions), self.features, self.tokenize,
                            self.layout, max_video_len=d.max_video_len, seed=self.seed)

    def most_frequent_caption(self) -> str:
        """The baseline: the most frequent caption of the training captions the model learns
        from (lower-cased, ties: first seen)."""
        d = self.data
        pairs = read_eval_pairs(d.train_pairs, d.train_format, d.train_split, all_captions=d.train_all_captions)
        return Counter(p[3].strip().lower() for p in pairs).most_common(1)[0][0]


class VLMSegmentationSplits(DataSplits[VLMSegmentationDataConfig]):
    """``vlm.segmentation``: windows of the COIN subset ``data.<split>_subset``, every
    ``train_stride`` rows for training and ``eval_stride`` rows for evaluation."""

    def __init__(self, data: VLMSegmentationDataConfig, seed: int = 0):
        if not data.features or not data.annotations:
            raise ConfigError("data.features and data.annotations (COIN.json) are required for vlm.segmentation")
        super().__init__(data, seed)

    def build(self, split: str) -> SegmentationWindows:
        d = self.data
        videos, _ = read_coin(d.annotations, getattr(d, f"{split}_subset"))
        return SegmentationWindows(videos, FeatureStore(d.features), rate=feature_rows_per_second(d.features, d.feature_rate),
                                   window=d.window, stride=d.train_stride if split == "train" else d.eval_stride)

    def has_split(self, split: str) -> bool:
        return split != "val" or bool(self.data.val_subset)

    def collate_fn(self, split: str) -> Callable[[Sequence[Any]], dict[str, Any]]:
        """Unreadable windows are listed under ``"skipped"`` (the DataGuard counts them)."""
        return collate_skipping

    def protocol(self, split: str) -> str:
        return f"coin-{getattr(self.data, f'{split}_subset')}"

    def majority_label(self) -> int:
        """The most frequent row label of the training videos (the majority-class baseline)."""
        return int(np.bincount(np.concatenate(self.dataset("train").labels)).argmax())
