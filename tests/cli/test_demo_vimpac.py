"""`videolang demo vimpac` end to end on a tiny world: every stage runs, the summary and printout hold."""

from __future__ import annotations

import json

from videolang.cli.main import main


def test_demo_vimpac_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "vimpac", "--out", str(out), "--num-videos", "60", "--vqvae-steps", "3",
            "--pretrain-epochs", "1", "--finetune-epochs", "1", "--finetune-seeds", "0", "1", "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())

    # the pretraining config's arrow-of-time loss is reported beside VIMPAC's own monitors
    for key in ("val/mlm_acc", "val/knn_top1", "val/order_acc"):
        assert 0.0 <= summary["pretrain"][key] <= 100.0, key
    assert "arrow-of-time accuracy" in printed
    # equal fine-tuning steps for both models, one test accuracy per seed and kind
    assert summary["finetune_steps"]["pretrained"] == summary["finetune_steps"]["scratch"] > 0
    assert summary["finetune_seeds"] == [0, 1]
    for kind in ("pretrained", "scratch"):
        assert len(summary["test_top1_per_seed"][kind]) == 2
        assert all(0.0 <= x <= 100.0 for x in summary["test_top1_per_seed"][kind])
    assert "pretrained minus scratch per seed" in printed
    assert 0.0 < summary["test_top1"]["chance"] <= 100.0


def test_demo_vimpac_rejects_a_repeated_seed(tmp_path, capsys):
    # the CLI turns the ConfigError into exit status 2 and a message naming the option
    assert main(["demo", "vimpac", "--out", str(tmp_path), "--finetune-seeds", "0", "0"]) == 2
    assert "--finetune-seeds [0, 0]: each seed once" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # rejected before anything is written
