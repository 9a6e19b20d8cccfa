"""Negatives gathered across 2 CPU processes (gloo) give the loss and gradients of one process
holding the whole batch."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from videolang.losses import videoclip_loss

WORLD = 2


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str, normalize: bool) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        video, text = _inputs()
        rows = slice(rank * 4, rank * 4 + 4)
        v = video[rows].clone().requires_grad_(True)
        t = text[rows].clone().requires_grad_(True)
        loss = videoclip_loss(v, t, gather=True, normalize=normalize)
        loss.backward()
        torch.save({"loss": loss.detach(), "gv": v.grad, "gt": t.grad}, os.path.join(out_dir, f"{rank}.pt"))
        # No rank may tear the group down while the other is still in a collective (the
        # backward of all_gather): that aborts the slower process.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Leave without C++ static destructors: after a distributed backward, a still-joinable
    # autograd worker thread can abort the process at exit ("terminate called without an active
    # exception", seen once in a full run) although every result was already saved.
    os._exit(0)


def _run(tmp_path, normalize: bool) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), normalize), nprocs=WORLD, join=True)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(WORLD)]
    video, text = _inputs()
    video.requires_grad_(True)
    text.requires_grad_(True)
    full = videoclip_loss(video, text, normalize=normalize)
    full.backward()
    # Each rank's loss is the mean over its own rows: their mean is the full-batch loss.
    mean_loss = sum(p["loss"] for p in parts) / WORLD
    torch.testing.assert_close(mean_loss, full.detach(), atol=1e-6, rtol=0)
    # all_gather's backward sums every rank's contribution; DDP then averages over ranks.
    gv = torch.cat([p["gv"] for p in parts]) / WORLD
    gt = torch.cat([p["gt"] for p in parts]) / WORLD
    torch.testing.assert_close(gv, video.grad, atol=1e-6, rtol=0)
    torch.testing.assert_close(gt, text.grad, atol=1e-6, rtol=0)


def test_gathered_negatives_match_single_process(tmp_path):
    _run(tmp_path, normalize=False)


def test_gathered_negatives_match_single_process_normalized(tmp_path):
    (tmp_path / "n").mkdir()
    _run(tmp_path / "n", normalize=True)
