"""Type checks shared by the run-config validator and the model configuration dataclasses
(``config.json`` and ``model.overrides``). Torch-free, so that loading a run config stays light.

Model configs are plain dataclasses filled from JSON or from a run config's ``model.overrides``
mapping, which the run-config validator cannot type (its keys depend on the model). Without a
check, a YAML string such as ``classifier_norm: "no"`` would be truthy and silently switch a
feature on; this names the key instead.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from videolang.errors import ConfigError


def value_fits(value: Any, tp: Any) -> bool | None:
    """Whether ``value`` fits the scalar annotation ``tp``; None for annotations not checked here."""
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        verdicts = [value_fits(value, arg) for arg in typing.get_args(tp)]
        if any(v is None for v in verdicts):
            return None
        return any(verdicts)
    return None


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(tp))
    return {bool: "true or false", type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def check_field_types(cfg: Any, what: str) -> None:
    """Raise a :class:`ConfigError` naming the first scalar field of the dataclass ``cfg``
    (bool, int, float, str or an optional of them) whose value has the wrong type.

    ``what`` starts the message (``"VIMPAC config"``). Ints are accepted for float fields;
    booleans are not accepted for int or float fields. Other annotations are not checked.
    """
    hints = typing.get_type_hints(type(cfg))
    for field in dataclasses.fields(cfg):
        tp = hints.get(field.name)
        value = getattr(cfg, field.name)
        if value_fits(value, tp) is False:
            raise ConfigError(f"{what}: {field.name} must be {_type_name(tp)}, got {value!r}")
