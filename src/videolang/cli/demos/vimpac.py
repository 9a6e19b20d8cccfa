"""``videolang demo vimpac``: VIMPAC on the synthetic world, pretrained versus from scratch.

1. synthesize a world (or reuse ``OUT/world``); train a small VQ-VAE on frames of its training
   videos (or reuse ``OUT/vqvae``) and print its reconstruction error; tokenize the train, val
   and test splits at 5 fps, 64 x 64 pixels -> 16 x 16 codes per frame, the code density of the
   paper's 128-pixel input (``--vqvae-downsample 8``: 8 x 8 codes, which put each object in one
   or two cells and left the pretrained model barely above chance) (``videolang tokenize``);
2. pretrain a 2 x 64 ``vimpac-tiny`` on the training videos without labels
   (``configs/vimpac/synthetic_pretrain.yaml``: block-masked token prediction + long-range
   contrast between two clips of each video, plus an arrow-of-time loss that is not VIMPAC's,
   ``model.order_weight``, without dropout: VIMPAC's own losses are symmetric in time and this
   world only tells a motion from its opposite by the order of frames, ``docs/vimpac.md``);
3. fine-tune motion classification (9 classes; ``configs/vimpac/synthetic_finetune.yaml``, the
   whole video as one 5-frame clip) twice with identical settings and steps: from the
   pretrained backbone and from scratch; test the best validation checkpoint of each on the
   held-out split;
4. print both accuracies and chance (the majority-class rate), write ``OUT/summary.json``;
   with ``--finetune-seeds 0 1 2`` both fine-tunings run once per seed and the mean, standard
   deviation and per-seed differences are printed.

``--label-fraction`` fine-tunes on that share of the labelled training videos (pretraining always
sees all of them, unlabelled): the regime where the paper's pretraining matters most.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from videolang.cli.demos.steps import (
    Trained,
    World,
    demo_config,
    fit_then_test,
    mean_std,
    synthesize_or_reuse,
    write_summary,
)
from videolang.errors import ConfigError

HELP = "VIMPAC on the synthetic world: VQ tokens, pretraining, fine-tuning with vs without it"



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo_vimpac")
    p.add_argument("--num-videos", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vqvae-steps", type=int, default=150)
    p.add_argument("--vqvae-downsample", type=int, default=4, choices=[4, 8],
                   help="pixels per code side: 8 gives 8 x 8 codes per 64 x 64 frame, 4 gives 16 x 16")
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--finetune-seeds", nargs="+", type=int, default=[0],
                   help="fine-tune both models once per seed (the data, tokenizer and pretraining stay fixed); "
                        "several seeds show how often the from-scratch model stays at the class prior")
    p.add_argument("--label-fraction", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")


def _vqvae(world: World, out: Path, steps: int, seed: int, downsample: int) -> tuple[Any, dict]:
    """The VQ-VAE in ``OUT/vqvae`` (trained on frames of the training videos unless one newer than
    the world with this ``downsample`` is there) and its training report."""
    from videolang.cli.tokenize import train_tokenizer_on_videos
    from videolang.models.frame_tokenizers import load_frame_tokenizer
    from videolang.synth import world_videos

    tok = out / "vqvae"
    if world.outdates(tok / "tokenizer.json") or load_frame_tokenizer(tok).downsample != downsample:
        shutil.rmtree(tok, ignore_errors=True)
        train_tokenizer_on_videos(world_videos(world.path, "train")[0], tok, steps=steps, fps=5.0, size=64, seed=seed,
                                  max_videos=60, downsample=downsample)
    return load_frame_tokenizer(tok), json.loads((tok / "tokenizer.json").read_text())["report"]


def _token_stores(world: World, out: Path, tokenizer: Any) -> dict[str, Path]:
    """``OUT/tokens_{split}`` at 5 fps, 64 x 64 pixels; a store older than the world or made with
    another tokenizer is tokenized again."""
    from videolang.data.tokens import TokenStore
    from videolang.pipelines.vimpac import tokenize_videos
    from videolang.synth import world_videos

    stores = {split: out / f"tokens_{split}" for split in ("train", "val", "test")}
    for split, store in stores.items():
        if world.outdates(store / "tokens.json") or TokenStore(store).header.tokenizer_hash != tokenizer.fingerprint():
            videos, classes = world_videos(world.path, split)
            tokenize_videos(videos, tokenizer, store, fps=5.0, frame_size=64, resize=64, crop="center",
                            classes=classes, overwrite=True)
    return stores


def _finetune(config: Path, common: list[str], init: Path | None, epochs: int, name: str) -> Trained:
    return fit_then_test(config, [*common, f"name={name}", f"trainer.max_epochs={epochs}",
                                  f"model.init={init}" if init else "model.init=null"])


def run(args: argparse.Namespace) -> int:
    import torch

    from videolang.engine import fit

    pretrain_config, finetune_config = (demo_config("vimpac", f"synthetic_{m}.yaml") for m in ("pretrain", "finetune"))
    if len(set(args.finetune_seeds)) != len(args.finetune_seeds):
        raise ConfigError(f"--finetune-seeds {args.finetune_seeds}: each seed once (a repeat would run the same "
                          f"fine-tuning twice and count it twice)")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out = Path(args.out)
    world = synthesize_or_reuse(out / "world", args.num_videos, args.seed)
    tokenizer, vq_report = _vqvae(world, out, args.vqvae_steps, args.seed, args.vqvae_downsample)
    print(f"VQ-VAE: reconstruction MSE {vq_report['recon_mse']:.4f} (untrained {vq_report['recon_mse_untrained']:.4f}), "
          f"{vq_report['codes_used']} codes in use, perplexity {vq_report['perplexity']:.1f}")
    stores = _token_stores(world, out, tokenizer)
    data = [f"data.train_stores=[{stores['train']}]", f"data.val_stores=[{stores['val']}]",
            f"data.frame_tokenizer={out / 'vqvae'}",  # into the exports: they classify raw videos
            f"run.root={out / 'runs'}", "trainer.enable_progress_bar=false"]
    # 4 blocks mask about 20 % of a 5 x 8 x 8 clip; a 16 x 16 map needs 6 for about 17 %
    blocks = 4 if args.vqvae_downsample == 8 else 6
    pre = fit(pretrain_config, [*data, f"seed={args.seed}", f"trainer.max_epochs={args.pretrain_epochs}",
                                f"model.mask_blocks={blocks}"])
    common = [*data, f"data.test_stores=[{stores['test']}]", f"data.label_fraction={args.label_fraction}"]
    results = {seed: {kind: _finetune(finetune_config, [*common, f"seed={seed}"], init, args.finetune_epochs,
                                      f"vimpac_synth_{kind}_seed{seed}")
                      for kind, init in (("pretrained", pre.run_dir / "export"), ("scratch", None))}
               for seed in args.finetune_seeds}
    summary = _summary(args, vq_report, pre, results, time.perf_counter() - start)
    write_summary(out, summary)
    _print(summary, args, out)
    return 0


def _summary(args: argparse.Namespace, vq_report: dict, pre: Any, results: dict[int, dict[str, Trained]],
             seconds: float) -> dict[str, Any]:
    """What ``summary.json`` holds: the VQ-VAE, the pretraining monitors, test top-1 per seed and kind."""
    top1 = {kind: [results[seed][kind].test["test/top1"] for seed in args.finetune_seeds]
            for kind in ("pretrained", "scratch")}
    first = results[args.finetune_seeds[0]]
    pre_final = pre.metrics["final"]
    return {
        "videos": args.num_videos, "label_fraction": args.label_fraction,
        "vqvae": vq_report,
        "pretrain": {k: pre_final.get(k) for k in ("val/mlm_acc", "val/nce", "val/knn_top1", "val/order_acc")},
        "finetune_steps": {kind: first[kind].fit["final"].get("step") for kind in ("pretrained", "scratch")},
        "finetune_seeds": args.finetune_seeds,
        "test_top1": {**{kind: dict(zip(("mean", "std"), mean_std(v), strict=True)) for kind, v in top1.items()},
                      "chance": first["pretrained"].test["test/chance"]},
        "test_top1_per_seed": top1,
        "seconds": round(seconds, 1),
        "runs": {"pretrain": str(pre.run_dir),
                 **{f"{kind}_seed{seed}": str(results[seed][kind].run_dir)
                    for seed in args.finetune_seeds for kind in ("pretrained", "scratch")}},
    }


def _print(summary: dict[str, Any], args: argparse.Namespace, out: Path) -> None:
    top1, chance = summary["test_top1_per_seed"], summary["test_top1"]["chance"]
    order_acc = summary["pretrain"]["val/order_acc"]
    order = f", arrow-of-time accuracy {order_acc:.1f}%" if order_acc is not None else ""
    print(f"pretraining: masked-token accuracy {summary['pretrain']['val/mlm_acc']:.1f}%, "
          f"kNN top-1 {summary['pretrain']['val/knn_top1']:.1f}%{order}")
    print(f"motion classification, test top-1 after {summary['finetune_steps']['pretrained']} fine-tuning steps "
          f"each, fine-tuning seeds {args.finetune_seeds}:")
    for kind, label in (("pretrained", "pretrained  "), ("scratch", "from scratch")):
        mean, std = summary["test_top1"][kind]["mean"], summary["test_top1"][kind]["std"]
        per_seed = ", ".join(f"{x:.2f}" for x in top1[kind])
        print(f"  {label} {mean:6.2f}% +- {std:.2f} ({per_seed})")
    gaps = ", ".join(f"{a - b:+.2f}" for a, b in zip(top1["pretrained"], top1["scratch"], strict=True))
    print(f"  pretrained minus scratch per seed: {gaps}")
    print(f"  chance       {chance:6.2f}% (majority class)")
    print(f"({summary['seconds']:.0f} s; summary in {out / 'summary.json'})")
