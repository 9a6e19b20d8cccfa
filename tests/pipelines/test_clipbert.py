"""ClipBERT inference: the test loop's frames from raw files (any size, file / bytes / LMDB /
decoded frames, only the sampled frames decoded), batch independence, load equals evaluation on
tiny runs (retrieval from an LMDB store, open-ended QA, multiple choice), converted checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import videolang
from videolang.data.clipbert import VisualSource, choice_text, load_annotations
from videolang.data.sampling import clipbert_task_sampling
from videolang.data.stores import LmdbVideoStore, pack_videos
from videolang.data.text import load_tokenizer
from videolang.data.video import VideoReader
from videolang.engine import fit, test
from videolang.errors import ConfigError
from videolang.metrics import rank_metrics, retrieval_ranks_multi
from videolang.models import create_model
from videolang.pipelines import Frames
from videolang.pipelines.clipbert import (
    ClipBERTPipeline,
    ClipBERTSpec,
    ClipSamplingSpec,
    FramesSpec,
)
from videolang.pipelines.folder import TextSpec
from videolang.synth import synthesize_world
from videolang.synth.render import encode_video, resolve_codec

# A wide initialisation: after a few steps the scores still differ clearly between pairs, so
# equal metrics below mean equal rankings and predictions, not ties.
SHRINK = {"bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 4,
          "bert.intermediate_size": 64, "backbone.stem_channels": 8, "backbone.width": 4,
          "bert.initializer_range": 0.3}


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_torch_thread):
    """24 synthetic 48 px videos (packed into an LMDB store too) and two odd-sized ones."""
    root = tmp_path_factory.mktemp("cbpipe")
    synthesize_world(root / "world", 24, seed=5, size=48, duration=2.0, workers=1, progress=False)
    pack_videos(root / "world" / "videos", root / "videos.lmdb", progress=False)
    g = np.random.default_rng(0)
    odd = root / "odd"
    odd.mkdir()
    for name, (t, h, w, fps) in {"wide": (13, 24, 40, 5), "tall": (47, 56, 22, 12)}.items():
        frames = g.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
        encode_video(frames, odd / f"{name}.mp4", fps=fps, gop=4, encoder=resolve_codec("auto"))
    return root


def videos_of(root: Path) -> Path:
    return root / "world" / "videos"


def config(root: Path, recipe: str, train: str, test_file: str, sampling: str, **data) -> dict:
    w = root / "world" / "formats" / "clipbert"
    return {
        "recipe": recipe, "name": recipe.replace(".", "_"), "seed": 0,
        "model": {"name": "clipbert-tiny", "overrides": SHRINK},
        "data": {"train_file": str(w / train), "test_file": str(w / test_file), "video_root": str(videos_of(root)),
                 "frame_size": 32, "max_text_len": 24, "sampling": sampling, "target_fps": 2.0,
                 "frames_per_clip": 2, "train_clips": 2, "test_clips": 3, "batch_size": 8,
                 "eval_batch_size": 8, **data},
        "optim": {"lr": 1e-3},
        "trainer": {"max_epochs": 1, "limit_train_batches": 2, "enable_progress_bar": False,
                    "num_sanity_val_steps": 0, "log_every_n_steps": 1},
        "run": {"root": str(root / "runs"), "plots": False},
    }


class CapturedTestBatches(L.Callback):
    """What the run's test loop fed the model: frames per video and logits per item."""

    def __init__(self):
        self.frames: dict[str, torch.Tensor] = {}
        self.logits: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        keys = trainer.datamodule.splits.dataset("test").visual_keys
        for j, v in enumerate(batch["visual_id"].tolist()):
            self.frames[keys[v]] = batch["frames"][j]
        if "input_ids" in batch:
            logits = module.model(batch["frames"], batch["input_ids"], batch["attention_mask"],
                                  batch["pixel_mask"], batch["video_index"])["logits"]
            logits = logits.view(len(batch["index"]), -1)
            self.logits.update(zip(batch["index"].tolist(), logits, strict=True))


