"""VIMPAC inference: the original's CLS from a converted checkpoint, batch independence, the
fine-tuning evaluation reproduced from raw videos by a self-contained model folder."""

from __future__ import annotations

import json
import shutil

import av
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tests.golden import load_golden

import videolang
from videolang.data.video import VideoReader, read_frames
from videolang.data.vimpac import VimpacSplits
from videolang.engine import fit, load_run_config, test
from videolang.engine.export import export_checkpoint
from videolang.errors import ConfigError
from videolang.metrics import topk_accuracy
from videolang.models import load_pretrained
from videolang.models.frame_tokenizers import (
    VQVAE,
    DalleEncoder,
    VQVAEConfig,
    load_frame_tokenizer,
    save_frame_tokenizer,
)
from videolang.pipelines import Frames
from videolang.pipelines.convert import convert_checkpoint
from videolang.pipelines.folder import write_model_folder
from videolang.pipelines.vimpac import Tokens, converted_frame_tokenizer, tokenize_videos
from videolang.synth import synthesize_world, world_videos

# ------------------------------------------------------------------ the original's outputs --


def _convert(golden, tmp_path, name: str, state: dict, *extra: str):
    ckpt = tmp_path / f"{name}.pt"
    torch.save(state, ckpt)
    c = golden["config"]
    return convert_checkpoint("vimpac", ckpt, tmp_path / name, model_name="vimpac-tiny", overrides=[
        f"codebook_size={c['vocab_size'] - 5}", f"proj_size={c['nce_out']}", f"proj_hidden_size={c['nce_proj_hid']}",
        *extra])


@pytest.fixture(scope="module")
def golden_folder(tmp_path_factory):
    """The golden ``ModelWithHead`` converted; its clips set to the golden inputs' shape (one
    clip of 5 consecutive frames) as a user would edit ``pipeline.json``."""
    golden = load_golden("vimpac_tiny")
    tmp = tmp_path_factory.mktemp("vimpac_golden")
    folder = _convert(golden, tmp, "pretrained", golden["state_dict"])
    raw = json.loads((folder / "pipeline.json").read_text())
    converted = json.loads(json.dumps(raw))
    raw["clips"] = {"clip_len": 5, "stride": 1, "num_clips": 1, "legacy_first_clip": False}
    (folder / "pipeline.json").write_text(json.dumps(raw))
    return folder, golden, converted


def test_converted_folder_records_the_original_protocol(golden_folder):
    _, _, spec = golden_folder
    assert spec["family"] == "vimpac" and spec["task"] == "features" and spec["tokenizer"] is None
    # 3 crops at 64 px (8 x 8 dVAE codes), 10 clips of 5 frames at 2 fps from 16-fps frames
    assert [(v["crop"], v["frame_size"], v["resize"], v["fps"], v["hflip"]) for v in spec["views"]] == [
        (c, 64, 64, 16.0, False) for c in ("top", "center", "bottom")]
    assert spec["clips"] == {"clip_len": 5, "stride": 8, "num_clips": 10, "legacy_first_clip": True}
    assert spec["provenance"]["converted_from"]["file"] == "pretrained.pt"


