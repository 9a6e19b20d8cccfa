"""Loopback load test of ``videolang serve``: many concurrent clients searching for a while.

Starts ``videolang serve INDEX_DIR`` on a free 127.0.0.1 port (with a token, as when exposed),
runs one client alone for a few seconds (the unbatched baseline), then ``--clients`` clients
(asyncio + httpx, one connection each) for ``--seconds``, each sending a new query as soon as
its last one is answered. Every query is a synthetic-world caption made unique by a counter, so
each one runs the text model (the server's LRU cache never answers; ``--repeat`` lets it).
Prints requests/s, p50/p90/p99/max latency, errors (non-200 or transport failures; the exit
status is 1 if any), and the server's model calls (queries per call: the batching at work).

Without INDEX_DIR a small index is built first: ``--videos`` synthetic videos embedded by an
untrained model folder of the demo's architecture (``--arch videoclip-minilm``: MiniLM text
tower, as ``make demo`` trains; per-query cost does not depend on the weights).

Usage: ``python benchmarks/serve_load.py [INDEX_DIR] [--clients 50] [--seconds 30]``.
Client and server share the machine's cores: the figures are for both on one host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


def build_small_index(folder: Path, videos: int, arch: str) -> Path:
    """A synthetic world of ``videos`` clips and its index under ``folder``; the index path."""
    import torch

    from videolang.data.text import load_tokenizer
    from videolang.models import create_model
    from videolang.models.backbones import create_backbone
    from videolang.pipelines.folder import (
        BackboneSpec,
        SimilaritySpec,
        TextSpec,
        VideoFeaturesSpec,
        write_model_folder,
    )
    from videolang.pipelines.videoclip import VideoCLIPSpec
    from videolang.search.builder import build_index
    from videolang.synth import synthesize_world

    synthesize_world(folder / "world", videos, seed=0, size=64, duration=8.0, progress=False)
    torch.manual_seed(0)
    backbone = create_backbone("cnn2d-tiny", seed=0)
    model = create_model(arch, feature_dim=backbone.feature_dim, max_video_len=8)
    spec = VideoCLIPSpec(
        text=TextSpec(max_len=32),
        video=VideoFeaturesSpec(backbone=BackboneSpec(name="cnn2d-tiny", options=backbone.build_options(),
                                                      feature_dim=backbone.feature_dim), max_len=8),
        similarity=SimilaritySpec(metric="cosine", temperature=0.05),
    )
    model_dir = write_model_folder(folder / "model", model, spec, tokenizer=load_tokenizer("minilm"),
                                   backbone=backbone)
    report = build_index(model_dir, folder / "world" / "videos", folder / "index", window=2.0, stride=1.0, workers=2,
                         progress=False)
    print(f"built {folder / 'index'}: {report.videos} videos, {report.windows} windows ({arch}, untrained) "
          f"in {report.seconds:.1f} s", flush=True)
    return folder / "index"


def captions(index_dir: Path) -> list[str]:
    """Query texts: the world's captions when the index is of a synthetic world, else a few."""
    from videolang.search.catalog import CATALOG_FILE, Catalog

    with Catalog(index_dir / CATALOG_FILE, readonly=True) as catalog:
        root = Path(catalog.get_meta("root"))
    path = root.parent / "annotations" / "captions.jsonl"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["caption"] for line in f if line.strip()]
    return ["a red circle moves left", "a person opens a door", "the blue square grows",
            "two shapes collide and bounce", "a green triangle rotates slowly"]


