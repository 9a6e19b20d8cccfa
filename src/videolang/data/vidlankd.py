"""VidLanKD data: caption windows over timed captions paired with clip features (the
teacher's items), tokenised GLUE examples (fine-tuning), their readers and collate functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from videolang.data.datasets import epoch_choice
from videolang.data.glue import glue_token_ids
from videolang.errors import ConfigError

__all__ = [
    "GlueFeatures",
    "TeacherDataConfig",
    "VideoCaptionWindows",
    "caption_window",
    "collate_glue",
    "collate_teacher",
    "pad_token_ids",
    "read_caption_tracks",
    "read_video_ids",
    "remove_overlap",
]


@dataclass
class TeacherDataConfig:
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
    batch_size: int = 32
    eval_batch_size: int = 128
    num_workers: int = 0


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



def read_video_ids(path: str, what: str) -> list[str]:
    """Video ids from a ``.lst`` (one per line) or a JSON list; ``what`` names the config key."""
    import json

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what}: file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not JSON ({exc})") from None
        if not isinstance(ids, list):
            raise ConfigError(f"{p}: expected a JSON list of video ids")
        return [str(i) for i in ids]
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def read_caption_tracks(path: str) -> dict[str, dict[str, list]]:
    """``{video_id: {"text": [...], "start": [...], "end": [...]}}``, the lists checked to agree."""
    import json

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"data.captions: file not found: {p}")
    data = json.loads(p.read_text(encoding="utf-8"))
    for vid, rec in data.items():
        if not all(k in rec for k in ("text", "start", "end")) or not (
                len(rec["text"]) == len(rec["start"]) == len(rec["end"])):
            raise ConfigError(f"{p}: video {vid!r} needs 'text', 'start', 'end' lists of one length")
    return data


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

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        vid = self.ids[i]
        rec = self.captions[vid]
        start = 0
        if self.random_window and len(rec["text"]) > 1:
            start = epoch_choice(self.seed, self.epoch, i, len(rec["text"]))
        text, last = caption_window(rec["text"], start, self.d.block_size)
        enc = self.tok(text, truncation=True, max_length=self.d.block_size)
        feats = np.asarray(self.features[vid], dtype=np.float32)
        n = len(feats)
        lo = min(math.floor(rec["start"][start] * self.rate), max(n - 1, 0))
        hi = min(max(math.ceil(rec["end"][last] * self.rate), lo + 1), n)
        window = feats[lo:hi]
        if len(window) > self.d.max_video_len:  # evenly subsample, as the original
            window = window[np.linspace(0, len(window) - 1, self.d.max_video_len).round().astype(int)]
        return {"ids": torch.tensor(enc["input_ids"]), "vfeats": torch.from_numpy(np.array(window, dtype=np.float32))}


def pad_token_ids(seqs: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-d id tensors to ``(B, T)`` with ``pad``; returns them and the boolean mask."""
    ids = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad)
    lengths = torch.tensor([len(s) for s in seqs])
    return ids, torch.arange(ids.shape[1])[None] < lengths[:, None]


def collate_teacher(items: list[dict], pad: int) -> dict[str, torch.Tensor]:
    """Pad the texts and feature windows of a batch of :class:`VideoCaptionWindows` items."""
    ids, mask = pad_token_ids([it["ids"] for it in items], pad)
    t = max(len(it["vfeats"]) for it in items)
    feats = torch.zeros(len(items), t, items[0]["vfeats"].shape[1])
    vmask = torch.zeros(len(items), t, dtype=torch.bool)
    for k, it in enumerate(items):
        feats[k, : len(it["vfeats"])] = it["vfeats"]
        vmask[k, : len(it["vfeats"])] = True
    return {"ids": ids, "mask": mask, "vfeats": feats, "vmask": vmask}


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
