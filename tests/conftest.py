"""Shared fixtures: small videos written with PyAV whose frames encode their own index."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch


def index_frame(i: int, size: int = 32) -> np.ndarray:
    """A frame whose left half is 4*(i % 64) and right half 64*(i // 64): decodable index."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:, : size // 2] = 4 * (i % 64)
    img[:, size // 2 :] = 64 * (i // 64)
    return img


def decoded_index(frame: np.ndarray) -> int:
    """Invert :func:`index_frame` on a decoded (lossy) frame."""
    size = frame.shape[1]
    low = round(float(frame[2:-2, 2 : size // 2 - 2].mean()) / 4)
    high = round(float(frame[2:-2, size // 2 + 2 : -2].mean()) / 64)
    return high * 64 + low


def write_index_video(
    path: Path,
    num_frames: int = 90,
    fps: int = 30,
    gop: int = 30,
    size: int = 32,
    codec: str = "libx264",
    faststart: bool = False,
) -> Path:
    """Encode ``num_frames`` index frames with keyframes exactly every ``gop`` frames."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "mpeg4":
            stream.bit_rate = 4_000_000  # near-lossless, so decoded_index() is exact
        if codec == "libx264":
            stream.options = {
                "keyint_min": str(gop), "sc_threshold": "0", "crf": "12", "preset": "veryfast",
                "threads": "1",
            }
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, size), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    write_index_video(root / "gop30.mp4", num_frames=90, gop=30)
    write_index_video(root / "gop7.mp4", num_frames=50, gop=7)
    write_index_video(root / "mpeg4.avi", num_frames=40, gop=10, codec="mpeg4")
    write_index_video(root / "x.mkv", num_frames=30, gop=10)
    good = (root / "gop30.mp4").read_bytes()
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n" * 20)
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    write_index_video(root / "faststart.mp4", num_frames=90, gop=30, faststart=True)
    fast = (root / "faststart.mp4").read_bytes()
    (root / "truncated_faststart.mp4").write_bytes(fast[: int(len(fast) * 0.6)])
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread is as fast, and immune to OpenMP stalls (seconds per
    forward measured) when other processes keep the CPU cores busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_videoclip_folder(path: Path, *, seed: int = 0) -> Path:
    """An untrained but complete VideoCLIP model folder (cnn2d-tiny backbone, MiniLM tokenizer):
    enough to exercise loading, decoding and the command line quickly."""
    from videolang.data.text import load_tokenizer
    from videolang.models import create_model
    from videolang.models.backbones import create_backbone
    from videolang.pipelines.folder import (
        BackboneSpec,
        SimilaritySpec,
        TextSpec,
        VideoFeaturesSpec,
        write_model_folder,
    )
    from videolang.pipelines.videoclip import VideoCLIPSpec

    backbone = create_backbone("cnn2d-tiny", seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_model("videoclip-tiny", feature_dim=backbone.feature_dim, max_video_len=8)
    spec = VideoCLIPSpec(
        text=TextSpec(max_len=16),
        video=VideoFeaturesSpec(backbone=BackboneSpec(name="cnn2d-tiny", options=backbone.build_options(),
                                                      feature_dim=backbone.feature_dim), max_len=8),
        similarity=SimilaritySpec(metric="cosine", temperature=0.05),
    )
    return write_model_folder(path, model, spec, tokenizer=load_tokenizer("minilm"), backbone=backbone)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """A synthetic world and one trained (one step) model folder per family and task: where the
    docs' examples run (tests/docs_workspace.py lists the paths)."""
    from tests.docs_workspace import build_workspace

    return build_workspace(tmp_path_factory.mktemp("workspace"))
