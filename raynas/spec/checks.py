"""Value checks shared by every section of the spec: types, ranges, unknown keys with a
did-you-mean, and strategy parameters as the registry declares them."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence


from raynas.errors import ConfigError, describe, did_you_mean
from raynas.search.registry import Param, Strategy


class _Section:
    """Reads one mapping of the experiment file, checking keys and types with key paths."""

    def __init__(self, raw: Any, path: str, allowed: Iterable[str], *, required: bool = False):
        if raw is None and not required:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(path, f"expected a mapping, got {describe(raw)}")
        self.raw, self.path = raw, path
        self.allowed = list(allowed)
        unknown_keys(raw, self.allowed, path)

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: str, default: Any = None, **rules: Any) -> Any:
        if name not in self.raw or self.raw[name] is None:
            return default
        return check_value(self.raw[name], kind, self.key(name), **rules)


def unknown_keys(raw: Mapping, allowed: Sequence[str], path: str) -> None:
    for key in raw:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(
                where,
                f"unknown key{did_you_mean(key, allowed) or ''}; allowed here: {', '.join(allowed)}",
            )


def check_value(
    value: Any,
    kind: str,
    path: str,
    *,
    low: float | None = None,
    low_open: bool = False,
    high: float | None = None,
    high_open: bool = False,
    choices: Sequence[Any] = (),
) -> Any:
    """Checks one scalar against a kind and bounds; returns it converted."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {describe(value)}")
        return value
    if kind == "strlist":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(path, f"expected a list of names, got {describe(value)}")
        return list(value)
    if kind in ("str", "enum"):
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {describe(value)}")
        if kind == "enum" and value not in choices:
            raise ConfigError(
                path, f"expected one of {', '.join(map(str, choices))}, got {value!r}{did_you_mean(value, choices)}"
            )
        return value
    if kind in ("int", "float"):
        v = value
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(path, f"expected {'an integer' if kind == 'int' else 'a number'}, got {describe(value)}")
        if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
            raise ConfigError(path, f"expected a finite number, got {describe(value)}")
        if kind == "int":
            if float(v) != int(v):
                raise ConfigError(path, f"expected an integer, got {describe(value)}")
            v = int(v)
        else:
            v = float(v)
        if low is not None and (v < low or (low_open and v == low)):
            raise ConfigError(path, f"must be {'>' if low_open else '>='} {low:g}, got {value}")
        if high is not None and (v > high or (high_open and v == high)):
            raise ConfigError(path, f"must be {'<' if high_open else '<='} {high:g}, got {value}")
        return v
    raise ValueError(f"unknown kind {kind}")  # internal misuse


def _strategy_options(strategy: Strategy, raw: Mapping, path: str, skip: Sequence[str]) -> dict:
    allowed = list(skip) + list(strategy.params)
    unknown_keys(raw, allowed, path)
    out = {}
    for name, param in strategy.params.items():
        out[name] = _param_value(param, raw.get(name), f"{path}.{name}")
    return out


def _param_value(param: Param, value: Any, path: str) -> Any:
    if value is None:
        return param.default
    return check_value(
        value, param.kind, path, low=param.low, low_open=param.low_open, high=param.high,
        high_open=param.high_open, choices=param.choices,
    )
