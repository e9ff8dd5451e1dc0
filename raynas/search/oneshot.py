"""``search.strategy: one-shot``: single-path one-shot NAS (Guo et al., 2020) as Ray Tune trials.

A one-shot search runs in two stages, each an ordinary raynas search in the experiment's folder
(so each resumes after a crash, shows in the progress table, Ray's dashboard and the report):

1. **The supernet** (``<experiment>/supernet/``): one trial trains a weight-sharing supernet of
   the space's ``arch`` (:mod:`raynas.trainables.supernet`) for ``one_shot.supernet_epochs``
   epochs, one path drawn uniformly from the space for every batch, with the experiment's
   ``space.train`` recipe, engine, precision and resources. Its weights then go to
   ``<experiment>/supernet.pt``.
2. **The subnets** (the experiment itself): the searcher (``evolution`` unless named)
   proposes ``num_trials`` architectures; each trial scores one with the weights it inherits
   (:func:`raynas.trainables.supernet.score_subnet`: batch norm recalibrated on
   ``one_shot.calibration_batches`` training batches, then the validation split), in one step,
   in parallel across the cluster. Budgets (``constraints``) reject architectures before they
   are scored, as in a standard search.

``raynas analyze`` ranks the subnets by their one-shot scores; ``raynas retrain`` then trains
the best of them from scratch as ordinary trials (the third stage of SPOS).

Example (experiment file)::

    model: cell
    space:
      arch: {edges: {0-1: {choice: [none, skip, conv1x1, conv3x3, avgpool3x3]}, ...},
             channels: 16, stages: 2, cells_per_stage: 1}
      train: {lr: 0.003, batch_size: 64, optimizer: adam}
    search: {strategy: one-shot, num_trials: 200, one_shot: {supernet_epochs: 30}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raynas.errors import ConfigError, describe
from raynas.experiment import SUPERNET_DIR, SUPERNET_STRATEGIES

__all__ = ["STRATEGIES", "SUPERNET_STRATEGIES", "SUPERNET_FAMILIES", "SUPERNET_DIR", "CALIBRATION_BATCHES", "ARCH_LR",
           "shared_choices", "check_one_shot"]

STRATEGIES = ("standalone", "one-shot", "gradient")
#: Training batches that recalibrate batch norm before a subnet is scored.
CALIBRATION_BATCHES = 10
#: Adam's learning rate for DARTS's architecture weights. DARTS's 3e-4 suits its ~20,000 steps
#: on CIFAR-10; in 30 epochs on digits (270 steps) it moved the strongest op's weight from 0.20
#: to 0.21, and 3e-3 to 0.25-0.36 (docs/oneshot.md).
ARCH_LR = 3e-3


#: Families with a supernet, and the arch keys whose values can share weights.
SUPERNET_FAMILIES: dict[str, tuple[str, ...]] = {"cell": ("edges", "reduction_edges")}

#: Keys of a space entry that make it a searched domain rather than a constant.
_DOMAIN_KEYS = ("choice", "int", "float", "repeat", "grid", "when")


def _is_domain(value: Any) -> bool:
    return isinstance(value, Mapping) and any(k in value for k in _DOMAIN_KEYS)


def shared_choices(family: str, arch_space: Mapping[str, Any], *, where: str = "space.arch") -> dict:
    """The candidates of every weight-sharing choice of a space's ``arch``, checked.

    Returns ``{key: {sub_key: [candidates]}}`` for the family's sharing keys (for ``cell``:
    ``{"edges": {"0-1": [ops]}, ...}``); a constant counts as a one-candidate choice.

    Raises:
        ConfigError: The family has no supernet, or a key that cannot share weights is searched,
            or a sharing key is searched in a way a supernet cannot hold (a condition, a range).

    Example:
        >>> shared_choices("cell", {"edges": {"0-1": {"choice": ["none", "skip"]}, "0-2": "skip",
        ...                                   "1-2": "skip"}, "nodes": 3})
        {'edges': {'0-1': ['none', 'skip'], '0-2': ['skip'], '1-2': ['skip']}}
    """
    if family not in SUPERNET_FAMILIES:
        raise ConfigError(
            "model",
            f"one-shot search needs a family whose choices can share weights "
            f"({', '.join(SUPERNET_FAMILIES)}); {family!r} has no supernet",
        )
    if not isinstance(arch_space, Mapping):
        raise ConfigError(where, f"one-shot search needs a mapping of the family's keys, got {describe(arch_space)}")
    sharing = SUPERNET_FAMILIES[family]
    out: dict[str, dict[str, list]] = {}
    for key, value in arch_space.items():
        path = f"{where}.{key}"
        if key not in sharing:
            if _is_domain(value) or isinstance(value, (Mapping, list)):
                raise ConfigError(
                    path,
                    f"is searched, but in a {family} supernet only {', '.join(f'arch.{k}' for k in sharing)} "
                    f"share weights; make it a constant (one supernet per value), got {describe(value)}",
                )
            continue
        if not isinstance(value, Mapping) or _is_domain(value):
            raise ConfigError(path, f"must map each edge to a choice of ops, got {describe(value)}")
        out[key] = {}
        for sub, domain in value.items():
            sub_path = f"{path}.{sub}"
            if isinstance(domain, str):
                out[key][str(sub)] = [domain]
            elif isinstance(domain, Mapping) and set(domain) == {"choice"} and isinstance(domain["choice"], list) \
                    and domain["choice"] and all(isinstance(o, str) for o in domain["choice"]):
                out[key][str(sub)] = list(dict.fromkeys(domain["choice"]))
            else:
                raise ConfigError(
                    sub_path,
                    f"a supernet holds one module per op, so this must be an op name or "
                    f"{{choice: [op, ...]}} without conditions, got {describe(domain)}",
                )
    return out


def check_one_shot(spec) -> None:
    """What a one-shot or gradient search needs, checked before Ray starts (with the key at fault).

    Raises:
        ConfigError: A user trainable; a family without a supernet or a searched key that
            cannot share weights; searched training hyperparameters; an early-stopping
            scheduler, a prescreen or zero-cost proxies (none apply); for a gradient search,
            the keys of a searcher (it derives one cell) or the Lightning engine.
    """
    strategy = spec.search.strategy
    if spec.trainable is not None:
        raise ConfigError("trainable", f"{strategy} search trains raynas's own supernet of a built-in family; "
                                       "a user trainable builds its own model (use model: instead)")
    family = spec.model
    if family not in SUPERNET_FAMILIES:
        raise ConfigError("model", f"{strategy} search needs a family whose choices can share weights "
                                   f"({', '.join(SUPERNET_FAMILIES)}); {family!r} has no supernet")
    space = spec.raw.get("space") or {}
    shared_choices(family, space.get("arch"))
    for key, value in (space.get("train") or {}).items():
        if isinstance(value, (dict, list)):
            raise ConfigError(f"space.train.{key}", "one supernet trains with one recipe, so training "
                                                    f"hyperparameters are constants under {strategy} search; got {describe(value)}")
    why = ("scores each subnet in one step" if strategy == "one-shot"
           else "trains one supernet, then the one cell it derives")
    if spec.scheduler.name != "fifo":
        raise ConfigError("scheduler", f"{strategy} search {why}, so {spec.scheduler.name} has nothing to stop "
                                       "early; remove the scheduler section")
    if spec.search.prescreen:
        raise ConfigError("search.prescreen", f"{strategy} search {why}: there are no candidates to prescreen; "
                                              "remove search.prescreen")
    if spec.proxies:
        raise ConfigError("proxies", f"{strategy} search {why} and computes no zero-cost proxies; remove proxies")
    if strategy == "gradient":
        given = spec.raw.get("search") or {}
        for key in ("searcher", "num_trials", "warm_start", "points"):
            if key in given:
                raise ConfigError(f"search.{key}", "a gradient search derives its one cell from the supernet's "
                                                   f"architecture weights and then trains it; remove search.{key}")
        if spec.trainer.engine.value != "fast":
            raise ConfigError("trainer.engine", "a gradient search reports the cell it derives each epoch from the "
                                                "fast engine's loop; use engine: fast")
