"""Action-anticipation data: segment tables, action text, queries, teacher predictions, clips.

One small dataset abstraction shared by the language-model teacher and the video student:
:func:`read_segments` (synthetic, EPIC-Kitchens-55 or EGTEA Gaze+ layouts),
:class:`ActionVocab`, :func:`build_queries` (history and observation end per segment),
:func:`history_text` (the teacher's input), :class:`TeacherPredictions` (logits and features per
clip uid; a missing uid is an error unless a fallback is asked for) and :class:`ObservedClips`
(the student's feature rows); :class:`AnticipationSplits` serves them to the recipes by
``data.objective``. Details: docs/anticipation.md ("Data").
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import torch
from pydantic import BeforeValidator, Field, model_validator
from torch.utils.data import Dataset

from videolang.data.annotations import (
    AnnotationError,
    Identifier,
    Record,
    Seconds,
    Text,
    read_csv_records,
    read_json_document,
    read_jsonl_records,
    read_text_file,
    validate_record,
)
from videolang.data.datasets import SkippedSample
from videolang.data.splits import DataSplits, LoaderConfig
from videolang.data.stores import FeatureStore, feature_rows_per_second
from videolang.errors import ConfigError, StoreError
from videolang.utils.io import atomic_output

log = logging.getLogger(__name__)
RecordT = TypeVar("RecordT", bound=Record)

__all__ = [
    "ActionVocab",
    "AnticipationDataConfig",
    "AnticipationMLMDataConfig",
    "AnticipationSplits",
    "AnticipationStudentDataConfig",
    "AnticipationTeacherDataConfig",
    "CorpusLines",
    "EgteaAction",
    "EgteaSegment",
    "EpicAction",
    "EpicSegment",
    "HistoryTexts",
    "ManyShotNoun",
    "ManyShotVerb",
    "ObservedClips",
    "Query",
    "Segment",
    "SyntheticAction",
    "SyntheticSegment",
    "TeacherPredictions",
    "TextCollator",
    "build_queries",
    "class_balanced_weights",
    "collate_clips",
    "egtea_action_text",
    "epic_action_text",
    "history_text",
    "history_token_ids",
    "read_action_vocab",
    "read_headerless_csv",
    "read_many_shot_classes",
    "read_queries",
    "read_segments",
    "save_teacher_predictions",
]

Format = Literal["synthetic", "epic55", "egtea"]
FORMATS: tuple[str, ...] = ("synthetic", "epic55", "egtea")
ACTION_SEP = " <a> "
_EPIC_SPLIT_FILES = {"train": "train", "val": "val", "test": "test"}
_EGTEA_SPLIT_FILES = {"train": "training1", "val": "validation1", "test": "test1"}


@dataclass(frozen=True)
class Segment:
    """One annotated action segment; ``start`` / ``end`` in seconds, class ids 0-based."""

    uid: str
    video_id: str
    start: float
    end: float
    verb: int
    noun: int
    action: int
    split: str = ""


@dataclass(frozen=True)
class ActionVocab:
    """Actions with their verb, noun and teacher text (``"verb <v> noun"``)."""

    texts: tuple[str, ...]
    verbs: tuple[int, ...]
    nouns: tuple[int, ...]

    @property
    def num_actions(self) -> int:
        return len(self.texts)

    @property
    def num_verbs(self) -> int:
        return max(self.verbs) + 1

    @property
    def num_nouns(self) -> int:
        return max(self.nouns) + 1

    @property
    def head_sizes(self) -> dict[str, int]:
        """Class counts of the action, verb and noun heads, keyed as the models' configs."""
        return {"num_actions": self.num_actions, "num_verbs": self.num_verbs, "num_nouns": self.num_nouns}

    def action_of(self) -> dict[tuple[int, int], int]:
        return {(v, n): a for a, (v, n) in enumerate(zip(self.verbs, self.nouns, strict=True))}


# --------------------------------------------------------------------------------------------
# action text (the teacher's words for an action)


def egtea_action_text(name: str) -> str:
    """EGTEA action name -> teacher text, as the original: lower-case, ``_`` ->
    ``" <v> "``, ``/`` -> ``" or "``, ``:`` -> ``" "``. ``"Inspect/Read_recipe"`` ->
    ``"inspect or read <v> recipe"``."""
    return name.strip().lower().replace("_", " <v> ").replace("/", " or ").replace(":", " ")


def epic_action_text(key: str) -> str:
    """EPIC-55 action key ``verb_noun`` -> ``"verb <v> noun"`` with the noun's ``:`` parts
    reversed (``"open_bag:plastic"`` -> ``"open <v> plastic bag"``), as the original."""
    verb, _, noun = key.strip().partition("_")
    return f"{verb} <v> {' '.join(reversed(noun.split(':')))}"


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{what}: file not found: {path}")
    return path


