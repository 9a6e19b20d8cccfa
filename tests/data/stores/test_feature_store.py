"""Sharded memory-mapped feature store: ShardedTensor, writer/reader, crash safety, MMPT layouts."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from videolang.data.stores import feature_store
from videolang.data.stores.feature_store import FeatureStore, FeatureStoreWriter, ShardedTensor
from videolang.errors import StoreError

SRC = str(Path(feature_store.__file__).parents[3])


def make_items(n: int, dim: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = [0, 1, *rng.integers(0, 40, n - 2).tolist()]
    return {
        f"vid{i:04d}": rng.standard_normal((t, dim)).astype(np.float32) * 10
        for i, t in enumerate(lengths)
    }


def run_python(code: str, timeout: float = 60) -> str:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert out.returncode == 0 or "EXPECTED_EXIT" in out.stdout, out.stderr
    return out.stdout


# ------------------------------------------------------------------------------ ShardedTensor


def test_sharded_tensor_round_trip(tmp_path):
    arrays = [np.arange(6, dtype=np.float16).reshape(3, 2), np.zeros((0, 2), np.float16),
              np.ones((2, 2), np.float16)]  # fmt: skip
    st = ShardedTensor.from_list(arrays)
    assert len(st) == 3
    assert st.starts.dtype == np.int64 and st.starts.tolist() == [0, 3, 3, 5]
    assert st.lengths().tolist() == [3, 0, 2]
    st.save(tmp_path / "train_0")
    assert (tmp_path / "train_0_data.npy").is_file() and (tmp_path / "train_0_starts.npy").is_file()
    loaded = ShardedTensor.load(tmp_path / "train_0")
    assert isinstance(loaded.data, np.memmap)
    for a, b in zip(arrays, loaded, strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded[-1].shape == (2, 2)
    with pytest.raises(IndexError):
        loaded[3]
    in_memory = ShardedTensor.load(tmp_path / "train_0", mmap_mode=None)
    assert not isinstance(in_memory.data, np.memmap)
    with pytest.raises(StoreError, match=r"train_0_data\.npy"):
        st.save(tmp_path / "train_0")
    st.save(tmp_path / "train_0", overwrite=True)
    empty = ShardedTensor.from_list([])
    assert len(empty) == 0 and empty.lengths().size == 0


@pytest.mark.parametrize(
    ("starts", "message"),
    [([1, 3], "starts\\[0\\]"), ([0, 2], "data has 3 rows"), ([0, 2, 1, 3], "non-decreasing"),
     ([], "N\\+1"), ([[0, 3]], "1-D"), ([0.0, 3.0], "integers")],
)  # fmt: skip
def test_sharded_tensor_validates_starts(starts, message):
    with pytest.raises(StoreError, match=message):
        ShardedTensor(np.zeros((3, 2)), np.array(starts))


def test_sharded_tensor_save_is_atomic(tmp_path, monkeypatch):
    def broken_save(f, arr, **kw):
        f.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(feature_store.np, "save", broken_save)
    with pytest.raises(OSError, match=r"disk full"):
        ShardedTensor.from_list([np.ones((2, 2))]).save(tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ writer and reader


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_store_round_trip(tmp_path, dtype):
    items = make_items(23)
    with FeatureStoreWriter(tmp_path / "feats", dtype=dtype, shard_size=5) as w:
        for vid, arr in items.items():
            assert vid not in w
            w.add(vid, arr)
            assert vid in w
    index = json.loads((tmp_path / "feats" / "index.json").read_text())
    assert index["format"] == "videolang-features" and index["version"] == 1
    assert index["dim"] == 8 and index["dtype"] == dtype and index["n_items"] == 23
    assert [s["prefix"] for s in index["shards"]] == [f"features_{k}" for k in range(5)]
    assert [len(s["ids"]) for s in index["shards"]] == [5, 5, 5, 5, 3]

    store = FeatureStore(tmp_path / "feats")
    assert len(store) == 23 and store.ids == list(items)
    assert store.dim == 8 and store.dtype == np.dtype(dtype)
    assert store.lengths == {vid: len(a) for vid, a in items.items()}
    assert store["vid0000"].shape == (0, 8)
    for vid, arr in items.items():
        got = store[vid]
        assert vid in store and got.dtype == np.dtype(dtype)
        assert not got.flags.writeable  # documented: a read-only view
        if dtype == "float32":
            np.testing.assert_array_equal(got, arr)
        else:
            np.testing.assert_array_equal(got, arr.astype(np.float16))
            np.testing.assert_allclose(got, arr, rtol=1e-3, atol=1e-3)
    many = store.get_many(["vid0003", "vid0001"], copy=True)
    assert many[0].flags.writeable
    np.testing.assert_array_equal(many[1], store["vid0001"])
    assert store.get("nope") is None
    with pytest.raises(KeyError, match=r"nope"):
        store["nope"]
    # every shard is a plain MMPT ShardedTensor
    st = ShardedTensor.load(tmp_path / "feats" / "features_1")
    np.testing.assert_array_equal(st[0], store["vid0005"])
    # in-memory mode gives the same values
    eager = FeatureStore(tmp_path / "feats", mmap=False)
    np.testing.assert_array_equal(eager["vid0007"], store["vid0007"])


def test_add_validates_input(tmp_path):
    with FeatureStoreWriter(tmp_path / "f", dtype="float16") as w:
        w.add("a", np.ones((2, 4)))
        with pytest.raises(StoreError, match=r"'b'.*dimension 3.*4"):
            w.add("b", np.ones((2, 3)))
        with pytest.raises(StoreError, match=r"'c'.*NaN/inf"):
            w.add("c", np.array([[1, np.nan, 0, 0]]))
        with pytest.raises(StoreError, match=r"'d'.*NaN/inf"):
            w.add("d", np.array([[1, np.inf, 0, 0]]))
        with pytest.raises(StoreError, match=r"'e'.*overflow float16"):
            w.add("e", np.full((1, 4), 1e6))
        with pytest.raises(StoreError, match=r"'a'.*already"):
            w.add("a", np.ones((1, 4)))
        with pytest.raises(StoreError, match=r"shape"):
            w.add("f", np.ones(4))
        assert len(w) == 1
    store = FeatureStore(tmp_path / "f")
    assert store.ids == ["a"]


def test_failed_row_write_is_rolled_back(tmp_path):
    class FlakyFile:
        """Writes half of the next buffer, then fails (a full disk)."""

        def __init__(self, f):
            self.f, self.fail = f, True

        def write(self, b):
            if self.fail:
                self.fail = False
                self.f.write(bytes(memoryview(b))[: len(memoryview(b)) // 2])
                raise OSError(28, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

    with FeatureStoreWriter(tmp_path / "f", dtype="float32") as w:
        w.add("a", np.full((3, 4), 1.0))
        w._cur.f = FlakyFile(w._cur.f)
        with pytest.raises(OSError, match=r"No space"):
            w.add("b", np.full((5, 4), 2.0))
        assert "b" not in w
        w.add("b", np.full((2, 4), 3.0))
    store = FeatureStore(tmp_path / "f")
    np.testing.assert_array_equal(store["a"], np.full((3, 4), 1.0))
    np.testing.assert_array_equal(store["b"], np.full((2, 4), 3.0))


def test_refuses_existing_store(tmp_path):
    root = tmp_path / "f"
    with FeatureStoreWriter(root, shard_size=2) as w:
        for i in range(5):
            w.add(f"v{i}", np.ones((1, 2)))
    with pytest.raises(StoreError, match=r"already holds a feature store"):
        FeatureStoreWriter(root)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("hi")
    with pytest.raises(StoreError, match=r"not empty"):
        FeatureStoreWriter(tmp_path / "other")
    (root / "README").write_text("mine")
    with FeatureStoreWriter(root, overwrite=True, shard_size=10) as w:
        w.add("new", np.ones((3, 5)))
    assert sorted(p.name for p in root.iterdir()) == [
        ".complete.json", "README", "features_0_data.npy", "features_0_starts.npy", "index.json",
    ]  # fmt: skip
    store = FeatureStore(root)
    assert store.ids == ["new"] and store.dim == 5


def test_exception_keeps_completed_shards(tmp_path):
    root = tmp_path / "f"
    with pytest.raises(RuntimeError), FeatureStoreWriter(root, shard_size=2) as w:
        for i in range(3):
            w.add(f"v{i}", np.full((2, 4), i))
        raise RuntimeError("extractor crashed")
    # nothing at root; the finished shard waits in the partial build, which readers refuse
    partial = tmp_path / ".f.partial"
    assert not root.exists()
    with pytest.raises(StoreError, match="interrupted"):
        FeatureStore(root)
    with pytest.raises(StoreError, match="incomplete feature store"):
        FeatureStore(partial)
    assert sorted(p.name for p in partial.iterdir()) == [
        ".partial.json", "features_0_data.npy", "features_0_starts.npy", "index.json",
    ]  # fmt: skip
    with FeatureStoreWriter(root, resume=True) as w:
        assert "v1" in w and "v2" not in w
    store = FeatureStore(root)
    assert store.ids == ["v0", "v1"]
    np.testing.assert_array_equal(store["v1"], np.ones((2, 4)))


def test_hard_crash_leaves_a_readable_store_and_resume_completes_it(tmp_path):
    root = tmp_path / "f"
    # the process dies (no cleanup at all) while the second shard is half written
    run_python(f"""
        import os, numpy as np
        from videolang.data.stores.feature_store import FeatureStoreWriter
        w = FeatureStoreWriter({str(root)!r}, dtype="float32", shard_size=3)
        for i in range(5):
            w.add(f"v{{i}}", np.full((i, 4), i, np.float32))
        print("EXPECTED_EXIT", flush=True)
        os._exit(1)
    """)
    partial = tmp_path / ".f.partial"
    with pytest.raises(StoreError, match="interrupted"):
        FeatureStore(root)
    leftovers = [p.name for p in partial.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".features_1_data.npy.")
    with pytest.raises(StoreError, match=r"resume=True"):
        FeatureStoreWriter(root)
    with pytest.raises(StoreError, match=r"float16"):
        FeatureStoreWriter(root, resume=True, dtype="float16")
    with FeatureStoreWriter(root, resume=True, shard_size=3) as w:
        assert "v2" in w and "v3" not in w and len(w) == 3
        for i in range(8):
            if f"v{i}" not in w:
                w.add(f"v{i}", np.full((i, 4), i, np.float32))
    store = FeatureStore(root)
    assert store.ids == [f"v{i}" for i in range(8)]
    assert store.dtype == np.float32
    for i in range(8):
        np.testing.assert_array_equal(store[f"v{i}"], np.full((i, 4), i))
    index = json.loads((root / "index.json").read_text())
    assert [s["prefix"] for s in index["shards"]] == ["features_0", "features_1", "features_2"]
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]  # resume cleaned up
    assert not partial.exists()


def test_resume_on_missing_store_creates_it(tmp_path):
    with FeatureStoreWriter(tmp_path / "new", resume=True, dtype="float32") as w:
        w.add("a", np.ones((1, 3)))
    assert FeatureStore(tmp_path / "new").ids == ["a"]


def test_empty_store(tmp_path):
    FeatureStoreWriter(tmp_path / "e").close()
    store = FeatureStore(tmp_path / "e")
    assert len(store) == 0 and store.ids == [] and store.dim is None and store.lengths == {}


def test_open_errors_name_the_path(tmp_path):
    with pytest.raises(StoreError, match=r"nowhere"):
        FeatureStore(tmp_path / "nowhere")
    (tmp_path / "d").mkdir()
    with pytest.raises(StoreError, match=r"index\.json"):
        FeatureStore(tmp_path / "d")
    with FeatureStoreWriter(tmp_path / "f", shard_size=1) as w:
        w.add("a", np.ones((1, 2)))
        w.add("b", np.ones((1, 2)))
    (tmp_path / "f" / "features_1_data.npy").unlink()
    store = FeatureStore(tmp_path / "f")
    assert store["a"].shape == (1, 2)  # other shards stay readable
    with pytest.raises(StoreError, match=r"features_1_data\.npy"):
        store["b"]


def test_pickle_drops_open_shards(tmp_path):
    with FeatureStoreWriter(tmp_path / "f", dtype="float32") as w:
        w.add("a", np.ones((1000, 64)))
    store = FeatureStore(tmp_path / "f")
    assert store["a"].sum() == 64000
    blob = pickle.dumps(store)
    assert len(blob) < 4000
    np.testing.assert_array_equal(pickle.loads(blob)["a"], store["a"])


# ------------------------------------------------------------------------------- MMPT layouts


def test_from_mmpt_reads_the_original_layout(tmp_path):
    """Files written exactly as MMPT's shard_feature.py does: pickle meta + np.save per shard."""
    rng = np.random.default_rng(1)
    vfeat = tmp_path / "feat_how2_s3d_shard_small"
    vfeat.mkdir()
    meta = {0: ["vid_a", "vid_b", "vid_c"], 1: ["vid_d", "vid_e"]}
    expected = {}
    for k, ids in meta.items():
        feats = [
            rng.standard_normal((int(rng.integers(0, 20)), 512)).astype(np.float16) for _ in ids
        ]
        feats[0] = np.zeros((0, 512), np.float16) if k == 1 else feats[0]
        expected.update(zip(ids, feats, strict=True))
        starts = np.cumsum([0] + [len(f) for f in feats]).astype(np.int64)
        np.save(str(vfeat / f"train_{k}_data.npy"), np.concatenate(feats, axis=0))
        np.save(str(vfeat / f"train_{k}_starts.npy"), starts)
    with open(vfeat / "train_meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    store = FeatureStore.from_mmpt(vfeat, "train")
    assert store.ids == ["vid_a", "vid_b", "vid_c", "vid_d", "vid_e"]
    assert store.dim == 512 and store.dtype == np.float16
    assert store.lengths == {v: len(a) for v, a in expected.items()}
    for vid, arr in expected.items():
        np.testing.assert_array_equal(store[vid], arr)
    with pytest.raises(StoreError, match=r"val_meta\.pkl"):
        FeatureStore.from_mmpt(vfeat, "val")


def test_from_mmpt_refuses_code_in_meta_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "train_meta.pkl", "wb") as f:
        pickle.dump({0: [Evil()]}, f)
    with pytest.raises(StoreError, match=r"train_meta\.pkl.*refusing"):
        FeatureStore.from_mmpt(tmp_path, "train")


