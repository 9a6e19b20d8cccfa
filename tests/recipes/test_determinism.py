"""Same seed, same machine, same numbers: a tiny VideoCLIP pretraining run twice gives
bit-identical weights and test metrics; DataLoader workers (0 or 2, also when the epoch's
retrieval batches are set up before the first epoch and when a run is resumed) change nothing;
the other recipes' training datasets draw from (seed, epoch, index) alone."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tests.determinism import assert_worker_independent
from tests.recipes.test_videoclip_recipe import config, make_world

from videolang.data.text import build_wordpiece_tokenizer
from videolang.data.tokens import TokenStore, TokenStoreHeader, write_token_store
from videolang.data.videoclip import FineTunePairs, TextLayout
from videolang.data.vidlankd import TeacherDataConfig, VideoCaptionWindows
from videolang.data.vimpac import TokenClips
from videolang.engine import fit, test


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("determinism"))


def videoclip_config(root, **data) -> dict:
    """The VideoCLIP recipe test's tiny config, for 3 epochs."""
    cfg = config(root, **data)
    cfg["trainer"]["max_epochs"] = 3
    return cfg


class BatchLog(Callback):
    """The video indices of every training batch."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch["video_index"].tolist())


class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def run(cfg, callbacks=()):
    """fit + zero-shot test of the export: (run folder, fit metrics, test metrics)."""
    fitted = fit(cfg, callbacks=list(callbacks))
    tested = test(cfg, [f"model.init={fitted.run_dir / 'export'}"])
    return fitted.run_dir, fitted.metrics, tested.metrics["test"]


@pytest.fixture(scope="module")
def straight(world):
    log = BatchLog()
    return (*run(videoclip_config(world), [log]), log.batches)


def test_videoclip_pretraining_twice_is_bit_identical(world, straight):
    run_dir, metrics, tested, batches = straight
    log = BatchLog()
    again_dir, again_metrics, again_tested, again_batches = (*run(videoclip_config(world), [log]), log.batches)
    assert again_dir != run_dir
    assert batches == again_batches  # data order, including the retrieval-augmented epochs
    train_videos = len((world / "world/formats/howto100m/train.lst").read_text().split())
    assert len(batches) == 3 * (train_videos // 8)
    assert_same_weights(weights(run_dir), weights(again_dir))
    assert metrics["history"] == again_metrics["history"]  # losses and validation, exactly
    assert tested == again_tested and "test/msrvtt-test/R1" in tested
    assert metrics["torch_threads"] == torch.get_num_threads()


def test_videoclip_workers_change_nothing(world):
    """With retrieval batches from the first epoch, the batch sampler gets its embeddings in
    on_train_epoch_start, after Lightning made the iterator: with a plain DataLoader two
    workers would already have been handed random batches."""
    logs = [BatchLog(), BatchLog()]
    runs = [run(videoclip_config(world, num_workers=n, retrieval_start_epoch=0), [log])
            for n, log in zip((0, 2), logs, strict=True)]
    assert logs[0].batches == logs[1].batches
    assert_same_weights(weights(runs[0][0]), weights(runs[1][0]))
    assert runs[0][2] == runs[1][2]


def test_videoclip_resume_with_workers_matches_the_straight_run(world, straight):
    cfg = videoclip_config(world, num_workers=2)
    interrupted = fit(cfg, callbacks=[StopAfterFirstEpoch()])
    log = BatchLog()
    resumed = fit(cfg, resume=interrupted.run_dir / "checkpoints" / "last.ckpt", callbacks=[log])
    assert log.batches == straight[3][len(straight[3]) - len(log.batches):]
    assert_same_weights(weights(straight[0]), weights(resumed.run_dir))


def test_vlm_captioning_draws_a_caption_per_epoch(world):
    """The captioning items are drawn from (seed, epoch, index): the recipe sets the epoch."""
    w = world / "world"
    captions = [json.loads(line)["caption"] for line in (w / "annotations/captions.jsonl").read_text().splitlines()]
    build_wordpiece_tokenizer(captions, world / "tok", vocab_size=300)

    class Epochs(Callback):
        def __init__(self):
            self.seen: list[int] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append(trainer.train_dataloader.dataset.epoch)

    spy = Epochs()
    cfg = {
        "recipe": "vlm.captioning", "name": "cap", "seed": 0, "model": {"name": "vlm-tiny"},
        "data": {"features": str(world / "features"), "tokenizer": str(world / "tok"), "max_video_len": 8,
                 "max_text_len": 32, "train_pairs": str(w / "annotations/captions.jsonl"), "train_format": "jsonl",
                 "batch_size": 16},
        "optim": {"lr": 1e-3},
        "trainer": {"max_epochs": 2, "limit_train_batches": 1, "enable_progress_bar": False,
                    "num_sanity_val_steps": 0, "log_every_n_steps": 1, "monitor": None},
        "run": {"root": str(world / "runs"), "export": False, "plots": False},
    }
    fit(cfg, callbacks=[spy])
    assert spy.seen == [0, 1]


# ---------------------------------------------------------------------------------------------
# the recipes' own training datasets


@pytest.fixture(scope="module")
def token_stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    items = [(f"v{i}", rng.integers(0, 16, (int(rng.integers(6, 14)), 2, 2)), i % 2) for i in range(6)]
    header = TokenStoreHeader(tokenizer="vqvae", tokenizer_hash="x", vocab_size=16, downsample=8, fps=5.0,
                              frame_size=16, classes=["a", "b"])
    write_token_store(items, root / "center", header)
    write_token_store([(k, t[:, :, ::-1], y) for k, t, y in items], root / "flip",
                      TokenStoreHeader(**{**header.__dict__, "hflip": True}))
    return root


@pytest.mark.parametrize("mode", ["train", "pairs"])
def test_vimpac_token_clips(token_stores, mode):
    def make():
        stores = [TokenStore(token_stores / "center"), TokenStore(token_stores / "flip")]
        return TokenClips(stores, [f"v{i}" for i in range(6)], clip_len=3, stride=1, pad_id=17, mode=mode,
                          relevance_range=4, seed=5)

    assert_worker_independent(make)


def _features():
    rng = np.random.default_rng(1)
    return {f"v{i}": rng.normal(size=(8, 4)).astype(np.float32) for i in range(5)}


def test_videoclip_fine_tuning_pairs():
    features = _features()
    pairs = [(vid, 0.0, None, f"sentence {j} about {vid}") for vid in sorted(features) for j in range(5)]

    def tokenize(texts):
        return [[100 + sum(map(ord, w)) % 900 for w in t.split()] for t in texts]

    assert_worker_independent(lambda: FineTunePairs(pairs, features, tokenize, TextLayout(max_text_len=8), 4, seed=2))


def test_vidlankd_caption_windows():
    class Tok:
        def __call__(self, text, truncation=True, max_length=None):
            return {"input_ids": [101, *(100 + sum(map(ord, w)) % 900 for w in text.split())][:max_length]}

    features = _features()
    captions = {vid: {"text": [f"part {j} of {vid}" for j in range(4)], "start": [0.0, 1.0, 2.0, 3.0],
                      "end": [1.0, 2.0, 3.0, 4.0]} for vid in features}
    d = TeacherDataConfig(block_size=6, max_video_len=3)
    make = lambda: VideoCaptionWindows(sorted(features), copy.deepcopy(captions), features, Tok(), d,  # noqa: E731
                                       1.0, seed=4, random_window=True)
    assert_worker_independent(make)
