"""ClipBERT data: per-task clip sampling as ClipBERT chooses clips (jayleicn/ClipBERT
src/datasets/dataset_base.py), JSONL readers, answer vocabulary, decoded frames and collation."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from tests.conftest import decoded_index, write_index_video

from videolang.data.annotations import AnnotationError
from videolang.data.clipbert import (
    DATA_CONFIG_OF_RECIPE,
    AnswerVocab,
    ClipBertDataConfig,
    ClipBertItems,
    ClipBertQADataConfig,
    ClipBertSplits,
    ClipBertVQADataConfig,
    TextEncoder,
    VisualSource,
    answer_vocab,
    collate_clipbert,
    load_annotations,
    majority_answer_rate,
)
from videolang.data.sampling import (
    CLIPBERT_TASK_SAMPLING,
    ClipBertTaskSampling,
    clipbert_task_indices,
    clipbert_task_sampling,
)
from videolang.errors import ConfigError

# ClipBERT's clip choice (jayleicn/ClipBERT src/datasets/dataset_base.py) on a 300-frame, 30 fps,
# 10 s video; fps_target 2, T 2 unless noted.
N, FPS = 300, 30.0


def test_task_defaults_follow_the_spec():
    s = CLIPBERT_TASK_SAMPLING
    assert (s["msrvtt_ret"].train_clips, s["msrvtt_ret"].frames_per_clip, s["msrvtt_ret"].target_fps) == (8, 2, 2.0)
    assert (s["anet_ret"].train_clips, s["anet_ret"].frames_per_clip, s["anet_ret"].target_fps) == (4, 2, 1.0)
    assert s["anet_ret"].test_clips == 20 and s["msrvtt_ret"].test_clips == 16
    assert (s["tgif_frameqa"].train_clips, s["tgif_frameqa"].frames_per_clip, s["tgif_frameqa"].target_fps) == (1, 1, 1.0)
    assert s["msrvtt_qa"].compat_test_window == "start" and s["msrvtt_mc"].compat_test_window == "middle"


def test_compat_test_windows_reproduce_the_original():
    # retrieval / MC, one test clip: "middle" = clip 1 of 3, starting at delta/3
    assert clipbert_task_indices("msrvtt_ret", N, FPS, train=False, num_clips=1, compat=True).tolist() == [[90, 119]]
    assert clipbert_task_indices("msrvtt_mc", N, FPS, train=False, num_clips=1, compat=True).tolist() == [[90, 119]]
    one_frame = ClipBertTaskSampling(1.0, 1, 1, 1, "middle")
    assert clipbert_task_indices(one_frame, N, FPS, train=False, compat=True).tolist() == [[90]]
    # video QA, one test clip: the window at the start (TGIF: frame 0, not the middle frame)
    assert clipbert_task_indices("tgif_frameqa", N, FPS, train=False, compat=True).tolist() == [[0]]
    assert clipbert_task_indices("msrvtt_qa", N, FPS, train=False, num_clips=1, compat=True).tolist() == [[0, 29]]
    # several test clips: windows at delta * k / N
    got = clipbert_task_indices("msrvtt_ret", N, FPS, train=False, num_clips=4, compat=True)
    assert got.tolist() == [[0, 29], [68, 97], [135, 164], [203, 232]]


def test_default_test_windows_cover_the_video():
    one = clipbert_task_indices("tgif_frameqa", N, FPS, train=False)
    assert one.tolist() == [[150]]  # the centre frame of the centred 1 s window
    many = clipbert_task_indices("msrvtt_ret", N, FPS, train=False)
    assert many.shape == (16, 2) and many[0, 0] < 30 and many[-1, -1] > 270
    assert (np.diff(many[:, 0]) > 0).all()
    assert (many[:, 1] - many[:, 0] == 15).all()  # T=2 frames 0.5 s apart (paper), not 1 s


def test_training_clips_are_random_windows():
    g = torch.Generator().manual_seed(0)
    a = clipbert_task_indices("msrvtt_ret", N, FPS, train=True, generator=g)
    b = clipbert_task_indices("msrvtt_ret", N, FPS, train=True, generator=g)
    assert a.shape == (8, 2) and not np.array_equal(a, b)
    assert (a >= 0).all() and (a < N).all() and (np.diff(a[:, 0]) >= 0).all()
    assert clipbert_task_indices("anet_ret", N, FPS, train=True, generator=g).shape == (4, 2)
    assert clipbert_task_sampling("msrvtt_ret", train_clips=2, test_clips=None).train_clips == 2
    with pytest.raises(ValueError, match="unknown ClipBERT task"):
        clipbert_task_sampling("nope")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_annotation_readers(tmp_path):
    ret = load_annotations(_jsonl(tmp_path / "r.jsonl", [{"clip_name": "video7010", "caption": "a man"}]), "retrieval")
    assert ret == [{"visual": "video7010", "text": "a man"}]
    qa = load_annotations(_jsonl(tmp_path / "q.jsonl", [
        {"video_id": "v1", "question": "what is it?", "answer": "dog", "answer_type": "what"}]), "qa")
    assert qa[0]["answer"] == "dog" and qa[0]["answer_type"] == "what"
    mc = load_annotations(_jsonl(tmp_path / "m.jsonl", [
        {"gif_name": "g", "question": "what does he do?", "options": ["run", "jump"], "answer": 1}]), "mc")
    assert mc[0]["texts"] == ["what does he do? run", "what does he do? jump"]
    vqa = load_annotations(_jsonl(tmp_path / "v.jsonl", [
        {"image_id": 42, "question": "color?", "question_id": 7, "labels": {"red": 1.0, "pink": 0.3}}]), "vqa")
    assert vqa[0]["visual"] == "42" and vqa[0]["labels"] == {"red": 1.0, "pink": 0.3}
    _jsonl(tmp_path / "bad.jsonl", [{"clip_name": "x"}])
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1: field 'caption' \(or 'captions'\): Field required"):
        load_annotations(tmp_path / "bad.jsonl", "retrieval")
    (tmp_path / "broken.jsonl").write_text('{"clip_name": "x", "caption": "y"}\n{oops\n')
    with pytest.raises(ConfigError, match=r"broken\.jsonl:2"):
        load_annotations(tmp_path / "broken.jsonl", "retrieval")


GOOD = {"retrieval": {"clip_name": "v1", "caption": "a man runs"},
        "qa": {"gif_name": "g1", "question": "what is it?", "answer": "dog"},
        "mc": {"gif_name": "g1", "question": "what?", "options": ["run", "jump"], "answer": 0},
        "vqa": {"image_id": 3, "question": "color?", "labels": {"red": 0.9}},
        "pretrain": {"file_name": "a.jpg", "captions": ["a dog", "a cat"]}}


@pytest.mark.parametrize(("kind", "change", "message"), [
    ("retrieval", {"caption": 5}, "field 'caption': Input should be a valid string"),
    ("retrieval", {"caption": "   "}, "field 'caption': String should match pattern"),
    ("retrieval", {"clip_name": None}, "field 'clip_name': Input should be a valid string"),
    ("retrieval", {"clip_name": 7010}, "field 'clip_name': Input should be a valid string"),  # no str() of numbers
    ("retrieval", {"captions": []}, "field 'captions': List should have at least 1 item"),
    ("qa", {"answer": 3}, "field 'answer': Input should be a valid string"),
    ("qa", {"question": ""}, "field 'question': String should have at least 1 character"),
    ("qa", {"answer_type": ["what"]}, "field 'answer_type': Input should be a valid string"),
    ("mc", {"answer": 2}, "field 'answer': 2 is not an index of the 2 options"),
    ("mc", {"answer": True}, "field 'answer': Input should be a valid integer"),
    ("mc", {"answer": "1"}, "field 'answer': Input should be a valid integer"),
    ("mc", {"options": "run"}, "field 'options': Input should be a valid list"),
    ("mc", {"options": ["run", ""]}, "field 'options.1': String should have at least 1 character"),
    ("vqa", {"labels": {"red": float("nan")}}, "NaN is not a number JSON allows"),
    ("vqa", {"labels": {"red": "1"}}, "field 'labels.red': Input should be a valid number"),
    ("vqa", {"labels": ["red"]}, "field 'labels': Input should be a valid dictionary"),
    ("vqa", {"image_id": -3}, "field 'image_id'"),
    ("vqa", {"image_id": 3.5}, "field 'image_id'"),
    ("pretrain", {"file_name": "../secret.jpg"}, "field 'file_name': must be a path inside the data folder"),
    ("pretrain", {"file_name": "/etc/passwd"}, "field 'file_name': must be a path inside the data folder"),
])
def test_each_bad_field_is_named_with_file_and_line(tmp_path, kind, change, message):
    rows = [GOOD[kind], {**GOOD[kind], **change}]
    path = _jsonl(tmp_path / "a.jsonl", rows)
    with pytest.raises(AnnotationError) as err:
        load_annotations(path, kind)
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value)


def test_multiple_choice_files_offer_the_same_number_of_options(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [GOOD["mc"], {**GOOD["mc"], "options": ["a", "b", "c"]}])
    with pytest.raises(AnnotationError, match=r"m\.jsonl:2: field 'options': 3 options, line 1 has 2"):
        load_annotations(path, "mc")


def test_bad_utf8_and_truncated_files_name_their_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"clip_name": "v", "caption": "ok"}\n{"clip_name": "v", "caption": "\xff"}\n')
    with pytest.raises(AnnotationError, match=rf"{path}:2: not UTF-8 text"):
        load_annotations(path, "retrieval")
    path.write_text('{"clip_name": "v", "caption": "ok"}\n{"clip_name": "v", "capt')
    with pytest.raises(AnnotationError, match=rf"{path}:2: not valid JSON"):
        load_annotations(path, "retrieval")


def test_a_closed_vocabulary_refuses_or_leaves_out_unknown_answers(tmp_path, caplog):
    vocab = AnswerVocab({"dog": 0, "cat": 1})
    rows = [GOOD["qa"], {**GOOD["qa"], "answer": "cow"}, {**GOOD["qa"], "answer": "cat"}]
    path = _jsonl(tmp_path / "q.jsonl", rows)
    with pytest.raises(AnnotationError, match=rf"{path}:2: field 'answer': 'cow' is not in the answer vocabulary"):
        load_annotations(path, "qa", vocab=vocab)
    train = load_annotations(path, "qa", vocab=vocab, training=True, unknown_answers="skip")
    assert [r["answer"] for r in train] == ["dog", "cat"] and "1 training answers outside" in caplog.text
    test = load_annotations(path, "qa", vocab=vocab, unknown_answers="skip")  # evaluation: scored wrong
    assert [r["answer"] for r in test] == ["dog", "cow", "cat"]
    none_known = _jsonl(tmp_path / "n.jsonl", [{**GOOD["qa"], "answer": "cow"}])
    with pytest.raises(AnnotationError, match="no training answer is in the answer vocabulary"):
        load_annotations(none_known, "qa", vocab=vocab, training=True, unknown_answers="skip")
    vqa = _jsonl(tmp_path / "v.jsonl", [GOOD["vqa"], {**GOOD["vqa"], "labels": {"dog": 1.0, "emu": 0.3}}])
    with pytest.raises(AnnotationError, match=r"v\.jsonl:2: field 'labels\.emu': 'emu' is not in"):
        load_annotations(vqa, "vqa", vocab=AnswerVocab({"red": 0, "dog": 1}))


def test_videos_and_images_must_lie_inside_the_data_root(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"x")
    (root / "ok.mp4").write_bytes(b"x")
    (root / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    ok = _jsonl(tmp_path / "ok.jsonl", [{"clip_name": "ok", "caption": "a"}])
    assert load_annotations(ok, "retrieval", visual_root=root, extensions=("", ".mp4"))[0]["visual"] == "ok"
    for key in ("../secret", str(tmp_path / "secret.mp4"), "link"):
        path = _jsonl(tmp_path / "bad.jsonl", [{"clip_name": "ok", "caption": "a"}, {"clip_name": key, "caption": "b"}])
        with pytest.raises(AnnotationError, match=rf"{path}:2: field 'clip_name': .* leads outside the data folder"):
            load_annotations(path, "retrieval", visual_root=root, extensions=("", ".mp4"))
    train = _jsonl(tmp_path / "train.jsonl", [{"clip_name": "ok", "caption": "a"}, {"clip_name": "link", "caption": "b"}])
    splits = ClipBertSplits(ClipBertDataConfig(train_file=str(train), video_root=str(root)))
    splits._text = TextEncoder(_Tok(), max_len=8)
    with pytest.raises(AnnotationError, match=r"train\.jsonl:2: field 'clip_name'"):
        splits.dataset("train")


def test_answer_vocab_file_errors_name_line_and_answer(tmp_path):
    path = tmp_path / "a.json"
    for text, message in [('{\n "dog": 0,\n "cat": "1"\n}', r":3: field 'label': Input should be a valid integer"),
                          ('{\n "dog": 0,\n "cat": true\n}', r":3: field 'label': Input should be a valid integer"),
                          ('{\n "dog": 0,\n "cat": 2\n}', r":3: field 'cat': label indices must be 0\.\.1"),
                          ('{\n "dog": 0,\n "": 1\n}', r":3: field 'answer'"),
                          ('["dog"]', r": expected a JSON object"),
                          ('{\n "dog": 0,\n "cat', r":3: not valid JSON")]:
        path.write_text(text)
        with pytest.raises(AnnotationError, match=re.escape(str(path)) + message):
            AnswerVocab.from_file(path)


def test_answer_vocab(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"dog": 0, "cat": 1}))
    vocab = AnswerVocab.from_file(tmp_path / "a.json", min_labels=1540)
    assert vocab.num_labels == 1540 and vocab.label("cat") == 1 and vocab.label("cow") == -1
    assert vocab.soft_targets({"dog": 0.6, "cow": 1.0})[:2].tolist() == pytest.approx([0.6, 0.0])
    (tmp_path / "gap.json").write_text(json.dumps({"dog": 0, "cat": 2}))
    with pytest.raises(ConfigError, match="without gaps"):
        AnswerVocab.from_file(tmp_path / "gap.json")
    built = AnswerVocab.from_records([{"answer": "b"}, {"answer": "a"}, {"answer": "b"}])
    assert built.ans2label == {"b": 0, "a": 1} and built.answers == ["b", "a"]


def test_each_recipe_fixes_its_task():
    tasks = {name: cls().task for name, cls in DATA_CONFIG_OF_RECIPE.items()}
    assert tasks == {"retrieval": "retrieval", "qa": "qa", "mcqa": "mc", "vqa": "vqa", "pretrain": "pretrain"}
    assert ClipBertDataConfig().task == "retrieval"


def test_answer_vocab_of_a_run(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"gif_name": "a", "question": "q", "answer": x} for x in "bab"])
    assert answer_vocab(ClipBertDataConfig()) is None  # retrieval: no answers
    assert answer_vocab(ClipBertQADataConfig(train_file=str(train))).ans2label == {"b": 0, "a": 1}
    with pytest.raises(ConfigError, match=r"data\.ans2label: clipbert\.vqa needs an answer vocabulary"):
        ClipBertSplits(ClipBertVQADataConfig(train_file=str(train)))


def test_majority_answer_rate(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"gif_name": "a", "question": "q", "answer": x} for x in "abba"])
    records = [{"answer": "b"}, {"answer": "a"}, {"answer": "a"}, {"answer": "c"}]
    assert majority_answer_rate(str(train), records) == 25.0  # a tie: the answer that sorts last
    assert np.isnan(majority_answer_rate(None, records))


def test_splits_read_the_task_from_the_config(tmp_path):
    rows = [{"clip_name": v, "caption": c} for v, c in (("a", "one"), ("b", "two"), ("a", "three"))]
    test = _jsonl(tmp_path / "test.jsonl", rows)
    splits = ClipBertSplits(ClipBertDataConfig(test_file=str(test), video_root=str(tmp_path)), seed=3)
    splits._text = TextEncoder(_Tok(), max_len=8)
    assert not splits.has_split("val") and splits.has_split("test")
    ds = splits.dataset("test")
    assert ds.eval_visual_only and len(ds) == 2 and ds.seed == 3  # retrieval evaluation: one item per video
    assert ds.captions_of([1]) == (["two"], [0])  # video a unreadable: its captions leave the ranking
    assert ds.captions_of([1, 0]) == (["one", "two", "three"], [1, 0, 1])
    assert splits.collate_fn("test").keywords == {"pad_id": 0}
    with pytest.raises(ConfigError, match=r"data\.train_file: no train annotations given"):
        splits.dataset("train")


class _Tok:
    cls_token_id, sep_token_id, pad_token_id = 101, 102, 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1000 + len(w) for w in text.split()]}


def test_dataset_decodes_sampled_frames_and_collates(tmp_path):
    for name in ("a", "b"):
        write_index_video(tmp_path / f"{name}.mp4", num_frames=60, fps=10, gop=10, size=32)
    sampling = ClipBertTaskSampling(2.0, 2, 2, 3, "middle")
    records = [{"visual": "a", "text": "one two"}, {"visual": "b", "text": "three"}, {"visual": "a", "text": "x y z"}]

    def visual(train):
        return lambda keys: VisualSource(keys, sampling=sampling, train=train, frame_size=48,
                                         video_root=str(tmp_path))
    text = TextEncoder(_Tok(), max_len=4)
    train = ClipBertItems(records, "retrieval", text, visual(True), itm_neg_size=2, seed=1)
    item = train[0]
    assert item["frames"].shape == (2, 2, 3, 48, 48) and item["frames"].dtype == torch.float32
    assert item["labels"] == [1, 0, 0] and item["rows"][0] == [101, 1003, 1003, 102]
    assert all(r == [101, 1005, 102] for r in item["rows"][1:])  # negatives: the other video's caption
    assert item["pixel_mask"].all()  # square video: no padding
    batch = collate_clipbert([train[0], train[1]])
    assert batch["frames"].shape == (2, 2, 2, 3, 48, 48)
    assert batch["input_ids"].shape == (6, 4) and batch["video_index"].tolist() == [0, 0, 0, 1, 1, 1]
    assert batch["labels"].tolist() == [1, 0, 0, 1, 0, 0]

    test = ClipBertItems(records, "retrieval", text, visual(False), eval_visual_only=True)
    assert len(test) == 2  # one item per video
    frames = test[0]["frames"]  # 3 test clips of 2 frames: 1 s windows across the 6 s video
    # frames were upscaled 32 -> 48; the index pattern survives (half/half split)
    idx = [[decoded_index(f.permute(1, 2, 0).round().clamp(0, 255).byte().numpy()) for f in clip] for clip in frames]
    assert idx == clipbert_task_indices(sampling, 60, 10.0, train=False).tolist()


def test_unreadable_videos_are_skipped(tmp_path):
    write_index_video(tmp_path / "a.mp4", num_frames=20, fps=10, gop=10, size=32)
    (tmp_path / "b.mp4").write_bytes(b"not a video")
    sampling = ClipBertTaskSampling(2.0, 1, 1, 1, "start")
    records = [{"visual": "a", "text": "q", "answer": "x", "answer_type": "t"},
               {"visual": "b", "text": "q", "answer": "y", "answer_type": "t"}]
    ds = ClipBertItems(records, "qa", TextEncoder(_Tok(), 8),
                       lambda keys: VisualSource(keys, sampling=sampling, train=False, frame_size=32,
                                                 video_root=str(tmp_path)),
                       vocab=AnswerVocab({"x": 0, "y": 1}))
    batch = collate_clipbert([ds[0], ds[1]])
    assert batch["frames"].shape[0] == 1 and len(batch["skipped"]) == 1 and batch["labels"].tolist() == [0]
