"""Print VIMPAC's block-masking ratio table (paper Table 2, ``vimpac.md`` §4).

For L = 5 and 10 frames, 16x16 and 32x32 token maps and 4..8 blocks: the Monte Carlo mean
ratio of :func:`videolang.masking.block_mask` over ``--samples`` clips, the exact value of the
formula and the paper's number; exits 1 if any Monte Carlo mean is 0.2 points or more away
from the exact value.

    python benchmarks/vimpac_mask_table.py [--samples 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from videolang.masking import block_mask, expected_block_mask_ratio

PAPER = {
    (5, 16): [11.9, 14.5, 17.0, 19.4, 21.7],
    (5, 32): [10.6, 13.1, 15.2, 17.5, 19.5],
    (10, 16): [10.4, 12.8, 15.0, 17.1, 19.2],
    (10, 32): [9.3, 11.4, 13.4, 15.4, 17.2],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=2000, help="samples per block_mask call")
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(args.seed)
    worst = 0.0
    start = time.perf_counter()
    print(f"{'L, map':>9} {'blocks':>6} {'MC %':>7} {'exact %':>8} {'paper %':>8} {'|MC-exact|':>10}")
    for (length, size), paper in PAPER.items():
        for blocks, paper_value in zip(range(4, 9), paper, strict=True):
            total, n = 0.0, 0
            while n < args.samples:
                b = min(args.chunk, args.samples - n)
                total += block_mask((b, length, size, size), blocks, generator=g).float().mean().item() * b
                n += b
            mc = 100 * total / n
            exact = 100 * expected_block_mask_ratio(length, size, size, blocks)
            worst = max(worst, abs(mc - exact))
            print(f"{length:>3}, {size}x{size} {blocks:>6} {mc:7.2f} {exact:8.2f} {paper_value:8.1f} {abs(mc - exact):10.3f}")
    print(f"max |MC - exact| = {worst:.3f} points over {args.samples} samples per setting "
          f"({time.perf_counter() - start:.1f} s)")
    return 0 if worst < 0.2 else 1


if __name__ == "__main__":
    sys.exit(main())
