"""``videolang predict``: a model folder (or a run's checkpoint) on files, folders and list files.

    videolang predict --model DIR VIDEO_OR_FOLDER_OR_LIST ... [--texts T ...] [--mode MODE]
    videolang predict --config CFG [--ckpt PATH|last|best] VIDEOS ... --texts ...

Writes JSONL to stdout or ``--out``; the mode defaults to what the folder's task does
(:data:`DEFAULT_MODE`). Modes, inputs, output and exit status: docs/inference.md.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from videolang.errors import ConfigError, VideolangError

log = logging.getLogger(__name__)

__all__ = ["MODES", "expand_inputs", "run_predict"]

MODES = ("v2t", "t2v", "choose", "classify", "answer", "caption", "segment", "anticipate", "embed")
LIST_SUFFIXES = (".txt", ".lst", ".list")
# What a failed input may raise: a bad or missing file, a video without frames, bad values.
ITEM_ERRORS = (VideolangError, OSError, ValueError)


# --------------------------------------------------------------------------------------------
# inputs


def _read_list_file(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line).expanduser()
            out.append(str(entry if entry.is_absolute() else path.parent / entry))
    return out


def expand_inputs(items: list[str]) -> list[str]:
    """Video paths from files, folders (recursive, sorted) and list files, in the given order.

    Paths that do not exist are kept: they fail later as unreadable inputs, reported and skipped.
    """
    from videolang.pipelines.features import scan_video_folder

    out: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = [str(p) for _, p in scan_video_folder(path)]
            if not found:
                log.warning("%s: no video files in this folder", path)
            out.extend(found)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            out.extend(_read_list_file(path))
        else:
            out.append(item)
    return out


def _read_texts(args: Any) -> list[str]:
    texts = list(args.texts or [])
    if args.texts_file:
        path = Path(args.texts_file)
        if not path.is_file():
            raise ConfigError(f"--texts-file {path}: no such file")
        texts += [t.strip() for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    return texts


# --------------------------------------------------------------------------------------------
# modes


DEFAULT_MODE = {
    ("videoclip", "retrieval"): "v2t",
    ("vlm", "retrieval"): "v2t", ("vlm", "mcqa"): "choose", ("vlm", "captioning"): "caption",
    ("vlm", "segmentation"): "segment",
    ("clipbert", "retrieval"): "v2t", ("clipbert", "pretrain"): "v2t", ("clipbert", "qa"): "answer",
    ("clipbert", "vqa"): "answer", ("clipbert", "mc"): "choose",
    ("vimpac", "classification"): "classify", ("vimpac", "features"): "embed",
    ("anticipation", "anticipation"): "anticipate",
    ("vidlankd", "classification"): "classify", ("vidlankd", "text-encoder"): "embed",
    ("vidlankd", "teacher"): "v2t",
}


def default_mode(pipe: Any) -> str:
    """The mode a model folder's task implies (the modes: docs/inference.md, ``videolang predict``)."""
    key = (pipe.spec.family, pipe.spec.task)
    if key not in DEFAULT_MODE:
        raise ConfigError(f"`videolang predict` has no mode for a {key[0]} {key[1]} model folder; "
                          "use it from Python (videolang.load)")
    return DEFAULT_MODE[key]


@dataclass
class Outcome:
    """Records to print, and the inputs that failed with their reasons."""

    records: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    done: int = 0


def _each_video(videos: list[str], fn: Callable[[str], Any], outcome: Outcome) -> Iterator[tuple[str, Any]]:
    """``(video, fn(video))`` for the videos that work; failures are recorded and skipped."""
    for video in videos:
        try:
            result = fn(video)
        except ITEM_ERRORS as exc:
            reason = str(exc)
            log.warning("skipping %s: %s", video, reason)
            outcome.failed.append((video, reason))
            outcome.records.append({"video": video, "error": reason})
            continue
        outcome.done += 1
        yield video, result


def _top(scores: torch.Tensor, k: int) -> list[tuple[int, float]]:
    k = max(1, min(k, scores.shape[0]))
    values, indices = scores.float().topk(k)
    return [(int(j), round(float(v), 6)) for v, j in zip(values, indices, strict=True)]


def _predictions(preds: Any) -> list[dict[str, Any]]:
    return [{"label": p.label, "score": round(float(p.score), 6)} for p in preds]


