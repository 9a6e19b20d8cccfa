"""What do frame features of the synthetic world carry? Per-row verb and acting-object probes.

For every video of a synthetic world (``videolang data synth``) the frames are redrawn from
``videos.jsonl`` (no codec loss), passed through a frame backbone and pooled to 4 rows per second,
with and without ``temporal_diff``. A small temporal conv net (two 3-wide 1D convolutions) is
trained on the training videos to predict, for every row, the verb of the event under way and
the shape of the object performing it; the script prints test accuracy next to the majority rate.

    python benchmarks/probe_synthetic_features.py --world runs/demo_vlm/world \
        [--backbones cnn2d-tiny pooled-pixels] [--grid 4] [--epochs 60] [--threads 2]

The VLM demo's feature choice (``temporal_diff``) rests on this table (``docs/vlm.md``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videolang.models.backbones import create_backbone, video_to_features
from videolang.synth.render import render_video_frames
from videolang.synth.world import SHAPES, VERB_KEYS

ROWS_PER_SECOND = 4.0


def row_labels(video: dict, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Verb id and acting-object shape id of the event under way at the centre of each row."""
    verb, noun = np.zeros(rows, np.int64), np.zeros(rows, np.int64)
    for r in range(rows):
        t = (r + 0.5) / ROWS_PER_SECOND
        event = next((e for e in video["events"] if e["start"] <= t < e["end"]), video["events"][-1])
        verb[r], noun[r] = event["verb_id"], event["noun_id"]
    return verb, noun


def features(videos: list[dict], frames: list[torch.Tensor], backbone: str, temporal_diff: bool,
             grid: int) -> torch.Tensor:
    options = {"grid": grid} if backbone == "pooled-pixels" else {}
    bb = create_backbone(backbone, rows_per_second=ROWS_PER_SECOND, temporal_diff=temporal_diff, **options)
    rows = [video_to_features(bb, f, float(v["fps"])) for v, f in zip(videos, frames, strict=True)]
    return torch.from_numpy(np.stack(rows))  # (N, R, D)


def probe(x: torch.Tensor, verb: torch.Tensor, noun: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
          epochs: int, seed: int) -> tuple[float, float]:
    """Test accuracy of verb and shape per row after training on the training videos."""
    mean, std = x[train].mean((0, 1)), x[train].std((0, 1)) + 1e-5
    x = ((x - mean) / std).transpose(1, 2)  # (N, D, R)
    torch.manual_seed(seed)
    n_verb, n_noun = len(VERB_KEYS), len(SHAPES)
    net = nn.Sequential(nn.Conv1d(x.shape[1], 256, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
                        nn.Conv1d(256, 256, 3, padding=1), nn.ReLU(), nn.Conv1d(256, n_verb + n_noun, 1))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05)
    for _ in range(epochs):
        net.train()
        for b in train[torch.randperm(len(train))].split(64):
            out = net(x[b])
            loss = F.cross_entropy(out[:, :n_verb], verb[b]) + F.cross_entropy(out[:, n_verb:], noun[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        out = net(x[test])
    verb_acc = (out[:, :n_verb].argmax(1) == verb[test]).float().mean().item()
    noun_acc = (out[:, n_verb:].argmax(1) == noun[test]).float().mean().item()
    return 100 * verb_acc, 100 * noun_acc


def majority(labels: torch.Tensor, train: torch.Tensor, test: torch.Tensor) -> float:
    top = torch.bincount(labels[train].flatten()).argmax()
    return 100 * (labels[test] == top).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True, help="a world folder from `videolang data synth`")
    parser.add_argument("--backbones", nargs="+", default=["cnn2d-tiny", "pooled-pixels"])
    parser.add_argument("--grid", type=int, default=4, help="pooled-pixels: grid x grid pooling")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    ann = Path(args.world) / "annotations"
    videos = [json.loads(line) for line in (ann / "videos.jsonl").read_text().splitlines() if line.strip()]
    frames = [torch.from_numpy(render_video_frames(v)) for v in videos]
    rows = min(int(np.ceil(v["duration"] * ROWS_PER_SECOND)) for v in videos)
    labels = [row_labels(v, rows) for v in videos]
    verb = torch.from_numpy(np.stack([lab[0] for lab in labels]))
    noun = torch.from_numpy(np.stack([lab[1] for lab in labels]))
    split = np.array([v["split"] for v in videos])
    train, test = (torch.from_numpy(np.flatnonzero(split == s)) for s in ("train", "test"))
    print(f"{len(videos)} videos ({len(train)} train, {len(test)} test), {rows} rows each; "
          f"majority rate: verb {majority(verb, train, test):.1f}, shape {majority(noun, train, test):.1f}")
    print(f"{'backbone':<16} {'temporal_diff':<14} {'dim':>5} {'verb %':>7} {'shape %':>8} {'s':>6}")
    for name in args.backbones:
        for diff in (False, True):
            start = time.perf_counter()
            x = features(videos, frames, name, diff, args.grid)[:, :rows]
            verb_acc, noun_acc = probe(x, verb, noun, train, test, args.epochs, args.seed)
            print(f"{name:<16} {diff!s:<14} {x.shape[-1]:>5} {verb_acc:>7.1f} {noun_acc:>8.1f} "
                  f"{time.perf_counter() - start:>6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
