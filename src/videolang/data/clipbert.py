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
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from videolang.data.datasets import SkippedSample, VideoFramesDataset, item_generator
from videolang.data.sampling import (
    ClipBertTaskSampling,
    clipbert_task_indices,
    clipbert_task_sampling,
)
from videolang.data.splits import DataSplits, LoaderConfig
from videolang.data.transforms import resize_longer_and_pad, to_float_tchw
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
    "read_jsonl",
    "task_sampling",
]

ClipBertTask = Literal["retrieval", "qa", "mc", "vqa", "pretrain"]
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
    min_num_labels: int = 0  # the original: 1540 (TGIF FrameQA), 1500 (MSRVTT-QA), 3129 (VQA)
    tokenizer: str = "minilm"
    max_text_len: int = 20
    frame_size: int = 448
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


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSONL file; a bad line is a :class:`ConfigError` naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"annotation file not found: {p}")
    rows = []
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{p}:{lineno}: expected a JSON object")
            rows.append(row)
    if not rows:
        raise ConfigError(f"{p}: no annotations")
    return rows


def _field(row: Mapping, names: Sequence[str], where: str) -> Any:
    for name in names:
        if name in row:
            return row[name]
    raise ConfigError(f"{where}: missing field {' / '.join(names)}")


def load_annotations(path: str | os.PathLike, kind: ClipBertTask) -> list[dict]:
    """Read a ClipBERT JSONL file as records with our field names.

    * ``retrieval`` / ``pretrain``: ``{visual, text}`` (``caption``);
    * ``qa``: ``{visual, text, answer, answer_type}`` (``question``, ``answer`` string);
    * ``mc``: ``{visual, texts, answer}``: ``options`` (5 strings), prefixed with
      ``question + " "`` when there is a question (TGIF action / transition), ``answer`` int;
    * ``vqa``: ``{visual, text, labels, answer_type, question_id}`` (``labels`` soft scores,
      empty when absent).

    ``visual`` is the video key (``clip_name``, ``gif_name`` or ``video_id``) or, for
    ``vqa``/``pretrain``, the image key (``file_name`` if present, else ``image_id``,
    ``coco_id`` or ``vg_id``), as a string. A ``captions`` list (the synthetic world's
    ``image_captions.jsonl``) gives one record per caption.
    """
    rows = read_jsonl(path)
    # Images: a COCO-style ``file_name`` (relative to the image root) wins over the id.
    keys = ("file_name", *IMAGE_KEYS) if kind in ("vqa", "pretrain") else VIDEO_KEYS
    out = []
    for i, row in enumerate(rows, 1):
        where = f"{path}:{i}"
        rec: dict[str, Any] = {"visual": str(_field(row, keys, where))}
        if kind in ("retrieval", "pretrain") and isinstance(row.get("captions"), list):
            # One record per caption (our image_captions.jsonl lists several per image).
            out.extend({"visual": rec["visual"], "text": str(c)} for c in row["captions"])
            continue
        if kind in ("retrieval", "pretrain"):
            rec["text"] = str(_field(row, ("caption",), where))
        elif kind == "qa":
            rec.update(text=str(_field(row, ("question",), where)), answer=str(_field(row, ("answer",), where)),
                       answer_type=str(row.get("answer_type", "all")))
        elif kind == "mc":
            options = _field(row, ("options",), where)
            answer = _field(row, ("answer",), where)
            if not isinstance(options, list) or not options or not isinstance(answer, int) \
                    or not 0 <= answer < len(options):
                raise ConfigError(f"{where}: expected a list of options and an integer answer index")
            q = row.get("question")
            rec.update(texts=[choice_text(q, o) for o in options], answer=answer)
        elif kind == "vqa":
            labels = row.get("labels") or {}
            if not isinstance(labels, dict):
                raise ConfigError(f"{where}: labels must be an object {{answer: score}}")
            rec.update(text=str(_field(row, ("question",), where)), labels={str(k): float(v) for k, v in labels.items()},
                       answer_type=str(row.get("answer_type", "all")), question_id=row.get("question_id", i - 1))
        else:
            raise ConfigError(f"unknown annotation kind {kind!r}")
        out.append(rec)
    return out


