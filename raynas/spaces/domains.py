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
* ``to_dict()``: render itself in the YAML form it was parsed from;
* ``mismatch(value, path)`` / ``contains(value)``: tell whether a value is one of its own
  (what mutation and tests check a configuration against).

Mutation for evolutionary search lives in :mod:`raynas.spaces.mutation` and uses the same nodes.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Mapping
from typing import Any, Iterator, Sequence

from raynas.errors import ConfigError

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
    from raynas.spaces.parse import parse_space  # parse builds nodes: import lazily

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
