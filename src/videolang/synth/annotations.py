"""Our own annotation files (JSONL + a few JSON/TXT), built from the per-video specs.

Every generator here takes its randomness from ``np.random.default_rng([seed, index, stream])``
(per video) or ``[seed, stream]`` (world-level), never from call order, so annotations are the
same whether videos were rendered serially or in parallel. Field names follow the original
datasets where one exists (see ``docs/data.md``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videolang.errors import ConfigError

from . import language as lang
from .world import (
    ACTIONS,
    CLASS_NAMES,
    COLOURS,
    SHAPES,
    SIZES,
    VERBS,
    action_key,
    frame_states,
    grammar_weights,
    transition_table,
)

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
CAPTIONS_PER_VIDEO = 5
QUESTIONS_PER_VIDEO = 4
MC_OPTIONS = 5
CAPTIONS_PER_IMAGE = 3

# Random streams. Per-video streams are >= 1 so that [seed, index, stream] never collides with
# the two-element world-level streams below.
STREAM_SPEC, STREAM_CAPTIONS, STREAM_QA, STREAM_MC, STREAM_IMAGES, STREAM_ACTION_MC, STREAM_MC_EXTRA = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
)
WORLD_SPLIT, WORLD_CORPUS, WORLD_SST, WORLD_RTE = 1_000_001, 1_000_002, 1_000_003, 1_000_004


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(list(entropy))


def assign_splits(num_videos: int, seed: int) -> list[str]:
    """70/15/15 train/val/test by a seeded permutation; val and test get >= 1 video when N >= 3."""
    if num_videos < 3:
        return ["train"] * num_videos
    n_val = max(1, round(num_videos * SPLIT_FRACTIONS[1]))
    n_test = max(1, round(num_videos * SPLIT_FRACTIONS[2]))
    perm = _rng(seed, WORLD_SPLIT).permutation(num_videos)
    out = ["train"] * num_videos
    for i in perm[:n_val]:
        out[int(i)] = "val"
    for i in perm[n_val : n_val + n_test]:
        out[int(i)] = "test"
    return out


def event_middle_frame(event: dict[str, Any]) -> int:
    """The frame whose still image represents an event (its middle frame)."""
    return (event["start_frame"] + event["end_frame"] - 1) // 2


def image_file_name(video_id: str, event_index: int) -> str:
    return f"{video_id}_e{event_index}.png"


def image_id(video_index: int, event_index: int) -> int:
    return video_index * 10 + event_index  # <= 6 events per video


@dataclass
class WorldAnnotations:
    """Everything written under ``annotations/`` and ``text/``, as Python objects."""

    seed: int
    videos: list[dict[str, Any]]
    captions: list[dict[str, Any]] = field(default_factory=list)
    questions: list[dict[str, Any]] = field(default_factory=list)
    multiple_choice: list[dict[str, Any]] = field(default_factory=list)
    action_choice: list[dict[str, Any]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    corpus: list[str] = field(default_factory=list)
    action_sequences: list[str] = field(default_factory=list)
    sst: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    rte: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    def split_ids(self, split: str) -> list[str]:
        return [v["id"] for v in self.videos if v["split"] == split]


def extra_multiple_choice(
    videos: Sequence[dict[str, Any]], seed: int, per_video: int, *, first_qid: int
) -> list[dict[str, Any]]:
    """``per_video`` more multiple-choice items for each of ``videos`` (records of
    ``videos.jsonl``), with fresh distractors and wording from their own random stream.

    Training data for option scorers: the world's ``mc.jsonl`` has one item per video, which a
    scorer memorises. Item ``j`` of the video with index ``i`` gets qid
    ``first_qid + i * per_video + j``; pass the world's video count so that both files can be
    read together.
    """
    if per_video < 1:
        raise ConfigError(f"per_video={per_video}: must be >= 1")
    items = []
    for v in videos:
        rng = _rng(seed, v["index"], STREAM_MC_EXTRA)
        for j in range(per_video):
            mc = lang.multiple_choice(v, rng, MC_OPTIONS)
            qid = first_qid + v["index"] * per_video + j
            items.append({"qid": qid, "video_id": v["id"], "split": v["split"], **mc})
    return items


def build_annotations(
    specs: Sequence[dict[str, Any]], seed: int, *, codec: str, gop: int
) -> WorldAnnotations:
    """All annotations of a world from its video specs (ordered by index)."""
    splits = assign_splits(len(specs), seed)
    videos = []
    for spec, split in zip(specs, splits, strict=True):
        rec = dict(spec)
        rec["split"] = split
        rec["path"] = f"videos/{spec['id']}.mp4"
        rec["codec"] = codec
        rec["gop"] = gop
        rec["events"] = [
            {**e, "caption": lang.event_caption(spec["objects"][e["object"]], e["verb"])}
            for e in spec["events"]
        ]
        videos.append(rec)
    ann = WorldAnnotations(seed=seed, videos=videos)
    qid = uid = 0
    for mcid, v in enumerate(videos):
        i, vid, split = v["index"], v["id"], v["split"]
        for j, cap in enumerate(
            lang.video_captions(v, _rng(seed, i, STREAM_CAPTIONS), CAPTIONS_PER_VIDEO)
        ):
            ann.captions.append(
                {
                    "caption_id": i * CAPTIONS_PER_VIDEO + j,
                    "video_id": vid,
                    "split": split,
                    "caption": cap,
                }
            )
        for q in lang.video_questions(v, _rng(seed, i, STREAM_QA), QUESTIONS_PER_VIDEO):
            ann.questions.append(
                {
                    "qid": qid,
                    "video_id": vid,
                    "split": split,
                    **q,
                    "answer_id": lang.ANSWER_VOCAB.index(q["answer"]),
                }
            )
            qid += 1
        mc = lang.multiple_choice(v, _rng(seed, i, STREAM_MC), MC_OPTIONS)
        ann.multiple_choice.append({"qid": mcid, "video_id": vid, "split": split, **mc})
        ac = lang.action_choice(v, _rng(seed, i, STREAM_ACTION_MC), MC_OPTIONS)
        ann.action_choice.append({"qid": mcid, "video_id": vid, "split": split, **ac})
        history: list[int] = []
        for e in v["events"]:
            ann.segments.append(
                {
                    "uid": uid,
                    "video_id": vid,
                    "split": split,
                    "event_index": e["index"],
                    "start": e["start"],
                    "end": e["end"],
                    "start_frame": e["start_frame"],
                    "end_frame": e["end_frame"],
                    "verb": e["verb"],
                    "verb_id": e["verb_id"],
                    "noun": e["noun"],
                    "noun_id": e["noun_id"],
                    "action": e["action"],
                    "action_id": e["action_id"],
                    "history": list(history),
                }
            )
            history.append(e["action_id"])
            uid += 1
        states = frame_states(v)
        img_rng = _rng(seed, i, STREAM_IMAGES)
        for e in v["events"]:
            f = event_middle_frame(e)
            ann.images.append(
                {
                    "image_id": image_id(i, e["index"]),
                    "file_name": image_file_name(vid, e["index"]),
                    "path": f"images/{image_file_name(vid, e['index'])}",
                    "video_id": vid,
                    "split": split,
                    "event_index": e["index"],
                    "frame_index": f,
                    "width": v["width"],
                    "height": v["height"],
                    "captions": lang.image_captions(
                        v["objects"], states[f], img_rng, CAPTIONS_PER_IMAGE
                    ),
                }
            )
    _build_text(ann, len(specs))
    return ann


def _split_rows(rows: list, fractions=(0.8, 0.1, 0.1)) -> dict[str, list]:
    n = len(rows)
    a = round(n * fractions[0])
    b = a + round(n * fractions[1])
    return {"train": rows[:a], "dev": rows[a:b], "test": rows[b:]}


def _build_text(ann: WorldAnnotations, num_videos: int) -> None:
    seed = ann.seed
    n_corpus = max(1000, 10 * num_videos)
    rng = _rng(seed, WORLD_CORPUS)
    for _ in range(n_corpus):
        _, actions, steps = lang.random_sequence(rng, int(rng.integers(2, 7)))
        ann.corpus.append(lang.describe_sequence(steps, rng))
        ann.action_sequences.append(lang.action_sequence_line(actions))
    n_glue = max(400, 4 * num_videos)
    rng = _rng(seed, WORLD_SST)
    sst = [lang.plausibility_example(rng, int(k % 2 == 0)) for k in range(n_glue)]
    order = rng.permutation(n_glue)
    ann.sst = _split_rows([sst[int(i)] for i in order])
    rng = _rng(seed, WORLD_RTE)
    rte = [
        lang.entailment_example(rng, "entailment" if k % 2 == 0 else "not_entailment")
        for k in range(n_glue)
    ]
    order = rng.permutation(n_glue)
    ann.rte = _split_rows([rte[int(i)] for i in order])


# ---------------------------------------------------------------------------------------------
# writing


class TreeWriter:
    """Writes files under ``root`` and remembers (size, sha256) of each, keyed by relative path."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.files: dict[str, dict[str, Any]] = {}

    def add(self, rel: str, size: int, sha256: str) -> None:
        self.files[rel] = {"path": rel, "size": size, "sha256": sha256}

    def bytes(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.add(rel, len(data), hashlib.sha256(data).hexdigest())

    def text(self, rel: str, text: str) -> None:
        self.bytes(rel, text.encode("utf-8"))

    def lines(self, rel: str, lines: Iterable[str]) -> None:
        self.text(rel, "".join(f"{line}\n" for line in lines))

    def json(self, rel: str, obj: Any, *, indent: int | None = None) -> None:
        self.text(rel, json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=indent) + "\n")

    def jsonl(self, rel: str, rows: Iterable[dict[str, Any]]) -> None:
        self.lines(rel, (json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows))

    def csv(
        self,
        rel: str,
        rows: Iterable[Sequence[Any]],
        *,
        header: Sequence[str] | None = None,
        delimiter: str = ",",
    ) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
        self.text(rel, buf.getvalue())


