"""Token stores: per-video grids of frame-tokenizer codes with a self-describing header.

A token store is an LMDB in the original VIMPAC value layout plus ``tokens.json`` (tokenizer id
and fingerprint, vocabulary, downsampling, fps, size, crop, flip). :class:`TokenStore` reads ours
and the original's LMDBs (header parsed from the directory name); ``store[video_id]`` gives the
``(T, h, w)`` int16 codes, ``store.label(video_id)`` the label. Layouts: docs/data.md ("Stores").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videolang.data.stores.lmdb_store import LmdbTokenStore, PackReport, write_token_lmdb
from videolang.errors import StoreError
from videolang.utils.io import atomic_output

__all__ = [
    "HEADER_NAME",
    "TokenStore",
    "TokenStoreHeader",
    "VideoEntry",
    "crop_view",
    "parse_legacy_name",
    "read_video_list",
    "write_token_store",
]

HEADER_NAME = "tokens.json"
FORMAT = "videolang-tokens"
_LEGACY = re.compile(r"^dalle_(?P<dataset>.+?)_(?P<split>train_val|train_test|train|val|test)_fps(?P<fps>\d+)_hflip(?P<hflip>[01])_"
                     r"(?P<resize>\d+)(?P<crop>top|center|bottom)?(?P<size>\d+)$")


@dataclass
class TokenStoreHeader:
    """What the codes of a token store are: tokenizer, sampling and spatial view."""

    tokenizer: str  # tokenizer id, e.g. "vqvae" or "dalle-dvae"
    tokenizer_hash: str | None  # weight fingerprint (None for the original's LMDBs)
    vocab_size: int
    downsample: int
    fps: float  # frames per second the videos were sampled at
    frame_size: int  # pixels of the (square) tokenized frame
    resize: int | None = None  # shorter side before cropping (None: no resize)
    crop: str | None = "center"  # top, center, bottom or None
    hflip: bool = False
    dtype: str = "int16"
    classes: list[str] | None = None
    source: str = FORMAT  # FORMAT, or "vimpac-lmdb" for a parsed original directory
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.frame_size // self.downsample
        return side, side

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": 1, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str) -> TokenStoreHeader:
        d = dict(d)
        if d.pop("format", FORMAT) != FORMAT:
            raise StoreError(f"{source}: not a videolang token store header")
        d.pop("version", None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise StoreError(f"{source}: unknown header keys {', '.join(unknown)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise StoreError(f"{source}: bad header ({e})") from None


def parse_legacy_name(name: str) -> dict[str, Any]:
    """Fields of an original VIMPAC token-LMDB directory name, e.g.
    ``dalle_ucf101_train_val_fps16_hflip1_160top128``."""
    m = _LEGACY.match(name)
    if m is None:
        raise StoreError(f"{name!r} is not a VIMPAC token directory name "
                         "(dalle_{dataset}_{split}_fps{N}_hflip{0|1}_{resize}{crop}{size})")
    g = m.groupdict()
    return {"dataset": g["dataset"], "split": g["split"], "fps": int(g["fps"]), "hflip": g["hflip"] == "1",
            "resize": int(g["resize"]), "crop": g["crop"], "frame_size": int(g["size"])}


class TokenStore:
    """Read-only ``video_id -> (T, h, w) int16 codes`` with a header (see module docstring).

    Safe in DataLoader workers (the LMDB opens lazily per process)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lmdb = LmdbTokenStore(self.path)
        header_file = self.path / HEADER_NAME
        if header_file.is_file():
            try:
                data = json.loads(header_file.read_text())
            except json.JSONDecodeError as e:
                raise StoreError(f"{header_file}: invalid JSON ({e.msg})") from None
            self.header = TokenStoreHeader.from_dict(data, source=str(header_file))
        else:
            legacy = parse_legacy_name(self.path.name)
            self.header = TokenStoreHeader(
                tokenizer="dalle-dvae", tokenizer_hash=None, vocab_size=8192, downsample=8, fps=legacy["fps"],
                frame_size=legacy["frame_size"], resize=legacy["resize"], crop=legacy["crop"], hflip=legacy["hflip"],
                source="vimpac-lmdb", extra={"dataset": legacy["dataset"], "split": legacy["split"]})

    def keys(self) -> list[str]:
        return self._lmdb.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._lmdb)

    def __contains__(self, key: object) -> bool:
        return key in self._lmdb

    def item(self, video_id: str) -> dict[str, Any]:
        """``{"tokens": (T, h, w) array, "label": int}``."""
        return self._lmdb[video_id]

    def __getitem__(self, video_id: str) -> np.ndarray:
        return self.item(video_id)["tokens"]

    def label(self, video_id: str) -> int:
        return self.item(video_id)["label"]

    def close(self) -> None:
        self._lmdb.close()

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r}, tokenizer={self.header.tokenizer}, videos={len(self)})"


