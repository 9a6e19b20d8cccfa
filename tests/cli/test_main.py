"""The `videolang` command: help, data commands on small inputs, errors naming the bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from videolang.cli.main import main


def test_help_lists_subcommands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for cmd in ("data", "extract-features", "demo"):
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    for cmd in ("synth", "pack", "shards", "probe"):
        assert cmd in out


def test_console_script_runs():
    exe = shutil.which("videolang") or f"{sys.prefix}/bin/videolang"
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("videolang ")


@pytest.fixture()
def small_videos(video_dir, tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    for name in ("gop30.mp4", "gop7.mp4"):
        shutil.copy(video_dir / name, d / name)
    return d


def test_pack_extract_and_probe(small_videos, tmp_path, capsys):
    lmdb = tmp_path / "v.lmdb"
    assert main(["data", "pack", str(small_videos), str(lmdb), "--quiet"]) == 0
    assert "packed 2 videos" in capsys.readouterr().out
    # refusing to overwrite is an error naming the path, exit code 2
    assert main(["data", "pack", str(small_videos), str(lmdb), "--quiet"]) == 2
    assert str(lmdb) in capsys.readouterr().err
    feats = tmp_path / "feats"
    assert main(["extract-features", "--videos", str(lmdb), "--out", str(feats), "--quiet",
                 "--dtype", "float32", "--backbone", "pooled-pixels"]) == 0
    assert "2 written" in capsys.readouterr().out
    # a second run resumes: nothing new to write
    assert main(["extract-features", "--videos", str(lmdb), "--out", str(feats), "--quiet",
                 "--backbone", "pooled-pixels"]) == 0
    assert "0 written, 2 already in the store" in capsys.readouterr().out
    from videolang.data.stores import FeatureStore

    store = FeatureStore(feats)
    assert store["gop30"].shape == (3, 48)  # 90 frames at 30 fps = 3 seconds
    assert np.all((store["gop30"] >= 0) & (store["gop30"] <= 1))
    assert main(["data", "probe", str(small_videos / "gop7.mp4")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_frames"] == 50 and info["keyframes"][:3] == [0, 7, 14]


def test_unknown_backbone_and_bad_annotation_line(small_videos, tmp_path, capsys):
    assert main(["extract-features", "--videos", str(small_videos), "--backbone", "s3d",
                 "--out", str(tmp_path / "f")]) == 2
    assert "unknown backbone 's3d'" in capsys.readouterr().err
    ann = tmp_path / "ann.jsonl"
    ann.write_text('{"id": "a", "path": "gop7.mp4"}\n{"id": broken}\n')
    assert main(["data", "shards", str(small_videos), str(tmp_path / "s"), "--annotations", str(ann)]) == 2
    assert f"{ann}:2" in capsys.readouterr().err
    ann.write_text('{"id": "a", "path": "nope.mp4"}\n')
    assert main(["data", "shards", str(small_videos), str(tmp_path / "s"), "--annotations", str(ann)]) == 2
    err = capsys.readouterr().err
    assert f"{ann}:1" in err and "nope.mp4" in err


def test_shards_roundtrip(small_videos, tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["data", "shards", str(small_videos), str(out), "--maxcount", "1"]) == 0
    assert "2 samples into 2 shards" in capsys.readouterr().out


def test_synth_mc_error_names_the_option(tmp_path, capsys):
    out = tmp_path / "mc.jsonl"
    assert main(["data", "synth-mc", str(tmp_path), "--out", str(out), "--per-video", "0"]) == 2
    assert "--per-video 0: must be >= 1" in capsys.readouterr().err
    assert not out.exists()
