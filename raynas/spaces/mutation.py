"""Mutation: a nearby configuration of the same space, for evolutionary search.

The space DSL is the only place that knows how a domain changes, so every rule lives here and
dispatches on the node types of :mod:`raynas.spaces.domains`.

**Sites.** A site is one place in a configuration that can change:

* an active :class:`~raynas.spaces.Int` or :class:`~raynas.spaces.Float` with more than one value;
* an active :class:`~raynas.spaces.Choice` with another option to switch to; when the current
  option is a sub-space, the sites inside it are sites too;
* the count of a :class:`~raynas.spaces.Repeat` whose ``min < max``, and the sites inside each
  of its blocks;
* the sites inside each item of a :class:`~raynas.spaces.List` and each active key of a dict.

Fixed values and inactive (conditional) keys are not sites. A site is chosen uniformly among
all sites, so a deep repeated stage with many blocks attracts mutations in proportion to its
size, as each block is an equal part of the architecture.

**Operations.**

* Choice: another option, uniformly; a sub-space option is sampled fresh.
* Int (and a Float with a ``step``): with p=0.5 a neighbour one step away (the other way at a
  bound), else a resample from the domain; never the same value.
* Float: with p=0.5 a Gaussian step of sigma 0.2 of the range, in log space for ``log: true``,
  clipped to the bounds; else a resample; never the same value.
* Repeat count: insert one freshly sampled block at a random position (when below ``max``) or
  delete a random block (when above ``min``), 50/50 when both are allowed.

**Conditions.** After a change below a dict, its keys are re-evaluated in condition order:
a key whose ``when`` became true is sampled fresh, one whose ``when`` became false is
removed, the others keep their values. The child is therefore always a member of the space.

**Several sites.** ``mutate(..., n=3)`` changes ``k`` sites with ``k`` uniform in ``1..3``; each
step picks among the sites of the child built so far (structure may have changed) that were
not changed yet. Everything is drawn from the ``rng`` given, so a seed fixes the result.

Example:
    >>> import random
    >>> from raynas.spaces import Space
    >>> space = Space({"depth": {"int": [1, 6]}, "width": {"choice": [16, 32, 64]}})
    >>> child = mutate(space, {"depth": 3, "width": 32}, random.Random(0))
    >>> space.contains(child) and child != {"depth": 3, "width": 32}
    True
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from raynas.spaces.domains import Choice, Dict, Fixed, Float, Int, List, Node, Repeat, _same


class Tree(Protocol):
    """What mutation needs of a space (a :class:`~raynas.spaces.Space` is one): its root node
    and key path; taking this instead of ``Space`` keeps space.py -> mutation.py one-way."""

    root: Node
    path: str

__all__ = ["mutate", "sites", "Site", "SIGMA"]

#: Standard deviation of a Float perturbation, as a fraction of its (log-)range.
SIGMA = 0.2

# Draws that may repeat the current value (resampling a domain, an overlapping option) are
# retried; the limits only matter for pathological spaces and keep mutation bounded.
_RESAMPLE_TRIES = 32
_MUTATE_TRIES = 100


@dataclass(frozen=True)
class Site:
    """One place a configuration can change.

    Attributes:
        steps: The way from the root to the site's node: a dict key below a Dict, an index
            below a List or Repeat, an option index below a Choice.
        node: The node at the site.
        kind: ``"value"`` (Int, Float), ``"option"`` (Choice) or ``"count"`` (Repeat).
    """

    steps: tuple
    node: Node
    kind: str

    @property
    def key(self) -> str:
        """The site's flat key in the configuration (option indices left out), e.g. ``arch.stages.1.k``."""
        return ".".join(str(s) for s in self.steps if not isinstance(s, _OptionStep))


class _OptionStep(int):
    """An option index below a Choice: part of the way to a node, not of the config's keys."""


def sites(space: Tree, config: Mapping[str, Any]) -> list[Site]:
    """Every site of ``config`` (a member of ``space``), in a fixed order.

    Example:
        >>> from raynas.spaces import Space
        >>> space = Space({"depth": {"int": [1, 6]}, "norm": "batch"})
        >>> [s.key for s in sites(space, {"depth": 2, "norm": "batch"})]
        ['depth']
    """
    return _sites(space.root, config)


