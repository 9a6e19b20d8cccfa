"""Config mappings checked against dataclasses by pydantic: run configs (``engine/config.py``)
and model configs (``config.json``, ``model.overrides``). Torch-free, so loading a config stays light.

Values from YAML or JSON are data, so they are validated with pydantic's strict JSON rules: an int
is accepted for a float and a list for a tuple, nothing else is converted (``"64"`` is not an int,
``1`` and ``"no"`` are not booleans). The first problem becomes a :class:`SchemaMismatch` that
names the dotted key, the expected type and the value.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

import pydantic

from videolang.errors import ConfigError

__all__ = ["SchemaMismatch", "dataclass_from_dict", "type_name", "validate_as"]

_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")
_MISSING = ("missing_argument", "missing", "missing_keyword_only_argument")


@dataclass
class SchemaMismatch(Exception):
    """The first problem pydantic found: ``kind`` is ``unknown`` (a key the schema lacks),
    ``missing`` (a required key), ``type`` (a value of the wrong type) or ``invalid`` (a
    dataclass's own check, ``message``); ``key`` is dotted (``optim.betas``, ``model.sizes[1]``)."""

    kind: Literal["unknown", "missing", "type", "invalid"]
    key: str
    expected: Any = None
    value: Any = None
    message: str = ""

    def describe(self) -> str:
        """One phrase naming the key: ``key 'optim.lr' expects float, got 'fast' (str)``."""
        if self.kind == "unknown":
            return f"unknown key '{self.key}'"
        if self.kind == "missing":
            return f"missing required key '{self.key}'"
        if self.kind == "invalid":
            section = f"'{self.key}'" if self.key else "the config"
            return f"invalid {section}: {self.message}"
        return f"key '{self.key}' expects {type_name(self.expected)}, got {self.value!r} ({type(self.value).__name__})"


def type_name(tp: Any) -> str:
    """A type annotation in words: ``int or null``, ``one of 'a', 'b'``, ``tuple[float, float]``."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, dict):
        args = ", ".join("..." if a is Ellipsis else type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]" if args else origin.__name__
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


@functools.cache
def _checker(tp: Any) -> type[pydantic.BaseModel]:
    """A model with one field of type ``tp``: stdlib dataclasses below a model take its config,
    and this config refuses unknown keys at every depth."""
    return pydantic.create_model("Check", value=(tp, ...), __config__=pydantic.ConfigDict(extra="forbid"))


def _plain(value: Any) -> Any:
    """``value`` with dataclass instances as mappings and non-JSON scalars (YAML dates) as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def validate_as(tp: Any, data: Any) -> Any:
    """``data`` validated as the annotation ``tp`` (usually a dataclass); raises
    :class:`SchemaMismatch` for the first problem (unknown keys before the others)."""
    plain = _plain(data)
    text = json.dumps({"value": plain}, allow_nan=True)
    try:
        return _checker(tp).model_validate_json(text, strict=True).value
    except pydantic.ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e["type"] not in _UNKNOWN)
        first = {**errors[0], "loc": errors[0]["loc"][1:]}
        raise _mismatch(tp, plain, first) from None


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError as exc:
        raise ConfigError(f"cannot read the field types of {cls.__qualname__} ({exc}): define config "
                          "dataclasses, and the types they use, at module level") from None


def _without_null(tp: Any) -> Any:
    """``X | None`` -> ``X`` (pydantic puts no step in the error location for an optional)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _step(tp: Any, part: Any) -> tuple[Any, str] | None:
    """The annotation one location step below ``tp`` and the key suffix, or None where the
    error belongs to ``tp`` itself (a union member's tag, a fixed-length tuple's item)."""
    tp = _without_null(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(part, str) and part in _hints(tp):
        return _hints(tp)[part], f".{part}"
    if origin is list and isinstance(part, int):
        return (args[0] if args else Any), f"[{part}]"
    if origin is tuple and isinstance(part, int) and len(args) == 2 and args[1] is Ellipsis:
        return args[0], f"[{part}]"
    if origin is dict and isinstance(part, str):
        return (args[1] if args else Any), f".{part}"
    return None


def _value_at(data: Any, part: Any) -> Any:
    try:
        return data[part]
    except (KeyError, IndexError, TypeError):
        return None


def _mismatch(tp: Any, data: Any, error: Mapping[str, Any]) -> SchemaMismatch:
    loc = list(error["loc"])
    key, value, walked = "", data, 0
    for part in loc:
        step = _step(tp, part)
        if step is None:
            break
        tp, suffix = step
        key, value, walked = key + suffix, _value_at(value, part), walked + 1
    key = key.lstrip(".")
    rest = loc[walked:]
    # an unknown key: the location ends with a name that the dataclass reached does not have
    unknown = len(rest) == 1 and isinstance(rest[0], str) and dataclasses.is_dataclass(_without_null(tp))
    if unknown and error["type"] in _UNKNOWN:
        return SchemaMismatch("unknown", f"{key}.{rest[0]}".lstrip("."))
    if not rest and error["type"] in _MISSING:
        return SchemaMismatch("missing", key)
    if not rest and error["type"] in ("value_error", "assertion_error"):
        reason = error.get("ctx", {}).get("error")
        return SchemaMismatch("invalid", key, message=str(reason) if reason is not None else error["msg"])
    return SchemaMismatch("type", key, expected=tp, value=value)


def dataclass_from_dict(cls: type, data: Mapping[str, Any], what: str, *, ignore: tuple[str, ...] = ()) -> Any:
    """An instance of the dataclass ``cls`` from ``data`` (keys in ``ignore`` dropped), or a
    :class:`ConfigError` starting with ``what`` (``"VIMPAC config"``) that names the bad key."""
    try:
        return validate_as(cls, {k: v for k, v in data.items() if k not in ignore})
    except SchemaMismatch as problem:
        raise ConfigError(f"{what}: {problem.describe()}") from None
