"""VidLanKD data: caption windows over timed captions paired with clip features (the
teacher's items), corpus blocks (the student's), tokenised GLUE examples (fine-tuning), their
readers, collate functions and the three recipes' splits.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset, RandomSampler, Sampler, SequentialSampler

from videolang.data.annotations import (
    AnnotationError,
    Identifier,
    Record,
    TimedCaptions,
    line_of,
    read_json_text,
    read_text_file,
    validate_record,
)
from videolang.data.corpus import CorpusFormat, TokenBlocks, load_token_stream
from videolang.data.datasets import SkippedSample, epoch_choice
from videolang.data.glue import glue_task_folder, glue_token_ids, read_glue
from videolang.data.splits import DataSplits, LoaderConfig
from videolang.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

__all__ = [
    "GlueDataConfig",
    "GlueFeatures",
    "GlueSplits",
    "StudentDataConfig",
    "StudentSplits",
    "TeacherDataConfig",
    "TeacherSplits",
    "VideoCaptionWindows",
    "caption_window",
    "collate_glue",
    "collate_teacher",
    "mask_for_step",
    "pad_token_ids",
    "read_caption_tracks",
    "read_video_ids",
    "remove_overlap",
]


@dataclass
class TeacherDataConfig(LoaderConfig):
    """``data.*`` of ``vidlankd.teacher``."""

    features: str = ""  # feature store (videolang extract-features); rows = 2D ⊕ 3D features
    feature_rate: float | None = None  # rows per second; None: the store's extraction.json, else 1
    captions: str = ""  # {video_id: {"text": [...], "start": [...], "end": [...]}}
    train_list: str | None = None  # video ids: a .lst (one per line) or a JSON list
    val_list: str | None = None
    tokenizer: str = "minilm"
    block_size: int = 126  # text tokens including [CLS] and [SEP] (the original: 126)
    max_video_len: int = 384
    window: Literal["first", "random"] = "random"
    eval_batch_size: int = 128


@dataclass
class StudentDataConfig(LoaderConfig):
    """``data.*`` of ``vidlankd.student``."""

    train_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)
    format: CorpusFormat = "wikitext"
    tokenizer: str = "minilm"
    block_size: int = 126  # tokens per block, [CLS] and [SEP] added
    exclude_ranges: list[list[int]] = field(default_factory=list)
    cache_dir: str | None = None  # tokenised streams (.npy); None: next to nothing, re-tokenise
    shuffle: bool = True  # the original scripts never shuffle (corpus order)


@dataclass
class GlueDataConfig(LoaderConfig):
    """``data.*`` of ``vidlankd.glue``."""

    task_dir: str = ""  # the task's folder (glue_data/SST-2), or the GLUE root holding it
    task: str = "SST-2"
    tokenizer: str | None = None  # None: the model's tokenizer
    max_seq_length: int = 128
    eval_batch_size: int = 128
    train_split: str = "train"
    eval_split: str = "dev"
    skip_malformed: bool = False


def remove_overlap(text: str, caption: str) -> str:
    """``caption`` without its longest prefix that ``text`` already ends with (ASR captions
    of consecutive segments repeat words across the boundary)."""
    for k in range(min(len(text), len(caption)), 0, -1):
        if text.endswith(caption[:k]):
            return caption[k:]
    return caption


def caption_window(texts: list[str], start: int, max_words: int) -> tuple[str, int]:
    """Captions ``start..`` joined with " . " until at least ``max_words`` words; returns the
    text and the index of the last caption used."""
    out, last = "", start
    for i in range(start, len(texts)):
        piece = remove_overlap(out, texts[i].strip())
        out = f"{out}{piece} . "
        last = i
        if len(out.split()) >= max_words:
            break
    return out.strip(), last


class VideoId(Record):
    """A listed video id."""

    id: Identifier


def _unique_ids(path: Path, ids: list[tuple[int, str]], line: Callable[[int], int]) -> list[str]:
    """The ids in order, each once; ``ids`` are (position, id) and ``line`` turns a position into
    the line an error names (found only for an error)."""
    seen: dict[str, int] = {}
    for position, vid in ids:
        if vid in seen:
            raise AnnotationError(f"{path}:{line(position)}: video id {vid!r} already listed on line "
                                  f"{line(seen[vid])}")
        seen[vid] = position
    return list(seen)


def read_video_ids(path: str, what: str) -> list[str]:
    """Video ids from a ``.lst`` (one per line) or a JSON list of strings; ``what`` names the
    config key. Each id once; no control characters; nothing converted to text."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what}: file not found: {p}")
    if p.suffix != ".json":
        lines = read_text_file(p).splitlines()
        ids = [(n, validate_record(VideoId, {"id": line.strip()}, f"{p}:{n}").id)
               for n, line in enumerate(lines, 1) if line.strip()]
        line = int  # positions are line numbers
    else:
        doc, text = read_json_text(p)
        if not isinstance(doc, list):
            raise AnnotationError(f"{p}: expected a JSON list of video ids, got {type(doc).__name__}")

        def line(k: int) -> int:
            return line_of(text, json.dumps(doc[k]))

        ids = [(k, validate_record(VideoId, {"id": v}, lambda k=k: f"{p}:{line(k)}: item {k}").id)
               for k, v in enumerate(doc)]
    if not ids:
        raise AnnotationError(f"{p}: no video ids ({what})")
    return _unique_ids(p, ids, line)


