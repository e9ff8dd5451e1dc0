"""Configurations from elsewhere, read against a space: their Optuna decisions, and mapping into it.

Warm starts hand a searcher trials of an earlier search, whose space may differ from this one.
:func:`project` maps such a configuration into the space key path by key path (clipping numbers,
taking the nearest numeric option, dropping keys the space has no place for) or says why it
cannot; :func:`params` gives a configuration's decisions as :meth:`Space.suggest` names them, so
that Optuna (``optuna.trial.FixedTrial``) or a policy can replay it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from raynas.spaces.domains import Choice, Dict, Fixed, Float, Int, List, Node, Repeat, _is_real, _join, _same


class OutsideSpace(ValueError):
    """A configuration that cannot be mapped into the space; the message names the key path."""


def params(node: Node, config: Any) -> dict[str, Any]:
    """The decisions ``node.suggest`` would make to produce ``config`` (a value of ``node``).

    Example:
        >>> from raynas.spaces import Space
        >>> space = Space({"blocks": {"repeat": {"min": 1, "max": 3}, "block": {"k": {"choice": [3, 5]}}}})
        >>> params(space.root, {"blocks": [{"k": 5}, {"k": 3}]})
        {'blocks.len': 2, 'blocks.0.k': 5, 'blocks.1.k': 3}
    """
    out: dict[str, Any] = {}
    _params(node, config, "", out)
    return out


def _params(node: Node, value: Any, name: str, out: dict) -> None:
    if isinstance(node, (Int, Float)):
        out[name] = value
    elif isinstance(node, Choice):
        if node.plain:
            out[name] = value
            return
        index = node.index(value)
        if index is None:
            raise OutsideSpace(f"{name or 'the configuration'}: {value!r} is a value of none of the options")
        out[name] = index
        _params(node.options[index], value, _join(name, index), out)
    elif isinstance(node, Repeat):
        if node.min < node.max:
            out[_join(name, "len")] = len(value)
        for i, block in enumerate(value):
            _params(node.block, block, _join(name, i), out)
    elif isinstance(node, List):
        for i, (item, v) in enumerate(zip(node.items, value)):
            _params(item, v, _join(name, i), out)
    elif isinstance(node, Dict):
        for key in node.order:
            child = node.items[key]
            if key in value and Dict.active(child, value):
                _params(child, value[key], _join(name, key), out)


def project(node: Node, config: Any) -> tuple[Any, list[str]]:
    """``config`` mapped into ``node``'s values, and what had to change (empty when it fitted).

    Numbers outside a range are clipped (and put on its step grid), a numeric value missing
    from a choice of numbers takes the nearest option, a repeated block's surplus blocks are
    dropped, keys the space has no place for are dropped, and a constant takes the space's
    value. A key the space needs but the configuration lacks, or a value of the wrong kind,
    cannot be mapped: :class:`OutsideSpace` says where.

    Example:
        >>> from raynas.spaces import Space
        >>> space = Space({"depth": {"int": [1, 4]}, "width": {"choice": [32, 64]}})
        >>> project(space.root, {"depth": 6, "width": 60, "act": "relu"})
        ({'depth': 4, 'width': 64}, ['depth: 6 -> 4', 'width: 60 -> 64', 'act: dropped'])
    """
    changes: list[str] = []
    return _project(node, config, "", changes), changes


def _project(node: Node, value: Any, path: str, changes: list[str]) -> Any:
    where = path or "the configuration"
    if isinstance(node, Fixed):
        if value is not _ABSENT and not _same(value, node.value):
            changes.append(f"{where}: {value!r} -> {node.value!r}")
        return node.value
    if value is _ABSENT:
        raise OutsideSpace(f"{where}: missing (the space draws it, the earlier trial has no value)")
    if isinstance(node, (Int, Float)):
        if not _is_real(value):
            raise OutsideSpace(f"{where}: {value!r} is not a number")
        new = _clip(node, value)
        if new != value or (isinstance(node, Int) and not isinstance(value, int)):
            changes.append(f"{where}: {value!r} -> {new!r}")
        return new
    if isinstance(node, Choice):
        index = node.index(value)
        if index is not None:
            return value
        constants = node.constants()
        if constants and _is_real(value) and all(_is_real(c) for c in constants):
            new = min(constants, key=lambda c: abs(c - value))
            changes.append(f"{where}: {value!r} -> {new!r}")
            return new
        for option in node.options:
            if isinstance(option, Fixed):
                continue
            try:
                return _project(option, value, path, changes)
            except OutsideSpace:
                continue
        raise OutsideSpace(f"{where}: {value!r} is a value of none of the options")
    if isinstance(node, (Repeat, List)):
        if not isinstance(value, (list, tuple)):
            raise OutsideSpace(f"{where}: expected a list, got {value!r}")
        if isinstance(node, List):
            if len(value) != len(node.items):
                raise OutsideSpace(f"{where}: {len(value)} items, the space has {len(node.items)}")
            return [_project(it, v, _join(path, i), changes) for i, (it, v) in enumerate(zip(node.items, value))]
        if len(value) < node.min:
            raise OutsideSpace(f"{where}: {len(value)} blocks, fewer than the space's {node.min}")
        if len(value) > node.max:
            changes.append(f"{where}: {len(value)} blocks -> {node.max}")
            value = value[: node.max]
        return [_project(node.block, v, _join(path, i), changes) for i, v in enumerate(value)]
    if isinstance(node, Dict):
        if not isinstance(value, Mapping):
            raise OutsideSpace(f"{where}: expected a mapping, got {value!r}")
        out: dict[str, Any] = {}
        for key in node.order:
            child = node.items[key]
            if Dict.active(child, out):
                out[key] = _project(child, value.get(key, _ABSENT), _join(path, key), changes)
        changes.extend(f"{_join(path, k)}: dropped" for k in value if k not in out)
        return {k: out[k] for k in node.items if k in out}
    raise OutsideSpace(f"{where}: cannot map into a {type(node).__name__}")  # pragma: no cover - all nodes above


_ABSENT = object()


def _clip(node: Int | Float, value: float) -> float | int:
    value = min(max(value, node.low), node.high)
    if node.step is not None:
        k = round((value - node.low) / node.step)
        k = max(0, min(k, int(math.floor((node.high - node.low) / node.step + 1e-9))))
        value = node.low + k * node.step
    if isinstance(node, Int):
        return int(round(value))
    return round(value, 12) if node.step is not None else float(value)
