"""Every annotation and format file parses, references real videos and says what it should."""

from __future__ import annotations

import ast
import csv
import io
import json
from pathlib import Path

import pytest

from videolang.synth import ACTIONS, CLASS_NAMES, SHAPES, VERB_KEYS, load_videos
from videolang.synth import language as lang
from videolang.synth.world import VERB_BY_KEY


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _tsv(path: Path, delimiter: str = "\t") -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8")), delimiter=delimiter))


@pytest.fixture(scope="module")
def ctx(world):
    root, manifest = world
    videos = load_videos(root)
    return root, manifest, videos, {v["id"]: v for v in videos}


def test_videos_jsonl_schema(ctx):
    root, _, videos, _ = ctx
    assert [v["id"] for v in videos] == [f"vid{i:05d}" for i in range(len(videos))]
    for v in videos:
        assert (root / v["path"]).is_file() and v["path"] == f"videos/{v['id']}.mp4"
        assert (
            v["num_frames"] == round(v["fps"] * v["duration"]) and v["width"] == v["height"] == 64
        )
        assert 1 <= len(v["objects"]) <= 3
        assert len({o["shape"] for o in v["objects"]}) == len(v["objects"])
        for o in v["objects"]:
            assert {"shape", "colour", "size"} <= set(o)
        assert 2 <= len(v["events"]) <= 6
        for e in v["events"]:
            assert {
                "start",
                "end",
                "verb",
                "noun",
                "action",
                "verb_id",
                "noun_id",
                "action_id",
                "caption",
            } <= set(e)
            assert ACTIONS[e["action_id"]] == (e["verb"], e["noun"])
            assert VERB_KEYS[e["verb_id"]] == e["verb"] and SHAPES[e["noun_id"]] == e["noun"]
            assert v["objects"][e["object"]]["shape"] == e["noun"]
        assert v["label"]["name"] == CLASS_NAMES[v["label"]["id"]]


def test_splits_are_disjoint_and_cover_all_videos(ctx):
    root, manifest, videos, _ = ctx
    seen: list[str] = []
    for split in ("train", "val", "test"):
        ids = (root / f"annotations/splits/{split}.txt").read_text().split()
        assert ids == manifest["splits"][split] and ids
        assert all(v["split"] == split for v in videos if v["id"] in ids)
        seen += ids
    assert sorted(seen) == sorted(v["id"] for v in videos) and len(set(seen)) == len(seen)


def test_every_record_references_a_real_video_in_its_split(ctx):
    root, _, _, by_id = ctx
    for name in ("captions", "qa", "mc", "action_mc", "segments", "image_captions"):
        rows = _jsonl(root / f"annotations/{name}.jsonl")
        assert rows, name
        for r in rows:
            assert r["video_id"] in by_id and r["split"] == by_id[r["video_id"]]["split"], name


def test_captions_name_motions(ctx):
    root, *_ = ctx
    rows = _jsonl(root / "annotations/captions.jsonl")
    per_video: dict[str, list[str]] = {}
    for r in rows:
        per_video.setdefault(r["video_id"], []).append(r["caption"])
    phrases = [p for ps in lang.VERB_PHRASES.values() for p in ps]
    for caps in per_video.values():
        assert len(caps) == 5 and len(set(caps)) == 5
        assert all(any(p in c for p in phrases) for c in caps)
    assert len({r["caption_id"] for r in rows}) == len(rows)


def test_open_ended_answers_are_in_the_vocabulary(ctx):
    root, *_ = ctx
    vocab = json.loads((root / "annotations/qa_answer_vocab.json").read_text())
    assert sorted(vocab.values()) == list(range(len(vocab)))
    for q in _jsonl(root / "annotations/qa.jsonl"):
        assert q["answer"] in vocab and vocab[q["answer"]] == q["answer_id"]
        assert len(q["answer"].split()) == 1 and q["answer_type"] in lang.ANSWER_TYPES


def test_open_ended_answers_are_true(ctx):
    root, _, _, by_id = ctx
    for q in _jsonl(root / "annotations/qa.jsonl"):
        v = by_id[q["video_id"]]
        if q["question"].endswith("do first?"):
            name = q["question"][len("what does the ") : -len(" do first?")]
            obj = next(i for i, o in enumerate(v["objects"]) if lang.object_phrase(o) == name)
            first = next(e for e in v["events"] if e["object"] == obj)
            assert VERB_BY_KEY[first["verb"]].answer == q["answer"]
        if q["answer_type"] == "object":
            assert q["answer"] in {o["shape"] for o in v["objects"]}


