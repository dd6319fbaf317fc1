"""Typed, frozen dataclasses from plain data (YAML, JSON), with the key path of every mistake."""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A broken value: `key` is the dotted path inside the dataclass that raised it."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def require(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless `condition` holds: the one form of every recipe check."""
    if not condition:
        raise ConfigError(key, message)


def choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    """Require `value` to be one of `choices`, naming them in the error."""
    require(value in choices, name, f"must be one of {', '.join(choices)} (got {shown(value)})")


def to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    return value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of names to {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(path, f"must be {_type_name(tp)} (got {shown(value)})")
    if origin is tuple:
        (item_type, _) = (*typing.get_args(tp), None)[:2]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be {_type_name(tp)} (got {shown(value)})")
        return tuple(_convert(item, item_type, f"{path}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        key_type, item_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be {_type_name(tp)} (got {shown(value)})")
        return {_convert(key, key_type, path): _convert(item, item_type, f"{path}.{key}") for key, item in value.items()}
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # NaN compares false with every bound: refuse it here, for every key
                raise ConfigError(path, f"must be a finite number (got {shown(value)})")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(path, f"must be {_type_name(tp)} (got {shown(value)})")


def shown(value: Any, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters: a value built from YAML aliases may expand to gigabytes."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxtuple = short.maxdict = 6
    short.maxlevel = 3
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_dataclass(cls: type, raw: Any, path: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(path or "(top level)", f"must be a mapping of keys to values (got {raw!r})")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(fields)})"
            raise ConfigError(_join(path, str(key)), f"unknown key{hint}")
    values = {key: _convert(raw[key], hints[key], _join(path, key)) for key in raw}
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(_join(path, error.key), error.message) from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


