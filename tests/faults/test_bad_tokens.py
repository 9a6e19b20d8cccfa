"""VIMPAC on a token store with an unreadable video (no token frames): the video is skipped,
counted and listed, the run finishes; past data.max_skipped_fraction it stops, naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from videolang.data.tokens import TokenStoreHeader, write_token_store
from videolang.engine import fit
from videolang.errors import DataError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_tokens")
    rng = np.random.default_rng(0)
    items = [(f"v{i:02d}", rng.integers(0, 16, (int(rng.integers(6, 10)), 2, 2)), i % 2) for i in range(20)]
    items[7] = ("v07", np.zeros((0, 2, 2), dtype=np.int64), 1)  # a video whose tokenizing produced nothing
    header = TokenStoreHeader(tokenizer="vqvae", tokenizer_hash="x", vocab_size=16, downsample=8, fps=5.0,
                              frame_size=16, classes=["a", "b"])
    write_token_store(items, root / "train", header)
    return root / "train"


def _config(root, store, **data):
    tiny = {"hidden_size": 16, "num_heads": 2, "mlp_size": 32, "num_layers": 1, "pooling": "mean"}
    return {"recipe": "vimpac.finetune", "name": "bad_tokens", "model": {"name": "vimpac-tiny", "overrides": tiny},
            "data": {"train_stores": [str(store)], "clip_len": 3, "stride": 1, "batch_size": 4, **data},
            "trainer": {"max_epochs": 1, "enable_progress_bar": False, "monitor": None},
            "run": {"root": str(root), "plots": False, "export": False}}


def test_an_unreadable_token_video_is_skipped_and_listed(tmp_path, store):
    result = fit(_config(tmp_path, store, max_skipped_fraction=0.1))
    report = json.loads((result.run_dir / "skipped.json").read_text())
    assert [r["source"].rsplit(":", 1)[1] for r in report["skipped"]["train"]] == ["v07"]
    assert "no token frames" in report["skipped"]["train"][0]["reason"]


def test_under_the_default_limit_the_run_stops_naming_it(tmp_path, store):
    with pytest.raises(DataError, match=r"1 of 20 train samples could not be read.*v07"):
        fit(_config(tmp_path, store))
