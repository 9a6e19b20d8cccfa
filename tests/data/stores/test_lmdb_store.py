"""LMDB stores: ClipBERT-layout video packing/reading and VIMPAC token archives."""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import shutil
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from tests.conftest import decoded_index
from torch.utils.data import DataLoader, Dataset

from videolang.data.stores import lmdb_store
from videolang.data.stores.lmdb_store import (
    LmdbTokenStore,
    LmdbVideoStore,
    pack_videos,
    write_token_lmdb,
)
from videolang.data.video import read_frames
from videolang.errors import StoreError


@pytest.fixture()
def corpus(tmp_path, video_dir) -> Path:
    """A nested video folder: real videos, an empty file, a dangling link, a non-video file."""
    root = tmp_path / "corpus"
    (root / "ApplyEyeMakeup").mkdir(parents=True)
    (root / ".hidden").mkdir()
    shutil.copy(video_dir / "gop30.mp4", root / "vid00001.mp4")
    shutil.copy(video_dir / "mpeg4.avi", root / "ApplyEyeMakeup" / "v_x.avi")
    shutil.copy(video_dir / "x.mkv", root / "ApplyEyeMakeup" / "v_y.MKV")
    shutil.copy(video_dir / "gop7.mp4", root / ".hidden" / "skipme.mp4")
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.txt").write_text("not a video")
    (root / "broken.webm").symlink_to(root / "does-not-exist.webm")
    return root


EXPECTED_KEYS = ["ApplyEyeMakeup/v_x", "ApplyEyeMakeup/v_y", "vid00001"]


def test_pack_round_trip_bytes_identical(corpus, tmp_path):
    out = tmp_path / "videos.lmdb"
    report = pack_videos(corpus, out, progress=False)
    assert report.path == out
    assert report.n_packed == 3
    files = {
        "vid00001": corpus / "vid00001.mp4",
        "ApplyEyeMakeup/v_x": corpus / "ApplyEyeMakeup" / "v_x.avi",
        "ApplyEyeMakeup/v_y": corpus / "ApplyEyeMakeup" / "v_y.MKV",
    }
    assert report.n_bytes == sum(p.stat().st_size for p in files.values())
    with LmdbVideoStore(out) as store:
        assert store.keys() == EXPECTED_KEYS
        assert len(store) == 3
        assert list(store) == EXPECTED_KEYS
        for key, path in files.items():
            assert key in store
            assert store[key] == path.read_bytes()
            assert store.get(key) == path.read_bytes()
        assert "empty" not in store and "missing" not in store and 3 not in store
        assert store.get("missing", b"x") == b"x"
        # the bytes are a decodable container
        frames = read_frames(store["vid00001"], [0, 45, 89])
        assert [decoded_index(f.numpy()) for f in frames] == [0, 45, 89]


def test_pack_reports_unreadable_files(corpus, tmp_path, monkeypatch):
    bad = corpus / "vid00001.mp4"
    real_read = Path.read_bytes

    def read_bytes(self):
        if self == bad:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    out = tmp_path / "v.lmdb"
    report = pack_videos(corpus, out, progress=False)
    assert report.n_packed == 2
    skipped = dict(report.skipped)
    assert set(skipped) == {str(bad), str(corpus / "empty.mp4"), str(corpus / "broken.webm")}
    assert "Permission denied" in skipped[str(bad)]
    assert skipped[str(corpus / "empty.mp4")] == "empty file"
    logged = (out / "error_filepaths.log").read_text().splitlines()
    assert sorted(logged) == sorted(skipped)
    assert LmdbVideoStore(out).keys() == EXPECTED_KEYS[:2]


def test_duplicate_stem_is_an_error_naming_both_files(corpus, tmp_path):
    shutil.copy(corpus / "vid00001.mp4", corpus / "vid00001.webm")
    with pytest.raises(StoreError) as err:
        pack_videos(corpus, tmp_path / "v.lmdb", progress=False)
    assert "vid00001.mp4" in str(err.value) and "vid00001.webm" in str(err.value)
    assert not (tmp_path / "v.lmdb").exists()


