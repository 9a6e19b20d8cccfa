"""VidLanKD's splits: what each of the three recipes reads for training and validation, and the
loaders' batching that differs from the engine's default."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

from videolang.data.vidlankd import (
    GlueDataConfig,
    GlueSplits,
    StudentDataConfig,
    StudentSplits,
    TeacherDataConfig,
    TeacherSplits,
    mask_for_step,
)
from videolang.errors import ConfigError

SST2 = "sentence\tlabel\nit 's a charming journey .\t1\nunflinchingly bleak\t0\na film\t1\n"


def test_teacher_needs_features_and_captions():
    with pytest.raises(ConfigError, match=r"data\.features: required by vidlankd\.teacher"):
        TeacherSplits(TeacherDataConfig(captions="c.json"))
    splits = TeacherSplits(TeacherDataConfig(features="f", captions="c.json"))
    assert not splits.has_split("val") and splits.has_split("train")
    assert TeacherSplits(TeacherDataConfig(features="f", captions="c.json", val_list="v.lst")).has_split("val")
    with pytest.raises(ConfigError, match=r"vidlankd\.teacher has no test split"):
        splits.dataset("test")


def test_student_keeps_corpus_order_when_asked(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"line number {i} of the corpus" for i in range(40)) + "\n")
    with pytest.raises(ConfigError, match=r"data\.train_files"):
        StudentSplits(StudentDataConfig())
    d = StudentDataConfig(train_files=[str(corpus)], format="plain", block_size=8, batch_size=4)
    splits = StudentSplits(d)
    assert not splits.has_split("val")
    blocks = splits.dataset("train")
    assert splits.train_batch_sampler(blocks) is None  # shuffled batches: the engine's default
    d.shuffle = False
    sampler = StudentSplits(d).train_batch_sampler(blocks)
    assert isinstance(sampler, BatchSampler) and isinstance(sampler.sampler, SequentialSampler)
    assert sampler.drop_last and next(iter(sampler)) == [0, 1, 2, 3]


def test_glue_reads_train_and_eval_splits_with_the_given_tokenizer(tmp_path):
    (tmp_path / "SST-2").mkdir()
    for split in ("train", "dev"):
        (tmp_path / "SST-2" / f"{split}.tsv").write_text(SST2)
    with pytest.raises(ConfigError, match=r"data\.task_dir"):
        GlueSplits(GlueDataConfig())
    splits = GlueSplits(GlueDataConfig(task_dir=str(tmp_path), batch_size=2))
    with pytest.raises(ConfigError, match=r"data\.tokenizer: not given"):
        splits.dataset("train")
    splits.tokenizer_name = "minilm"  # what the recipe sets: its model's tokenizer
    train, val = splits.dataset("train"), splits.dataset("val")
    assert len(train) == len(val) == 3 and train.labels.tolist() == [1, 0, 1]
    sampler = splits.train_batch_sampler(train)
    assert isinstance(sampler.sampler, RandomSampler) and not sampler.drop_last  # the last partial batch stays
    batch = splits.collate_fn("train")([train[0], train[1]])
    assert batch["ids"].shape[0] == 2 and batch["mask"].dtype == torch.bool
    with pytest.raises(ConfigError, match=r"vidlankd\.glue has no test split"):
        splits.dataset("test")


def test_masks_depend_on_seed_and_step_only():
    from videolang.data.text import load_tokenizer

    tok = load_tokenizer("minilm")
    ids = torch.tensor(tok(["a red circle moves left", "a star grows"], padding=True)["input_ids"])
    mask = ids != tok.pad_token_id
    a, b = mask_for_step(0, 3, ids, tok, mask, 0.5), mask_for_step(0, 3, ids, tok, mask, 0.5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], mask_for_step(0, 4, ids, tok, mask, 0.5)[1])
    assert (a[1] != -100).any()  # something is masked


@pytest.mark.parametrize(("track", "message"), [
    ({"text": ["a", ""], "start": [0.0, 1.0], "end": [1.0, 2.0]}, r"field 'text\.1'"),
    ({"text": ["a"], "start": [float("nan")], "end": [1.0]}, r"not valid JSON|NaN"),
    ({"text": ["a"], "start": [-1.0], "end": [1.0]}, r"field 'start\.0'"),
    ({"text": ["a"], "start": ["0"], "end": [1.0]}, r"field 'start\.0'"),
    ({"text": ["a"], "start": [2.0], "end": [1.0]}, r"start\[0\] = 2.0 is after end\[0\] = 1.0"),
    ({"text": ["a", "b"], "start": [0.0], "end": [1.0]}, r"start, end and text have 1, 1 and 2 entries"),
    ({"text": ["a"], "start": [0.0]}, r"field 'end'"),
])
def test_caption_tracks_name_file_line_and_field(tmp_path, track, message):
    import json

    from videolang.data.vidlankd import read_caption_tracks

    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"ok": {"text": ["x"], "start": [0.0], "end": [1.0]}}, indent=1)[:-2]
                    + ',\n "bad": ' + json.dumps(track) + "\n}")
    with pytest.raises(ConfigError, match=message) as err:
        read_caption_tracks(str(path))
    assert "captions.json" in str(err.value)
    if "JSON" not in str(err.value):
        line = path.read_text().split('"bad"')[0].count("\n") + 1
        assert f"captions.json:{line}: video 'bad'" in str(err.value)


def test_video_id_lists_are_not_coerced(tmp_path):
    from videolang.data.vidlankd import read_video_ids

    (tmp_path / "ids.json").write_text('[\n "a",\n 7\n]')
    with pytest.raises(ConfigError, match=r"ids\.json:3: item 1: field 'id'"):
        read_video_ids(str(tmp_path / "ids.json"), "data.train_list")
    (tmp_path / "ids.lst").write_bytes(b"a\nb\xff\n")
    with pytest.raises(ConfigError, match=r"ids\.lst:2: not UTF-8"):
        read_video_ids(str(tmp_path / "ids.lst"), "data.train_list")
    (tmp_path / "ids.lst").write_text("a\nb\na\n")
    with pytest.raises(ConfigError, match=r"ids\.lst:3: video id 'a' already listed on line 1"):
        read_video_ids(str(tmp_path / "ids.lst"), "data.train_list")


def test_unreadable_features_are_counted_skips(tmp_path):
    import numpy as np

    from videolang.data.datasets import SkippedSample
    from videolang.data.text import build_wordpiece_tokenizer
    from videolang.data.vidlankd import TeacherDataConfig, VideoCaptionWindows, collate_teacher

    class Features(dict):
        def __getitem__(self, key):
            if key == "bad":
                raise OSError("truncated shard")
            return np.ones((6, 4), np.float32)

    tok = build_wordpiece_tokenizer(["take a cup", "wash it"] * 20, tmp_path / "tok", vocab_size=60)
    captions = {v: {"text": ["take a cup", "wash it"], "start": [0.0, 1.0], "end": [1.0, 2.0]} for v in ("ok", "bad")}
    ds = VideoCaptionWindows(["ok", "bad"], captions, Features(), tok, TeacherDataConfig(block_size=16), 2.0, 0,
                             random_window=False)
    skipped = ds[1]
    assert isinstance(skipped, SkippedSample) and skipped.source == "bad" and "truncated shard" in skipped.reason
    batch = collate_teacher([ds[0], skipped], pad=tok.pad_token_id)
    assert batch["ids"].shape[0] == 1 and batch["index"].tolist() == [0] and batch["skipped"] == [skipped]
    assert collate_teacher([skipped], pad=0) == {"skipped": [skipped]}
