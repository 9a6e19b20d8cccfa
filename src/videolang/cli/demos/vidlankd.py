"""``videolang demo vidlankd``: VidLanKD on the synthetic world, distilled vs MLM-only, 3 seeds.

1. synthesize a world (or reuse ``OUT/world``), extract pooled-pixel features (grid 8, 192-d,
   2 rows per second), train a WordPiece tokenizer on the world's text, split the world's text
   corpus 90/10 into train/validation files;
2. per seed: train the video-language teacher (``configs/vidlankd/synthetic_teacher.yaml``:
   MLM + token-to-video hinge, video tower trained) and record its text-to-video retrieval R@1
   on the validation videos (against chance); train two text-only students on the corpus
   (``configs/vidlankd/synthetic_student.yaml``): MLM + NST + token NT-Xent distillation from
   that teacher, and
   the MLM-only baseline, same seed and masks; fine-tune both on the world's GLUE-format tasks
   (SST-2 layout: is an action sequence possible under the world's grammar; RTE layout: does a
   claim follow from a described sequence) and record dev accuracy;
3. print mean +- standard deviation over the seeds, the per-seed differences (distilled minus
   baseline), and write everything to ``OUT/summary.json``.

Measured: 7.6 minutes wall (3 CPU-minutes) on a busy 2-core machine with the defaults;
``--epochs-scale 0.3`` runs the mechanics in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from videolang.cli.demos.steps import (
    build_tokenizer,
    demo_config,
    extract_features,
    mean_std,
    scaled_epochs,
    synthesize_or_reuse,
    world_texts,
    write_summary,
)

HELP = "VidLanKD on the synthetic world: teacher, distilled vs MLM-only students, GLUE-style tasks"

EPOCHS = {"teacher": 40, "student": 6, "glue": 4}
GLUE_TASKS = ("SST-2", "RTE")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo_vidlankd")
    p.add_argument("--num-videos", type=int, default=300)
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--kd", nargs="+", default=["nst", "contrastive"], choices=["nst", "contrastive"],
                   help="distillation terms of the distilled student")
    p.add_argument("--epochs-scale", type=float, default=1.0,
                   help=f"multiply every stage's epochs ({EPOCHS}) by this")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (more threads thrash on a loaded 2-core machine)")


def _prepare(out: Path, num_videos: int, seed: int) -> dict[str, Path]:
    """World, pooled-pixel features, WordPiece tokenizer and the corpus split 90/10."""
    from videolang.utils.io import atomic_write_text

    world = synthesize_or_reuse(out / "world", num_videos, seed)
    paths = {"world": world.path, "features": out / "features_pixels", "tokenizer": out / "tokenizer",
             "corpus_train": out / "corpus" / "train.txt", "corpus_val": out / "corpus" / "val.txt"}
    extract_features(world, paths["features"], "pooled-pixels", {"grid": 8, "rows_per_second": 2.0})
    captions, corpus = world_texts(world)
    corpus = [line for line in corpus if line.strip()]
    build_tokenizer(world, paths["tokenizer"], captions + corpus + [" . "], vocab_size=1000)
    cut = int(len(corpus) * 0.9)
    atomic_write_text(paths["corpus_train"], "\n".join(corpus[:cut]) + "\n", overwrite=True)
    atomic_write_text(paths["corpus_val"], "\n".join(corpus[cut:]) + "\n", overwrite=True)
    return paths


def _common(out: Path, seed: int) -> list[str]:
    return [f"seed={seed}", f"run.root={out / 'runs'}", "trainer.enable_progress_bar=false", "run.plots=false"]


def _teacher(paths: dict[str, Path], out: Path, seed: int, scale: float) -> tuple[Path, dict]:
    from videolang.engine import fit

    h = paths["world"] / "formats" / "howto100m"
    res = fit(demo_config("vidlankd", "synthetic_teacher.yaml"), [
        *_common(out, seed), f"name=teacher_s{seed}", f"data.features={paths['features']}",
        f"data.captions={h / 'raw_caption.json'}", f"data.train_list={h / 'train.lst'}",
        f"data.val_list={h / 'val.lst'}", f"data.tokenizer={paths['tokenizer']}",
        f"trainer.max_epochs={scaled_epochs(EPOCHS['teacher'], scale)}",
        f"trainer.check_val_every_n_epoch={scaled_epochs(EPOCHS['teacher'], scale)}",
    ])
    return res.run_dir / "export", res.metrics.get("final", {})


def _student(paths: dict[str, Path], out: Path, seed: int, scale: float, teacher: Path | None,
             kd: list[str]) -> tuple[Path, dict]:
    from videolang.engine import fit

    tag = "kd" if teacher else "mlm"
    res = fit(demo_config("vidlankd", "synthetic_student.yaml"), [
        *_common(out, seed), f"name=student_{tag}_s{seed}",
        f"model.teacher={teacher if teacher else 'null'}", f"model.kd={json.dumps(kd)}",
        f"data.train_files=[{paths['corpus_train']}]", f"data.val_files=[{paths['corpus_val']}]",
        f"data.tokenizer={paths['tokenizer']}", f"trainer.max_epochs={scaled_epochs(EPOCHS['student'], scale)}",
    ])
    return res.run_dir / "export", res.metrics.get("final", {})


def _glue(model: Path, paths: dict[str, Path], out: Path, seed: int, scale: float, tag: str) -> dict[str, float]:
    from videolang.cli.glue import run_glue

    res = run_glue(str(model), paths["world"] / "formats" / "glue", GLUE_TASKS, [seed], lr=5e-4,
                   epochs=scaled_epochs(EPOCHS["glue"], scale), batch_size=32, max_seq_length=64, runs=out / "runs",
                   name=f"glue_{tag}_s{seed}",
                   overrides=[f"data.tokenizer={paths['tokenizer']}"])
    return {task: entry["metrics"]["accuracy"][0] for task, entry in res.items()}


def _stats(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:6.2f}"
    mean, std = mean_std(values)
    return f"{mean:6.2f} +- {std:5.2f}"


def _majority_rate(glue_dir: Path, task: str) -> float:
    """Dev accuracy of always predicting the most frequent training label (percent)."""
    from collections import Counter

    from videolang.data.glue import read_glue

    train = Counter(e.label for e in read_glue(glue_dir / task, task, "train").examples)
    dev = [e.label for e in read_glue(glue_dir / task, task, "dev").examples]
    top = train.most_common(1)[0][0]
    return 100.0 * sum(label == top for label in dev) / len(dev)


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    start = time.perf_counter()
    paths = _prepare(out, args.num_videos, args.world_seed)
    print(f"prepared world ({args.num_videos} videos), features and tokenizer in {time.perf_counter() - start:.0f} s")
    per_seed: list[dict[str, Any]] = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        teacher, tm = _teacher(paths, out, seed, args.epochs_scale)
        kd_model, kd_m = _student(paths, out, seed, args.epochs_scale, teacher, list(args.kd))
        mlm_model, mlm_m = _student(paths, out, seed, args.epochs_scale, None, list(args.kd))
        row = {
            "seed": seed,
            "teacher_R1": float(tm.get("val/R1", float("nan"))), "chance_R1": float(tm.get("val/chance_R1", float("nan"))),
            "teacher_val_mlm": float(tm.get("val/mlm", float("nan"))),
            "kd_val_perplexity": float(kd_m.get("val/perplexity", float("nan"))),
            "mlm_val_perplexity": float(mlm_m.get("val/perplexity", float("nan"))),
            "kd_glue": _glue(kd_model, paths, out, seed, args.epochs_scale, "kd"),
            "mlm_glue": _glue(mlm_model, paths, out, seed, args.epochs_scale, "mlm"),
        }
        per_seed.append(row)
        print(f"seed {seed}: teacher R@1 {row['teacher_R1']:.1f} (chance {row['chance_R1']:.1f}); "
              f"dev acc distilled {row['kd_glue']} vs MLM-only {row['mlm_glue']} "
              f"({time.perf_counter() - t0:.0f} s)")
    _report(per_seed, args, out, time.perf_counter() - start)
    return 0


def _report(per_seed: list[dict[str, Any]], args: argparse.Namespace, out: Path, seconds: float) -> None:
    def col(key: str, task: str | None = None) -> list[float]:
        return [r[key][task] if task else r[key] for r in per_seed]

    n = len(per_seed)
    print(f"\nVidLanKD on the synthetic world, {n} seed(s) {args.seeds}, KD terms {args.kd}: mean +- std")
    print(f"teacher text-to-video R@1 (val videos): {_stats(col('teacher_R1'))}  (chance {per_seed[0]['chance_R1']:.2f})")
    print(f"student val perplexity: distilled {_stats(col('kd_val_perplexity'))}, "
          f"MLM-only {_stats(col('mlm_val_perplexity'))}")
    summary: dict[str, Any] = {"seeds": args.seeds, "kd": args.kd, "num_videos": args.num_videos,
                               "epochs": {k: scaled_epochs(v, args.epochs_scale) for k, v in EPOCHS.items()},
                               "per_seed": per_seed, "seconds": round(seconds, 1), "tasks": {}}
    print(f"{'task (dev acc %)':<18} {'distilled':>16} {'MLM-only':>16} {'majority':>9} {'diff per seed':>20}")
    for task in GLUE_TASKS:
        kd, base = col("kd_glue", task), col("mlm_glue", task)
        diffs = [a - b for a, b in zip(kd, base, strict=True)]
        majority = _majority_rate(out / "world" / "formats" / "glue", task)
        print(f"{task:<18} {_stats(kd):>16} {_stats(base):>16} {majority:9.2f}   "
              f"{' '.join(f'{d:+.1f}' for d in diffs):>18}")
        summary["tasks"][task] = {"distilled": kd, "mlm_only": base, "diff": diffs, "majority": majority}
    print(f"total time {seconds:.0f} s; summary in {out / 'summary.json'}")
    write_summary(out, summary)
