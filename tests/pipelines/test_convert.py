"""`videolang convert`: an original checkpoint becomes a complete model folder (feature backbone
included) that `videolang.load` opens; original files are read without running their code."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from tests.conftest import write_index_video
from tests.golden import load_golden

import videolang
from videolang.cli.main import main
from videolang.errors import ConfigError
from videolang.models.backbones import create_backbone
from videolang.models.weights import read_checkpoint
from videolang.pipelines import Features
from videolang.pipelines.features import video_features

TINY = dict(vocab_size=200, hidden_size=32, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128)
TINY_ARGS = ["max_video_len=8", *(f"{t}.{k}={v}" for t in ("video", "text") for k, v in TINY.items()),
             "video.num_hidden_layers=2", "text.num_hidden_layers=3"]


def fairseq_checkpoint(golden) -> dict:
    """The golden towers as MMPT's checkpoint_best.pt holds them: fairseq's dict with its
    argparse arguments pickled beside the weights."""
    model = {f"mmmodel.video_encoder.{k}": v for k, v in golden["video_sd"].items()}
    model.update({f"mmmodel.text_encoder.{k}": v for k, v in golden["text_sd"].items()})
    return {"model": model, "args": argparse.Namespace(arch="mmfusionseparate", max_video_len=32)}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    golden = load_golden("videoclip_tiny_separate")
    torch.save(fairseq_checkpoint(golden), root / "checkpoint_best.pt")
    s3d = create_backbone("s3dg", seed=1)  # stands in for MIL-NCE's s3d_howto100m.pth (same layout)
    torch.save({f"text_module.fc.{k}": v for k, v in torch.nn.Linear(2, 2).state_dict().items()}
               | s3d.state_dict(), root / "s3d_howto100m.pth")
    assert main(["convert", "videoclip", str(root / "checkpoint_best.pt"), str(root / "model"),
                 "--backbone-weights", str(root / "s3d_howto100m.pth"), "--set", *TINY_ARGS]) == 0
    video = write_index_video(root / "clip.mp4", num_frames=45, fps=15, gop=15, size=64)
    return root, golden, video


def test_the_folder_holds_the_backbone_and_the_originals_preprocessing(converted):
    root, _, _ = converted
    folder = root / "model"
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "pipeline.json",
                                                  "tokenizer", "backbone.safetensors"}
    spec = json.loads((folder / "pipeline.json").read_text())
    backbone = spec["video"]["backbone"]
    assert (backbone["name"], backbone["l2_normalize"], backbone["dtype"]) == ("s3dg", True, "float16")
    assert spec["similarity"] == {"metric": "dot", "temperature": 1.0} and spec["text"]["max_len"] == 61
    assert spec["provenance"]["converted_from"]["file"] == "checkpoint_best.pt"
    assert str(root) not in (folder / "pipeline.json").read_text()  # nothing points back


def test_raw_video_goes_through_s3d_like_the_released_features(converted):
    root, golden, video = converted
    pipe = videolang.load(root / "model")
    # what the released extraction scripts stored: S3D rows, unit norm, fp16
    s3d = create_backbone("s3dg", weights=root / "s3d_howto100m.pth")
    rows = video_features(str(video), s3d, l2_normalize=True, dtype="float16")
    assert rows.shape == (3, 512) and abs(float((rows**2).sum(1).mean()) - 1) < 1e-2
    torch.testing.assert_close(pipe.encode_video(str(video)), pipe.encode_video(Features(torch.from_numpy(rows))),
                               atol=1e-5, rtol=0)
    # and the converted towers are MMPT's (golden pooled video, features in)
    lengths = golden["vmasks"].sum(1).tolist()
    videos = [Features(golden["vfeats"][i, :n]) for i, n in enumerate(lengths)]
    torch.testing.assert_close(pipe.encode_video(videos), golden["pooled_video"], atol=1e-5, rtol=0)


def test_checkpoints_are_read_without_running_their_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    torch.save({"model": {}, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match="refused to load"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists() and not (tmp_path.cwd() / "PWNED").exists()
    assert main(["convert", "videoclip", str(tmp_path / "evil.pt"), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    # fairseq's pickled arguments come back as inert stand-ins, weights as tensors
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "ok.pt")
    obj = read_checkpoint(tmp_path / "ok.pt")
    assert torch.equal(obj["model"]["w"], torch.ones(2)) and obj["args"].state == {"lr": 0.1}
