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
   pretrained backbone and from scratch; test both on the held-out split;
4. print both accuracies and chance (the majority-class rate), write ``OUT/summary.json``;
   with ``--finetune-seeds 0 1 2`` both fine-tunings run once per seed and the mean, standard
   deviation and per-seed differences are printed.

``--label-fraction`` fine-tunes on that share of the labelled training videos (pretraining always
sees all of them, unlabelled): the regime where the paper's pretraining matters most.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import resources
from pathlib import Path

HELP = "VIMPAC on the synthetic world: VQ tokens, pretraining, fine-tuning with vs without it"

CONFIGS = resources.files("videolang") / "configs" / "vimpac"  # shipped in the package


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


def _prepare(out: Path, num_videos: int, seed: int, vqvae_steps: int, downsample: int) -> tuple[dict[str, Path], dict]:
    import shutil

    from videolang.cli.tokenize import train_tokenizer_on_videos
    from videolang.data.synth import load_manifest, synthesize_world
    from videolang.data.tokens import TokenStore, world_videos
    from videolang.models.frame_tokenizers import load_frame_tokenizer
    from videolang.pipelines.vimpac import tokenize_videos

    world, tok = out / "world", out / "vqvae"
    fresh = not (world / "manifest.json").is_file() or load_manifest(world)["args"]["num_videos"] != num_videos
    if fresh:
        synthesize_world(world, num_videos, seed=seed, overwrite=True, progress=False)
    tokenizer = load_frame_tokenizer(tok) if (tok / "tokenizer.json").is_file() else None
    if fresh or tokenizer is None or tokenizer.downsample != downsample:
        if tok.exists():
            shutil.rmtree(tok)
        train_videos, _ = world_videos(world, "train")
        train_tokenizer_on_videos(train_videos, tok, steps=vqvae_steps, fps=5.0, size=64, seed=seed, max_videos=60,
                                  downsample=downsample)
        # a new tokenizer invalidates the token stores
        for split in ("train", "val", "test"):
            store = out / f"tokens_{split}"
            if store.exists():
                shutil.rmtree(store)
        tokenizer = load_frame_tokenizer(tok)
    report = json.loads((tok / "tokenizer.json").read_text())["report"]
    stores = {}
    for split in ("train", "val", "test"):
        stores[split] = out / f"tokens_{split}"
        if (stores[split] / "tokens.json").is_file() and \
                TokenStore(stores[split]).header.tokenizer_hash == tokenizer.fingerprint():
            continue
        videos, classes = world_videos(world, split)
        tokenize_videos(videos, tokenizer, stores[split], fps=5.0, frame_size=64, resize=64, crop="center",
                        classes=classes, overwrite=True)
    return stores, report


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _finetune(stores: dict[str, Path], common: list[str], init: str | None, epochs: int, name: str) -> dict:
    from videolang.engine import fit, test

    overrides = [*common, f"name={name}", f"trainer.max_epochs={epochs}",
                 f"model.init={init}" if init else "model.init=null"]
    fitted = fit(CONFIGS / "synthetic_finetune.yaml", overrides)
    tested = test(CONFIGS / "synthetic_finetune.yaml", overrides, resume=fitted.run_dir)
    return {"run_dir": str(fitted.run_dir), "steps": fitted.metrics["final"].get("step"),
            "metrics": tested.metrics.get("test", {})}