# --------------------------------------------------------------------------------------------
# annotation schemas (one per file format; checked on load, nothing coerced)

ClassId = Annotated[int, Field(ge=0)]
"""A 0-based class id (an action, verb or noun)."""
Frame = Annotated[int, Field(ge=1)]
"""A 1-based frame number (EGTEA's RULSTM lists)."""
_STAMP = re.compile(r"^(\d+):([0-5]?\d):([0-5]?\d(?:\.\d+)?)$")


def _seconds_of_stamp(stamp: Any) -> Any:
    """``HH:MM:SS.ff`` -> seconds; other values pass on to be refused by the float check."""
    if not isinstance(stamp, str):
        return stamp
    match = _STAMP.match(stamp.strip())
    if match is None:
        raise ValueError(f"expected a time stamp HH:MM:SS.ff, got {stamp!r}")
    h, m, s = match.groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


Stamp = Annotated[Seconds, BeforeValidator(_seconds_of_stamp)]


def _ordered(start: float, end: float, names: str) -> None:
    if start > end:
        raise ValueError(f"{names}: the segment starts after it ends ({start} > {end})")


class SyntheticAction(Record):
    """An action of ``annotations/vocab.json`` (the synthetic world)."""

    id: ClassId
    verb: Text
    noun: Text
    verb_id: ClassId
    noun_id: ClassId


class EpicAction(Record):
    """A row of EPIC-55's ``rulstm/actions.csv``: ``id,action,verb,noun`` (``action`` = ``verb_noun``)."""

    id: ClassId
    action: Text
    verb: ClassId
    noun: ClassId


class EgteaAction(Record):
    """A row of EGTEA's headerless ``rulstm/actions.csv``: ``id, v_n, Verb_noun``."""

    id: ClassId
    pair: Annotated[str, Field(pattern=r"^\s*\d+_\d+\s*$")]
    name: Text


class SyntheticSegment(Record):
    """A line of ``annotations/segments.jsonl`` (the synthetic world)."""

    uid: int | Identifier
    video_id: Identifier
    start: Seconds
    end: Seconds
    verb_id: ClassId
    noun_id: ClassId
    action_id: ClassId
    split: Identifier

    @model_validator(mode="after")
    def _start_before_end(self) -> SyntheticSegment:
        _ordered(self.start, self.end, "start, end")
        return self


class EpicSegment(Record):
    """A row of ``EPIC_<split>_action_labels.csv`` (the columns this reads)."""

    uid: Identifier
    video_id: Identifier
    start_timestamp: Stamp
    stop_timestamp: Stamp
    verb_class: ClassId
    noun_class: ClassId

    @model_validator(mode="after")
    def _start_before_end(self) -> EpicSegment:
        _ordered(self.start_timestamp, self.stop_timestamp, "start_timestamp, stop_timestamp")
        return self


class EgteaSegment(Record):
    """A row of EGTEA's headerless RULSTM lists: ``uid,video_id,start,end,verb,noun,action``
    (1-based frames, inclusive end)."""

    uid: Identifier
    video_id: Identifier
    start: Frame
    end: Frame
    verb: ClassId
    noun: ClassId
    action: ClassId

    @model_validator(mode="after")
    def _start_before_end(self) -> EgteaSegment:
        _ordered(self.start, self.end, "start, end")
        return self


class ManyShotVerb(Record):
    verb_class: ClassId


class ManyShotNoun(Record):
    noun_class: ClassId


EGTEA_ACTION_COLUMNS = ("id", "pair", "name")
EGTEA_SEGMENT_COLUMNS = ("uid", "video_id", "start", "end", "verb", "noun", "action")


def read_headerless_csv(path: Path, schema: type[RecordT], columns: Sequence[str]) -> list[tuple[int, RecordT]]:
    """``(line, record)`` of a CSV file without a header row whose cells are ``columns`` (white
    space around a cell is dropped, as RULSTM's lists pad them)."""
    reader = csv.reader(io.StringIO(read_text_file(path), newline=""))
    records = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"{path}:{reader.line_num}"
            if len(row) != len(columns):
                raise AnnotationError(f"{where}: {len(row)} cells, expected {len(columns)} "
                                      f"({', '.join(columns)}): a truncated row?")
            cells = dict(zip(columns, (c.strip() for c in row), strict=True))
            records.append((reader.line_num, validate_record(schema, cells, where, text_cells=True)))
    except csv.Error as exc:
        raise AnnotationError(f"{path}:{reader.line_num}: {exc}") from None
    if not records:
        raise AnnotationError(f"{path}: no annotations")
    return records


