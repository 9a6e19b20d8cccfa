"""Run configuration: YAML files with ``includes``, ``key.sub=value`` overrides, typed validation.

The merged mapping is validated against :class:`RunConfig` and the recipe's ``model`` / ``data``
dataclasses; every error names the key and the file (or override) it came from. A config is a
YAML path or a packaged config's name (:func:`resolve_config_path`). Reference: docs/engine.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml

from videolang.config_types import SchemaMismatch, type_name, validate_as
from videolang.errors import ConfigError

__all__ = [
    "OptimConfig",
    "RunConfig",
    "RunFolderConfig",
    "TrainerConfig",
    "config_to_dict",
    "describe_schema",
    "dump_config",
    "list_configs",
    "load_config_dict",
    "packaged_config",
    "packaged_config_root",
    "parse_override",
    "resolve_config_path",
    "validate_config",
]

Schedule = Literal["linear", "cosine", "constant", "polynomial"]
Precision = Literal[
    16, 32, 64, "16", "32", "64", "16-mixed", "bf16-mixed", "32-true", "16-true", "bf16-true", "64-true",
]


# --------------------------------------------------------------------------------------------
# schema


@dataclass
class OptimConfig:
    """AdamW, decay groups and the learning-rate schedule (``optim`` section).

    ``warmup_ratio`` (a fraction of the total optimizer steps) and ``warmup_steps`` are
    exclusive; neither means no warm-up. After warm-up the schedule goes from the peak ``lr``
    to ``lr * end_lr_ratio`` at the last step (``constant`` stays at the peak).
    ``lr_multipliers`` scales the learning rate of every parameter whose name starts with a
    prefix (``{"model.video_encoder": 0.1}``; the longest matching prefix wins).
    """

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float | None = None
    warmup_steps: int | None = None
    schedule: Schedule = "linear"
    power: float = 1.0
    end_lr_ratio: float = 0.0
    lr_multipliers: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.warmup_ratio is not None and self.warmup_steps is not None:
            raise ValueError("'warmup_ratio' and 'warmup_steps' are exclusive: set one of them")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"'warmup_ratio' must lie in [0, 1), got {self.warmup_ratio}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"'warmup_steps' must be >= 0, got {self.warmup_steps}")
        if self.lr <= 0:
            raise ValueError(f"'lr' must be > 0, got {self.lr}")
        if not 0.0 <= self.end_lr_ratio <= 1.0:
            raise ValueError(f"'end_lr_ratio' must lie in [0, 1], got {self.end_lr_ratio}")
        if self.power <= 0:
            raise ValueError(f"'power' must be > 0, got {self.power}")


@dataclass
class TrainerConfig:
    """Lightning ``Trainer`` arguments (``trainer`` section), plus checkpointing and progress.

    ``None`` for a ``limit_*_batches`` / ``val_check_interval`` key means Lightning's default.
    ``monitor`` names a logged validation metric (``val/R1``): the best checkpoint by it is kept
    and exported; without it only ``last.ckpt`` is kept and the last weights are exported.
    """

    max_epochs: int | None = 10
    max_steps: int = -1
    precision: Precision = "32-true"
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    log_every_n_steps: int = 50
    val_check_interval: int | float | None = None
    check_val_every_n_epoch: int | None = 1
    deterministic: bool | Literal["warn"] = False
    benchmark: bool | None = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    limit_predict_batches: int | float | None = None
    num_sanity_val_steps: int = 2
    enable_progress_bar: bool = True
    progress_bar: Literal["auto", "tqdm", "rich"] = "auto"
    monitor: str | None = None
    monitor_mode: Literal["min", "max"] = "min"
    save_top_k: int = 1
    checkpoint_every_n_steps: int | None = None
    early_stopping_patience: int | None = None

    def __post_init__(self) -> None:
        if self.accumulate_grad_batches < 1:
            raise ValueError(f"'accumulate_grad_batches' must be >= 1, got {self.accumulate_grad_batches}")
        if self.log_every_n_steps < 1:
            raise ValueError(f"'log_every_n_steps' must be >= 1, got {self.log_every_n_steps}")
        if self.early_stopping_patience is not None and self.monitor is None:
            raise ValueError("'early_stopping_patience' needs 'monitor' (the metric to watch)")


@dataclass
class RunFolderConfig:
    """Where the run folder goes (``run`` section): ``<root>/<name>/<version>/``.

    ``version`` ``None`` picks the next free ``version_N``; an int ``N`` means ``version_N``;
    a string is used as the folder name. ``export``: write ``export/`` (safetensors +
    config.json) at the end of fit. ``plots``: write PNG plots of the losses and metrics.
    """

    root: str = "runs"
    version: int | str | None = None
    export: bool = True
    plots: bool = True


@dataclass
class RunConfig:
    """One run: the recipe, its ``model`` / ``data`` sections and the engine's sections.

    ``model`` and ``data`` hold the recipe's own dataclasses (see
    :func:`videolang.engine.register_recipe`). ``name`` defaults to the recipe name.
    """

    recipe: str
    name: str = ""
    seed: int = 0
    model: Any = None
    data: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunFolderConfig = field(default_factory=RunFolderConfig)


# --------------------------------------------------------------------------------------------
# YAML: a loader that reads 1e-4 as a float


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (``1e-4``, ``5E+3``) instead of strings."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes tuples as lists."""


