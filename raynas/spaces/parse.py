"""Parse the YAML (or plain Python) form of a search space into nodes, with key-path errors.

The forms::

    depth: {int: [1, 4]}                       # also step: 2, log: true
    lr: {float: [1.0e-4, 1.0e-1], log: true}   # also step: 0.1
    width: {choice: [32, 64, 128]}             # options may be sub-spaces
    optimizer: adam                            # a plain value is fixed; {value: X} is explicit
    head: {hidden: {choice: [0, 64]}}          # nested dicts nest
    stages:                                    # a searched number of blocks, each sampled on its own
      repeat: {min: 1, max: 4}
      block: {channels: {choice: [16, 32]}, kernel: {choice: [3, 5]}}
    momentum: {float: [0.8, 0.99], when: {optimizer: sgd}}   # present only when a sibling matches

Any domain may carry ``when: {sibling: value}`` or ``when: {sibling: [value, ...]}``.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from raynas.errors import ConfigError, describe, did_you_mean
from raynas.spaces.domains import (
    _DOMAIN_KEYS,
    Choice,
    Dict,
    Fixed,
    Float,
    Int,
    List,
    Node,
    Repeat,
)

_ALLOWED = {
    "int": {"int", "step", "log", "when"},
    "float": {"float", "step", "log", "when"},
    "choice": {"choice", "when"},
    "value": {"value", "when"},
    "repeat": {"repeat", "block", "when"},
}


def parse_space(raw: Any, path: str = "space") -> Node:
    """Builds a node tree from the YAML form; nodes already built are kept as they are.

    Args:
        raw: A mapping (the usual case), a list, a domain dict or a constant.
        path: Key path of ``raw`` in the experiment file, used in error messages.

    Raises:
        ConfigError: A rule is broken; the message names the key path and the value.

    Example:
        >>> node = parse_space({"depth": {"int": [1, 4]}, "act": {"choice": ["relu", "gelu"]}})
        >>> node.size()
        8
    """
    if isinstance(raw, Node):
        return raw
    if isinstance(raw, dict):
        domain_keys = [k for k in _DOMAIN_KEYS if k in raw]
        if len(domain_keys) > 1:
            raise ConfigError(
                path,
                f"a domain has exactly one of {', '.join(_DOMAIN_KEYS)}, got {', '.join(domain_keys)}",
            )
        if domain_keys:
            return _parse_domain(domain_keys[0], raw, path)
        _refuse_misspelt_domain(raw, path)
        if "when" in raw or "block" in raw:
            key = "when" if "when" in raw else "block"
            raise ConfigError(
                f"{path}.{key}",
                f"'{key}' belongs to a domain ({', '.join(_DOMAIN_KEYS)}), but this dict has none; "
                + (
                    "put `when` on each conditional key instead"
                    if key == "when"
                    else "a repeated block needs `repeat: {min: N, max: M}` beside `block`"
                ),
            )
        return _parse_dict(raw, path)
    if isinstance(raw, (list, tuple)):
        items = [parse_space(item, f"{path}.{i}") for i, item in enumerate(raw)]
        if all(isinstance(it, Fixed) for it in items):
            return Fixed([it.value for it in items])  # type: ignore[attr-defined]
        return List(items)
    return Fixed(raw)


def _refuse_misspelt_domain(raw: dict, path: str) -> None:
    """A mapping without a domain keyword whose key is a near miss of one (``{choise: [...]}``,
    ``{flaot: [0, 1], log: true}``) is a typo, not a fixed nested dict: it would search nothing."""
    keywords = (*_DOMAIN_KEYS, "step", "log", "when", "block")
    near = [k for k in raw if isinstance(k, str) and k not in keywords
            and difflib.get_close_matches(k.lower(), _DOMAIN_KEYS, n=1, cutoff=0.75)]
    if near and (len(raw) == 1 or any(k in raw for k in keywords)):
        key = near[0]
        raise ConfigError(
            f"{path}.{key}",
            f"{key!r} is not a domain keyword{did_you_mean(key, _DOMAIN_KEYS)}; a domain is one of "
            f"{', '.join(_DOMAIN_KEYS)}. If {key!r} really is a key of a fixed nested mapping, write "
            f"it as {{value: {{{key}: ...}}}}",
        )


def _parse_dict(raw: dict, path: str) -> Node:
    items: dict[str, Node] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ConfigError(path, f"keys must be strings, got {describe(key)}")
        if "." in key or not key:
            raise ConfigError(
                f"{path}.{key}", "keys may not be empty or contain '.' (dots separate key paths)"
            )
        items[key] = parse_space(value, f"{path}.{key}")
    if all(isinstance(n, Fixed) and not n.when for n in items.values()):
        return Fixed({k: n.value for k, n in items.items()})  # type: ignore[attr-defined]
    _check_conditions(items, path)
    try:
        return Dict(items)
    except ConfigError as err:
        raise err.under(path) from None


def _parse_domain(kind: str, raw: dict, path: str) -> Node:
    extra = set(raw) - _ALLOWED[kind]
    if extra:
        key = sorted(extra)[0]
        raise ConfigError(
            f"{path}.{key}",
            f"unknown key for a {kind} domain; allowed: {', '.join(sorted(_ALLOWED[kind]))}"
            + did_you_mean(key, _ALLOWED[kind]),
        )
    when = _parse_when(raw.get("when"), f"{path}.when")
    if kind == "int":
        low, high = _bounds(raw["int"], f"{path}.int", integer=True)
        step = _number(raw.get("step", 1), f"{path}.step", integer=True)
        log = _flag(raw.get("log", False), f"{path}.log")
        if low > high:
            raise ConfigError(path, f"int range needs low <= high, got low={low}, high={high}")
        if step < 1:
            raise ConfigError(f"{path}.step", f"step must be >= 1, got {step}")
        if log and low < 1:
            raise ConfigError(path, f"a log-scale int range needs low >= 1, got low={low}")
        if log and step != 1:
            raise ConfigError(path, "an int range cannot have both log: true and a step; drop one")
        return Int(low, high, step=step, log=log, when=when)
    if kind == "float":
        low, high = _bounds(raw["float"], f"{path}.float", integer=False)
        log = _flag(raw.get("log", False), f"{path}.log")
        step = raw.get("step")
        if step is not None:
            step = _number(step, f"{path}.step", integer=False)
            if step <= 0:
                raise ConfigError(f"{path}.step", f"step must be > 0, got {step:g}")
            if log:
                raise ConfigError(path, "a float range cannot have both log: true and a step; drop one")
        if low > high:
            raise ConfigError(path, f"float range needs low <= high, got low={low:g}, high={high:g}")
        if log and low <= 0:
            raise ConfigError(path, f"a log-scale float range needs low > 0, got low={low:g}")
        return Float(low, high, step=step, log=log, when=when)
    if kind == "choice":
        options = raw["choice"]
        if not isinstance(options, (list, tuple)):
            raise ConfigError(f"{path}.choice", f"choice needs a list of options, got {describe(options)}")
        if not options:
            raise ConfigError(f"{path}.choice", "choice needs at least one option, got an empty list")
        return Choice([parse_space(o, f"{path}.choice.{i}") for i, o in enumerate(options)], when=when)
    if kind == "value":
        return Fixed(raw["value"], when=when)
    # repeat
    spec = raw["repeat"]
    if isinstance(spec, bool) or not isinstance(spec, (int, dict)):
        raise ConfigError(
            f"{path}.repeat", f"repeat needs {{min: N, max: M}} or a count, got {describe(spec)}"
        )
    if isinstance(spec, int):
        lo = hi = spec
    else:
        unknown = set(spec) - {"min", "max"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"{path}.repeat.{key}", "unknown key; allowed: min, max" + did_you_mean(key, ["min", "max"]))
        if "min" not in spec or "max" not in spec:
            raise ConfigError(f"{path}.repeat", f"repeat needs both min and max, got {describe(spec)}")
        lo = _number(spec["min"], f"{path}.repeat.min", integer=True)
        hi = _number(spec["max"], f"{path}.repeat.max", integer=True)
    if lo < 0 or lo > hi:
        raise ConfigError(f"{path}.repeat", f"repeat needs 0 <= min <= max, got min={lo}, max={hi}")
    if "block" not in raw:
        raise ConfigError(path, "repeat needs a `block`: the space of one repeated item")
    block = parse_space(raw["block"], f"{path}.block")
    if block.when:
        raise ConfigError(f"{path}.block.when", "a repeated block cannot be conditional; put `when` on the repeat")
    return Repeat(block, min=lo, max=hi, when=when)


def _parse_when(raw: Any, path: str) -> dict[str, tuple] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(path, f"when needs a mapping {{sibling_key: value or [values]}}, got {describe(raw)}")
    out = {}
    for key, allowed in raw.items():
        values = tuple(allowed) if isinstance(allowed, (list, tuple)) else (allowed,)
        if not values:
            raise ConfigError(f"{path}.{key}", "when needs at least one value to match, got an empty list")
        out[str(key)] = values
    return out


def _check_conditions(items: dict[str, Node], path: str) -> None:
    for key, node in items.items():
        for dep, allowed in (node.when or {}).items():
            where = f"{path}.{key}.when.{dep}"
            if dep == key:
                raise ConfigError(where, "a key cannot be conditional on itself")
            if dep not in items:
                raise ConfigError(
                    where,
                    f"conditions name a key beside this one in {path}, but there is no {dep!r}"
                    + did_you_mean(dep, [k for k in items if k != key]),
                )
            sibling = items[dep]
            if sibling.size() == math.inf or isinstance(sibling, (Repeat, List, Dict)):
                raise ConfigError(
                    where, f"conditions can only look at a choice, an int or a fixed value; {dep!r} is not"
                )
            if isinstance(sibling, (Choice, Int)):
                possible = list(sibling.grid())
                never = [v for v in allowed if v not in possible]
                if len(never) == len(allowed):
                    raise ConfigError(
                        where,
                        f"the condition can never hold: {dep} takes {', '.join(map(str, possible[:10]))}"
                        f"{', ...' if len(possible) > 10 else ''}; got {describe(never[0])}"
                        + did_you_mean(never[0], possible),
                    )


def _number(raw: Any, path: str, *, integer: bool) -> Any:
    # YAML 1.1 reads "1e-4" as a string; accept numeric strings instead of failing on them.
    value = raw
    if isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            value = raw
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(path, f"expected {kind}, got {describe(raw)}")
    if integer:
        if float(value) != int(value):
            raise ConfigError(path, f"expected an integer, got {describe(raw)}")
        return int(value)
    if math.isnan(value) or math.isinf(value):
        raise ConfigError(path, f"expected a finite number, got {describe(raw)}")
    return float(value)


def _bounds(raw: Any, path: str, *, integer: bool) -> tuple:
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        kind = "int" if integer else "float"
        raise ConfigError(path, f"a {kind} range needs [low, high], got {describe(raw)}")
    return _number(raw[0], f"{path}.0", integer=integer), _number(raw[1], f"{path}.1", integer=integer)


def _flag(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(path, f"expected true or false, got {describe(raw)}")
    return raw
