"""VideoCLIP inference: MMPT's embeddings from a converted checkpoint, batch independence,
inference equals the run's evaluation, and a self-contained model folder."""

from __future__ import annotations

import csv
import shutil

import pytest
import torch
from tests.golden import load_golden

import videolang
from videolang.data.text import load_tokenizer
from videolang.engine import fit, test
from videolang.errors import ConfigError
from videolang.metrics import retrieval_metrics
from videolang.models.bert import BertConfig
from videolang.models.convert.videoclip import convert_mmpt_state_dict
from videolang.models.videoclip import VideoCLIP, VideoCLIPConfig
from videolang.pipelines import Features, Frames
from videolang.pipelines.features import run_extraction
from videolang.pipelines.folder import (
    TextSpec,
    VideoFeaturesSpec,
    write_model_folder,
)
from videolang.pipelines.videoclip import VideoCLIPSpec
from videolang.synth import synthesize_world

TINY = dict(vocab_size=200, hidden_size=32, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128)


# ------------------------------------------------------------------ MMPT parity, features in --


@pytest.fixture(scope="module")
def golden_folder(tmp_path_factory):
    """The golden MMPT towers converted into a features-only model folder."""
    golden = load_golden("videoclip_tiny_separate")
    cfg = VideoCLIPConfig(feature_dim=512, max_video_len=8, video=BertConfig(num_hidden_layers=2, **TINY),
                          text=BertConfig(num_hidden_layers=3, **TINY))
    model = VideoCLIP(cfg).eval()
    state = {f"mmmodel.video_encoder.{k}": v for k, v in golden["video_sd"].items()}
    state.update({f"mmmodel.text_encoder.{k}": v for k, v in golden["text_sd"].items()})
    convert_mmpt_state_dict({"model": state}, model)
    # A 200-word vocabulary with BERT's special ids, word i spelled "w<i>": the golden captions
    # become sentences whose tokenization gives back their ids.
    tmp = tmp_path_factory.mktemp("golden")
    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    (tmp / "vocab.txt").write_text("".join(f"{special.get(i, f'w{i}')}\n" for i in range(200)))
    # MMPT's text tower sees [CLS] + caps[2:] = [CLS] w.. [SEP]: 9 words at most here.
    spec = VideoCLIPSpec(text=TextSpec(max_len=9), video=VideoFeaturesSpec(max_len=8))
    folder = write_model_folder(tmp / "videoclip", model, spec, tokenizer=load_tokenizer(tmp / "vocab.txt"))
    return folder, golden


def golden_sentences(golden) -> list[str]:
    """The golden captions' words ([CLS] [SEP] words [SEP]) as text."""
    out = []
    for ids, mask in zip(golden["caps"], golden["cmasks"], strict=True):
        words = ids[mask][2:-1].tolist()
        out.append(" ".join("[CLS]" if w == 101 else f"w{w}" for w in words))
    return out


def test_sentences_give_mmpts_text_embedding(golden_folder):
    folder, golden = golden_folder
    pipe = videolang.load(folder)
    sentences = golden_sentences(golden)
    torch.testing.assert_close(pipe.encode_text(sentences), golden["pooled_text"], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([pipe.encode_text(s) for s in sentences[::-1]]),
                               golden["pooled_text"].flip(0), atol=1e-5, rtol=0)


def test_each_video_alone_gives_mmpts_embedding(golden_folder):
    folder, golden = golden_folder
    pipe = videolang.load(folder)
    lengths = golden["vmasks"].sum(1).tolist()  # 8, 5, 2 valid rows, padded to 8 in MMPT
    videos = [Features(golden["vfeats"][i, :n]) for i, n in enumerate(lengths)]
    want = golden["pooled_video"]
    alone = torch.cat([pipe.encode_video(v) for v in videos])
    torch.testing.assert_close(alone, want, atol=1e-5, rtol=0)
    # a batch of mixed lengths, and any order, give the same embeddings
    torch.testing.assert_close(pipe.encode_video(videos), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.encode_video(videos[::-1]), want.flip(0), atol=1e-5, rtol=0)
    # the shortest video in a batch without a full-length one (the old batch-dependent case)
    torch.testing.assert_close(pipe.encode_video(videos[1:])[1], want[2], atol=1e-5, rtol=0)


def test_long_videos_are_windowed(golden_folder):
    folder, golden = golden_folder
    pipe = videolang.load(folder)
    rows = torch.cat([golden["vfeats"][0], golden["vfeats"][1, :5]])  # 13 rows: windows [0, 8) and [5, 13)
    parts = pipe.encode_video([Features(rows[:8]), Features(rows[5:])])
    torch.testing.assert_close(pipe.encode_video(Features(rows)), parts.mean(0, keepdim=True), atol=1e-6, rtol=0)
    torch.testing.assert_close(pipe.encode_video(Features(rows), pooling="first"), parts[:1], atol=1e-6, rtol=0)
    win = pipe.encode_windows(Features(rows), stride=4)
    assert [(a, b) for a, b in zip(win.starts, win.ends, strict=True)] == [(0, 8), (4, 12), (5, 13)]
    torch.testing.assert_close(win.embeddings[0], parts[0], atol=1e-6, rtol=0)


