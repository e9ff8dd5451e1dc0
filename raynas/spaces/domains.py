"""Search-space nodes: the only place that knows how a domain samples, enumerates and counts.

A space is a tree. Leaves are domains (:class:`Int`, :class:`Float`, :class:`Choice`,
:class:`Fixed`); inner nodes are :class:`Dict` (named children, possibly conditional),
:class:`List` (fixed-length list) and :class:`Repeat` (a searched number of blocks, each
with its own choices). Every node can carry a ``when`` condition on sibling keys of the
:class:`Dict` that holds it.

Each node knows how to:

* ``sample(rng)``: draw a value with a ``random.Random``;
* ``grid(path)``: enumerate its values (raises :class:`~raynas.errors.ConfigError` naming
  the infinite domain where it cannot);
* ``size()``: count its values (``math.inf`` for continuous domains);
* ``suggest(trial, name)``: draw a value through an Optuna trial (define-by-run);
* ``to_dict()``: render itself in the YAML form it was parsed from (:func:`parse_space` reads
  that form, with key-path errors: a node and its YAML form are written in one place);
* ``mismatch(value, path)`` / ``contains(value)``: tell whether a value is one of its own
  (what mutation and tests check a configuration against).

Mutation for evolutionary search lives in :mod:`raynas.spaces.mutation` and uses the same nodes.

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

import copy
import difflib
import itertools
import math
import random
from collections.abc import Mapping
from typing import Any, Iterator, Sequence

from raynas.errors import ConfigError, describe, did_you_mean

MISSING = object()

# Values Optuna can store directly in a categorical distribution.
_OPTUNA_PRIMITIVES = (type(None), bool, int, float, str)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _where(path: str) -> str:
    return path or "the configuration"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps ``True`` apart from ``1`` (Python's ``==`` does not), also when nested."""
    if type(a) is type(b) and type(a) in (str, int, float):  # the common case, kept fast
        return a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _node(value: Any, path: str) -> "Node":
    """A child given in Python may be a node or its YAML form (dicts of domains, constants)."""
    if isinstance(value, Node):
        return value
    return parse_space(value, path)


