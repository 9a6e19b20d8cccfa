"""`videolang index` / `search`: moments found by text; incremental and resumable (kill -9);
bad files listed; the index's model, windows and folder are checked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from tests.conftest import make_videoclip_folder

import videolang
from videolang.cli.main import main
from videolang.errors import ConfigError, StoreError
from videolang.search.builder import build_index, index_lock


def videos_of(workspace, tmp_path, n: int):
    """The first ``n`` videos of the workspace's world, copied into a folder of their own."""
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    for i in range(n):
        name = f"vid{i:05d}.mp4"
        shutil.copy(workspace / "world" / "videos" / name, folder / ("sub" if i % 3 == 0 else "") / name)
    return folder


def rows(index_dir):
    """``path -> (video id, indexed_at)`` of the catalog."""
    with sqlite3.connect(index_dir / "index.sqlite") as db:
        return {p: (i, t) for i, p, t in db.execute("SELECT id, path, indexed_at FROM videos")}


def test_index_search_and_update_only_what_changed(workspace, tmp_path, capsys):
    model = workspace / "models" / "videoclip"
    videos, index = videos_of(workspace, tmp_path, 6), tmp_path / "index"
    assert main(["index", str(model), str(videos), str(index), "--workers", "0", "--quiet"]) == 0
    assert "6 videos, 6 windows (6 new" in capsys.readouterr().out
    first = rows(index)
    assert set(first) == {"sub/vid00000.mp4", "vid00001.mp4", "vid00002.mp4", "sub/vid00003.mp4", "vid00004.mp4",
                          "vid00005.mp4"}
    hits = videolang.open_index(index).search("a red circle moves left", k=3)
    assert len(hits) == 3 and all(h.video in first and h.end > h.start >= 0 for h in hits)
    assert hits[0].score >= hits[1].score >= hits[2].score

    # one added, one replaced by other content, one touched only, one deleted: only two embedded
    shutil.copy(workspace / "world" / "videos" / "vid00010.mp4", videos / "vid00010.mp4")
    shutil.copy(workspace / "world" / "videos" / "vid00011.mp4", videos / "vid00002.mp4")
    os.utime(videos / "vid00001.mp4", ns=(time.time_ns(), time.time_ns()))
    (videos / "vid00005.mp4").unlink()
    report = build_index(model, videos, index, workers=0, progress=False)
    assert (report.new, report.changed, report.unchanged, report.removed) == (1, 1, 4, 1)
    second = rows(index)
    assert "vid00005.mp4" not in second and "vid00010.mp4" in second
    for path in ("sub/vid00000.mp4", "vid00001.mp4", "sub/vid00003.mp4", "vid00004.mp4"):
        assert second[path] == first[path]  # not re-embedded
    assert second["vid00002.mp4"] != first["vid00002.mp4"]
    found = {h.video for h in videolang.open_index(index).search("a red circle", k=10)}
    assert "vid00005.mp4" not in found and found <= set(second)
    # nothing changed: nothing done, the vectors are not rebuilt
    report = build_index(model, videos, index, workers=0, progress=False)
    assert (report.new, report.changed, report.removed, report.unchanged) == (0, 0, 0, 6)


def test_unreadable_files_are_listed_and_retried_when_they_change(workspace, tmp_path):
    model = workspace / "models" / "videoclip"
    videos, index = videos_of(workspace, tmp_path, 2), tmp_path / "index"
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "notes.mp4").write_text("not a video\n")
    report = build_index(model, videos, index, workers=2, progress=False)
    assert report.videos == 2 and sorted(p for p, _ in report.failed) == ["empty.mp4", "notes.mp4"]
    assert json.loads((index / "report.json").read_text())["failed"][0]["path"] == "empty.mp4"
    report = build_index(model, videos, index, workers=0, progress=False)
    assert (report.new, len(report.failed)) == (0, 2)  # unchanged bad files are not retried
    shutil.copy(workspace / "world" / "videos" / "vid00007.mp4", videos / "notes.mp4")
    report = build_index(model, videos, index, workers=0, progress=False)
    assert report.new == 1 and [p for p, _ in report.failed] == ["empty.mp4"] and report.videos == 3