def fit_and_test(cfg: dict) -> tuple[Path, dict, CapturedTestBatches]:
    export = fit(cfg).run_dir / "export"
    seen = CapturedTestBatches()
    return export, test(cfg, [f"model.init={export}"], callbacks=[seen]).metrics["test"], seen


@pytest.fixture(scope="module")
def retrieval_run(world):
    """Retrieval read from the LMDB store; tested on the training captions (88 x 18 videos)."""
    cfg = config(world, "clipbert.retrieval", "msrvtt_retrieval/train.jsonl", "msrvtt_retrieval/train.jsonl",
                 "msrvtt_ret", video_root=None, video_lmdb=str(world / "videos.lmdb"), test_clips=4)
    return (cfg, *fit_and_test(cfg))


@pytest.fixture(scope="module")
def qa_run(world):
    fmt = "tgif_qa/frameqa"
    cfg = config(world, "clipbert.qa", f"{fmt}_train.jsonl", f"{fmt}_train.jsonl", "tgif_frameqa",
                 ans2label=str(world / "world/formats/clipbert/tgif_qa/frameqa_trainval_ans2label.json"),
                 min_num_labels=40, compat_sampling=True)
    return (cfg, *fit_and_test(cfg))


@pytest.fixture(scope="module")
def mc_run(world):
    cfg = config(world, "clipbert.mcqa", "tgif_qa/action_train.jsonl", "tgif_qa/action_train.jsonl",
                 "tgif_action", test_clips=1, antialias=False)
    return (cfg, *fit_and_test(cfg))


def standalone(export: Path, tmp_path: Path, *gone: Path) -> ClipBERTPipeline:
    """The export copied away, with the run's stores deleted, loaded."""
    folder = shutil.copytree(export, tmp_path / "model")
    for path in gone:
        shutil.rmtree(path)
    return videolang.load(folder)


# ---------------------------------------------------------------- the test loop's frames --


def tiny_pipeline(task: str = "retrieval", **spec) -> ClipBERTPipeline:
    torch.manual_seed(0)
    model = create_model("clipbert-tiny", task=task, frame_size=32, **SHRINK,
                         **({"num_labels": 1} if task == "mc" else {}))
    fields = {"task": task, "text": TextSpec(max_len=14), "frames": FramesSpec(size=32), "consensus": "lse",
              "sampling": ClipSamplingSpec(target_fps=2.0, frames_per_clip=2, num_clips=3), **spec}
    return ClipBERTPipeline(model, ClipBERTSpec(**fields), load_tokenizer("minilm"))


@pytest.mark.parametrize("compat", [False, True])
def test_frames_are_the_test_loops_from_files_bytes_lmdb_and_frames(world, compat):
    sampling = ClipSamplingSpec(target_fps=2.0, frames_per_clip=2, num_clips=1 if compat else 3, compat=compat,
                                compat_test_window="start")
    pipe = tiny_pipeline(sampling=sampling, frames=FramesSpec(size=32, antialias=not compat))
    task = clipbert_task_sampling("tgif_frameqa", target_fps=2.0, frames_per_clip=2, test_clips=sampling.num_clips)
    common = {"sampling": task, "train": False, "frame_size": 32, "antialias": not compat, "compat": compat}
    keys = ["vid00001", "vid00007"]
    from_lmdb = VisualSource(keys, video_store=LmdbVideoStore(world / "videos.lmdb"), **common)
    odd = VisualSource(["wide", "tall"], video_root=str(world / "odd"), **common)
    cases = [(videos_of(world) / f"{k}.mp4", from_lmdb(i)) for i, k in enumerate(keys)]
    cases += [(world / "odd" / f"{k}.mp4", odd(i)) for i, k in enumerate(["wide", "tall"])]
    for path, (want, want_mask) in cases:
        got, mask = pipe.visual_inputs(str(path))
        assert torch.equal(got, want) and torch.equal(mask, want_mask), path.name
        assert torch.equal(pipe.visual_inputs(path.read_bytes())[0], want)
        with VideoReader(path) as r:
            frames = Frames(r.read(range(r.metadata.num_frames)), r.metadata.fps)
        assert torch.equal(pipe.visual_inputs(frames)[0], want)
    assert not cases[2][1][1].all() and not cases[3][1][1].all()  # letterboxed: a resize and padding happened


