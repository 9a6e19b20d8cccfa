"""``videolang demo clipbert``: ClipBERT end to end on raw frames of the synthetic world.

1. synthesize a small world (or reuse the one already in ``--out/world`` if it was made with
   the same arguments);
2. train the tiny ClipBERT (``clipbert-tiny``: a 3-stage ResNet and a 2-layer BERT, from
   scratch) on open-ended video QA (TGIF FrameQA format, ``configs/clipbert/synthetic_qa.yaml``)
   and test it on the held-out split: accuracy against the majority-answer rate;
3. train it on text-to-video retrieval (MSR-VTT ClipBERT JSONL,
   ``configs/clipbert/synthetic_retrieval.yaml``: the cross-encoder trained with the in-batch
   contrastive option, no dropout in the fusion) and rank every test caption against every test
   video: R@1 against chance.

The exit status is 0 when QA accuracy is at least twice the majority rate and R@1 at least
five times chance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

HELP = "train the tiny ClipBERT on raw frames of the synthetic world (QA and retrieval)"

CONFIGS = resources.files("videolang") / "configs" / "clipbert"  # shipped in the package


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo_clipbert", help="folder for the world and the runs")
    parser.add_argument("--num-videos", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qa-epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--retrieval-epochs", type=int, default=None, help="default: the config's")


def _world(out: Path, num_videos: int, seed: int) -> Path:
    from videolang.data.synth import load_manifest, synthesize_world

    world = out / "world"
    if (world / "manifest.json").is_file():
        args = load_manifest(world).get("args", {})
        if args.get("num_videos") == num_videos and args.get("seed") == seed:
            print(f"[demo clipbert] reusing the world in {world}", flush=True)
            return world
    synthesize_world(world, num_videos, seed, overwrite=True, progress=False)
    return world


def _fit_and_test(config: Path, overrides: list[str]) -> tuple[dict, Path]:
    from videolang.engine import fit, test

    fitted = fit(config, overrides)
    tested = test(config, [*overrides, f"model.init={fitted.run_dir / 'export'}"])
    return tested.metrics["test"], fitted.run_dir


def run(args: argparse.Namespace) -> int:
    from videolang.errors import ConfigError
    from videolang.utils.io import atomic_write_text

    for name in ("synthetic_qa.yaml", "synthetic_retrieval.yaml"):
        if not (CONFIGS / name).is_file():
            raise ConfigError(f"demo config not found: {CONFIGS / name} (videolang/configs is missing from this install)")
    out = Path(args.out)
    t0 = time.perf_counter()
    world = _world(out, args.num_videos, args.seed)
    fmt = world / "formats" / "clipbert"
    common = [f"data.video_root={world / 'videos'}", f"run.root={out / 'runs'}", f"seed={args.seed}",
              "trainer.enable_progress_bar=false"]

    start = time.perf_counter()
    qa_files = [f"data.{s}_file={fmt / 'tgif_qa' / f'frameqa_{s}.jsonl'}" for s in ("train", "val", "test")]
    qa_over = [*common, *qa_files, f"data.ans2label={fmt / 'tgif_qa' / 'frameqa_trainval_ans2label.json'}"]
    if args.qa_epochs is not None:
        qa_over.append(f"trainer.max_epochs={args.qa_epochs}")
    qa, qa_dir = _fit_and_test(CONFIGS / "synthetic_qa.yaml", qa_over)
    qa_s = time.perf_counter() - start

    start = time.perf_counter()
    ret_files = [f"data.{s}_file={fmt / 'msrvtt_retrieval' / f'{s}.jsonl'}" for s in ("train", "val", "test")]
    ret_over = [*common, *ret_files]
    if args.retrieval_epochs is not None:
        ret_over.append(f"trainer.max_epochs={args.retrieval_epochs}")
    ret, ret_dir = _fit_and_test(CONFIGS / "synthetic_retrieval.yaml", ret_over)
    ret_s = time.perf_counter() - start

    acc, majority = qa["test/acc"], qa["test/majority_acc"]
    r1, chance = ret["test/t2v/R1"], ret["test/chance_R1"]
    print("\n=== ClipBERT on the synthetic world (tiny model, raw frames, from scratch) ===")
    print(f"world: {args.num_videos} videos (seed {args.seed}) in {world}")
    print(f"open-ended QA (TGIF FrameQA format), test split: accuracy {acc:.1f}% vs majority answer "
          f"{majority:.1f}% ({acc / max(majority, 1e-9):.1f}x; {qa_s:.0f} s; {qa_dir})")
    for key in sorted(k for k in qa if k.startswith("test/acc_")):
        print(f"  {key[len('test/acc_'):]:<8} {qa[key]:.1f}%")
    print(f"text-to-video retrieval (all pairs), test split: R@1 {r1:.1f}% vs chance {chance:.1f}% "
          f"({r1 / chance:.1f}x), R@5 {ret['test/t2v/R5']:.1f}%, MedR {ret['test/t2v/MedR']:.1f} "
          f"({ret_s:.0f} s; {ret_dir})")
    print(f"total: {time.perf_counter() - t0:.0f} s")
    summary = {"qa": qa, "retrieval": ret}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True), overwrite=True)
    ok = acc >= 2 * majority and r1 >= 5 * chance
    print("bars (QA >= 2x majority, R@1 >= 5x chance): " + ("met" if ok else "NOT met"))
    return 0 if ok else 1
