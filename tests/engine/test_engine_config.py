"""Config files, includes, overrides and the typed validator: errors name the key and the file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal

import pytest
from tests.engine.toy_recipe import RECIPE, ToyData, ToyDataConfig, ToyModule

from videolang.engine import load_config, register_recipe
from videolang.engine.config import OptimConfig, dump_config, parse_override
from videolang.errors import ConfigError


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture()
def configs(tmp_path):
    """base.yaml <- method/task.yaml (includes ../base.yaml)."""
    write(tmp_path / "base.yaml", f"recipe: {RECIPE}\nseed: 1\noptim:\n  lr: 1e-3\n  weight_decay: 0.05\n"
                                  "trainer:\n  max_epochs: 5\n  log_every_n_steps: 10\n")
    task = write(tmp_path / "method" / "task.yaml",
                 "includes: [../base.yaml]\nname: task\noptim:\n  lr: 2e-4\nmodel:\n  hidden: 32\n")
    return tmp_path, task


def test_includes_merge_parent_first_child_wins(configs):
    _, task = configs
    cfg = load_config(task)
    assert cfg.recipe == RECIPE and cfg.name == "task" and cfg.seed == 1
    assert cfg.optim.lr == pytest.approx(2e-4)  # child wins; 2e-4 is a float, not a YAML 1.1 string
    assert cfg.optim.weight_decay == pytest.approx(0.05)  # from the parent
    assert cfg.trainer.max_epochs == 5 and cfg.trainer.log_every_n_steps == 10
    assert cfg.model.hidden == 32 and cfg.model.dropout == 0.2  # recipe dataclass + its defaults
    assert isinstance(cfg.data, ToyDataConfig)


def test_overrides_are_applied_last_and_parsed_as_yaml(configs):
    _, task = configs
    cfg = load_config(task, ["optim.lr=1e-4", "trainer.max_epochs=3", "model.hidden=8",
                             "trainer.devices=[0, 1]", "trainer.monitor=val/acc", "optim.betas=[0.8, 0.9]",
                             "optim.lr_multipliers={model.head: 0.5}"], seed=11)
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.trainer.max_epochs == 3 and cfg.model.hidden == 8 and cfg.seed == 11
    assert cfg.trainer.devices == [0, 1] and cfg.trainer.monitor == "val/acc"
    assert cfg.optim.betas == (0.8, 0.9) and cfg.optim.lr_multipliers == {"model.head": 0.5}
    assert load_config(task, ["trainer.max_epochs=null"]).trainer.max_epochs is None


def test_parse_override():
    assert parse_override("optim.lr=1e-4") == ("optim.lr", 1e-4)
    assert parse_override("name=a=b") == ("name", "a=b")
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        parse_override("optim.lr")


def test_unknown_key_names_file_and_suggests(configs):
    root, _ = configs
    bad = write(root / "bad.yaml", f"recipe: {RECIPE}\noptim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert str(exc.value) == f"{bad}: unknown key 'optim.lrr' (did you mean 'optim.lr'?)"


def test_unknown_key_from_override_or_parent_names_its_source(configs):
    root, task = configs
    with pytest.raises(ConfigError, match=r"command line 'trainer\.max_epoch=3': unknown key "
                                          r"'trainer\.max_epoch' \(did you mean 'trainer\.max_epochs'\?\)"):
        load_config(task, ["trainer.max_epoch=3"])
    write(root / "base.yaml", f"recipe: {RECIPE}\nmodel:\n  hiden: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(task)
    message = str(exc.value)
    assert message.startswith(str(root / "base.yaml")) and "'model.hiden'" in message
    assert "did you mean 'model.hidden'" in message


@pytest.mark.parametrize(("override", "expected"), [
    ("trainer.max_epochs=three", "key 'trainer.max_epochs' expects int or null, got 'three' (str)"),
    ("optim.lr=fast", "key 'optim.lr' expects float, got 'fast' (str)"),
    ("model.hidden=1.5", "key 'model.hidden' expects int, got 1.5 (float)"),
    ("trainer.enable_progress_bar=1", "key 'trainer.enable_progress_bar' expects bool, got 1 (int)"),
    ("optim.schedule=cosin", "key 'optim.schedule' expects one of 'linear', 'cosine', 'constant', 'polynomial'"),
    ("optim.betas=[0.9]", "key 'optim.betas' expects tuple[float, float], got [0.9] (list)"),
    ("trainer.devices=[0, x]", "key 'trainer.devices' expects int or str or list[int]"),
    ("optim=3", "key 'optim' expects a mapping (OptimConfig), got 3 (int)"),
])
def test_wrong_types_name_key_type_and_value(configs, override, expected):
    _, task = configs
    with pytest.raises(ConfigError) as exc:
        load_config(task, [override])
    assert f"command line '{override}'" in str(exc.value)
    assert expected in str(exc.value)


def test_wrong_type_in_file_names_the_file(configs):
    root, _ = configs
    bad = write(root / "typo.yaml", f"recipe: {RECIPE}\ntrainer:\n  max_epochs: three\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: key 'trainer.max_epochs' expects int or null"):
        load_config(bad)


def test_exclusive_warmup_and_range_checks(configs):
    _, task = configs
    with pytest.raises(ConfigError, match="invalid 'optim': 'warmup_ratio' and 'warmup_steps' are exclusive"):
        load_config(task, ["optim.warmup_ratio=0.1", "optim.warmup_steps=10"])
    with pytest.raises(ConfigError, match=r"'warmup_ratio' must lie in \[0, 1\)"):
        load_config(task, ["optim.warmup_ratio=1.0"])
    with pytest.raises(ConfigError, match="early_stopping_patience"):
        load_config(task, ["trainer.early_stopping_patience=2"])


def test_recipe_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"<dict>: unknown recipe 'nosuchmethod\.pretrain'"):
        load_config({"recipe": "nosuchmethod.pretrain"})
    with pytest.raises(ConfigError, match="key 'recipe' must name a recipe"):
        load_config(write(tmp_path / "norecipe.yaml", "seed: 1\n"))


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = write(tmp_path / "broken.yaml", f"recipe: {RECIPE}\noptim: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"{broken}:\d+: invalid YAML"):
        load_config(broken)
    a = write(tmp_path / "a.yaml", "includes: [b.yaml]\n")
    write(tmp_path / "b.yaml", "includes: [a.yaml]\n")
    with pytest.raises(ConfigError, match="includes form a cycle"):
        load_config(a)
    orphan = write(tmp_path / "orphan.yaml", "includes: [nothere.yaml]\n")
    with pytest.raises(ConfigError, match=r"nothere.yaml: config file not found \(included from .*orphan.yaml\)"):
        load_config(orphan)


def test_dumped_config_reloads_to_the_same_config(configs, tmp_path):
    _, task = configs
    cfg = load_config(task, ["optim.betas=[0.8, 0.95]", "trainer.devices=[0]", "optim.warmup_steps=5"], seed=3)
    again = load_config(write(tmp_path / "resolved.yaml", dump_config(cfg)))
    assert again == cfg


@dataclass
class EncoderConfig:
    layers: int = 2
    kind: Literal["mlp", "transformer"] = "mlp"


@dataclass
class NestedModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    sizes: list[int] = field(default_factory=lambda: [4, 8])
    checkpoint: str | None = None


@dataclass
class LongerOptim(OptimConfig):
    layer_decay: float = 1.0


register_recipe("nested.test", ToyModule, ToyData, NestedModelConfig, ToyDataConfig, optim_config_cls=LongerOptim)


def test_nested_dataclasses_lists_optional_and_extended_sections():
    cfg = load_config({"recipe": "nested.test", "model": {"encoder": {"layers": 4}}},
                      ["model.sizes=[1, 2, 3]", "model.checkpoint=w.pt", "optim.layer_decay=0.7"])
    assert cfg.model.encoder == EncoderConfig(layers=4, kind="mlp")
    assert cfg.model.sizes == [1, 2, 3] and cfg.model.checkpoint == "w.pt"
    assert isinstance(cfg.optim, LongerOptim) and cfg.optim.layer_decay == pytest.approx(0.7)
    with pytest.raises(ConfigError, match=r"key 'model\.sizes\[1\]' expects int, got 'x' \(str\)"):
        load_config({"recipe": "nested.test"}, ["model.sizes=[1, x]"])
    with pytest.raises(ConfigError, match=r"unknown key 'model\.encoder\.layer' \(did you mean 'model\.encoder\.layers'"):
        load_config({"recipe": "nested.test"}, ["model.encoder.layer=3"])
    with pytest.raises(ConfigError, match=r"key 'model\.encoder\.kind' expects one of 'mlp', 'transformer'"):
        load_config({"recipe": "nested.test"}, ["model.encoder.kind=cnn"])


@pytest.mark.parametrize(("key", "value"), [("name", "../escape"), ("name", "/abs"), ("name", ".hidden"),
                                            ("name", "a/../b"), ("name", "tab\tname"), ("run.version", "v/1"),
                                            ("run.version", "..")])
def test_run_names_cannot_leave_the_runs_folder(configs, key, value):
    _, task = configs
    with pytest.raises(ConfigError, match=rf"key '{re.escape(key)}' must be"):
        load_config(task, [f"{key}={json.dumps(value)}"])


def test_nested_run_names_are_folders_below_the_root(configs):
    _, task = configs
    assert load_config(task, ["name=ablations/lr-1e-4_b+"]).name == "ablations/lr-1e-4_b+"
