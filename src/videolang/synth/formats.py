"""Converters from our annotations to the layouts of the real datasets the methods read.

Each writer reproduces the file names, columns and field names of the original files (as used by
ClipBERT, MMPT/VideoCLIP, VIMPAC/MMAction2, VidLanKD, RULSTM/AVT and the LM-to-video
anticipation code), so loaders written for the real datasets run on the synthetic world.
Video paths in list files are relative to ``videos/`` (the datasets' "data prefix"); image file
names are relative to ``images/``. Every deviation from the originals is listed in
``docs/data.md``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from . import language as lang
from .annotations import SPLITS, TreeWriter, WorldAnnotations
from .world import ACTIONS, CLASS_NAMES, SHAPES, VERB_KEYS

# MSR-VTT calls its validation split "validate".
_MSRVTT_SPLIT = {"train": "train", "val": "validate", "test": "test"}
# TGIF-QA FrameQA answer-type codes: 0 object, 1 number, 2 color, 3 location; we add 4 motion.
_TGIF_TYPE = {"object": 0, "number": 1, "color": 2, "motion": 4}


def _timestamp(seconds: float) -> str:
    """EPIC-Kitchens HH:MM:SS.ss."""
    centis = round(seconds * 100)
    h, rem = divmod(centis, 360000)
    m, rem = divmod(rem, 6000)
    s, cs = divmod(rem, 100)
    return f"{h:02d}:{m:02d}:{s:02d}.{cs:02d}"


def _file(video: dict[str, Any]) -> str:
    return f"{video['id']}.mp4"


def write_formats(ann: WorldAnnotations, out: TreeWriter) -> None:
    """Write every converter's output under ``formats/``."""
    write_msrvtt(ann, out)
    write_clipbert(ann, out)
    write_tgif_qa(ann, out)
    write_howto100m(ann, out)
    write_youcook2(ann, out)
    write_coin(ann, out)
    write_action_recognition(ann, out)
    write_epic_kitchens_55(ann, out)
    write_egtea_gaze_plus(ann, out)
    write_coco_captions(ann, out)
    write_glue(ann, out)


# ---------------------------------------------------------------------------------------------
# MSR-VTT (original json, CLIP4Clip / MMPT csv files)


def write_msrvtt(ann: WorldAnnotations, out: TreeWriter, root: str = "formats/msrvtt") -> None:
    caps: dict[str, list[dict[str, Any]]] = {}
    for c in ann.captions:
        caps.setdefault(c["video_id"], []).append(c)

    def video_entry(v: dict[str, Any]) -> dict[str, Any]:
        return {
            "video_id": v["id"],
            "category": v["label"]["id"],
            "url": "",
            "start time": 0.0,
            "end time": v["duration"],
            "split": _MSRVTT_SPLIT[v["split"]],
            "id": v["index"],
        }

    def sentences(videos: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"caption": c["caption"], "video_id": v["id"], "sen_id": c["caption_id"]}
            for v in videos
            for c in caps[v["id"]]
        ]

    info = {
        "contributor": "videolang synthetic world",
        "data_created": "",
        "version": "1.0",
        "year": 0,
        "description": "synthetic MSR-VTT layout",
    }
    trainval = [v for v in ann.videos if v["split"] in ("train", "val")]
    test = [v for v in ann.videos if v["split"] == "test"]
    out.json(
        f"{root}/MSRVTT_data.json",
        {
            "info": info,
            "videos": [video_entry(v) for v in ann.videos],
            "sentences": sentences(ann.videos),
        },
    )
    out.json(
        f"{root}/train_val_videodatainfo.json",
        {
            "info": info,
            "videos": [video_entry(v) for v in trainval],
            "sentences": sentences(trainval),
        },
    )
    out.json(
        f"{root}/test_videodatainfo.json",
        {"info": info, "videos": [video_entry(v) for v in test], "sentences": sentences(test)},
    )
    out.csv(
        f"{root}/MSRVTT_train.csv",
        [[v["id"]] for v in ann.videos if v["split"] == "train"],
        header=["video_id"],
    )
    out.csv(
        f"{root}/MSRVTT_val.csv",
        [[v["id"]] for v in ann.videos if v["split"] == "val"],
        header=["video_id"],
    )
    # JSFusion test: one sentence (the canonical caption) per test video.
    out.csv(
        f"{root}/MSRVTT_JSFUSION_test.csv",
        [[f"ret{k}", v["id"], v["id"], caps[v["id"]][0]["caption"]] for k, v in enumerate(test)],
        header=["key", "vid_key", "video_id", "sentence"],
    )
    mc = [m for m in ann.multiple_choice if m["split"] == "test"]
    out.csv(
        f"{root}/MSR_MC_test.csv",
        [[f"mc{m['qid']}", m["video_id"], *m["options"], m["answer"]] for m in mc],
        header=["key", "vid_key", "a1", "a2", "a3", "a4", "a5", "answer"],
        delimiter="\t",
    )


