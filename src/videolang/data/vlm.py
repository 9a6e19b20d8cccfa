"""Data of the VLM recipes on per-second feature stores.

Pretraining's masking (:func:`whole_modality_masks`), multiple-choice QA
(:class:`MultipleChoiceItems`: MSR-VTT ``MSR_MC_test.csv`` or our ``mc.jsonl``), captioning
(:class:`CaptionItems` for training, :class:`CaptionVideos` with all references for evaluation)
and action segmentation (COIN's ``COIN.json``, :func:`read_coin`; :class:`SegmentationWindows`),
served by split by the ``*Splits`` classes. Retrieval pairs come from :mod:`videolang.data.videoclip`.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset, RandomSampler, Sampler

from videolang.data.datasets import epoch_choice
from videolang.data.sampling import window_spans
from videolang.data.splits import DataSplits, LoaderConfig
from videolang.data.stores import FeatureStore, feature_rows_per_second
from videolang.data.text import mask_tokens
from videolang.data.videoclip import (
    TextLayout,
    VideoCLIPDataConfig,
    VideoCLIPSplits,
    _video_window,
    protocol_name,
    read_eval_pairs,
)
from videolang.errors import ConfigError, VideolangError

__all__ = [
    "CaptionItems",
    "CaptionVideos",
    "McItem",
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
    "read_mc_items",
    "row_labels",
    "whole_modality_masks",
]

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
    rows = np.concatenate([np.asarray(store[i], dtype=np.float64) for i in ids[::step]])
    return torch.from_numpy(rows.mean(0)).float(), torch.from_numpy(rows.std(0)).float()


# ---------------------------------------------------------------------------------------------
# multiple-choice QA


@dataclass(frozen=True)
class McItem:
    video_id: str
    options: tuple[str, ...]
    answer: int


def read_mc_items(path: str | Path, fmt: Literal["msrvtt", "jsonl"], split: str = "test") -> list[McItem]:
    """Multiple-choice items: ``msrvtt`` reads ``MSR_MC_test.csv`` (every row; MSR-VTT's
    ``msrXXXX`` keys become ``videoXXXX`` as in MMPT, other ids are kept), ``jsonl`` reads
    ``mc.jsonl`` records of ``split``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"multiple-choice file not found: {p}")
    items: list[McItem] = []
    if fmt == "msrvtt":
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            for lineno, row in enumerate(reader, 2):
                try:
                    options = tuple(row[f"a{i}"] for i in range(1, 6))
                    vid = row["vid_key"]
                    answer = int(row["answer"])
                except (KeyError, TypeError, ValueError):
                    raise ConfigError(f"{p}:{lineno}: expected tab-separated columns key vid_key a1..a5 answer") from None
                if vid.startswith("msr"):
                    vid = "video" + vid[3:]
                items.append(McItem(vid, options, answer))
    else:
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    item = McItem(rec["video_id"], tuple(rec["options"]), int(rec["answer"]))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    raise ConfigError(f"{p}:{lineno}: expected JSON with video_id, options, answer ({exc})") from None
                if rec.get("split", split) == split:
                    items.append(item)
    for i, item in enumerate(items):
        if not 0 <= item.answer < len(item.options):
            raise ConfigError(f"{p}: item {i} ({item.video_id}): answer {item.answer} outside its {len(item.options)} options")
    if not items:
        raise ConfigError(f"{p}: no multiple-choice items for split {split!r}")
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

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        v, vm = _video_window(self.features[item.video_id], 0, self.max_video_len, self.max_video_len)
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

    def __getitem__(self, index: int) -> dict[str, Any]:
        options = self.by_video[self.videos[index]]
        (vid, start, end, _), words = options[epoch_choice(self.seed, self.epoch, index, len(options))]
        v, vm = _segment_window(self.features[vid], start, end, self.max_video_len)
        ids, cm = caption_layout(self.layout, words)
        return {"vfeats": v, "vmask": vm, "caps": ids, "cmask": cm, "index": index}


def _segment_window(feats: np.ndarray, start: float, end: float | None, max_len: int):
    lo = math.floor(start)
    hi = len(feats) if end is None else max(math.ceil(end), lo + 1)
    return _video_window(feats, min(lo, max(len(feats) - 1, 0)), hi, max_len)


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

    def __getitem__(self, index: int) -> dict[str, Any]:
        vid, start, end = self.keys[index]
        v, vm = _segment_window(self.features[vid], start, end, self.max_video_len)
        return {"vfeats": v, "vmask": vm, "index": index}


# ---------------------------------------------------------------------------------------------
# action segmentation


@dataclass(frozen=True)
class VideoSegments:
    """A video's labelled segments ``(start_s, end_s, label)``; other times are background 0."""

    video_id: str
    segments: tuple[tuple[float, float, int], ...]


def read_coin(path: str | Path, subset: str) -> tuple[list[VideoSegments], int]:
    """COIN's ``COIN.json`` (``{"database": {vid: {"subset", "annotation": [{"id", "segment",
    "label"}]}}}``): the videos of ``subset`` (``training`` / ``testing``) and the number of
    classes, ``1 + max step id`` over the whole file (0 is the background "O", as in MMPT)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"COIN annotation file not found: {p}")
    try:
        db = json.loads(p.read_text(encoding="utf-8"))["database"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise ConfigError(f"{p}: expected COIN.json with a 'database' object ({exc})") from None
    videos, top = [], 0
    for vid in sorted(db):
        entry = db[vid]
        try:
            segs = tuple((float(a["segment"][0]), float(a["segment"][1]), int(a["id"])) for a in entry["annotation"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"{p}: video {vid}: bad annotation ({exc})") from None
        top = max([top, *(s[2] for s in segs)])
        if entry.get("subset") == subset:
            videos.append(VideoSegments(vid, segs))
    if not videos:
        raise ConfigError(f"{p}: no videos in subset {subset!r}")
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
        self.labels = [row_labels(v.segments, len(features[v.video_id]), rate) for v in self.videos]
        self.windows: list[tuple[int, int]] = []
        for i, labels in enumerate(self.labels):
            starts = [a for a, _ in window_spans(len(labels), window, stride)] or [0]
            self.windows.extend((i, s) for s in starts)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i, start = self.windows[index]
        feats = self.features[self.videos[i].video_id]
        v, vm = _video_window(feats, start, start + self.window, self.window)
        labels = torch.full((self.window,), -100, dtype=torch.long)
        part = self.labels[i][start : start + self.window]
        labels[: len(part)] = torch.from_numpy(part)
        return {"vfeats": v, "vmask": vm, "labels": labels, "video": i, "offset": start}


def coin_label_names(annotations: str, num_classes: int) -> list[str]:
    """Class names by id for a segmentation export: COIN.json's step ``label`` of each ``id``
    (any subset), ``background`` for 0, the id itself where the file names none."""
    names = {0: "background"}
    try:
        db = json.loads(Path(annotations).read_text(encoding="utf-8"))["database"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{annotations}: cannot read COIN.json class names ({exc})") from None
    for entry in db.values():
        for a in entry.get("annotation", []):
            if "label" in a:
                names.setdefault(int(a["id"]), str(a["label"]))
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

    def protocol(self, split: str) -> str:
        return f"coin-{getattr(self.data, f'{split}_subset')}"

    def majority_label(self) -> int:
        """The most frequent row label of the training videos (the majority-class baseline)."""
        return int(np.bincount(np.concatenate(self.dataset("train").labels)).argmax())