def _checked_vocab(path: Path, rows: list[tuple[int, int, str, int, int]]) -> ActionVocab:
    """``(line, id, text, verb, noun)`` rows -> the vocabulary: ids 0..N-1, each once, and
    each (verb, noun) pair once."""
    rows = sorted(rows, key=lambda r: r[1])
    for expected, (line, action, *_rest) in enumerate(rows):
        if action != expected:
            raise AnnotationError(f"{path}:{line}: field 'id': action ids must be 0..N-1, each once "
                                  f"(got {action} where {expected} was due)")
    pairs: dict[tuple[int, int], int] = {}
    for line, action, _text, verb, noun in rows:
        if (verb, noun) in pairs:
            raise AnnotationError(f"{path}:{line}: actions {pairs[verb, noun]} and {action} have the same "
                                  f"verb {verb} and noun {noun}")
        pairs[verb, noun] = action
    if not rows:
        raise AnnotationError(f"{path}: no actions")
    return ActionVocab(tuple(r[2] for r in rows), tuple(r[3] for r in rows), tuple(r[4] for r in rows))


def _synthetic_vocab(root: Path) -> ActionVocab:
    path = _need_file(root / "annotations" / "vocab.json", "synthetic action vocabulary")
    doc = read_json_document(path)
    actions = doc.get("actions") if isinstance(doc, dict) else None
    if not isinstance(actions, list):
        raise AnnotationError(f"{path}: expected an object with an 'actions' list")
    rows = []
    for k, value in enumerate(actions):
        a = validate_record(SyntheticAction, value, f"{path}: actions[{k}]")
        rows.append((k, a.id, f"{a.verb} <v> {a.noun}", a.verb_id, a.noun_id))
    return _checked_vocab(path, rows)


def read_action_vocab(fmt: Format, root: str | os.PathLike) -> ActionVocab:
    """The action list of a dataset folder.

    ``synthetic``: the world folder (``annotations/vocab.json``); ``epic55``: the
    EPIC-Kitchens-55 folder (``rulstm/actions.csv``: ``id,action,verb,noun``); ``egtea``: the
    EGTEA folder (``rulstm/actions.csv``, headerless ``id, v_n, Verb_noun``).
    """
    root = Path(root)
    if fmt == "synthetic":
        return _synthetic_vocab(root)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown annotation format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = _need_file(root / "rulstm" / "actions.csv", f"{fmt} actions")
    if fmt == "epic55":
        epic = read_csv_records(path, EpicAction, required_columns=("id", "action", "verb", "noun"))
        return _checked_vocab(path, [(n, a.id, epic_action_text(a.action), a.verb, a.noun) for n, a in epic])
    rows = []
    for n, a in read_headerless_csv(path, EgteaAction, EGTEA_ACTION_COLUMNS):
        verb, noun = (int(x) for x in a.pair.strip().split("_"))
        rows.append((n, a.id, egtea_action_text(a.name), verb, noun))
    return _checked_vocab(path, rows)


# --------------------------------------------------------------------------------------------
# segment tables


def _check_classes(vocab: ActionVocab, where: str, verb: int, noun: int, action: int | None = None) -> None:
    """Refuse class ids outside the vocabulary (and an action whose verb or noun disagrees)."""
    if action is not None:
        if action >= vocab.num_actions:
            raise AnnotationError(f"{where}: field 'action': {action} is not an action id "
                                  f"(0..{vocab.num_actions - 1})")
        if (vocab.verbs[action], vocab.nouns[action]) != (verb, noun):
            raise AnnotationError(f"{where}: action {action} has verb {vocab.verbs[action]} and noun "
                                  f"{vocab.nouns[action]}, the row says {verb} and {noun}")
    if verb >= vocab.num_verbs:
        raise AnnotationError(f"{where}: field 'verb': {verb} is not a verb id (0..{vocab.num_verbs - 1})")
    if noun >= vocab.num_nouns:
        raise AnnotationError(f"{where}: field 'noun': {noun} is not a noun id (0..{vocab.num_nouns - 1})")


def _unique_uids(path: Path, rows: Iterable[tuple[int, str]]) -> None:
    seen: dict[str, int] = {}
    for line, uid in rows:
        if uid in seen:
            raise AnnotationError(f"{path}:{line}: field 'uid': {uid!r} already on line {seen[uid]}")
        seen[uid] = line


def _read_synthetic(root: Path, split: str, vocab: ActionVocab) -> list[Segment]:
    path = _need_file(root / "annotations" / "segments.jsonl", "synthetic segments")
    records = read_jsonl_records(path, SyntheticSegment)
    _unique_uids(path, ((n, str(r.uid)) for n, r in records))
    out = []
    for n, r in records:  # every line is checked, not only those of ``split``
        _check_classes(vocab, f"{path}:{n}", r.verb_id, r.noun_id, r.action_id)
        if r.split == split:
            out.append(Segment(str(r.uid), r.video_id, r.start, r.end, r.verb_id, r.noun_id, r.action_id, split))
    return out


