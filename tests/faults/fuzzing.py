"""A seeded annotation fuzzer shared by the per-format fuzz tests.

A format gives valid example files and the role of each field it reads (``time``, ``text``,
``id``, ``label``, ``int`` ...). Every case breaks one thing that must be refused: a wrong type, a
missing field, NaN / infinite / negative times, ``start > end``, empty text, an unknown label,
bad UTF-8 or a truncated record. Each case must end in a :class:`~videolang.errors.ConfigError`
(``AnnotationError`` is one) that names the file; any other exception is a traceback the user
would see, and no exception is a silent acceptance. :func:`run_fuzz` counts both and fails.
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from videolang.errors import ConfigError

Role = Literal["time", "start", "end", "text", "id", "label", "int", "count", "float", "list"]

BAD_VALUES: dict[str, list[Any]] = {
    "time": [-1.0, "3", None, True, [], {"s": 1}, "nan", float("nan"), float("inf")],
    "start": [-0.5, "0", None, False, float("nan")],
    "end": [-2.0, "4", None, float("inf")],
    "text": ["", "   ", 5, None, ["a"], {"t": "x"}, "a\x00b"],
    "id": ["", 7, None, ["v"], " padded", "tab\tid\n"],
    "label": ["__no_such_label__", -1, None, [], 10**9],
    "int": ["1", 1.5, None, True, -(10**12), "many"],
    "count": [-1, "2", 0.5, None],
    "float": ["x", None, True, float("nan")],
    "list": ["notalist", 3, None, {"a": 1}],
}


@dataclass
class Format:
    """One annotation format: valid files (name -> text), how to read one (``read(path)``), and
    the role of each field. ``kind`` says how records sit in a file: ``jsonl`` (one object a
    line), ``csv`` (header row; ``delimiter``), ``json-records`` (a JSON list of objects, or
    an object of objects when ``keyed``), or ``text`` (byte-level faults only)."""

    name: str
    files: dict[str, str]
    read: Callable[[Path], Any]
    roles: dict[str, Role]
    kind: Literal["jsonl", "csv", "json-records", "text"] = "jsonl"
    delimiter: str = ","
    keyed: bool = False
    records_key: str | None = None  # json-records: the key of the list / object of records
    ordered: tuple[str, str] | None = None  # (start, end) fields: start > end must be refused
    required: tuple[str, ...] = ()  # fields whose absence must be refused
    extra_files: dict[str, bytes] = field(default_factory=dict)  # written beside, unchanged


@dataclass
class FuzzReport:
    cases: int = 0
    refused: int = 0
    tracebacks: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)


def _records(fmt: Format, text: str) -> tuple[Any, list[dict]]:
    if fmt.kind == "jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return rows, rows
    if fmt.kind == "csv":
        rows = list(csv.DictReader(io.StringIO(text), delimiter=fmt.delimiter))
        return rows, rows
    doc = json.loads(text)
    body = doc[fmt.records_key] if fmt.records_key else doc
    return doc, list(body.values()) if fmt.keyed else body


def _dump(fmt: Format, doc: Any, original: str) -> str:
    if fmt.kind == "jsonl":
        return "\n".join(json.dumps(r) for r in doc) + "\n"
    if fmt.kind == "csv":
        header = next(csv.reader(io.StringIO(original), delimiter=fmt.delimiter))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header, delimiter=fmt.delimiter, lineterminator="\n")
        writer.writeheader()
        writer.writerows(doc)
        return out.getvalue()
    return json.dumps(doc)


CSV_BAD_VALUES: dict[str, list[str]] = {  # cells are text: values that stay wrong as text
    "time": ["-1", "nan", "inf", "abc", ""], "start": ["-0.5", "nan", ""], "end": ["-2", "inf", ""],
    "text": ["", "   "], "id": ["", " padded"], "label": ["__no_such_label__", ""],
    "int": ["1.5", "many", ""], "count": ["-1", "0.5", ""], "float": ["x", "nan", ""], "list": ["", "[oops"],
}


def _bad_value(role: Role, rng: random.Random, kind: str) -> Any:
    return rng.choice(CSV_BAD_VALUES[role] if kind == "csv" else BAD_VALUES[role])


def _mutate(fmt: Format, text: str, rng: random.Random) -> tuple[bytes, str]:
    """One broken version of ``text`` and what was broken."""
    choices = ["value"] * 6 + ["missing"] * bool(fmt.required) * 2 + ["order"] * bool(fmt.ordered) * 2
    choices += ["utf8", "truncate"]
    if fmt.kind == "text":
        choices = ["utf8", "truncate"]
    action = rng.choice(choices)
    if action == "utf8":
        data = text.encode("utf-8")
        at = rng.randrange(1, max(2, len(data) - 1))
        return data[:at] + b"\xff\xfe" + data[at:], "bad UTF-8"
    if action == "truncate":
        return _truncate(fmt, text, rng)
    doc, records = _records(fmt, text)
    record = rng.choice(records)
    if action == "missing":
        name = rng.choice(fmt.required)
        if fmt.kind == "csv":
            record[name] = ""
        else:
            record.pop(name, None)
        return _dump(fmt, doc, text).encode("utf-8"), f"missing {name}"
    if action == "order":
        start, end = fmt.ordered
        a, b = float(record[start]), float(record[end])
        lo, hi = min(a, b), max(a, b) + 1.0
        record[start], record[end] = (str(hi), str(lo)) if fmt.kind == "csv" else (hi, lo)
        return _dump(fmt, doc, text).encode("utf-8"), f"{start} > {end}"
    name = rng.choice([n for n in fmt.roles if fmt.kind == "csv" or n in record] or list(fmt.roles))
    value = _bad_value(fmt.roles[name], rng, fmt.kind)
    record[name] = value
    return _dump(fmt, doc, text).encode("utf-8"), f"{name}={value!r}"


def _truncate(fmt: Format, text: str, rng: random.Random) -> tuple[bytes, str]:
    """Cut the file inside a record (never at a boundary that leaves a valid shorter file)."""
    data = text.encode("utf-8")
    if fmt.kind in ("jsonl", "csv", "text"):
        lines = data.splitlines(keepends=True)
        line = rng.randrange(1 if fmt.kind == "csv" else 0, len(lines))
        start = sum(len(x) for x in lines[:line])
        body = lines[line].rstrip(b"\r\n")
        if fmt.kind == "csv":  # fewer cells than the header
            cells = body.split(fmt.delimiter.encode())
            cut = fmt.delimiter.encode().join(cells[: max(1, len(cells) - 1 - rng.randrange(len(cells) - 1 or 1))])
            return data[:start] + cut, f"line {line + 1} cut to {len(cut)} bytes"
        cut = rng.randrange(1, max(2, len(body) - 1))
        return data[: start + cut], f"line {line + 1} cut at byte {cut}"
    cut = rng.randrange(1, len(data) - 1)
    return data[:cut], f"cut at byte {cut}"


def record_case(report: FuzzReport, read: Callable[[], Any], label: str, names: tuple[str, ...]) -> None:
    """Run one broken case: a ConfigError naming the file (one of ``names``) counts as refused,
    any other exception as a traceback, no exception as a silent acceptance."""
    report.cases += 1
    try:
        read()
    except ConfigError as exc:
        if any(name in str(exc) for name in names):
            report.refused += 1
        else:
            report.tracebacks.append(f"{label}: the error does not name the file: {exc}")
    except Exception as exc:
        report.tracebacks.append(f"{label}: {type(exc).__name__}: {exc}")
    else:
        report.accepted.append(label)


def run_fuzz(formats: Iterable[Format], cases: int, seed: int, tmp_path: Path) -> FuzzReport:
    """``cases`` broken files over ``formats``; every one must be a named ConfigError."""
    rng, report = random.Random(seed), FuzzReport()
    formats = list(formats)
    for n in range(cases):
        fmt = rng.choice(formats)
        name, text = rng.choice(sorted(fmt.files.items()))
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        for extra, content in fmt.extra_files.items():
            (folder / extra).parent.mkdir(parents=True, exist_ok=True)
            (folder / extra).write_bytes(content)
        for other, other_text in fmt.files.items():
            (folder / other).write_text(other_text, encoding="utf-8")
        broken, what = _mutate(fmt, copy.copy(text), rng)
        path = folder / name
        path.write_bytes(broken)
        record_case(report, functools.partial(fmt.read, path), f"{fmt.name} {name}: {what}", (str(path), name))
    return report


def assert_clean(report: FuzzReport, name: str) -> None:
    """Print the figures (the fault suite's measurements) and fail on any traceback or acceptance."""
    print(f"annotation fuzzer {name}: {report.cases} cases, {report.refused} named errors, "
          f"{len(report.tracebacks)} tracebacks, {len(report.accepted)} silent acceptances")
    problems = report.tracebacks[:10] + [f"accepted: {a}" for a in report.accepted[:10]]
    assert not report.tracebacks and not report.accepted, "\n".join(problems)
