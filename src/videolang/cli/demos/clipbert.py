"""``videolang demo clipbert``: ClipBERT end to end on raw frames of the synthetic world.

1. synthesize a small world (or reuse ``OUT/world``);
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
import time
from pathlib import Path

from videolang.cli.demos.steps import demo_config, fit_then_test, synthesize_or_reuse, write_summary

HELP = "train the tiny ClipBERT on raw frames of the synthetic world (QA and retrieval)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo_clipbert", help="folder for the world and the runs")
    parser.add_argument("--num-videos", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qa-epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--retrieval-epochs", type=int, default=None, help="default: the config's")


def _split_files(folder: Path, pattern: str) -> list[str]:
    """``data.{split}_file`` overrides for the train, val and test files of ``folder``."""
    return [f"data.{s}_file={folder / pattern.format(split=s)}" for s in ("train", "val", "test")]


def _epochs(epochs: int | None) -> list[str]:
    return [] if epochs is None else [f"trainer.max_epochs={epochs}"]


def run(args: argparse.Namespace) -> int:
    qa_config, ret_config = demo_config("clipbert", "synthetic_qa.yaml"), demo_config("clipbert", "synthetic_retrieval.yaml")
    out, t0 = Path(args.out), time.perf_counter()
    world = synthesize_or_reuse(out / "world", args.num_videos, args.seed).path
    qa_dir, ret_dir = world / "formats" / "clipbert" / "tgif_qa", world / "formats" / "clipbert" / "msrvtt_retrieval"
    common = [f"data.video_root={world / 'videos'}", f"run.root={out / 'runs'}", f"seed={args.seed}",
              "trainer.enable_progress_bar=false"]

    start = time.perf_counter()
    qa = fit_then_test(qa_config, [*common, *_split_files(qa_dir, "frameqa_{split}.jsonl"),
                                   f"data.ans2label={qa_dir / 'frameqa_trainval_ans2label.json'}",
                                   *_epochs(args.qa_epochs)])
    qa_s, start = time.perf_counter() - start, time.perf_counter()
    ret = fit_then_test(ret_config, [*common, *_split_files(ret_dir, "{split}.jsonl"), *_epochs(args.retrieval_epochs)])
    ret_s = time.perf_counter() - start

    acc, majority = qa.test["test/acc"], qa.test["test/majority_acc"]
    r1, chance = ret.test["test/t2v/R1"], ret.test["test/chance_R1"]
    print("\n=== ClipBERT on the synthetic world (tiny model, raw frames, from scratch) ===")
    print(f"world: {args.num_videos} videos (seed {args.seed}) in {world}")
    print(f"open-ended QA (TGIF FrameQA format), test split: accuracy {acc:.1f}% vs majority answer "
          f"{majority:.1f}% ({acc / max(majority, 1e-9):.1f}x; {qa_s:.0f} s; {qa.run_dir})")
    for key in sorted(k for k in qa.test if k.startswith("test/acc_")):
        print(f"  {key[len('test/acc_'):]:<8} {qa.test[key]:.1f}%")
    print(f"text-to-video retrieval (all pairs), test split: R@1 {r1:.1f}% vs chance {chance:.1f}% "
          f"({r1 / chance:.1f}x), R@5 {ret.test['test/t2v/R5']:.1f}%, MedR {ret.test['test/t2v/MedR']:.1f} "
          f"({ret_s:.0f} s; {ret.run_dir})")
    print(f"total: {time.perf_counter() - t0:.0f} s")
    write_summary(out, {"qa": qa.test, "retrieval": ret.test})
    ok = acc >= 2 * majority and r1 >= 5 * chance
    print("bars (QA >= 2x majority, R@1 >= 5x chance): " + ("met" if ok else "NOT met"))
    return 0 if ok else 1
