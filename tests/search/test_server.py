"""``videolang serve``'s HTTP API through FastAPI's TestClient: the results' shape, bad queries,
path traversal and links leading outside the indexed folder, range requests, the token, stats
and health, and queries batched into few model calls in one worker thread."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.conftest import make_videoclip_folder

from videolang.search.builder import build_index
from videolang.search.query import MAX_QUERY_CHARS, SearchIndex
from videolang.search.server import MAX_K, STATIC, create_app
from videolang.synth import synthesize_world

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory, one_torch_thread):
    """Three 4 s videos indexed in 2 s windows by an untrained VideoCLIP folder, next to a file
    outside the folder that links inside it point to (the index must not take them)."""
    root = tmp_path_factory.mktemp("serve")
    synthesize_world(root / "world", 4, seed=1, size=32, duration=4.0, progress=False, workers=1)
    videos = root / "world" / "videos"
    outside = root / "outside"
    outside.mkdir()
    shutil.move(videos / "vid00003.mp4", outside / "secret.mp4")  # a good video, but not in the folder
    (videos / "leak.mp4").symlink_to(outside / "secret.mp4")
    (videos / "more").symlink_to(outside, target_is_directory=True)
    model = make_videoclip_folder(root / "model")
    report = build_index(model, videos, root / "index", window=2.0, stride=1.0, workers=0, progress=False)
    index = SearchIndex(root / "index")
    yield root, index, report
    index.close()


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(served[1])) as c:
        yield c


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and message
    return message


# ------------------------------------------------------------------------------ search ------


def test_results_have_the_documented_shape_and_match_the_python_api(served, client):
    _, index, _ = served
    r = client.get("/api/search", params={"q": "  a red circle moves left ", "k": 4})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"query", "results"} and body["query"] == "a red circle moves left"
    assert 1 <= len(body["results"]) <= 4
    expected = index.search("a red circle moves left", 4)
    for got, hit in zip(body["results"], expected, strict=True):
        assert set(got) == {"video", "start", "end", "score", "thumbnail_url", "video_url"}
        assert (got["video"], got["start"], got["end"]) == (hit.video, hit.start, hit.end)
        assert got["score"] == pytest.approx(hit.score, abs=1e-6)
        assert got["video_url"] == f"/api/video/{hit.video_id}"
        thumb = client.get(got["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert thumb.content[:2] == b"\xff\xd8"  # a JPEG
        video = client.get(got["video_url"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        assert video.content == (served[0] / "world" / "videos" / got["video"]).read_bytes()
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_k_bounds_the_number_of_results(client):
    assert len(client.get("/api/search", params={"q": "a square", "k": 1}).json()["results"]) == 1
    assert len(client.get("/api/search", params={"q": "a square", "k": MAX_K}).json()["results"]) <= MAX_K


@pytest.mark.parametrize("query", [
    "",                                    # missing q
    "?q=",                                 # empty
    "?q=%20%20%09",                        # blank
    f"?q={'a' * (MAX_QUERY_CHARS + 1)}",   # over-long
    "?q=%FF%FE",                           # not UTF-8
    "?q=a%00b",                            # a control character
    "?q=a&k=0", "?q=a&k=101", "?q=a&k=-3", "?q=a&k=abc", "?q=a&k=1e3", "?q=a&k=",
])
def test_bad_queries_are_400_with_a_json_error(client, query):
    _error(client.get(f"/api/search{query}"), 400)


def test_repeated_parameters_and_unicode_queries_are_fine(client):
    assert client.get("/api/search?q=a&q=b").status_code == 200  # the last one wins
    r = client.get("/api/search", params={"q": "un cercle rouge à gauche, 赤い丸"})
    assert r.status_code == 200 and r.json()["query"] == "un cercle rouge à gauche, 赤い丸"


# ------------------------------------------------------------------- only indexed files -----


@pytest.mark.parametrize("path", [
    "/api/video/../index.sqlite", "/api/video/..%2Findex.sqlite", "/api/video/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/video/%2E%2E", "/api/video/1%2F..%2F..%2Findex.sqlite", "/api/video/..%5C..%5Cindex.sqlite",
    "/api/video/0", "/api/video/-1", "/api/video/999", "/api/video/1.0", "/api/video/0x1", "/api/video/%201",
    "/api/video/%EF%BC%91",  # a full-width digit one
    f"/api/video/{'9' * 40}", "/api/video/leak.mp4", "/api/video//etc/passwd", "/api/video/%00",
    "/api/thumbnail/..%2F..%2Findex.sqlite", "/api/thumbnail/0", "/api/thumbnail/99999", "/api/thumbnail/abc",
    "/static/../search/server.py", "/static/..%2Fserver.py", "/static/index.html", "/static/__init__.py",
    "/index.sqlite", "/report.json",
])
def test_anything_but_an_indexed_id_is_404(client, path):
    _error(client.get(path), 404)


def _raw_get(app, raw_path: bytes) -> int:
    """The status of a request whose path reaches the app as sent (HTTP clients remove ``..``)."""
    path = raw_path.decode("latin-1")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": raw_path, "root_path": "", "query_string": b"", "headers": [],
             "server": ("testserver", 80), "client": ("127.0.0.1", 1234)}
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


@pytest.mark.parametrize("raw", [b"/api/video/../index.sqlite", b"/api/video/../../../etc/passwd",
                                 b"/static/../server.py", b"/api/thumbnail/../../index.sqlite"])
def test_dot_segments_sent_raw_are_404(served, raw):
    assert _raw_get(create_app(served[1]), raw) == 404


def test_links_leading_outside_are_neither_indexed_nor_served(served, client):
    root, index, report = served
    assert report.videos == 3 and index.stats()["videos"] == 3
    indexed = {v.path for v in index.catalog.videos().values()}
    assert indexed == {"vid00000.mp4", "vid00001.mp4", "vid00002.mp4"} and not index.catalog.failures()
    secret = (root / "outside" / "secret.mp4").read_bytes()
    served_files = [r.content for i in range(1, 10) if (r := client.get(f"/api/video/{i}")).status_code == 200]
    assert len(served_files) == 3 and secret not in served_files


def test_an_indexed_file_replaced_by_a_link_outside_is_404(served, client):
    root, index, _ = served
    vid = next(v.id for v in index.catalog.videos().values() if v.path == "vid00002.mp4")
    path = root / "world" / "videos" / "vid00002.mp4"
    assert client.get(f"/api/video/{vid}").status_code == 200
    kept = path.with_name("kept.bin")
    path.rename(kept)
    try:
        path.symlink_to(root / "outside" / "secret.mp4")
        _error(client.get(f"/api/video/{vid}"), 404)
        path.unlink()
        _error(client.get(f"/api/video/{vid}"), 404)  # and a file that is gone
    finally:
        if path.is_symlink():
            path.unlink()
        kept.rename(path)
    assert client.get(f"/api/video/{vid}").status_code == 200


# ------------------------------------------------------------------------ range requests ----


def test_videos_are_streamed_with_range_requests(served, client):
    data = (served[0] / "world" / "videos" / "vid00000.mp4").read_bytes()
    size = len(data)
    url = "/api/video/1"
    assert client.get(url).headers["accept-ranges"] == "bytes"
    for header, (lo, hi) in {"bytes=10-99": (10, 99), "bytes=-50": (size - 50, size - 1),
                             "bytes=100-": (100, size - 1), f"bytes=0-{size + 99}": (0, size - 1)}.items():
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.headers["content-range"] == f"bytes {lo}-{hi}/{size}"
        assert r.content == data[lo : hi + 1] and int(r.headers["content-length"]) == hi + 1 - lo
    r = client.get(url, headers={"Range": f"bytes={size + 10}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    for malformed in ("bytes=500-100", "bytes=abc", "items=0-10"):
        assert client.get(url, headers={"Range": malformed}).status_code == 400, malformed
    head = client.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == size and not head.content


# --------------------------------------------------------------------------------- token -----


def test_a_token_guards_every_route(served):
    with TestClient(create_app(served[1], token=TOKEN)) as c:
        for path in ("/", "/static/app.js", "/api/health", "/api/stats", "/api/search?q=a", "/api/thumbnail/1",
                     "/api/video/1", "/nope"):
            r = c.get(path)
            _error(r, 401)
            assert r.headers["www-authenticate"] == "Bearer"
            _error(c.get(path, headers={"Authorization": "Bearer wrong"}), 401)
            _error(c.get(path, params={"token": TOKEN[:-1]}), 401)
        for path in ("/", "/static/app.js", "/api/health", "/api/stats", "/api/search?q=a", "/api/thumbnail/1",
                     "/api/video/1"):
            assert c.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200, path
            assert c.get(f"{path}{'&' if '?' in path else '?'}token={TOKEN}").status_code == 200, path
        r = c.get("/api/video/1", params={"token": TOKEN}, headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and len(r.content) == 10
        # the page asks for its script and style sheet with the token
        page = c.get("/", params={"token": TOKEN}).text
        assert f'src="static/app.js?token={TOKEN}"' in page and f'href="static/style.css?token={TOKEN}"' in page


def test_without_a_token_the_page_has_no_token_in_it(client):
    page = client.get("/").text
    assert 'src="static/app.js"' in page and "token" not in page.split("<body>")[0]


# ------------------------------------------------------------------------ page, stats, health


def test_the_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.headers["x-content-type-options"] == "nosniff"
    for path in Path(str(STATIC)).iterdir():  # no CDN, no web font: nothing loaded from elsewhere
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path.name
        assert "@import" not in text and "@font-face" not in text


def test_stats_and_health(served, client):
    report = served[2]
    stats = client.get("/api/stats").json()
    assert stats["videos"] == 3 and stats["windows"] == report.windows == 3 * 3
    assert stats["model"]["family"] == "videoclip" and stats["model"]["task"] == "retrieval"
    assert stats["index"]["kind"] == "flat"
    assert os.sep not in stats["root"] and os.sep not in stats["model"]["folder"]  # no server paths
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


# -------------------------------------------------------------------- batching, one thread --


def test_concurrent_queries_share_model_calls_in_one_worker_thread(served, monkeypatch):
    _, index, _ = served
    app = create_app(index)
    calls: list[tuple[int, str]] = []
    search_many = index.search_many
    release = threading.Event()

    def held_search_many(texts, k, **options):
        calls.append((len(texts), threading.current_thread().name))
        release.wait(10)  # the first call holds the worker: the queries that come meanwhile wait together
        return search_many(texts, k, **options)

    monkeypatch.setattr(index, "search_many", held_search_many)
    queries = [f"a shape number {i} moves" for i in range(24)]

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            searches = asyncio.ensure_future(asyncio.gather(
                *(c.get("/api/search", params={"q": q, "k": 2 + i % 3}) for i, q in enumerate(queries))))
            await asyncio.sleep(0.1)
            health = await asyncio.wait_for(c.get("/api/health"), 5)  # answered while the model is busy
            assert health.status_code == 200 and not searches.done() and len(calls) == 1
            release.set()
            return await searches

    answers = asyncio.run(run())
    assert sum(n for n, _ in calls) == len(queries) and len(calls) <= 3
    assert all(name.startswith("videolang-search") for _, name in calls)
    for i, (q, r) in enumerate(zip(queries, answers, strict=True)):
        expected = search_many([q], 2 + i % 3)[0]
        assert [(h["video"], h["start"]) for h in r.json()["results"]] == [(h.video, h.start) for h in expected]

    async def again() -> httpx.Response:  # a repeated query comes from the cache
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.get("/api/search", params={"q": queries[0], "k": 2})

    before = len(calls)
    assert asyncio.run(again()).json() == answers[0].json()
    assert len(calls) == before


def test_a_failing_model_call_is_a_json_500_and_the_server_goes_on(served, monkeypatch):
    _, index, _ = served
    search_many = index.search_many
    failures = iter([RuntimeError("the model fell over")])

    def flaky(texts, k, **options):
        for exc in failures:
            raise exc
        return search_many(texts, k, **options)

    monkeypatch.setattr(index, "search_many", flaky)
    with TestClient(create_app(index), raise_server_exceptions=False) as c:
        assert "RuntimeError" in _error(c.get("/api/search", params={"q": "a circle"}), 500)
        assert c.get("/api/search", params={"q": "a circle"}).status_code == 200
        c.app.state.batcher.max_queue = 0  # a full queue: come back later
        r = c.get("/api/search", params={"q": "a new query"})
        _error(r, 503)
        assert r.headers["retry-after"] == "1"