def test_from_npy_dir(tmp_path):
    items = make_items(6, dim=16)
    for vid, arr in items.items():
        np.save(tmp_path / f"{vid}.npy", arr)
    (tmp_path / "notes.txt").write_text("ignored")
    store = FeatureStore.from_npy_dir(tmp_path)
    assert store.ids == sorted(items) and len(store) == 6
    assert store.dim == 16 and store.dtype == np.float32
    assert store.lengths == {v: len(a) for v, a in items.items()}
    for vid, arr in items.items():
        got = store[vid]
        np.testing.assert_array_equal(got, arr)
        assert not got.flags.writeable
    assert "vid0002" in store and "notes" not in store
    with pytest.raises(KeyError, match=r"zzz"):
        store["zzz"]


# ---------------------------------------------------------------------------- resident memory


def test_resident_memory_does_not_grow_with_data(tmp_path):
    """Open a ~210 MB store in a fresh process: opening and 20 random reads stay far below it."""
    root = tmp_path / "big"
    n, t, d = 800, 128, 512  # 800 videos x 128 x 512 fp32 = 210 MB
    with FeatureStoreWriter(root, dtype="float32", shard_size=100) as w:
        for i in range(n):
            w.add(f"v{i}", np.full((t, d), i, dtype=np.float32))
    data_bytes = sum(p.stat().st_size for p in root.glob("*_data.npy"))
    assert data_bytes >= 200e6
    out = run_python(f"""
        import numpy as np
        from videolang.data.stores.feature_store import FeatureStore

        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

        before = rss()
        store = FeatureStore({str(root)!r})
        opened = rss()
        rng = np.random.default_rng(0)
        for i in rng.choice({n}, 20, replace=False):
            x = store[f"v{{i}}"]
            assert float(x.sum()) == float(i) * {t * d}
        read = rss()
        print(before, opened, read)
    """)
    before, opened, read = map(int, out.split())
    item_bytes = t * d * 4
    assert opened - before < 0.02 * data_bytes, (before, opened)
    assert read - before < 0.10 * data_bytes, (before, opened, read)
    assert read - before < 20 * item_bytes + 16e6  # about the 20 items read, plus page tables