def vocabulary() -> dict[str, Any]:
    """The world's closed vocabularies with their integer ids."""
    return {
        "verbs": [
            {
                "id": i,
                "key": v.key,
                "axis": v.axis,
                "opposite": v.opposite,
                "answer": v.answer,
                "phrases": list(lang.VERB_PHRASES[v.key]),
            }
            for i, v in enumerate(VERBS)
        ],
        "nouns": [
            {"id": i, "key": s, "words": list(lang.SHAPE_WORDS[s])} for i, s in enumerate(SHAPES)
        ],
        "actions": [
            {
                "id": i,
                "key": action_key(v, n),
                "verb": v,
                "noun": n,
                "verb_id": [x.key for x in VERBS].index(v),
                "noun_id": SHAPES.index(n),
            }
            for i, (v, n) in enumerate(ACTIONS)
        ],
        "colours": {k: list(rgb) for k, rgb in COLOURS.items()},
        "sizes": dict(SIZES),
        "classes": [{"id": i, "name": c} for i, c in enumerate(CLASS_NAMES)],
        "answers": list(lang.ANSWER_VOCAB),
    }


def grammar_summary() -> dict[str, Any]:
    """The transition table plus its entropies (bits), for documentation and analysis."""
    w = grammar_weights()
    p = w / w.sum(axis=1, keepdims=True)
    pi = w.sum(axis=1) / w.sum()

    def h(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log2(q)).sum())

    return {
        "kind": "reversible first-order Markov chain over actions (symmetric weights)",
        "stationary_entropy_bits": round(h(pi), 6),
        "conditional_entropy_bits": round(float(sum(pi[i] * h(p[i]) for i in range(len(pi)))), 6),
        "forbidden_fraction": round(float((w == 0).mean()), 6),
        "transitions": transition_table(),
    }