def test_only_the_sampled_frames_are_converted(world, monkeypatch):
    pipe = tiny_pipeline()
    path = world / "odd" / "tall.mp4"  # 47 frames at 12 fps
    converted = []
    original = VideoReader._to_rgb
    monkeypatch.setattr(VideoReader, "_to_rgb", lambda self, frame: converted.append(1) or original(self, frame))
    frames, _ = pipe.visual_inputs(str(path))
    assert frames.shape == (3, 2, 3, 32, 32)
    assert len(converted) == 6  # 3 clips x 2 frames, one RGB conversion each


def test_spec_checks_and_wrong_methods():
    with pytest.raises(ValueError, match="answer vocabulary"):
        ClipBERTSpec(task="qa", text=TextSpec(max_len=8), frames=FramesSpec(size=32), consensus="mean",
                     sampling=ClipSamplingSpec(target_fps=1, frames_per_clip=1, num_clips=1))
    with pytest.raises(ValueError, match="sampling is required"):
        ClipBERTSpec(task="retrieval", text=TextSpec(max_len=8), frames=FramesSpec(size=32), consensus="mean")
    pipe = tiny_pipeline()
    with pytest.raises(ConfigError, match="answer needs a qa or vqa model"):
        pipe.answer(Frames(torch.zeros(4, 8, 8, 3, dtype=torch.uint8), 2.0), "what?")
    with pytest.raises(TypeError, match="raw frames"):
        pipe.score(torch.zeros(3, 16), "a caption")
    assert choice_text("what moves?", "the red circle") == "what moves? the red circle"
    assert choice_text(None, "the red circle") == "the red circle"


# ------------------------------------------------------------------ inference equals evaluation --


def test_load_reproduces_retrieval_test_metrics_from_raw_files(world, retrieval_run, tmp_path):
    cfg, export, logged, seen = retrieval_run
    pipe = standalone(export, tmp_path, world / "videos.lmdb")  # the run read its videos from LMDB
    records = load_annotations(cfg["data"]["test_file"], "retrieval")
    keys = sorted({r["visual"] for r in records})
    assert sorted(seen.frames) == keys
    for k in keys:  # the raw files give the frames the test loop decoded from the store
        assert torch.equal(pipe.visual_inputs(str(videos_of(world) / f"{k}.mp4"))[0], seen.frames[k]), k
    sim = pipe.score([str(videos_of(world) / f"{k}.mp4") for k in keys], [r["text"] for r in records])
    ranks = retrieval_ranks_multi(sim.t(), [keys.index(r["visual"]) for r in records])
    for direction, r in (("t2v", ranks.t2v), ("v2t", ranks.v2t)):
        for name, value in rank_metrics(r).items():
            assert value == pytest.approx(logged[f"test/{direction}/{name}"], abs=1e-4), (direction, name)
    # teeth: no ties, and the videos clearly change the scores of a caption
    assert sim.unique().numel() == sim.numel() and sim.shape == (len(keys), len(records)) and len(keys) >= 10
    assert sim.std(0).min() > 0.01


