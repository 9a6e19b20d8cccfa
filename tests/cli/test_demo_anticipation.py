"""`videolang demo anticipation` end to end on a tiny world, twice: the second run reuses the
world, features and tokenizer and prints the same numbers."""

from __future__ import annotations

import json

from videolang.cli.main import main


def test_demo_anticipation_tiny_reuses_its_world(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "anticipation", "--out", str(out), "--num-videos", "60", "--seeds", "1",
            "--teacher-epochs", "1", "--student-epochs", "1"]
    assert main(args) == 0
    first = json.loads((out / "summary.json").read_text())
    assert "reusing the world" not in capsys.readouterr().out
    tokenizer_time = (out / "tokenizer" / "tokenizer.json").stat().st_mtime

    assert main(args) == 0
    printed = capsys.readouterr().out
    second = json.loads((out / "summary.json").read_text())
    assert "reusing the world" in printed and "train prior (most frequent first)" in printed
    assert (out / "tokenizer" / "tokenizer.json").stat().st_mtime == tokenizer_time  # kept, not rebuilt
    for key in ("teacher", "prior", "student_no_kd", "student_kd"):
        assert second[key] == first[key], key
    for m in ("top5", "mean_top5_recall", "top1"):
        assert 0.0 <= first["student_kd"]["mean_std"][m][0] <= 100.0