# ---------------------------------------------------------------------------------------------
# ClipBERT txt_db jsonl


def write_clipbert(ann: WorldAnnotations, out: TreeWriter, root: str = "formats/clipbert") -> None:
    first_caption: dict[str, str] = {}
    for c in ann.captions:
        first_caption.setdefault(c["video_id"], c["caption"])
    for split in SPLITS:
        if split == "train":
            rows = [
                {"clip_name": c["video_id"], "caption": c["caption"]}
                for c in ann.captions
                if c["split"] == split
            ]
        else:  # one sentence per video, like the 1k-A test set
            rows = [
                {"clip_name": v["id"], "caption": first_caption[v["id"]]}
                for v in ann.videos
                if v["split"] == split
            ]
        out.jsonl(f"{root}/msrvtt_retrieval/{split}.jsonl", rows)
        out.jsonl(
            f"{root}/tgif_qa/frameqa_{split}.jsonl",
            [
                {
                    "gif_name": q["video_id"],
                    "question": q["question"],
                    "answer": q["answer"],
                    "answer_type": q["answer_type"],
                }
                for q in ann.questions
                if q["split"] == split
            ],
        )
        out.jsonl(
            f"{root}/tgif_qa/action_{split}.jsonl",
            [
                {
                    "gif_name": a["video_id"],
                    "question": a["question"],
                    "options": a["options"],
                    "answer": a["answer"],
                }
                for a in ann.action_choice
                if a["split"] == split
            ],
        )
    out.jsonl(
        f"{root}/msrvtt_retrieval_mc/msrvtt_retrieval_mc_test.jsonl",
        [
            {
                "qid": m["qid"],
                "clip_name": m["video_id"],
                "options": m["options"],
                "answer": m["answer"],
            }
            for m in ann.multiple_choice
            if m["split"] == "test"
        ],
    )
    out.json(
        f"{root}/tgif_qa/frameqa_trainval_ans2label.json",
        {a: i for i, a in enumerate(lang.ANSWER_VOCAB)},
    )


# ---------------------------------------------------------------------------------------------
# TGIF-QA original tab-separated csv files


def write_tgif_qa(ann: WorldAnnotations, out: TreeWriter, root: str = "formats/tgif_qa") -> None:
    names = {"train": "Train", "val": "Val", "test": "Test"}
    for split in SPLITS:
        qs = [q for q in ann.questions if q["split"] == split]
        out.csv(
            f"{root}/{names[split]}_frameqa_question.csv",
            [
                [
                    q["video_id"],
                    q["question"],
                    q["answer"],
                    q["video_id"],
                    q["qid"],
                    _TGIF_TYPE[q["answer_type"]],
                ]
                for q in qs
            ],
            header=["gif_name", "question", "answer", "vid_id", "key", "type"],
            delimiter="\t",
        )
        acs = [a for a in ann.action_choice if a["split"] == split]
        out.csv(
            f"{root}/{names[split]}_action_question.csv",
            [
                [a["video_id"], a["question"], *a["options"], a["answer"], a["video_id"], a["qid"]]
                for a in acs
            ],
            header=[
                "gif_name",
                "question",
                "a1",
                "a2",
                "a3",
                "a4",
                "a5",
                "answer",
                "vid_id",
                "key",
            ],
            delimiter="\t",
        )


# ---------------------------------------------------------------------------------------------
# HowTo100M timestamped captions (MMPT reads raw_caption.json)


YOUCOOK2_SUBSETS = {"train": "training", "val": "validation", "test": "testing"}