def read_caption_tracks(path: str) -> dict[str, dict[str, list]]:
    """``{video_id: {"text": [...], "start": [...], "end": [...]}}``, each track checked
    (:class:`~videolang.data.annotations.TimedCaptions`, at least one caption); an error names the file, the line of the video's key and the field."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"data.captions: file not found: {p}")
    data, text = read_json_text(p)
    if not isinstance(data, dict) or not data:
        raise AnnotationError(f"{p}: expected a JSON object of caption tracks by video id")

    def where(vid: str) -> str:  # found only for an error: the search costs a pass over the file
        return f"{p}:{line_of(text, json.dumps(vid))}: video {vid!r}"

    tracks = {}
    for vid, rec in data.items():
        validate_record(VideoId, {"id": vid}, lambda vid=vid: where(vid))
        if not isinstance(rec, dict):
            raise AnnotationError(f"{where(vid)}: expected an object with 'text', 'start', 'end' lists")
        track = validate_record(TimedCaptions, rec, lambda vid=vid: where(vid))
        if not track.text:
            raise AnnotationError(f"{where(vid)}: no captions")
        tracks[vid] = {"text": track.text, "start": track.start, "end": track.end}
    return tracks


class VideoCaptionWindows(Dataset):
    """One (caption window, clip features) pair per video; the window depends on (seed, epoch)."""

    def __init__(self, ids: list[str], captions: dict, features, tok, d: TeacherDataConfig, rate: float,
                 seed: int, random_window: bool):
        self.ids, self.captions, self.features, self.tok, self.d = ids, captions, features, tok, d
        self.rate, self.seed, self.random_window, self.epoch = rate, seed, random_window, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any] | SkippedSample:
        vid = self.ids[i]
        rec = self.captions[vid]
        start = 0
        if self.random_window and len(rec["text"]) > 1:
            start = epoch_choice(self.seed, self.epoch, i, len(rec["text"]))
        text, last = caption_window(rec["text"], start, self.d.block_size)
        enc = self.tok(text, truncation=True, max_length=self.d.block_size)
        try:
            feats = np.asarray(self.features[vid], dtype=np.float32)
        except (StoreError, OSError, ValueError, KeyError) as exc:  # a damaged or vanished shard
            log.warning("skipping video %s (item %d): features unreadable (%s)", vid, i, exc)
            return SkippedSample(i, vid, f"features unreadable: {exc}")
        if feats.ndim != 2 or len(feats) == 0:
            log.warning("skipping video %s (item %d): no feature rows", vid, i)
            return SkippedSample(i, vid, f"features of shape {feats.shape}, expected (rows, dim)")
        if not np.isfinite(feats).all():  # a damaged extraction: NaN would poison the batch's loss
            log.warning("skipping video %s (item %d): non-finite feature values", vid, i)
            return SkippedSample(i, vid, "non-finite feature values")
        n = len(feats)
        lo = min(math.floor(rec["start"][start] * self.rate), n - 1)
        hi = min(max(math.ceil(rec["end"][last] * self.rate), lo + 1), n)
        window = feats[lo:hi]
        if len(window) > self.d.max_video_len:  # evenly subsample, as the original
            window = window[np.linspace(0, len(window) - 1, self.d.max_video_len).round().astype(int)]
        return {"ids": torch.tensor(enc["input_ids"]), "vfeats": torch.from_numpy(np.array(window, dtype=np.float32)),
                "index": i, "video_id": vid}


def mask_for_step(seed: int, step: int, ids: torch.Tensor, tok: Any, attention_mask: torch.Tensor,
                  mlm_probability: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 15% / 80-10-10 corruption of ``ids`` (inputs, labels), seeded by (seed, step) so
    that a resumed run masks alike."""
    from videolang.data.text import mask_tokens

    g = torch.Generator(device=ids.device).manual_seed(seed * 1_000_003 + step)
    return mask_tokens(ids, mask_token_id=tok.mask_token_id, vocab_size=len(tok),
                       special_token_ids=tok.all_special_ids, attention_mask=attention_mask,
                       mlm_probability=mlm_probability, generator=g, min_one_masked=True)