def test_multiple_choice_has_exactly_one_correct_option(ctx):
    root, *_ = ctx
    for m in _jsonl(root / "annotations/mc.jsonl"):
        assert len(m["options"]) == 5 and len(set(m["options"])) == 5
        assert m["option_kinds"].count("correct") == 1
        assert m["option_kinds"][m["answer"]] == "correct"
    # No text-only give-aways: every option names only the video's colours, and the true
    # option is not systematically shorter (a text-only VLM once scored 80 % on these items).
    videos = {v["id"]: v for v in _jsonl(root / "annotations/videos.jsonl")}
    colour_words = set(lang.COLOUR_NAMES)
    lengths: dict[bool, list[int]] = {True: [], False: []}
    for m in _jsonl(root / "annotations/mc.jsonl"):
        scene = {o["colour"] for o in videos[m["video_id"]]["objects"]}
        for i, option in enumerate(m["options"]):
            assert set(option.replace(",", " ").split()) & colour_words <= scene, option
            lengths[i == m["answer"]].append(len(option.split()))
    mean = {k: sum(v) / len(v) for k, v in lengths.items()}
    assert abs(mean[True] - mean[False]) < 1.5, mean
    for a in _jsonl(root / "annotations/action_mc.jsonl"):
        assert len(set(a["option_verbs"])) == 5
        assert a["options"][a["answer"]] == lang.VERB_PHRASES[a["option_verbs"][a["answer"]]][0]


def test_extra_multiple_choice_items_for_training(ctx, tmp_path):
    from videolang.synth import write_extra_multiple_choice

    root, _, videos, _ = ctx
    out = tmp_path / "mc_train.jsonl"
    n = write_extra_multiple_choice(root, out, per_video=3)
    items = _jsonl(out)
    train = [v for v in videos if v["split"] == "train"]
    assert n == len(items) == 3 * len(train) and {m["split"] for m in items} == {"train"}
    world = _jsonl(root / "annotations/mc.jsonl")
    assert not {m["qid"] for m in items} & {m["qid"] for m in world}
    assert len({m["qid"] for m in items}) == len(items)
    first = {m["video_id"]: m["options"] for m in world}
    by_video: dict[str, list[tuple]] = {}
    for m in items:
        assert m["option_kinds"].count("correct") == 1 and m["option_kinds"][m["answer"]] == "correct"
        by_video.setdefault(m["video_id"], []).append(tuple(m["options"]))
    assert set(by_video) == {v["id"] for v in train}
    # fresh items: not the world's own item, and not all alike
    assert all(first[vid] != list(o) for vid, opts in by_video.items() for o in opts)
    assert all(len(set(opts)) == 3 for opts in by_video.values())
    # deterministic, atomic and refusing to overwrite by default
    again = tmp_path / "again.jsonl"
    write_extra_multiple_choice(root, again, per_video=3)
    assert again.read_bytes() == out.read_bytes()
    with pytest.raises(Exception, match="exists"):
        write_extra_multiple_choice(root, out, per_video=3)
    with pytest.raises(Exception, match="per_video"):
        write_extra_multiple_choice(root, tmp_path / "zero.jsonl", per_video=0)
    # the command line: the same file; refusing to overwrite exits 2 naming the path
    from videolang.cli.main import main

    cli = tmp_path / "cli.jsonl"
    assert main(["data", "synth-mc", str(root), "--out", str(cli), "--per-video", "3"]) == 0
    assert cli.read_bytes() == out.read_bytes()
    assert main(["data", "synth-mc", str(root), "--out", str(cli)]) == 2


def test_segments_and_timestamped_captions(ctx):
    root, _, videos, _ = ctx
    segs = _jsonl(root / "annotations/segments.jsonl")
    assert [s["uid"] for s in segs] == list(range(len(segs)))
    raw = json.loads((root / "formats/howto100m/raw_caption.json").read_text())
    assert set(raw) == {v["id"] for v in videos}
    for v in videos:
        r = raw[v["id"]]
        assert len(r["start"]) == len(r["end"]) == len(r["text"]) == len(v["events"])
        assert r["start"][0] == 0.0 and r["end"][-1] == v["duration"]
        mine = [s for s in segs if s["video_id"] == v["id"]]
        assert [s["history"] for s in mine] == [
            [e["action_id"] for e in v["events"][:k]] for k in range(len(v["events"]))
        ]


