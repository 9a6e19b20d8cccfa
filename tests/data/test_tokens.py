"""Token stores: header round trip, checks, the original's LMDB layout and directory names,
and `videolang tokenize` on a small synthetic world."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from videolang.cli.main import main
from videolang.data.sampling import resample_frame_indices
from videolang.data.stores.lmdb_store import write_token_lmdb
from videolang.data.tokens import (
    TokenStore,
    TokenStoreHeader,
    crop_view,
    parse_legacy_name,
    write_token_store,
)
from videolang.errors import StoreError


def _header(**kw) -> TokenStoreHeader:
    return TokenStoreHeader(**{"tokenizer": "vqvae", "tokenizer_hash": "abc", "vocab_size": 100, "downsample": 8,
                               "fps": 5.0, "frame_size": 32, **kw})


def test_round_trip_with_header(tmp_path):
    items = [("a/v1", np.arange(2 * 16).reshape(2, 4, 4) % 100, 3), ("v2", np.zeros((5, 4, 4), np.int64), -1)]
    write_token_store(items, tmp_path / "s", _header(classes=["x"], hflip=True))
    store = TokenStore(tmp_path / "s")
    assert store.keys() == ["a/v1", "v2"] and len(store) == 2 and "v2" in store
    assert store["a/v1"].dtype == np.int16 and np.array_equal(store["a/v1"], items[0][1])
    assert store.label("a/v1") == 3 and store.label("v2") == -1
    assert store.header == _header(classes=["x"], hflip=True)
    assert json.loads((tmp_path / "s" / "tokens.json").read_text())["format"] == "videolang-tokens"


def test_writer_checks_grid_and_vocabulary(tmp_path):
    with pytest.raises(StoreError, match=r"header says \(T, 4, 4\)"):
        write_token_store([("v", np.zeros((2, 3, 4)), 0)], tmp_path / "s", _header())
    with pytest.raises(StoreError, match="outside the vocabulary"):
        write_token_store([("v", np.full((2, 4, 4), 100), 0)], tmp_path / "s", _header())
    assert not (tmp_path / "s").exists()


def test_reads_original_lmdb_layout(tmp_path):
    name = "dalle_ucf101_train_val_fps16_hflip1_160top128"
    assert parse_legacy_name(name) == {"dataset": "ucf101", "split": "train_val", "fps": 16, "hflip": True,
                                       "resize": 160, "crop": "top", "frame_size": 128}
    tokens = np.random.default_rng(0).integers(0, 8192, (7, 16, 16))
    write_token_lmdb([("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", tokens, 0)], tmp_path / name)
    store = TokenStore(tmp_path / name)
    assert store.header.tokenizer == "dalle-dvae" and store.header.source == "vimpac-lmdb"
    assert store.header.grid == (16, 16) and store.header.hflip
    assert np.array_equal(store["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"], tokens)
    write_token_lmdb([("v", tokens, 0)], tmp_path / "plain")
    with pytest.raises(StoreError, match="not a VIMPAC token directory name"):
        TokenStore(tmp_path / "plain")


def test_frame_sampling_and_crops():
    assert resample_frame_indices(40, 10.0, 5.0, rounding="down").tolist() == list(range(0, 40, 2))
    assert resample_frame_indices(7, 30.0, 2.0, rounding="down").tolist() == [0]
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    assert torch.equal(crop_view(x, 4, "top", None, False), x[..., :4])
    assert torch.equal(crop_view(x, 4, "center", None, False), x[..., 1:5])
    assert torch.equal(crop_view(x, 4, "bottom", None, True), x[..., 2:6].flip(-1))


def test_tokenize_command_on_world(tmp_path, capsys):
    from videolang.synth import synthesize_world

    torch.set_num_threads(1)
    synthesize_world(tmp_path / "world", 4, seed=1, size=32, duration=2.0, workers=1, progress=False)
    rc = main(["tokenize", "--tokenizer", str(tmp_path / "tok"), "--train-vqvae", "5", "--world",
               str(tmp_path / "world"), "--out", str(tmp_path / "store"), "--size", "32", "--fps", "5"])
    assert rc == 0 and "wrote 4 videos" in capsys.readouterr().out
    store = TokenStore(tmp_path / "store")
    assert store.header.tokenizer == "vqvae" and store.header.grid == (4, 4) and store.header.fps == 5.0
    first = store.keys()[0]
    assert store[first].shape == (10, 4, 4) and 0 <= store.label(first) < 9
    # a finer code map: one code per 4 x 4 pixels
    rc = main(["tokenize", "--tokenizer", str(tmp_path / "tok4"), "--train-vqvae", "5", "--vqvae-downsample", "4",
               "--world", str(tmp_path / "world"), "--out", str(tmp_path / "store4"), "--size", "32", "--fps", "5"])
    assert rc == 0 and TokenStore(tmp_path / "store4").header.grid == (8, 8)
    capsys.readouterr()
    rc = main(["tokenize", "--tokenizer", str(tmp_path / "tok5"), "--train-vqvae", "5", "--vqvae-downsample", "16",
               "--world", str(tmp_path / "world"), "--out", str(tmp_path / "store5"), "--size", "24"])
    assert rc == 2 and "dividing the frame size 24" in capsys.readouterr().err


def test_video_lists_stay_inside_the_root_and_labels_are_integers(tmp_path):
    from videolang.data.tokens import TokenStoreHeader, read_video_list

    for line, message in (("../x.mp4 1", r"list\.txt:2: field 'path'.*'\.\.'"),
                          ("/etc/passwd 1", r"list\.txt:2: field 'path'"),
                          ("b.mp4 1.5", r"list\.txt:2: field 'label'"),
                          ("b.mp4 -3", r"list\.txt:2: field 'label'"),
                          ("a.avi 2", r"list\.txt:2: video 'a' already listed on line 1")):
        (tmp_path / "list.txt").write_text(f"a.mp4 0\n{line}\n")
        with pytest.raises(StoreError, match=message):
            read_video_list(tmp_path / "list.txt", tmp_path)
    header = {"tokenizer": "vqvae", "tokenizer_hash": None, "vocab_size": 512, "downsample": 4, "fps": 8.0,
              "frame_size": 32}
    assert TokenStoreHeader.from_dict(header, source="h").grid == (8, 8)
    for key, value in (("vocab_size", "512"), ("fps", float("nan")), ("frame_size", 30), ("crop", "left")):
        with pytest.raises(StoreError, match=rf"h: .*{key if key != 'frame_size' else 'multiple'}"):
            TokenStoreHeader.from_dict({**header, key: value}, source="h")