def run(args: argparse.Namespace) -> int:
    import torch

    from videolang.engine import fit
    from videolang.errors import ConfigError

    if not CONFIGS.is_dir():
        raise ConfigError(f"demo configs not found: {CONFIGS} (videolang/configs is missing from this install)")
    if len(set(args.finetune_seeds)) != len(args.finetune_seeds):
        raise ConfigError(f"--finetune-seeds {args.finetune_seeds}: each seed once (a repeat would run the same "
                          f"fine-tuning twice and count it twice)")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stores, vq_report = _prepare(out, args.num_videos, args.seed, args.vqvae_steps, args.vqvae_downsample)
    print(f"VQ-VAE: reconstruction MSE {vq_report['recon_mse']:.4f} (untrained {vq_report['recon_mse_untrained']:.4f}), "
          f"{vq_report['codes_used']} codes in use, perplexity {vq_report['perplexity']:.1f}")
    runs = out / "runs"
    data = [f"data.train_stores=[{stores['train']}]", f"data.val_stores=[{stores['val']}]",
            f"data.frame_tokenizer={out / 'vqvae'}",  # into the exports: they classify raw videos
            f"run.root={runs}", "trainer.enable_progress_bar=false"]
    # 4 blocks mask about 20 % of a 5 x 8 x 8 clip; a 16 x 16 map needs 6 for about 17 %
    blocks = 4 if args.vqvae_downsample == 8 else 6
    pre = fit(CONFIGS / "synthetic_pretrain.yaml",
              [*data, f"seed={args.seed}", f"trainer.max_epochs={args.pretrain_epochs}", f"model.mask_blocks={blocks}"])
    pre_final = pre.metrics["final"]
    common = [*data, f"data.test_stores=[{stores['test']}]", f"data.label_fraction={args.label_fraction}"]
    results = {seed: {"pretrained": _finetune(stores, [*common, f"seed={seed}"], str(pre.run_dir / "export"),
                                              args.finetune_epochs, f"vimpac_synth_pretrained_seed{seed}"),
                      "scratch": _finetune(stores, [*common, f"seed={seed}"], None, args.finetune_epochs,
                                           f"vimpac_synth_scratch_seed{seed}")}
               for seed in args.finetune_seeds}
    top1 = {kind: [results[seed][kind]["metrics"]["test/top1"] for seed in args.finetune_seeds]
            for kind in ("pretrained", "scratch")}
    first = results[args.finetune_seeds[0]]
    chance = first["pretrained"]["metrics"]["test/chance"]
    steps = first["pretrained"]["steps"]
    summary = {
        "videos": args.num_videos, "label_fraction": args.label_fraction,
        "vqvae": vq_report,
        "pretrain": {k: pre_final.get(k) for k in ("val/mlm_acc", "val/nce", "val/knn_top1", "val/order_acc")},
        "finetune_steps": {kind: first[kind]["steps"] for kind in ("pretrained", "scratch")},
        "finetune_seeds": args.finetune_seeds,
        "test_top1": {**{kind: _mean_std(v) for kind, v in top1.items()}, "chance": chance},
        "test_top1_per_seed": top1,
        "seconds": round(time.perf_counter() - start, 1),
        "runs": {"pretrain": str(pre.run_dir),
                 **{f"{kind}_seed{seed}": results[seed][kind]["run_dir"]
                    for seed in args.finetune_seeds for kind in ("pretrained", "scratch")}},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    order_acc = summary["pretrain"]["val/order_acc"]
    order = f", arrow-of-time accuracy {order_acc:.1f}%" if order_acc is not None else ""
    print(f"pretraining: masked-token accuracy {summary['pretrain']['val/mlm_acc']:.1f}%, "
          f"kNN top-1 {summary['pretrain']['val/knn_top1']:.1f}%{order}")
    print(f"motion classification, test top-1 after {steps} fine-tuning steps each, "
          f"fine-tuning seeds {args.finetune_seeds}:")
    for kind, label in (("pretrained", "pretrained  "), ("scratch", "from scratch")):
        mean, std = summary["test_top1"][kind]["mean"], summary["test_top1"][kind]["std"]
        per_seed = ", ".join(f"{x:.2f}" for x in top1[kind])
        print(f"  {label} {mean:6.2f}% +- {std:.2f} ({per_seed})")
    gaps = ", ".join(f"{a - b:+.2f}" for a, b in zip(top1["pretrained"], top1["scratch"], strict=True))
    print(f"  pretrained minus scratch per seed: {gaps}")
    print(f"  chance       {chance:6.2f}% (majority class)")
    print(f"({summary['seconds']:.0f} s; summary in {out / 'summary.json'})")
    return 0