def test_killed_run_resumes_without_redoing_finished_videos(workspace, tmp_path):
    model = workspace / "models" / "videoclip"
    videos, index = videos_of(workspace, tmp_path, 40), tmp_path / "index"
    cmd = [sys.executable, "-m", "videolang.cli.main", "index", str(model), str(videos), str(index),
           "--workers", "0", "--quiet", "--stride", "0.1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done: dict = {}
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (index / "index.sqlite").is_file():
            try:
                done = rows(index)
            except sqlite3.Error:
                done = {}
            if len(done) >= 5:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = rows(index)
    assert 5 <= len(before) < 40
    report = build_index(model, videos, index, workers=0, progress=False, stride=0.1)
    assert report.new == 40 - len(before) and report.videos == 40
    after = rows(index)
    assert all(after[p] == before[p] for p in before)  # finished videos were kept, not redone
    with sqlite3.connect(index / "index.sqlite") as db:  # whole videos only: every one has its windows
        per_video = dict(db.execute("SELECT video_id, COUNT(*) FROM windows GROUP BY video_id"))
    assert len(per_video) == 40 and len(set(per_video.values())) == 1


def test_the_index_keeps_its_model_windows_and_writer(workspace, tmp_path):
    model = workspace / "models" / "videoclip"
    videos, index = videos_of(workspace, tmp_path, 2), tmp_path / "index"
    build_index(model, videos, index, workers=0, progress=False)
    other = make_videoclip_folder(tmp_path / "other", seed=1)
    with pytest.raises(ConfigError, match="built with another model"):
        build_index(other, videos, index, workers=0, progress=False)
    with pytest.raises(ConfigError, match="not the model this index was built with"):
        videolang.open_index(index, model=other)
    with pytest.raises(ConfigError, match="windows"):
        build_index(model, videos, index, workers=0, progress=False, window=1.0)
    with index_lock(index), pytest.raises(StoreError, match=r"being written by another run \(pid"):
        build_index(model, videos, index, workers=0, progress=False)
    with pytest.raises(ConfigError, match="cannot index videos"):
        build_index(workspace / "models" / "vimpac", videos, tmp_path / "index2", workers=0, progress=False)


def test_search_command_prints_and_writes_json(workspace, tmp_path, capsys):
    model = workspace / "models" / "videoclip"
    videos, index = videos_of(workspace, tmp_path, 3), tmp_path / "index"
    build_index(model, videos, index, workers=0, progress=False)
    capsys.readouterr()
    assert main(["search", str(index), "a", "red", "circle", "--top-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == "a red circle" and len(out["results"]) == 2
    assert set(out["results"][0]) >= {"video", "start", "end", "score"}
    assert main(["search", str(index), "   "]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "nowhere"), "x"]) == 2


def test_the_demos_search_of_held_out_videos(workspace, tmp_path):
    from videolang.cli.demo import _test_pairs, search_held_out_videos

    world = workspace / "world"
    result = search_held_out_videos(workspace / "models" / "videoclip", world, tmp_path)
    pairs = _test_pairs(world)
    assert result["videos"] == len({vid for vid, _ in pairs}) and len(result["ranks"]) == len(pairs)
    assert all(1 <= r <= result["videos"] for r in result["ranks"])  # every video is found at some rank
    assert result["chance_top5"] == pytest.approx(100 * min(5, result["videos"]) / result["videos"])
    assert len(result["examples"]) == 3 and result["examples"][0]["hits"][0]["video"].endswith(".mp4")


def test_scan_follows_links_inside_once_and_never_outside(workspace, tmp_path):
    from videolang.search.builder import scan_videos

    videos = videos_of(workspace, tmp_path, 3)
    (videos / "loop").symlink_to(videos)  # a link back up: walked once, not forever
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(workspace / "world" / "videos" / "vid00009.mp4", outside / "secret.mp4")
    (videos / "secret.mp4").symlink_to(outside / "secret.mp4")  # leads outside: never indexed
    (videos / "more").symlink_to(outside)
    found = [f.path for f in scan_videos(videos)]
    assert found == ["sub/vid00000.mp4", "vid00001.mp4", "vid00002.mp4"]


@pytest.mark.parametrize("argv", [["search", "IDX", "q", "--top-k", "0"], ["search", "IDX", "q", "--rerank-top", "x"],
                                  ["index", "M", "V", "IDX", "--workers", "-1"], ["serve", "IDX", "--threads", "0"],
                                  ["ask", "IDX", "v.mp4", "q", "--model", "M", "--top-k", "0"]])
def test_bad_counts_are_usage_errors_naming_the_flag(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    flag = next(a for a in argv if a.startswith("--") and a != "--model")
    assert f"argument {flag}:" in capsys.readouterr().err
