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

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from raynas.errors import ConfigError, describe

__all__ = ["STRATEGIES", "SUPERNET_STRATEGIES", "SUPERNET_FAMILIES", "SUPERNET_DIR", "shared_choices",
           "gradient_settings", "derived_cell", "derived_spec", "one_shot_settings", "check_one_shot", "supernet_spec",
           "supernet_checkpoint", "scoring_spec"]

STRATEGIES = ("standalone", "one-shot", "gradient")
#: The strategies that train a supernet first (in SUPERNET_DIR).
SUPERNET_STRATEGIES = ("one-shot", "gradient")
#: The supernet stage's experiment folder, inside the one-shot experiment's.
SUPERNET_DIR = "supernet"
#: Training batches that recalibrate batch norm before a subnet is scored.
CALIBRATION_BATCHES = 10


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


def one_shot_settings(raw: Any, strategy: str, max_epochs: int) -> dict:
    """``search.one_shot``: ``supernet_epochs`` (default ``max_epochs``) and
    ``calibration_batches`` (default 10); refused without ``strategy: one-shot``."""
    if raw is None:
        raw = {}
    elif strategy != "one-shot":
        raise ConfigError("search.one_shot", "only used with search.strategy: one-shot")
    if not isinstance(raw, dict):
        raise ConfigError("search.one_shot", f"expected a mapping of supernet_epochs, calibration_batches; got {describe(raw)}")
    from raynas.spec.checks import _Section  # noqa: PLC0415 (the spec's own section reader)

    sec = _Section(raw, "search.one_shot", ["supernet_epochs", "calibration_batches"])
    if strategy != "one-shot":
        return {}
    return {
        "supernet_epochs": sec.get("supernet_epochs", "int", max_epochs, low=1),
        "calibration_batches": sec.get("calibration_batches", "int", CALIBRATION_BATCHES, low=1),
    }


def gradient_settings(raw: Any, strategy: str, max_epochs: int) -> dict:
    """``search.gradient``: ``supernet_epochs`` (default ``max_epochs``), ``arch_lr`` (default
    3e-4) and ``max_skip`` (default 2; ``null``: no limit); refused without ``strategy: gradient``."""
    if raw is None:
        raw = {}
    elif strategy != "gradient":
        raise ConfigError("search.gradient", "only used with search.strategy: gradient")
    if not isinstance(raw, dict):
        raise ConfigError("search.gradient", f"expected a mapping of supernet_epochs, arch_lr, max_skip; got {describe(raw)}")
    from raynas.spec.checks import _Section  # noqa: PLC0415

    sec = _Section(raw, "search.gradient", ["supernet_epochs", "arch_lr", "max_skip"])
    if strategy != "gradient":
        return {}
    max_skip = raw.get("max_skip", 2)
    if max_skip is not None:
        max_skip = sec.get("max_skip", "int", 2, low=0)
    return {
        "supernet_epochs": sec.get("supernet_epochs", "int", max_epochs, low=1),
        "arch_lr": sec.get("arch_lr", "float", 3e-4, low=0, low_open=True),
        "max_skip": max_skip,
    }


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


def supernet_spec(spec):
    """The spec of the supernet stage: one trial of the supernet family (the gradient search's
    for ``strategy: gradient``), FIFO, the same data, recipe, trainer and resources,
    ``supernet_epochs`` epochs."""
    from raynas.spec import spec_from_dict

    raw = {k: v for k, v in spec.raw.items()
           if k in ("data", "trainer", "resources")}
    space = spec.raw["space"]
    arch = {"family": spec.model, "space": json.dumps(space["arch"], sort_keys=True), "seed": spec.search.seed or 0}
    if spec.search.strategy == "gradient":
        settings, model = spec.search.gradient, "raynas.trainables.supernet:darts_family"
        arch.update(arch_lr=settings["arch_lr"], max_skip=settings["max_skip"])
    else:
        settings, model = spec.search.one_shot, "raynas.trainables.supernet:supernet_family"
    raw.update(
        name=SUPERNET_DIR,
        model=model,
        space={"arch": arch, "train": dict(space.get("train") or {})},
        search={"searcher": "random", "num_trials": 1, "seed": spec.search.seed or 0},
        objective={"metric": "val_acc", "mode": "max"},
        max_epochs=settings["supernet_epochs"],
    )
    return spec_from_dict(raw, file=spec.source_file, base_dir=spec.base_dir)


def derived_cell(folder) -> tuple[dict, dict]:
    """The cell a gradient search derived at its supernet's last epoch (``folder``: the
    supernet stage's experiment), and that epoch's row.

    Raises:
        ConfigError: The supernet trial reported no derived cell (it failed before an epoch).
    """
    from raynas.analysis import load_results

    rows = [r for t in load_results(folder).trials for r in t.curve if r.get("derived_arch")]
    if not rows:
        raise ConfigError("search.strategy", f"the gradient search's supernet in {folder} derived no cell "
                                             "(its trial reported no epoch; see raynas analyze there)")
    last = max(rows, key=lambda r: int(r.get("epoch") or 0))
    return json.loads(last["derived_arch"]), last


def derived_spec(spec, arch: dict):
    """The spec that trains the derived cell from scratch: one trial, the given configuration."""
    train = spec.raw["space"].get("train") or {}
    search = dataclasses.replace(spec.search, searcher="random", num_trials=1, points=[{"arch": arch, "train": dict(train)}])
    return dataclasses.replace(spec, search=search)


def supernet_checkpoint(folder) -> str:
    """The last checkpoint of the supernet stage's trial (``folder``: its experiment folder).

    Raises:
        ConfigError: The supernet trial failed or left no checkpoint.
    """
    from raynas.winner.export import _checkpoint, pick_trial

    _, trial = pick_trial(folder)
    return str(_checkpoint(folder, trial))


def scoring_spec(spec, weights: str):
    """The spec the subnet stage runs: the experiment's search, with each trial scoring its
    architecture on the supernet checkpoint ``weights`` (a folder) in one step."""
    from raynas.trainables.registry import resolve_family

    train = spec.raw["space"].get("train") or {}
    params = {
        "weights": str(weights),
        "family": spec.model,
        "build": resolve_family(spec.model),  # what a worker imports to build the stand-alone subnet
        "space": json.dumps(spec.raw["space"]["arch"], sort_keys=True),
        "calibration_batches": spec.search.one_shot["calibration_batches"],
        "batch_size": int(train.get("batch_size", 64)),
        "constraints": dataclasses.asdict(spec.constraints) if spec.constraints else {},
        "num_threads": spec.trainer.num_threads or max(1, int(spec.resources.cpus_per_trial)),
    }
    return dataclasses.replace(spec, trainable="raynas.trainables.supernet:score_subnet", trainable_params=params,
                               max_epochs=1)