def test_features_only_folder_says_what_to_give(golden_folder, tmp_path):
    pipe = videolang.load(golden_folder[0])
    with pytest.raises(ConfigError, match="no feature backbone"):
        pipe.encode_video(str(tmp_path / "a.mp4"))
    with pytest.raises(ValueError, match="frame rate"):
        pipe.encode_video(torch.zeros(4, 8, 8, 3, dtype=torch.uint8))


# ------------------------------------------------------------- a tiny run, its export, its test --


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny VideoCLIP run on cnn2d-tiny features (fp16 store), tested zero-shot on MSR-VTT."""
    root = tmp_path_factory.mktemp("vcrun")
    w = root / "world"
    synthesize_world(w, 36, seed=5, size=48, duration=3.0, progress=False)
    run_extraction(str(w / "videos"), "cnn2d-tiny", str(root / "features"), dtype="float16", progress=False)
    cfg = {
        "recipe": "videoclip.pretrain", "name": "vc", "seed": 0,
        "model": {"name": "videoclip-tiny", "normalize": True, "temperature": 0.1},
        "data": {
            "features": str(root / "features"), "tokenizer": "minilm",
            "captions": str(w / "formats/howto100m/raw_caption.json"),
            "train_list": str(w / "formats/howto100m/train.lst"),
            "pairs_per_video": 2, "videos_per_batch": 8, "min_video_len": 1, "max_video_len": 4,
            "min_text_tokens": 4, "max_text_tokens": 16, "max_text_len": 20, "retrieval": False,
            "test_pairs": str(w / "formats/msrvtt/MSRVTT_JSFUSION_test.csv"), "test_format": "msrvtt",
        },
        "optim": {"lr": 1e-3},
        "trainer": {"max_epochs": 2, "enable_progress_bar": False, "num_sanity_val_steps": 0},
        "run": {"root": str(root / "runs")},
    }
    fitted = fit(cfg)
    export = fitted.run_dir / "export"
    tested = test(cfg, [f"model.init={export}"])
    return root, export, tested.metrics["test"]


def msrvtt_test_pairs(world):
    with open(world / "formats/msrvtt/MSRVTT_JSFUSION_test.csv", newline="", encoding="utf-8") as f:
        return [(row["video_id"], row["sentence"]) for row in csv.DictReader(f)]


def test_load_reproduces_the_runs_test_metrics_from_raw_videos(run, tmp_path):
    root, export, logged = run
    # the folder stands alone: copy it away, remove the run's features and tokenizer source
    folder = shutil.copytree(export, tmp_path / "model")
    shutil.rmtree(root / "features")
    pipe = videolang.load(folder)
    assert pipe.spec.similarity.metric == "cosine" and pipe.spec.video.backbone.dtype == "float16"
    pairs = msrvtt_test_pairs(root / "world")
    videos = [str(root / "world" / "videos" / f"{vid}.mp4") for vid, _ in pairs]
    sim = pipe.score(videos, [text for _, text in pairs])  # (videos, texts)
    metrics = retrieval_metrics(sim.t())  # text-to-video, as the run's test
    for name, value in metrics.items():
        assert value == pytest.approx(logged[f"test/msrvtt-test/{name}"], abs=1e-4), name
    # no ties: every rank is decided by the scores, so equal metrics mean equal rankings
    assert sim.unique().numel() == sim.numel() and len(pairs) >= 5


def test_embeddings_do_not_depend_on_the_batch(run):
    root, export, _ = run
    pipe = videolang.load(export)
    paths = sorted((root / "world" / "videos").glob("*.mp4"))[:5]
    alone = torch.cat([pipe.encode_video(str(p)) for p in paths])
    torch.testing.assert_close(pipe.encode_video([str(p) for p in paths]), alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.encode_video([str(p) for p in paths[::-1]]), alone.flip(0), atol=1e-5, rtol=0)
    # bytes and decoded frames of a file go through the same backbone
    from videolang.data.video import VideoReader

    torch.testing.assert_close(pipe.encode_video(paths[0].read_bytes()), alone[:1], atol=1e-5, rtol=0)
    with VideoReader(paths[0]) as r:
        frames = Frames(r.read(range(r.metadata.num_frames)), r.metadata.fps)
    assert pipe.encode_video(frames).shape == alone[:1].shape
    texts = ["a red circle moves left", "a small blue square that grows slowly in the corner", "x"]
    one_by_one = torch.cat([pipe.encode_text(t) for t in texts])
    torch.testing.assert_close(pipe.encode_text(texts), one_by_one, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.encode_text(texts[::-1]), one_by_one.flip(0), atol=1e-5, rtol=0)


def test_logits_use_the_trained_temperature(run):
    _, export, _ = run
    pipe = videolang.load(export)
    feats = Features(torch.randn(3, pipe.model.config.feature_dim))
    score = pipe.score(feats, ["a red circle"])
    assert score.abs().max() <= 1.0 + 1e-6  # cosine
    torch.testing.assert_close(pipe.logits(feats, ["a red circle"]), score / 0.1)
