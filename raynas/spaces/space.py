"""The :class:`Space` facade: one object per search space, built from YAML or Python."""

from __future__ import annotations

import json
import math
import random
from typing import Any, Iterator, Mapping

from raynas.errors import ConfigError
from raynas.spaces.domains import Dict, Fixed, Node
from raynas.spaces.mutation import mutate
from raynas.spaces.domains import parse_space

SEP = "."


class Space:
    """A search space over nested dicts: ``{arch: {...}, train: {...}}`` in raynas experiments.

    Args:
        tree: The YAML form (a mapping), possibly mixed with nodes built in Python
            (:class:`~raynas.spaces.Int`, :class:`~raynas.spaces.Choice`, ...).
        path: Key path of the space in its file, for error messages.

    Example:
        >>> from raynas.spaces import Space, Int, Choice
        >>> space = Space({"arch": {"depth": Int(1, 4), "width": Choice([32, 64])},
        ...                "train": {"lr": {"float": [1e-4, 1e-1], "log": True}}})
        >>> config = space.sample(seed=0)
        >>> sorted(config["arch"])
        ['depth', 'width']
    """

    def __init__(self, tree: Mapping[str, Any] | Node, path: str = "space"):
        if not isinstance(tree, (Mapping, Dict, Fixed)):
            raise ConfigError(path, f"a search space is a mapping of keys to domains, got {type(tree).__name__}")
        self.path = path
        self.root: Node = parse_space(dict(tree) if isinstance(tree, Mapping) else tree, path)

    # -- drawing configurations
    def sample(self, seed: int | None = None, rng: random.Random | None = None) -> dict:
        """Draws one configuration (a plain, JSON-serialisable dict).

        Args:
            seed: Seed for a fresh generator (ignored when ``rng`` is given).
            rng: A ``random.Random`` to draw from; searchers keep one for their whole run.
        """
        return self.root.sample(rng if rng is not None else random.Random(seed))

    def grid(self) -> Iterator[dict]:
        """Every configuration of a finite space, in a fixed order.

        Raises:
            ConfigError: A continuous domain makes the grid infinite; the message names it.
        """
        paths = self.continuous_paths()
        if paths:
            # Name every infinite domain at once rather than the first one met.
            raise ConfigError(
                paths[0] if len(paths) == 1 else self.path,
                "grid search needs a finite space, but "
                + (
                    "this float range is continuous; give it a step or make it a choice"
                    if len(paths) == 1
                    else f"these float ranges are continuous: {', '.join(paths)}; give each a step "
                    "or make it a choice"
                ),
            )
        return self.root.grid(self.path)

    def size(self) -> float:
        """Number of distinct configurations (``math.inf`` with any continuous domain)."""
        return self.root.size()

    def discrete_size(self) -> float:
        """Number of configurations when every continuous domain is counted once."""
        return _discrete(self.root).size()

    def continuous_paths(self) -> list[str]:
        """Key paths of the continuous (non-enumerable) domains."""
        return self.root.continuous_paths(self.path)

    def describe_size(self) -> str:
        """Human summary for ``raynas validate``: exact size, or which domains are continuous."""
        size = self.size()
        if size != math.inf:
            return f"{int(size):,} configurations"
        paths = self.continuous_paths()
        discrete = self.discrete_size()
        prefix = f"{self.path}."
        names = ", ".join(p[len(prefix):] if p.startswith(prefix) else p for p in paths)
        return (
            f"infinite ({len(paths)} continuous domain{'s' if len(paths) != 1 else ''}: {names}; "
            f"{_fmt_count(discrete)} discrete combinations)"
        )

    def suggest(self, trial: Any) -> dict:
        """Draws a configuration through an Optuna trial (define-by-run).

        Parameter names are flat key paths (``arch.stages.0.kernel``); a repeated block's
        count is ``arch.stages.len``; conditional keys are suggested only when active, so
        TPE sees the tree structure instead of phantom values.

        Example:
            >>> import optuna
            >>> study = optuna.create_study()
            >>> trial = study.ask()
            >>> config = Space({"x": {"int": [0, 3]}}).suggest(trial)
            >>> trial.params == {"x": config["x"]}
            True
        """
        return self.root.suggest(trial, "")

    def params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The decisions :meth:`suggest` makes to draw ``config``, by name (Optuna's ``params``).

        ``optuna.trial.FixedTrial(space.params(config))`` passed to :meth:`suggest` replays
        ``config``: how earlier trials and given points reach Optuna and the RL controller.

        Example:
            >>> space = Space({"arch": {"depth": {"int": [1, 4]}, "act": {"choice": ["relu", "gelu"]}}})
            >>> space.params({"arch": {"depth": 2, "act": "gelu"}})
            {'arch.depth': 2, 'arch.act': 'gelu'}
        """
        from raynas.spaces.replay import params

        return params(self.root, config)

    def project(self, config: Mapping[str, Any]) -> tuple[dict, list[str]]:
        """``config`` (from another space) mapped into this one, and the changes that took.

        Raises:
            raynas.spaces.replay.OutsideSpace: It cannot be mapped (a key this space draws is
                missing, or a value is of another kind); the message names the key path.

        Example:
            >>> Space({"depth": {"int": [1, 4]}}).project({"depth": 6})
            ({'depth': 4}, ['depth: 6 -> 4'])
        """
        from raynas.spaces.replay import project

        return project(self.root, config)

    def contains(self, config: Any) -> bool:
        """True when ``config`` is a configuration of this space.

        Every active key is present with an allowed value, no inactive or unknown key is,
        and repeated blocks are within their counts; floats may overshoot a bound by
        rounding error only.

        Example:
            >>> space = Space({"depth": {"int": [1, 4]}})
            >>> space.contains({"depth": 2}), space.contains({"depth": 9}), space.contains({})
            (True, False, False)
        """
        return self.root.mismatch(config, self.path) is None

    def mutate(self, config: Mapping[str, Any], rng: random.Random | None = None, n: int = 1, *, seed: int | None = None) -> dict:
        """A new configuration that differs from ``config`` at 1..``n`` sites (see :mod:`raynas.spaces.mutation`).

        Args:
            config: A configuration of this space; it is not modified.
            rng: A ``random.Random`` to draw from (evolution keeps one for its whole run).
            n: Most sites to change.
            seed: Seed for a fresh generator (ignored when ``rng`` is given).

        Raises:
            ValueError: ``config`` is not in the space, or the space has a single configuration.

        Example:
            >>> space = Space({"depth": {"int": [1, 4]}, "act": {"choice": ["relu", "gelu"]}})
            >>> child = space.mutate({"depth": 2, "act": "relu"}, seed=0)
            >>> child != {"depth": 2, "act": "relu"} and space.contains(child)
            True
        """
        return mutate(self, config, rng if rng is not None else random.Random(seed), n)

    # -- serialisation
    def to_dict(self) -> Any:
        """The YAML form of the space (JSON-serialisable)."""
        return self.root.to_dict()

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, path: str = "space") -> "Space":
        return cls(json.loads(text), path=path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.root == other.root

    def __repr__(self) -> str:
        return f"Space({self.to_dict()!r})"

    def __reduce__(self):
        return (Space, (self.to_dict(), self.path))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists to one level of dotted keys: ``arch.stages.0.kernel``.

    Empty dicts and lists stay as values so :func:`unflatten` can restore them.

    Example:
        >>> flatten({"arch": {"stages": [{"k": 3}], "depth": 2}})
        {'arch.stages.0.k': 3, 'arch.depth': 2}
    """
    out: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(v, f"{key}{SEP}{k}" if key else str(k))
        elif isinstance(value, (list, tuple)) and value:
            for i, v in enumerate(value):
                walk(v, f"{key}{SEP}{i}" if key else str(i))
        else:
            out[key] = value

    walk(config, prefix)
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten`: levels whose keys are exactly ``0..n-1`` become lists.

    Example:
        >>> unflatten({"arch.stages.0.k": 3, "arch.depth": 2})
        {'arch': {'stages': [{'k': 3}], 'depth': 2}}
    """
    root: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(SEP)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"key {key!r} conflicts with a value at {part!r}")
        node[parts[-1]] = value

    def listify(value: Any) -> Any:
        if isinstance(value, dict):
            value = {k: listify(v) for k, v in value.items()}
            if value and all(k.isdigit() for k in value) and sorted(map(int, value)) == list(range(len(value))):
                return [value[str(i)] for i in range(len(value))]
        return value

    return listify(root)


def _fmt_count(n: float) -> str:
    return f"{int(n):,}" if n < 1e15 else f"{n:.3g}"


def _discrete(node: Node) -> Node:
    """A copy of the tree where continuous floats count as one value (for size summaries)."""
    from raynas.spaces.domains import Choice, Float, List, Repeat

    if isinstance(node, Float) and node.step is None:
        return Fixed(node.low, when=node.when)
    if isinstance(node, Dict):
        return Dict({k: _discrete(v) for k, v in node.items.items()}, when=node.when)
    if isinstance(node, Choice):
        return Choice([_discrete(o) for o in node.options], when=node.when)
    if isinstance(node, Repeat):
        return Repeat(_discrete(node.block), min=node.min, max=node.max, when=node.when)
    if isinstance(node, List):
        return List([_discrete(i) for i in node.items], when=node.when)
    return node