def start_server(index_dir: Path, token: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``videolang serve`` on a free loopback port (its output in ``log``), once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VIDEOLANG_SERVE_TOKEN": token}
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would stall the server's access log
        proc = subprocess.Popen([sys.executable, "-m", "videolang.cli.main", "serve", str(index_dir), "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"videolang serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/api/health", headers={"Authorization": f"Bearer {token}"}, timeout=2).is_success:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("videolang serve did not answer within 120 s")


async def load(base: str, token: str, texts: list[str], clients: int, seconds: float, k: int,
               repeat: bool) -> dict:
    """``clients`` loops of searches for ``seconds``, and a probe of ``/api/health`` every 0.1 s
    (does the server answer while the model is busy?): latencies in seconds, errors, requests,
    and the wall time until the last answer."""
    latencies: list[float] = []
    probes: list[float] = []
    errors = sent = 0
    counter = iter(range(10**12))
    stop = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal errors, sent
        while time.perf_counter() < stop:  # bounded: the loop ends with the time
            n = next(counter)
            q = texts[n % len(texts)] if repeat else f"{texts[n % len(texts)]} {n}"
            start = time.perf_counter()
            sent += 1
            try:
                r = await c.get(f"{base}/api/search", params={"q": q, "k": k}, headers=headers)
                ok = r.status_code == 200 and "results" in r.json()
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    async def probe(c: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                ok = (await c.get(f"{base}/api/health", headers=headers)).status_code == 200
            except httpx.HTTPError:
                ok = False
            probes.append(time.perf_counter() - start)
            errors += not ok
            await asyncio.sleep(0.1)

    begin = time.perf_counter()
    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    async with httpx.AsyncClient(timeout=60, limits=limits) as c:
        await asyncio.gather(probe(c), *(client(c) for _ in range(clients)))
    return {"latencies": latencies, "probes": probes, "errors": errors, "sent": sent,
            "wall": time.perf_counter() - begin}


def report(name: str, run: dict) -> None:
    ms = np.asarray(run["latencies"] or [0.0]) * 1000
    health = np.asarray(run["probes"] or [0.0]) * 1000
    print(f"{name:<20} {run['sent']:>6} requests {len(run['latencies']) / run['wall']:>7.1f} req/s  "
          f"p50 {np.percentile(ms, 50):6.1f} ms  p90 {np.percentile(ms, 90):6.1f} ms  "
          f"p99 {np.percentile(ms, 99):6.1f} ms  max {ms.max():6.1f} ms  errors {run['errors']}  "
          f"(/api/health meanwhile: p50 {np.percentile(health, 50):.1f} ms, max {health.max():.1f} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", nargs="?", help="an index folder (default: build a small one)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--baseline-seconds", type=float, default=5.0, help="one client alone first (0: skip)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeat", action="store_true", help="repeat the captions as they are (cache hits)")
    parser.add_argument("--videos", type=int, default=40, help="videos of the index built without INDEX_DIR")
    parser.add_argument("--arch", default="videoclip-minilm", help="model of the index built without INDEX_DIR")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve_load.") as tmp:
        index_dir = Path(args.index) if args.index else build_small_index(Path(tmp), args.videos, args.arch)
        texts = captions(index_dir)
        token = secrets.token_urlsafe(16)
        proc, base = start_server(index_dir, token, Path(tmp) / "serve.log")
        try:
            stats = httpx.get(f"{base}/api/stats", headers={"Authorization": f"Bearer {token}"}).json()
            print(f"index: {stats['videos']} videos, {stats['windows']} windows, {stats['index']['kind']} vectors, "
                  f"model {stats['model']['family']} ({stats['model']['folder']}); {len(texts)} query texts, "
                  f"{'repeated' if args.repeat else 'each made unique'}, k={args.k}")
            print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"Python {platform.python_version()}")
            if args.baseline_seconds > 0:
                report("1 client", asyncio.run(load(base, token, texts, 1, args.baseline_seconds, args.k,
                                                    args.repeat)))
            health = httpx.get(f"{base}/api/health", headers={"Authorization": f"Bearer {token}"}).json()
            loaded = asyncio.run(load(base, token, texts, args.clients, args.seconds, args.k, args.repeat))
            report(f"{args.clients} clients, {args.seconds:g} s", loaded)
            after = httpx.get(f"{base}/api/health", headers={"Authorization": f"Bearer {token}"}).json()
            calls, queries = after["model_calls"] - health["model_calls"], after["queries"] - health["queries"]
            print(f"server: {queries} queries in {calls} model calls ({queries / max(calls, 1):.1f} per call)")
        finally:
            proc.terminate()
            proc.wait(30)
    return 1 if loaded["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
