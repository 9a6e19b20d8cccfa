"""VIMPAC data: clips of token stores (training pairs, multi-view evaluation) and the videos of
each split (list files, the low-label subset, the kNN bank)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from videolang.data.tokens import TokenStore, TokenStoreHeader, write_token_store
from videolang.data.vimpac import (
    TokenClips,
    VimpacDataConfig,
    VimpacSplits,
    check_tokenizer_fingerprint,
    video_ids,
)
from videolang.errors import ConfigError


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two views (centre, mirrored) of 12 videos of 4 to 9 frames, labels 0-2; a store of
    another grid; a list of the first 8 videos."""
    root = tmp_path_factory.mktemp("vimpac_data")
    rng = np.random.default_rng(3)
    items = [(f"v{i:02d}", rng.integers(0, 16, (4 + i % 6, 2, 2)), i % 3) for i in range(12)]
    header = TokenStoreHeader(tokenizer="vqvae", tokenizer_hash="abc", vocab_size=16, downsample=8, fps=5.0,
                              frame_size=16)
    write_token_store(items, root / "center", header)
    write_token_store([(k, t[:, :, ::-1], y) for k, t, y in items], root / "flip",
                      TokenStoreHeader(**{**header.__dict__, "hflip": True}))
    write_token_store([(k, np.tile(t, (1, 2, 2)), y) for k, t, y in items[:3]], root / "wide",
                      TokenStoreHeader(**{**header.__dict__, "frame_size": 32}))
    (root / "train.txt").write_text("".join(f"v{i:02d}.mp4 {i % 3}\n" for i in range(8)))
    return root


def _data(root, **kw) -> VimpacDataConfig:
    return VimpacDataConfig(**{"train_stores": [str(root / "center"), str(root / "flip")], "clip_len": 3, **kw})


def test_token_clips_sampling(stores):
    store = TokenStore(stores / "center")
    keys = store.keys()[:4]
    pairs = TokenClips([store], keys, clip_len=8, stride=1, pad_id=17, mode="pairs", seed=1)
    clip, label = pairs[0]["pairs"], pairs[0]["label"]
    n = store[keys[0]].shape[0]
    assert clip.shape == (2, 8, 2, 2) and label == 0 and n < 8
    assert (clip[:, n:] == 17).all()
    again = TokenClips([store], keys, clip_len=8, stride=1, pad_id=17, mode="pairs", seed=1)[0]["pairs"]
    assert torch.equal(clip, again)  # determined by (seed, epoch, index)
    views = TokenClips([store, TokenStore(stores / "flip")], keys, clip_len=2, stride=2, pad_id=17, mode="eval",
                       num_clips=3)
    index, x, label = views[3]["index"], views[3]["views"], views[3]["label"]
    assert index == 3 and x.shape == (6, 2, 2, 2) and label == 0
    tokens = store[keys[3]]
    last = tokens.shape[0] + 1 - 4  # delta of uniform clips; the third starts at the end
    assert torch.equal(x[2], torch.from_numpy(tokens[[last, last + 2]].astype(np.int64)))
    assert torch.equal(x[3], x[0].flip(-1))


def test_video_ids_follow_the_list_and_warn_of_missing_videos(stores, tmp_path, caplog):
    views = [TokenStore(stores / "center"), TokenStore(stores / "flip")]
    assert video_ids(views, None, "train_stores") == [f"v{i:02d}" for i in range(12)]
    assert video_ids(views, str(stores / "train.txt"), "train_stores") == [f"v{i:02d}" for i in range(8)]
    (tmp_path / "more.txt").write_text("v01.avi 1\nv99.avi 0\n")
    with caplog.at_level(logging.WARNING):
        assert video_ids(views, str(tmp_path / "more.txt"), "val_stores") == ["v01"]
    assert "data.val_stores: 1 listed videos are not in the stores (e.g. v99)" in caplog.text
    with pytest.raises(ConfigError, match="video list not found"):
        video_ids(views, str(tmp_path / "absent.txt"), "val_stores")
    (tmp_path / "none.txt").write_text("v99.avi 0\n")
    with pytest.raises(ConfigError, match=r"data\.test_stores: no videos"):
        video_ids(views, str(tmp_path / "none.txt"), "test_stores")


def test_splits_by_objective(stores):
    tune = VimpacSplits(_data(stores, val_stores=[str(stores / "center")], num_test_clips=2), seed=0)
    assert tune.pad_id == 17 and (tune.height, tune.width) == (2, 2) and tune.num_classes() == 3
    assert tune.model_shape() == {"codebook_size": 16, "length": 3, "height": 2, "width": 2}
    clip = tune.dataset("train")[0]["clip"]
    assert clip.shape == (3, 2, 2)
    assert tune.dataset("val")[0]["views"].shape == (2, 3, 2, 2)  # one view x 2 clips
    assert tune.has_split("val") and not tune.has_split("test")
    with pytest.raises(ConfigError, match=r"data\.test_stores"):
        tune.dataset("test")
    pre = VimpacSplits(_data(stores, objective="pretrain", val_stores=[str(stores / "center")]), seed=0)
    assert pre.dataset("train")[0]["pairs"].shape == (2, 3, 2, 2) and pre.dataset("val")[0]["pairs"].shape == (2, 3, 2, 2)
    bank = pre.dataset("knn_bank")  # one centre clip of each training video, first view
    assert len(bank) == 12 and bank[5]["views"].shape == (1, 3, 2, 2) and bank.stores == pre.stores["train"][:1]


def test_label_fraction_is_a_fixed_subset_for_fine_tuning_only(stores):
    half = VimpacSplits(_data(stores, label_fraction=0.5), seed=4)
    assert len(half.train_keys) == 6 and half.train_keys == sorted(half.train_keys)
    assert VimpacSplits(_data(stores, label_fraction=0.5), seed=4).train_keys == half.train_keys
    assert VimpacSplits(_data(stores, label_fraction=0.5), seed=5).train_keys != half.train_keys
    assert len(VimpacSplits(_data(stores, label_fraction=0.5, objective="pretrain"), seed=4).train_keys) == 12


def test_store_errors_name_the_key(stores):
    with pytest.raises(ConfigError, match=r"data\.train_stores: give at least one"):
        VimpacSplits(VimpacDataConfig(), seed=0)
    with pytest.raises(ConfigError, match=r"data\.val_stores: the stores differ in token grid"):
        VimpacSplits(_data(stores, val_stores=[str(stores / "center"), str(stores / "wide")]), seed=0)
    paths = [str(stores / "center"), str(stores / "flip")]
    check_tokenizer_fingerprint(paths, "abc", "tok")
    with pytest.raises(ConfigError, match=r"data\.frame_tokenizer tok: not the tokenizer of"):
        check_tokenizer_fingerprint(paths, "other", "tok")
