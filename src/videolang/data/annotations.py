"""Annotation files read against a schema: every record is checked on load, and the first problem
is an :class:`AnnotationError` naming the file, the line and the field. Nothing is coerced.

A schema is a pydantic model (subclass :class:`Record`); JSON and JSONL values are validated with
pydantic's strict rules (an int is a float, nothing else converts), CSV cells (always text) with
its number parsing. Shared field types: :data:`Seconds` (finite, >= 0), :data:`Text` (not
empty), :data:`Identifier`, :data:`RelativePath` (stays inside a data root).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from videolang.errors import ConfigError

__all__ = [
    "AnnotationError",
    "Identifier",
    "Record",
    "RelativePath",
    "Seconds",
    "Text",
    "TimedCaptions",
    "check_inside",
    "line_of",
    "read_csv_records",
    "read_json_document",
    "read_json_text",
    "read_jsonl_objects",
    "read_jsonl_records",
    "read_text_file",
    "validate_record",
]

RecordT = TypeVar("RecordT", bound=BaseModel)


class AnnotationError(ConfigError):
    """An annotation file that cannot be used: the message is ``file:line: field 'x': problem``."""


class Record(BaseModel):
    """Base of the annotation schemas: unknown fields are allowed (annotation files carry more
    than a method reads) and kept out of the model; declared fields are checked strictly."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _no_control(text: str) -> str:
    if any(ord(c) < 32 and c not in "\t" for c in text):
        raise ValueError("contains a control character")
    return text


