"""Does a VIMPAC backbone see the order of frames? Time-reversal probe for token-store models.

The synthetic world is built so that single frames never tell a motion apart from its opposite
(a video and its time reverse are equally likely, ``videolang.synth.world``): telling
"moves left" from "moves right" needs the order of the frames, which reaches the axial
transformer only through its temporal position table. For every model folder (a
``vimpac.pretrain`` export or a fine-tuned ``vimpac.finetune`` export) this prints

* ``order``: mean ||f(x) - f(reverse(x))|| / mean ||f(x_i) - f(x_j)||, with f the mean of the final
  non-PAD hidden states over the centre clip of each video and x_j another video: 0 means the
  features ignore the order of frames entirely, about 1 means reversing a clip moves its feature
  as far as swapping the video;
* for classifiers also test top-1, top-1 counting the opposite verb as correct (left/right,
  up/down, grow/shrink, clockwise/counter-clockwise) and the share of errors that are the
  opposite verb.

    python benchmarks/vimpac_order_probe.py --store runs/demo_vimpac/tokens_test \
        runs/demo_vimpac/runs/vimpac_synth_pretrain/version_0/export \
        runs/demo_vimpac/runs/vimpac_synth_scratch_seed0/version_0/export [--stride 4] [--threads 2]

The clip is the fine-tuning recipe's evaluation clip (``clip_len`` frames every ``stride`` stored
frames, centred). Numbers measured with it are in ``docs/vimpac.md``.
"""

from __future__ import annotations

import argparse
import time

import torch

from videolang.data.tokens import TokenStore
from videolang.data.vimpac import TokenClips
from videolang.models.registry import load_pretrained
from videolang.models.vimpac import masked_mean
from videolang.synth.world import VERB_BY_KEY, VERB_KEYS


def centre_clips(store: TokenStore, clip_len: int, stride: int, pad_id: int,
                 limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    keys = sorted(store.keys())[:limit]
    clips = TokenClips([store], keys, clip_len=clip_len, stride=stride, pad_id=pad_id, mode="eval")
    items = [clips[i] for i in range(len(clips))]
    return torch.cat([item["views"] for item in items]), torch.tensor([item["label"] for item in items])


@torch.no_grad()
def pooled(model: torch.nn.Module, codes: torch.Tensor, batch: int = 64) -> torch.Tensor:
    pad_id = model.config.pad_token_id
    out = []
    for chunk in codes.split(batch):
        _, hidden = model.backbone(chunk)
        out.append(masked_mean(hidden, chunk == pad_id))
    return torch.cat(out)


def order_ratio(model: torch.nn.Module, codes: torch.Tensor) -> float:
    f, r = pooled(model, codes), pooled(model, codes.flip(1))
    across_videos = (f - f.roll(1, 0)).norm(dim=1).mean()
    return float((f - r).norm(dim=1).mean() / across_videos)


@torch.no_grad()
def direction_errors(model: torch.nn.Module, codes: torch.Tensor, labels: torch.Tensor,
                     classes: list[str]) -> dict[str, float]:
    pred = torch.cat([model(chunk).argmax(-1) for chunk in codes.split(64)])
    opposite = torch.tensor([classes.index(VERB_BY_KEY[c].opposite) for c in classes])[labels]
    wrong = pred != labels
    return {"top1": 100 * float((~wrong).float().mean()),
            "top1_up_to_direction": 100 * float(((pred == labels) | (pred == opposite)).float().mean()),
            "errors_opposite": 100 * float((pred[wrong] == opposite[wrong]).float().mean()) if wrong.any() else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model folders (exports)")
    parser.add_argument("--store", required=True, help="token store of the synthetic world (e.g. tokens_test)")
    parser.add_argument("--clip-len", type=int, default=5)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None, help="first N videos only")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    store = TokenStore(args.store)
    classes = list(store.header.classes or [])
    missing = sorted(set(VERB_KEYS) - set(classes))
    if missing:
        parser.error(f"{args.store}: not a synthetic-world store (classes lack {missing})")
    codes = labels = None
    print(f"{'model':60s} {'order':>6} {'top1':>6} {'axis':>6} {'opp.err%':>8}")
    for folder in args.models:
        model = load_pretrained(folder).eval()
        if codes is None:
            codes, labels = centre_clips(store, args.clip_len, args.stride, model.config.pad_token_id, args.limit)
        row = f"{folder[-60:]:60s} {order_ratio(model, codes):6.3f}"
        if model.config.architecture == "vimpac-classifier":
            d = direction_errors(model, codes, labels, classes)
            row += f" {d['top1']:6.1f} {d['top1_up_to_direction']:6.1f} {d['errors_opposite']:8.1f}"
        print(row)
    print(f"{len(codes)} videos of {args.store}, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