_Dumper.add_representer(tuple, lambda dumper, data: dumper.represent_list(list(data)))


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}{line}: invalid YAML ({problem})") from None


# --------------------------------------------------------------------------------------------
# files, includes and overrides

Origins = dict[str, str]  # dotted key -> where it was set ("configs/a.yaml", "command line 'k=v'")


def _merge(base: dict, update: Mapping, origins: Origins, where: str, prefix: str = "") -> None:
    """Deep-merge ``update`` into ``base`` in place, recording where each key came from."""
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        origins[dotted] = where
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, origins, where, f"{dotted}.")
        else:
            base[key] = _copy(value)
            if isinstance(value, Mapping):
                _record_origins(value, origins, where, f"{dotted}.")


def _record_origins(mapping: Mapping, origins: Origins, where: str, prefix: str) -> None:
    for key, value in mapping.items():
        origins[f"{prefix}{key}"] = where
        if isinstance(value, Mapping):
            _record_origins(value, origins, where, f"{prefix}{key}.")


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


def _read_file(path: Path, origins: Origins, stack: tuple[Path, ...] = ()) -> dict:
    """Read one YAML file and, first, the parents its ``includes`` names."""
    where = os.fspath(path)
    if path in stack:
        chain = " -> ".join(os.fspath(p) for p in (*stack, path))
        raise ConfigError(f"{where}: includes form a cycle ({chain})")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        parent = f" (included from {os.fspath(stack[-1])})" if stack else ""
        raise ConfigError(f"{where}: config file not found{parent}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read config file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{where}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                          f"at offset {exc.start})") from None
    data = _parse_yaml(text, where)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a config file must be a mapping of keys, got {type(data).__name__}")
    includes = data.pop("includes", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(p, str) for p in includes):
        raise ConfigError(f"{where}: 'includes' must be a list of file paths, got {includes!r}")
    merged: dict = {}
    for rel in includes:
        parent_path = (path.parent / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
        _merge(merged, _read_file(parent_path, origins, (*stack, path)), origins, os.fspath(parent_path))
    _merge(merged, data, origins, where)
    return merged


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``'optim.lr=1e-4'`` into ``('optim.lr', 1e-4)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[\w-]+)*", key):
        raise ConfigError(f"command line {text!r}: an override is key.sub=value (e.g. optim.lr=1e-4)")
    value = _parse_yaml(raw, f"command line {text!r}") if raw.strip() else ""
    return key, value


def _apply_override(data: dict, origins: Origins, text: str) -> None:
    key, value = parse_override(text)
    where = f"command line {text!r}"
    *parents, last = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            dotted = ".".join(parents[: i + 1])
            raise ConfigError(f"{where}: '{dotted}' is a value ({child!r}), not a section")
        node = child
    _merge(node, {last: value}, origins, where, f"{'.'.join(parents)}." if parents else "")


# --------------------------------------------------------------------------------------------
# packaged configs: videolang/configs/<method>/<task>.yaml (the repo-root configs/ links there)

_CONFIG_SUFFIXES = (".yaml", ".yml")


def packaged_config_root() -> Path:
    """The folder of the configs shipped in the package (``videolang/configs``)."""
    root = resources.files("videolang") / "configs"
    if not isinstance(root, Path):  # a zip import: not supported (pip installs unpack wheels)
        raise ConfigError(f"packaged configs are not on the file system ({root}); install videolang "
                          "from a wheel or a source folder")
    return root


def list_configs(method: str | None = None) -> list[str]:
    """Names (``<method>/<task>``, sorted) of the packaged configs, of one ``method`` if given.
    Files whose name starts with ``_`` are shared bases that configs include, not runs."""
    root = packaged_config_root()
    names = [
        p.relative_to(root).with_suffix("").as_posix()
        for p in root.rglob("*") if p.suffix in _CONFIG_SUFFIXES and p.is_file() and not p.name.startswith("_")
    ]
    if method is not None:
        names = [n for n in names if n.split("/", 1)[0] == method.strip("/")]
    return sorted(names)


