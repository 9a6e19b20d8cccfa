"""``videolang fit | validate | test | predict``: the engine's commands.

    videolang fit --config configs/<method>/<task>.yaml [key.sub=value ...] [--seed N]
                  [--resume PATH|last] [--name NAME] [--run-root DIR]

Overrides are ``key.sub=value`` pairs (the value is YAML: ``optim.lr=1e-4``,
``trainer.devices=[0,1]``, ``trainer.monitor=null``) and may stand before, between or after the
options. :func:`register` adds the four commands to the ``videolang`` parser; Lightning is
imported only when one of them runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["STAGES", "register", "run_stage"]

STAGES = {
    "fit": "train a recipe (writes a run folder: config, logs, metrics, plots, checkpoints, export)",
    "validate": "run the validation loop once with a checkpoint's weights",
    "test": "run the test loop with a checkpoint's weights",
    "predict": "run predict_step over the predict data and save predictions.pt",
}

_RESUME_HELP = {
    "fit": "continue exactly from a checkpoint: a .ckpt file, a run folder, 'last' (the newest "
           "last.ckpt of runs with this name) or 'auto' ('last' if there is one, else start fresh); "
           "without --config, the config of the checkpoint's run folder is used",
    "eval": "the weights to use: a .ckpt file, a run folder (its last.ckpt), 'last' or 'best' "
            "(of the newest run with this name)",
}


class _IntermixedParser(argparse.ArgumentParser):
    """Lets ``key=value`` overrides and options come in any order (argparse's intermixed mode)."""

    _parsing_intermixed = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._parsing_intermixed:
            return super().parse_known_args(args, namespace)
        self._parsing_intermixed = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing_intermixed = False


def _add_stage_parser(subparsers: Any, stage: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(stage, help=STAGES[stage], description=STAGES[stage] + ".")
    p.__class__ = _IntermixedParser  # same object, intermixed parsing (see the class)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. optim.lr=1e-4 trainer.max_epochs=3 model.name=videoclip-tiny")
    p.add_argument("--config", "-c", help="YAML config file, e.g. configs/videoclip/pretrain.yaml")
    p.add_argument("--seed", type=int, default=None, help="replaces the config's seed")
    p.add_argument("--resume", "--ckpt", dest="resume",
                   metavar="PATH|last|auto" if stage == "fit" else "PATH|last|best",
                   help=_RESUME_HELP["fit" if stage == "fit" else "eval"])
    p.add_argument("--name", help="run name (the folder under the run root); default: the config's")
    p.add_argument("--run-root", help="folder that holds the runs (default: the config's run.root, 'runs')")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (overrides applied) and exit")
    if stage == "predict":
        g = p.add_argument_group("inference with a saved model (instead of --config)")
        g.add_argument("--model", help="a saved model folder (a run's export/), see videolang.load")
        g.add_argument("--videos", nargs="+", default=[], help="video files to encode and score")
        g.add_argument("--texts", nargs="+", default=[], help="sentences to encode and score")
        g.add_argument("--top-k", type=int, default=5, help="best matches printed per video")
    p.set_defaults(func=lambda args: run_stage(stage, args))
    return p


def run_inference(args: argparse.Namespace) -> int:
    """``videolang predict --model DIR --videos ... --texts ...``: score every video against
    every sentence with :func:`videolang.load` and print the best matches as JSON."""
    import videolang
    from videolang.errors import ConfigError

    if not args.videos or not args.texts:
        raise ConfigError("predict --model needs --videos and --texts")
    pipe = videolang.load(args.model)
    scores = pipe.score(args.videos, args.texts)
    k = min(args.top_k, len(args.texts))
    out = []
    for video, row in zip(args.videos, scores, strict=True):
        top = row.topk(k)
        out.append({"video": video, "matches": [
            {"text": args.texts[j], "score": round(float(v), 4)} for v, j in zip(top.values, top.indices, strict=True)
        ]})
    print(json.dumps(out, indent=2))
    return 0


def register(subparsers: Any) -> None:
    """Add ``fit``, ``validate``, ``test`` and ``predict`` to a ``videolang`` subparsers object."""
    for stage in STAGES:
        _add_stage_parser(subparsers, stage)


def _overrides(args: argparse.Namespace) -> list[str]:
    """The positional overrides, then ``--name`` / ``--run-root`` as overrides (JSON-quoted)."""
    overrides = list(args.overrides)
    if args.name:
        overrides.append(f"name={json.dumps(args.name)}")
    if args.run_root:
        overrides.append(f"run.root={json.dumps(args.run_root)}")
    return overrides


def _summary(stage: str, result: Any) -> dict[str, Any]:
    metrics = result.metrics
    keys = {"fit": ("best", "final", "checkpoints", "export"), "validate": ("validate",),
            "test": ("test",), "predict": ("num_batches",)}[stage]
    return {"run_dir": str(result.run_dir), **{k: metrics.get(k) for k in keys}}


def run_stage(stage: str, args: argparse.Namespace) -> int:
    """Run one engine command from parsed arguments; prints a JSON summary. Returns 0."""
    from videolang import engine

    if stage == "predict" and getattr(args, "model", None):
        return run_inference(args)
    overrides = _overrides(args)
    if args.print_config:
        cfg, _ = engine.load_run_config(args.config, overrides, args.seed, args.resume)
        sys.stdout.write(engine.dump_config(cfg))
        return 0
    entry = getattr(engine, stage)
    result = entry(args.config, overrides, seed=args.seed, resume=args.resume)
    if result.metrics:  # only global rank 0 has them
        print(json.dumps(_summary(stage, result), indent=2))
    return 0
