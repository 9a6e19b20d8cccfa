"""The configs shipped in the package (videolang/configs/<method>/<task>.yaml): every one validates
against its recipe's schema (keys and types), and a config argument names one by its name."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import yaml
from tests.packaged import packaged_recipes

from videolang.cli.train import register
from videolang.engine import config_to_dict, load_config
from videolang.engine.config import (
    list_configs,
    packaged_config,
    packaged_config_root,
    resolve_config_path,
)
from videolang.errors import ConfigError

YAMLS = sorted(packaged_config_root().rglob("*.yaml"))
BASES = [p for p in YAMLS if p.name.startswith("_")]  # shared parts that run configs include
CONFIGS = [p for p in YAMLS if p not in BASES]
CHECKOUT = Path(__file__).resolve().parents[2]


def test_every_yaml_is_a_listed_config_or_an_included_base():
    assert packaged_config_root() == Path(__import__("videolang").__file__).parent / "configs"
    assert list_configs() == sorted(p.relative_to(packaged_config_root()).with_suffix("").as_posix()
                                    for p in CONFIGS)
    assert len(CONFIGS) == len(list_configs()) >= 50
    included = {(p.parent / name).resolve() for p in CONFIGS
                for name in (yaml.safe_load(p.read_text()) or {}).get("includes", [])}
    assert set(BASES) <= included, f"bases no config includes: {set(BASES) - included}"


def test_glue_configs_differ_only_in_task_and_name():
    glue = {p.stem: config_to_dict(load_config(p)) for p in CONFIGS if p.stem.startswith("glue_")}
    assert len(glue) == 4
    first = glue.pop("glue_sst2")
    assert first["data"]["task"] == "SST-2" and first["optim"]["lr"] == 5e-5
    for name, cfg in glue.items():
        differ = {k for k in cfg if cfg[k] != first[k]} | {f"data.{k}" for k in cfg["data"]
                                                           if cfg["data"][k] != first["data"][k]}
        assert differ == {"name", "data", "data.task"}, (name, differ)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.recipe.startswith(path.parent.name)


def test_checkout_configs_folder_is_the_packaged_one():
    """The repo-root configs/ of a checkout (docs and commands use configs/...) is the package's."""
    root = CHECKOUT / "configs"
    if not (CHECKOUT / "pyproject.toml").is_file() or not root.exists():
        pytest.skip("not a source checkout")
    assert root.resolve() == (CHECKOUT / "src" / "videolang" / "configs").resolve()
    if root.is_symlink():
        assert os.readlink(root) == os.path.join("src", "videolang", "configs")  # relative


@pytest.mark.parametrize("name", [
    "videoclip/synthetic_pretrain", "videoclip/synthetic_pretrain.yaml",
    "configs/videoclip/synthetic_pretrain.yaml",
])
def test_a_name_finds_the_packaged_config(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no such file here: the name means the packaged config
    expected = packaged_config_root() / "videoclip" / "synthetic_pretrain.yaml"
    assert resolve_config_path(name) == expected
    assert packaged_config(name) == expected
    cfg = load_config(name, ["trainer.max_epochs=1"])
    assert cfg.recipe == "videoclip.pretrain" and cfg.trainer.max_epochs == 1


def test_a_local_file_wins_over_the_packaged_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = Path("videoclip") / "synthetic_pretrain.yaml"
    local.parent.mkdir()
    local.write_text("recipe: videoclip.pretrain\nname: local_copy\n")
    assert resolve_config_path(local) == local
    assert load_config("videoclip/synthetic_pretrain.yaml").name == "local_copy"
    assert load_config("videoclip/synthetic_pretrain").name == "videoclip_synthetic"  # no such local file


def test_a_missing_config_names_itself_and_close_matches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("videoclip/synthetic_pretrian")
    msg = str(info.value)
    assert msg.startswith("videoclip/synthetic_pretrian: config file not found, and no packaged config "
                          "named 'videoclip/synthetic_pretrian'; close matches: videoclip/synthetic_pretrain")
    assert "videolang config list" in msg
    # the task under another method
    with pytest.raises(ConfigError, match=r"'vlm/msrvtt_qa'; close matches: clipbert/msrvtt_qa"):
        resolve_config_path("configs/vlm/msrvtt_qa.yaml")
    # no close spelling: the method's configs
    with pytest.raises(ConfigError, match=r"'videoclip/nope'; videoclip has howto100m_pretrain, .*synthetic_pretrain"):
        packaged_config("videoclip/nope")
    # an unknown method: the methods
    with pytest.raises(ConfigError, match=r"method one of anticipation, clipbert, videoclip"):
        packaged_config("nomethod/xyz_qqq")
    # an absolute path is a path, never a name
    missing = tmp_path / "videoclip" / "synthetic_pretrain.yaml"
    with pytest.raises(ConfigError, match=r"synthetic_pretrain\.yaml: config file not found$"):
        load_config(missing)


def _run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="videolang")
    register(p.add_subparsers(dest="command"))
    args = p.parse_args(argv)
    return args.func(args)