def write_youcook2(ann: WorldAnnotations, out: TreeWriter, root: str = "formats/youcook2") -> None:
    """``youcookii_annotations_trainval.json``: every event is an annotated segment with its
    sentence. Deviations: segment bounds keep their fractional seconds (YouCook2's are whole
    seconds; our events are about a second long), and the test subset has annotations too."""
    out.json(
        f"{root}/youcookii_annotations_trainval.json",
        {
            "database": {
                v["id"]: {
                    "duration": v["duration"],
                    "subset": YOUCOOK2_SUBSETS[v["split"]],
                    "recipe_type": "synthetic",
                    "video_url": "",
                    "annotations": [
                        {"id": i, "segment": [e["start"], e["end"]], "sentence": e["caption"]}
                        for i, e in enumerate(v["events"])
                    ],
                }
                for v in ann.videos
            }
        },
    )


def write_coin(ann: WorldAnnotations, out: TreeWriter, root: str = "formats/coin") -> None:
    """COIN's ``COIN.json``: every event is a step segment whose ``id`` is the action id + 1
    (0 stays the background "O" label) and whose ``label`` is the action key. Deviations: our
    events tile the video, so there is no background time; there is a ``validation`` subset
    (COIN has only ``training`` / ``testing``)."""
    out.json(
        f"{root}/COIN.json",
        {
            "database": {
                v["id"]: {
                    "subset": YOUCOOK2_SUBSETS[v["split"]],
                    "recipe_type": 0,
                    "class": v["label"]["name"],
                    "start": 0.0,
                    "end": v["duration"],
                    "duration": v["duration"],
                    "video_url": "",
                    "annotation": [
                        {"id": str(e["action_id"] + 1), "segment": [e["start"], e["end"]], "label": e["action"]}
                        for e in v["events"]
                    ],
                }
                for v in ann.videos
            }
        },
    )


def write_howto100m(
    ann: WorldAnnotations, out: TreeWriter, root: str = "formats/howto100m"
) -> None:
    out.json(
        f"{root}/raw_caption.json",
        {
            v["id"]: {
                "start": [e["start"] for e in v["events"]],
                "end": [e["end"] for e in v["events"]],
                "text": [e["caption"] for e in v["events"]],
            }
            for v in ann.videos
        },
    )
    for split in SPLITS:
        out.lines(f"{root}/{split}.lst", ann.split_ids(split))


# ---------------------------------------------------------------------------------------------
# action recognition: UCF101 split files and MMAction2 / VIMPAC list files


def write_action_recognition(ann: WorldAnnotations, out: TreeWriter) -> None:
    ucf, mm = "formats/ucf101", "formats/mmaction"
    out.lines(f"{ucf}/classInd.txt", (f"{i + 1} {c}" for i, c in enumerate(CLASS_NAMES)))
    by_split = {s: [v for v in ann.videos if v["split"] == s] for s in SPLITS}
    out.lines(
        f"{ucf}/trainlist01.txt", (f"{_file(v)} {v['label']['id'] + 1}" for v in by_split["train"])
    )
    out.lines(
        f"{ucf}/vallist01.txt", (f"{_file(v)} {v['label']['id'] + 1}" for v in by_split["val"])
    )
    out.lines(f"{ucf}/testlist01.txt", (_file(v) for v in by_split["test"]))
    out.lines(f"{mm}/classes.txt", CLASS_NAMES)
    for split in SPLITS:
        out.lines(
            f"{mm}/synth_{split}_list_videos.txt",
            (f"{_file(v)} {v['label']['id']}" for v in by_split[split]),
        )
    # VIMPAC's ucf101/hmdb51 naming: {ds}_{train,val}_split_{k}_videos.txt (val = held-out).
    out.lines(
        f"{mm}/synth_train_split_1_videos.txt",
        (f"{_file(v)} {v['label']['id']}" for v in by_split["train"]),
    )
    out.lines(
        f"{mm}/synth_val_split_1_videos.txt",
        (f"{_file(v)} {v['label']['id']}" for v in by_split["val"] + by_split["test"]),
    )


# ---------------------------------------------------------------------------------------------
# EPIC-Kitchens-55 (official csv files + RULSTM csv files)


