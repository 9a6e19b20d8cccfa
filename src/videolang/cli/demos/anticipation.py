"""``videolang demo anticipation``: LM-to-video distillation for action anticipation.

1. synthesize a world (or reuse ``OUT/world``), extract pooled-pixel features (8 x 8 grid,
   5 rows per second) with the feature-extraction pipeline and train a small WordPiece
   tokenizer on the world's action-sequence text (the teacher's vocabulary);
2. train the language-model teacher on the text of the past actions
   (``configs/anticipation/synthetic_teacher.yaml``); its export holds its predictions per clip;
3. train the video student without and with the KD term towards the teacher's train-split
   logits (``configs/anticipation/synthetic_student.yaml``), for ``--seeds`` seeds each;
4. test everything on the held-out test split and print mean +- std (over seeds) of top-5
   accuracy and class-mean top-5 recall, next to the teacher's numbers and the train-prior
   baseline (always ranking the most frequent training actions first); write
   ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import resources
from pathlib import Path

HELP = "action anticipation: LM teacher on action text, video student with vs without distillation"

CONFIGS = resources.files("videolang") / "configs" / "anticipation"  # shipped in the package
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


def _prepare(out: Path, num_videos: int, seed: int) -> tuple[Path, Path, Path]:
    from videolang.data.synth import load_manifest, synthesize_world
    from videolang.data.text import build_wordpiece_tokenizer
    from videolang.pipelines.features import run_extraction

    world, features, tokenizer = out / "world", out / "features", out / "tokenizer"
    if not (world / "manifest.json").is_file() or load_manifest(world)["args"]["num_videos"] != num_videos:
        synthesize_world(world, num_videos, seed=seed, overwrite=True, progress=False)
    report = run_extraction(str(world / "videos"), "pooled-pixels", str(features), dtype="float32",
                            backbone_options={"grid": 8, "rows_per_second": 5.0}, progress=False)
    if report.bad:
        raise RuntimeError(f"feature extraction failed for {len(report.bad)} videos: {report.bad[:3]}")
    if not (tokenizer / "tokenizer.json").is_file():
        build_wordpiece_tokenizer(world / "text" / "action_sequences.txt", tokenizer, vocab_size=200, overwrite=True)
    return world, features, tokenizer


def _fit_test(config: str, overrides: list[str]) -> tuple[Path, dict[str, float]]:
    from videolang.engine import fit, test

    path = CONFIGS / config
    fitted = fit(path, overrides)
    tested = test(path, overrides, resume=fitted.run_dir)
    metrics = tested.metrics.get("test", {})
    return fitted.run_dir, {m: float(metrics[f"test/{m}"]) for m in METRICS}


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
    return {m: [statistics.fmean(r[m] for r in rows), statistics.stdev([r[m] for r in rows]) if len(rows) > 1 else 0.0]
            for m in METRICS}


def run(args: argparse.Namespace) -> int:
    from videolang.errors import ConfigError

    if not CONFIGS.is_dir():
        raise ConfigError(f"demo configs not found: {CONFIGS} (videolang/configs is missing from this install)")
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world, features, tokenizer = _prepare(out, args.num_videos, args.world_seed)
    from videolang.data.text import load_tokenizer

    runs = out / "runs"
    common = [f"data.root={world}", f"run.root={runs}", "run.plots=false"]
    teacher_dir, teacher = _fit_test("synthetic_teacher.yaml", [
        *common, f"trainer.max_epochs={args.teacher_epochs}", f"data.tokenizer={tokenizer}",
        f"model.vocab_size={len(load_tokenizer(tokenizer))}"])
    predictions = teacher_dir / "export" / "predictions" / "train.safetensors"
    student = [*common, f"data.features={features}", f"data.teacher_predictions={predictions}",
               f"trainer.max_epochs={args.student_epochs}", f"model.kd_temperature={args.kd_temperature}"]
    results: dict[str, list[dict[str, float]]] = {"no_kd": [], "kd": []}
    for seed in range(args.seeds):
        for variant, weight in (("no_kd", 0.0), ("kd", args.kd_weight)):
            _, metrics = _fit_test("synthetic_student.yaml", [*student, f"seed={seed}", f"model.kd_weight={weight}"])
            results[variant].append(metrics)
    prior = _prior_baseline(world, 0.3, 0.5)
    summary = {
        "videos": args.num_videos, "seeds": args.seeds, "kd_weight": args.kd_weight,
        "kd_temperature": args.kd_temperature, "teacher": teacher, "prior": prior,
        "student_no_kd": {"runs": results["no_kd"], "mean_std": _mean_std(results["no_kd"])},
        "student_kd": {"runs": results["kd"], "mean_std": _mean_std(results["kd"])},
        "teacher_run": str(teacher_dir), "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nAction anticipation on the synthetic world ({args.num_videos} videos, test split), "
          f"{summary['seconds']:.0f} s")
    print(f"  {'model':<34} {'top-5':>14} {'class-mean top-5 recall':>24} {'top-1':>14}")

    def row(label: str, stats: dict[str, list[float]] | dict[str, float]) -> None:
        cells = [f"{v[0]:6.2f} +- {v[1]:4.2f}" if isinstance(v, list) else f"{v:6.2f}" for v in
                 (stats[m] for m in METRICS)]
        print(f"  {label:<34} {cells[0]:>14} {cells[1]:>24} {cells[2]:>14}")

    row("teacher (text of past actions)", teacher)
    row(f"video student, no KD ({args.seeds} seeds)", summary["student_no_kd"]["mean_std"])
    row(f"video student, KD w={args.kd_weight:g} T={args.kd_temperature:g}", summary["student_kd"]["mean_std"])
    row("train prior (most frequent first)", prior)
    print(f"  summary: {out / 'summary.json'}")
    return 0