def _read_epic55(root: Path, split: str, vocab: ActionVocab) -> list[Segment]:
    path = _need_file(root / f"EPIC_{_EPIC_SPLIT_FILES[split]}_action_labels.csv", "EPIC-55 labels")
    records = read_csv_records(path, EpicSegment, required_columns=tuple(EpicSegment.model_fields))
    _unique_uids(path, ((n, r.uid) for n, r in records))
    action_of = vocab.action_of()
    out, dropped = [], 0
    for n, r in records:
        _check_classes(vocab, f"{path}:{n}", r.verb_class, r.noun_class)
        action = action_of.get((r.verb_class, r.noun_class))
        if action is None:  # RULSTM keeps only the actions of actions.csv
            dropped += 1
            continue
        out.append(Segment(r.uid, r.video_id, r.start_timestamp, r.stop_timestamp, r.verb_class, r.noun_class,
                           action, split))
    if dropped:
        log.info("%s: %d segments with a (verb, noun) pair outside actions.csv dropped", path, dropped)
    if not out:
        raise AnnotationError(f"{path}: no segment has a (verb, noun) pair of rulstm/actions.csv")
    return out


def _read_egtea(root: Path, split: str, vocab: ActionVocab, fps: float) -> list[Segment]:
    path = _need_file(root / "rulstm" / f"{_EGTEA_SPLIT_FILES[split]}.csv", "EGTEA segment list")
    records = read_headerless_csv(path, EgteaSegment, EGTEA_SEGMENT_COLUMNS)
    _unique_uids(path, ((n, r.uid) for n, r in records))
    out = []
    for n, r in records:
        _check_classes(vocab, f"{path}:{n}", r.verb, r.noun, r.action)
        # 1-based frames, inclusive end
        out.append(Segment(r.uid, r.video_id, (r.start - 1) / fps, r.end / fps, r.verb, r.noun, r.action, split))
    return out