def _packaged_name(source: str | os.PathLike) -> str | None:
    """``configs/videoclip/x.yaml`` / ``videoclip/x.yaml`` / ``videoclip/x`` -> ``videoclip/x``;
    ``None`` for a path that cannot name a packaged config (absolute, or with ``..``)."""
    text = os.fspath(source).replace("\\", "/")
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    parts = list(path.parts)
    if parts[0] == "configs" and len(parts) > 1:
        parts = parts[1:]
    if parts[-1].endswith(_CONFIG_SUFFIXES):
        parts[-1] = parts[-1].rsplit(".", 1)[0]
    return "/".join(parts)


def _close_configs(name: str, names: Sequence[str]) -> list[str]:
    """Packaged configs close to ``name``: the same task under another method, then close
    spellings (of the task within its method, then of the whole name)."""
    method, _, task = name.rpartition("/")
    same_task = [n for n in names if n.rpartition("/")[2] == task]
    pool = [n for n in names if n.rpartition("/")[0] == method] or names  # no such method: all
    tasks = difflib.get_close_matches(task, sorted({n.rpartition("/")[2] for n in pool}), n=5, cutoff=0.6)
    by_task = [n for t in tasks for n in pool if n.rpartition("/")[2] == t]
    by_name = difflib.get_close_matches(name, names, n=5, cutoff=0.75)
    return list(dict.fromkeys([*same_task, *by_task, *by_name]))[:6]


def packaged_config(name: str | os.PathLike) -> Path:
    """The file of the packaged config ``name``: ``videoclip/synthetic_pretrain`` (``.yaml`` and a
    leading ``configs/`` optional). Raises :class:`~videolang.errors.ConfigError` naming the
    config and the closest packaged ones when there is none of that name."""
    where = os.fspath(name)
    key = _packaged_name(name)
    if key is not None:
        root = packaged_config_root()
        for suffix in _CONFIG_SUFFIXES:
            candidate = root / f"{key}{suffix}"
            if candidate.is_file():
                return candidate
    names = list_configs()
    close = _close_configs(key, names) if key else []
    methods = sorted({n.split("/", 1)[0] for n in names})
    method = (key or "").rpartition("/")[0]
    if close:
        hint = f"close matches: {', '.join(close)}"
    elif method in methods:
        hint = f"{method} has {', '.join(n.rpartition('/')[2] for n in names if n.startswith(method + '/'))}"
    else:
        hint = f"packaged configs are <method>/<task> with method one of {', '.join(methods)}"
    raise ConfigError(f"no packaged config named '{key or where}'; {hint} "
                      f"(`videolang config list` lists all {len(names)})")


def resolve_config_path(source: str | os.PathLike) -> Path:
    """The YAML file a config argument names.

    A path that exists is returned as is. Otherwise a relative path names a packaged config
    (:func:`packaged_config`): ``videoclip/synthetic_pretrain``,
    ``videoclip/synthetic_pretrain.yaml`` and ``configs/videoclip/synthetic_pretrain.yaml`` all
    give ``<site-packages>/videolang/configs/videoclip/synthetic_pretrain.yaml``. Raises
    :class:`~videolang.errors.ConfigError` naming the config and the closest packaged ones.
    """
    path = Path(source)
    if path.exists():
        return path
    if _packaged_name(source) is None:
        raise ConfigError(f"{os.fspath(source)}: config file not found")
    try:
        return packaged_config(source)
    except ConfigError as exc:
        raise ConfigError(f"{os.fspath(source)}: config file not found, and {exc}") from None


def load_config_dict(
    source: str | os.PathLike | Mapping[str, Any], overrides: Sequence[str] = ()
) -> tuple[dict, Origins, str]:
    """Merged (not yet validated) mapping: includes, then the file, then the overrides.

    Returns ``(mapping, origins, source_name)``; ``origins`` maps each dotted key to where
    it was set. A mapping ``source`` is taken as is (its keys are reported as ``<dict>``).
    A path that does not exist may name a packaged config (:func:`resolve_config_path`).
    """
    origins: Origins = {}
    if isinstance(source, Mapping):
        where = "<dict>"
        data: dict = {}
        _merge(data, source, origins, where)
        data.pop("includes", None)
    else:
        path = resolve_config_path(source)
        where = os.fspath(source) if path == Path(source) else os.fspath(path)
        data = _read_file(path, origins)
    for text in overrides:
        _apply_override(data, origins, text)
    return data, origins, where


# --------------------------------------------------------------------------------------------
# validation


def _where(origins: Origins, source: str, key: str) -> str:
    """The file (or override) that set ``key``, or its closest parent section."""
    parts = key.replace("[", ".[").split(".")
    for n in range(len(parts), 0, -1):
        origin = origins.get(".".join(parts[:n]).replace(".[", "["))
        if origin is not None:
            return origin
    return source


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every valid dotted key of the schema (for 'did you mean' suggestions)."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls).get(f.name)
        keys.append(f"{prefix}{f.name}")
        if dataclasses.is_dataclass(tp):
            keys.extend(_all_keys(tp, f"{prefix}{f.name}."))
    return keys


