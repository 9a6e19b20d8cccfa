"""``videolang fit | validate | test | predict | export | config``: the engine's commands.

:func:`register` adds them to the ``videolang`` parser; Lightning is imported only when one runs.
``--config`` takes a YAML path or a packaged config's name; ``key.sub=value`` overrides (values
read as YAML) may stand anywhere on the line. Reference: docs/engine.md, "Commands".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
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
    p.add_argument("--config", "-c",
                   help="YAML config file, or a packaged config's name, e.g. videoclip/synthetic_pretrain "
                        "(`videolang config list` lists them)")
    p.add_argument("--seed", type=int, default=None, help="replaces the config's seed")
    p.add_argument("--resume", "--ckpt", dest="resume",
                   metavar="PATH|last|auto" if stage == "fit" else "PATH|last|best",
                   help=_RESUME_HELP["fit" if stage == "fit" else "eval"])
    p.add_argument("--name", help="run name (the folder under the run root); default: the config's")
    p.add_argument("--run-root", help="folder that holds the runs (default: the config's run.root, 'runs')")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (overrides applied) and exit")
    if stage == "predict":
        from videolang.cli.predict import add_arguments

        add_arguments(p)
    p.set_defaults(func=lambda args: run_stage(stage, args))
    return p


def register(subparsers: Any) -> None:
    """Add ``fit``, ``validate``, ``test``, ``predict``, ``config`` and ``export`` to a
    ``videolang`` subparsers object."""
    for stage in STAGES:
        _add_stage_parser(subparsers, stage)
    _add_config_parser(subparsers)
    _add_export_parser(subparsers)


def _add_export_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="write a checkpoint's model folder (what videolang.load opens)",
                              description="Build the recipe of --config, load the checkpoint's weights and "
                              "write its self-contained model folder (a run does this itself at the end of fit).")
    p.__class__ = _IntermixedParser
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", "-c", help="the run's YAML config or a packaged config's name "
                   "(default with a checkpoint path: its run folder's config.yaml)")
    p.add_argument("--ckpt", "--resume", dest="resume", required=True, metavar="PATH|last|best",
                   help="a .ckpt file, a run folder, or last / best of runs with the config's name")
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """``videolang export``: prints the folder written."""
    from videolang.engine.export import export_checkpoint

    out = export_checkpoint(args.config, args.resume, args.out, overrides=args.overrides, overwrite=args.overwrite)
    print(f"exported {args.resume} -> {out} (open it with videolang.load)")
    return 0


def _add_config_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("config", help="list and print the configs shipped in the package",
                              description="The configs shipped in the package (videolang/configs/"
                              "<method>/<task>.yaml; configs/ in a source checkout). Pass a name "
                              "to --config: videolang fit --config videoclip/synthetic_pretrain")
    csub = p.add_subparsers(dest="config_command", metavar="CONFIG_COMMAND")
    q = csub.add_parser("list", help="names of the packaged configs (<method>/<task>)")
    q.add_argument("method", nargs="?", help="only this method's configs (e.g. videoclip)")
    q.add_argument("--paths", action="store_true", help="print each config's file path too")
    q.set_defaults(func=run_config_list)
    q = csub.add_parser("show", help="print a packaged config (copy it to edit it), or a recipe's every key")
    q.add_argument("name", help="a packaged config (videoclip/synthetic_pretrain) or a recipe (videoclip.pretrain): "
                                "its every key with default and type")
    q.set_defaults(func=run_config_show)
    p.set_defaults(func=lambda args: run_config_list(argparse.Namespace(method=None, paths=False)))


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
    summary = {"run_dir": str(result.run_dir), **{k: metrics.get(k) for k in keys}}
    if metrics.get("skipped"):  # unreadable samples per split (listed in skipped.json)
        summary["skipped"] = metrics["skipped"]
    return summary


def run_stage(stage: str, args: argparse.Namespace) -> int:
    """Run one engine command from parsed arguments; prints a JSON summary. Returns 0."""
    from videolang import engine

    if stage == "predict":
        status = _predict(args)
        if status is not None:
            return status
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


def run_config_list(args: argparse.Namespace) -> int:
    """``videolang config list [METHOD] [--paths]``: one packaged config name per line."""
    from videolang.engine.config import list_configs, packaged_config
    from videolang.errors import ConfigError

    names = list_configs(args.method)
    if not names:
        methods = sorted({n.split("/", 1)[0] for n in list_configs()})
        raise ConfigError(f"no packaged configs for method {args.method!r} (methods: {', '.join(methods)})")
    _write("".join(f"{name}\t{packaged_config(name)}\n" if args.paths else f"{name}\n" for name in names))
    return 0


def run_config_show(args: argparse.Namespace) -> int:
    """``videolang config show NAME``: the packaged config's YAML (after a comment naming its file),
    or for a recipe name (``videoclip.pretrain``) every key of its schema with default and type."""
    from videolang.engine.config import describe_schema, packaged_config
    from videolang.engine.registry import get_recipe

    if "/" not in args.name and "." in args.name and not args.name.endswith((".yaml", ".yml")):
        recipe = get_recipe(args.name)
        _write(describe_schema(recipe.name, recipe.schema()))
        return 0
    path = packaged_config(args.name)
    _write(f"# {path}\n{path.read_text(encoding='utf-8')}")
    return 0


def _write(text: str) -> None:
    """Print ``text``; a reader that stops early (``videolang config list | head``) is no error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def _predict(args: argparse.Namespace) -> int | None:
    """``videolang predict`` with a model folder or inputs (a pipeline), or None for the engine's
    predict loop (recipes that define one). Positional arguments that name existing paths, or
    have no ``=``, are inputs; the others are config overrides."""
    from videolang.cli import predict
    from videolang.errors import ConfigError

    positional, args.overrides, args.inputs = list(args.overrides), [], []
    for item in positional:
        (args.inputs if Path(item).exists() or "=" not in item else args.overrides).append(item)
    if predict.wants_inference(args):
        predict.check_inputs(args)
        return predict.run_predict(args)
    if args.config is None and args.resume is None:
        raise ConfigError("predict needs --model DIR (a model folder) with videos or texts, or --config")
    if not args.print_config:
        from videolang.engine import load_run_config
        from videolang.engine.export import has_predict_loop

        cfg, _ = load_run_config(args.config, _overrides(args), args.seed, None)
        if not has_predict_loop(cfg.recipe):
            raise ConfigError(f"recipe {cfg.recipe} has no predict loop: give inputs (videos, --texts) to "
                              "predict with its exported model, e.g. videolang predict --config CFG "
                              "--ckpt best VIDEO_FOLDER --texts 'a red circle moves left'")
    return None