@dataclass
class AnswerVocab:
    """``ans2label`` of an open-ended QA task. ``num_labels = max(len, min_labels)`` as the
    original (1540 for TGIF FrameQA, 1500 for MSRVTT-QA, 3129 for VQA)."""

    ans2label: dict[str, int]
    min_labels: int = 0

    @classmethod
    def from_file(cls, path: str | os.PathLike, min_labels: int = 0) -> AnswerVocab:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"answer vocabulary not found: {p}")
        data = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
            raise ConfigError(f"{p}: expected a JSON object {{answer: label index}}")
        if sorted(data.values()) != list(range(len(data))):
            raise ConfigError(f"{p}: label indices must be 0..{len(data) - 1} without gaps")
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
    ``video_root``, ``video_store`` (LMDB) or ``image_root`` is used.
    """

    def __init__(self, keys: Sequence[str], *, sampling: ClipBertTaskSampling, train: bool, frame_size: int,
                 video_root: str | None = None, video_store: Mapping[str, bytes] | None = None,
                 image_root: str | None = None, extension: str = ".mp4", antialias: bool = True,
                 compat: bool = False, num_clips: int | None = None, seed: int = 0):
        self.keys = list(keys)
        self.frame_size, self.antialias = frame_size, antialias
        self.image_root = Path(image_root) if image_root else None
        self.videos: VideoFramesDataset | None = None
        if self.image_root is None:
            if video_root is None and video_store is None:
                raise ConfigError("data: give video_root or video_lmdb (videos) or image_root (images)")

            def sampler(meta, generator: torch.Generator) -> np.ndarray:
                return clipbert_task_indices(sampling, meta.num_frames, meta.fps, train=train, num_clips=num_clips,
                                             generator=generator, compat=compat)

            self.videos = VideoFramesDataset([{"video": k} for k in self.keys], sampler, video_root=video_root,
                                             store=video_store, extension=extension, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        if self.videos is not None:
            self.videos.set_epoch(epoch)

    def _image(self, key: str) -> torch.Tensor:
        from PIL import Image

        assert self.image_root is not None
        path = self.image_root / key
        if not path.is_file():
            found = [path.with_name(path.name + ext) for ext in (".jpg", ".png", ".jpeg")]
            found = [p for p in found if p.is_file()]
            if not found:
                raise FileNotFoundError(f"image {key!r} not found in {self.image_root}")
            path = found[0]
        with Image.open(path) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy())[None, None]  # (1, 1, H, W, 3)

    def __call__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | SkippedSample:
        """``(frames (N, T, 3, L, L) float 0-255, pixel_mask (L, L))`` of visual ``index``."""
        if self.videos is None:
            try:
                raw = self._image(self.keys[index])
            except (OSError, FileNotFoundError) as exc:
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
    return f"{question} {option}" if question else str(option)


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
                                antialias=d.antialias, compat=d.compat_sampling, seed=self.seed)
        return make

    def build(self, split: str) -> ClipBertItems:
        d = self.data
        path = getattr(d, f"{split}_file")
        if not path:
            raise ConfigError(f"data.{split}_file: no {split} annotations given")
        train = split == "train"
        return ClipBertItems(load_annotations(path, d.task), d.task, self.text, self._visual_factory(train),
                             vocab=self.vocab, itm_neg_size=d.itm_neg_size, itm_neg_prob=d.itm_neg_prob,
                             eval_visual_only=not train and d.task == "retrieval", seed=self.seed)

    def has_split(self, split: str) -> bool:
        return split != "val" or bool(self.data.val_file)

    def collate_fn(self, split: str) -> Callable[[list[Any]], dict[str, Any]]:
        return partial(collate_clipbert, pad_id=self.text.pad)
