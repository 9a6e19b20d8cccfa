"""Action-anticipation inference: the student's export answers as its test did, from raw videos,
with the folder copied away and the feature store and tokenizer deleted; batch independence;
the observation window; the text teacher and the MLM intermediate."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import videolang
from videolang.data.anticipation import (
    ActionVocab,
    AnticipationDataConfig,
    TeacherPredictions,
    TextCollator,
    history_text,
    history_token_ids,
    read_action_vocab,
    read_queries,
)
from videolang.data.stores import FeatureStore
from videolang.data.text import build_wordpiece_tokenizer, load_tokenizer
from videolang.engine import fit, test
from videolang.errors import ConfigError
from videolang.metrics.anticipation import anticipation_metrics
from videolang.pipelines import Features
from videolang.synth import synthesize_world

TRAINER = {"enable_progress_bar": False, "num_sanity_val_steps": 0, "log_every_n_steps": 1}
RATE = 5  # feature rows per second


def _data(root, **kw) -> dict:
    return {"format": "synthetic", "root": str(root / "world"), "anticipation_gap": 0.2, "hist_len": 3,
            "tokenizer": str(root / "tokenizer"), "max_text_len": 12, "features": str(root / "features"),
            "max_rows": 8, "batch_size": 8, **kw}


def _config(root, recipe: str, model: dict, epochs: int, **data) -> dict:
    return {"recipe": recipe, "name": recipe.split(".")[1], "seed": 0, "model": model, "data": _data(root, **data),
            "optim": {"lr": 3e-3}, "trainer": {**TRAINER, "max_epochs": epochs},
            "run": {"root": str(root / "runs"), "plots": False}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """MLM -> teacher and a student on a fp16 pooled-pixels store (5 rows/s), each export tested
    (``model.init=<export>``); then the exports are copied away and the store, the tokenizer and
    the runs are deleted."""
    from videolang.pipelines.features import run_extraction

    root = tmp_path_factory.mktemp("antpipe")
    synthesize_world(root / "world", 40, seed=3, size=32, duration=3.0, progress=False)
    run_extraction(str(root / "world" / "videos"), "pooled-pixels", str(root / "features"), dtype="float16",
                   progress=False, backbone_options={"grid": 2, "rows_per_second": RATE})
    build_wordpiece_tokenizer(root / "world/text/action_sequences.txt", root / "tokenizer", vocab_size=120)
    vocab_size = len(load_tokenizer(root / "tokenizer"))
    mlm = fit(_config(root, "anticipation.mlm", {"name": "anticipation-teacher-tiny", "vocab_size": vocab_size}, 1,
                      mlm_corpus=str(root / "world/text/action_sequences.txt")))
    teacher_cfg = _config(root, "anticipation.teacher", {"name": "anticipation-teacher-tiny",
                                                         "init": str(mlm.run_dir / "export"),
                                                         "export_splits": ["test"]}, 2)
    teacher = fit(teacher_cfg)
    teacher_logged = test(teacher_cfg, [f"model.init={teacher.run_dir / 'export'}"]).metrics["test"]
    student_cfg = _config(root, "anticipation.student", {"name": "anticipation-student-tiny"}, 3)
    student = fit(student_cfg)
    student_logged = test(student_cfg, [f"model.init={student.run_dir / 'export'}"]).metrics["test"]

    d = AnticipationDataConfig(**_data(root))
    vocab = read_action_vocab("synthetic", root / "world")
    queries = read_queries(d, "test", vocab)
    store = FeatureStore(root / "features")
    stored = {q.video_id: np.array(store[q.video_id]) for q in queries[:3]}
    models = root / "models"
    for name, run in (("mlm", mlm), ("teacher", teacher), ("student", student)):
        shutil.copytree(run.run_dir / "export", models / name)
    for gone in ("features", "tokenizer", "runs"):
        shutil.rmtree(root / gone)
    return {"root": root, "models": models, "vocab": vocab, "queries": queries, "stored": stored,
            "student_logged": student_logged, "teacher_logged": teacher_logged}


def _video(runs, video_id: str) -> str:
    return str(runs["root"] / "world" / "videos" / f"{video_id}.mp4")


def _metrics(logits: torch.Tensor, queries, vocab: ActionVocab) -> dict[str, float]:
    def targets(key):
        return torch.tensor([getattr(q, key) for q in queries])

    return anticipation_metrics(logits, targets("action"), action_verbs=vocab.verbs, action_nouns=vocab.nouns,
                                verb_targets=targets("verb"), noun_targets=targets("noun"))


def test_student_reproduces_its_test_metrics_from_raw_videos(runs):
    pipe = videolang.load(runs["models"] / "student")
    video = pipe.spec.video
    assert (video.feature_rate, video.max_len, video.backbone.dtype) == (RATE, 8, "float16")
    assert pipe.spec.anticipation_gap == 0.2 and len(pipe.labels.actions) == runs["vocab"].num_actions
    queries = runs["queries"]
    assert len(queries) >= 12
    probs = pipe.action_probabilities([_video(runs, q.video_id) for q in queries],
                                      observed_until=[q.observe_end for q in queries])
    got = _metrics(probs.log(), queries, runs["vocab"])  # log-softmax: the logits' ranks and softmax
    logged = runs["student_logged"]
    assert set(got) == {k.removeprefix("test/") for k in logged}
    for name, value in got.items():
        assert value == pytest.approx(logged[f"test/{name}"], abs=1e-4), name
    # non-degenerate: distinct answers per query, no ties among the top-5 that the metrics rank
    assert len({tuple(p.round(decimals=5).tolist()) for p in probs}) == len(queries)
    top = probs.topk(6, dim=1).values
    assert bool((top[:, :-1] > top[:, 1:]).all())


def test_raw_video_gives_the_stored_features(runs):
    pipe = videolang.load(runs["models"] / "student")
    for video_id, rows in runs["stored"].items():
        got = pipe.video_features(_video(runs, video_id))
        assert torch.equal(got, torch.from_numpy(rows.astype(np.float32))), video_id  # fp16-rounded, as stored


def test_answers_do_not_depend_on_the_batch(runs):
    pipe = videolang.load(runs["models"] / "student")
    ids = sorted({q.video_id for q in runs["queries"]})[:4]
    videos = [_video(runs, v) for v in ids]
    ends = [0.45, 2.9, None, 1.2]  # 2, 8 (of 14), all 15 and 6 rows: mixed lengths
    alone = torch.cat([pipe.action_probabilities(v, e) for v, e in zip(videos, ends, strict=True)])
    torch.testing.assert_close(pipe.action_probabilities(videos, ends), alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.action_probabilities(videos[::-1], ends[::-1]), alone.flip(0), atol=1e-5, rtol=0)
    # bytes and feature rows of the same video answer alike
    with open(videos[0], "rb") as f:
        torch.testing.assert_close(pipe.action_probabilities(f.read(), 0.45), alone[:1], atol=1e-5, rtol=0)
    rows = pipe.video_features(videos[0])
    torch.testing.assert_close(pipe.action_probabilities(Features(rows), 0.45), alone[:1], atol=1e-6, rtol=0)
    preds = pipe.anticipate(videos, top_k=3, observed_until=ends)
    assert [len(p) for p in preds] == [3] * 4
    assert preds[0][0].label == pipe.labels.actions[int(alone[0].argmax())]


def test_observation_window(runs):
    pipe = videolang.load(runs["models"] / "student")
    rows = pipe.video_features(_video(runs, runs["queries"][0].video_id))
    assert len(rows) == 15  # 3 s at 5 rows/s
    whole = pipe.action_probabilities(Features(rows))
    # the newest max_len rows, whatever came before
    torch.testing.assert_close(pipe.action_probabilities(Features(rows[-8:])), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(pipe.action_probabilities(Features(rows), 99.0), whole, atol=0, rtol=0)
    # until 1.39 s: the rows that end by then (6: [0, 1.2) s), not the one that ends at 1.4 s
    torch.testing.assert_close(pipe.action_probabilities(Features(rows), 1.39),
                               pipe.action_probabilities(Features(rows[:6])), atol=1e-6, rtol=0)
    assert not torch.allclose(pipe.action_probabilities(Features(rows), 1.4),
                              pipe.action_probabilities(Features(rows[:6])), atol=1e-4)
    with pytest.raises(ValueError, match=r"nothing observed until 0\.1 s"):
        pipe.action_probabilities(Features(rows), 0.1)
    with pytest.raises(ValueError, match="2 entries for 1 videos"):
        pipe.action_probabilities(Features(rows), [1.0, 2.0])


def test_verbs_and_nouns_are_scored_as_evaluated(runs):
    pipe = videolang.load(runs["models"] / "student")
    assert pipe.spec.verb_noun_mode == "marginalize"
    rows = Features(pipe.video_features(_video(runs, runs["queries"][0].video_id)))
    probs = pipe.action_probabilities(rows)[0]
    verbs = pipe.anticipate(rows, top_k=100, level="verb")[0]
    assert len(verbs) == len(pipe.labels.verbs) and sum(p.score for p in verbs) == pytest.approx(1.0)
    name = verbs[0].label
    members = [a for a, v in enumerate(pipe.labels.action_verbs) if pipe.labels.verbs[v] == name]
    assert verbs[0].score == pytest.approx(float(probs[members].sum()), abs=1e-6)
    assert pipe.labels.verbs[:2] == ["move-left", "move-right"] and "circle" in pipe.labels.nouns


def test_teacher_reproduces_its_test_metrics_and_predictions(runs):
    pipe = videolang.load(runs["models"] / "teacher")
    assert pipe.spec.task == "teacher"
    queries = runs["queries"]
    probs = pipe.action_probabilities([q.history for q in queries])
    got = _metrics(probs.log(), queries, runs["vocab"])
    for name, value in got.items():
        assert value == pytest.approx(runs["teacher_logged"][f"test/{name}"], abs=1e-4), name
    # the exported predictions are the pipeline's answers; names work as well as ids
    stored = TeacherPredictions(runs["models"] / "teacher" / "predictions" / "test.safetensors")
    logits, found = stored.lookup([q.uid for q in queries])
    assert bool(found.all())
    torch.testing.assert_close(logits.softmax(-1), probs, atol=1e-5, rtol=0)
    names = [[pipe.labels.actions[a] for a in q.history] for q in queries[:3]]
    torch.testing.assert_close(pipe.action_probabilities(names), probs[:3], atol=1e-6, rtol=0)
    alone = torch.cat([pipe.action_probabilities([q.history]) for q in queries[:5]])
    torch.testing.assert_close(alone, probs[:5], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unknown action"):
        pipe.anticipate([["fly <v> kite"]])


def test_teacher_tokenization_is_the_recipes(runs):
    pipe = videolang.load(runs["models"] / "teacher")
    vocab = runs["vocab"]
    texts = [history_text(q.history, vocab, 3) for q in runs["queries"]]
    texts.append(history_text(list(range(20)), vocab, 20))  # longer than max_len: left-truncated
    want = TextCollator(pipe.tokenizer, 12)([{"text": t} for t in texts])
    got = history_token_ids(pipe.tokenizer, texts, pipe.spec.text.max_len)
    for row, ids, mask in zip(got, want["input_ids"], want["attention_mask"], strict=True):
        assert row == ids[mask.bool()].tolist()
    assert len(got[-1]) == 12


def test_mlm_export_says_what_it_is(runs):
    with pytest.raises(ConfigError, match=r"anticipation\.mlm export.*model\.init of anticipation\.teacher"):
        videolang.load(runs["models"] / "mlm")
