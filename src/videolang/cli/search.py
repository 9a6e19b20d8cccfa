"""``videolang index | search | serve | ask``: search your own videos (docs/search.md).

    videolang index MODEL_DIR VIDEO_DIR INDEX_DIR [--window S] [--stride S] [--workers N]
    videolang search INDEX_DIR "a person opens a red door" [--top-k K] [--json]
    videolang serve INDEX_DIR [--host 127.0.0.1] [--port 8000] [--token TOKEN]
    videolang ask INDEX_DIR VIDEO "what colour is the door?" --model QA_MODEL_DIR
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = ["register"]


def _cmd_index(args: argparse.Namespace) -> int:
    if args.devices > 1 or args.num_nodes > 1 or args.strategy:
        # Lightning predict over DDP, one process per device (docs/search.md, on a cluster)
        from videolang.engine.indexing import index_distributed

        report = index_distributed(args.model, args.videos, args.index, window=args.window, stride=args.stride,
                                   workers=args.workers, accelerator=args.accelerator, devices=args.devices,
                                   num_nodes=args.num_nodes, strategy=args.strategy,
                                   vector_kind=args.vector_index, thumbnails=not args.no_thumbnails,
                                   progress=not args.quiet)
        if report is None:  # not global rank 0: rank 0 prints
            return 0
    else:
        from videolang.search.builder import build_index

        report = build_index(args.model, args.videos, args.index, window=args.window, stride=args.stride,
                             workers=args.workers, device=args.device, vector_kind=args.vector_index,
                             thumbnails=not args.no_thumbnails, progress=not args.quiet)
    v = report.vectors
    recall = next((f"{key} {val:.3f}" for key, val in v.items() if key.startswith("recall")), "")
    print(f"index {args.index}: {report.videos} videos, {report.windows} windows "
          f"({report.new} new, {report.changed} changed, {report.unchanged} unchanged, {report.removed} removed, "
          f"{len(report.failed)} unreadable) in {report.seconds:.1f} s; vectors: {v.get('kind')} ({recall})")
    for failure in report.failed:
        print(f"  unreadable: {failure[0]}: {failure[1]}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from videolang.search.query import open_index

    index = open_index(args.index, model=args.model, device=args.device)
    rerank = None
    if args.rerank:
        from videolang.search.rerank import Reranker

        rerank = Reranker(args.rerank, device=args.device)
    hits = index.search(" ".join(args.query), k=args.top_k, rerank=rerank, rerank_top=args.rerank_top)
    if args.json:
        print(json.dumps({"query": " ".join(args.query), "results": [h.to_dict() for h in hits]}, indent=1))
        return 0
    if not hits:
        print("no results (the index is empty)")
    width = max((len(h.video) for h in hits), default=5)
    for rank, h in enumerate(hits, 1):
        print(f"{rank:>3}. {h.video:<{width}}  {_clock(h.start)}-{_clock(h.end)}  score {h.score:.4f}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from videolang.search.server import serve

    serve(args.index, host=args.host, port=args.port, token=args.token or None, model=args.model,
          device=args.device, threads=args.threads, rerank=args.rerank, rerank_top=args.rerank_top)
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from videolang.search.query import ask

    question = " ".join(args.question)
    answers = ask(args.index, args.video, question, args.model, choices=args.choices, start=args.start,
                  end=args.end, top_k=args.top_k, device=args.device)
    print(f"{args.video}: {question}")
    for rank, (label, score) in enumerate(answers, 1):
        print(f"{rank:>3}. {label}  ({score:.3f})")
    return 0


def _count(minimum: int, maximum: int | None = None):
    """An argparse type: an integer of at least ``minimum`` (and at most ``maximum``); argparse
    names the flag on error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            allowed = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"{value} is not in {allowed}")
        return value

    parse.__name__ = f"integer {minimum}..{maximum}" if maximum is not None else f"integer >= {minimum}"
    return parse


def _clock(seconds: float) -> str:
    m, s = divmod(max(seconds, 0.0), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:05.2f}" if h else f"{m}:{s:05.2f}"


