"""``videolang serve INDEX_DIR``: an index searched over HTTP, with a web page.

A FastAPI app (:func:`create_app`) with the page, ``/api/search``, ``/api/stats``,
``/api/health``, thumbnails and range-request video routes; only ids come from URLs, and a video
is served only from inside the indexed folder. Queries are embedded in one worker thread, batched
by :class:`QueryBatcher` behind an LRU cache; ``--token`` requires a bearer token. Routes and
safety rules: docs/search.md ("The web page and its API").
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import mimetypes
import os
import re
import unicodedata
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from videolang.errors import ConfigError
from videolang.search.query import Hit, SearchIndex, check_query

__all__ = ["MAX_K", "QueryBatcher", "create_app", "serve"]

log = logging.getLogger(__name__)

MAX_K = 100
STATIC = resources.files("videolang.search") / "static"
_STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
_MAX_ID_DIGITS = 18  # SQLite rowids fit in 63 bits
# The page loads nothing from elsewhere; this also keeps injected markup from loading anything.
_PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
             "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class QueryBatcher:
    """Runs ``index.search_many`` in one worker thread, one call for the queries that arrived
    together: a query waits at most ``wait_s`` for company (more gather while a call runs).
    At most ``max_queue`` queries wait; beyond that :meth:`search` raises ``OverflowError``."""

    def __init__(self, index: SearchIndex, *, wait_s: float = 0.003, max_batch: int = 32, max_queue: int = 1024,
                 cache_size: int = 256, threads: int | None = None, search_options: dict[str, Any] | None = None):
        self.index, self.wait_s, self.max_batch, self.max_queue = index, wait_s, max_batch, max_queue
        self.search_options = search_options or {}  # rerank, rerank_top
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="videolang-search", initializer=_limit_threads,
                                            initargs=(threads or default_threads(),))
        self._cache: OrderedDict[tuple[str, int], list[Hit]] = OrderedDict()
        self.cache_size = cache_size
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.calls = self.queries = 0  # model calls and queries they answered (batching at work)

    async def search(self, text: str, k: int) -> list[Hit]:
        key = (text, k)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        queue = self._ensure_running()
        if queue.qsize() >= self.max_queue:
            raise OverflowError(f"{queue.qsize()} queries are waiting")
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait((text, k, future))
        hits = await future
        self._cache[key] = hits
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return hits

    def _ensure_running(self) -> asyncio.Queue:
        """The gathering task of the running event loop (started on first use)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._gather(self._queue), name="videolang-query-batcher")
        assert self._queue is not None
        return self._queue

    async def _gather(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            await asyncio.sleep(self.wait_s)
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [item for item in batch if not item[2].done()]  # a client gone meanwhile
            if batch:
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[str, int, asyncio.Future]]) -> None:
        texts = list(dict.fromkeys(text for text, _, _ in batch))  # same text: embedded once
        k = max(k for _, k, _ in batch)  # the first k hits of a deeper search are the k-search's
        try:
            found = await loop.run_in_executor(
                self._executor, functools.partial(self.index.search_many, texts, k, **self.search_options))
            by_text = dict(zip(texts, found, strict=True))
        except Exception as exc:  # every waiting request gets the error, the loop goes on
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.calls, self.queries = self.calls + 1, self.queries + len(batch)
        for text, k_wanted, future in batch:
            if not future.done():
                future.set_result(by_text[text][:k_wanted])

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def default_threads() -> int:
    """Intra-op threads of the query thread: half the cores, at most 4 (the event loop, media
    requests and other work need the rest; batching, not threads, gives the throughput)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _limit_threads(threads: int) -> None:
    """Torch and faiss (one OpenMP runtime) threads of the query thread. Its default, one per
    core, makes a search 10-30x slower when the cores are busy: the two libraries' parallel
    regions alternate and their OpenMP threads wait on each other (measured on 2 cores)."""
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


class TokenGate:
    """ASGI middleware: every HTTP request needs the token, as a bearer header or ``?token=``."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            response = _error(401, "this server needs a token: send 'Authorization: Bearer TOKEN' or add "
                              "?token=TOKEN to the URL", {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        given: list[bytes] = []
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given.append(value[7:].strip())
        query = scope.get("query_string", b"").decode("latin-1")
        given += [v.encode("latin-1", "replace") for k, v in parse_qsl(query, encoding="latin-1") if k == "token"]
        return any(hmac.compare_digest(g, self.token) for g in given)


class NoSniff:
    """ASGI middleware: ``X-Content-Type-Options: nosniff`` on every response (401s included)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_header(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, receive, send_with_header if scope["type"] == "http" else send)


def _check_text(q: str) -> str:
    """:func:`check_query`, and no control characters or undecodable bytes (U+FFFD)."""
    if "\ufffd" in q or any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in q):
        raise ValueError("the query is not text (control characters or invalid UTF-8)")
    return check_query(q)


def _media_id(text: str, what: str) -> int:
    """An id from a URL: ASCII digits only; anything else is not there (404)."""
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_ID_DIGITS):
        raise HTTPException(404, f"no such {what}")
    return int(text)


def _public_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The index's stats without the server's absolute paths (names only)."""
    out = {**stats, "model": dict(stats.get("model", {}))}
    if "root" in out:
        out["root"] = Path(out["root"]).name
    if "folder" in out["model"]:
        out["model"]["folder"] = Path(out["model"]["folder"]).name
    return out


def create_app(index: SearchIndex, *, token: str | None = None, batch_wait_ms: float = 3.0, max_batch: int = 32,
               cache_size: int = 256, threads: int | None = None, rerank: Any = None,
               rerank_top: int = 50) -> FastAPI:
    """The FastAPI app serving ``index`` (see the module docstring). ``threads``: intra-op
    threads of the query thread (default :func:`default_threads`); ``rerank`` (a
    :class:`~videolang.search.rerank.Reranker`) re-scores each query's first ``rerank_top`` hits."""
    options = {"rerank": rerank, "rerank_top": rerank_top} if rerank is not None else {}
    batcher = QueryBatcher(index, wait_s=batch_wait_ms / 1000, max_batch=max_batch, cache_size=cache_size,
                           threads=threads, search_options=options)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        batcher.close()

    app = FastAPI(title="videolang search", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.index, app.state.batcher = index, batcher
    if token:
        app.add_middleware(TokenGate, token=token)
    app.add_middleware(NoSniff)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"the server failed: {type(exc).__name__}")

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}" for e in exc.errors()]
        return _error(400, "; ".join(parts) or "bad request")

    # With a token, the page's own script and style sheet carry it too (they are requests as well).
    asset_query = f"?{urlencode({'token': token})}" if token else ""
    html = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{token_query}}", asset_query)

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return Response(html, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": _PAGE_CSP, "Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in _STATIC_FILES:  # a fixed list: nothing else of the package is reachable
            raise HTTPException(404, "no such file")
        return Response((STATIC / name).read_bytes(), media_type=f"{_STATIC_FILES[name]}; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model_calls": batcher.calls, "queries": batcher.queries}

    @app.get("/api/stats")
    def stats() -> dict[str, Any]:
        return _public_stats(index.stats())

    @app.get("/api/search")
    async def search(q: str | None = Query(None), k: int = Query(10, ge=1, le=MAX_K)) -> Any:
        if q is None:
            return _error(400, "missing query: /api/search?q=TEXT")
        try:
            text = _check_text(q)
        except ValueError as exc:
            return _error(400, str(exc))
        try:
            hits = await batcher.search(text, k)
        except OverflowError:
            return _error(503, "too many queries are waiting; try again", {"Retry-After": "1"})
        return {"query": text, "results": [_result(h) for h in hits]}

    @app.get("/api/thumbnail/{window_id}")
    def thumbnail(window_id: str) -> Response:
        jpeg = index.thumbnail(_media_id(window_id, "thumbnail"))
        if not jpeg:
            raise HTTPException(404, "no such thumbnail")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    @app.api_route("/api/video/{video_id}", methods=["GET", "HEAD"])
    def video(video_id: str) -> Response:
        path = index.video_file(_media_id(video_id, "video"))
        if path is None:
            raise HTTPException(404, "no such video")
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        # FileResponse answers Range requests (206, suffix ranges, 416 for unsatisfiable ones).
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=60"})

    return app


def _result(hit: Hit) -> dict[str, Any]:
    return {"video": hit.video, "start": round(hit.start, 3), "end": round(hit.end, 3), "score": hit.score,
            "thumbnail_url": f"/api/thumbnail/{hit.window_id}", "video_url": f"/api/video/{hit.video_id}"}


class _RedactToken(logging.Filter):
    """Access-log lines show ``token=***`` instead of the token (media URLs carry it)."""

    _pattern = re.compile(r"(?<=[?&]token=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._pattern.sub("***", a) if isinstance(a, str) else a for a in record.args)
        return True


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(index_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          model: str | Path | None = None, device: str = "cpu", threads: int | None = None,
          rerank: str | Path | None = None, rerank_top: int = 50, log_level: str = "info") -> None:
    """Open ``index_dir``, load its model (so the first query is fast and a bad model fails
    before the port opens) and serve it with uvicorn until interrupted. ``rerank``: a ClipBERT
    retrieval or VLM model folder re-scoring the first ``rerank_top`` hits of each query."""
    import uvicorn

    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: must be at least 1")
    if host not in LOOPBACK and not token:
        log.warning("serving on %s without --token: anyone who can reach this port can search the index and "
                    "download its videos", host)
    index = SearchIndex(index_dir, model=model, device=device)
    reranker = None
    if rerank is not None:
        from videolang.search.rerank import Reranker

        reranker = Reranker(rerank, device=device)
    app = create_app(index, token=token, threads=threads, rerank=reranker, rerank_top=rerank_top)
    asyncio.run(app.state.batcher.search("warm up", 1))  # the model loads in the query thread, now
    logging.getLogger("uvicorn.access").addFilter(_RedactToken())
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?{urlencode({'token': token})}" if token else "")
    stats = index.stats()
    print(f"serving {index_dir} ({stats['videos']} videos, {stats['windows']} windows) on {url}", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    finally:
        index.close()

