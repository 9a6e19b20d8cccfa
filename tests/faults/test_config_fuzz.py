"""A seeded config fuzzer: mutated packaged configs either load or fail with a ConfigError that
names a key; nothing else escapes (no traceback reaches the user)."""

from __future__ import annotations

import copy
import math
import random

import pytest
import yaml

from videolang.engine import load_config
from videolang.engine.config import list_configs, load_config_dict
from videolang.errors import ConfigError

ODD_VALUES = [None, "", "x" * 300, -1, 0, 10**30, -(10**30), 1.5, math.nan, math.inf, -math.inf, True, False,
              [], [1, "a"], {}, {"a": {"b": 1}}, "1e-4", "null", "../../etc/passwd", "\x00", "ünï", [[[]]]]


def _leaves(data, prefix=()):
    for key, value in data.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))


def _mutate(data: dict, rng: random.Random) -> dict:
    data = copy.deepcopy(data)
    path = rng.choice(list(_leaves(data)))
    *parents, last = path
    node = data
    for part in parents:
        node = node[part]
    action = rng.choice(["value", "value", "delete", "rename", "wrap"])
    if action == "value":
        node[last] = copy.deepcopy(rng.choice(ODD_VALUES))
    elif action == "delete":
        del node[last]
    elif action == "rename":
        node[f"{last}_typo"] = node.pop(last)
    else:
        node[last] = {"inner": node[last]}
    return data


CASES = 600


def test_mutated_configs_load_or_fail_with_a_named_config_error():
    rng = random.Random(26)
    names = list_configs()
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(CASES):
        data, _, _ = load_config_dict(rng.choice(names))
        mutated = _mutate(data, rng)
        try:
            load_config(mutated)
            outcomes["loaded"] += 1
        except ConfigError as exc:
            assert str(exc).strip(), mutated
            outcomes["refused"] += 1
    print(f"config fuzzer: {CASES} mutated configs, {outcomes}")
    assert outcomes["refused"] > CASES // 2


@pytest.mark.parametrize("text", ["recipe: [", "recipe: vimpac.pretrain\n\tdata: 1", "- a\n- b", "recipe: !!python/object:os.system x",
                                  "recipe: vimpac.pretrain\ndata: !!binary aGVsbG8=", "\xff\xfe", "recipe: vimpac.pretrain\nincludes: 3"])
def test_broken_yaml_files_are_named_errors(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff\xfe" else b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=str(path).replace("\\", "\\\\")):
        load_config(path)


def test_yaml_tags_never_build_objects(tmp_path):
    path = tmp_path / "tag.yaml"
    path.write_text("recipe: vimpac.pretrain\nname: !!python/name:os.system\n")
    with pytest.raises(ConfigError):
        load_config(path)
    assert yaml  # the loader is a SafeLoader subclass: the tag above is a YAML error, not a call
