"""``videolang demo anticipation``: LM-to-video distillation for action anticipation.

1. synthesize a world (or reuse ``OUT/world``), extract pooled-pixel features (8 x 8 grid,
   5 rows per second) with the feature-extraction pipeline and train a small WordPiece
   tokenizer on the world's action-sequence text (the teacher's vocabulary);
2. train the language-model teacher on the text of the past actions
   (``configs/anticipation/synthetic_teacher.yaml``); its export holds its predictions per clip;
3. train the video student without and with the KD term towards the teacher's train-split
   logits (``configs/anticipation/synthetic_student.yaml``), for ``--seeds`` seeds each;
4. test each run's best validation checkpoint on the held-out test split; print mean +- std
   (over seeds) of top-5 accuracy and class-mean top-5 recall, next to the teacher's numbers
   and the train-prior baseline (always ranking the most frequent training actions first);
   write ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from videolang.cli.demos.steps import (
    Trained,
    build_tokenizer,
    demo_config,
    extract_features,
    fit_then_test,
    mean_std,
    synthesize_or_reuse,
    write_summary,
)
from videolang.errors import ConfigError

HELP = "action anticipation: LM teacher on action text, video student with vs without distillation"

METRICS = ("top5", "mean_top5_recall", "top1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo_anticipation")
    p.add_argument("--num-videos", type=int, default=1000)
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=3, help="student seeds per variant")
    p.add_argument("--kd-weight", type=float, default=1.0)
    p.add_argument("--kd-temperature", type=float, default=2.0)
    p.add_argument("--teacher-epochs", type=int, default=8)
    p.add_argument("--student-epochs", type=int, default=15)


def _test_metrics(run: Trained) -> dict[str, float]:
    return {m: float(run.test[f"test/{m}"]) for m in METRICS}


def _prior_baseline(world: Path, gap: float, min_observed: float) -> dict[str, float]:
    """Rank actions by their training frequency for every test query."""
    import torch

    from videolang.data.anticipation import build_queries, read_segments
    from videolang.metrics.anticipation import anticipation_metrics

    def queries(split: str):
        return build_queries(read_segments("synthetic", world, split), anticipation_gap=gap, min_observed=min_observed)

    counts = torch.bincount(torch.tensor([q.action for q in queries("train")]), minlength=52).double()
    targets = torch.tensor([q.action for q in queries("test")])
    logits = counts[None].expand(len(targets), -1)
    m = anticipation_metrics(logits, targets)
    return {k: float(m[k]) for k in METRICS}


def _mean_std(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    return {m: list(mean_std([r[m] for r in rows])) for m in METRICS}


def run(args: argparse.Namespace) -> int:
    from videolang.data.text import load_tokenizer

    teacher_config, student_config = (demo_config("anticipation", f"synthetic_{m}.yaml") for m in ("teacher", "student"))
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    start = time.perf_counter()
    out = Path(args.out)
    world = synthesize_or_reuse(out / "world", args.num_videos, args.world_seed)
    features = out / "features"
    extract_features(world, features, "pooled-pixels", {"grid": 8, "rows_per_second": 5.0})
    tokenizer = build_tokenizer(world, out / "tokenizer", world.path / "text" / "action_sequences.txt", vocab_size=200)
    common = [f"data.root={world.path}", f"run.root={out / 'runs'}", "run.plots=false"]
    teacher_run = fit_then_test(teacher_config, [
        *common, f"trainer.max_epochs={args.teacher_epochs}", f"data.tokenizer={tokenizer}",
        f"model.vocab_size={len(load_tokenizer(tokenizer))}"])
    teacher = _test_metrics(teacher_run)
    predictions = teacher_run.export / "predictions" / "train.safetensors"
    student = [*common, f"data.features={features}", f"data.teacher_predictions={predictions}",
               f"trainer.max_epochs={args.student_epochs}", f"model.kd_temperature={args.kd_temperature}"]
    results: dict[str, list[dict[str, float]]] = {"no_kd": [], "kd": []}
    for seed in range(args.seeds):
        for variant, weight in (("no_kd", 0.0), ("kd", args.kd_weight)):
            run = fit_then_test(student_config, [*student, f"seed={seed}", f"model.kd_weight={weight}"])
            results[variant].append(_test_metrics(run))
    prior = _prior_baseline(world.path, 0.3, 0.5)
    summary = {
        "videos": args.num_videos, "seeds": args.seeds, "kd_weight": args.kd_weight,
        "kd_temperature": args.kd_temperature, "teacher": teacher, "prior": prior,
        "student_no_kd": {"runs": results["no_kd"], "mean_std": _mean_std(results["no_kd"])},
        "student_kd": {"runs": results["kd"], "mean_std": _mean_std(results["kd"])},
        "teacher_run": str(teacher_run.run_dir), "seconds": round(time.perf_counter() - start, 1),
    }
    write_summary(out, summary)
    _print_table(summary, args, out)
    return 0


def _print_table(summary: dict, args: argparse.Namespace, out: Path) -> None:
    print(f"\nAction anticipation on the synthetic world ({args.num_videos} videos, test split), "
          f"{summary['seconds']:.0f} s")
    print(f"  {'model':<34} {'top-5':>14} {'class-mean top-5 recall':>24} {'top-1':>14}")

    def row(label: str, stats: dict[str, list[float]] | dict[str, float]) -> None:
        cells = [f"{v[0]:6.2f} +- {v[1]:4.2f}" if isinstance(v, list) else f"{v:6.2f}" for v in
                 (stats[m] for m in METRICS)]
        print(f"  {label:<34} {cells[0]:>14} {cells[1]:>24} {cells[2]:>14}")

    row("teacher (text of past actions)", summary["teacher"])
    row(f"video student, no KD ({args.seeds} seeds)", summary["student_no_kd"]["mean_std"])
    row(f"video student, KD w={args.kd_weight:g} T={args.kd_temperature:g}", summary["student_kd"]["mean_std"])
    row("train prior (most frequent first)", summary["prior"])
    print(f"  summary: {out / 'summary.json'}")
