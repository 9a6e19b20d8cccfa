"""Seeded annotation fuzzing of every file ClipBERT's recipes read: the JSONL records of
retrieval, open-ended QA, multiple choice, VQA and image-caption pretraining, and the answer
vocabulary ``ans2label``. Each broken file goes through :class:`ClipBertSplits` as ``fit`` builds
its training split (schema, answer vocabulary, data-root checks) and must be a named ConfigError.

The JSONL formats use the shared fuzzer; ``ans2label`` (one JSON object, not records) gets its
own faults below: wrong label types, negative, repeated or missing indices, empty answers, bad
UTF-8 and cuts (every proper prefix of a JSON object is invalid JSON).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.faults.fuzzing import Format, FuzzReport, assert_clean, record_case, run_fuzz

from videolang.data.clipbert import DATA_CONFIG_OF_RECIPE, ClipBertSplits, TextEncoder

ANSWERS = ["red", "blue", "two", "circle"]
ANS2LABEL = json.dumps({a: i for i, a in enumerate(ANSWERS)}, indent=1)


def _lines(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


RETRIEVAL = _lines([{"clip_name": f"video{i}", "caption": f"a red circle moves {i}"} for i in range(4)])
FRAMEQA = _lines([{"gif_name": f"tumblr_{i}", "question": "what color is the circle?", "answer": ANSWERS[i % 4],
                   "answer_type": "color"} for i in range(4)])
ACTION = _lines([{"gif_name": f"tumblr_{i}", "question": "what does the circle do?", "answer": i % 5,
                  "options": ["move", "grow", "spin", "shrink", "stay"], "key": f"k{i}"} for i in range(4)])
MSRVTT_MC = _lines([{"qid": i, "clip_name": f"video{i}", "answer": i % 5,
                     "options": [f"caption {i} {j}" for j in range(5)]} for i in range(4)])
VQA = _lines([{"image_id": 100 + i, "question_id": i, "question": "what color?", "answer_type": "other",
               "labels": {ANSWERS[i % 4]: 1.0, "two": 0.3}} for i in range(4)])
PRETRAIN = _lines([{"image_id": i, "file_name": f"v{i}_e0.png", "video_id": f"v{i}", "width": 32,
                    "captions": [f"a red circle {i}", "a blue square"]} for i in range(4)])
VOCAB = {"ans2label.json": ANS2LABEL.encode()}


class _Tokens:
    """A whitespace tokenizer: the fuzz cases test the annotations, not the tokenizer."""

    cls_token_id, sep_token_id, pad_token_id = 101, 102, 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [1000 + len(w) for w in text.split()]}


def _reader(recipe: str, images: bool = False, vocab: bool = False):
    """``read(path)``: build the training split of ``clipbert.<recipe>`` from ``path`` as ``fit`` does."""
    def read(path: Path):
        folder = path.parent
        roots = {"image_root": str(folder)} if images else {"video_root": str(folder)}
        answers = {"ans2label": str(folder / "ans2label.json")} if vocab else {}
        splits = ClipBertSplits(DATA_CONFIG_OF_RECIPE[recipe](train_file=str(path), **roots, **answers))
        splits._text = TextEncoder(_Tokens(), max_len=16)
        return splits.dataset("train")
    return read


def _formats() -> list[Format]:
    return [
        Format("clipbert retrieval", {"train.jsonl": RETRIEVAL}, _reader("retrieval"),
               {"clip_name": "id", "caption": "text"}, required=("clip_name", "caption")),
        Format("clipbert frameqa", {"frameqa_train.jsonl": FRAMEQA}, _reader("qa", vocab=True),
               {"gif_name": "id", "question": "text", "answer": "label", "answer_type": "id"},
               required=("gif_name", "question", "answer"), extra_files=VOCAB),
        Format("clipbert action mc", {"action_train.jsonl": ACTION}, _reader("mcqa"),
               {"gif_name": "id", "question": "text", "answer": "int", "options": "list"},
               required=("gif_name", "answer", "options")),
        Format("clipbert msrvtt mc", {"msrvtt_mc.jsonl": MSRVTT_MC}, _reader("mcqa"),
               {"clip_name": "id", "answer": "int", "options": "list"}, required=("clip_name", "answer", "options")),
        Format("clipbert vqa", {"vqa_train.jsonl": VQA}, _reader("vqa", images=True, vocab=True),
               {"question": "text", "answer_type": "id", "labels": "list"}, required=("question",),
               extra_files=VOCAB),
        Format("clipbert pretrain", {"image_captions.jsonl": PRETRAIN}, _reader("pretrain", images=True),
               {"file_name": "id", "captions": "list"}, required=("captions",)),
    ]


ODD_LABELS = ["1", True, 1.5, -1, None, [0], {"a": 0}, 10**9]


def _broken_vocab(rng: random.Random) -> tuple[bytes, str]:
    """One broken ``ans2label`` and what was broken."""
    data = {a: i for i, a in enumerate(ANSWERS)}
    action = rng.choice(["label", "label", "repeat", "empty answer", "not an object", "utf8", "cut"])
    answer = rng.choice(ANSWERS)
    if action == "label":
        data[answer] = rng.choice(ODD_LABELS)
    elif action == "repeat":
        data[answer] = (data[answer] + 1) % len(ANSWERS)
    elif action == "empty answer":
        data[rng.choice(["", "  ", "a\x00b"])] = len(ANSWERS)
    elif action == "not an object":
        return json.dumps(rng.choice([ANSWERS, 3, None, {}, "red"])).encode(), action
    text = json.dumps(data, indent=1).encode()
    if action == "utf8":
        at = rng.randrange(1, len(text) - 1)
        return text[:at] + b"\xff" + text[at:], action
    if action == "cut":
        at = rng.randrange(1, len(text) - 1)
        return text[:at], f"cut at byte {at}"
    return text, f"{action} {answer}={data.get(answer)!r}"


def _fuzz_vocabulary(cases: int, seed: int, tmp_path: Path) -> FuzzReport:
    rng, report = random.Random(seed), FuzzReport()
    read = _reader("qa", vocab=True)
    for n in range(cases):
        folder = tmp_path / f"vocab{n}"
        folder.mkdir()
        (folder / "train.jsonl").write_text(FRAMEQA, encoding="utf-8")
        broken, what = _broken_vocab(rng)
        (folder / "ans2label.json").write_bytes(broken)
        record_case(report, lambda folder=folder: read(folder / "train.jsonl"), f"ans2label {what}",
                    ("ans2label.json",))
    return report


def test_the_valid_examples_are_accepted(tmp_path):
    for fmt in _formats():
        folder = tmp_path / fmt.name.replace(" ", "_")
        folder.mkdir()
        for name, content in fmt.extra_files.items():
            (folder / name).write_bytes(content)
        for name, text in fmt.files.items():
            (folder / name).write_text(text, encoding="utf-8")
            assert len(fmt.read(folder / name)) >= 4, fmt.name


def test_fuzzed_clipbert_annotations_are_named_errors(tmp_path):
    report = run_fuzz(_formats(), cases=600, seed=26, tmp_path=tmp_path)
    assert report.cases == 600
    assert_clean(report, "clipbert")


def test_fuzzed_answer_vocabularies_are_named_errors(tmp_path):
    report = _fuzz_vocabulary(cases=120, seed=26, tmp_path=tmp_path)
    assert_clean(report, "clipbert ans2label")
