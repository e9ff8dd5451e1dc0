"""Refuse a budget no architecture of the space can meet, before Ray starts.

For the built-in families, parameters and FLOPs grow with every size in the arch dict
(widths, channels, depths, repeats, kernels, expansions; a transformer's ``patch_size`` is the
exception, and every value of it is tried), so the space's smallest corner
(each size at its lower end, every other choice tried) bounds what any of its architectures
can achieve: if even that corner is over budget, the search could only reject. A user's
family may not be monotone, so it is not checked here (its trials are still measured and
rejected one by one). Latency is not checked up front: it is a measurement, not a count.
"""

from __future__ import annotations

import itertools
from typing import Any

from raynas.errors import ArchError, ConfigError
from raynas.spaces.domains import Choice, Dict, Fixed, Float, Int, List, Node, Repeat
from raynas.trainables.registry import BUILTIN

__all__ = ["smallest_architectures", "check_budget"]

_MAX_CORNERS = 64

#: Arch keys of built-in families whose costs do not grow with the value, so every value is
#: tried rather than the lowest: a transformer's larger ``patch_size`` means fewer tokens.
_NOT_MONOTONE = frozenset({"patch_size"})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _smallest(node: Node) -> list[Any]:
    """Candidate smallest values of a node (several when a non-numeric choice matters)."""
    if isinstance(node, (Int, Float)):
        return [node.low]
    if isinstance(node, Fixed):
        return [node.value]
    if isinstance(node, Choice):
        constants = node.constants()
        if constants is not None and all(_is_number(v) for v in constants):
            return [min(constants)]
        if constants is not None and "none" in constants and all(isinstance(v, str) for v in constants):
            # A cell's absent edge costs nothing wherever it is, so it alone is that edge's
            # smallest: the all-`none` cell is found whatever the order of the ops.
            return ["none"]
        out: list[Any] = []
        for option in node.options:
            out.extend(_smallest(option))
        return out[:_MAX_CORNERS]
    if isinstance(node, Repeat):
        block = _smallest(node.block)
        return [[b] * node.min for b in block] if node.min else [[]]
    if isinstance(node, List):
        combos = itertools.islice(itertools.product(*[_smallest(i) for i in node.items]), _MAX_CORNERS)
        return [list(c) for c in combos]
    if isinstance(node, Dict):
        return _smallest_dict(node)
    return []


def _every(node: Node) -> list[Any]:
    """Every value of a numeric choice or int range (capped), else the smallest candidates."""
    if isinstance(node, Int):
        return node.values()[:_MAX_CORNERS]
    if isinstance(node, Choice) and node.constants() is not None:
        return list(node.constants())[:_MAX_CORNERS]
    return _smallest(node)


def _smallest_dict(node: Dict) -> list[dict]:
    partials: list[dict] = [{}]
    for key in node.order:
        child = node.items[key]
        grown: list[dict] = []
        for partial in partials:
            if not node.active(child, partial):
                grown.append(partial)
                continue
            values = _every(child) if key in _NOT_MONOTONE else _smallest(child)
            for value in values:
                grown.append({**partial, key: value})
        partials = grown[:_MAX_CORNERS]
    return [{k: p[k] for k in node.items if k in p} for p in partials]


def smallest_architectures(space) -> list[dict]:
    """Arch dicts at the space's smallest corner (one per combination of non-numeric choices)."""
    root = space.root
    arch = root.items.get("arch") if isinstance(root, Dict) else None
    if arch is None:
        return []
    return _smallest(arch)[:_MAX_CORNERS]


def check_budget(spec, input_shape: tuple, num_classes: int) -> None:
    """Raises a ConfigError when no architecture of the space can meet ``max_params``/``max_flops``."""
    limits = {"params": spec.constraints.max_params, "flops": spec.constraints.max_flops}
    if all(v is None for v in limits.values()) or spec.model not in BUILTIN:
        return
    from raynas.trainables.families import build_model, count_flops, count_params

    best: dict[str, tuple[int, dict] | None] = {"params": None, "flops": None}
    for arch in smallest_architectures(spec.space):
        try:
            net = build_model(spec.model, arch, input_shape, num_classes)
        except ArchError:
            continue  # this corner does not fit the data; others may
        sizes = {"params": count_params(net), "flops": count_flops(net, input_shape)}
        for metric, value in sizes.items():
            if best[metric] is None or value < best[metric][0]:
                best[metric] = (value, arch)
    for metric, limit in limits.items():
        found = best[metric]
        if limit is not None and found is not None and found[0] > limit:
            value, arch = found
            raise ConfigError(
                f"constraints.max_{metric}",
                f"no architecture of the space can meet it: the smallest one ({arch}) already has "
                f"{value:,} {metric} > {limit:,}; raise the budget or allow smaller architectures",
            )