def test_tokens_give_the_originals_cls_alone_or_batched(golden_folder):
    folder, golden, _ = golden_folder
    pipe = videolang.load(folder)
    codes = golden["input_codes"]
    pad = golden["config"]["pad_id"]
    lengths = [int((c != pad).all((1, 2)).sum()) for c in codes]
    assert lengths == [3, 5, 5, 5]  # the first video is 3 frames long: PAD after it, as the original
    videos = [Tokens(c[:n]) for c, n in zip(codes, lengths, strict=True)]
    assert torch.equal(pipe.clips(videos[0]), codes[:1])
    want = golden["backbone_cls"]
    alone = torch.cat([pipe.encode_video(v) for v in videos])
    torch.testing.assert_close(alone, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.encode_video(videos), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.encode_video(videos[::-1]), want.flip(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.encode_video(videos, batch_size=3), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.encode_video(codes[1][:5].numpy()), want[1:2], atol=1e-5, rtol=0)


def test_folder_without_tokenizer_or_classifier_says_what_to_give(golden_folder, tmp_path):
    pipe = videolang.load(golden_folder[0])
    with pytest.raises(ConfigError, match="no frame tokenizer"):
        pipe.encode_video(str(tmp_path / "a.mp4"))
    with pytest.raises(ConfigError, match="no classifier"):
        pipe.classify(Tokens(torch.zeros(5, 8, 8, dtype=torch.long)))
    with pytest.raises(ValueError, match="not feature rows"):
        pipe.encode_video(torch.zeros(4, 512))
    with pytest.raises(ValueError, match=r"outside 0\.\.8196"):
        pipe.encode_video(Tokens(torch.full((5, 8, 8), 8197)))


def test_converted_classifier_with_the_dalle_encoder(golden_folder, world, tmp_path, one_torch_thread):
    """A fine-tuned checkpoint (backbone + cls_fc) and DALL-E encoder weights: what
    ``videolang convert vimpac CKPT OUT --frame-tokenizer encoder.pkl`` is to write."""
    _, golden, _ = golden_folder
    tuned = {k: v for k, v in golden["state_dict"].items() if k.startswith("backbone.")}
    g = torch.Generator().manual_seed(0)
    tuned.update({"cls_fc.weight": torch.randn(7, 128, generator=g), "cls_fc.bias": torch.randn(7, generator=g)})
    plain = _convert(golden, tmp_path, "tuned", tuned, "architecture=vimpac-classifier", "num_classes=7")
    encoder = DalleEncoder(vocab_size=8192, n_hid=8).eval()
    torch.save(encoder.state_dict(), tmp_path / "encoder.pt")
    model = load_pretrained(plain)
    spec, extra = converted_frame_tokenizer(model, videolang.load(plain).spec, tmp_path / "encoder.pt")
    folder = write_model_folder(tmp_path / "with_tokenizer", model, spec, extra=extra)
    pipe = videolang.load(folder)
    assert pipe.labels == [str(i) for i in range(7)] and pipe.spec.tokenizer.kind == "dalle-dvae"
    frames = Frames(torch.randint(0, 256, (12, 72, 96, 3), dtype=torch.uint8), fps=16.0)
    clips = pipe.clips(frames)
    assert clips.shape == (30, 5, 8, 8)  # 3 crops x 10 clips, view-major
    # clip 10 is the centre crop's first clip: its first frame is the dVAE's codes of frame 0,
    # shorter side 64 (72 x 96 -> 64 x 85), the centre 64 columns
    view = F.interpolate(frames.data[:1].permute(0, 3, 1, 2).float() / 255, size=(64, 85), mode="bilinear",
                         antialias=True, align_corners=False)[..., 10:74]
    assert torch.equal(clips[10, :1], encoder.encode(view))
    assert (clips[10, 2:] == model.config.pad_token_id).all()  # frames 16, 24, 32 are past the end
    top = pipe.classify(frames, top_k=3)
    assert len(top) == 1 and len(top[0]) == 3 and top[0][0].score >= top[0][1].score >= top[0][2].score
    probs = pipe.class_probabilities(world["videos"][0])
    torch.testing.assert_close(probs.sum(1), torch.ones(1))
    torch.testing.assert_close(pipe.class_probabilities(world["videos"][0].read_bytes()), probs, atol=1e-6, rtol=0)
    # the frame tokenizer is checked against the fingerprint pipeline.json records
    other = shutil.copytree(folder, tmp_path / "tampered")
    state = {k: v + (k == "blocks.input.b") for k, v in load_frame_tokenizer(other / "frame_tokenizer").state_dict().items()}
    save_file(state, str(other / "frame_tokenizer" / "model.safetensors"))
    with pytest.raises(ConfigError, match="not the frame tokenizer"):
        videolang.load(other)


# ------------------------------------------------------------- a tiny run, its export, its test --

TINY = {"hidden_size": 32, "num_heads": 2, "mlp_size": 64, "num_layers": 1, "pooling": "mean",
        "classifier_norm": True}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vimpac_world")
    synthesize_world(root / "world", 48, seed=3, size=48, duration=2.0, progress=False)
    entries = {split: world_videos(root / "world", split) for split in ("train", "test")}
    return {"root": root, "entries": entries, "videos": [e.path for e in entries["test"][0]]}


def seeded_vqvae(entries, out):
    """A VQ-VAE (random encoder, 4 x 4 codes for 32 px) whose 64 codes are far-apart latents of
    training frames: diverse codes at no training cost (a short training collapses to one code)."""
    torch.manual_seed(0)
    tok = VQVAE(VQVAEConfig(codebook_size=64, code_dim=8, channels=16, num_downsamples=3)).eval()
    frames = torch.cat([read_frames(e.path, range(0, 20, 3))[:, 8:40, 8:40] for e in entries[:10]])
    with torch.no_grad():
        z = tok._latents(tok.as_float_frames(frames)).reshape(-1, 8)
        pick, dist = [0], (z - z[0]).pow(2).sum(1)
        while len(pick) < 64:
            pick.append(int(dist.argmax()))
            dist = torch.minimum(dist, (z - z[pick[-1]]).pow(2).sum(1))
        tok.codebook.data.copy_(z[pick])
    return save_frame_tokenizer(tok, out)


@pytest.fixture(scope="module")
def run(world, one_torch_thread):
    """A frame tokenizer, two token views per split (centre; bottom-right crop flipped), a tiny
    fine-tuning from scratch tested on both views x 2 clips."""
    root = world["root"]
    tok_dir = seeded_vqvae(world["entries"]["train"][0], root / "vqvae")
    tokenizer = load_frame_tokenizer(tok_dir)
    stores = {}
    for split, (entries, classes) in world["entries"].items():
        for view, crop, flip in (("center", "center", False), ("flip", "bottom", True)):
            stores[split, view] = root / f"tokens_{split}_{view}"
            tokenize_videos(entries, tokenizer, stores[split, view], fps=5.0, frame_size=32, resize=40, crop=crop,
                            hflip=flip, classes=classes)
    test_views = [str(stores["test", "center"]), str(stores["test", "flip"])]
    cfg = {
        "recipe": "vimpac.finetune", "name": "vimpac_pipe", "seed": 0,
        "model": {"name": "vimpac-tiny", "overrides": TINY},
        "data": {"train_stores": [str(stores["train", "center"]), str(stores["train", "flip"])],
                 "test_stores": test_views, "clip_len": 3, "stride": 2, "num_test_clips": 2,
                 "batch_size": 8, "eval_batch_size": 3, "frame_tokenizer": str(tok_dir)},
        "optim": {"lr": 3e-3, "warmup_ratio": 0.1},
        "trainer": {"max_epochs": 10, "enable_progress_bar": False, "num_sanity_val_steps": 0},
        "run": {"root": str(root / "runs"), "plots": False},
    }
    fitted = fit(cfg)
    ckpt = fitted.run_dir / "checkpoints" / "last.ckpt"
    tested = test(cfg, resume=ckpt)
    run_cfg, _ = load_run_config(cfg)
    ds = VimpacSplits(run_cfg.data, run_cfg.seed).dataset("test")
    evaluated = {key: (ds[i]["views"], ds[i]["label"]) for i, key in enumerate(ds.keys)}  # video id -> (views, label)
    stored = {key: [s[key] for s in ds.stores] for key in ds.keys[:2]}  # every frame of both views
    return {"cfg": cfg, "export": fitted.run_dir / "export", "ckpt": ckpt, "logged": tested.metrics["test"],
            "evaluated": evaluated, "stored": stored, "data": [tok_dir, *stores.values()]}


def test_load_reproduces_the_runs_test_metrics_from_raw_videos(run, world, tmp_path):
    # the folder stands alone: copy it away, move the token stores and the tokenizer aside
    folder = shutil.copytree(run["export"], tmp_path / "model")
    aside = tmp_path / "aside"
    aside.mkdir()
    moved = [(p, shutil.move(p, aside / p.name)) for p in run["data"]]
    try:
        pipe = videolang.load(folder)
        entries = world["entries"]["test"][0]
        paths = {e.video_id: e.path for e in entries}
        assert sorted(run["evaluated"]) == sorted(paths) and len(paths) >= 5
        for key, (views, _) in run["evaluated"].items():
            assert torch.equal(pipe.clips(paths[key]), views), key  # the evaluation's inputs, exactly
        for key, codes in run["stored"].items():  # the token stores' codes, every frame
            assert all(torch.equal(a, torch.from_numpy(b).long()) for a, b in
                       zip(pipe.video_tokens(paths[key]), codes, strict=True)), key
        keys = sorted(paths)
        logits = pipe.view_logits([paths[k] for k in keys])
        probs = pipe.class_probabilities([paths[k] for k in keys])
    finally:
        for src, dst in moved:
            shutil.move(dst, src)
    labels = torch.tensor([run["evaluated"][k][1] for k in keys])
    logged = run["logged"]
    top = topk_accuracy(probs, labels, [1, 5])
    assert top[1] == pytest.approx(logged["test/top1"], abs=1e-4)
    assert top[5] == pytest.approx(logged["test/top5"], abs=1e-4)
    loss = torch.stack([F.cross_entropy(x, torch.full((len(x),), int(y))) for x, y in zip(logits, labels, strict=True)])
    assert float(loss.mean()) == pytest.approx(logged["test/loss"], abs=1e-5)
    chance = torch.bincount(labels, minlength=probs.shape[1]).max().item() / len(labels) * 100
    assert chance == pytest.approx(logged["test/chance"], abs=1e-4)
    # non-degenerate: the model has left its uniform start, videos differ, and every decision is
    # clear (no near-ties), so equal accuracies mean equal predictions
    assert probs.max() > 1 / probs.shape[1] + 0.02 and torch.cdist(probs, probs).triu(1).max() > 1e-3
    best = probs.topk(2, dim=1).values
    assert (best[:, 0] - best[:, 1]).min() > 1e-4
    assert pipe.labels == list(world["entries"]["test"][1]) and pipe.spec.clips.num_clips == 2


def test_answers_do_not_depend_on_the_batch(run, world):
    pipe = videolang.load(run["export"])
    paths = world["videos"]
    with VideoReader(paths[1]) as r:
        fps = r.metadata.fps
        frames = r.read(range(r.metadata.num_frames))
    # mixed lengths: a whole file, 7 and 13 frames of decoded videos (PAD in the clips), bytes
    videos = [paths[0], Frames(frames[:7], fps), paths[2].read_bytes(), Frames(frames[:13], fps)]
    assert (pipe.clips(videos[1]) == pipe.model.config.pad_token_id).any()
    alone = torch.cat([pipe.class_probabilities(v) for v in videos])
    torch.testing.assert_close(pipe.class_probabilities(videos), alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.class_probabilities(videos[::-1]), alone.flip(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(pipe.class_probabilities(videos, batch_size=5), alone, atol=1e-5, rtol=0)
    # a path and its bytes are one video (decoded frames are resized by torch, not by the decoder:
    # with the views' resize they differ a little, which is why files are what evaluation reads)
    torch.testing.assert_close(pipe.class_probabilities(paths[1]), pipe.class_probabilities(paths[1].read_bytes()),
                               atol=1e-6, rtol=0)
    top = pipe.classify(videos, top_k=3)
    assert [[p.label for p in t] for t in top] == [
        [pipe.labels[j] for j in row.topk(3).indices.tolist()] for row in alone]
    feats = pipe.encode_video(videos)
    torch.testing.assert_close(feats, torch.cat([pipe.encode_video(v) for v in videos]), atol=1e-5, rtol=0)
    # token codes of each view give what the decoded video gives
    tokens = Tokens(pipe.video_tokens(paths[0]))
    torch.testing.assert_close(pipe.class_probabilities(tokens), alone[:1], atol=1e-6, rtol=0)


def test_videolang_export_of_a_checkpoint_is_the_runs_export(run, world, tmp_path):
    out = export_checkpoint(run["cfg"], run["ckpt"], tmp_path / "exported")
    a, b = videolang.load(out), videolang.load(run["export"])
    assert a.spec.model_dump(exclude={"provenance"}) == b.spec.model_dump(exclude={"provenance"})
    paths = world["videos"][:2]
    torch.testing.assert_close(a.class_probabilities(paths), b.class_probabilities(paths), atol=0, rtol=0)


def test_export_refuses_another_tokenizer(run, tmp_path):
    other = save_frame_tokenizer(VQVAE(VQVAEConfig(channels=16)), tmp_path / "other")
    with pytest.raises(ConfigError, match="not the tokenizer of"):
        export_checkpoint(run["cfg"], run["ckpt"], tmp_path / "out", overrides=[f"data.frame_tokenizer={other}"])
    # and a run with it stops before training, not at its export
    cfg = json.loads(json.dumps(run["cfg"]))
    cfg["data"]["frame_tokenizer"], cfg["run"]["root"] = str(other), str(tmp_path / "runs")
    with pytest.raises(ConfigError, match="not the tokenizer of"):
        fit(cfg)
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def _gradient_video(path, width: int = 64, height: int = 48, frames: int = 10):
    """A video whose pixels encode their position (red: x, green: y), so crops differ."""
    x = torch.linspace(0, 255, width).expand(height, width)
    y = torch.linspace(0, 255, height)[:, None].expand(height, width)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", 4_000_000
        for i in range(frames):
            img = torch.stack([x, y, torch.full_like(x, 20.0 * i)], -1).round().to(torch.uint8).numpy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_decoding_scales_and_crops_as_the_views_say(tmp_path):
    """Files are scaled while decoding (shorter side 48 -> 32: 64 x 48 -> 42 x 32), then cropped
    and flipped as videolang tokenize's crop_view does on full-size frames."""
    from videolang.data.tokens import crop_view
    from videolang.pipelines.vimpac import TokenViewSpec, _OpenVideo

    path = _gradient_video(tmp_path / "gradient.mp4")
    view = TokenViewSpec(fps=5.0, frame_size=32, resize=32, crop="bottom", hflip=True)
    with _OpenVideo(path) as video:
        idx = video.view_frames(view)
        scaled = video.read(idx, view.resize)
    assert idx.tolist() == [0, 2, 4, 6, 8] and scaled.shape == (5, 32, 42, 3)
    got = crop_view(scaled.permute(0, 3, 1, 2).float() / 255, 32, "bottom", 32, True)
    native = read_frames(path, idx).permute(0, 3, 1, 2).float() / 255
    error = (got - crop_view(native, 32, "bottom", 32, True)).abs().mean()
    assert error < 0.02
    for crop, flip in (("center", True), ("bottom", False)):
        assert (got - crop_view(native, 32, crop, 32, flip)).abs().mean() > 2 * error
