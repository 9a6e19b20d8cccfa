"""Plain-text corpora -> fixed-size token blocks for MLM (the VidLanKD student's input).

A flat stream of word-piece ids is cut into non-overlapping blocks of ``block_size`` (126),
ignoring line boundaries; each becomes ``[CLS] block [SEP]``. Formats ``wikitext``,
``wikipedia`` and ``plain`` differ in which lines they keep; ``exclude_ranges`` drops blocks as
the original did. Tokenised streams are cached as ``.npy``. Details and the differences from the
original: docs/vidlankd.md ("Text corpora").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from videolang.data.annotations import AnnotationError
from videolang.errors import ConfigError
from videolang.utils.io import atomic_output

log = logging.getLogger(__name__)

__all__ = ["CorpusFormat", "TokenBlocks", "decode_line", "keep_line", "load_token_stream", "make_blocks", "tokenize_corpus"]

CorpusFormat = Literal["wikitext", "wikipedia", "plain"]
FORMATS = ("wikitext", "wikipedia", "plain")


def keep_line(line: str, fmt: CorpusFormat) -> bool:
    """Whether a corpus line is text to train on (see the module docstring)."""
    text = line.strip()
    if not text:
        return False
    if fmt == "wikitext":
        return not (text.startswith("= ") and text.endswith(" ="))
    if fmt == "wikipedia":
        return len(text.split()) >= 5
    if fmt == "plain":
        return True
    raise ConfigError(f"unknown corpus format {fmt!r}; expected one of {', '.join(FORMATS)}")


def decode_line(raw: bytes, path: Path, lineno: int) -> str:
    """A corpus line as text; bad UTF-8 or a NUL byte is an error naming the file and line."""
    if b"\x00" in raw:
        raise AnnotationError(f"{path}:{lineno}: NUL byte; is this a text file?")
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}:{lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                              f"{exc.start + 1})") from None


def tokenize_corpus(files: Sequence[str | os.PathLike], encode: Callable[[list[str]], list[list[int]]],
                    fmt: CorpusFormat = "plain", *, chunk_lines: int = 10000) -> np.ndarray:
    """The flat int32 token stream of ``files`` (in order). ``encode`` maps a list of lines
    to their id lists without special tokens (a fast tokenizer's batch call)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown corpus format {fmt!r}; expected one of {', '.join(FORMATS)}")
    parts: list[np.ndarray] = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConfigError(f"corpus file not found: {path}")
        buf: list[str] = []
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                line = decode_line(raw, path, lineno)
                if keep_line(line, fmt):
                    buf.append(line.strip())
                if len(buf) >= chunk_lines:
                    parts.extend(np.asarray(ids, dtype=np.int32) for ids in encode(buf))
                    buf = []
        if buf:
            parts.extend(np.asarray(ids, dtype=np.int32) for ids in encode(buf))
    if not parts:
        raise ConfigError(f"no {fmt} text lines in {', '.join(map(str, files))}")
    return np.concatenate(parts)


def _cache_key(files: Sequence[str | os.PathLike], tokenizer_name: str, fmt: str) -> str:
    info = [tokenizer_name, fmt]
    for f in files:
        st = Path(f).stat()
        info.append(f"{Path(f).resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256(json.dumps(info).encode()).hexdigest()[:16]


def load_token_stream(files: Sequence[str | os.PathLike], tokenizer, fmt: CorpusFormat = "plain", *,
                      cache_dir: str | os.PathLike | None = None, tokenizer_name: str = "") -> np.ndarray:
    """:func:`tokenize_corpus` with a HF tokenizer, cached in ``cache_dir`` when given."""
    for f in files:
        if not Path(f).is_file():
            raise ConfigError(f"corpus file not found: {f}")

    def encode(lines: list[str]) -> list[list[int]]:
        return tokenizer(lines, add_special_tokens=False)["input_ids"]

    if cache_dir is None:
        return tokenize_corpus(files, encode, fmt)
    name = tokenizer_name or getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    cache = Path(cache_dir) / f"tokens-{_cache_key(files, f'{name}:{len(tokenizer)}', fmt)}.npy"
    if cache.is_file():
        try:
            return np.load(cache, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # a damaged cache is rebuilt, not trusted
            log.warning("token cache %s unreadable (%s): tokenising again", cache, exc)
    stream = tokenize_corpus(files, encode, fmt)
    with atomic_output(cache, overwrite=True) as tmp, open(tmp, "wb") as fh:
        np.save(fh, stream)
    return stream


def make_blocks(stream: np.ndarray, block_size: int = 126,
                exclude_ranges: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """Start offsets of the full blocks of ``stream`` (the last partial one is dropped);
    a block whose last token index lies in an ``[start, end)`` of ``exclude_ranges`` is dropped."""
    if block_size < 1:
        raise ConfigError(f"block_size must be >= 1, got {block_size}")
    n = len(stream) // block_size
    starts = np.arange(n, dtype=np.int64) * block_size
    ends = starts + block_size - 1
    keep = np.ones(n, dtype=bool)
    for r in exclude_ranges:
        if len(r) != 2 or r[0] >= r[1]:
            raise ConfigError(f"exclude range {list(r)!r}: expected [start, end) with start < end")
        keep &= ~((ends >= r[0]) & (ends < r[1]))
    return starts[keep]


class TokenBlocks(Dataset):
    """``[CLS] block [SEP]`` id tensors (length ``block_size + 2``) of a token stream."""

    def __init__(self, stream: np.ndarray, cls_id: int, sep_id: int, block_size: int = 126,
                 exclude_ranges: Sequence[Sequence[int]] = ()):
        self.stream = np.asarray(stream, dtype=np.int64)
        self.starts = make_blocks(self.stream, block_size, exclude_ranges)
        if len(self.starts) == 0:
            raise ConfigError(f"the corpus has {len(self.stream)} tokens: not one block of {block_size}")
        self.block_size, self.cls_id, self.sep_id = block_size, cls_id, sep_id

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> torch.Tensor:
        s = int(self.starts[i])
        block = self.stream[s: s + self.block_size]
        return torch.from_numpy(np.concatenate([[self.cls_id], block, [self.sep_id]]))
