"""``videolang glue``: fine-tune and evaluate a BERT on GLUE-format tasks over several seeds.

    videolang glue --model runs/student/export --glue-dir data/glue --tasks SST-2 QNLI --seeds 1 2 3

Each task and seed is one ``vidlankd.glue`` run (``videolang fit``, a folder under ``--runs``); the
table gives per task and metric the median, mean and standard deviation of the final dev-set value
over the seeds, and every seed's value (GLUE fine-tuning of small models is seed-sensitive).
``--out`` writes it as JSON. A synthetic world's tasks are in ``<world>/formats/glue``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["register", "run_glue", "summarize"]

DEFAULTS = {"lr": 5e-5, "epochs": 3, "batch_size": 32, "max_seq_length": 128}


def _tasks_in(glue_dir: Path) -> list[str]:
    from videolang.data.glue import GLUE_TASKS

    return [t for t in GLUE_TASKS if (glue_dir / t).is_dir()]


def run_glue(model: str, glue_dir: str | Path, tasks: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2),
             *, lr: float = DEFAULTS["lr"], epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"],
             max_seq_length: int = DEFAULTS["max_seq_length"], runs: str | Path = "runs/glue", name: str = "glue",
             overrides: Sequence[str] = (), progress: bool = False, export: bool = False) -> dict[str, Any]:
    """Fine-tune ``model`` on each task for each seed; returns
    ``{task: {"seeds": [...], "metrics": {metric: [per seed]}, "runs": [...]}}``."""
    from videolang.data.glue import get_task
    from videolang.engine import fit
    from videolang.errors import ConfigError

    glue_dir = Path(glue_dir)
    tasks = list(tasks) if tasks else _tasks_in(glue_dir)
    if not tasks:
        raise ConfigError(f"{glue_dir}: no GLUE task folders (CoLA, SST-2, ..., RTE) found; give --tasks")
    results: dict[str, Any] = {}
    for task_name in tasks:
        task = get_task(task_name)
        entry: dict[str, Any] = {"seeds": list(seeds), "metrics": {}, "runs": []}
        for seed in seeds:
            cfg = {
                "recipe": "vidlankd.glue", "name": f"{name}_{task.name}", "seed": int(seed),
                "model": {"init": str(model)},
                "data": {"task_dir": str(glue_dir), "task": task.name, "max_seq_length": max_seq_length,
                         "batch_size": batch_size},
                "optim": {"lr": lr, "weight_decay": 0.0, "eps": 1e-6, "warmup_ratio": 0.1},
                "trainer": {"max_epochs": epochs, "gradient_clip_val": 1.0, "num_sanity_val_steps": 0,
                            "enable_progress_bar": progress, "log_every_n_steps": 50},
                "run": {"root": str(runs), "export": export, "plots": False},
            }
            res = fit(cfg, list(overrides))
            final = res.metrics.get("final", {})
            for metric in (*task.metrics, *(("score",) if len(task.metrics) > 1 else ())):
                key = f"val/{metric}"
                if key in final:
                    entry["metrics"].setdefault(metric, []).append(float(final[key]))
            entry["runs"].append(str(res.run_dir))
        results[task.name] = entry
    return results


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, metric): median, mean, std (population over seeds) and the values."""
    rows = []
    for task, entry in results.items():
        for metric, values in entry["metrics"].items():
            rows.append({"task": task, "metric": metric, "median": statistics.median(values),
                         "mean": statistics.fmean(values),
                         "std": statistics.pstdev(values) if len(values) > 1 else 0.0, "values": values})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'task':<8} {'metric':<9} {'median':>7} {'mean':>7} {'std':>6}  per seed"]
    for r in rows:
        values = " ".join(f"{v:.1f}" for v in r["values"])
        lines.append(f"{r['task']:<8} {r['metric']:<9} {r['median']:7.2f} {r['mean']:7.2f} {r['std']:6.2f}  {values}")
    return "\n".join(lines)


def _cmd_glue(args: argparse.Namespace) -> int:
    from videolang.utils.io import atomic_write_text

    results = run_glue(args.model, args.glue_dir, args.tasks, args.seeds, lr=args.lr, epochs=args.epochs,
                       batch_size=args.batch_size, max_seq_length=args.max_seq_length, runs=args.runs,
                       overrides=args.override, progress=args.progress, export=args.export)
    rows = summarize(results)
    print(format_table(rows))
    if args.out:
        atomic_write_text(args.out, json.dumps({"model": args.model, "results": results, "summary": rows},
                                               indent=2), overwrite=True)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("glue", help="fine-tune and evaluate a BERT on GLUE-format tasks over several seeds",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="student/teacher export folder, local HF BERT folder, or minilm")
    p.add_argument("--glue-dir", required=True, help="folder holding the task folders (SST-2/, RTE/, ...)")
    p.add_argument("--tasks", nargs="+", default=None, help="default: every task folder present")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--max-seq-length", type=int, default=DEFAULTS["max_seq_length"])
    p.add_argument("--runs", default="runs/glue", help="root of the run folders")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra config overrides for every run (data.skip_malformed=true ...)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--export", action="store_true",
                   help="export each fine-tuned classifier (<run>/export, opened by videolang.load)")
    p.set_defaults(func=_cmd_glue)