def write_token_store(items: Iterable[tuple[str, Any, int]], out_path: str | os.PathLike, header: TokenStoreHeader,
                      *, overwrite: bool = False) -> PackReport:
    """Write ``(video_id, tokens (T, h, w), label)`` items and the header, atomically as one folder.

    Codes must fit the header's vocabulary and grid."""
    h, w = header.grid

    def checked() -> Iterator[tuple[str, Any, int]]:
        for key, tokens, label in items:
            arr = np.asarray(tokens)
            if arr.ndim != 3 or arr.shape[1:] != (h, w):
                raise StoreError(f"tokens of {key!r} have shape {arr.shape}, the header says (T, {h}, {w})")
            if arr.size and (arr.min() < 0 or arr.max() >= header.vocab_size):
                raise StoreError(f"tokens of {key!r} fall outside the vocabulary 0..{header.vocab_size - 1}")
            yield key, arr.astype(np.int16), label

    with atomic_output(out_path, overwrite=overwrite, is_dir=True) as tmp:
        report = write_token_lmdb(checked(), tmp, overwrite=True)
        (tmp / HEADER_NAME).write_text(header.to_json())
    return PackReport(report.n_packed, report.n_bytes, report.skipped, Path(out_path))


# ---------------------------------------------------------------------------------------------
# videos -> token store


@dataclass(frozen=True)
class VideoEntry:
    """A video to tokenize: its id (the store key), file and integer label (-1: none)."""

    video_id: str
    path: Path
    label: int = -1


def read_video_list(list_file: str | os.PathLike, root: str | os.PathLike) -> list[VideoEntry]:
    """MMAction2 / VIMPAC list: one ``relative/path.ext <int label>`` per line; the id is the
    path without its extension (the original's LMDB key)."""
    entries, path = [], Path(list_file)
    if not path.is_file():
        raise StoreError(f"video list not found: {path}")
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            label = int(parts[1]) if len(parts) > 1 else -1
        except ValueError:
            raise StoreError(f"{path}:{lineno}: label {parts[1]!r} is not an integer") from None
        entries.append(VideoEntry(str(Path(parts[0]).with_suffix("")), Path(root) / parts[0], label))
    return entries


def crop_view(frames: Any, size: int, crop: str | None, resize: int | None, hflip: bool) -> Any:
    """(T, 3, H, W) float frames -> the tokenized view: shorter side to ``resize``, a ``size``
    square at ``top`` (top-left), ``center`` or ``bottom`` (bottom-right) as the original's
    ffmpeg crop, optional horizontal flip."""
    from videolang.data.transforms import resize_shorter_side

    if resize is not None:
        frames = resize_shorter_side(frames, resize)
    if crop is not None:
        f = {"top": 0, "center": 1, "bottom": 2}.get(crop)
        if f is None:
            raise StoreError(f"crop must be top, center, bottom or None, got {crop!r}")
        h, w = frames.shape[-2:]
        if min(h, w) < size:
            raise StoreError(f"frames of {h}x{w} are smaller than the crop {size}")
        y, x = int(f * (h - size) / 2), int(f * (w - size) / 2)
        frames = frames[..., y:y + size, x:x + size]
    elif frames.shape[-2:] != (size, size):
        raise StoreError(f"frames are {tuple(frames.shape[-2:])}, not {size}x{size}: pass a crop")
    return frames.flip(-1) if hflip else frames