_SECTIONS = ("model", "data", "optim", "trainer", "run")


def _section_classes(schema: Mapping[str, type]) -> dict[str, type]:
    """Every section's class: the engine's ``optim`` / ``trainer`` / ``run`` unless the recipe's
    ``schema`` (``model``, ``data`` and any subclassed section) says otherwise."""
    return {"optim": OptimConfig, "trainer": TrainerConfig, "run": RunFolderConfig, **schema}


@functools.cache
def _run_schema(sections: tuple[tuple[str, type], ...]) -> type:
    """:class:`RunConfig` with the recipe's section classes in place of ``Any`` (validation only)."""
    fields = [("recipe", str), *sections, ("name", str, field(default="")), ("seed", int, field(default=0))]
    return dataclasses.make_dataclass("RunConfig", fields)


def validate_config(data: Mapping, schema: Mapping[str, type], origins: Origins, source: str) -> RunConfig:
    """Build a :class:`RunConfig` from a merged mapping with pydantic; ``schema`` maps sections
    to classes (``model``, ``data``, and subclasses of the engine's ``optim`` / ``trainer`` / ``run``).
    Absent or empty sections get their defaults."""
    classes = _section_classes(schema)
    sections = tuple((name, classes[name]) for name in _SECTIONS)
    payload = dict(data)
    for name in _SECTIONS:
        if payload.get(name) is None:
            payload[name] = {}
    run_schema = _run_schema(sections)
    try:
        checked = validate_as(run_schema, payload)
    except SchemaMismatch as problem:
        message = problem.describe()
        if problem.kind == "unknown":
            close = difflib.get_close_matches(problem.key, _all_keys(run_schema), n=1, cutoff=0.6)
            message += f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{_where(origins, source, problem.key)}: {message}") from None
    except TypeError as exc:  # a section's own check raised TypeError (pydantic passes it through)
        raise ConfigError(f"{source}: invalid config: {exc}") from None
    cfg = RunConfig(**{f.name: getattr(checked, f.name) for f in dataclasses.fields(RunConfig)})
    _check_folder_name(cfg.name, "name", origins, source, nested=True)
    if isinstance(cfg.run.version, str):
        _check_folder_name(cfg.run.version, "run.version", origins, source, nested=False)
    return cfg


# A run's name and version become folders below run.root: no "..", no absolute path, no hidden
# or odd names ("a/b" makes nested folders).
_FOLDER_PART = r"[A-Za-z0-9_][A-Za-z0-9._+-]*"


def _check_folder_name(value: str, key: str, origins: Origins, source: str, *, nested: bool) -> None:
    pattern = rf"{_FOLDER_PART}(/{_FOLDER_PART})*" if nested else _FOLDER_PART
    if value and not re.fullmatch(pattern, value):
        allowed = "'/'-separated parts of " if nested else ""
        raise ConfigError(f"{_where(origins, source, key)}: key '{key}' must be {allowed}letters, digits and "
                          f"'._+-' (not starting with '.', '-' or '+': it names a folder below run.root), "
                          f"got {value!r}")


# --------------------------------------------------------------------------------------------
# public entry points


def describe_schema(recipe: str, schema: Mapping[str, type]) -> str:
    """Every key of ``recipe``'s run config as YAML: its default, and its type as a comment."""
    classes = _section_classes(schema)
    lines = [f"# every key of recipe {recipe}: its default, then its type as a comment",
             f"recipe: {recipe}", "name: ''  # str (default: the recipe name)", "seed: 0  # int"]
    for section in _SECTIONS:
        lines.append(f"{section}:  # {classes[section].__name__}")
        lines += _describe_fields(classes[section], "  ")
    return "\n".join(lines) + "\n"


def _describe_fields(cls: type, indent: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints.get(f.name, Any)
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            lines.append(f"{indent}{f.name}:  # {type_name(tp)} (required)")
            continue
        if dataclasses.is_dataclass(tp):
            lines.append(f"{indent}{f.name}:  # {tp.__name__}")
            lines += _describe_fields(tp, indent + "  ")
            continue
        value = yaml.dump(_copy(default), Dumper=_Dumper, default_flow_style=True, width=10_000).strip()
        value = value.removesuffix("\n...").strip()
        lines.append(f"{indent}{f.name}: {value}  # {type_name(tp)}")
    return lines


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The configuration as plain YAML-able data (tuples become lists)."""
    return _copy(dataclasses.asdict(cfg))


def dump_config(cfg: RunConfig) -> str:
    """The resolved configuration as YAML text (what ``config.yaml`` in a run folder holds)."""
    header = "# resolved videolang config: `videolang fit --config <this file>` reproduces the run\n"
    return header + yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