def pad_token_ids(seqs: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-d id tensors to ``(B, T)`` with ``pad``; returns them and the boolean mask."""
    ids = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad)
    lengths = torch.tensor([len(s) for s in seqs])
    return ids, torch.arange(ids.shape[1])[None] < lengths[:, None]


def collate_teacher(batch: list[dict | SkippedSample], pad: int) -> dict[str, Any]:
    """Pad the texts and feature windows of a batch of :class:`VideoCaptionWindows` items;
    skipped items are listed under ``skipped`` (only skips: ``{"skipped": [...]}``)."""
    items = [it for it in batch if not isinstance(it, SkippedSample)]
    out: dict[str, Any] = {"skipped": [it for it in batch if isinstance(it, SkippedSample)]}
    if not items:
        return out
    ids, mask = pad_token_ids([it["ids"] for it in items], pad)
    t = max(len(it["vfeats"]) for it in items)
    feats = torch.zeros(len(items), t, items[0]["vfeats"].shape[1])
    vmask = torch.zeros(len(items), t, dtype=torch.bool)
    for k, it in enumerate(items):
        feats[k, : len(it["vfeats"])] = it["vfeats"]
        vmask[k, : len(it["vfeats"])] = True
    index = torch.tensor([it["index"] for it in items], dtype=torch.long)
    return {**out, "ids": ids, "mask": mask, "vfeats": feats, "vmask": vmask, "index": index,
            "video_id": [it["video_id"] for it in items]}


class GlueFeatures(Dataset):
    """Tokenised GLUE examples (``glue_token_ids``) and their labels (-1 where unlabelled)."""

    def __init__(self, data, tok, max_len: int):
        a = [e.text_a for e in data.examples]
        b = [e.text_b for e in data.examples] if data.task.text_b else None
        self.ids, self.types = glue_token_ids(tok, a, b, max_len)
        dtype = torch.float32 if data.task.is_regression else torch.long
        self.labels = torch.tensor([e.label if e.label is not None else -1 for e in data.examples], dtype=dtype)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"ids": torch.tensor(self.ids[i]), "types": torch.tensor(self.types[i]), "label": self.labels[i]}


def collate_glue(items: list[dict], pad: int) -> dict[str, torch.Tensor]:
    """Pad ids and token types of a batch of :class:`GlueFeatures` items."""
    ids, mask = pad_token_ids([it["ids"] for it in items], pad)
    types, _ = pad_token_ids([it["types"] for it in items], 0)
    return {"ids": ids, "mask": mask, "types": types, "label": torch.stack([it["label"] for it in items])}


def _load_tokenizer(name: str) -> Any:
    from videolang.data.text import load_tokenizer

    return load_tokenizer(name)


class TeacherSplits(DataSplits[TeacherDataConfig]):
    """``vidlankd.teacher``: caption windows of the listed videos (every captioned one without a
    ``train_list``) that have both captions and features; random windows in training."""

    def __init__(self, data: TeacherDataConfig, seed: int = 0):
        super().__init__(data, seed)
        for key in ("features", "captions"):
            if not getattr(data, key):
                raise ConfigError(f"data.{key}: required by vidlankd.teacher")
        self._tok: Any = None

    def tokenizer(self) -> Any:
        if self._tok is None:
            self._tok = _load_tokenizer(self.data.tokenizer)
        return self._tok

    def build(self, split: str) -> VideoCaptionWindows:
        from videolang.data.stores import FeatureStore, feature_rows_per_second

        d = self.data
        if split not in ("train", "val"):
            raise ConfigError(f"vidlankd.teacher has no {split} split (data.train_list, data.val_list)")
        features = FeatureStore(d.features)
        captions = read_caption_tracks(d.captions)
        listed = getattr(d, f"{split}_list")
        if split == "val" and not listed:
            raise ConfigError("data.val_list: no validation videos given")
        ids = read_video_ids(listed, f"data.{split}_list") if listed else sorted(captions)
        kept = [v for v in ids if v in captions and v in features]
        if len(kept) < len(ids):
            missing = sorted(set(ids).difference(kept))
            log.warning("data.%s_list: %d of %d videos have no captions or no features, left out (e.g. %s)",
                        split, len(missing), len(ids), ", ".join(missing[:5]))
        ids = kept
        if not ids:
            raise ConfigError(f"data.{split}_list: no video has both captions ({d.captions}) and features ({d.features})")
        return VideoCaptionWindows(ids, captions, features, self.tokenizer(), d,
                                   feature_rows_per_second(d.features, d.feature_rate), self.seed,
                                   random_window=split == "train" and d.window == "random")

    def has_split(self, split: str) -> bool:
        return split != "val" or bool(self.data.val_list)

    def collate_fn(self, split: str) -> Any:
        return partial(collate_teacher, pad=self.tokenizer().pad_token_id)


class StudentSplits(DataSplits[StudentDataConfig]):
    """``vidlankd.student``: token blocks of the text corpus (``exclude_ranges`` cut from training)."""

    def __init__(self, data: StudentDataConfig, seed: int = 0):
        super().__init__(data, seed)
        if not data.train_files:
            raise ConfigError("data.train_files: vidlankd.student needs a text corpus")

    def build(self, split: str) -> TokenBlocks:
        d = self.data
        if split not in ("train", "val"):
            raise ConfigError(f"vidlankd.student has no {split} split (data.train_files, data.val_files)")
        tok = _load_tokenizer(d.tokenizer)
        files = d.train_files if split == "train" else d.val_files
        stream = load_token_stream(files, tok, d.format, cache_dir=d.cache_dir, tokenizer_name=d.tokenizer)
        return TokenBlocks(stream, tok.cls_token_id, tok.sep_token_id, d.block_size,
                           d.exclude_ranges if split == "train" else ())

    def has_split(self, split: str) -> bool:
        return split != "val" or bool(self.data.val_files)

    def train_batch_sampler(self, dataset: Dataset) -> Sampler | None:
        if self.data.shuffle:
            return None
        # data.shuffle=false: corpus order, as the original scripts
        return BatchSampler(SequentialSampler(dataset), self.data.batch_size,
                            drop_last=len(dataset) > self.data.batch_size)


class GlueSplits(DataSplits[GlueDataConfig]):
    """``vidlankd.glue``: ``data.train_split`` (training) and ``data.eval_split`` (validation) of
    the task as :class:`GlueFeatures`. ``tokenizer_name`` is ``data.tokenizer``; when that is
    None the recipe sets it to its model's tokenizer before the loaders are made."""

    def __init__(self, data: GlueDataConfig, seed: int = 0):
        super().__init__(data, seed)
        if not data.task_dir:
            raise ConfigError("data.task_dir: the GLUE task folder (or the GLUE root) is required")
        self.tokenizer_name: str | None = data.tokenizer
        self._tok: Any = None

    def tokenizer(self) -> Any:
        if self._tok is None:
            if self.tokenizer_name is None:
                raise ConfigError("data.tokenizer: not given, and no model named its tokenizer")
            self._tok = _load_tokenizer(self.tokenizer_name)
        return self._tok

    def build(self, split: str) -> GlueFeatures:
        d = self.data
        name = {"train": d.train_split, "val": d.eval_split}.get(split)
        if name is None:
            raise ConfigError(f"vidlankd.glue has no {split} split (data.train_split, data.eval_split)")
        data = read_glue(glue_task_folder(d.task_dir, d.task), d.task, name, skip_malformed=d.skip_malformed)
        if not data.labelled:
            raise ConfigError(f"{data.path}: split {name!r} has no labels to train or evaluate on")
        if data.skipped:
            log.warning("%s: skipped %d malformed rows", data.path, data.skipped)
        return GlueFeatures(data, self.tokenizer(), d.max_seq_length)

    def collate_fn(self, split: str) -> Any:
        return partial(collate_glue, pad=self.tokenizer().pad_token_id)

    def train_batch_sampler(self, dataset: Dataset) -> Sampler | None:
        # Shuffled batches that keep the last partial one (the engine's default drops it).
        return BatchSampler(RandomSampler(dataset), self.data.batch_size, drop_last=False)
