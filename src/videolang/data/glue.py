"""GLUE-format TSV readers: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE.

A task folder holds ``<split>.tsv`` files in the official GLUE layout (what Hugging Face's
``run_glue`` and VidLanKD's ``vlm/run_glue.py`` read); columns are found by header name. Splits
are file stems (``dev`` is ``dev_matched`` for MNLI); a ``<split>_labels.tsv`` beside a test
file supplies its labels. Rows are validated (:class:`GlueText`: non-blank sentences; labels in
the task's label set; STS-B scores finite): a problem is an
:class:`~videolang.data.annotations.AnnotationError` naming file, line and field;
``skip_malformed=True`` drops QQP's truncated rows and rows with a blank sentence. Details: docs/vidlankd.md ("GLUE").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from videolang.data.annotations import (
    AnnotationError,
    Record,
    Text,
    read_text_file,
    validate_record,
)
from videolang.errors import ConfigError

__all__ = ["GLUE_TASKS", "GlueData", "GlueExample", "GlueScore", "GlueTask", "GlueText", "get_task",
           "glue_task_folder", "glue_token_ids", "read_glue"]


@dataclass(frozen=True)
class GlueTask:
    """Where a task's columns are and what its labels and metrics are."""

    name: str  # the GLUE folder name
    text_a: str  # header name of the first sentence
    text_b: str | None  # of the second sentence (pair tasks)
    label: str  # of the label
    labels: tuple[str, ...] | None  # label strings in class-id order; None: regression
    metrics: tuple[str, ...]  # what videolang.metrics.glue reports for it
    has_header: bool = True

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None


GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        # CoLA train/dev: source, label, original label, sentence (no header); test has one.
        GlueTask("CoLA", "sentence", None, "label", ("0", "1"), ("mcc",), has_header=False),
        GlueTask("SST-2", "sentence", None, "label", ("0", "1"), ("accuracy",)),
        GlueTask("MRPC", "#1 String", "#2 String", "Quality", ("0", "1"), ("accuracy", "f1")),
        GlueTask("STS-B", "sentence1", "sentence2", "score", None, ("pearson", "spearman")),
        GlueTask("QQP", "question1", "question2", "is_duplicate", ("0", "1"), ("accuracy", "f1")),
        GlueTask("MNLI", "sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral"),
                 ("accuracy",)),
        GlueTask("QNLI", "question", "sentence", "label", ("entailment", "not_entailment"), ("accuracy",)),
        GlueTask("RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment"), ("accuracy",)),
    )
}
_COLA_COLUMNS = {"label": 1, "sentence": 3}


def get_task(name: str) -> GlueTask:
    """A task by name, case- and dash-insensitive (``sst2``, ``SST-2``, ``sts-b`` ...)."""
    key = name.replace("-", "").replace("_", "").lower()
    for task in GLUE_TASKS.values():
        if task.name.replace("-", "").lower() == key:
            return task
    raise ConfigError(f"unknown GLUE task {name!r}; known: {', '.join(GLUE_TASKS)}")


def glue_task_folder(root: str | os.PathLike, task: str) -> Path:
    """The folder of ``task``'s TSV files: ``root/<task name>`` when ``root`` is the GLUE root
    holding it, else ``root`` itself."""
    folder = Path(root) / get_task(task).name
    return folder if folder.is_dir() else Path(root)


@dataclass(frozen=True)
class GlueExample:
    text_a: str
    text_b: str | None
    label: int | float | None  # class id, regression score, or None (unlabelled test rows)


@dataclass
class GlueData:
    task: GlueTask
    split: str
    path: Path
    examples: list[GlueExample] = field(default_factory=list)
    skipped: int = 0  # malformed rows dropped with skip_malformed

    @property
    def labelled(self) -> bool:
        return bool(self.examples) and all(e.label is not None for e in self.examples)


def _split_file(folder: Path, task: GlueTask, split: str) -> Path:
    stem = "dev_matched" if task.name == "MNLI" and split == "dev" else split
    path = folder / f"{stem}.tsv"
    if not path.is_file():
        have = sorted(p.name for p in folder.glob("*.tsv")) if folder.is_dir() else []
        where = f"files there: {', '.join(have)}" if have else "no .tsv files there"
        raise ConfigError(f"{task.name} split {split!r}: {path} not found ({where})")
    return path


class GlueText(Record):
    """The sentences of a GLUE row: non-blank text (``text_b`` only for pair tasks)."""

    text_a: Text
    text_b: Text | None = None


class GlueScore(Record):
    """A regression target (STS-B): a finite number."""

    label: Annotated[float, Field(allow_inf_nan=False)]


def _read_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in read_text_file(path).splitlines()]