def test_load_reproduces_open_ended_qa_accuracy(world, qa_run, tmp_path):
    cfg, export, logged, seen = qa_run
    pipe = standalone(export, tmp_path)
    assert pipe.spec.sampling.compat and pipe.spec.sampling.compat_test_window == "start"
    n = len(pipe.spec.answers)
    assert n == len(json.loads(Path(cfg["data"]["ans2label"]).read_text())) < pipe.model.config.num_labels == 40
    records = load_annotations(cfg["data"]["test_file"], "qa")
    preds = pipe.answer([str(videos_of(world) / f"{r['visual']}.mp4") for r in records],
                        [r["text"] for r in records], top_k=5)
    labels = [*pipe.spec.answers, *[""] * (40 - n)]  # outputs beyond the vocabulary have no answer
    for i, p in enumerate(preds):  # the 5 best answers and probabilities of the test loop's logits
        want, idx = seen.logits[i].softmax(-1).topk(5)
        assert [x.label for x in p] == [labels[j] for j in idx.tolist()]
        torch.testing.assert_close(torch.tensor([x.score for x in p]), want, atol=1e-5, rtol=0)
    right = torch.tensor([p[0].label == r["answer"] for p, r in zip(preds, records, strict=True)], dtype=torch.float)
    assert float(right.mean() * 100) == pytest.approx(logged["test/acc"], abs=1e-4)
    for t in {r["answer_type"] for r in records}:
        sel = torch.tensor([r["answer_type"] == t for r in records])
        assert float(right[sel].mean() * 100) == pytest.approx(logged[f"test/acc_{t}"], abs=1e-4), t
    # teeth: several different answers, none decided by a near tie
    assert len({p[0].label for p in preds}) >= 3 and len(records) >= 50
    assert min(p[0].score - p[1].score for p in preds) > 1e-4


def test_load_reproduces_multiple_choice_accuracy(world, mc_run, tmp_path):
    cfg, export, logged, seen = mc_run
    pipe = standalone(export, tmp_path)
    records = load_annotations(cfg["data"]["test_file"], "mc")
    videos = [str(videos_of(world) / f"{r['visual']}.mp4") for r in records]
    scores = pipe.choice_scores(videos, None, [r["texts"] for r in records])  # texts hold question + option
    for i, s in enumerate(scores):
        torch.testing.assert_close(s, seen.logits[i], atol=1e-5, rtol=0)
    picked = [int(s.argmax()) for s in scores]
    acc = 100 * np.mean([p == r["answer"] for p, r in zip(picked, records, strict=True)])
    assert acc == pytest.approx(logged["test/acc"], abs=1e-4)
    assert len(set(picked)) >= 3 and min(float(s.sort().values[-1] - s.sort().values[-2]) for s in scores) > 1e-4
    ranked = pipe.answer_choices(videos[0], None, records[0]["texts"])[0]
    assert ranked[0].label == records[0]["texts"][picked[0]] and sum(p.score for p in ranked) == pytest.approx(1)


# -------------------------------------------------------------------------- batch independence --


def mixed_videos(world: Path) -> list:
    """Videos of different lengths and sizes, as paths, bytes and decoded frames."""
    with VideoReader(world / "odd" / "wide.mp4") as r:
        wide = Frames(r.read(range(r.metadata.num_frames)), r.metadata.fps)
    return [str(videos_of(world) / "vid00003.mp4"), (world / "odd" / "tall.mp4").read_bytes(), wide,
            str(videos_of(world) / "vid00010.mp4")]


def test_scores_do_not_depend_on_the_batch(world, retrieval_run):
    pipe = videolang.load(retrieval_run[1])
    videos = mixed_videos(world)
    texts = ["a red circle moves left", "the green triangle grows, then the blue star moves up slowly", "x"]
    alone = torch.stack([torch.cat([pipe.score(v, t)[0] for t in texts]) for v in videos])
    torch.testing.assert_close(pipe.score(videos, texts), alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.score(videos[::-1], texts[::-1], batch_size=3, pair_batch_size=5),
                               alone.flip(0, 1), atol=1e-5, rtol=0)
    assert alone.std() > 0.01


