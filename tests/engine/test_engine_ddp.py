"""Two-process data-parallel fit on CPU (Lightning ddp_spawn, gloo)."""

from __future__ import annotations

import json

from tests.engine.toy_recipe import toy_config

from videolang.engine import fit


def test_ddp_spawn_two_processes_fit(tmp_path):
    cfg = toy_config(tmp_path, strategy="ddp_spawn", accelerator="cpu", devices=2, num_sanity_val_steps=0)
    result = fit(cfg)
    run = result.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    # 64 samples, batch 8, 2 processes: 4 optimizer steps per epoch
    assert [(e["epoch"], e["step"]) for e in metrics["history"]["val"]] == [(0, 4), (1, 8)]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "export" / "model.safetensors").is_file()
    assert (run / "config.yaml").is_file() and list((run / "plots").glob("*.png"))
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]  # one run folder for both ranks