def test_config_list_and_show_commands(capsys):
    assert _run(["config", "list"]) == 0
    assert capsys.readouterr().out.split() == list_configs()
    assert _run(["config", "list", "videoclip", "--paths"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == list_configs("videoclip") and all(r[0].startswith("videoclip/") for r in rows)
    assert all(Path(r[1]) == packaged_config(r[0]) for r in rows)
    assert _run(["config", "show", "vimpac/synthetic_finetune"]) == 0
    out = capsys.readouterr().out
    path = packaged_config("vimpac/synthetic_finetune")
    assert out == f"# {path}\n{path.read_text(encoding='utf-8')}"
    with pytest.raises(ConfigError, match="no packaged configs for method 'nomethod'"):
        _run(["config", "list", "nomethod"])
    with pytest.raises(ConfigError, match="close matches: vimpac/synthetic_finetune"):
        _run(["config", "show", "vimpac/synthetic_finetun"])


OBJECTIVES = {"videoclip.pretrain": "pretrain", "videoclip.retrieval": "retrieval", "vlm.pretrain": "pretrain",
              "vlm.retrieval": "retrieval", "vlm.mcqa": "retrieval", "vlm.captioning": "retrieval",
              "anticipation.mlm": "mlm", "anticipation.teacher": "teacher", "anticipation.student": "student",
              "vimpac.pretrain": "pretrain", "vimpac.finetune": "finetune"}


@pytest.mark.parametrize("recipe", sorted(OBJECTIVES))
def test_the_data_objective_is_the_recipes_own(recipe):
    """The data module reads the objective from a typed field that each recipe fixes: the
    default is the recipe's, and any other value is a named error."""
    assert load_config({"recipe": recipe}).data.objective == OBJECTIVES[recipe]
    other = "finetune" if OBJECTIVES[recipe] != "finetune" else "pretrain"
    with pytest.raises(ConfigError, match=r"data\.objective"):
        load_config({"recipe": recipe}, [f"data.objective={other}"])


def test_vlm_text_is_always_the_mmpt_layout():
    assert load_config({"recipe": "vlm.retrieval"}).data.mmpt_text_layout is True
    assert load_config({"recipe": "videoclip.retrieval"}).data.mmpt_text_layout is False
    with pytest.raises(ConfigError, match=r"data\.mmpt_text_layout"):
        load_config({"recipe": "vlm.captioning"}, ["data.mmpt_text_layout=false"])


RECIPES = packaged_recipes()


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_schema_dump_lists_every_key_with_its_default(recipe, capsys):
    """`videolang config show RECIPE` prints every key; read back as a config it is the defaults."""
    assert _run(["config", "show", recipe]) == 0
    text = capsys.readouterr().out
    dumped = yaml.safe_load(text)
    assert dumped["recipe"] == recipe and set(dumped) == {"recipe", "name", "seed", "model", "data", "optim",
                                                          "trainer", "run"}
    if "(required)" in text:  # a key without a default: the dump names it, a config must set it
        return
    dumped["name"] = recipe
    assert config_to_dict(load_config(dumped)) == config_to_dict(load_config({"recipe": recipe}))


def test_bad_values_name_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError, match=r"key 'trainer\.precision' expects one of 16, 32, 64, '16'"):
        load_config({"recipe": "vimpac.pretrain"}, ["trainer.precision=8"])
    with pytest.raises(ConfigError, match=r"unknown key 'data\.batch_sise' \(did you mean 'data\.batch_size'\?\)"):
        load_config({"recipe": "vimpac.pretrain"}, ["data.batch_sise=4"])
    with pytest.raises(ConfigError, match=r"key 'optim\.lr' expects float, got True \(bool\)"):
        load_config({"recipe": "vimpac.pretrain"}, ["optim.lr=true"])
