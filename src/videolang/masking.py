"""Masking of frame-token grids for masked-token pretraining (VIMPAC).

:func:`block_mask` (the union of random 3-D blocks, the original ``mask_3d``'s distribution,
vectorised), :func:`block_mask_legacy` (the original's exact ``random`` draw order, for parity),
:func:`iid_mask` and :func:`apply_mask` (all-``[MASK]`` or BERT's 80/10/10). Masks are drawn from
an optional :class:`torch.Generator`, so a seed reproduces them; ``pad`` positions are never
masked. Distributions and the exact ratio: docs/vimpac.md ("Masking").
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

__all__ = [
    "apply_mask",
    "block_mask",
    "block_mask_legacy",
    "block_size_limits",
    "expected_block_mask_ratio",
    "iid_mask",
]

IGNORE_INDEX = -100


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    if len(shape) != 4 or any(int(s) < 1 for s in shape):
        raise ValueError(f"mask shape must be (B, L, H, W) with positive sizes, got {tuple(shape)}")
    b, t, h, w = (int(s) for s in shape)
    return b, t, h, w


def block_size_limits(length: int, height: int, width: int) -> tuple[int, int, int]:
    """Largest block along (T, H, W): ``floor(2L/3)``, ``floor(H/2)``, ``floor(W/2)``, at least 1."""
    return max(1, 2 * length // 3), max(1, height // 2), max(1, width // 2)


def _axis_cover(n: int, max_len: int, b: int, k: int, generator: torch.Generator | None,
                device: torch.device) -> torch.Tensor:
    """(b, k, n) bool: which positions of an axis of size ``n`` each of b x k blocks covers."""
    u = torch.rand(2, b, k, generator=generator, device=device, dtype=torch.float64)
    size = 1 + (u[0] * max_len).long().clamp_(max=max_len - 1)  # uniform on 1..max_len
    start = (u[1] * (n - size + 1)).long().clamp_(max=n - size)  # uniform on 0..n-size
    pos = torch.arange(n, device=device)
    return (pos >= start[..., None]) & (pos < (start + size)[..., None])


def block_mask(
    shape: Sequence[int],
    num_blocks: int,
    generator: torch.Generator | None = None,
    pad: torch.Tensor | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bool mask of ``shape = (B, L, H, W)``: the union of ``num_blocks`` random blocks per sample.

    ``pad`` (bool, same shape): positions never masked. ``generator`` makes the draw
    reproducible; its device decides where the mask is built unless ``device`` is given.
    """
    b, t, h, w = _check_shape(shape)
    if num_blocks < 0:
        raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
    if device is None:
        device = pad.device if pad is not None else (generator.device if generator is not None else "cpu")
    device = torch.device(device)
    mt, mh, mw = block_size_limits(t, h, w)
    if num_blocks == 0:
        return torch.zeros((b, t, h, w), dtype=torch.bool, device=device)
    ct = _axis_cover(t, mt, b, num_blocks, generator, device)
    ch = _axis_cover(h, mh, b, num_blocks, generator, device)
    cw = _axis_cover(w, mw, b, num_blocks, generator, device)
    # Union over blocks without materialising (B, k, L, H, W): a position is masked when some
    # block covers its t, h and w; loop over the (few) blocks, vectorised over the batch.
    mask = torch.zeros((b, t, h, w), dtype=torch.bool, device=device)
    for j in range(num_blocks):
        mask |= ct[:, j, :, None, None] & ch[:, j, None, :, None] & cw[:, j, None, None, :]
    return _drop_pad(mask, pad)


