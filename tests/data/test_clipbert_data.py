"""ClipBERT data: per-task clip sampling as ClipBERT chooses clips (jayleicn/ClipBERT
src/datasets/dataset_base.py), JSONL readers, answer vocabulary, decoded frames and collation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.conftest import decoded_index, write_index_video

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
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1: missing field caption"):
        load_annotations(tmp_path / "bad.jsonl", "retrieval")
    (tmp_path / "broken.jsonl").write_text('{"clip_name": "x", "caption": "y"}\n{oops\n')
    with pytest.raises(ConfigError, match=r"broken\.jsonl:2"):
        load_annotations(tmp_path / "broken.jsonl", "retrieval")


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