def _relative(path: str) -> str:
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":") or ".." in parts:
        raise ValueError(f"must be a path inside the data folder (no '..', not absolute), got {path!r}")
    return path


Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A time in seconds: finite and not negative."""
Text = Annotated[str, StringConstraints(min_length=1, strip_whitespace=False), AfterValidator(_no_control),
                 Field(pattern=r"\S")]
"""Text that has something besides white space in it, and no control characters."""
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_no_control),
                       Field(pattern=r"^\S(.*\S)?$")]
"""A video or item id: not empty, no leading / trailing white space, no control characters."""
RelativePath = Annotated[str, StringConstraints(min_length=1), AfterValidator(_relative)]
"""A file path relative to a data folder: never absolute, never through ``..``."""


class TimedCaptions(Record):
    """One video of HowTo100M's ``raw_caption.json`` (VideoCLIP, VLM and VidLanKD read it):
    parallel lists, one entry per caption, each caption starting no later than it ends."""

    start: list[Seconds]
    end: list[Seconds]
    text: list[Text]

    @model_validator(mode="after")
    def _aligned(self) -> TimedCaptions:
        if not len(self.start) == len(self.end) == len(self.text):
            raise ValueError(f"start, end and text have {len(self.start)}, {len(self.end)} and {len(self.text)} "
                             "entries (one each per caption)")
        for i, (s, e) in enumerate(zip(self.start, self.end, strict=True)):
            if s > e:
                raise ValueError(f"start[{i}] = {s} is after end[{i}] = {e}")
        return self


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    shown = "" if error["type"] == "missing" else f", got {value!r}"[:120]
    return f"field '{where}': {message}{shown}" if where else f"{message}{shown}"


def validate_record(schema: type[RecordT], data: Any, where: str | Callable[[], str], *,
                    text_cells: bool = False) -> RecordT:
    """``data`` checked against ``schema``; ``where`` (``file:line``, or a function giving it, called
    only on an error: finding a line can cost a search) starts the error message.
    ``text_cells``: the values are CSV text, so numbers are parsed from strings."""
    try:
        if text_cells:
            return schema.model_validate(data)
        return schema.model_validate(data, strict=True)
    except pydantic.ValidationError as exc:
        place = where() if callable(where) else where
        raise AnnotationError(f"{place}: {_describe(exc.errors()[0])}") from None


def read_text_file(path: Path) -> str:
    """A text file decoded as UTF-8 (a BOM dropped); a missing file or bad bytes is an
    :class:`AnnotationError` naming the file and the line."""
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise AnnotationError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x})") from None


def _json_value(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        line = f":{exc.lineno}" if "\n" in text else ""
        raise AnnotationError(f"{where}{line}: not valid JSON ({exc.msg}, column {exc.colno}): "
                              "a truncated or hand-edited file?") from None
    except ValueError as exc:
        raise AnnotationError(f"{where}: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json_document(path: str | os.PathLike) -> Any:
    """A whole JSON file (an object or a list) after its syntax and encoding are checked; the
    caller validates its parts with :func:`validate_record` (naming the key it took them from)."""
    return read_json_text(path)[0]


def read_json_text(path: str | os.PathLike) -> tuple[Any, str]:
    """:func:`read_json_document` and the file's text, read once: errors can then name the line
    of a key or item (:func:`line_of`)."""
    p = Path(path)
    text = read_text_file(p)
    return _json_value(text, os.fspath(p)), text


def line_of(text: str, needle: str) -> int:
    """The line of ``text`` where ``needle`` first occurs (1 if nowhere, e.g. a key written with
    escapes), for error messages."""
    at = text.find(needle)
    return text.count("\n", 0, at) + 1 if at >= 0 else 1


def _jsonl_lines(path: Path) -> Iterator[tuple[int, Any]]:
    for lineno, line in enumerate(read_text_file(path).splitlines(), 1):
        if line.strip():
            yield lineno, _json_value(line, f"{path}:{lineno}")


def read_jsonl_objects(path: str | os.PathLike, *, allow_empty: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """``(line, object)`` of every non-blank line of a JSONL file (syntax and encoding checked)."""
    p = Path(path)
    objects = []
    for lineno, value in _jsonl_lines(p):
        if not isinstance(value, dict):
            raise AnnotationError(f"{p}:{lineno}: expected a JSON object, got {type(value).__name__}")
        objects.append((lineno, value))
    if not objects and not allow_empty:
        raise AnnotationError(f"{p}: no annotations")
    return objects


def read_jsonl_records(path: str | os.PathLike, schema: type[RecordT], *, allow_empty: bool = False
                       ) -> list[tuple[int, RecordT]]:
    """``(line, record)`` of every non-blank line of a JSONL file, each validated."""
    p = Path(path)
    return [(lineno, validate_record(schema, value, f"{p}:{lineno}"))
            for lineno, value in read_jsonl_objects(p, allow_empty=allow_empty)]


def read_csv_records(path: str | os.PathLike, schema: type[RecordT], *, delimiter: str = ",",
                     required_columns: Sequence[str] = (), allow_empty: bool = False) -> list[tuple[int, RecordT]]:
    """``(line, record)`` of every data row of a CSV file with a header row, each validated; a
    short or long row (a truncated file) is an error naming its line."""
    p = Path(path)
    reader = csv.reader(io.StringIO(read_text_file(p), newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise AnnotationError(f"{p}: empty file (expected a header row)") from None
    except csv.Error as exc:
        raise AnnotationError(f"{p}:1: {exc}") from None
    missing = [c for c in required_columns if c not in header]
    if missing:
        raise AnnotationError(f"{p}:1: missing column {missing[0]!r} (columns: {', '.join(header)})")
    records = []
    try:
        for row in reader:
            lineno = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise AnnotationError(f"{p}:{lineno}: {len(row)} cells, the header has {len(header)} "
                                      "(a truncated or mis-quoted row?)")
            records.append((lineno, validate_record(schema, dict(zip(header, row, strict=True)), f"{p}:{lineno}",
                                                    text_cells=True)))
    except csv.Error as exc:
        raise AnnotationError(f"{p}:{reader.line_num}: {exc}") from None
    if not records and not allow_empty:
        raise AnnotationError(f"{p}: no annotations")
    return records


def check_inside(root: str | os.PathLike, relative: str, where: str) -> Path:
    """``root / relative`` after checking that it stays inside ``root`` once links are resolved
    (an annotation may not point at a file elsewhere on the machine)."""
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise AnnotationError(f"{where}: {relative!r} leads outside the data folder {base}")
    return base / relative
