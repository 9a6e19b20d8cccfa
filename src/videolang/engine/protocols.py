"""Evaluation protocols made of several runs: :func:`split_averaged` fine-tunes and tests once
per official split (UCF101 / HMDB51 splits 1-3) and averages a test metric."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from videolang.engine.config import config_to_dict
from videolang.engine.trainer import ConfigSource, fit, load_run_config, test

__all__ = ["split_averaged", "split_config"]

SPLIT_LISTS = ("train_list", "val_list", "test_list")


def split_config(config: dict[str, Any], split_id: int) -> dict[str, Any]:
    """A copy of a config dict for split ``split_id``: ``split_<n>`` in ``data.train_list`` /
    ``val_list`` / ``test_list`` (e.g. ``ucf101_train_split_1_videos.txt``) becomes
    ``split_<split_id>``, and the run is named ``<name>_split<split_id>``."""
    cfg = copy.deepcopy(config)
    for key in SPLIT_LISTS:
        if cfg["data"].get(key):
            cfg["data"][key] = re.sub(r"split_\d+", f"split_{split_id}", cfg["data"][key])
    cfg["name"] = f"{cfg.get('name') or cfg['recipe']}_split{split_id}"
    return cfg


def split_averaged(config: ConfigSource, split_ids: Sequence[int] = (1, 2, 3), overrides: Sequence[str] = (),
                   metric: str = "test/top1") -> dict[str, Any]:
    """Fine-tune and test once per split (:func:`split_config`), each test with the run's last
    checkpoint, and average ``metric``. Returns ``{"per_split": {id: value}, "mean": float}``."""
    base = config_to_dict(load_run_config(config, overrides)[0])
    per_split = {}
    for split_id in split_ids:
        cfg = split_config(base, split_id)
        result = fit(cfg)
        tested = test(cfg, resume=result.run_dir / "checkpoints" / "last.ckpt")
        per_split[split_id] = float(tested.metrics["test"][metric])
    return {"per_split": per_split, "mean": float(np.mean(list(per_split.values())))}