def _needs(what: str, values: list, mode: str) -> None:
    if not values:
        raise ConfigError(f"predict --mode {mode} needs {what}")


def predict_records(pipe: Any, mode: str, videos: list[str], texts: list[str], questions: list[str],
                    top_k: int, outcome: Outcome) -> None:
    """Run ``mode`` and append its records to ``outcome``."""
    if mode in ("v2t", "t2v"):
        _needs("--texts (or --texts-file)", texts, mode)
        _needs("videos", videos, mode)
        if hasattr(pipe, "encode_text"):  # two towers: embed each side once
            text_emb = pipe.encode_text(texts)
            done = list(_each_video(videos, lambda v: pipe.encode_video(v), outcome))
            if not done:
                return
            sim = pipe.similarity(torch.cat([e for _, e in done]), text_emb)  # (videos, texts)
        else:  # a cross-encoder (ClipBERT): every (video, text) pair through the model
            done = list(_each_video(videos, lambda v: pipe.score(v, texts), outcome))
            if not done:
                return
            sim = torch.cat([s for _, s in done])
        if mode == "v2t":
            for (video, _), row in zip(done, sim, strict=True):
                outcome.records.append({"video": video, "matches": [
                    {"text": texts[j], "score": s} for j, s in _top(row, top_k)]})
        else:
            for t, col in enumerate(sim.t()):
                outcome.records.append({"text": texts[t], "matches": [
                    {"video": done[j][0], "score": s} for j, s in _top(col, top_k)]})
    elif mode == "choose":
        _needs("--texts (the answer options)", texts, mode)
        _needs("videos", videos, mode)
        _choose(pipe, videos, texts, questions, outcome)
    elif mode in ("classify", "embed") and pipe.spec.family == "vidlankd":  # text models
        _needs("--texts (or --texts-file)", texts, mode)
        if mode == "classify":
            for text, preds in zip(texts, pipe.classify(texts, top_k=top_k), strict=True):
                outcome.records.append({"text": text, "predictions": _predictions(preds)})
        else:
            for text, emb in zip(texts, pipe.encode_text(texts), strict=True):
                outcome.records.append({"text": text, "embedding": [round(float(x), 6) for x in emb]})
        outcome.done += len(texts)
    elif mode in ("classify", "anticipate"):
        _needs("videos", videos, mode)
        method = getattr(pipe, mode, None)
        if method is None:
            raise ConfigError(f"a {pipe.spec.family} {pipe.spec.task} model cannot {mode}")
        for video, preds in _each_video(videos, lambda v: method(v, top_k=top_k)[0], outcome):
            outcome.records.append({"video": video, "predictions": _predictions(preds)})
    elif mode == "answer":
        _needs("--questions", questions, mode)
        _needs("videos", videos, mode)
        for video, answers in _each_video(
                videos, lambda v: pipe.answer([v] * len(questions), questions, top_k=top_k), outcome):
            for question, preds in zip(questions, answers, strict=True):
                outcome.records.append({"video": video, "question": question, "answers": _predictions(preds)})
    elif mode == "embed":
        _needs("videos", videos, mode)
        if not hasattr(pipe, "encode_video"):
            raise ConfigError(f"a {pipe.spec.family} {pipe.spec.task} model has no video embedding")
        for video, emb in _each_video(videos, lambda v: pipe.encode_video(v)[0], outcome):
            outcome.records.append({"video": video, "embedding": [round(float(x), 6) for x in emb]})
    elif mode == "segment":
        _needs("videos", videos, mode)
        for video, seg in _each_video(videos, lambda v: pipe.segment(v), outcome):
            outcome.records.append({"video": video, "segments": [
                {"label": label, "start": round(a, 3), "end": round(b, 3)} for a, b, label in seg.segments()]})
    elif mode == "caption":
        _needs("videos", videos, mode)
        for video, caption in _each_video(videos, lambda v: pipe.caption(v)[0], outcome):
            outcome.records.append({"video": video, "caption": caption})
    else:
        raise ConfigError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


