"""`videolang predict`: files, folders and list files in; JSONL out; bad files counted, named,
skipped; exit status; text-to-video and video-to-text; --config with a run's checkpoint."""

from __future__ import annotations

import json

import pytest
from tests.conftest import make_videoclip_folder, write_index_video

import videolang
from videolang.cli.main import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    model = make_videoclip_folder(root / "model")
    videos = root / "videos"
    (videos / "sub").mkdir(parents=True)
    for name, n in (("a.mp4", 30), ("sub/b.mp4", 45), ("c.mkv", 20)):
        write_index_video(videos / name, num_frames=n, fps=10, gop=10, size=48)
    (videos / "sub" / "broken.mp4").write_bytes((videos / "a.mp4").read_bytes()[:300])
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "notes.txt").write_text("not a video, not listed (wrong extension)\n")
    return root, model, videos


def run(capsys, *argv):
    status = main(["predict", *argv])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_folder_with_bad_files_is_counted_named_and_skipped(setup, capsys):
    _, model, videos = setup
    texts = ["a red circle moves left", "a blue square grows"]
    status, records, err = run(capsys, "--model", str(model), str(videos), "--texts", *texts, "--top-k", "1")
    assert status == 1  # something failed
    failed = {r["video"] for r in records if "error" in r}
    assert failed == {str(videos / "empty.mp4"), str(videos / "sub" / "broken.mp4")}
    good = [r for r in records if "matches" in r]
    assert [r["video"] for r in good] == [str(videos / n) for n in ("a.mp4", "c.mkv", "sub/b.mp4")]
    assert all(len(r["matches"]) == 1 and r["matches"][0]["text"] in texts for r in good)
    assert "5 inputs, 3 done, 2 failed" in err and "empty.mp4" in err and "broken.mp4" in err
    # the scores are the pipeline's own
    pipe = videolang.load(model)
    scores = pipe.score(str(videos / "a.mp4"), texts)[0]
    assert good[0]["matches"][0]["score"] == pytest.approx(float(scores.max()), abs=1e-5)


def test_list_file_and_text_to_video_with_clean_exit(setup, capsys, tmp_path):
    _, model, videos = setup
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# two videos\n{videos / 'a.mp4'}\n\n{videos / 'c.mkv'}\n")
    sentences = tmp_path / "queries.txt"
    sentences.write_text("a red circle moves left\na blue square grows\n")
    out = tmp_path / "out.jsonl"
    status, records, err = run(capsys, "--model", str(model), "--videos", str(listing), "--texts-file",
                               str(sentences), "--mode", "t2v", "--top-k", "2", "--out", str(out))
    assert status == 0 and records == [] and "2 inputs, 2 done, 0 failed" in err
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in written] == ["a red circle moves left", "a blue square grows"]
    assert all({m["video"] for m in r["matches"]} == {str(videos / "a.mp4"), str(videos / "c.mkv")}
               for r in written)