def write_annotations(ann: WorldAnnotations, out: TreeWriter) -> None:
    """``annotations/*`` and ``text/*`` (our schema, documented in docs/data.md)."""
    out.jsonl("annotations/videos.jsonl", ann.videos)
    for split in SPLITS:
        out.lines(f"annotations/splits/{split}.txt", ann.split_ids(split))
    out.json("annotations/vocab.json", vocabulary(), indent=1)
    out.json("annotations/grammar.json", grammar_summary(), indent=1)
    out.jsonl("annotations/captions.jsonl", ann.captions)
    out.jsonl("annotations/qa.jsonl", ann.questions)
    out.json(
        "annotations/qa_answer_vocab.json",
        {a: i for i, a in enumerate(lang.ANSWER_VOCAB)},
        indent=1,
    )
    out.jsonl("annotations/mc.jsonl", ann.multiple_choice)
    out.jsonl("annotations/action_mc.jsonl", ann.action_choice)
    out.jsonl("annotations/segments.jsonl", ann.segments)
    out.jsonl("annotations/image_captions.jsonl", ann.images)
    out.lines("text/corpus.txt", ann.corpus)
    out.lines("text/action_sequences.txt", ann.action_sequences)


def counts(ann: WorldAnnotations) -> dict[str, Any]:
    """Sizes of everything, for the manifest."""
    per_split = {s: len(ann.split_ids(s)) for s in SPLITS}
    return {
        "videos": len(ann.videos),
        "videos_per_split": per_split,
        "events": len(ann.segments),
        "captions": len(ann.captions),
        "qa": len(ann.questions),
        "mc": len(ann.multiple_choice),
        "action_mc": len(ann.action_choice),
        "images": len(ann.images),
        "image_captions": sum(len(i["captions"]) for i in ann.images),
        "corpus_sentences": len(ann.corpus),
        "sst_rows": {k: len(v) for k, v in ann.sst.items()},
        "rte_rows": {k: len(v) for k, v in ann.rte.items()},
        "classes": len(CLASS_NAMES),
        "actions": len(ACTIONS),
        "frames": int(sum(v["num_frames"] for v in ann.videos)),
        "seconds": round(math.fsum(v["duration"] for v in ann.videos), 6),
    }
