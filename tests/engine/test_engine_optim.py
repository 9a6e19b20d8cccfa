"""Learning-rate schedules and AdamW decay groups."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from videolang.engine.config import OptimConfig
from videolang.engine.optim import (
    LrSchedule,
    build_optimizer,
    build_param_groups,
    build_scheduler,
    lr_schedule,
    warmup_steps_for,
)
from videolang.errors import ConfigError

T, W = 100, 10  # total and warm-up steps


def factors(schedule: str, **kw) -> list[float]:
    sched = LrSchedule(schedule, total_steps=T, warmup_steps=W, **kw)
    return [sched(s) for s in range(T + 1)]


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant", "polynomial"])
def test_warmup_is_linear_and_reaches_peak_exactly_at_its_end(schedule):
    f = factors(schedule)
    assert f[0] == 0.0
    assert f[W // 2] == pytest.approx(0.5)
    assert all(a < b for a, b in itertools.pairwise(f[: W + 1]))
    assert f[W] == 1.0
    assert max(f) == 1.0


def test_linear_reaches_zero_at_the_end():
    f = factors("linear")
    assert f[T] == 0.0
    assert f[W + (T - W) // 2] == pytest.approx(0.5)
    assert all(a > b for a, b in itertools.pairwise(f[W:]))


def test_cosine_halfway_is_half_peak():
    f = factors("cosine")
    assert f[W + (T - W) // 2] == pytest.approx(0.5)
    assert f[T] == pytest.approx(0.0, abs=1e-12)
    assert f[W + 30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 30 / (T - W))))


def test_polynomial_power_one_is_linear_and_power_two_is_quadratic():
    assert factors("polynomial", power=1.0) == pytest.approx(factors("linear"))
    assert factors("polynomial", power=2.0)[W + (T - W) // 2] == pytest.approx(0.25)


def test_constant_is_flat_after_warmup_and_end_ratio_is_the_floor():
    assert factors("constant")[W:] == [1.0] * (T - W + 1)
    assert factors("linear", end_lr_ratio=0.1)[T] == pytest.approx(0.1)
    assert factors("cosine", end_lr_ratio=0.1)[W + (T - W) // 2] == pytest.approx(0.55)


def test_no_warmup_starts_at_peak():
    assert LrSchedule("linear", T)(0) == 1.0


def test_warmup_from_ratio_or_steps_and_unknown_total():
    assert warmup_steps_for(OptimConfig(warmup_ratio=0.1), 250) == 25
    assert warmup_steps_for(OptimConfig(warmup_steps=7), 250) == 7
    assert warmup_steps_for(OptimConfig(), 250) == 0
    assert lr_schedule(OptimConfig(schedule="constant", warmup_steps=3), float("inf"))(10) == 1.0
    with pytest.raises(ConfigError, match=r"set trainer\.max_steps"):
        lr_schedule(OptimConfig(schedule="cosine"), float("inf"))


def test_scheduler_steps_the_optimizer_lr_per_step():
    model = nn.Linear(2, 2)
    cfg = OptimConfig(lr=0.1, warmup_steps=W, schedule="linear")
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, T)
    lrs = []
    for _ in range(T):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == 0.0 and lrs[W] == pytest.approx(0.1) and lrs[T] == pytest.approx(0.0)
    # the schedule is saved in the scheduler's state (a dataclass, not a closure)
    assert sched.state_dict()["lr_lambdas"][0]["total_steps"] == T


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(10, 4)
        self.position_embeddings = nn.Embedding(6, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 6, 4))
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.bn = nn.BatchNorm1d(4)
        self.conv = nn.Conv1d(4, 4, 3, bias=False)
        self.gn = nn.GroupNorm(2, 4)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Block()
        self.head = nn.Linear(4, 10)
        self.tied = nn.Linear(4, 10, bias=False)
        self.tied.weight = self.head.weight  # shared: must appear once
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


DECAY = {"backbone.word_embeddings.weight", "backbone.proj.weight", "backbone.conv.weight", "head.weight"}
NO_DECAY = {
    "backbone.position_embeddings.weight", "backbone.pos_embed", "backbone.proj.bias", "backbone.norm.weight",
    "backbone.norm.bias", "backbone.bn.weight", "backbone.bn.bias", "backbone.gn.weight", "backbone.gn.bias",
    "head.bias",
}


def _names(groups, predicate) -> set[str]:
    return {n for g in groups if predicate(g) for n in g["param_names"]}


def test_decay_groups_by_module_type_and_name():
    model = Net()
    groups = build_param_groups(model, weight_decay=0.05)
    assert _names(groups, lambda g: g["weight_decay"] == 0.05) == DECAY
    assert _names(groups, lambda g: g["weight_decay"] == 0.0) == NO_DECAY
    # every trainable parameter exactly once, by identity; frozen ones left out
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params})
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in params} == trainable
    for g in groups:
        assert len(g["params"]) == len(g["param_names"])


def test_lr_multipliers_by_prefix():
    model = Net()
    groups = build_param_groups(model, 0.05, lr=1e-3, lr_multipliers={"backbone": 0.1, "backbone.proj": 0.5})
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"decay", "no_decay", "backbone/decay", "backbone/no_decay",
                            "backbone.proj/decay", "backbone.proj/no_decay"}
    assert by_name["backbone/decay"]["lr"] == pytest.approx(1e-4)
    assert by_name["backbone.proj/decay"]["param_names"] == ["backbone.proj.weight"]  # longest prefix wins
    assert by_name["backbone.proj/no_decay"]["lr"] == pytest.approx(5e-4)
    assert by_name["decay"]["lr"] == pytest.approx(1e-3)
    assert _names(groups, lambda g: True) == DECAY | NO_DECAY
    with pytest.raises(ConfigError, match="prefix 'backbon' matches no trainable parameter"):
        build_param_groups(model, 0.05, lr_multipliers={"backbon": 0.1})


def test_build_optimizer_is_adamw_with_config():
    opt = build_optimizer(Net(), OptimConfig(lr=3e-4, weight_decay=0.1, betas=(0.8, 0.9), eps=1e-6))
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.1}
    assert all(g["lr"] == 3e-4 and g["betas"] == (0.8, 0.9) and g["eps"] == 1e-6 for g in opt.param_groups)