def test_refuses_overwrite_unless_told(corpus, tmp_path):
    out = tmp_path / "v.lmdb"
    pack_videos(corpus, out, progress=False)
    with pytest.raises(StoreError, match=re.escape(str(out))):
        pack_videos(corpus, out, progress=False)
    (corpus / "vid00001.mp4").unlink()
    report = pack_videos(corpus, out, overwrite=True, progress=False)
    assert report.n_packed == 2
    assert LmdbVideoStore(out).keys() == EXPECTED_KEYS[:2]


def test_failure_mid_pack_leaves_nothing(corpus, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_put = lmdb_store._BatchedLmdbWriter.put

    def failing_put(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real_put(self, *args)

    monkeypatch.setattr(lmdb_store._BatchedLmdbWriter, "put", failing_put)
    with pytest.raises(RuntimeError, match=r"disk on fire"):
        pack_videos(corpus, tmp_path / "v.lmdb", progress=False, commit_every=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no target, no temp dir


def test_map_grows_when_full(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=lmdb_store.__name__)
    monkeypatch.setattr(lmdb_store, "_MIN_MAP_SIZE", 64 << 10)
    root = tmp_path / "many"
    root.mkdir()
    rng = np.random.default_rng(0)
    blobs = {f"v{i:03d}": rng.bytes(50_000 + i) for i in range(40)}  # ~2 MB in a 64 KiB map
    for k, b in blobs.items():
        (root / f"{k}.mp4").write_bytes(b)
    report = pack_videos(root, tmp_path / "v.lmdb", map_size=1, commit_every=7, progress=False)
    assert report.n_packed == 40
    store = LmdbVideoStore(tmp_path / "v.lmdb")
    assert all(store[k] == b for k, b in blobs.items())
    assert "growing" in caplog.text


def test_open_errors_name_the_path(tmp_path):
    with pytest.raises(StoreError, match=r"nope\.lmdb"):
        LmdbVideoStore(tmp_path / "nope.lmdb")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match=r"plain"):
        LmdbVideoStore(tmp_path / "plain")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "data.mdb").write_bytes(b"\0garbage" * 2000)
    with pytest.raises(StoreError, match=r"junk"):
        LmdbVideoStore(tmp_path / "junk")


def test_missing_key_error_names_key_and_store(corpus, tmp_path):
    out = tmp_path / "v.lmdb"
    pack_videos(corpus, out, progress=False)
    store = LmdbVideoStore(out)
    with pytest.raises(KeyError) as err:
        store["video9999"]
    assert "video9999" in str(err.value) and str(out) in str(err.value)


def test_pickle_drops_env_and_reopens(corpus, tmp_path):
    out = tmp_path / "v.lmdb"
    pack_videos(corpus, out, progress=False)
    store = LmdbVideoStore(out)
    assert store["vid00001"]  # env open in this process
    blob = pickle.dumps(store)
    assert len(blob) < 2000  # no environment, no values
    clone = pickle.loads(blob)
    assert clone._env is None
    assert clone["vid00001"] == store["vid00001"]
    assert clone.env_pid == os.getpid()


def test_several_readers_share_one_env(corpus, tmp_path):
    out = tmp_path / "v.lmdb"
    pack_videos(corpus, out, progress=False)
    a, b = LmdbVideoStore(out), LmdbVideoStore(out)  # py-lmdb forbids opening it twice
    assert a["vid00001"] == b["vid00001"]
    a.close()
    assert b["vid00001"]  # still open for b
    assert a["vid00001"]  # a reopens lazily
    b.close()
    a.close()


class _PidDataset(Dataset):
    def __init__(self, store: LmdbVideoStore):
        self.store = store
        self.keys = store.keys()

    def __len__(self) -> int:
        return len(self.keys) * 4

    def __getitem__(self, i):
        key = self.keys[i % len(self.keys)]
        data = self.store[key]
        return {"pid": os.getpid(), "env_pid": self.store.env_pid, "key": key, "n": len(data),
                "head": torch.frombuffer(bytearray(data[:16]), dtype=torch.uint8)}  # fmt: skip


def test_each_dataloader_worker_opens_its_own_env(corpus, tmp_path):
    out = tmp_path / "v.lmdb"
    pack_videos(corpus, out, progress=False)
    store = LmdbVideoStore(out)
    expected = {k: store[k] for k in store}  # env opened in the parent before forking
    loader = DataLoader(_PidDataset(store), batch_size=None, num_workers=2)  # forked workers
    items = list(loader)
    assert len(items) == 12
    pids = {it["pid"] for it in items}
    assert os.getpid() not in pids and len(pids) == 2
    for it in items:
        assert it["env_pid"] == it["pid"]  # opened in the worker, not inherited
        assert it["n"] == len(expected[it["key"]])
        assert bytes(it["head"].tolist()) == expected[it["key"]][:16]
    assert store.env_pid == os.getpid()
    assert store["vid00001"] == expected["vid00001"]  # the parent's env is unharmed


# ---------------------------------------------------------------------------- VIMPAC tokens


def test_token_lmdb_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    items = [
        ("ApplyEyeMakeup/v_a", rng.integers(0, 8192, (5, 4, 4)).astype(np.int64), 3),
        ("b", rng.integers(0, 8192, (0, 4, 4)).astype(np.int16), 0),
        ("c", rng.integers(0, 2**20, (2, 4, 4)).astype(np.int32), 100),
    ]
    report = write_token_lmdb(items, tmp_path / "tok.lmdb")
    assert report.n_packed == 3
    store = LmdbTokenStore(tmp_path / "tok.lmdb")
    assert store.keys() == ["ApplyEyeMakeup/v_a", "b", "c"]
    for key, tokens, label in items:
        got = store[key]
        np.testing.assert_array_equal(got["tokens"], tokens)
        assert got["label"] == label and isinstance(got["label"], int)
    assert store["ApplyEyeMakeup/v_a"]["tokens"].dtype == np.int16  # fits: stored as int16
    assert store["c"]["tokens"].dtype == np.int32
    assert store.get("zzz") is None
    # the raw value is VIMPAC's layout: an uncompressed np.savez with tokens and a 0-d label
    store.close()
    env = lmdb.open(str(tmp_path / "tok.lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        raw = txn.get(b"b")
    env.close()
    assert raw[:2] == b"PK"
    npz = np.load(io.BytesIO(raw))
    assert set(npz.files) == {"tokens", "label"}
    assert npz["label"].shape == () and npz["label"].dtype == np.int16


def test_reads_token_lmdb_written_in_the_original_layout(tmp_path):
    path = tmp_path / "dalle_ucf101_train_val_fps2_hflip0_128center128"
    env = lmdb.open(str(path), map_size=1 << 24)
    tokens = np.arange(2 * 16 * 16, dtype=np.int16).reshape(2, 16, 16)
    buf = io.BytesIO()
    np.savez(buf, tokens=tokens, label=np.array(7, dtype=np.int16))
    with env.begin(write=True) as txn:
        txn.put(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", buf.getvalue())
        txn.put(b"bad", b"not an npz")
    env.close()
    store = LmdbTokenStore(path)
    item = store["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"]
    np.testing.assert_array_equal(item["tokens"], tokens)
    assert item["label"] == 7
    with pytest.raises(StoreError, match=r"bad"):
        store["bad"]


def test_token_writer_refuses_overwrite_and_duplicates(tmp_path):
    out = tmp_path / "tok.lmdb"
    write_token_lmdb([("a", np.zeros((1, 2, 2), np.int16), 1)], out)
    with pytest.raises(StoreError, match=re.escape(str(out))):
        write_token_lmdb([("a", np.zeros((1, 2, 2), np.int16), 1)], out)
    with pytest.raises(StoreError, match=r"'x'"):
        write_token_lmdb(
            [("x", np.zeros((1, 2, 2), np.int16), 1), ("x", np.zeros((1, 2, 2), np.int16), 2)],
            tmp_path / "dup.lmdb",
        )
    assert not (tmp_path / "dup.lmdb").exists()
    with pytest.raises(StoreError, match=r"shape"):
        write_token_lmdb([("y", np.zeros((2, 2), np.int16), 1)], tmp_path / "bad.lmdb")