def test_image_captions_are_still_descriptions(ctx):
    root, *_ = ctx
    for row in _jsonl(root / "annotations/image_captions.jsonl"):
        assert (root / row["path"]).is_file() and len(row["captions"]) == 3
        for cap in row["captions"]:
            assert not set(cap.split()) & lang.MOTION_WORDS, cap


def test_text_corpus_and_action_sequences(ctx):
    root, manifest, *_ = ctx
    corpus = (root / "text/corpus.txt").read_text().splitlines()
    seqs = (root / "text/action_sequences.txt").read_text().splitlines()
    assert len(corpus) == len(seqs) == manifest["counts"]["corpus_sentences"] >= 1000
    keys = {f"{v} <v> {n}" for v, n in ACTIONS}
    for line in seqs[:200]:
        assert all(part in keys for part in line.split(" <a> "))


# ---------------------------------------------------------------------------------------------
# converters


def test_msrvtt_formats(ctx):
    root, _, videos, by_id = ctx
    d = root / "formats/msrvtt"
    data = json.loads((d / "MSRVTT_data.json").read_text())
    assert {v["video_id"] for v in data["videos"]} == set(by_id)
    assert {v["split"] for v in data["videos"]} <= {"train", "validate", "test"}
    assert len(data["sentences"]) == 5 * len(videos)
    assert all(s["video_id"] in by_id for s in data["sentences"])
    tv = json.loads((d / "train_val_videodatainfo.json").read_text())
    assert {v["split"] for v in tv["videos"]} <= {"train", "validate"}
    js = _tsv(d / "MSRVTT_JSFUSION_test.csv", ",")
    assert js[0] == ["key", "vid_key", "video_id", "sentence"]
    assert {r[2] for r in js[1:]} == {v["id"] for v in videos if v["split"] == "test"}
    mc = _tsv(d / "MSR_MC_test.csv")
    assert mc[0] == ["key", "vid_key", "a1", "a2", "a3", "a4", "a5", "answer"]
    assert all(0 <= int(r[7]) < 5 and r[1] in by_id for r in mc[1:])


def test_clipbert_and_tgif_formats(ctx):
    root, _, _, by_id = ctx
    d = root / "formats/clipbert"
    for split in ("train", "val", "test"):
        for r in _jsonl(d / f"msrvtt_retrieval/{split}.jsonl"):
            assert set(r) == {"clip_name", "caption"} and by_id[r["clip_name"]]["split"] == split
        ans2label = json.loads((d / "tgif_qa/frameqa_trainval_ans2label.json").read_text())
        for r in _jsonl(d / f"tgif_qa/frameqa_{split}.jsonl"):
            assert set(r) == {"gif_name", "question", "answer", "answer_type"}
            assert r["answer"] in ans2label
        for r in _jsonl(d / f"tgif_qa/action_{split}.jsonl"):
            assert len(r["options"]) == 5 and 0 <= r["answer"] < 5
    for r in _jsonl(d / "msrvtt_retrieval_mc/msrvtt_retrieval_mc_test.jsonl"):
        assert set(r) == {"qid", "clip_name", "options", "answer"}
    rows = _tsv(root / "formats/tgif_qa/Train_frameqa_question.csv")
    assert rows[0] == ["gif_name", "question", "answer", "vid_id", "key", "type"]
    assert all(r[0] in by_id and int(r[5]) in (0, 1, 2, 4) for r in rows[1:])
    rows = _tsv(root / "formats/tgif_qa/Train_action_question.csv")
    assert rows[0][:8] == ["gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer"]


def test_action_recognition_lists(ctx):
    root, _, _, by_id = ctx
    classes = (root / "formats/ucf101/classInd.txt").read_text().splitlines()
    assert classes == [f"{i + 1} {c}" for i, c in enumerate(CLASS_NAMES)]
    for line in (root / "formats/ucf101/trainlist01.txt").read_text().splitlines():
        path, label = line.split()
        assert (root / "videos" / path).is_file()
        assert by_id[Path(path).stem]["label"]["id"] + 1 == int(label)
    seen = []
    for split in ("train", "val", "test"):
        for line in (
            (root / f"formats/mmaction/synth_{split}_list_videos.txt").read_text().splitlines()
        ):
            path, label = line.split()
            v = by_id[Path(path).stem]
            assert v["split"] == split and v["label"]["id"] == int(label)
            seen.append(v["id"])
    assert sorted(seen) == sorted(by_id)


