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
