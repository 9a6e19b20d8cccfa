"""VideoCLIP data: caption tracks, pair shapes and layouts, retrieval-augmented batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from videolang.data.datasets import collate_skipping
from videolang.data.stores import FeatureStoreWriter
from videolang.data.videoclip import (
    FineTunePairs,
    PretrainPairs,
    RetrievalBatchSampler,
    TextLayout,
    VideoCLIPDataConfig,
    VideoCLIPPretrainDataConfig,
    VideoCLIPRetrievalDataConfig,
    VideoCLIPSplits,
    VideoTextPairs,
    collate_pairs,
    kmeans,
    load_timestamped_captions,
    read_eval_pairs,
    retrieval_batches,
)
from videolang.errors import ConfigError, VideolangError


def fake_tokenize(texts):
    return [[100 + len(w) for w in t.split()] for t in texts]


@pytest.fixture()
def world(tmp_path):
    captions = {
        "a": {"start": [0.0, 2.0, 5.0], "end": [2.0, 5.0, 9.5], "text": ["red ball left", "blue box", "it grows big"]},
        "b": {"start": [0.5], "end": [3.0], "text": ["one two three four five six seven eight nine"]},
    }
    path = tmp_path / "raw_caption.json"
    path.write_text(json.dumps(captions))
    rng = np.random.default_rng(0)
    features = {"a": rng.normal(size=(10, 6)).astype(np.float32), "b": rng.normal(size=(3, 6)).astype(np.float32)}
    return path, features


def test_text_layout():
    ids, mask = TextLayout(max_text_len=4).build([7, 8])
    assert ids.tolist() == [101, 7, 8, 102, 0, 0] and mask.tolist() == [True] * 4 + [False] * 2
    ids, mask = TextLayout(max_text_len=2).build([7, 8, 9])
    assert ids.tolist() == [101, 7, 8, 102] and mask.all()
    # MMPT's layout (_build_text_seq([7592, 2088]) -> [101, 102, 7592, 2088, 102, 0 ...])
    ids, mask = TextLayout(max_text_len=6, sep_after_cls=True).build([7592, 2088])
    assert ids.tolist() == [101, 102, 7592, 2088, 102, 0, 0, 0] and mask.sum() == 5
    ids, mask = TextLayout(max_text_len=3, sep_after_cls=True).build([1, 2, 3, 4])
    assert ids.tolist() == [101, 102, 1, 2, 102] and mask.all()


def test_load_captions_and_errors(world, tmp_path):
    path, _ = world
    tracks = load_timestamped_captions(path, fake_tokenize, max_clip_tokens=4)
    assert len(tracks["a"]) == 3 and tracks["a"].tokens[1] == [104, 103]
    assert len(tracks["b"].tokens[0]) == 4  # cut to max_clip_tokens
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"x": {"start": [0], "end": [1, 2], "text": ["a"]}}))
    with pytest.raises(ConfigError, match=r"bad\.json: 'x': start, end and text have 1, 2 and 1 entries"):
        load_timestamped_captions(bad, fake_tokenize)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON"):
        load_timestamped_captions(bad, fake_tokenize)


def test_pretrain_pairs_shapes_and_determinism(world):
    path, features = world
    tracks = load_timestamped_captions(path, fake_tokenize)
    ds = PretrainPairs(features, tracks, ["a", "b"], TextLayout(max_text_len=12), pairs_per_video=3,
                       max_video_len=5, seed=1)
    item = ds[0]
    assert item["vfeats"].shape == (3, 5, 6) and item["caps"].shape == (3, 14)
    for p in range(3):
        n_valid = int(item["vmask"][p].sum())
        assert 1 <= n_valid <= 5
        assert torch.equal(item["vfeats"][p, n_valid:], torch.zeros(5 - n_valid, 6))
        assert item["caps"][p, 0] == 101 and item["caps"][p, int(item["cmask"][p].sum()) - 1] == 102
    again = ds[0]
    assert all(torch.equal(item[k], again[k]) for k in item)
    batch = collate_pairs([ds[0], ds[1]])
    assert batch["vfeats"].shape == (6, 5, 6) and batch["video_index"].tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(VideolangError, match="lack captions or features"):
        PretrainPairs(features, tracks, ["a", "zzz"], TextLayout())


def test_eval_pairs(world):
    _, features = world
    pairs = [("a", 0.0, None, "red ball"), ("a", 2.2, 4.1, "blue box")]
    ds = VideoTextPairs(pairs, features, fake_tokenize, TextLayout(max_text_len=8), max_video_len=4)
    first, seg = ds[0], ds[1]
    assert first["vmask"].sum() == 4 and torch.allclose(first["vfeats"], torch.from_numpy(features["a"][:4]))
    assert seg["vmask"].sum() == 3 and torch.allclose(seg["vfeats"][:3], torch.from_numpy(features["a"][2:5]))
    with pytest.raises(VideolangError, match="no features"):
        VideoTextPairs([("zz", 0, None, "x")], features, fake_tokenize, TextLayout())


def test_eval_pair_formats_are_checked_against_their_schemas(tmp_path):
    yc = tmp_path / "youcookii_annotations_trainval.json"
    segment = {"segment": [1.0, 4.0], "sentence": "cut it"}
    yc.write_text(json.dumps({"database": {"v1": {"subset": "validation", "annotations": [segment]}}}))
    assert read_eval_pairs(str(yc), "youcook2", "validation") == [("v1", 1.0, 4.0, "cut it")]
    yc.write_text(json.dumps({"database": {"v1": {"subset": "validation", "annotations": [
        segment, {**segment, "segment": [5.0, 4.5]}]}}}))
    with pytest.raises(ConfigError, match=r"database: 'v1': field 'annotations\.1\.segment': .*starts at 5\.0 after"):
        read_eval_pairs(str(yc), "youcook2", "validation")
    msr = tmp_path / "MSRVTT_data.json"
    msr.write_text(json.dumps({"videos": [{"video_id": "v1", "split": "test"}],
                               "sentences": [{"video_id": "v1", "caption": "a"}, {"video_id": "v9", "caption": "b"}]}))
    with pytest.raises(ConfigError, match=r"MSRVTT_data\.json: sentences\[1\]: field 'video_id': 'v9' is not in"):
        read_eval_pairs(str(msr), "msrvtt", "test")
    jl = tmp_path / "captions.jsonl"
    jl.write_text(json.dumps({"video_id": "v1", "caption": "a", "split": "val"}) + "\n"
                  + json.dumps({"video_id": "v2", "caption": 7, "split": "val"}) + "\n")
    with pytest.raises(ConfigError, match=r"captions\.jsonl:2: field 'caption': Input should be a valid string"):
        read_eval_pairs(str(jl), "jsonl", "val")  # not taken as the text "7"


def blobs(n_per=40, k=3, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(n_per, dim, generator=g) + 20 * i for i in range(k)])


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_retrieval_batches_are_full_and_local(backend):
    if backend == "faiss":
        pytest.importorskip("faiss", reason="optional extra videolang[faiss] not installed")
    emb = blobs()
    batches = retrieval_batches(emb, 8, generator=torch.Generator().manual_seed(0), backend=backend,
                                n_clusters=12, nprobe=1)
    assert len(batches) == 120 // 8
    assert all(len(b) == 8 and len(set(b)) == 8 for b in batches)  # always full, no repeats inside
    assert all(len({i // 40 for i in b}) == 1 for b in batches)  # neighbours come from one blob


def test_kmeans_separates_blobs():
    c = kmeans(blobs(), 3, generator=torch.Generator().manual_seed(0))
    assert sorted(round(float(x) / 20) for x in c.mean(1)) == [0, 1, 2]


def test_batch_sampler_random_then_retrieval_and_rank_split():
    from torch.utils.data import DistributedSampler

    s = RetrievalBatchSampler(range(120), 8, seed=0)
    first = list(s)
    assert len(first) == len(s) == 15 and sorted(i for b in first for i in b) == list(range(120))
    s.set_embeddings(blobs())
    assert all(len({i // 40 for i in b}) == 1 for b in s)
    # Under DDP Lightning injects a DistributedSampler: rank and world size come from it.
    ranks = [RetrievalBatchSampler(DistributedSampler(range(120), num_replicas=2, rank=r), 8, seed=0)
             for r in range(2)]
    for r in ranks:
        r.set_embeddings(blobs())
    b0, b1 = list(ranks[0]), list(ranks[1])
    assert len(b0) == len(b1) == len(ranks[0]) == 7 and not {tuple(x) for x in b0} & {tuple(x) for x in b1}
    with pytest.raises(VideolangError, match="too few"):
        RetrievalBatchSampler(DistributedSampler(range(10), num_replicas=2, rank=0), 8)


def write_store(root, features) -> str:
    with FeatureStoreWriter(root, dtype="float32") as w:
        for vid, feats in features.items():
            w.add(vid, feats)
    return str(root)


def test_splits_build_the_objective_s_training_set(world, tmp_path):
    path, features = world
    store = write_store(tmp_path / "feats", features)
    pre = VideoCLIPSplits(VideoCLIPPretrainDataConfig(features=store, captions=str(path), feature_rate=2.0,
                                                      videos_per_batch=1), seed=3)
    train = pre.dataset("train")
    assert isinstance(train, PretrainPairs) and train.seed == 3
    assert train.captions["a"].starts.tolist() == [0.0, 4.0, 10.0]  # caption seconds -> feature rows
    assert isinstance(pre.train_batch_sampler(train), RetrievalBatchSampler)
    assert pre.collate_fn("train") is collate_pairs and pre.collate_fn("test") is collate_skipping
    assert not pre.has_split("val") and pre.dataset("train") is train  # built once

    pairs = tmp_path / "captions.jsonl"
    pairs.write_text("".join(json.dumps({"video_id": v, "caption": c, "split": s}) + "\n"
                             for v, c, s in [("a", "red ball", "train"), ("b", "blue box", "train"),
                                             ("a", "a ball", "val")]))
    data = VideoCLIPRetrievalDataConfig(features=store, train_pairs=str(pairs), val_pairs=str(pairs), feature_rate=1.0)
    ft = VideoCLIPSplits(data)
    assert isinstance(ft.dataset("train"), FineTunePairs) and ft.train_batch_sampler(ft.dataset("train")) is None
    assert ft.has_split("val") and isinstance(ft.dataset("val"), VideoTextPairs) and ft.protocol("val") == "jsonl-val"
    with pytest.raises(ConfigError, match=r"data\.test_pairs"):
        ft.dataset("test")
    with pytest.raises(ConfigError, match=r"data\.features"):
        VideoCLIPSplits(VideoCLIPDataConfig())