def test_answers_do_not_depend_on_the_batch(world, qa_run, mc_run):
    videos = mixed_videos(world)
    questions = ["what color is the shape that moves?", "which shape grows?", "how many shapes?", "what?"]
    pipe = videolang.load(qa_run[1])
    alone = [pipe.answer(v, q, top_k=5)[0] for v, q in zip(videos, questions, strict=True)]
    for got in (pipe.answer(videos, questions, top_k=5),
                pipe.answer(videos[::-1], questions[::-1], top_k=5, batch_size=3)[::-1]):
        for a, b in zip(got, alone, strict=True):
            assert [p.label for p in a] == [p.label for p in b]
            np.testing.assert_allclose([p.score for p in a], [p.score for p in b], atol=1e-5, rtol=0)
    decoded = []
    original = pipe.visual_inputs
    pipe.visual_inputs = lambda v, **kw: decoded.append(v) or original(v, **kw)
    many = pipe.answer(videos[1], questions, top_k=5)  # one video, several questions: decoded once
    assert len(decoded) == 1
    for q, a in zip(questions, many, strict=True):
        b = pipe.answer(videos[1], q, top_k=5)[0]
        assert [p.label for p in a] == [p.label for p in b]
        np.testing.assert_allclose([p.score for p in a], [p.score for p in b], atol=1e-5, rtol=0)
    mc = videolang.load(mc_run[1])
    options = [["grows", "shrinks", "moves left"], ["moves up", "rotates clockwise", "stays still", "moves down"],
               ["a", "b"], ["grows", "moves right", "shrinks"]]
    one = [mc.choice_scores(v, q, o)[0] for v, q, o in zip(videos, questions, options, strict=True)]
    for got in (mc.choice_scores(videos, questions, options),
                mc.choice_scores(videos[::-1], questions[::-1], options[::-1], pair_batch_size=4)[::-1]):
        for a, b in zip(got, one, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- converted weights --


def test_converted_pretrained_checkpoint_scores_images(world, tmp_path):
    from tests.models.test_clipbert import _original_layout

    from videolang.pipelines.convert import convert_checkpoint

    overrides = {**SHRINK, "task": "pretrain", "frame_size": 32, "backbone.norm": "frozen_bn"}
    torch.manual_seed(0)
    source = create_model("clipbert-tiny", **overrides).eval()
    with torch.no_grad():  # the original layout stores the ResNet in fp16 (amp O2): round it here
        for t in source.cnn.backbone.state_dict().values():
            t.copy_(t.half().float())
    ckpt = tmp_path / "clipbert_image_text_pretrained.pt"
    torch.save(_original_layout(source), ckpt)
    folder = convert_checkpoint("clipbert", ckpt, tmp_path / "converted", model_name="clipbert-tiny",
                                overrides=[f"{k}={v}" for k, v in overrides.items()])
    pipe = videolang.load(folder)
    spec = pipe.spec
    assert (spec.task, spec.input, spec.frames.size, spec.frames.antialias, spec.text.max_len) == \
        ("pretrain", "image", 32, False, 28)
    assert spec.provenance["converted_from"]["file"] == ckpt.name
    images = sorted((world / "world" / "images").iterdir())[:3]
    captions = ["a red circle", "the blue star moves up"]
    sim = pipe.score([str(p) for p in images], captions)
    # the same images through the data layer (PIL, resize and pad) and the source model
    source_frames = VisualSource([p.name for p in images], sampling=clipbert_task_sampling("msrvtt_ret"), train=False,
                                 frame_size=32, image_root=str(images[0].parent), antialias=False)
    frames, masks = zip(*(source_frames(i) for i in range(len(images))), strict=True)
    from videolang.data.clipbert import TextEncoder

    ids, am = TextEncoder(load_tokenizer("minilm"), 30).batch(captions)
    with torch.no_grad():
        visual, vmask = source.encode_visual(torch.stack(frames), torch.stack(masks))
        for j in range(len(captions)):
            logits = source.score(visual, vmask, ids[j : j + 1].expand(len(images), -1),
                                  am[j : j + 1].expand(len(images), -1), mlm=False)["itm_logits"]
            torch.testing.assert_close(sim[:, j], logits[:, 1] - logits[:, 0], atol=1e-5, rtol=0)
    assert sim.std() > 1e-3
    with pytest.raises(ValueError, match="not a readable image"):
        pipe.score(str(videos_of(world) / "vid00001.mp4"), "a red circle")
