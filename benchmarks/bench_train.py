"""Training throughput of the VideoCLIP pretraining recipe (samples = video-text pairs per s).

Builds a small synthetic world and its cnn2d-tiny features, then runs the real recipe
(`videoclip.pretrain`, Lightning, retrieval-augmented batches off so every step is a training
step) for ``--steps`` steps and times the steps after ``--warmup``. On a GPU it also prints MFU:
model FLOPs per step (counted with ``torch.utils.flop_counter``) x steps/s / the device's peak.

Usage: ``python benchmarks/bench_train.py [--model videoclip-minilm] [--steps 30] [--precision bf16-mixed]``
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from videolang.engine import fit
from videolang.pipelines.features import run_extraction
from videolang.synth import synthesize_world

# Dense peak FLOP/s by device name fragment and precision (vendor data sheets, SXM parts).
PEAKS = {"H100": {"bf16": 989e12, "32": 67e12}, "H200": {"bf16": 989e12, "32": 67e12},
         "A100": {"bf16": 312e12, "32": 19.5e12}}


class StepTimer(Callback):
    def __init__(self, warmup: int):
        self.warmup, self.times, self.pairs = warmup, [], 0
        self._t = 0.0
        self.sample_batch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if self.sample_batch is None:
            self.sample_batch = {k: v.detach().clone() for k, v in batch.items()}
        if trainer.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._t)
            self.pairs += batch["vfeats"].shape[0]


def step_flops(model, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        v, t = model(batch["vfeats"], batch["vmask"], batch["caps"], batch["cmask"])
        (v @ t.t()).sum().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="videoclip-minilm")
    p.add_argument("--videos", type=int, default=240)
    p.add_argument("--videos-per-batch", type=int, default=32)
    p.add_argument("--pairs-per-video", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="32-true")
    args = p.parse_args()

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"machine: {platform.machine()}, {device}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize_world(root / "world", args.videos, seed=0, progress=False)
        run_extraction(str(root / "world/videos"), "cnn2d-tiny", str(root / "features"), progress=False)
        w = root / "world"
        timer = StepTimer(args.warmup)
        cfg = {
            "recipe": "videoclip.pretrain", "name": "bench", "seed": 0,
            "model": {"name": args.model, "normalize": True, "temperature": 0.05},
            "data": {"features": str(root / "features"), "captions": str(w / "formats/howto100m/raw_caption.json"),
                     "train_list": str(w / "formats/howto100m/train.lst"), "retrieval": False,
                     "videos_per_batch": args.videos_per_batch, "pairs_per_video": args.pairs_per_video,
                     "min_video_len": 1, "max_video_len": 8, "min_text_tokens": 4, "max_text_tokens": 32,
                     "max_text_len": 48},
            "trainer": {"max_steps": args.steps, "max_epochs": None, "precision": args.precision,
                        "enable_progress_bar": False, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                        "accelerator": "auto", "devices": 1},
            "run": {"root": str(root / "runs"), "export": False, "plots": False},
        }
        fit(cfg, callbacks=[timer])
        if not timer.times:
            raise SystemExit("no timed steps: raise --steps above --warmup")
        step_s = sum(timer.times) / len(timer.times)
        pairs_s = timer.pairs / sum(timer.times)
        print(f"model {args.model}, {args.videos_per_batch} videos x {args.pairs_per_video} pairs per step, "
              f"precision {args.precision}")
        print(f"timed steps: {len(timer.times)}, {step_s * 1e3:.0f} ms/step, {pairs_s:.1f} samples/s")
        if torch.cuda.is_available():
            from videolang.data.stores import FeatureStore
            from videolang.models import create_model

            model = create_model(args.model, feature_dim=FeatureStore(root / "features").dim).cuda()
            batch = {k: v.cuda() for k, v in timer.sample_batch.items()}
            flops = step_flops(model, batch)  # forward + backward matmul FLOPs of a real batch
            peak = next((v for k, v in PEAKS.items() if k in device), None)
            key = "bf16" if "bf16" in args.precision else "32"
            if peak:
                print(f"MFU: {flops / step_s / peak[key] * 100:.2f}% of {peak[key] / 1e12:.0f} TFLOP/s ({key})")


if __name__ == "__main__":
    main()
