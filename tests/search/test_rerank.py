"""Two-stage search and questions: ``--rerank`` re-scores the index's best moments with a
ClipBERT or VLM folder exactly as that model scores the moment alone; ``videolang ask`` answers
with a QA folder about an indexed video only."""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient

import videolang
from videolang.cli.main import main
from videolang.errors import ConfigError
from videolang.search.builder import build_index
from videolang.search.query import SearchIndex, ask
from videolang.search.rerank import Reranker, moment_frames
from videolang.search.server import create_app

QUERY = "a red circle moves left"


@pytest.fixture(scope="module")
def index(workspace, tmp_path_factory, one_torch_thread):
    """Six workspace videos (2 s) indexed by its VideoCLIP folder in 1 s windows, 0.5 s apart."""
    root = tmp_path_factory.mktemp("rerank")
    videos = root / "videos"
    videos.mkdir()
    for i in range(6):
        shutil.copy(workspace / "world" / "videos" / f"vid{i:05d}.mp4", videos)
    build_index(workspace / "models" / "videoclip", videos, root / "index", window=1.0, stride=0.5, workers=0,
                progress=False)
    opened = SearchIndex(root / "index")
    yield opened
    opened.close()


@pytest.mark.parametrize("folder", ["clipbert-retrieval", "vlm-mcqa"])
def test_reranked_hits_are_the_first_stage_reordered_by_the_second_model(index, workspace, folder):
    reranker = Reranker(workspace / "models" / folder)
    first = index.search(QUERY, k=6)
    best = index.search(QUERY, k=3, rerank=reranker, rerank_top=6)
    assert len(best) == 3
    by_window = {h.window_id: h for h in first}
    assert {h.window_id for h in best} <= set(by_window)  # only the first stage's moments
    for hit in best:
        assert hit.first_score == pytest.approx(by_window[hit.window_id].score, abs=1e-6)
        alone = reranker.score(QUERY, [(index.video_file(hit.video_id), hit.start, hit.end)])[0]
        assert hit.score == pytest.approx(alone, abs=1e-5)  # as the model scores that moment alone
    # the order is the second model's: the best 3 of all 6 re-scored
    rescored = reranker.score(QUERY, [(index.video_file(h.video_id), h.start, h.end) for h in first])
    assert [h.window_id for h in best] == [first[i].window_id for i in sorted(range(6), key=lambda i: -rescored[i])][:3]


def test_clipbert_rerank_score_is_the_models_score_of_the_moments_frames(index, workspace):
    reranker = Reranker(workspace / "models" / "clipbert-retrieval")
    hit = index.search(QUERY, k=1)[0]
    path = index.video_file(hit.video_id)
    pipe = videolang.load(workspace / "models" / "clipbert-retrieval")
    frames = moment_frames(path, hit.start, hit.end, min(8.0, 2 * pipe.spec.sampling.target_fps))
    assert frames.data.shape[0] >= 1
    expected = float(pipe.score([frames], [QUERY])[0, 0])
    assert reranker.score(QUERY, [(path, hit.start, hit.end)])[0] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("folder", ["videoclip", "vimpac", "clipbert-qa"])
def test_models_that_cannot_score_a_moment_are_refused(workspace, folder):
    with pytest.raises(ConfigError, match="--rerank"):
        Reranker(workspace / "models" / folder)


def test_the_server_reranks_as_the_python_api(index, workspace):
    reranker = Reranker(workspace / "models" / "clipbert-retrieval")
    expected = index.search(QUERY, k=2, rerank=reranker, rerank_top=5)
    with TestClient(create_app(index, rerank=reranker, rerank_top=5)) as client:
        answer = client.get("/api/search", params={"q": QUERY, "k": 2})
    assert answer.status_code == 200, answer.text
    got = answer.json()["results"]
    assert [(r["video"], r["start"]) for r in got] == [(h.video, h.start) for h in expected]
    assert [r["score"] for r in got] == pytest.approx([h.score for h in expected], abs=1e-6)


def test_search_command_with_rerank_prints_both_scores(index, workspace, capsys):
    rerank = str(workspace / "models" / "clipbert-retrieval")
    assert main(["search", str(index.folder), QUERY, "--rerank", rerank, "--rerank-top", "4", "--top-k", "2",
                 "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 2 and all(r["first_score"] is not None for r in results)
    assert results[0]["score"] >= results[1]["score"]
    assert main(["search", str(index.folder), QUERY, "--rerank", str(workspace / "models" / "vimpac")]) == 2
    assert "cannot score text against a moment" in capsys.readouterr().err


def test_ask_answers_as_the_qa_model_does_on_that_video(index, workspace):
    qa = workspace / "models" / "clipbert-qa"
    answers = ask(index.folder, "vid00001.mp4", "what colour is the circle?", qa, top_k=3)
    pipe = videolang.load(qa)
    direct = pipe.answer(str(index.root / "vid00001.mp4"), "what colour is the circle?", top_k=3)[0]
    assert [a for a, _ in answers] == [p.label for p in direct]
    assert [s for _, s in answers] == pytest.approx([p.score for p in direct], abs=1e-6)
    assert answers[0][1] >= answers[1][1] >= answers[2][1]


def test_ask_about_a_moment_and_among_choices(index, workspace):
    choices = ["red", "blue", "green"]
    answers = ask(index.folder, "vid00002.mp4", "which colour moves?", workspace / "models" / "vlm-mcqa",
                  choices=choices, start=0.5, end=1.5)
    assert sorted(a for a, _ in answers) == sorted(choices)
    moment = ask(index.folder, "vid00002.mp4", "which colour moves?", workspace / "models" / "clipbert-qa",
                 start=0.5, end=1.5, top_k=1)
    assert len(moment) == 1


def test_ask_refuses_what_it_cannot_answer(index, workspace, capsys):
    qa = workspace / "models" / "clipbert-qa"
    with pytest.raises(ConfigError, match="not in the index"):
        ask(index.folder, "vid00039.mp4", "what?", qa)  # a real file, but not indexed
    with pytest.raises(ConfigError, match="--choices"):
        ask(index.folder, "vid00001.mp4", "what?", workspace / "models" / "vlm-mcqa")
    with pytest.raises(ConfigError, match="does not answer"):
        ask(index.folder, "vid00001.mp4", "what?", workspace / "models" / "videoclip")
    assert main(["ask", str(index.folder), "vid00001.mp4", "what", "colour?", "--model", str(qa)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vid00001.mp4: what colour?") and "  1. " in out
    assert main(["ask", str(index.folder), "../index/index.sqlite", "what?", "--model", str(qa)]) == 2
