"""The evaluation buffer: ordering, de-duplication, objects, and gathering from 2 processes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler

from videolang.engine.evaluation import EvaluationBuffer, batch_indices, gather_stage


def test_gather_orders_by_index_and_keeps_the_first_repeat():
    buffer = EvaluationBuffer()
    buffer.add(torch.tensor([3, 0]), score=torch.tensor([30.0, 0.0]), caption=["c3", "c0"])
    buffer.add([1, 3], score=torch.tensor([10.0, 99.0]), caption=["c1", "repeat"])
    assert len(buffer) == 4
    out = buffer.gather()
    assert out["index"].tolist() == [0, 1, 3]
    assert out["score"].tolist() == [0.0, 10.0, 30.0]
    assert out["caption"] == ["c0", "c1", "c3"]


def test_rows_move_to_the_cpu_and_must_match_the_index():
    buffer = EvaluationBuffer()
    video = torch.ones(2, 3, requires_grad=True) * 2
    buffer.add([0, 1], video=video)
    assert not buffer.local()["video"].requires_grad
    with pytest.raises(ValueError, match="'video' has 1 rows, the index has 2"):
        buffer.add([2, 3], video=torch.ones(1, 3))
    with pytest.raises(ValueError, match="fields"):
        buffer.add([2], text=torch.ones(1, 3))


def test_an_empty_buffer_gathers_nothing_and_gather_stage_forgets():
    assert EvaluationBuffer().gather() == {}
    buffers = {"val": EvaluationBuffer()}
    buffers["val"].add([0], x=torch.zeros(1))
    assert gather_stage(buffers, "val")["x"].tolist() == [0.0]
    assert buffers == {} and gather_stage(buffers, "test") == {}


def test_batch_indices_follow_the_distributed_sampler():
    data = list(range(5))
    loader = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, num_replicas=2, rank=1, shuffle=False))
    trainer = SimpleNamespace(val_dataloaders=loader, test_dataloaders=[None, loader])
    # rank 1 of 2 over 5 samples: 1, 3 and then 0, repeated to even out the shards
    assert batch_indices(trainer, "val", 0).tolist() == [1, 3]
    assert batch_indices(trainer, "test", 1, dataloader_idx=1).tolist() == [0]


def _gather_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    buffer = EvaluationBuffer()
    # 5 samples over 2 ranks: rank 0 has 0, 2, 4; rank 1 has 1, 3 and a repeat of 0. Rows of
    # different lengths per rank (ragged), strings beside them.
    index = [0, 2, 4] if rank == 0 else [1, 3, 0]
    buffer.add(index, value=torch.tensor(index, dtype=torch.float) * 10, name=[f"s{i}" for i in index])
    if rank == 0:
        buffer.add([5], value=torch.tensor([50.0]), name=["s5"])  # a longer shard
    got = buffer.gather()
    Path(out, f"{rank}.json").write_text(json.dumps({"index": got["index"].tolist(), "value": got["value"].tolist(),
                                                     "name": got["name"]}))
    dist.destroy_process_group()


def test_gather_across_two_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gather_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    expected = {"index": [0, 1, 2, 3, 4, 5], "value": [0.0, 10.0, 20.0, 30.0, 40.0, 50.0],
                "name": ["s0", "s1", "s2", "s3", "s4", "s5"]}
    for rank in range(2):
        assert json.loads((tmp_path / f"{rank}.json").read_text()) == expected
