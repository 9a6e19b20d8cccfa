"""Anticipation data: action text, the three annotation layouts, queries, teacher predictions,
observed clips, and the splits the recipes read by objective."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from videolang.data.anticipation import (
    AnticipationMLMDataConfig,
    AnticipationSplits,
    AnticipationStudentDataConfig,
    AnticipationTeacherDataConfig,
    CorpusLines,
    ObservedClips,
    Segment,
    TeacherPredictions,
    TextCollator,
    build_queries,
    class_balanced_weights,
    collate_clips,
    egtea_action_text,
    epic_action_text,
    history_text,
    read_action_vocab,
    read_many_shot_classes,
    read_queries,
    read_segments,
    save_teacher_predictions,
)
from videolang.data.stores import FeatureStoreWriter
from videolang.data.text import build_wordpiece_tokenizer
from videolang.errors import ConfigError
from videolang.synth import synthesize_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("antic") / "world"
    synthesize_world(root, 12, seed=5, size=32, duration=3.0, progress=False)
    return root


def test_action_text_as_the_original():
    assert egtea_action_text("Inspect/Read_recipe") == "inspect or read <v> recipe"
    assert egtea_action_text("Take_eating:utensil") == "take <v> eating utensil"
    assert epic_action_text(" open_bag:plastic") == "open <v> plastic bag"


def test_three_layouts_give_the_same_segments(world):
    vocab = read_action_vocab("synthetic", world)
    for fmt, folder in (("epic55", "epic_kitchens_55"), ("egtea", "egtea_gaze_plus")):
        other = read_action_vocab(fmt, world / "formats" / folder)
        assert other.verbs == vocab.verbs and other.nouns == vocab.nouns
        assert other.texts == vocab.texts  # "move-left <v> square" in every layout
    assert vocab.num_actions == 52 and vocab.num_verbs == 9 and vocab.num_nouns == 6
    for split in ("train", "test"):
        ours = read_segments("synthetic", world, split)
        epic = read_segments("epic55", world / "formats/epic_kitchens_55", split)
        egtea = read_segments("egtea", world / "formats/egtea_gaze_plus", split, fps=10)
        assert ours, split
        for seg in (epic, egtea):
            assert [(s.video_id, s.action, s.verb, s.noun) for s in seg] == \
                   [(s.video_id, s.action, s.verb, s.noun) for s in ours]
            assert np.allclose([s.start for s in seg], [s.start for s in ours], atol=0.011)
            assert np.allclose([s.end for s in seg], [s.end for s in ours], atol=0.011)
    with pytest.raises(ConfigError, match="fps"):
        read_segments("egtea", world / "formats/egtea_gaze_plus", "train")
    with pytest.raises(ConfigError, match="not found"):
        read_segments("epic55", world, "train")


def test_queries_history_matches_the_world(world):
    stored = {str(r["uid"]): r for r in map(json.loads, (world / "annotations/segments.jsonl").read_text().splitlines())}
    segments = read_segments("synthetic", world, "train")
    queries = build_queries(segments, anticipation_gap=0.2, min_observed=0.0)
    assert queries
    for q in queries:
        rec = stored[q.uid]
        assert list(q.history) == rec["history"] and q.action == rec["action_id"]
        assert q.observe_end == pytest.approx(rec["start"] - 0.2)
    # first events have no history, so no query
    assert all(stored[q.uid]["event_index"] > 0 for q in queries)
    vocab = read_action_vocab("synthetic", world)
    text = history_text((0, 1, 2), vocab, hist_len=2)
    assert text == f"{vocab.texts[1]} <a> {vocab.texts[2]}"


def test_gappy_history_from_context():
    seg = [Segment("a", "v", 0.0, 1.0, 0, 0, 3), Segment("c", "v", 2.0, 3.0, 0, 0, 5)]
    ctx = [Segment("b", "v", 1.0, 2.0, 0, 0, 4)]
    assert build_queries(seg, anticipation_gap=0.5)[0].history == (3,)
    assert build_queries(seg, anticipation_gap=0.5, context=ctx)[0].history == (3, 4)


def test_teacher_predictions_roundtrip_and_missing_uids(tmp_path):
    logits, feats = torch.randn(3, 5), torch.randn(3, 4)
    path = save_teacher_predictions(tmp_path / "p.safetensors", [7, "x", "9"], logits, feats, info={"epoch": 2})
    pred = TeacherPredictions(path)
    assert pred.info == {"epoch": 2} and len(pred) == 3 and 7 in pred and "7" in pred
    values, found = pred.lookup(["9", "7"])
    assert torch.equal(values, logits[[2, 0]]) and found.all()
    with pytest.raises(ConfigError, match=r"no teacher prediction for clip uid.*nope"):
        pred.lookup(["7", "nope"])
    values, found = pred.lookup(["7", "nope"], fallback="uniform")
    assert found.tolist() == [True, False] and values[1].abs().sum() == 0
    assert torch.equal(pred.lookup(["x"], what="features")[0], feats[[1]])
    assert pred.coverage(["7", "x", "q", "r"]) == 0.5
    with pytest.raises(ConfigError, match="duplicate"):
        save_teacher_predictions(tmp_path / "d.safetensors", ["1", "1"], torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="not found"):
        TeacherPredictions(tmp_path / "missing.safetensors")


class _Store(dict):
    pass


def test_observed_clips_never_see_the_gap(tmp_path):
    rate = 5.0
    store = _Store(v=np.arange(20, dtype=np.float32)[:, None].repeat(3, axis=1))  # row j holds j
    segs = [Segment("a", "v", 0.0, 1.0, 0, 0, 1), Segment("b", "v", 2.5, 4.0, 0, 0, 2)]
    queries = build_queries(segs, anticipation_gap=0.5)
    ds = ObservedClips(queries, store, rate, max_rows=4)
    item = ds[0]
    # observation ends at 2.0 s: rows 0..9 end by then; the newest 4 are kept
    assert item["feats"][:, 0].tolist() == [6, 7, 8, 9]
    assert item["feats"].shape[0] == min(4, math.floor(2.0 * rate))
    save_teacher_predictions(tmp_path / "t.safetensors", ["b"], torch.ones(1, 3))
    with_teacher = ObservedClips(queries, store, rate, max_rows=12, teacher=TeacherPredictions(tmp_path / "t.safetensors"))
    batch = collate_clips([with_teacher[0], {**with_teacher[0], "feats": with_teacher[0]["feats"][:3]}])
    assert batch["feats"].shape == (2, 10, 3) and batch["mask"].sum(1).tolist() == [10, 3]
    assert batch["has_teacher"].all() and batch["teacher"].shape == (2, 3)
    with pytest.raises(ConfigError, match="no rows for video"):
        ObservedClips(build_queries([Segment("c", "w", 0, 1, 0, 0, 1), Segment("d", "w", 2, 3, 0, 0, 1)],
                                    anticipation_gap=0.5), store, rate, 4)


def test_class_balanced_weights_like_sklearn():
    targets = torch.tensor([0, 0, 0, 1, 2, 2])
    w = class_balanced_weights(targets, 4)
    assert w.tolist() == pytest.approx([6 / 9, 6 / 3, 6 / 6, 1.0])


def test_many_shot_classes_read_the_first_column(tmp_path):
    (tmp_path / "EPIC_many_shot_verbs.csv").write_text("verb_class,verb\n0,take\n3,open\n")
    (tmp_path / "EPIC_many_shot_nouns.csv").write_text("noun_class,noun\n2,bag\n\n")
    assert read_many_shot_classes(tmp_path) == ({0, 3}, {2})
    with pytest.raises(ConfigError, match=r"data\.many_shot_dir: file not found"):
        read_many_shot_classes(tmp_path / "missing")


@pytest.fixture(scope="module")
def tokenizer(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("antic_tok")
    build_wordpiece_tokenizer(world / "text/action_sequences.txt", folder, vocab_size=120)
    return str(folder)


def test_teacher_splits_read_the_configured_annotation_splits(world, tokenizer):
    d = AnticipationTeacherDataConfig(root=str(world), anticipation_gap=0.2, hist_len=3, max_text_len=16,
                                      tokenizer=tokenizer, val_split=None, test_split="train")
    splits = AnticipationSplits(d)
    assert not splits.has_split("val") and splits.has_split("test")
    test_set = splits.dataset("test")
    assert test_set.queries == read_queries(d, "train", splits.vocab) == splits.dataset("train").queries
    assert splits.dataset("test") is test_set  # built once
    collate = splits.collate_fn("train")
    assert isinstance(collate, TextCollator) and splits.collate_fn("test") is collate
    batch = collate([test_set[i] for i in range(3)])
    assert batch["input_ids"].shape[1] <= 16 and batch["index"].tolist() == [0, 1, 2]
    weights = test_set.class_weights(splits.vocab)
    assert {head: w.shape[0] for head, w in weights.items()} == {"action": 52, "verb": 9, "noun": 6}
    actions = torch.tensor([q.action for q in test_set.queries])
    assert torch.equal(weights["action"], class_balanced_weights(actions, 52))
    with pytest.raises(ConfigError, match="max_text_len must be >= 3"):
        AnticipationSplits(AnticipationTeacherDataConfig(root=str(world), tokenizer=tokenizer,
                                                         max_text_len=2)).collate_fn("train")


def test_mlm_splits_train_on_the_corpus_lines_only(world, tokenizer):
    corpus = world / "text/action_sequences.txt"
    splits = AnticipationSplits(AnticipationMLMDataConfig(root=str(world), mlm_corpus=str(corpus), tokenizer=tokenizer))
    assert [splits.has_split(s) for s in ("train", "val", "test")] == [True, False, False]
    lines = splits.dataset("train")
    assert isinstance(lines, CorpusLines)
    assert lines.lines == [ln.strip() for ln in corpus.read_text().splitlines() if ln.strip()]
    with pytest.raises(ConfigError, match="needs an action-sequence text file"):
        AnticipationSplits(AnticipationMLMDataConfig(root=str(world))).dataset("train")


def test_student_splits_carry_the_teacher_on_the_training_split_only(world, tmp_path):
    vocab = read_action_vocab("synthetic", world)
    videos = {s.video_id for split in ("train", "test") for s in read_segments("synthetic", world, split)}
    with FeatureStoreWriter(tmp_path / "features", dtype="float32") as w:
        for vid in sorted(videos):
            w.add(vid, np.random.default_rng(0).standard_normal((15, 4)).astype(np.float32))
    d = AnticipationStudentDataConfig(root=str(world), anticipation_gap=0.2, features=str(tmp_path / "features"),
                                      feature_rate=5.0, max_rows=6)
    train = read_queries(d, "train", vocab)
    save_teacher_predictions(tmp_path / "t.safetensors", [q.uid for q in train], torch.randn(len(train), 52))
    splits = AnticipationSplits(replace(d, teacher_predictions=str(tmp_path / "t.safetensors")))
    assert splits.collate_fn("train") is collate_clips
    assert "teacher" in splits.dataset("train")[0] and "teacher" not in splits.dataset("test")[0]
    assert splits.dataset("train")[0]["feats"].shape[0] <= 6
    save_teacher_predictions(tmp_path / "small.safetensors", [q.uid for q in train], torch.randn(len(train), 3))
    with pytest.raises(ConfigError, match="3 classes, the dataset has 52 actions"):
        AnticipationSplits(replace(d, teacher_predictions=str(tmp_path / "small.safetensors"))).dataset("train")
    with pytest.raises(ConfigError, match=r"data\.features"):
        AnticipationSplits(AnticipationStudentDataConfig(root=str(world))).dataset("test")


def _world_copy(world, tmp_path):
    import shutil

    root = tmp_path / "w"
    (root / "annotations").mkdir(parents=True)
    shutil.copy(world / "annotations/vocab.json", root / "annotations/vocab.json")
    return root


@pytest.mark.parametrize(("change", "message"), [
    ({"start": float("nan")}, r"segments\.jsonl:1: not valid JSON|NaN"),
    ({"start": 1.5}, r"segments\.jsonl:1: field 'start'.*integer|segments\.jsonl:1: .*starts after it ends"),
    ({"verb_id": 1.5}, r"segments\.jsonl:1: field 'verb_id'"),  # int() truncated this to 1
    ({"action_id": 52}, r"segments\.jsonl:1: field 'action': 52 is not an action id \(0\.\.51\)"),
    ({"action_id": "3"}, r"segments\.jsonl:1: field 'action_id'"),
    ({"end": -1.0}, r"segments\.jsonl:1: field 'end'"),
])
def test_synthetic_segments_are_validated_not_coerced(world, tmp_path, change, message):
    root = _world_copy(world, tmp_path)
    rows = [json.loads(line) for line in (world / "annotations/segments.jsonl").read_text().splitlines()]
    rows[0] = {**rows[0], **change}
    (root / "annotations/segments.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(ConfigError, match=message):
        read_segments("synthetic", root, "train")


def test_verb_of_an_action_must_agree_and_epic_classes_stay_in_the_vocabulary(world, tmp_path):
    root = _world_copy(world, tmp_path)
    rows = [json.loads(line) for line in (world / "annotations/segments.jsonl").read_text().splitlines()]
    rows[2]["verb_id"] = (rows[2]["verb_id"] + 1) % 9
    (root / "annotations/segments.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ConfigError, match=r"segments\.jsonl:3: action \d+ has verb"):
        read_segments("synthetic", root, "test")
    epic = world / "formats/epic_kitchens_55"
    labels = (epic / "EPIC_train_action_labels.csv").read_text().splitlines()
    head = labels[0].split(",")
    cells = labels[1].split(",")
    cells[head.index("noun_class")] = "999"
    bad = tmp_path / "epic"
    (bad / "rulstm").mkdir(parents=True)
    (bad / "rulstm/actions.csv").write_text((epic / "rulstm/actions.csv").read_text())
    (bad / "EPIC_train_action_labels.csv").write_text("\n".join([labels[0], ",".join(cells), *labels[2:]]))
    with pytest.raises(ConfigError, match=r"labels\.csv:2: field 'noun': 999 is not a noun id"):
        read_segments("epic55", bad, "train")
    cells[head.index("noun_class")], cells[head.index("start_timestamp")] = "0", "00:00:09.00"
    (bad / "EPIC_train_action_labels.csv").write_text("\n".join([labels[0], ",".join(cells), *labels[2:]]))
    with pytest.raises(ConfigError, match=r"labels\.csv:2: .*starts after it ends"):
        read_segments("epic55", bad, "train")


def test_many_shot_ids_are_integers_of_the_vocabulary(world, tmp_path):
    vocab = read_action_vocab("synthetic", world)
    (tmp_path / "EPIC_many_shot_nouns.csv").write_text("noun_class,noun\n2,bag\n")
    (tmp_path / "EPIC_many_shot_verbs.csv").write_text("verb_class,verb\n1.7,take\n")  # int() truncated to 1
    with pytest.raises(ConfigError, match=r"verbs\.csv:2: field 'verb_class'"):
        read_many_shot_classes(tmp_path)
    (tmp_path / "EPIC_many_shot_verbs.csv").write_text("verb_class,verb\n40,take\n")
    with pytest.raises(ConfigError, match=r"verbs\.csv:2: field 'verb_class': 40 is not a class"):
        read_many_shot_classes(tmp_path, vocab)


def test_unreadable_feature_rows_are_counted_skips_in_training(tmp_path):
    from videolang.data.datasets import SkippedSample

    class Broken(dict):
        def __getitem__(self, key):
            raise OSError("shard truncated")

    segs = [Segment("a", "v", 0.0, 1.0, 0, 0, 1), Segment("b", "v", 2.5, 4.0, 0, 0, 2),
            Segment("c", "w", 0.0, 0.5, 0, 0, 1), Segment("d", "w", 0.6, 1.0, 0, 0, 2)]
    queries = build_queries(segs, anticipation_gap=0.5)
    store = _Store(v=np.ones((20, 3), np.float32), w=np.ones((20, 3), np.float32))
    clips = ObservedClips(queries, store, 5.0, 4, skip_unreadable=True)
    short = clips[1]  # query d observes 0.1 s: no row of 0.2 s ends by then
    assert isinstance(short, SkippedSample) and short.source == "w" and "no feature row" in short.reason
    batch = collate_clips([clips[0], short])
    assert batch["feats"].shape[0] == 1 and [s.source for s in batch["skipped"]] == ["w"]
    broken = ObservedClips(queries, Broken(v=1, w=1), 5.0, 4, skip_unreadable=True)
    assert collate_clips([broken[0], broken[1]]) == {"skipped": [broken[0], broken[1]]}
    with pytest.raises(ConfigError, match="no feature row ends"):  # outside training runs: an error
        ObservedClips(queries, store, 5.0, 4)[1]