def _choose(pipe: Any, videos: list[str], options: list[str], questions: list[str], outcome: Outcome) -> None:
    """Multiple choice: each video (and question) against the options, every option's score."""
    question = questions[0] if questions else None
    if len(questions) > 1:
        raise ConfigError("predict --mode choose takes at most one --questions question (the options are --texts)")
    if hasattr(pipe, "answer_choices"):  # ClipBERT: a cross-encoder over (question + option, video)
        def pick(v: str) -> list[tuple[str, float]]:
            return [(p.label, p.score) for p in pipe.answer_choices(v, question, options)[0]]
    else:  # VLM: the folder's own scoring of the options
        if question is not None:
            raise ConfigError("predict --mode choose: this model scores the options without a question")

        def pick(v: str) -> list[tuple[str, float]]:
            scores = pipe.answer(v, [options])[0].scores
            return [(options[j], float(scores[j])) for j in scores.argsort(descending=True).tolist()]
    for video, ranked in _each_video(videos, pick, outcome):
        record: dict[str, Any] = {"video": video}
        if question is not None:
            record["question"] = question
        record["answer"] = ranked[0][0]
        record["options"] = [{"text": t, "score": round(float(sc), 6)} for t, sc in ranked]
        outcome.records.append(record)


# --------------------------------------------------------------------------------------------
# the command


def _model_folder(args: Any) -> Path:
    """``--model``, or the checkpoint of ``--config`` exported next to its run."""
    if args.model:
        return Path(args.model)
    from videolang.engine import load_run_config
    from videolang.engine.export import export_checkpoint
    from videolang.engine.run import prepare_run_dir

    cfg, ckpt = load_run_config(args.config, args.overrides, args.seed, args.resume or "best")
    if ckpt is None:
        raise ConfigError("predict --config: no checkpoint found (pass --ckpt PATH, last or best)")
    run_dir = prepare_run_dir(cfg)
    out = export_checkpoint(args.config, ckpt, run_dir / "export", overrides=args.overrides)
    if args.out is None:
        args.out = str(run_dir / "predictions.jsonl")
    log.info("exported %s to %s", ckpt, out)
    return out


def run_predict(args: Any) -> int:
    """``videolang predict`` on its inputs (docs/inference.md); returns the exit status."""
    import videolang
    from videolang.utils.io import atomic_write_text

    pipe = videolang.load(_model_folder(args), device=args.device)
    mode = args.mode or default_mode(pipe)
    videos = expand_inputs([*args.inputs, *args.videos])
    texts = _read_texts(args)
    outcome = Outcome()
    predict_records(pipe, mode, videos, texts, list(args.questions or []), args.top_k, outcome)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in outcome.records)
    if args.out:
        atomic_write_text(args.out, lines, overwrite=True)
    else:
        sys.stdout.write(lines)
    total = outcome.done + len(outcome.failed)
    print(f"predict ({mode}): {total} inputs, {outcome.done} done, {len(outcome.failed)} failed"
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    for video, reason in outcome.failed:
        print(f"  failed: {video}: {reason}", file=sys.stderr)
    return 1 if outcome.failed else 0


def add_arguments(p: Any) -> None:
    """The inference options of ``videolang predict``."""
    g = p.add_argument_group("inference with a model folder (--model) or a run's checkpoint (--config --ckpt)")
    g.add_argument("--model", help="a model folder (a run's export/, or `videolang convert` output)")
    g.add_argument("--videos", nargs="+", default=[], help="video files, folders or list files (also positional)")
    g.add_argument("--texts", nargs="+", default=[], help="sentences (retrieval, multiple choice, text classifiers)")
    g.add_argument("--texts-file", help="a file of sentences, one per line")
    g.add_argument("--questions", nargs="+", default=[], help="questions to answer about each video (QA models)")
    g.add_argument("--mode", choices=MODES, help="default: what the model's task does")
    g.add_argument("--top-k", type=int, default=5, help="best matches / labels per input (default 5)")
    g.add_argument("--out", help="write the JSONL here (atomically) instead of stdout")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")


def wants_inference(args: Any) -> bool:
    """Whether ``videolang predict`` was given a model folder or inputs (else: the engine's loop)."""
    return bool(args.model or args.inputs or args.videos or args.texts or args.texts_file)


def check_inputs(args: Any) -> None:
    if args.model and args.config:
        raise ConfigError("predict: give --model (a model folder) or --config (a run's config), not both")
    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: must be >= 1")
    if args.out and os.path.isdir(args.out):
        raise ConfigError(f"--out {args.out} is a folder; give a file name (.jsonl)")