def _many_shot(counter: Counter, n_total: int) -> list[int]:
    # EPIC-55: classes with more than 100 training instances; scaled for small worlds.
    threshold = min(100, max(1, n_total // 100))
    return sorted(k for k, c in counter.items() if c >= threshold)


def write_epic_kitchens_55(
    ann: WorldAnnotations, out: TreeWriter, root: str = "formats/epic_kitchens_55"
) -> None:
    header = [
        "uid",
        "participant_id",
        "video_id",
        "narration",
        "start_timestamp",
        "stop_timestamp",
        "start_frame",
        "stop_frame",
        "verb",
        "verb_class",
        "noun",
        "noun_class",
        "all_nouns",
        "all_noun_classes",
    ]
    for split in SPLITS:
        out.csv(
            f"{root}/EPIC_{split}_action_labels.csv",
            [
                [
                    s["uid"],
                    "P01",
                    s["video_id"],
                    f"{s['verb']} {s['noun']}",
                    _timestamp(s["start"]),
                    _timestamp(s["end"]),
                    s["start_frame"] + 1,
                    s["end_frame"],
                    s["verb"],
                    s["verb_id"],
                    s["noun"],
                    s["noun_id"],
                    f"['{s['noun']}']",
                    f"[{s['noun_id']}]",
                ]
                for s in ann.segments
                if s["split"] == split
            ],
            header=header,
        )
    out.csv(
        f"{root}/EPIC_verb_classes.csv",
        [[i, v, str([v, *lang.VERB_PHRASES[v]])] for i, v in enumerate(VERB_KEYS)],
        header=["verb_id", "class_key", "verbs"],
    )
    out.csv(
        f"{root}/EPIC_noun_classes.csv",
        [[i, n, str(list(lang.SHAPE_WORDS[n]))] for i, n in enumerate(SHAPES)],
        header=["noun_id", "class_key", "nouns"],
    )
    train = [s for s in ann.segments if s["split"] == "train"]
    verbs = Counter(s["verb_id"] for s in train)
    nouns = Counter(s["noun_id"] for s in train)
    out.csv(
        f"{root}/EPIC_many_shot_verbs.csv",
        [[k, VERB_KEYS[k]] for k in _many_shot(verbs, len(train))],
        header=["verb_class", "verb"],
    )
    out.csv(
        f"{root}/EPIC_many_shot_nouns.csv",
        [[k, SHAPES[k]] for k in _many_shot(nouns, len(train))],
        header=["noun_class", "noun"],
    )
    # RULSTM ek55: actions.csv (header, leading space in 'action') and headerless segment lists.
    out.lines(
        f"{root}/rulstm/actions.csv",
        [
            "id,action,verb,noun",
            *(
                f"{i}, {v}_{n},{VERB_KEYS.index(v)},{SHAPES.index(n)}"
                for i, (v, n) in enumerate(ACTIONS)
            ),
        ],
    )
    for split, name in (("train", "training"), ("val", "validation"), ("test", "test")):
        out.lines(
            f"{root}/rulstm/{name}.csv",
            (
                f"{s['uid']:05d}, {s['video_id']}, {s['start_frame'] + 1:010d}, {s['end_frame']:010d}, "
                f"{s['verb_id']:03d}, {s['noun_id']:03d}, {s['action_id']:04d}"
                for s in ann.segments
                if s["split"] == split
            ),
        )


# ---------------------------------------------------------------------------------------------
# EGTEA Gaze+ (official action_annotation files + RULSTM csv files)


def _egtea_verb(verb: str) -> str:
    return verb[:1].upper() + verb[1:]


def write_egtea_gaze_plus(
    ann: WorldAnnotations, out: TreeWriter, root: str = "formats/egtea_gaze_plus"
) -> None:
    # Official: "<Verb> <noun> <id>" lines with 1-based ids; split lines "clip action verb noun".
    out.lines(
        f"{root}/action_idx.txt",
        (f"{_egtea_verb(v)} {n} {i + 1}" for i, (v, n) in enumerate(ACTIONS)),
    )
    out.lines(
        f"{root}/verb_idx.txt", (f"{_egtea_verb(v)} {i + 1}" for i, v in enumerate(VERB_KEYS))
    )
    out.lines(f"{root}/noun_idx.txt", (f"{n} {i + 1}" for i, n in enumerate(SHAPES)))

    def clip_name(s: dict[str, Any]) -> str:
        return (
            f"{s['video_id']}-{round(s['start'] * 1000):07d}-{round(s['end'] * 1000):07d}-"
            f"F{s['start_frame'] + 1:06d}-F{s['end_frame']:06d}"
        )

    for split in SPLITS:
        out.lines(
            f"{root}/{split}_split1.txt",
            (
                f"{clip_name(s)} {s['action_id'] + 1} {s['verb_id'] + 1} {s['noun_id'] + 1}"
                for s in ann.segments
                if s["split"] == split
            ),
        )
    # RULSTM egtea: headerless "id, v_n, Verb_noun" and "uid,video_id,start,end,verb,noun,action".
    out.lines(
        f"{root}/rulstm/actions.csv",
        (
            f"{i}, {VERB_KEYS.index(v)}_{SHAPES.index(n)}, {_egtea_verb(v)}_{n}"
            for i, (v, n) in enumerate(ACTIONS)
        ),
    )
    for split, name in (("train", "training1"), ("val", "validation1"), ("test", "test1")):
        out.lines(
            f"{root}/rulstm/{name}.csv",
            (
                f"{s['uid']},{s['video_id']},{s['start_frame'] + 1},{s['end_frame']},"
                f"{s['verb_id']},{s['noun_id']},{s['action_id']}"
                for s in ann.segments
                if s["split"] == split
            ),
        )


# ---------------------------------------------------------------------------------------------
# COCO captions


def write_coco_captions(ann: WorldAnnotations, out: TreeWriter, root: str = "formats/coco") -> None:
    info = {
        "description": "videolang synthetic world: middle frames of events",
        "version": "1.0",
        "year": 0,
        "contributor": "videolang",
        "url": "",
        "date_created": "",
    }
    ann_id = 0
    for split in SPLITS:
        images, annotations = [], []
        for im in ann.images:
            if im["split"] != split:
                continue
            images.append(
                {
                    "id": im["image_id"],
                    "file_name": im["file_name"],
                    "width": im["width"],
                    "height": im["height"],
                    "license": 0,
                    "coco_url": "",
                    "flickr_url": "",
                    "date_captured": "",
                }
            )
            for cap in im["captions"]:
                annotations.append({"id": ann_id, "image_id": im["image_id"], "caption": cap})
                ann_id += 1
        out.json(
            f"{root}/captions_{split}.json",
            {
                "info": info,
                "licenses": [{"id": 0, "name": "CC0", "url": ""}],
                "images": images,
                "annotations": annotations,
            },
        )


# ---------------------------------------------------------------------------------------------
# GLUE (SST-2 and RTE layouts, as read by HF / VidLanKD run_glue)


def write_glue(ann: WorldAnnotations, out: TreeWriter, root: str = "formats/glue") -> None:
    for split in ("train", "dev"):
        out.csv(
            f"{root}/SST-2/{split}.tsv",
            ann.sst[split],
            header=["sentence", "label"],
            delimiter="\t",
        )
        out.csv(
            f"{root}/RTE/{split}.tsv",
            [[i, *row] for i, row in enumerate(ann.rte[split])],
            header=["index", "sentence1", "sentence2", "label"],
            delimiter="\t",
        )
    # GLUE test files carry no labels; ours are in test_labels.tsv.
    out.csv(
        f"{root}/SST-2/test.tsv",
        [[i, s] for i, (s, _) in enumerate(ann.sst["test"])],
        header=["index", "sentence"],
        delimiter="\t",
    )
    out.csv(
        f"{root}/SST-2/test_labels.tsv",
        [[i, y] for i, (_, y) in enumerate(ann.sst["test"])],
        header=["index", "label"],
        delimiter="\t",
    )
    out.csv(
        f"{root}/RTE/test.tsv",
        [[i, a, b] for i, (a, b, _) in enumerate(ann.rte["test"])],
        header=["index", "sentence1", "sentence2"],
        delimiter="\t",
    )
    out.csv(
        f"{root}/RTE/test_labels.tsv",
        [[i, y] for i, (_, _, y) in enumerate(ann.rte["test"])],
        header=["index", "label"],
        delimiter="\t",
    )
