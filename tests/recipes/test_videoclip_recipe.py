"""The VideoCLIP recipes end to end on a tiny synthetic world: fit, exact resume (with
retrieval-augmented batches from epoch 1), zero-shot test on the MSR-VTT and YouCook2 formats,
the exported inference pipeline."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import videolang
from videolang.engine import fit, test
from videolang.errors import ConfigError
from videolang.pipelines.features import run_extraction
from videolang.synth import synthesize_world


def make_world(root):
    """40 small synthetic videos and their pooled-pixels features (2 rows per second)."""
    synthesize_world(root / "world", 40, seed=3, size=32, duration=3.0, progress=False)
    run_extraction(str(root / "world" / "videos"), "pooled-pixels", str(root / "features"), dtype="float32",
                   progress=False, backbone_options={"grid": 2, "rows_per_second": 2})
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("vc"))


def config(root, **data) -> dict:
    w = root / "world"
    return {
        "recipe": "videoclip.pretrain",
        "name": "vc",
        "seed": 0,
        "model": {"name": "videoclip-tiny", "normalize": True, "temperature": 0.1},
        "data": {
            "features": str(root / "features"),
            "captions": str(w / "formats/howto100m/raw_caption.json"),
            "train_list": str(w / "formats/howto100m/train.lst"),
            "pairs_per_video": 2, "videos_per_batch": 8, "min_video_len": 1, "max_video_len": 8,
            "min_text_tokens": 4, "max_text_tokens": 16, "max_text_len": 24,
            "retrieval_start_epoch": 1, "retrieval_pairs_per_video": 2,
            "val_pairs": str(w / "annotations/captions.jsonl"), "val_format": "jsonl", "val_split": "val",
            "test_pairs": str(w / "formats/msrvtt/MSRVTT_JSFUSION_test.csv"), "test_format": "msrvtt",
            **data,
        },
        "optim": {"lr": 1e-3, "warmup_ratio": 0.1},
        "trainer": {"max_epochs": 2, "enable_progress_bar": False, "num_sanity_val_steps": 0,
                    "log_every_n_steps": 1, "monitor": "val/R1", "monitor_mode": "max"},
        "run": {"root": str(root / "runs")},
    }


class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_fit_resume_test_and_inference(world):
    cfg = config(world)
    straight = fit(cfg)
    interrupted = fit(cfg, callbacks=[StopAfterFirstEpoch()])
    resumed = fit(cfg, resume=interrupted.run_dir / "checkpoints" / "last.ckpt")
    a, b = weights(straight.run_dir), weights(resumed.run_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    for x, y in zip(straight.metrics["history"]["val"], resumed.metrics["history"]["val"], strict=True):
        assert x == pytest.approx(y, abs=1e-6)
    # protocol-named metrics, chance level logged beside them
    final = straight.metrics["final"]
    assert "val/jsonl-val/R1" in final and final["val/chance_R1"] == pytest.approx(100 / 6)

    # zero-shot test of the export, MSR-VTT JSFusion format and YouCook2 segments
    export = straight.run_dir / "export"
    res = test(cfg, [f"model.init={export}"])
    assert set(res.metrics["test"]) >= {"test/msrvtt-test/R1", "test/msrvtt-test/MedR", "test/msrvtt-test/MeanR"}
    yc = str(world / "world/formats/youcook2/youcookii_annotations_trainval.json")
    res = test(cfg, [f"model.init={export}", f"data.test_pairs={yc}", "data.test_format=youcook2",
                     "data.test_split=testing"])
    assert "test/youcook2-testing/R1" in res.metrics["test"]

    # the export is a model folder for videolang.load (tests/pipelines/test_videoclip.py has more)
    pipe = videolang.load(export)
    assert pipe.spec.video.feature_rate == 2.0 and pipe.spec.video.backbone.name == "pooled-pixels"
    videos = sorted((world / "world/videos").glob("*.mp4"))[:3]
    scores = pipe.score([str(v) for v in videos], ["a red circle moves left", "a blue square grows"])
    assert scores.shape == (3, 2) and torch.isfinite(scores).all()
    # precomputed features (the store's rows) give the same embedding as the file
    from videolang.data.stores import FeatureStore

    feats = torch.from_numpy(FeatureStore(world / "features")[videos[0].stem].copy())
    torch.testing.assert_close(pipe.encode_video([feats]), pipe.encode_video([str(videos[0])]), atol=1e-5, rtol=0)


def test_missing_captions_is_a_clear_error(world):
    cfg = config(world, captions=None)
    with pytest.raises(ConfigError, match=r"data\.captions"):
        fit(cfg)