def read_segments(
    fmt: Format, root: str | os.PathLike, split: str, *, vocab: ActionVocab | None = None, fps: float | None = None
) -> list[Segment]:
    """The segments of ``split`` (``train`` / ``val`` / ``test``) of a dataset folder.

    ``fps`` is needed for EGTEA (frame numbers); EPIC-55 uses the timestamps and drops the
    segments whose (verb, noun) is not an action of ``rulstm/actions.csv`` (as RULSTM). Every
    row is validated (:class:`SyntheticSegment`, :class:`EpicSegment`, :class:`EgteaSegment`)
    and its class ids checked against the vocabulary (read from ``root`` when not given).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown annotation format {fmt!r}; use one of {', '.join(FORMATS)}")
    if split not in _EPIC_SPLIT_FILES:
        raise ConfigError(f"unknown split {split!r}; use train, val or test")
    root = Path(root)
    if fmt == "egtea" and (fps is None or not math.isfinite(fps) or fps <= 0):
        raise ConfigError("data.fps: EGTEA's RULSTM lists give frame numbers; set the video frame rate")
    vocab = vocab or read_action_vocab(fmt, root)
    if fmt == "synthetic":
        return _read_synthetic(root, split, vocab)
    if fmt == "epic55":
        return _read_epic55(root, split, vocab)
    return _read_egtea(root, split, vocab, fps)


# --------------------------------------------------------------------------------------------
# anticipation queries


@dataclass(frozen=True)
class Query:
    """Anticipate ``action`` of segment ``uid`` from the video up to ``observe_end`` seconds
    (student) or from the earlier actions ``history`` (teacher)."""

    uid: str
    video_id: str
    observe_end: float
    history: tuple[int, ...]
    action: int
    verb: int
    noun: int


def build_queries(
    segments: Iterable[Segment],
    *,
    anticipation_gap: float = 1.0,
    min_observed: float = 0.0,
    min_history: int = 1,
    context: Iterable[Segment] = (),
) -> list[Query]:
    """One query per segment whose observation is long enough and which has a history.

    The history of a segment is the actions of the segments of the same video that *start
    earlier* (in start order), taken from ``segments`` plus ``context`` (e.g. the training
    segments, for EGTEA's "gappy" history of the original); the observation ends
    ``anticipation_gap`` seconds before the segment starts. Queries keep the order of
    ``segments``.
    """
    segments = list(segments)
    by_video: dict[str, list[Segment]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for s in [*segments, *context]:
        if (s.video_id, s.uid) not in seen:
            seen.add((s.video_id, s.uid))
            by_video[s.video_id].append(s)
    for rows in by_video.values():
        rows.sort(key=lambda s: (s.start, s.end, s.uid))
    out = []
    for s in segments:
        history = tuple(o.action for o in by_video[s.video_id] if o.start < s.start)
        observe_end = s.start - anticipation_gap
        if len(history) < min_history or observe_end < min_observed or observe_end <= 0:
            continue
        out.append(Query(s.uid, s.video_id, observe_end, history, s.action, s.verb, s.noun))
    return out


def history_text(history: Sequence[int], vocab: ActionVocab, hist_len: int) -> str:
    """The teacher's input: the last ``hist_len`` actions as text joined by ``" <a> "``."""
    if hist_len < 1:
        raise ConfigError(f"hist_len must be >= 1, got {hist_len}")
    return ACTION_SEP.join(vocab.texts[a] for a in history[-hist_len:])


# --------------------------------------------------------------------------------------------
# teacher predictions (uid -> logits, pooled feature)

_PRED_FORMAT = "videolang-teacher-predictions"


def save_teacher_predictions(
    path: str | os.PathLike,
    uids: Sequence[str],
    logits: torch.Tensor,
    features: torch.Tensor | None = None,
    *,
    info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write teacher predictions for clips ``uids`` to one safetensors file, atomically.

    Tensors ``logits`` ``(N, A)`` and optionally ``features`` ``(N, D)``; the metadata holds the
    uids (as strings, the original's int/str mismatch cannot happen) and ``info`` (teacher
    config, epoch, split...). A uid may appear once.
    """
    from safetensors.torch import save_file

    uids = [str(u) for u in uids]
    if len(set(uids)) != len(uids):
        raise ConfigError(f"{path}: duplicate clip uids in teacher predictions")
    if logits.dim() != 2 or logits.shape[0] != len(uids):
        raise ValueError(f"logits must be (N={len(uids)}, A), got {tuple(logits.shape)}")
    tensors = {"logits": logits.detach().float().cpu().contiguous()}
    if features is not None:
        if features.shape[0] != len(uids):
            raise ValueError(f"features must have {len(uids)} rows, got {tuple(features.shape)}")
        tensors["features"] = features.detach().float().cpu().contiguous()
    meta = {"format": _PRED_FORMAT, "uids": json.dumps(uids), "info": json.dumps(dict(info or {}), sort_keys=True)}
    with atomic_output(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def _prediction_uids(path: Path, text: str | None) -> list[str]:
    """The uid list of a predictions file's metadata: distinct, non-empty strings."""
    try:
        uids = json.loads(text or "")
    except json.JSONDecodeError:
        uids = None
    if not isinstance(uids, list) or not all(isinstance(u, str) and u for u in uids) or len(set(uids)) != len(uids):
        raise ConfigError(f"{path}: the 'uids' metadata must be a JSON list of distinct clip uids")
    return uids


class TeacherPredictions:
    """Teacher logits / features by clip uid, read from :func:`save_teacher_predictions`.

    :meth:`lookup` raises on a missing uid (naming it and the file) unless
    ``fallback="uniform"``, which gives zero logits (a uniform target) and ``found=False`` so
    that the KD term of that row can be dropped (``kd_kl_loss(..., mask=found)``).
    """

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open
        from safetensors.torch import load_file

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"teacher predictions not found: {self.path}")
        with safe_open(str(self.path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != _PRED_FORMAT:
            raise ConfigError(f"{self.path} is not a teacher-prediction file (no {_PRED_FORMAT!r} metadata)")
        tensors = load_file(str(self.path))
        self.uids: list[str] = _prediction_uids(self.path, meta.get("uids"))
        self.info: dict[str, Any] = json.loads(meta.get("info", "{}"))
        self.logits: torch.Tensor = tensors["logits"]
        self.features: torch.Tensor | None = tensors.get("features")
        for name, table in (("logits", self.logits), ("features", self.features)):
            if table is not None and (table.dim() != 2 or table.shape[0] != len(self.uids)):
                raise ConfigError(f"{self.path}: {name} of shape {tuple(table.shape)} for {len(self.uids)} uids")
            if table is not None and not bool(torch.isfinite(table).all()):
                raise ConfigError(f"{self.path}: the teacher's {name} hold NaN or infinite values")
        self.row = {u: i for i, u in enumerate(self.uids)}

    def __len__(self) -> int:
        return len(self.uids)

    def __contains__(self, uid: object) -> bool:
        return str(uid) in self.row

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def coverage(self, uids: Iterable[str]) -> float:
        """Fraction of ``uids`` with a prediction."""
        uids = [str(u) for u in uids]
        return sum(u in self.row for u in uids) / max(len(uids), 1)

    def lookup(
        self, uids: Sequence[str], *, fallback: Literal["error", "uniform"] = "error", what: str = "logits"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values (B, A or D), found (B,) bool)`` for ``uids``."""
        table = self.logits if what == "logits" else self.features
        if table is None:
            raise ConfigError(f"{self.path} holds no teacher features")
        found = torch.tensor([str(u) in self.row for u in uids], dtype=torch.bool)
        if not bool(found.all()) and fallback != "uniform":
            missing = [str(u) for u, ok in zip(uids, found.tolist(), strict=True) if not ok]
            raise ConfigError(
                f"{self.path}: no teacher prediction for clip uid(s) {', '.join(missing[:10])}"
                f"{' ...' if len(missing) > 10 else ''} (set data.missing_teacher: uniform to fall back)"
            )
        idx = torch.tensor([self.row.get(str(u), 0) for u in uids], dtype=torch.long)
        values = table[idx].clone()
        values[~found] = 0.0
        return values, found


# --------------------------------------------------------------------------------------------
# the student's clips


class ObservedClips(Dataset):
    """Feature rows observed before each query's observation end.

    Row ``j`` of a video's features covers ``[j / rate, (j + 1) / rate)`` seconds; a query
    observes the rows that end by ``observe_end`` (no peeking into the gap), at most the last
    ``max_rows`` of them. Items: ``feats (T, D)`` float32, ``action`` / ``verb`` / ``noun``
    ints, ``index`` (position in ``queries``), plus ``teacher`` (logits) and ``has_teacher``
    when teacher predictions are given. With ``skip_unreadable`` (training runs) a query whose
    rows cannot be read or end after its observation is a :class:`SkippedSample`, else an error.
    """

    def __init__(
        self,
        queries: Sequence[Query],
        features: Any,
        feature_rate: float,
        max_rows: int,
        *,
        teacher: TeacherPredictions | None = None,
        missing_teacher: Literal["error", "uniform"] = "error",
        skip_unreadable: bool = False,
    ):
        if max_rows < 1:
            raise ConfigError(f"data.max_rows must be >= 1, got {max_rows}")
        missing = [q.video_id for q in queries if q.video_id not in features]
        if missing:
            raise ConfigError(f"feature store has no rows for video(s) {', '.join(sorted(set(missing))[:10])}")
        self.queries = list(queries)
        self.features, self.rate, self.max_rows = features, float(feature_rate), int(max_rows)
        self.skip_unreadable = skip_unreadable
        self.teacher_logits = self.teacher_found = None
        if teacher is not None:
            self.teacher_logits, self.teacher_found = teacher.lookup([q.uid for q in self.queries],
                                                                     fallback=missing_teacher)

    def __len__(self) -> int:
        return len(self.queries)

    def observed_rows(self, q: Query, available: int) -> tuple[int, int]:
        end = min(available, math.floor(q.observe_end * self.rate + 1e-6))
        return max(0, end - self.max_rows), end

    def __getitem__(self, i: int) -> dict[str, Any] | SkippedSample:
        q = self.queries[i]
        try:
            rows = np.asarray(self.features[q.video_id])
            lo, hi = self.observed_rows(q, len(rows))
            if hi <= lo:
                raise ConfigError(f"query {q.uid}: no feature row ends before {q.observe_end:.2f} s")
            if not np.isfinite(rows[lo:hi]).all():  # a damaged extraction: NaN would poison the loss
                raise ValueError(f"video {q.video_id}: non-finite feature values")
        except (ConfigError, StoreError, OSError, ValueError, KeyError) as exc:  # e.g. a damaged shard
            if not self.skip_unreadable:
                raise
            log.warning("skipping query %s of video %s: %s", q.uid, q.video_id, exc)
            return SkippedSample(i, q.video_id, str(exc))
        item: dict[str, Any] = {
            "feats": torch.from_numpy(np.array(rows[lo:hi], dtype=np.float32)),
            "action": q.action, "verb": q.verb, "noun": q.noun, "index": i,
        }
        if self.teacher_logits is not None:
            item["teacher"] = self.teacher_logits[i]
            item["has_teacher"] = bool(self.teacher_found[i])
        return item


def collate_clips(batch: Sequence[Mapping[str, Any] | SkippedSample]) -> dict[str, Any]:
    """Right-pad the ``feats`` of a batch to its longest: ``feats (B, T, D)``, ``mask (B, T)``;
    skipped items are listed under ``skipped`` (a batch of skips alone is ``{"skipped": [...]}``)."""
    items = [it for it in batch if not isinstance(it, SkippedSample)]
    out: dict[str, Any] = {"skipped": [it for it in batch if isinstance(it, SkippedSample)]}
    if not items:
        return out
    length = max(it["feats"].shape[0] for it in items)
    dim = items[0]["feats"].shape[1]
    feats = torch.zeros(len(items), length, dim)
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for b, it in enumerate(items):
        n = it["feats"].shape[0]
        feats[b, :n], mask[b, :n] = it["feats"], True
    out.update(feats=feats, mask=mask)
    for key in ("action", "verb", "noun", "index"):
        out[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
    if "teacher" in items[0]:
        out["teacher"] = torch.stack([it["teacher"] for it in items])
        out["has_teacher"] = torch.tensor([it["has_teacher"] for it in items], dtype=torch.bool)
    return out


def history_token_ids(tokenizer: Any, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """``[CLS] pieces [SEP]`` of each history text, the pieces left-truncated so that a row has at
    most ``max_len`` ids: the newest actions are kept, as the original (which could also drop
    [CLS]; we never do). What the anticipation teacher trains on and its model folder reads."""
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pieces = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [[cls, *p[-(max_len - 2):], sep] for p in pieces]


# --------------------------------------------------------------------------------------------
# a run's data: the config, the teacher's text items, the MLM corpus and the splits


@dataclass
class AnticipationDataConfig(LoaderConfig):
    """``data.*`` of the anticipation recipes; each registers a subclass fixing ``objective``."""

    objective: Literal["mlm", "teacher", "student"] = "teacher"  # which items the recipe reads
    format: Format = "synthetic"
    root: str = ""  # world folder / EPIC-55 folder / EGTEA folder
    fps: float | None = None  # EGTEA: frame rate of the frame numbers in the RULSTM lists
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str = "test"
    anticipation_gap: float = 1.0  # seconds between the end of the observation and the action
    min_observed: float = 0.0  # seconds of video a query must observe at least
    history_from_train: bool = False  # EGTEA "gappy" history: train segments as context too
    many_shot_dir: str | None = None  # folder with EPIC_many_shot_{verbs,nouns}.csv
    verb_noun_mode: Literal["marginalize", "decompose"] = "marginalize"  # RULSTM / the repo's verb_action_acc
    absent_classes: Literal["skip", "zero"] = "skip"  # class means: over present classes / all (AVT)
    eval_batch_size: int = 256
    # teacher
    tokenizer: str = "minilm"
    hist_len: int = 5
    max_text_len: int = 128
    mlm_corpus: str | None = None  # anticipation.mlm: action-sequence text, one sequence per line
    # student
    features: str = ""  # feature store (videolang extract-features --out)
    feature_rate: float | None = None  # rows per second; None: from the store's extraction.json
    max_rows: int = 20  # observed rows kept (the newest)
    teacher_predictions: str | None = None  # a teacher export's predictions/<train split>.safetensors
    missing_teacher: Literal["error", "uniform"] = "error"  # uniform: KD term masked for that clip


@dataclass
class AnticipationMLMDataConfig(AnticipationDataConfig):
    """``data.*`` of ``anticipation.mlm``: lines of ``mlm_corpus``."""

    objective: Literal["mlm"] = "mlm"


@dataclass
class AnticipationTeacherDataConfig(AnticipationDataConfig):
    """``data.*`` of ``anticipation.teacher``: history texts of the queries."""

    objective: Literal["teacher"] = "teacher"


@dataclass
class AnticipationStudentDataConfig(AnticipationDataConfig):
    """``data.*`` of ``anticipation.student``: observed feature rows of the queries."""

    objective: Literal["student"] = "student"


def read_queries(d: AnticipationDataConfig, split: str, vocab: ActionVocab) -> list[Query]:
    """The anticipation queries of annotation split ``split`` (see :func:`build_queries`)."""
    if not d.root:
        raise ConfigError("data.root: give the dataset folder (synthetic world, EPIC-55 or EGTEA)")
    segments = read_segments(d.format, d.root, split, vocab=vocab, fps=d.fps)
    context = (read_segments(d.format, d.root, d.train_split, vocab=vocab, fps=d.fps)
               if d.history_from_train and split != d.train_split else [])
    queries = build_queries(segments, anticipation_gap=d.anticipation_gap, min_observed=d.min_observed,
                            context=context)
    if not queries:
        raise ConfigError(f"data.root {d.root}: no anticipation queries in split {split!r} "
                          f"(gap {d.anticipation_gap} s, min_observed {d.min_observed} s)")
    return queries


def read_many_shot_classes(folder: str | os.PathLike, vocab: ActionVocab | None = None) -> tuple[set[int], set[int]]:
    """The many-shot verb and noun ids of ``EPIC_many_shot_{verbs,nouns}.csv`` in ``folder``
    (columns ``verb_class`` / ``noun_class``), checked against ``vocab`` when given."""
    folder = Path(folder)

    def ids(name: str, schema: type[Record], column: str, limit: int | None) -> set[int]:
        path = _need_file(folder / name, "data.many_shot_dir")
        out = set()
        for n, row in read_csv_records(path, schema, required_columns=(column,)):
            value = getattr(row, column)
            if limit is not None and value >= limit:
                raise AnnotationError(f"{path}:{n}: field '{column}': {value} is not a class of the dataset "
                                      f"(0..{limit - 1})")
            out.add(value)
        return out

    return (ids("EPIC_many_shot_verbs.csv", ManyShotVerb, "verb_class", vocab.num_verbs if vocab else None),
            ids("EPIC_many_shot_nouns.csv", ManyShotNoun, "noun_class", vocab.num_nouns if vocab else None))


def class_balanced_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """sklearn's ``'balanced'`` weights ``n / (n_present * count_c)`` for the classes present;
    absent classes get 1 (they never are a target, so their weight does not matter; the
    original's sklearn ``compute_class_weight`` call fails on them instead)."""
    counts = torch.bincount(targets, minlength=num_classes).double()
    present = counts > 0
    weights = torch.ones(num_classes, dtype=torch.float64)
    weights[present] = targets.numel() / (present.sum() * counts[present])
    return weights.float()


class HistoryTexts(Dataset):
    """Teacher items: the history text of each query and its targets."""

    def __init__(self, queries: list[Query], vocab: ActionVocab, hist_len: int):
        self.queries = queries
        self.texts = [history_text(q.history, vocab, hist_len) for q in queries]

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        q = self.queries[i]
        return {"text": self.texts[i], "action": q.action, "verb": q.verb, "noun": q.noun, "index": i}

    def class_weights(self, vocab: ActionVocab) -> dict[str, torch.Tensor]:
        """Balanced cross-entropy weights of the action, verb and noun targets, by head."""
        sizes = {"action": vocab.num_actions, "verb": vocab.num_verbs, "noun": vocab.num_nouns}
        return {head: class_balanced_weights(torch.tensor([getattr(q, head) for q in self.queries]), n)
                for head, n in sizes.items()}


class TextCollator:
    """Tokenises a batch with :func:`history_token_ids` and right-pads it."""

    def __init__(self, tokenizer: Any, max_len: int):
        if max_len < 3:
            raise ConfigError(f"data.max_text_len must be >= 3, got {max_len}")
        self.tok, self.max_len = tokenizer, max_len
        self.pad = tokenizer.pad_token_id or 0

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = history_token_ids(self.tok, [it["text"] for it in items], self.max_len)
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r)
            mask[b, : len(r)] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        for key in ("action", "verb", "noun", "index"):
            if key in items[0]:
                out[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
        return out


class CorpusLines(Dataset):
    """``anticipation.mlm`` items: the non-empty lines of an action-sequence text file
    (``text/action_sequences.txt`` of the synthetic world; Recipe1M action text)."""

    def __init__(self, path: str | os.PathLike):
        p = _need_file(Path(path), "data.mlm_corpus")
        self.lines = [ln.strip() for ln in read_text_file(p).splitlines() if ln.strip()]
        if not self.lines:
            raise ConfigError(f"data.mlm_corpus: {p} has no text")

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"text": self.lines[i]}


class AnticipationSplits(DataSplits[AnticipationDataConfig]):
    """The items of ``data.objective``: corpus lines (``mlm``, training only), history texts
    (``teacher``) or observed feature rows (``student``, with the teacher's predictions on the
    training split). The ``train`` / ``val`` / ``test`` roles read the annotation splits that
    ``data.{train,val,test}_split`` name."""

    def __init__(self, data: AnticipationDataConfig, seed: int = 0):
        super().__init__(data, seed)
        self.vocab = read_action_vocab(data.format, data.root)
        self._text_collator: TextCollator | None = None

    def has_split(self, split: str) -> bool:
        if self.data.objective == "mlm":
            return split == "train"
        return split != "val" or self.data.val_split is not None

    def build(self, split: str) -> Dataset:
        d = self.data
        return self.annotation_split({"train": d.train_split, "val": d.val_split, "test": d.test_split}[split])

    def annotation_split(self, name: str) -> Dataset:
        """The items of annotation split ``name`` (e.g. for a teacher's predictions), uncached."""
        d = self.data
        if d.objective == "mlm":
            if not d.mlm_corpus:
                raise ConfigError("data.mlm_corpus: anticipation.mlm needs an action-sequence text file")
            return CorpusLines(d.mlm_corpus)
        queries = read_queries(d, name, self.vocab)
        if d.objective == "teacher":
            return HistoryTexts(queries, self.vocab, d.hist_len)
        if not d.features:
            raise ConfigError("data.features: the student needs a feature store (videolang extract-features)")
        teacher = None
        if name == d.train_split and d.teacher_predictions:
            teacher = TeacherPredictions(d.teacher_predictions)
            if teacher.num_classes != self.vocab.num_actions:
                raise ConfigError(f"data.teacher_predictions {teacher.path}: {teacher.num_classes} classes, "
                                  f"the dataset has {self.vocab.num_actions} actions")
        return ObservedClips(queries, FeatureStore(d.features), feature_rows_per_second(d.features, d.feature_rate),
                             d.max_rows, teacher=teacher, missing_teacher=d.missing_teacher, skip_unreadable=True)

    def collate_fn(self, split: str) -> Callable[[list[Any]], Any]:
        if self.data.objective == "student":
            return collate_clips
        if self._text_collator is None:  # one tokenizer load for every split
            from videolang.data.text import load_tokenizer

            self._text_collator = TextCollator(load_tokenizer(self.data.tokenizer), self.data.max_text_len)
        return self._text_collator
