"""The search page in headless Chromium (Debian's ``chromium``, driven by Playwright) against a
real ``videolang serve`` subprocess on a loopback port.

The index holds 8 synthetic videos embedded by a small VideoCLIP trained here on their per-event
captions (about 10 s); the queries are the videos' sentence captions, which training never saw.
That the model retrieves is checked over all of them through the HTTP API; the page is then
given one whose correct video the search finds first, at a moment after 0 s, so that playing
from the hit's start is not the same as playing from the beginning.

Never skipped: a missing browser fails with what to install (``make test`` installs it as root).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from videolang.engine import fit
from videolang.pipelines.features import run_extraction
from videolang.search.builder import build_index
from videolang.synth import synthesize_world

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-test-token"
SHOWN = 3  # hits on the page (?k=3): 8 videos, so chance of the right one among them is at most 3/8


def _trained_model(root: Path, world: Path) -> Path:
    """VideoCLIP-tiny on pooled pixels, 100 steps on the per-event captions of all 8 videos."""
    run_extraction(str(world / "videos"), "pooled-pixels", str(root / "features"), progress=False,
                   backbone_options={"grid": 2, "rows_per_second": 2})
    (root / "all.lst").write_text("".join(f"{p.stem}\n" for p in sorted((world / "videos").glob("*.mp4"))))
    cfg = {
        "recipe": "videoclip.pretrain", "name": "browser", "seed": 0,
        "model": {"name": "videoclip-tiny", "normalize": True, "temperature": 0.05},
        "data": {"features": str(root / "features"), "tokenizer": "minilm",
                 "captions": str(world / "formats/howto100m/raw_caption.json"), "train_list": str(root / "all.lst"),
                 "pairs_per_video": 4, "videos_per_batch": 8, "min_video_len": 1, "max_video_len": 8,
                 "min_text_tokens": 4, "max_text_tokens": 16, "max_text_len": 32, "retrieval": False},
        "optim": {"lr": 3e-3, "schedule": "constant"},
        "trainer": {"max_epochs": 100, "enable_progress_bar": False, "num_sanity_val_steps": 0,
                    "log_every_n_steps": 50},
        "run": {"root": str(root / "runs"), "plots": False},
    }
    return fit(cfg).run_dir / "export"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(index: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``videolang serve`` on a free loopback port, once /api/health answers."""
    port = _free_port()
    env = {**os.environ, "VIDEOLANG_SERVE_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "videolang.cli.main", "serve", str(index), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"videolang serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/api/health", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2).is_success:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"videolang serve did not answer within 90 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, one_torch_thread):
    """``(base URL, world folder)`` of a running server over the 8 videos."""
    root = tmp_path_factory.mktemp("browser")
    world = root / "world"
    synthesize_world(world, 8, seed=5, size=48, duration=4.0, progress=False)
    export = _trained_model(root, world)
    shutil.rmtree(root / "features")  # the model folder stands alone
    build_index(export, world / "videos", root / "index", window=2.0, stride=1.0, workers=0, progress=False)
    proc, base = _start_server(root / "index", root / "serve.log")
    try:
        yield base, world
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Playwright: pip install -e '.[dev]'")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"the browser test needs Debian's chromium at {CHROMIUM}: apt-get install -y chromium "
                    "(`make test` installs it when run as root)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _wait(page, expression: str, timeout: float = 15.0) -> None:
    """Poll a JavaScript expression until true (``wait_for_function`` evaluates strings with
    ``eval``, which the page's Content-Security-Policy rightly forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {expression}; status: {page.text_content('#status')!r}")
        time.sleep(0.02)


def _api(base: str, path: str, **params) -> httpx.Response:
    return httpx.get(f"{base}{path}", params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def _held_out_captions(world: Path) -> list[tuple[str, str]]:
    """``(video file, caption)``: the sentence captions (training used the per-event ones)."""
    with open(world / "annotations" / "captions.jsonl", encoding="utf-8") as f:
        return [(f"{r['video_id']}.mp4", r["caption"]) for r in map(json.loads, f)]


def test_the_model_retrieves_through_the_api(server):
    base, world = server
    pairs = _held_out_captions(world)
    firsts = [_api(base, "/api/search", q=caption, k=1).json()["results"][0]["video"] for _, caption in pairs]
    rate = sum(got == video for (video, _), got in zip(pairs, firsts, strict=True)) / len(pairs)
    assert rate >= 3 / 8, f"the correct video first for {rate:.0%} of {len(pairs)} captions; chance is 1/8"


def test_search_play_at_the_hits_start_keyboard_and_reload(server, browser):
    base, world = server
    query = video = None
    for video, caption in _held_out_captions(world):
        hits = _api(base, "/api/search", q=caption, k=SHOWN).json()["results"]
        if hits[0]["video"] == video and hits[0]["start"] > 0:
            query, start = caption, hits[0]["start"]
            break
    assert query is not None, "no caption whose correct video comes first at a moment after 0 s"

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/?token={TOKEN}&k={SHOWN}")
    _wait(page, "document.getElementById('stats').textContent.includes('8 videos')")
    page.fill("#q", query)
    page.press("#q", "Enter")
    page.wait_for_selector(".hit")
    names = page.locator(".hit .name").all_text_contents()
    assert video in names and len(names) <= SHOWN, (query, names)
    assert f"token={TOKEN}" in page.url and "q=" in page.url  # shareable, and the token kept

    card = page.locator(".hit").nth(names.index(video))
    assert float(card.get_attribute("data-start")) == start
    card.click()
    page.wait_for_selector("#player[open]")
    _wait(page, "(() => { const v = document.getElementById('video');"
                " return v.readyState >= 2 && !v.seeking && v.currentTime > 0; })()")
    played = page.evaluate("(() => { const v = document.getElementById('video'); const r = v.played;"
                           " return {t: v.currentTime, first: r.length ? r.start(0) : v.currentTime}; })()")
    assert played["first"] == pytest.approx(start, abs=0.05), played  # playback began at the hit, not at 0
    assert start - 0.05 <= played["t"] <= start + 1.0, played

    page.keyboard.press("Escape")
    page.wait_for_selector("#player", state="hidden")
    # the dialog's close event (pause, focus back on the result) is dispatched after it hides
    _wait(page, "document.getElementById('video').paused", timeout=5)
    _wait(page, "document.activeElement.classList.contains('hit')", timeout=5)

    # keyboard: arrow keys move between results, Enter plays the focused one
    page.focus("#q")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.index") == "0"
    if len(names) > 1:
        page.keyboard.press("ArrowRight")
        assert page.evaluate("document.activeElement.dataset.index") == "1"
    page.keyboard.press("Enter")
    page.wait_for_selector("#player[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#player", state="hidden")
    _wait(page, "!document.getElementById('video').hasAttribute('src')", timeout=5)  # the close handler ran
    page.keyboard.press("/")  # back to the search box, its text selected for a new query
    assert page.evaluate("document.activeElement.id") == "q"

    # the query is in the URL: a reload searches again
    page.reload()
    page.wait_for_selector(".hit")
    assert page.input_value("#q") == query
    assert page.locator(".hit .name").all_text_contents() == names

    # an error shows as such (the box limits typing; a shared URL does not)
    page.goto(f"{base}/?token={TOKEN}&q={'x' * 600}")
    page.wait_for_selector("#status.error")
    assert "at most 500" in page.text_content("#status")
    assert not errors, errors
    page.close()


def test_the_real_server_answers_dot_segments_with_404(server):
    """HTTP clients remove ``..`` before sending; a raw request keeps it."""
    host, port = server[0].removeprefix("http://").split(":")
    for path in ("/api/video/../../index.sqlite", "/api/video/%2e%2e/%2e%2e/etc/passwd"):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                      "Connection: close\r\n\r\n".encode())
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404"), head
        assert b'"error"' in body