def mutate(space: Tree, config: Mapping[str, Any], rng: random.Random, n: int = 1) -> dict:
    """A new configuration of ``space`` that differs from ``config`` at 1..``n`` sites.

    ``config`` is left untouched. Conditional keys follow their parents and a repeat's blocks
    shift when one is inserted or removed, so more flat keys than sites may change.

    Args:
        space: The search space.
        config: A configuration of ``space`` (as sampled, without the searcher's ``_raynas`` note).
        rng: Source of every random draw: the same state gives the same child.
        n: Most sites to change (the number is drawn uniformly in ``1..n``).

    Returns:
        A fresh dict, a member of ``space``, different from ``config``.

    Raises:
        ValueError: ``n`` is not a positive integer, ``config`` is not in ``space`` (the
            message names the key), or nothing in the space can change.

    Example:
        >>> import random
        >>> from raynas.spaces import Space
        >>> space = Space({"act": {"choice": ["relu", "gelu"]}})
        >>> mutate(space, {"act": "relu"}, random.Random(0))
        {'act': 'gelu'}
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the most sites a mutation changes) must be an integer >= 1, got {n!r}")
    reason = space.root.mismatch(config, space.path)
    if reason:
        raise ValueError(f"cannot mutate a configuration that is not in the space: {reason}")
    if not _sites(space.root, config):
        raise ValueError(
            f"{space.path}: nothing to mutate, the space has a single configuration "
            f"(every domain active in {config!r} takes one value); give some key a choice or a range"
        )
    k = rng.randint(1, n)
    for _ in range(_MUTATE_TRIES):
        child: Any = config
        changed: list[tuple] = []
        for _ in range(k):
            candidates = [s for s in _sites(space.root, child) if s.steps not in changed]
            if not candidates:
                break
            site = candidates[rng.randrange(len(candidates))]
            child = _apply(space.root, child, site.steps, site.kind, rng)
            changed.append(site.steps)
        # A switch between overlapping options can land on the same value; draw again.
        if not _same(child, config):
            return copy.deepcopy(child)
    raise RuntimeError(f"{space.path}: no different configuration after {_MUTATE_TRIES} mutations of {config!r}")


# -- sites ---------------------------------------------------------------------------------------


def _sites(root: Node, value: Any) -> list[Site]:
    out: list[Site] = []
    _collect(root, value, (), out)
    return out


def _collect(node: Node, value: Any, steps: tuple, out: list[Site]) -> None:
    if isinstance(node, Int):
        if node.low + node.step <= node.high:
            out.append(Site(steps, node, "value"))
    elif isinstance(node, Float):
        if node.low < node.high and (node.step is None or node._count() > 1):
            out.append(Site(steps, node, "value"))
    elif isinstance(node, Fixed):
        pass
    elif isinstance(node, Choice):
        i = node.index(value)
        if _other_options(node, i, value):
            out.append(Site(steps, node, "option"))
        _collect(node.options[i], value, steps + (_OptionStep(i),), out)
    elif isinstance(node, Repeat):
        if node.min < node.max:
            out.append(Site(steps, node, "count"))
        for j, v in enumerate(value):
            _collect(node.block, v, steps + (j,), out)
    elif isinstance(node, List):
        for j, (item, v) in enumerate(zip(node.items, value)):
            _collect(item, v, steps + (j,), out)
    elif isinstance(node, Dict):
        for key in node.order:
            if key in value:
                _collect(node.items[key], value[key], steps + (key,), out)
    else:
        raise TypeError(f"mutation does not know the node type {type(node).__name__}")


def _other_options(node: Choice, current: int, value: Any) -> list[int]:
    # A constant option equal to the current value would not change anything.
    return [
        j
        for j, option in enumerate(node.options)
        if j != current and not (isinstance(option, Fixed) and _same(option.value, value))
    ]


# -- applying a change ---------------------------------------------------------------------------


def _apply(node: Node, value: Any, steps: tuple, kind: str, rng: random.Random) -> Any:
    """``value`` with the site at ``steps`` changed; containers on the way are copied, never edited."""
    if not steps:
        return _change(node, value, kind, rng)
    head, rest = steps[0], steps[1:]
    if isinstance(node, Choice):
        return _apply(node.options[head], value, rest, kind, rng)
    if isinstance(node, (Repeat, List)):
        item = node.block if isinstance(node, Repeat) else node.items[head]
        new = list(value)
        new[head] = _apply(item, value[head], rest, kind, rng)
        return new
    if isinstance(node, Dict):
        new = dict(value)
        new[head] = _apply(node.items[head], value[head], rest, kind, rng)
        return _reconcile(node, new, rng)
    raise TypeError(f"mutation cannot descend into {type(node).__name__}")  # steps come from _collect


def _reconcile(node: Dict, values: dict, rng: random.Random) -> dict:
    """Conditions re-evaluated in order: newly active keys sampled, inactive ones dropped."""
    out: dict[str, Any] = {}
    for key in node.order:
        child = node.items[key]
        if Dict.active(child, out):
            out[key] = values[key] if key in values else child.sample(rng)
    return {k: out[k] for k in node.items if k in out}


def _change(node: Node, value: Any, kind: str, rng: random.Random) -> Any:
    if kind == "option":
        return _switch(node, value, rng)  # type: ignore[arg-type]
    if kind == "count":
        return _resize(node, value, rng)  # type: ignore[arg-type]
    if isinstance(node, Int):
        return node.low + node.step * _step_index(node._count(), (value - node.low) // node.step, rng, node, value)
    if isinstance(node, Float) and node.step is not None:
        index = round((value - node.low) / node.step)
        return node._value(_step_index(node._count(), index, rng, node, value))
    return _perturb(node, value, rng)  # type: ignore[arg-type]


def _step_index(count: int, index: int, rng: random.Random, node: Node, value: Any) -> int:
    """A new grid index: a neighbour (p=0.5) or a resample of the domain, never ``index``."""
    if rng.random() < 0.5:
        neighbours = [j for j in (index - 1, index + 1) if 0 <= j < count]
        return neighbours[rng.randrange(len(neighbours))]
    # Resample through the node so a log-scale int keeps its log-uniform distribution.
    for _ in range(_RESAMPLE_TRIES):
        drawn = node.sample(rng)
        if drawn != value:
            return _index_of(node, drawn)
    other = rng.randrange(count - 1)
    return other + (other >= index)


def _index_of(node: Node, drawn: Any) -> int:
    if isinstance(node, Int):
        return (drawn - node.low) // node.step
    return round((drawn - node.low) / node.step)  # type: ignore[attr-defined]


def _perturb(node: Float, value: float, rng: random.Random) -> float:
    if rng.random() < 0.5:
        for _ in range(_RESAMPLE_TRIES):
            if node.log:
                lo, hi = math.log(node.low), math.log(node.high)
                x = min(hi, max(lo, math.log(value) + rng.gauss(0.0, SIGMA * (hi - lo))))
                new = math.exp(x)
            else:
                new = value + rng.gauss(0.0, SIGMA * (node.high - node.low))
            new = min(node.high, max(node.low, new))  # exp(log(x)) may overshoot by an ulp
            # Clipping at the bound the value already sits on gives it back: draw again.
            if new != value:
                return new
    for _ in range(_RESAMPLE_TRIES):
        new = node.sample(rng)
        if new != value:
            return new
    return node.low if value != node.low else node.high


def _switch(node: Choice, value: Any, rng: random.Random) -> Any:
    others = _other_options(node, node.index(value), value)
    new = value
    for _ in range(_RESAMPLE_TRIES):
        new = node.options[others[rng.randrange(len(others))]].sample(rng)
        if not _same(new, value):
            break
    return new


def _resize(node: Repeat, value: list, rng: random.Random) -> list:
    can_add, can_remove = len(value) < node.max, len(value) > node.min
    new = list(value)
    if can_add and (not can_remove or rng.random() < 0.5):
        new.insert(rng.randint(0, len(new)), node.block.sample(rng))
    else:
        del new[rng.randrange(len(new))]
    return new
