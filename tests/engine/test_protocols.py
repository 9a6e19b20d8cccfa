"""Protocols of several runs: the per-split configs and the split average, on the toy recipe."""

from __future__ import annotations

import pytest
from tests.engine.toy_recipe import toy_config

from videolang.engine.protocols import split_averaged, split_config


def test_split_config_rewrites_the_lists_and_the_name():
    base = {"recipe": "vimpac.finetune", "name": None,
            "data": {"train_list": "lists/ucf101_train_split_1_videos.txt", "val_list": None,
                     "test_list": "lists/ucf101_test_split_1_videos.txt", "clip_len": 5}}
    cfg = split_config(base, 3)
    assert cfg["data"] == {"train_list": "lists/ucf101_train_split_3_videos.txt", "val_list": None,
                           "test_list": "lists/ucf101_test_split_3_videos.txt", "clip_len": 5}
    assert cfg["name"] == "vimpac.finetune_split3"
    assert split_config({**base, "name": "ucf"}, 2)["name"] == "ucf_split2"
    assert base["data"]["train_list"].endswith("split_1_videos.txt")  # the base is left alone


def test_split_averaged_fits_and_tests_each_split(tmp_path, one_torch_thread):
    result = split_averaged(toy_config(tmp_path, max_epochs=1), split_ids=(1, 2), metric="test/acc")
    assert set(result["per_split"]) == {1, 2}
    assert result["mean"] == pytest.approx(sum(result["per_split"].values()) / 2)
    for sid in (1, 2):
        assert (tmp_path / f"toy_split{sid}" / "version_0" / "checkpoints" / "last.ckpt").is_file()
