"""Paths from files never lead outside their folder: ``data shards`` annotations naming ``..``,
an absolute path or a link out are refused (nothing of the outside file reaches a shard)."""

from __future__ import annotations

import json
import logging

import pytest

from videolang.cli.main import main


@pytest.fixture
def videos(tmp_path, video_dir):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(next(video_dir.glob("*.mp4")).read_bytes())
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (folder / "link.mp4").symlink_to(secret)
    return folder


@pytest.mark.parametrize(("path", "message"), [
    ("../secret.txt", "must be a path inside the data folder"),
    ("/etc/passwd", "must be a path inside the data folder"),
    ("link.mp4", "leads outside the data folder"),
])
def test_shards_refuse_paths_that_leave_the_folder(tmp_path, videos, capsys, path, message):
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps({"id": "a", "path": "a.mp4"}) + "\n" + json.dumps({"id": "x", "path": path}) + "\n")
    logging.root.handlers.clear()
    status = main(["data", "shards", str(videos), str(tmp_path / "shards"), "--annotations", str(notes)])
    err = capsys.readouterr().err
    assert status == 2 and f"{notes}:2" in err and message in err, err
    assert not (tmp_path / "shards").exists()