def _parse_label(task: GlueTask, raw: str, where: str) -> int | float:
    raw = raw.strip()
    if task.labels is None:
        return validate_record(GlueScore, {"label": raw}, where, text_cells=True).label
    if raw not in task.labels:
        raise AnnotationError(f"{where}: field 'label': {task.name} label {raw!r} is not one of "
                              f"{', '.join(task.labels)}")
    return task.labels.index(raw)


def _columns(task: GlueTask, header: list[str] | None, path: Path, need_label: bool) -> dict[str, int]:
    if header is None:  # CoLA train/dev
        return dict(_COLA_COLUMNS)
    names = [h.strip() for h in header]
    wanted = [task.text_a] + ([task.text_b] if task.text_b else []) + ([task.label] if need_label else [])
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ConfigError(f"{path}:1: header has no column {', '.join(repr(m) for m in missing)} "
                          f"(expected the GLUE {task.name} layout; header: {', '.join(names)})")
    cols = {w: names.index(w) for w in wanted}
    if task.name == "CoLA":
        cols = {"sentence": cols[task.text_a]}
    return cols


def _test_labels(path: Path, task: GlueTask) -> dict[str, int | float] | None:
    labels_file = path.with_name(f"{path.stem}_labels.tsv")
    if not labels_file.is_file():
        return None
    rows = _read_rows(labels_file)
    if not rows or [c.strip() for c in rows[0][:2]] != ["index", "label"]:
        raise ConfigError(f"{labels_file}:1: expected the header 'index<TAB>label'")
    out = {}
    for lineno, row in enumerate(rows[1:], 2):
        if len(row) < 2:
            raise ConfigError(f"{labels_file}:{lineno}: expected 2 columns, got {len(row)}")
        key = row[0].strip()
        if key in out:
            raise AnnotationError(f"{labels_file}:{lineno}: field 'index': {key!r} appears twice")
        out[key] = _parse_label(task, row[1], f"{labels_file}:{lineno}")
    return out


def read_glue(folder: str | os.PathLike, task: str | GlueTask, split: str = "train", *,
              skip_malformed: bool = False) -> GlueData:
    """Read ``folder/<split>.tsv`` of a GLUE task (``folder`` is the task's own folder, e.g.
    ``glue_data/SST-2``)."""
    task = get_task(task) if isinstance(task, str) else task
    path = _split_file(Path(folder), task, split)
    rows = _read_rows(path)
    headerless = task.name == "CoLA" and not split.startswith("test")
    if not rows or (not headerless and len(rows) < 1):
        raise ConfigError(f"{path}: empty file")
    header = None if headerless else rows[0]
    body = rows if headerless else rows[1:]
    first_line = 1 if headerless else 2
    has_label = headerless or (header is not None and task.label in [h.strip() for h in header])
    extra = None if has_label else _test_labels(path, task)
    index_col = None
    if extra is not None:
        names = [h.strip() for h in header or []]
        if "index" not in names:
            raise ConfigError(f"{path}:1: a test file with a labels file needs an 'index' column")
        index_col = names.index("index")
    cols = _columns(task, header, path, has_label)
    data = GlueData(task, split, path)
    need = max(cols.values()) + 1
    for lineno, row in enumerate(body, first_line):
        if not any(c.strip() for c in row):
            continue  # blank line
        if len(row) < need:
            if skip_malformed:
                data.skipped += 1
                continue
            raise ConfigError(f"{path}:{lineno}: expected at least {need} tab-separated columns, got {len(row)} "
                              "(skip_malformed / --skip-malformed drops such rows)")
        where = f"{path}:{lineno}"
        try:
            text = validate_record(GlueText, {"text_a": row[cols[task.text_a if task.name != "CoLA" else "sentence"]],
                                              "text_b": row[cols[task.text_b]] if task.text_b else None}, where)
        except AnnotationError:
            if not skip_malformed:
                raise
            data.skipped += 1
            continue
        a, b = text.text_a, text.text_b
        if has_label:
            label = _parse_label(task, row[cols["label" if headerless else task.label]], where)
        elif extra is not None:
            key = row[index_col].strip()
            if key not in extra:
                raise ConfigError(f"{where}: index {key!r} has no row in {path.stem}_labels.tsv")
            label = extra[key]
        else:
            label = None
        data.examples.append(GlueExample(a, b, label))
    if not data.examples:
        raise ConfigError(f"{path}: no examples")
    return data


def glue_token_ids(tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None,
                   max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and token types of GLUE inputs, as ``vidlankd.glue`` and its model folders tokenise them: the
    tokenizer's own layout with special tokens, truncated to ``max_length`` in all."""
    texts = list(texts)
    if not texts:
        return [], []
    if pairs is None:
        enc = tokenizer(texts, truncation=True, max_length=max_length)
    else:
        enc = tokenizer(texts, list(pairs), truncation=True, max_length=max_length)
    ids = enc["input_ids"]
    types = enc.get("token_type_ids") or [[0] * len(x) for x in ids]
    return ids, types