def _drop_pad(mask: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    if pad is None:
        return mask
    if pad.shape != mask.shape:
        raise ValueError(f"pad has shape {tuple(pad.shape)}, the mask {tuple(mask.shape)}")
    return mask & ~pad.bool()


def block_mask_legacy(shape: Sequence[int], num_blocks: int, rng: random.Random | None = None,
                      pad: torch.Tensor | None = None) -> torch.Tensor:
    """The original ``mask_3d`` block sampling, call for call: for each sample, for each block,
    ``randint(1, floor(2L/3))``, ``randint(1, H//2)``, ``randint(1, W//2)``, then the three
    starts, from ``rng`` (default: Python's global ``random``, as the original). A Python loop
    by design: it exists to reproduce the original's masks exactly, not for training."""
    b, t, h, w = _check_shape(shape)
    r = rng if rng is not None else random
    mt, mh, mw = 2 * t // 3, h // 2, w // 2
    mask = torch.zeros((b, t, h, w), dtype=torch.bool)
    for i in range(b):
        for _ in range(num_blocks):
            lt, lh, lw = r.randint(1, mt), r.randint(1, mh), r.randint(1, mw)
            t0, h0, w0 = r.randint(0, t - lt), r.randint(0, h - lh), r.randint(0, w - lw)
            mask[i, t0:t0 + lt, h0:h0 + lh, w0:w0 + lw] = True
    return _drop_pad(mask, pad.cpu() if pad is not None else None)


def iid_mask(shape: Sequence[int], prob: float, generator: torch.Generator | None = None,
             pad: torch.Tensor | None = None, *, device: torch.device | str | None = None) -> torch.Tensor:
    """I.i.d. Bernoulli(``prob``) mask of ``shape = (B, L, H, W)``; ``pad`` positions never masked."""
    _check_shape(shape)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"mask probability must be in [0, 1], got {prob}")
    if device is None:
        device = pad.device if pad is not None else (generator.device if generator is not None else "cpu")
    mask = torch.rand(tuple(shape), generator=generator, device=device) < prob
    return _drop_pad(mask, pad)


def apply_mask(
    codes: torch.Tensor,
    mask: torch.Tensor,
    mask_id: int,
    *,
    vocab_size: int | None = None,
    replace: tuple[float, float, float] = (1.0, 0.0, 0.0),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and labels for masked-token prediction.

    ``labels`` = ``codes`` where masked, ``-100`` elsewhere. ``replace`` = probabilities of
    ``([MASK], random code, unchanged)`` per masked token: ``(1, 0, 0)`` is the original
    (every masked token becomes ``[MASK]``), ``(0.8, 0.1, 0.1)`` BERT's scheme (needs
    ``vocab_size``: random codes are drawn from ``0..vocab_size-1``).
    """
    if mask.shape != codes.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and codes {tuple(codes.shape)} differ in shape")
    p_mask, p_rand, p_keep = replace
    if min(replace) < 0 or abs(p_mask + p_rand + p_keep - 1.0) > 1e-6:
        raise ValueError(f"replace probabilities must be >= 0 and sum to 1, got {replace}")
    labels = torch.where(mask, codes, torch.full_like(codes, IGNORE_INDEX))
    if p_rand == 0.0 and p_keep == 0.0:
        return codes.masked_fill(mask, mask_id), labels
    if p_rand > 0 and vocab_size is None:
        raise ValueError("random replacement needs vocab_size")
    u = torch.rand(codes.shape, generator=generator, device=codes.device)
    inputs = codes.masked_fill(mask & (u < p_mask), mask_id)
    if p_rand > 0:
        rand_codes = torch.randint(0, vocab_size, codes.shape, generator=generator, device=codes.device,
                                   dtype=codes.dtype)
        use_rand = mask & (u >= p_mask) & (u < p_mask + p_rand)
        inputs = torch.where(use_rand, rand_codes, inputs)
    return inputs, labels


def _axis_cover_prob(n: int, max_len: int) -> torch.Tensor:
    """q(k): probability that one block (length uniform on 1..max_len, start uniform where it
    fits) covers position k of an axis of size n (docs/vimpac.md, "Masking")."""
    k = torch.arange(n, dtype=torch.float64)
    q = torch.zeros(n, dtype=torch.float64)
    for length in range(1, max_len + 1):
        starts = n - length + 1
        # starts s with s <= k <= s + length - 1 and 0 <= s <= n - length
        lo = torch.clamp(k - length + 1, min=0)
        hi = torch.clamp(k, max=n - length)
        q += torch.clamp(hi - lo + 1, min=0) / starts
    return q / max_len


def expected_block_mask_ratio(length: int, height: int, width: int, num_blocks: int) -> float:
    """Exact expected mask ratio of :func:`block_mask` on an unpadded (L, H, W) clip:
    the mean over positions of ``1 - (1 - qT qH qW)^num_blocks``."""
    mt, mh, mw = block_size_limits(length, height, width)
    p = (_axis_cover_prob(length, mt)[:, None, None] * _axis_cover_prob(height, mh)[None, :, None]
         * _axis_cover_prob(width, mw)[None, None, :])
    return float((1 - (1 - p) ** num_blocks).mean())
