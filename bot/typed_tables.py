"""Frozen dataclasses built from TOML tables: each value checked against its field's type
hint (unions, literals, lists, nested tables), every mistake one line naming the file and the
dotted key."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Set
from typing import Any, Literal

from bot.errors import ConfigError

__all__ = ["build"]


def build(
    cls: type, data: Mapping[str, Any], source: str, prefix: str = "", unset: Set[str] = frozenset()
) -> Any:
    """``cls`` from the TOML table ``data`` (nested tables and lists of tables too); the
    fields in ``unset`` are not keys a file may set."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name not in unset}
    values: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{dotted}'")
        hint = hints[key]
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{dotted}' must be a table ([{dotted}])")
            values[key] = build(typing.cast(type, hint), value, source, f"{dotted}.")
        elif item is not None and dataclasses.is_dataclass(item):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{source}: '{dotted}' must be a list of tables ([[{dotted}]])")
            values[key] = [
                build(typing.cast(type, item), entry, source, f"{dotted}[{index}].")
                for index, entry in enumerate(value)
            ]
        else:
            values[key] = _check(hint, value, source, dotted)
    return cls(**values)


def _check(hint: Any, value: Any, source: str, dotted: str) -> Any:
    if _matches(hint, value):
        # TOML integers are fine where a float is expected.
        return float(value) if hint is float else value
    raise ConfigError(
        f"{source}: '{dotted}' must be {_describe(hint)}, not {type(value).__name__} {value!r}"
    )


def _matches(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(arm, value) for arm in typing.get_args(hint))
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(item, v) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(hint))
    if origin is Literal:
        return " or ".join(repr(arg) for arg in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )
