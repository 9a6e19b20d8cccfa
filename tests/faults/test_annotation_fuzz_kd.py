"""Seeded annotation fuzzing of the anticipation, VidLanKD, GLUE, corpus and token-list formats,
through the readers the recipes and commands use: every broken file must be a named
ConfigError (no traceback, no silent acceptance).

Structured files go through the shared fuzzer (:mod:`tests.faults.fuzzing`). Headerless CSVs
(EGTEA's RULSTM lists) are described with their first row as the "header": the fuzzer then
never touches that row and writes it back unchanged, so its cells must be distinct. Line
formats (corpora, id lists, video lists) and the token-store header get their own faults below,
because a cut line of a plain list is another valid list.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tests.faults.fuzzing import BAD_VALUES, Format, FuzzReport, assert_clean, run_fuzz

from videolang.data.anticipation import (
    CorpusLines,
    read_action_vocab,
    read_many_shot_classes,
    read_segments,
)
from videolang.data.corpus import tokenize_corpus
from videolang.data.glue import read_glue
from videolang.data.tokens import TokenStoreHeader, read_video_list
from videolang.data.vidlankd import read_caption_tracks, read_video_ids
from videolang.errors import ConfigError

ACTIONS = [(0, 0, "take", "cup"), (1, 1, "wash", "plate"), (2, 1, "wash", "cup"), (3, 0, "take", "plate")]
NOUN_IDS = {"cup": 0, "plate": 1}
VOCAB_JSON = json.dumps({"actions": [{"id": a, "verb": v, "noun": n, "verb_id": vi, "noun_id": NOUN_IDS[n]}
                                     for a, vi, v, n in ACTIONS]})
SEGMENTS = "".join(json.dumps({"uid": k, "video_id": f"vid{k // 2}", "start": k * 1.0, "end": k + 0.5,
                               "verb_id": ACTIONS[k % 4][1], "noun_id": NOUN_IDS[ACTIONS[k % 4][3]],
                               "action_id": k % 4, "split": "train" if k < 4 else "test"}) + "\n" for k in range(6))
EPIC_ACTIONS = "id,action,verb,noun\n" + "".join(f"{a},{v}_{n},{vi},{NOUN_IDS[n]}\n" for a, vi, v, n in ACTIONS)
EGTEA_ACTIONS = "".join(f"{a},{vi}_{NOUN_IDS[n]},{v.title()}_{n}\n" for a, vi, v, n in ACTIONS)
EPIC_LABELS = ("uid,participant_id,video_id,narration,start_timestamp,stop_timestamp,verb_class,noun_class\n"
               "u0,P01,vidA,take cup,00:00:01.00,00:00:02.50,0,0\n"
               "u1,P01,vidA,wash plate,00:00:02.50,00:00:04.00,1,1\n"
               "u2,P01,vidB,wash cup,00:01:00.00,00:01:01.25,1,0\n")
EGTEA_SEGMENTS = "s0,vidA,2,5,1,0,2\ns1,vidA,6,9,0,1,3\ns2,vidB,1,4,1,1,1\n"  # first row: distinct cells
CAPTIONS = json.dumps({"vidA": {"text": ["take a cup", "wash it"], "start": [0.0, 2.0], "end": [2.0, 4.5]},
                       "vidB": {"text": ["a plate"], "start": [1.0], "end": [3.0]}})
GLUE_FILES = {
    "RTE": ("index\tsentence1\tsentence2\tlabel\n0\ta man runs\tsomeone moves\tentailment\n"
            "1\tit rains\tthe sun shines\tnot_entailment\n"),
    "STS-B": "index\tsentence1\tsentence2\tscore\n0\ta cat\ta small cat\t4.5\n1\ta dog\ta car\t0.25\n",
    "SST-2": "sentence\tlabel\ngood film\t1\ndull plot\t0\n",
}
GLUE_ROLES = {"RTE": {"sentence1": "text", "sentence2": "text", "label": "label"},
              "STS-B": {"sentence1": "text", "sentence2": "text", "score": "float"},
              "SST-2": {"sentence": "text", "label": "label"}}
MARKERS = {"annotations/.keep": b"", "rulstm/.keep": b""}


def _structured_formats() -> list[Format]:
    epic_vocab = {"rulstm/actions.csv": EPIC_ACTIONS.encode(), **MARKERS}
    egtea_vocab = {"rulstm/actions.csv": EGTEA_ACTIONS.encode(), **MARKERS}
    formats = [
        Format("synthetic vocab", {"annotations/vocab.json": VOCAB_JSON},
               lambda p: read_action_vocab("synthetic", p.parents[1]), kind="json-records", records_key="actions",
               roles={"id": "int", "verb": "text", "noun": "text", "verb_id": "int", "noun_id": "int"},
               required=("id", "verb", "noun", "verb_id", "noun_id"), extra_files=MARKERS),
        Format("synthetic segments", {"annotations/segments.jsonl": SEGMENTS},
               lambda p: read_segments("synthetic", p.parents[1], "train"),
               roles={"video_id": "id", "start": "start", "end": "end", "verb_id": "label", "noun_id": "label",
                      "action_id": "label", "split": "id"}, ordered=("start", "end"),
               required=("uid", "video_id", "start", "end", "verb_id", "noun_id", "action_id", "split"),
               extra_files={"annotations/vocab.json": VOCAB_JSON.encode(), **MARKERS}),
        Format("EPIC-55 actions", {"rulstm/actions.csv": EPIC_ACTIONS}, lambda p: read_action_vocab("epic55", p.parents[1]),
               kind="csv", roles={"id": "int", "action": "text", "verb": "int", "noun": "int"},
               required=("id", "action", "verb", "noun"), extra_files=MARKERS),
        Format("EGTEA actions", {"rulstm/actions.csv": EGTEA_ACTIONS}, lambda p: read_action_vocab("egtea", p.parents[1]),
               kind="csv", roles={"0": "int", "0_0": "label", "Take_cup": "text"}, required=("0", "0_0", "Take_cup"),
               extra_files=MARKERS),
        Format("EPIC-55 labels", {"EPIC_train_action_labels.csv": EPIC_LABELS},
               lambda p: read_segments("epic55", p.parent, "train"), kind="csv",
               roles={"uid": "id", "video_id": "id", "start_timestamp": "time", "stop_timestamp": "time",
                      "verb_class": "label", "noun_class": "label"},
               required=("uid", "video_id", "start_timestamp", "stop_timestamp", "verb_class", "noun_class"),
               extra_files=epic_vocab),
        Format("EGTEA segments", {"rulstm/training1.csv": EGTEA_SEGMENTS},
               lambda p: read_segments("egtea", p.parents[1], "train", fps=10.0), kind="csv",
               # RULSTM pads cells with spaces (" vid00000"), so a padded id is valid here: ids are
               # fuzzed by emptying them (``required``)
               roles={"2": "int", "5": "int", "1": "label", "0": "label"},
               ordered=("2", "5"), required=("s0", "vidA", "2", "5", "1", "0"), extra_files=egtea_vocab),
        Format("EPIC many-shot verbs", {"EPIC_many_shot_verbs.csv": "verb_class,verb\n0,take\n1,wash\n"},
               lambda p: read_many_shot_classes(p.parent, read_action_vocab("epic55", p.parent)), kind="csv",
               roles={"verb_class": "label"}, required=("verb_class",),
               extra_files={"EPIC_many_shot_nouns.csv": b"noun_class,noun\n0,cup\n", **epic_vocab}),
        Format("caption tracks", {"captions.json": CAPTIONS}, lambda p: read_caption_tracks(str(p)),
               kind="json-records", keyed=True, roles={"text": "list", "start": "list", "end": "list"},
               required=("text", "start", "end")),
    ]
    for task, text in GLUE_FILES.items():
        formats.append(Format(f"GLUE {task}", {"dev.tsv": text}, lambda p, t=task: read_glue(p.parent, t, "dev"),
                              kind="csv", delimiter="\t", roles=GLUE_ROLES[task],
                              required=tuple(r for r, role in GLUE_ROLES[task].items() if role == "text")))
    return formats


def test_structured_annotation_formats_refuse_every_fault(tmp_path):
    report = run_fuzz(_structured_formats(), cases=900, seed=26, tmp_path=tmp_path)
    assert_clean(report, "kd structured formats")
    assert report.cases == 900 and report.refused == 900


# --------------------------------------------------------------------------------------------
# line formats and the token-store header: faults a reader must see in a list of lines


LINE_FILES: dict[str, tuple[str, str, Callable[[Path], object]]] = {
    "mlm corpus": ("corpus.txt", "take cup <a> wash cup\nwash plate <a> take plate\n", CorpusLines),
    "student corpus": ("wiki.txt", " = Title = \nsome words in a line here\nmore words of text in a line\n",
                       lambda p: tokenize_corpus([p], lambda lines: [[len(w) for w in ln.split()] for ln in lines],
                                                 "wikitext")),
    "video id list": ("train.lst", "vidA\nvidB\nvidC\n", lambda p: read_video_ids(str(p), "data.train_list")),
    "video id JSON": ("train.json", '["vidA", "vidB", "vidC"]', lambda p: read_video_ids(str(p), "data.train_list")),
    "video list": ("list.txt", "cls0/a.mp4 0\ncls1/b.mp4 1\ncls1/c.avi 1\n", lambda p: read_video_list(p, p.parent)),
}
# what each line format must refuse besides bad UTF-8: (name, how to break one line)
LINE_FAULTS: dict[str, list[tuple[str, Callable[[str], str]]]] = {
    "mlm corpus": [("empty", lambda t: " \n\n")],
    "student corpus": [("NUL byte", lambda t: t.replace("some", "so\x00me")), ("headings only", lambda t: " = T = \n")],
    "video id list": [("duplicate", lambda t: t + "vidB\n"), ("control character", lambda t: t.replace("vidB", "vi\x01dB")),
                      ("empty", lambda t: "\n")],
    "video id JSON": [("number", lambda t: t.replace('"vidB"', "7")), ("duplicate", lambda t: t.replace("vidC", "vidA")),
                      ("not a list", lambda t: '{"a": 1}'), ("truncated", lambda t: t[:-3]),
                      ("blank id", lambda t: t.replace("vidB", " "))],
    "video list": [("parent path", lambda t: t.replace("cls1/b.mp4", "../b.mp4")),
                   ("absolute path", lambda t: t.replace("cls1/b.mp4", "/etc/passwd")),
                   ("fractional label", lambda t: t.replace(" 1\n", " 1.5\n", 1)),
                   ("word label", lambda t: t.replace(" 0\n", " zero\n")),
                   ("label below -1", lambda t: t.replace(" 0\n", " -7\n")),
                   ("three fields", lambda t: t.replace(" 0\n", " 30 0\n")),
                   ("duplicate", lambda t: t + "cls0/a.mp4 2\n")],
}
HEADER = {"format": "videolang-tokens", "version": 1, "tokenizer": "vqvae", "tokenizer_hash": "abc123",
          "vocab_size": 512, "downsample": 4, "fps": 8.0, "frame_size": 32, "resize": 40, "crop": "center",
          "hflip": False, "dtype": "int16", "classes": ["a", "b"]}
HEADER_ROLES = {"tokenizer": "text", "vocab_size": "count", "downsample": "count", "frame_size": "count",
                "fps": "float", "resize": "count", "hflip": "int", "classes": "list"}


def _check(report: FuzzReport, label: str, path: Path, read: Callable[[Path], object]) -> None:
    report.cases += 1
    try:
        read(path)
    except ConfigError as exc:
        if path.name in str(exc):
            report.refused += 1
        else:
            report.tracebacks.append(f"{label}: the error does not name the file: {exc}")
    except Exception as exc:  # any other exception is a traceback the user would see
        report.tracebacks.append(f"{label}: {type(exc).__name__}: {exc}")
    else:
        report.accepted.append(label)


def _bad_utf8(text: str, rng: random.Random) -> bytes:
    data = text.encode()
    at = rng.randrange(1, len(data) - 1)
    return data[:at] + rng.choice([b"\xff", b"\xc3(", b"\xe2\x82", b"\x80"]) + data[at:]


def _header_reader(path: Path) -> TokenStoreHeader:
    from videolang.data.annotations import read_json_document

    return TokenStoreHeader.from_dict(read_json_document(path), source=str(path))


def test_line_formats_and_token_header_refuse_every_fault(tmp_path):
    rng, report = random.Random(2026), FuzzReport()
    for n in range(240):
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        if n % 4 == 3:  # the token-store header: one field gets a value of the wrong kind
            header = dict(HEADER)
            field = rng.choice(sorted(HEADER_ROLES))
            optional = field in ("resize", "classes")  # None is valid there
            header[field] = rng.choice([v for v in BAD_VALUES[HEADER_ROLES[field]] if not (optional and v is None)])
            path = folder / "tokens.json"
            text = json.dumps(header)
            path.write_bytes(_bad_utf8(text, rng) if n % 8 == 7 else text.encode())
            _check(report, f"tokens.json {field}={header[field]!r}", path, _header_reader)
            continue
        name = rng.choice(sorted(LINE_FILES))
        file_name, text, read = LINE_FILES[name]
        path = folder / file_name
        faults = [("bad UTF-8", None), *LINE_FAULTS[name]]
        fault, breaker = rng.choice(faults)
        path.write_bytes(_bad_utf8(text, rng) if breaker is None else breaker(text).encode())
        _check(report, f"{name}: {fault}", path, read)
    assert_clean(report, "kd line formats and token header")
    assert report.cases == 240


def test_fuzzed_formats_are_read_when_valid(tmp_path):
    """The examples the fuzzer breaks are valid: a refusal is the fault's doing."""
    for fmt in _structured_formats():
        folder = tmp_path / fmt.name.replace(" ", "_")
        folder.mkdir()
        for extra, content in fmt.extra_files.items():
            (folder / extra).parent.mkdir(parents=True, exist_ok=True)
            (folder / extra).write_bytes(content)
        for name, text in fmt.files.items():
            (folder / name).write_text(text)
        assert fmt.read(folder / next(iter(fmt.files)))
    for name, (file_name, text, read) in LINE_FILES.items():
        (tmp_path / file_name).write_text(text)
        result = read(tmp_path / file_name)
        assert len(result) if not isinstance(result, np.ndarray) else result.size, name
    (tmp_path / "tokens.json").write_text(json.dumps(HEADER))
    assert _header_reader(tmp_path / "tokens.json").grid == (8, 8)