def register(subparsers: Any) -> None:
    """Add ``index`` and ``search`` (and ``serve``, ``ask``) to a ``videolang`` subparsers object."""
    p = subparsers.add_parser("index", help="index a folder of videos for text search (resumable, incremental)",
                              description="Embed every video under VIDEO_DIR (recursive) in overlapping time "
                              "windows with a retrieval model folder; a rerun updates only what changed.")
    p.add_argument("model", help="a retrieval model folder (VideoCLIP, VLM retrieval)")
    p.add_argument("videos", help="the folder of videos (searched recursively)")
    p.add_argument("index", help="the index folder (created, or updated when it exists)")
    p.add_argument("--window", type=float, default=None, help="seconds per window (default: the model's)")
    p.add_argument("--stride", type=float, default=None, help="seconds between windows (default: half a window)")
    p.add_argument("--workers", type=_count(0), default=2, help="DataLoader worker processes decoding and embedding")
    p.add_argument("--device", default="cpu")
    p.add_argument("--vector-index", default="auto", choices=["auto", "flat", "hnsw", "ivfpq"],
                   help="faiss index kind (default: exact for small collections, approximate beyond)")
    p.add_argument("--no-thumbnails", action="store_true", help="store no thumbnail per window")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--devices", type=_count(1), default=1,
                   help="processes per machine (one per GPU): Lightning predict over DDP when above 1")
    p.add_argument("--num-nodes", type=_count(1), default=1, help="machines (torchrun or SLURM starts each one)")
    p.add_argument("--strategy", choices=["ddp", "ddp_spawn"], default=None,
                   help="Lightning strategy (default ddp beyond one process; giving one runs the distributed "
                   "path even with one device)")
    p.add_argument("--accelerator", choices=["cpu", "gpu", "auto"], default="auto",
                   help="the distributed path's device kind (--device is the single-process path's)")
    p.set_defaults(func=_cmd_index)

    p = subparsers.add_parser("search", help="find moments in an index by text")
    p.add_argument("index", help="an index folder (videolang index)")
    p.add_argument("query", nargs="+", help="what to look for, e.g. 'a person opens a red door'")
    p.add_argument("--top-k", type=_count(1), default=10)
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.add_argument("--model", help="the index's model folder, if it moved (its identity is checked)")
    p.add_argument("--rerank", metavar="MODEL_DIR",
                   help="re-score the best hits with a ClipBERT retrieval or VLM model folder (second stage)")
    p.add_argument("--rerank-top", type=_count(1), default=50, help="first-stage hits the re-ranker scores")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_search)

    p = subparsers.add_parser("serve", help="serve an index over HTTP, with a search page",
                              description="A web page and a JSON API (/api/search, /api/stats, /api/health, "
                              "thumbnails, videos with range requests) on 127.0.0.1 unless --host says otherwise.")
    p.add_argument("index", help="an index folder (videolang index)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_count(1, 65535), default=8000, help="TCP port (1..65535)")
    p.add_argument("--token", default=os.environ.get("VIDEOLANG_SERVE_TOKEN"),
                   help="require this bearer token on every request (or ?token= in URLs); default "
                   "$VIDEOLANG_SERVE_TOKEN, which keeps it out of the process list")
    p.add_argument("--model", help="the index's model folder, if it moved (its identity is checked)")
    p.add_argument("--rerank", metavar="MODEL_DIR", help="re-score the best hits with a ClipBERT retrieval or "
                   "VLM model folder (second stage)")
    p.add_argument("--rerank-top", type=_count(1), default=50, help="first-stage hits the re-ranker scores")
    p.add_argument("--threads", type=_count(1), default=None,
                   help="intra-op threads of the model's query thread (default: half the cores, at most 4)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_serve)

    p = subparsers.add_parser("ask", help="answer a question about one indexed video with a QA model folder")
    p.add_argument("index", help="an index folder (videolang index)")
    p.add_argument("video", help="the video, as search prints it (relative to the indexed folder)")
    p.add_argument("question", nargs="+")
    p.add_argument("--model", required=True, help="a QA model folder (ClipBERT qa, or VLM multiple choice "
                                                  "with --choices)")
    p.add_argument("--choices", nargs="+", help="answer options (multiple-choice models)")
    p.add_argument("--start", type=float, default=None, help="ask about the moment from START seconds ...")
    p.add_argument("--end", type=float, default=None, help="... to END seconds (default: the whole video)")
    p.add_argument("--top-k", type=_count(1), default=3)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_ask)