def test_epic_kitchens_55_format(ctx):
    root, _, _, by_id = ctx
    d = root / "formats/epic_kitchens_55"
    segs = _jsonl(root / "annotations/segments.jsonl")
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
    n = 0
    for split in ("train", "val", "test"):
        rows = _tsv(d / f"EPIC_{split}_action_labels.csv", ",")
        assert rows[0] == header
        for r in rows[1:]:
            rec = dict(zip(header, r, strict=True))
            v = by_id[rec["video_id"]]
            assert v["split"] == split
            assert VERB_KEYS[int(rec["verb_class"])] == rec["verb"]
            assert ast.literal_eval(rec["all_noun_classes"]) == [int(rec["noun_class"])]
            hh, mm, ss = rec["start_timestamp"].split(":")
            assert (
                abs(
                    int(hh) * 3600
                    + int(mm) * 60
                    + float(ss)
                    - (int(rec["start_frame"]) - 1) / v["fps"]
                )
                < 0.011
            )
            n += 1
    assert n == len(segs)
    verbs = _tsv(d / "EPIC_verb_classes.csv", ",")
    assert verbs[0] == ["verb_id", "class_key", "verbs"] and len(verbs) == len(VERB_KEYS) + 1
    assert all(isinstance(ast.literal_eval(r[2]), list) for r in verbs[1:])
    nouns = _tsv(d / "EPIC_noun_classes.csv", ",")
    assert nouns[0] == ["noun_id", "class_key", "nouns"] and len(nouns) == len(SHAPES) + 1
    actions = (d / "rulstm/actions.csv").read_text().splitlines()
    assert actions[0] == "id,action,verb,noun" and len(actions) == len(ACTIONS) + 1
    for line in (d / "rulstm/training.csv").read_text().splitlines():
        _, vid, s, e, verb, noun, action = (x.strip() for x in line.split(","))
        assert ACTIONS[int(action)] == (VERB_KEYS[int(verb)], SHAPES[int(noun)])
        assert int(s) <= int(e) and by_id[vid]["split"] == "train"


def test_egtea_format(ctx):
    root, _, _, by_id = ctx
    d = root / "formats/egtea_gaze_plus"
    actions = (d / "action_idx.txt").read_text().splitlines()
    assert len(actions) == len(ACTIONS) and actions[0].endswith(" 1")
    for split in ("train", "test"):
        for line in (d / f"{split}_split1.txt").read_text().splitlines():
            clip, action, verb, noun = line.split()
            assert by_id[clip.split("-")[0]]["split"] == split
            assert ACTIONS[int(action) - 1] == (VERB_KEYS[int(verb) - 1], SHAPES[int(noun) - 1])
    # TDK teacher text: last column, '_' -> ' <v> '
    last = (d / "rulstm/actions.csv").read_text().splitlines()[0].split(", ")[-1]
    assert last.lower().replace("_", " <v> ") == "move-left <v> circle"


def test_coco_and_glue_formats(ctx):
    root, manifest, *_ = ctx
    total = 0
    for split in ("train", "val", "test"):
        coco = json.loads((root / f"formats/coco/captions_{split}.json").read_text())
        ids = {im["id"] for im in coco["images"]}
        assert all((root / "images" / im["file_name"]).is_file() for im in coco["images"])
        assert all(a["image_id"] in ids for a in coco["annotations"])
        total += len(coco["annotations"])
    assert total == manifest["counts"]["image_captions"]
    g = root / "formats/glue"
    sst = _tsv(g / "SST-2/train.tsv")
    assert sst[0] == ["sentence", "label"] and {r[1] for r in sst[1:]} == {"0", "1"}
    assert _tsv(g / "SST-2/test.tsv")[0] == ["index", "sentence"]
    rte = _tsv(g / "RTE/dev.tsv")
    assert rte[0] == ["index", "sentence1", "sentence2", "label"]
    assert {r[3] for r in rte[1:]} == {"entailment", "not_entailment"}
    assert _tsv(g / "RTE/test.tsv")[0] == ["index", "sentence1", "sentence2"]
    labels = [r[3] for r in _tsv(g / "RTE/train.tsv")[1:]]
    assert abs(labels.count("entailment") - labels.count("not_entailment")) < 0.2 * len(labels)
