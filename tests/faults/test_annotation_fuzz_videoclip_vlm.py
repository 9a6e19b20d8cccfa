"""The seeded annotation fuzzer over every format the VideoCLIP and VLM recipes read: HowTo100M's
raw_caption.json and video lists, MSR-VTT (CSV, JSON, multiple choice), YouCook2, COIN, our
captions.jsonl and mc.jsonl. Each case goes through the reader the recipe's splits call; every
one must be a named AnnotationError (0 tracebacks, 0 silent acceptances).

The shared fuzzer breaks whole fields of a record; :func:`run_nested_fuzz` also breaks one
element inside a record's lists (a caption's start, a segment's end, a step id), where the
key-path errors (``raw_caption.json: 'vid1': field 'start.2'``) come from.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.faults.fuzzing import BAD_VALUES, Format, FuzzReport, assert_clean, record_case, run_fuzz

from videolang.data.annotations import AnnotationError
from videolang.data.videoclip import read_eval_pairs, read_pretraining_videos
from videolang.data.vlm import coin_label_names, read_coin, read_mc_items

VIDEOS = ["video0001", "video0002", "video0003"]
RAW_CAPTIONS = {v: {"start": [0.0, 2.5, 6.0], "end": [2.0, 5.0, 9.5], "text": ["red ball", "a blue box", "it grows"]}
                for v in VIDEOS}
TRAIN_LIST = "".join(f"{v}\n" for v in VIDEOS)
MSRVTT_CSV = "key,vid_key,video_id,sentence\n" + "".join(f"ret{i},{v},{v},a man is cooking {i}\n"
                                                          for i, v in enumerate(VIDEOS))
MSRVTT_JSON = {"videos": [{"video_id": v, "split": "test", "category": 3} for v in VIDEOS],
               "sentences": [{"video_id": v, "caption": f"caption {i}", "sen_id": i} for i, v in enumerate(VIDEOS)]}
YOUCOOK2 = {"database": {v: {"subset": "validation", "duration": 20.0, "annotations": [
    {"id": 0, "segment": [1.0, 4.0], "sentence": "cut the onion"},
    {"id": 1, "segment": [4.5, 9.0], "sentence": "fry it"}]} for v in VIDEOS}}
CAPTIONS_JSONL = "".join(json.dumps({"video_id": v, "caption": f"a dog runs {i}", "split": "val"}) + "\n"
                         for i, v in enumerate(VIDEOS))
MC_CSV = "key\tvid_key\ta1\ta2\ta3\ta4\ta5\tanswer\n" + "".join(
    f"mc{i}\tmsr{7000 + i}\tone\ttwo\tthree\tfour\tfive\t{i}\n" for i in range(3))
MC_JSONL = "".join(json.dumps({"video_id": v, "options": ["yes", "no", "maybe"], "answer": i, "split": "test"}) + "\n"
                   for i, v in enumerate(VIDEOS))
COIN = {"database": {v: {"subset": "training", "annotation": [
    {"id": "3", "segment": [0.0, 2.0], "label": "pour water"},
    {"id": "7", "segment": [2.0, 5.5], "label": "stir"}]} for v in VIDEOS}}


def _read_coin(path: Path) -> Any:
    videos, num_classes = read_coin(path, "training")
    return videos, coin_label_names(str(path), num_classes)


def _formats() -> list[Format]:
    raw = json.dumps(RAW_CAPTIONS)
    mc_roles = {"vid_key": "id", **{f"a{i}": "text" for i in range(1, 6)}}
    return [
        Format("raw_caption", {"raw_caption.json": raw}, lambda p: read_pretraining_videos(p.parent / "train.lst", p),
               {"start": "list", "end": "list", "text": "list"}, kind="json-records", keyed=True,
               required=("start", "end", "text"), extra_files={"train.lst": TRAIN_LIST.encode()}),
        Format("video list", {"train.lst": TRAIN_LIST}, lambda p: read_pretraining_videos(p, p.parent / "raw_caption.json"),
               {}, kind="text", extra_files={"raw_caption.json": raw.encode()}),
        Format("msrvtt csv", {"MSRVTT_JSFUSION_test.csv": MSRVTT_CSV}, lambda p: read_eval_pairs(p, "msrvtt", "test"),
               {"video_id": "id", "sentence": "text"}, kind="csv", required=("video_id", "sentence")),
        Format("msrvtt json videos", {"MSRVTT_data.json": json.dumps(MSRVTT_JSON)},
               lambda p: read_eval_pairs(p, "msrvtt", "test"), {"video_id": "id", "split": "id"},
               kind="json-records", records_key="videos", required=("video_id", "split")),
        Format("msrvtt json sentences", {"MSRVTT_data.json": json.dumps(MSRVTT_JSON)},
               lambda p: read_eval_pairs(p, "msrvtt", "test", all_captions=True), {"video_id": "id", "caption": "text"},
               kind="json-records", records_key="sentences", required=("video_id", "caption")),
        Format("youcook2", {"youcookii_annotations_trainval.json": json.dumps(YOUCOOK2)},
               lambda p: read_eval_pairs(p, "youcook2", "validation"), {"subset": "id", "annotations": "list"},
               kind="json-records", records_key="database", keyed=True, required=("subset", "annotations")),
        Format("captions.jsonl", {"captions.jsonl": CAPTIONS_JSONL}, lambda p: read_eval_pairs(p, "jsonl", "val"),
               {"video_id": "id", "caption": "text", "split": "id"}, required=("video_id", "caption", "split")),
        Format("MSR_MC_test.csv answers", {"MSR_MC_test.csv": MC_CSV}, lambda p: read_mc_items(p, "msrvtt"),
               {**mc_roles, "answer": "label"}, kind="csv", delimiter="\t", required=("vid_key", "a1", "answer")),
        Format("MSR_MC_test.csv numbers", {"MSR_MC_test.csv": MC_CSV}, lambda p: read_mc_items(p, "msrvtt"),
               {"answer": "int"}, kind="csv", delimiter="\t"),
        Format("mc.jsonl answers", {"mc.jsonl": MC_JSONL}, lambda p: read_mc_items(p, "jsonl", "test"),
               {"video_id": "id", "options": "list", "answer": "label", "split": "id"},
               required=("video_id", "options", "answer", "split")),
        Format("mc.jsonl numbers", {"mc.jsonl": MC_JSONL}, lambda p: read_mc_items(p, "jsonl", "test"),
               {"answer": "int"}),
        Format("COIN.json", {"COIN.json": json.dumps(COIN)}, _read_coin, {"subset": "id", "annotation": "list"},
               kind="json-records", records_key="database", keyed=True, required=("subset", "annotation")),
    ]


# ---------------------------------------------------------------------------------------------
# faults inside a record's lists


@dataclass
class Nested:
    """A JSON format whose records hold lists: ``elements(doc)`` gives (list, role) pairs the
    fuzzer may break one element of, ``ordered(doc)`` the ``[start, end]`` pairs it may swap."""

    name: str
    file: str
    doc: dict
    read: Callable[[Path], Any]
    elements: Callable[[dict], list[tuple[list, str]]]
    ordered: Callable[[dict], list[tuple[list, int, list, int]]]


def _caption_elements(doc: dict) -> list[tuple[list, str]]:
    return [(entry[k], role) for entry in doc.values() for k, role in (("start", "time"), ("end", "time"),
                                                                       ("text", "text"))]


def _caption_order(doc: dict) -> list[tuple[list, int, list, int]]:
    return [(e["start"], i, e["end"], i) for e in doc.values() for i in range(len(e["start"]))]


def _segments(doc: dict, key: str) -> list[dict]:
    return [seg for video in doc["database"].values() for seg in video[key]]


def _segment_elements(key: str, fields: dict[str, str]) -> Callable[[dict], list[tuple[list, str]]]:
    def elements(doc: dict) -> list[tuple[list, str]]:
        segs = _segments(doc, key)
        # a one-element list standing for a field: the element is the field's value
        return [(s["segment"], "time") for s in segs] + [(_FieldSlot(s, f), role) for s in segs
                                                          for f, role in fields.items()]
    return elements


class _FieldSlot(list):
    """A record field seen as a one-element list, so one mutation code path breaks both."""

    def __init__(self, record: dict, field: str):
        super().__init__([record[field]])
        self.record, self.field = record, field

    def __setitem__(self, index: Any, value: Any) -> None:
        self.record[self.field] = value


def _segment_order(key: str) -> Callable[[dict], list[tuple[list, int, list, int]]]:
    return lambda doc: [(s["segment"], 0, s["segment"], 1) for s in _segments(doc, key)]


def _nested_formats() -> list[Nested]:
    return [
        Nested("raw_caption", "raw_caption.json", RAW_CAPTIONS,
               lambda p: read_pretraining_videos(p.parent / "train.lst", p), _caption_elements, _caption_order),
        Nested("youcook2", "youcookii_annotations_trainval.json", YOUCOOK2,
               lambda p: read_eval_pairs(p, "youcook2", "validation"),
               _segment_elements("annotations", {"sentence": "text", "segment": "list"}), _segment_order("annotations")),
        Nested("COIN.json", "COIN.json", COIN, _read_coin,
               _segment_elements("annotation", {"id": "label", "label": "text", "segment": "list"}),
               _segment_order("annotation")),
    ]


def _break_nested(fmt: Nested, rng: random.Random) -> tuple[dict, str]:
    doc = copy.deepcopy(fmt.doc)
    action = rng.choice(["element", "element", "order", "length"])
    if action == "order":
        first, i, second, j = rng.choice(fmt.ordered(doc))
        first[i], second[j] = second[j] + 1.0, first[i]
        return doc, "start > end"
    values, role = rng.choice(fmt.elements(doc))
    if action == "length" and not isinstance(values, _FieldSlot):
        values.pop(rng.randrange(len(values)))
        return doc, "a list one element short"
    at = rng.randrange(len(values))
    value = rng.choice(BAD_VALUES[role])
    values[at] = value
    return doc, f"element {at} = {value!r}"


def run_nested_fuzz(cases: int, seed: int, tmp_path: Path) -> FuzzReport:
    """``cases`` files each with one broken list element; every one must be a named error."""
    rng, report = random.Random(seed), FuzzReport()
    formats = _nested_formats()
    for n in range(cases):
        fmt = rng.choice(formats)
        folder = tmp_path / f"nested{n}"
        folder.mkdir()
        (folder / "train.lst").write_text(TRAIN_LIST)
        doc, what = _break_nested(fmt, rng)
        path = folder / fmt.file
        path.write_text(json.dumps(doc))
        record_case(report, lambda fmt=fmt, path=path: fmt.read(path), f"{fmt.name}: {what}", (str(path),))
    return report


# ---------------------------------------------------------------------------------------------


def test_the_valid_examples_are_read(tmp_path):
    for fmt in _formats():
        folder = tmp_path / fmt.name.replace(" ", "_")
        folder.mkdir()
        for name, content in {**fmt.extra_files, **{k: v.encode() for k, v in fmt.files.items()}}.items():
            (folder / name).write_bytes(content)
        for name in fmt.files:
            assert fmt.read(folder / name), fmt.name  # the fuzzer's refusals are not of valid files


def test_annotation_fuzz_videoclip_vlm(tmp_path):
    assert_clean(run_fuzz(_formats(), cases=900, seed=26, tmp_path=tmp_path), "videoclip+vlm")


def test_nested_annotation_fuzz_videoclip_vlm(tmp_path):
    assert_clean(run_nested_fuzz(cases=300, seed=27, tmp_path=tmp_path), "videoclip+vlm nested")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["video0002"]["start"].__setitem__(2, float("nan")), r"raw_caption\.json: NaN is not a number"),
    (lambda d: d["video0002"]["start"].__setitem__(2, -1.0),
     r"raw_caption\.json: 'video0002': field 'start\.2': Input should be greater than or equal to 0"),
    (lambda d: d["video0002"]["end"].__setitem__(1, 1.0), r"'video0002': start\[1\] = 2\.5 is after end\[1\] = 1\.0"),
    (lambda d: d["video0002"]["text"].pop(), r"'video0002': start, end and text have 3, 3 and 2 entries"),
    (lambda d: d["video0002"]["text"].__setitem__(0, " "), r"'video0002': field 'text\.0': String should match"),
    (lambda d: d["video0002"].__setitem__("text", "abc"), r"'video0002': field 'text': Input should be a valid list"),
])
def test_caption_errors_name_the_video_and_element(tmp_path, edit, message):
    doc = copy.deepcopy(RAW_CAPTIONS)
    edit(doc)
    (tmp_path / "raw_caption.json").write_text(json.dumps(doc))
    (tmp_path / "train.lst").write_text(TRAIN_LIST)
    with pytest.raises(AnnotationError, match=message):
        read_pretraining_videos(tmp_path / "train.lst", tmp_path / "raw_caption.json")


def test_video_list_errors_name_the_line(tmp_path):
    (tmp_path / "raw_caption.json").write_text(json.dumps(RAW_CAPTIONS))
    lst = tmp_path / "train.lst"
    lst.write_text("video0001\n\nvideo000\n")
    with pytest.raises(AnnotationError, match=r"train\.lst:3: video 'video000' has no entry in .*raw_caption\.json"):
        read_pretraining_videos(lst, tmp_path / "raw_caption.json")
    lst.write_text("video0001\nvideo0002\nvideo0001\n")
    with pytest.raises(AnnotationError, match=r"train\.lst:3: video 'video0001' is listed twice \(first at line 1\)"):
        read_pretraining_videos(lst, tmp_path / "raw_caption.json")
    lst.write_bytes(b"video0001\nvideo\xff0002\n")
    with pytest.raises(AnnotationError, match=r"train\.lst:2: not UTF-8"):
        read_pretraining_videos(lst, tmp_path / "raw_caption.json")


def test_coin_step_ids_and_names_are_checked(tmp_path):
    path = tmp_path / "COIN.json"
    for edit, message in [({"id": "3.5"}, r"field 'annotation\.0\.id': Input should be a valid integer"),
                          ({"id": "0"}, r"field 'annotation\.0\.id': Input should be greater than or equal to 1"),
                          ({"id": str(10**9)}, r"field 'annotation\.0\.id': Input should be less than or equal to 65535"),
                          ({"label": "stir"}, r"field 'annotation\.0\.label': step id 3 is 'pour water' elsewhere"),
                          ({"segment": [3.0, 1.0]}, r"field 'annotation\.0\.segment': .*starts at 3\.0 after it ends")]:
        doc = copy.deepcopy(COIN)
        doc["database"]["video0003"]["annotation"][0].update(edit)
        path.write_text(json.dumps(doc))
        with pytest.raises(AnnotationError, match=rf"COIN\.json: database\.?:? ?'video0003'.*{message}"):
            read_coin(path, "training")
