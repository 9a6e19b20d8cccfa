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
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from videolang.data.annotations import (
    AnnotationError,
    Record,
    RelativePath,
    Text,
    read_json_document,
    read_text_file,
    validate_record,
)
from videolang.data.stores.lmdb_store import LmdbTokenStore, PackReport, write_token_lmdb
from videolang.errors import StoreError
from videolang.utils.io import atomic_output, mark_complete, output_lock

__all__ = [
    "HEADER_NAME",
    "TokenFileError",
    "TokenHeaderRecord",
    "TokenStore",
    "TokenStoreHeader",
    "VideoEntry",
    "VideoListRow",
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
        """The header of a ``tokens.json`` object, checked (:class:`TokenHeaderRecord`)."""
        if not isinstance(d, dict):
            raise TokenFileError(f"{source}: expected a JSON object (a token store header)")
        d = dict(d)
        if d.pop("format", FORMAT) != FORMAT:
            raise TokenFileError(f"{source}: not a videolang token store header")
        d.pop("version", None)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise TokenFileError(f"{source}: unknown header keys {', '.join(unknown)}")
        try:
            record = validate_record(TokenHeaderRecord, d, source)
        except AnnotationError as exc:
            raise TokenFileError(str(exc)) from None
        return cls(**record.model_dump())


class TokenFileError(StoreError, AnnotationError):
    """A token store's header or a video list that cannot be used (a store error and an
    annotation error alike): the message names the file, line and field."""


_Positive = Annotated[int, Field(gt=0)]


class TokenHeaderRecord(Record):
    """The schema of ``tokens.json`` (the fields of :class:`TokenStoreHeader`), checked strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokenizer: Text
    tokenizer_hash: Text | None
    vocab_size: _Positive
    downsample: _Positive
    fps: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    frame_size: _Positive
    resize: _Positive | None = None
    crop: Literal["top", "center", "bottom"] | None = "center"
    hflip: bool = False
    dtype: Literal["int16"] = "int16"
    classes: list[Text] | None = None
    source: Text = FORMAT
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _grid(self) -> TokenHeaderRecord:
        if self.frame_size % self.downsample:
            raise ValueError(f"frame_size {self.frame_size} is not a multiple of downsample {self.downsample}")
        return self


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
                data = read_json_document(header_file)
            except AnnotationError as exc:
                raise TokenFileError(str(exc)) from None
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

    with output_lock(out_path), atomic_output(out_path, overwrite=overwrite, is_dir=True) as tmp:
        report = write_token_lmdb(checked(), tmp, overwrite=True)
        (tmp / HEADER_NAME).write_text(header.to_json())
        mark_complete(tmp, videos=report.n_packed)
    return PackReport(report.n_packed, report.n_bytes, report.skipped, Path(out_path))


# ---------------------------------------------------------------------------------------------
# videos -> token store


@dataclass(frozen=True)
class VideoEntry:
    """A video to tokenize: its id (the store key), file and integer label (-1: none)."""

    video_id: str
    path: Path
    label: int = -1


class VideoListRow(Record):
    """A line of an MMAction2 / VIMPAC video list: a path inside the video folder and a label
    (-1: none)."""

    path: RelativePath
    label: Annotated[int, Field(ge=-1)] = -1


def read_video_list(list_file: str | os.PathLike, root: str | os.PathLike) -> list[VideoEntry]:
    """MMAction2 / VIMPAC list: one ``relative/path.ext <int label>`` per line; the id is the
    path without its extension (the original's LMDB key). Paths stay inside ``root``; each id once."""
    entries, path = [], Path(list_file)
    if not path.is_file():
        raise TokenFileError(f"video list not found: {path}")
    try:
        text = read_text_file(path)
    except AnnotationError as exc:
        raise TokenFileError(str(exc)) from None
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        if len(parts) > 2:
            raise TokenFileError(f"{where}: {len(parts)} fields, expected 'path [label]'")
        try:
            row = validate_record(VideoListRow, dict(zip(("path", "label"), parts, strict=False)), where,
                                  text_cells=True)
        except AnnotationError as exc:
            raise TokenFileError(str(exc)) from None
        video_id = str(Path(row.path).with_suffix(""))
        if video_id in seen:
            raise TokenFileError(f"{where}: video {video_id!r} already listed on line {seen[video_id]}")
        seen[video_id] = lineno
        entries.append(VideoEntry(video_id, Path(root) / row.path, row.label))
    if not entries:
        raise TokenFileError(f"{path}: no videos listed")
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