class Node:
    """Base class of every space node.

    Attributes:
        when: Condition on sibling keys, ``{key: (allowed values...)}``; the node is only
            present in a sampled dict when every named sibling took an allowed value.
    """

    when: dict[str, tuple] | None = None

    def sample(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def grid(self, path: str = "") -> Iterator[Any]:
        raise NotImplementedError

    def size(self) -> float:
        raise NotImplementedError

    def suggest(self, trial: Any, name: str) -> Any:
        raise NotImplementedError

    def to_dict(self) -> Any:
        raise NotImplementedError

    def continuous_paths(self, path: str = "") -> list[str]:
        """Key paths of the domains below this node that cannot be enumerated."""
        return []

    def mismatch(self, value: Any, path: str = "") -> str | None:
        """Why ``value`` is not a value of this node (naming its key path), or None when it is."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """True when ``value`` is one this node can produce.

        Example:
            >>> Int(1, 4).contains(3), Int(1, 4).contains(5)
            (True, False)
        """
        return self.mismatch(value) is None

    # -- helpers shared by subclasses
    def _with_when(self, out: dict) -> dict:
        if self.when:
            out["when"] = {k: (v[0] if len(v) == 1 else list(v)) for k, v in self.when.items()}
        return out

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


class Int(Node):
    """Integer in ``[low, high]`` (both included), optionally on a ``step`` grid or log scale.

    Example:
        >>> Int(1, 4).size()
        4
    """

    def __init__(self, low: int, high: int, *, step: int = 1, log: bool = False, when=None):
        self.low, self.high, self.step, self.log, self.when = int(low), int(high), int(step), bool(log), when

    def _count(self) -> int:
        return (self.high - self.low) // self.step + 1

    def sample(self, rng: random.Random) -> int:
        if self.log:
            # Log-uniform over the integers: P(k) is proportional to log((k + 1) / k).
            u = rng.uniform(math.log(self.low), math.log(self.high + 1))
            return min(self.high, max(self.low, int(math.floor(math.exp(u)))))
        return self.low + self.step * rng.randrange(self._count())

    def grid(self, path: str = "") -> Iterator[int]:
        return iter(range(self.low, self.high + 1, self.step))

    def size(self) -> float:
        return self._count()

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def mismatch(self, value: Any, path: str = "") -> str | None:
        if not _is_int(value):
            return f"{_where(path)}: expected an integer in [{self.low}, {self.high}], got {value!r}"
        if not self.low <= value <= self.high:
            return f"{_where(path)}: {value} is outside [{self.low}, {self.high}]"
        if (value - self.low) % self.step:
            return f"{_where(path)}: {value} is not on the grid {self.low}, {self.low + self.step}, ..."
        return None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"int": [self.low, self.high]}
        if self.step != 1:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return self._with_when(out)


class Float(Node):
    """Real number in ``[low, high]``, uniform or log-uniform, continuous unless ``step`` is set.

    Example:
        >>> Float(1e-4, 1e-1, log=True).size()
        inf
    """

    def __init__(self, low: float, high: float, *, step: float | None = None, log: bool = False, when=None):
        self.low, self.high, self.log, self.when = float(low), float(high), bool(log), when
        self.step = None if step is None else float(step)

    def _count(self) -> int:
        assert self.step is not None  # internal: only called on stepped ranges
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def _value(self, k: int) -> float:
        return round(self.low + k * self.step, 12)  # type: ignore[operator]

    def sample(self, rng: random.Random) -> float:
        if self.step is not None:
            return self._value(rng.randrange(self._count()))
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def grid(self, path: str = "") -> Iterator[float]:
        if self.step is None:
            raise ConfigError(
                path,
                f"float range [{self.low:g}, {self.high:g}] is continuous and cannot be enumerated "
                f"by grid search; give it a step (e.g. step: {(self.high - self.low) / 4:g}) "
                "or make it a choice",
            )
        return (self._value(k) for k in range(self._count()))

    def size(self) -> float:
        return math.inf if self.step is None else self._count()

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def continuous_paths(self, path: str = "") -> list[str]:
        return [path] if self.step is None else []

    def mismatch(self, value: Any, path: str = "") -> str | None:
        if not _is_real(value):
            return f"{_where(path)}: expected a number in [{self.low:g}, {self.high:g}], got {value!r}"
        # Sampling goes through exp/log and uniform(), which may overshoot a bound by an ulp.
        tol = 1e-9 * max(abs(self.low), abs(self.high))
        if not self.low - tol <= value <= self.high + tol:
            return f"{_where(path)}: {value:g} is outside [{self.low:g}, {self.high:g}]"
        if self.step is not None:
            k = (value - self.low) / self.step
            if abs(k - round(k)) > 1e-6:
                return f"{_where(path)}: {value:g} is not on the grid {self.low:g}, {self.low + self.step:g}, ..."
        return None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"float": [self.low, self.high]}
        if self.step is not None:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return self._with_when(out)


class Fixed(Node):
    """A constant. Plain YAML values become ``Fixed``; ``{value: X}`` is the explicit form."""

    def __init__(self, value: Any, *, when=None):
        self.value, self.when = value, when

    def sample(self, rng: random.Random) -> Any:
        return copy.deepcopy(self.value)

    def grid(self, path: str = "") -> Iterator[Any]:
        yield copy.deepcopy(self.value)

    def size(self) -> float:
        return 1

    def suggest(self, trial: Any, name: str) -> Any:
        return copy.deepcopy(self.value)

    def mismatch(self, value: Any, path: str = "") -> str | None:
        return None if _same(value, self.value) else f"{_where(path)}: expected {self.value!r}, got {value!r}"

    def contains(self, value: Any) -> bool:
        return _same(value, self.value)  # Choice.index asks every option: skip the message

    def to_dict(self) -> Any:
        if self.when or _looks_like_domain(self.value):
            return self._with_when({"value": self.value})
        return self.value


class Choice(Node):
    """One of ``options``; an option may itself be a sub-space (a :class:`Node`).

    Example:
        >>> Choice([32, 64, 128]).size()
        3
    """

    def __init__(self, options: Sequence[Any], *, when=None):
        self.options = [o if isinstance(o, Node) else _node(o, f"choice.{i}") for i, o in enumerate(options)]
        self.when = when

    @property
    def plain(self) -> bool:
        """True when every option is a constant Optuna can store as a categorical value."""
        return all(
            isinstance(o, Fixed) and isinstance(o.value, _OPTUNA_PRIMITIVES) for o in self.options
        )

    def constants(self) -> list[Any] | None:
        """The option values when all options are constants, else None."""
        if all(isinstance(o, Fixed) for o in self.options):
            return [o.value for o in self.options]  # type: ignore[attr-defined]
        return None

    def sample(self, rng: random.Random) -> Any:
        return self.options[rng.randrange(len(self.options))].sample(rng)

    def grid(self, path: str = "") -> Iterator[Any]:
        for i, option in enumerate(self.options):
            yield from option.grid(_join(path, i))

    def size(self) -> float:
        return sum(o.size() for o in self.options)

    def suggest(self, trial: Any, name: str) -> Any:
        if self.plain:
            return trial.suggest_categorical(name, [o.value for o in self.options])  # type: ignore[attr-defined]
        index = trial.suggest_categorical(name, list(range(len(self.options))))
        return self.options[index].suggest(trial, _join(name, index))

    def continuous_paths(self, path: str = "") -> list[str]:
        return [p for i, o in enumerate(self.options) for p in o.continuous_paths(_join(path, i))]

    def mismatch(self, value: Any, path: str = "") -> str | None:
        if self.index(value) is not None:
            return None
        constants = self.constants()
        if constants is not None:
            return f"{_where(path)}: expected one of {constants!r}, got {value!r}"
        return f"{_where(path)}: {value!r} is a value of none of the {len(self.options)} options"

    def index(self, value: Any) -> int | None:
        """Index of the first option that can produce ``value`` (None when none can)."""
        return next((i for i, o in enumerate(self.options) if o.contains(value)), None)

    def to_dict(self) -> dict:
        return self._with_when({"choice": [o.to_dict() for o in self.options]})


class Repeat(Node):
    """A list of ``min``..``max`` blocks; the count is searched and each block samples on its own.

    Example:
        >>> Repeat(Choice([3, 5]), min=1, max=2).size()
        6
    """

    def __init__(self, block: Any, *, min: int, max: int, when=None):  # noqa: A002 - YAML names
        self.block, self.min, self.max, self.when = _node(block, "block"), int(min), int(max), when

    def sample(self, rng: random.Random) -> list:
        n = rng.randint(self.min, self.max)
        return [self.block.sample(rng) for _ in range(n)]

    def grid(self, path: str = "") -> Iterator[list]:
        blocks = list(self.block.grid(_join(path, "block")))
        for n in range(self.min, self.max + 1):
            for combo in itertools.product(blocks, repeat=n):
                yield [copy.deepcopy(b) for b in combo]

    def size(self) -> float:
        s = self.block.size()
        return sum(s**n for n in range(self.min, self.max + 1))

    def suggest(self, trial: Any, name: str) -> list:
        n = trial.suggest_int(_join(name, "len"), self.min, self.max) if self.min < self.max else self.min
        return [self.block.suggest(trial, _join(name, i)) for i in range(n)]

    def continuous_paths(self, path: str = "") -> list[str]:
        return self.block.continuous_paths(_join(path, "block"))

    def mismatch(self, value: Any, path: str = "") -> str | None:
        if not isinstance(value, (list, tuple)):
            return f"{_where(path)}: expected a list of {self.min} to {self.max} blocks, got {value!r}"
        if not self.min <= len(value) <= self.max:
            return f"{_where(path)}: {len(value)} blocks, outside {self.min}..{self.max}"
        return next((r for i, v in enumerate(value) if (r := self.block.mismatch(v, _join(path, i)))), None)

    def to_dict(self) -> dict:
        return self._with_when({"repeat": {"min": self.min, "max": self.max}, "block": self.block.to_dict()})


class List(Node):
    """A fixed-length list whose items are sub-spaces (a YAML list that contains domains)."""

    def __init__(self, items: Sequence[Node], *, when=None):
        self.items, self.when = [_node(it, str(i)) for i, it in enumerate(items)], when

    def sample(self, rng: random.Random) -> list:
        return [item.sample(rng) for item in self.items]

    def grid(self, path: str = "") -> Iterator[list]:
        for combo in itertools.product(*[list(it.grid(_join(path, i))) for i, it in enumerate(self.items)]):
            yield [copy.deepcopy(v) for v in combo]

    def size(self) -> float:
        return math.prod(it.size() for it in self.items)

    def suggest(self, trial: Any, name: str) -> list:
        return [item.suggest(trial, _join(name, i)) for i, item in enumerate(self.items)]

    def continuous_paths(self, path: str = "") -> list[str]:
        return [p for i, it in enumerate(self.items) for p in it.continuous_paths(_join(path, i))]

    def mismatch(self, value: Any, path: str = "") -> str | None:
        if not isinstance(value, (list, tuple)) or len(value) != len(self.items):
            return f"{_where(path)}: expected a list of {len(self.items)} items, got {value!r}"
        return next(
            (r for i, (it, v) in enumerate(zip(self.items, value)) if (r := it.mismatch(v, _join(path, i)))), None
        )

    def to_dict(self) -> list:
        return [it.to_dict() for it in self.items]


class Dict(Node):
    """Named children; a child with ``when`` is present only when its condition holds.

    Children are visited in an order where every condition's sibling comes first, so a
    sampled dict never depends on a key that has not been drawn yet; the result keeps the
    order the keys were written in.
    """

    def __init__(self, items: Mapping[str, Node], *, when=None):
        self.items = {k: _node(v, k) for k, v in items.items()}
        self.when = when
        self.order = _condition_order(self.items)
        # Keys some sibling's condition looks at: grid and size must branch on their values.
        self.referenced = {k for node in self.items.values() if node.when for k in node.when}

    @staticmethod
    def active(node: Node, values: Mapping[str, Any]) -> bool:
        if not node.when:
            return True
        return all(values.get(k, MISSING) in allowed for k, allowed in node.when.items())

    def _ordered(self, values: dict) -> dict:
        return {k: values[k] for k in self.items if k in values}

    def sample(self, rng: random.Random) -> dict:
        out: dict[str, Any] = {}
        for key in self.order:
            node = self.items[key]
            if self.active(node, out):
                out[key] = node.sample(rng)
        return self._ordered(out)

    def suggest(self, trial: Any, name: str) -> dict:
        out: dict[str, Any] = {}
        for key in self.order:
            node = self.items[key]
            if self.active(node, out):
                out[key] = node.suggest(trial, _join(name, key))
        return self._ordered(out)

    def grid(self, path: str = "") -> Iterator[dict]:
        for values in self._grid_from(0, {}, path):
            yield self._ordered(values)

    def _grid_from(self, i: int, partial: dict, path: str) -> Iterator[dict]:
        if i == len(self.order):
            yield dict(partial)
            return
        key = self.order[i]
        node = self.items[key]
        if not self.active(node, partial):
            yield from self._grid_from(i + 1, partial, path)
            return
        for value in node.grid(_join(path, key)):
            partial[key] = value
            yield from self._grid_from(i + 1, partial, path)
        partial.pop(key, None)

    def size(self) -> float:
        return self._size_from(0, {})

    def _size_from(self, i: int, partial: dict) -> float:
        if i == len(self.order):
            return 1
        key = self.order[i]
        node = self.items[key]
        if not self.active(node, partial):
            return self._size_from(i + 1, partial)
        if key in self.referenced:
            # Conditions only reference finite siblings (checked when parsing).
            total = 0.0
            for value in node.grid():
                partial[key] = value
                total += self._size_from(i + 1, partial)
            del partial[key]
            return total
        own = node.size()
        rest = self._size_from(i + 1, partial)
        return 0 if rest == 0 else own * rest

    def continuous_paths(self, path: str = "") -> list[str]:
        return [p for k, n in self.items.items() for p in n.continuous_paths(_join(path, k))]

    def mismatch(self, value: Any, path: str = "") -> str | None:
        if not isinstance(value, Mapping):
            return f"{_where(path)}: expected a mapping with keys {', '.join(self.items)}, got {value!r}"
        extra = [k for k in value if k not in self.items]
        if extra:
            return f"{_join(path, extra[0])}: not a key of this space"
        # In condition order, so a wrong parent is reported before the children it switches.
        for key in self.order:
            node, where = self.items[key], _join(path, key)
            if not self.active(node, value):
                if key in value:
                    return f"{where}: present, but its condition {node._with_when({})['when']} does not hold"
                continue
            if key not in value:
                return f"{where}: missing (its condition holds)" if node.when else f"{where}: missing"
            reason = node.mismatch(value[key], where)
            if reason:
                return reason
        return None

    def to_dict(self) -> dict:
        if self.when:
            raise ValueError("a nested dict cannot carry a condition; put `when` on its keys")
        return {k: n.to_dict() for k, n in self.items.items()}


def _condition_order(items: Mapping[str, Node]) -> list[str]:
    """Keys ordered so that each condition's sibling precedes it (stable otherwise)."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(key: str, chain: list[str]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            cycle = " -> ".join(chain + [key])
            raise ConfigError(key, f"conditions form a cycle ({cycle}); a key cannot depend on itself")
        state[key] = 1
        node = items[key]
        for dep in (node.when or {}):
            if dep in items:
                visit(dep, chain + [key])
        state[key] = 2
        order.append(key)

    for key in items:
        visit(key, [])
    return order


_DOMAIN_KEYS = ("int", "float", "choice", "value", "repeat")


def _looks_like_domain(value: Any) -> bool:
    return isinstance(value, dict) and any(k in value for k in _DOMAIN_KEYS)


# -- the YAML form -------------------------------------------------------------------------

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
