"""ClipBERT's central claim, measured on the synthetic world: sparse sampling of a few short
clips (with multi-clip testing) versus dense 16-frame input.

For each sampling setting the tiny ClipBERT is trained from scratch on open-ended video QA
(TGIF FrameQA format, ``configs/clipbert/synthetic_qa.yaml``) for the same number of epochs and
tested on the held-out split. Printed per setting: training throughput (videos/s and frames/s
through the CNN, data loading included) and test accuracy (with the majority-answer rate).

Settings (N x T = clips per video x frames per clip, 2 frames/s inside a clip):

* ``1x1``, ``4x1``, ``8x2``: sparse random clips in training; 4 evenly spaced clips at test
  (mean consensus for 1x1, LSE for the others, as the paper);
* ``dense16``: 16 frames evenly spread over the whole video, mean-pooled as one clip, in
  training and at test.

    python benchmarks/bench_clipbert.py --out runs/bench_clipbert [--num-videos 300] [--epochs 6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "clipbert" / "synthetic_qa.yaml"

SETTINGS = {
    # name: (train clips, frames per clip, target fps, test clips, consensus)
    "1x1": (1, 1, 2.0, 4, "mean"),
    "4x1": (4, 1, 2.0, 4, "lse"),
    "8x2": (8, 2, 2.0, 4, "lse"),
    "dense16": (1, 16, None, 1, "mean"),  # fps set so that one clip spans the whole video
}


class Throughput(Callback):
    """Wall time of the training batches (loading included) and the videos/frames seen."""

    def __init__(self) -> None:
        self.seconds, self.videos, self.frames = 0.0, 0, 0
        self._start = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.seconds += now - self._start
        self._start = now
        if "frames" in batch:
            b, n, t = batch["frames"].shape[:3]
            self.videos += b
            self.frames += b * n * t


def run_setting(name: str, world: Path, out: Path, epochs: int, seed: int) -> dict:
    from videolang.engine import fit, test

    clips, frames, fps, test_clips, consensus = SETTINGS[name]
    if fps is None:  # dense: one clip of `frames` frames over the whole video
        import json

        video = json.loads((world / "annotations" / "videos.jsonl").read_text().splitlines()[0])
        fps = frames / float(video["duration"])
    fmt = world / "formats" / "clipbert" / "tgif_qa"
    overrides = [
        *(f"data.{s}_file={fmt / f'frameqa_{s}.jsonl'}" for s in ("train", "val", "test")),
        f"data.ans2label={fmt / 'frameqa_trainval_ans2label.json'}", f"data.video_root={world / 'videos'}",
        f"data.train_clips={clips}", f"data.frames_per_clip={frames}", f"data.target_fps={fps}",
        f"data.test_clips={test_clips}", f"model.consensus={consensus}", f"trainer.max_epochs={epochs}",
        f"run.root={out / 'runs'}", f"name=bench_{name}", f"seed={seed}", "trainer.enable_progress_bar=false",
    ]
    meter = Throughput()
    fitted = fit(CONFIG, overrides, callbacks=[meter])
    tested = test(CONFIG, [*overrides, f"model.init={fitted.run_dir / 'export'}"])
    m = tested.metrics["test"]
    return {"setting": name, "videos_per_s": meter.videos / meter.seconds,
            "frames_per_s": meter.frames / meter.seconds, "acc": m["test/acc"], "majority": m["test/majority_acc"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_clipbert")
    p.add_argument("--num-videos", type=int, default=300)
    p.add_argument("--epochs", type=int, default=None, help="default: the config's max_epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    args = p.parse_args(argv)

    import yaml

    from videolang.synth import load_manifest, synthesize_world

    out = Path(args.out)
    world = out / "world"
    manifest = load_manifest(world) if (world / "manifest.json").is_file() else {}
    if manifest.get("args", {}).get("num_videos") != args.num_videos or manifest.get("seed") != args.seed:
        synthesize_world(world, args.num_videos, args.seed, overwrite=True, progress=False)
    epochs = args.epochs or yaml.safe_load(CONFIG.read_text())["trainer"]["max_epochs"]
    rows = [run_setting(name, world, out, epochs, args.seed) for name in args.settings]
    print(f"\nClipBERT sampling on the synthetic world ({args.num_videos} videos, {epochs} epochs, tiny model)")
    print(f"| {'N x T':<8} | {'videos/s':>9} | {'frames/s':>9} | {'test acc %':>10} | {'majority %':>10} |")
    print(f"|{'-' * 10}|{'-' * 11}|{'-' * 11}|{'-' * 12}|{'-' * 12}|")
    for r in rows:
        print(f"| {r['setting']:<8} | {r['videos_per_s']:>9.1f} | {r['frames_per_s']:>9.1f} | {r['acc']:>10.1f} | "
              f"{r['majority']:>10.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
