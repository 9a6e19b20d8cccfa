"""Throughput of the VIMPAC backbone: ours (fused q/k/v, one CLS projection per sample, SDPA)
against a naive attention of the *same* layout and weights, written the original's way
(separate q/k/v Linears per pattern applied to every row with the CLS copied in, explicit
``softmax(QK^T / sqrt(d)) V`` with ``masked_fill(-inf)`` for PAD keys).

Both run the same model (``--model``, default the paper's small 6 x 512 ``T,H|W`` model at
5 x 16 x 16 tokens); first the outputs are checked to agree, then forward + backward
(``--mode train``) or forward only (``--mode infer``) is timed, alternating the two step by
step (median per step). Prints tokens/s (B * L * H * W per second) for each and the speed-up;
exits 1 if ours is not faster.

    python benchmarks/bench_vimpac.py [--batch 2] [--steps 5] [--device cpu|cuda] [--precision 32|bf16]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from videolang.models import create_model
from videolang.models.vimpac import _AXES, AttentionBlock


class NaiveAttentionBlock(AttentionBlock):
    """The original's attention, on our block's weights (for comparison only)."""

    def _naive_pattern(self, pattern, w, bias, x, cls, pad):
        attended = sorted(_AXES[a] for a in pattern)
        rest = [a for a in (1, 2, 3) if a not in attended]
        order = [0, *rest, *attended]
        b = x.shape[0]
        rows_shape, seq_shape = [x.shape[a] for a in rest], [x.shape[a] for a in attended]
        n_rows, n = math.prod(rows_shape), math.prod(seq_shape)
        rows = x.permute(*order, 4).reshape(b, n_rows, n, -1)
        seq = torch.cat([cls[:, None, None, :].expand(b, n_rows, 1, -1), rows], 2)  # CLS copied per row
        wq, wk, wv = w.chunk(3)
        bq, bk, bv = bias.chunk(3)

        def heads(z):
            return z.view(b, n_rows, n + 1, self.heads, self.head_dim).transpose(2, 3)

        q, k, v = heads(F.linear(seq, wq, bq)), heads(F.linear(seq, wk, bk)), heads(F.linear(seq, wv, bv))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        if pad is not None:
            keys = pad.permute(*order).reshape(b, n_rows, n)
            keys = torch.cat([keys.new_zeros(b, n_rows, 1), keys], 2)
            scores = scores.masked_fill(keys[:, :, None, None, :], float("-inf"))
        probs = F.dropout(scores.softmax(-1), self.attention_dropout, self.training)
        out = (probs @ v).transpose(2, 3).reshape(b, n_rows, n + 1, -1)
        tokens = out[:, :, 1:].reshape(b, *rows_shape, *seq_shape, -1)
        inverse = [order.index(a) for a in range(4)]
        return tokens.permute(*inverse, 4), out[:, :, 0].mean(1)

    def _attend(self, x, cls, pad):
        n_pat = len(self.patterns)
        parts = [self._naive_pattern(p, w, bias, x, cls, pad) for p, w, bias in
                 zip(self.patterns, self.qkv.weight.chunk(n_pat), self.qkv.bias.chunk(n_pat), strict=True)]
        return torch.cat([p[0] for p in parts], -1), torch.cat([p[1] for p in parts], -1)


def set_naive(model: torch.nn.Module, naive: bool) -> None:
    for m in model.modules():
        if isinstance(m, AttentionBlock):
            m.__class__ = NaiveAttentionBlock if naive else AttentionBlock


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_step(model, codes, train: bool, dtype, device) -> None:
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        if train:
            cls, hidden = model.backbone(codes)
            (cls.float().pow(2).mean() + hidden.float().pow(2).mean()).backward()
        else:
            with torch.no_grad():
                model.backbone(codes)


def time_interleaved(model, codes, steps: int, train: bool, dtype, device) -> dict[bool, float]:
    """Median seconds per step of each implementation (naive flag -> s), alternating the two
    step by step so that a change in machine load hits both alike (one warm-up step each)."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for step in range(steps + 1):
        for naive in (False, True):
            set_naive(model, naive)
            sync(device)
            start = time.perf_counter()
            run_step(model, codes, train, dtype, device)
            sync(device)
            if step > 0:
                times[naive].append(time.perf_counter() - start)
    set_naive(model, False)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vimpac-small")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--mode", choices=["train", "infer"], default="train")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument("--pad-frames", type=int, default=1, help="padded frames in the first clip (masked path)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    torch.manual_seed(0)
    model = create_model(args.model, dropout=0.0, attention_dropout=0.0).to(device).train(args.mode == "train")
    cfg = model.config
    codes = torch.randint(0, cfg.codebook_size, (args.batch, cfg.length, cfg.height, cfg.width), device=device)
    if args.pad_frames:
        codes[0, -args.pad_frames:] = cfg.pad_token_id
    with torch.no_grad():
        ours = model.backbone(codes)
        set_naive(model, True)
        naive = model.backbone(codes)
        set_naive(model, False)
    err = max((a - b).abs().max().item() for a, b in zip(ours, naive, strict=True))
    tol = 1e-3 if device.type == "cpu" else 2e-2
    print(f"{args.model}: layout {cfg.layout}, {cfg.num_layers} x {cfg.hidden_size}, clip {cfg.length}x{cfg.height}x"
          f"{cfg.width}, batch {args.batch}, {args.mode}, {args.precision}, device "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}, "
          f"threads {torch.get_num_threads()}")
    print(f"max |ours - naive| = {err:.2e}")
    if err > tol:
        print("outputs differ: the naive reference is not the same model")
        return 1
    tokens = args.batch * cfg.length * cfg.height * cfg.width
    sec = time_interleaved(model, codes, args.steps, args.mode == "train", dtype, device)
    for name, naive_flag in (("ours (SDPA, fused qkv)", False), ("naive attention", True)):
        print(f"{name:>24}: {tokens / sec[naive_flag]:12,.0f} tokens/s ({sec[naive_flag] * 1000:.1f} ms/step, median)")
    speedup = sec[True] / sec[False]
    print(f"speed-up: {speedup:.2f}x")
    return 0 if speedup > 1 else 1


if __name__ == "__main__":
    sys.exit(main())