def test_bad_command_lines_exit_2(setup, capsys):
    root, model, videos = setup
    assert main(["predict", "--model", str(model), str(videos)]) == 2  # v2t without texts
    assert "needs --texts" in capsys.readouterr().err
    assert main(["predict", "--model", str(root / "nope"), str(videos), "--texts", "x"]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert main(["predict", "--model", str(model), "--config", "x.yaml", "--texts", "x"]) == 2


def test_config_and_checkpoint_export_then_predict(tmp_path, capsys):
    """`predict --config CFG --ckpt last VIDEOS --texts ...`: the checkpoint is exported into a new
    run folder and predicted with; without inputs a recipe with no predict loop says so."""
    from videolang.engine import fit
    from videolang.pipelines.features import run_extraction
    from videolang.synth import synthesize_world

    w = tmp_path / "world"
    synthesize_world(w, 24, seed=1, size=32, duration=2.0, progress=False)
    run_extraction(str(w / "videos"), "pooled-pixels", str(tmp_path / "features"), progress=False,
                   backbone_options={"grid": 2})
    cfg = {
        "recipe": "videoclip.pretrain", "name": "vc", "seed": 0,
        "model": {"name": "videoclip-tiny", "normalize": True},
        "data": {"features": str(tmp_path / "features"), "captions": str(w / "formats/howto100m/raw_caption.json"),
                 "pairs_per_video": 1, "videos_per_batch": 8, "min_video_len": 1, "max_video_len": 4,
                 "min_text_tokens": 2, "max_text_len": 16, "retrieval": False,
                 "test_pairs": str(w / "formats/msrvtt/MSRVTT_JSFUSION_test.csv")},
        "trainer": {"max_epochs": 1, "enable_progress_bar": False, "num_sanity_val_steps": 0},
        "run": {"root": str(tmp_path / "runs")},
    }
    config = tmp_path / "vc.yaml"
    config.write_text(json.dumps(cfg))
    fit(config)
    capsys.readouterr()
    videos = sorted((w / "videos").glob("*.mp4"))[:2]
    status = main(["predict", "--config", str(config), "--ckpt", "last", *map(str, videos),
                   "--texts", "a red circle", "a green triangle", "--top-k", "1"])
    assert status == 0
    run_dir = tmp_path / "runs" / "vc" / "version_1"
    records = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [r["video"] for r in records] == [str(v) for v in videos]
    assert (run_dir / "export" / "pipeline.json").is_file()
    assert main(["predict", "--config", str(config), "--ckpt", "last"]) == 2
    assert "no predict loop" in capsys.readouterr().err
    # `videolang export` writes the same kind of folder from any checkpoint
    assert main(["export", "--config", str(config), "--ckpt", "last", "--out", str(tmp_path / "m")]) == 0
    assert videolang.load(tmp_path / "m").score(str(videos[0]), ["a red circle"]).shape == (1, 1)
    assert main(["export", "--config", str(config), "--ckpt", "last", "--out", str(tmp_path / "m")]) == 2


@pytest.mark.parametrize(("model", "args", "check"), [
    ("vlm-mcqa", ["--texts", "a red circle moves left", "a star grows"],
     lambda r: r["answer"] in ("a red circle moves left", "a star grows") and len(r["options"]) == 2),
    ("clipbert-retrieval", ["--texts", "a red circle", "a star grows", "--top-k", "1"],
     lambda r: len(r["matches"]) == 1),
    ("clipbert-qa", ["--questions", "what color is the circle?", "--top-k", "2"],
     lambda r: r["question"] == "what color is the circle?" and len(r["answers"]) == 2),
    ("clipbert-mcqa", ["--questions", "what does it do?", "--texts", "moves left", "grows"],
     lambda r: r["question"] == "what does it do?" and r["answer"] in ("moves left", "grows")),
    ("vimpac", ["--top-k", "3"], lambda r: len(r["predictions"]) == 3),
    ("anticipation", ["--top-k", "2"], lambda r: len(r["predictions"]) == 2),
    ("vidlankd-teacher", ["--texts", "a red circle", "--mode", "t2v", "--top-k", "1"],
     lambda r: r["text"] == "a red circle" and len(r["matches"]) == 1),
])
def test_every_family_predicts_from_the_command_line(workspace, capsys, model, args, check):
    videos = [str(workspace / "world" / "videos" / f"vid0000{i}.mp4") for i in range(2)]
    status, records, _ = run(capsys, "--model", str(workspace / "models" / model), *videos, *args)
    assert status == 0 and records and all(check(r) for r in records)


def test_text_models_predict_from_the_command_line(workspace, capsys):
    status, records, _ = run(capsys, "--model", str(workspace / "models" / "vidlankd-sst2"),
                             "--texts", "a fine film", "a dull film", "--top-k", "2")
    assert status == 0 and [r["text"] for r in records] == ["a fine film", "a dull film"]
    assert all(len(r["predictions"]) == 2 for r in records)
    status, records, _ = run(capsys, "--model", str(workspace / "models" / "vidlankd-student"), "--texts", "a film")
    assert status == 0 and len(records[0]["embedding"]) > 1
