"""Rules of the strategies whose builders import Ray: checked (and their derived options set)
when an experiment file is validated, which imports no Ray. Each registered strategy names
its rules in the registry (``Strategy.rules``); PBT's and PB2's live beside their builder in
:mod:`raynas.search.pbt`."""

from __future__ import annotations

import math

from raynas.errors import ConfigError
from raynas.search.registry import evolution_sizes

def check_evolution(spec) -> None:
    """Population and tournament sizes (derived from the budget unless given), one objective."""
    search = spec.search
    search.options["population_size"], search.options["sample_size"] = evolution_sizes(
        spec.num_trials, search.options["population_size"], search.options["sample_size"]
    )
    if search.options["sample_size"] > search.options["population_size"]:
        raise ConfigError(
            "search.sample_size",
            f"a tournament draws from the population, so sample_size must be <= population_size "
            f"({search.options['population_size']}), got {search.options['sample_size']}",
        )
    if spec.objective.multi:
        raise ConfigError(
            "search.searcher",
            f"evolution's tournaments compare one score, but the objective has {len(spec.objective.metrics)} "
            "metrics; use optuna (multi-objective TPE) for a Pareto search, or a single objective metric",
        )


def check_rl(spec) -> None:
    """The controller learns from one score per trial."""
    if spec.objective.multi:
        raise ConfigError(
            "search.searcher",
            f"rl's reward is one score, but the objective has {len(spec.objective.metrics)} metrics; use optuna "
            "(multi-objective TPE) for a Pareto search, or a single objective metric",
        )


def check_hyperband(spec) -> None:
    """raynas's HyperBand halves a bracket once all its trials exist: they must be allowed to live."""
    search, options = spec.search, spec.scheduler.options
    if search.max_concurrent is None:
        return
    need = hyperband_largest_bracket(options["max_t"], options["reduction_factor"])
    if search.max_concurrent < need:
        raise ConfigError(
            "search.max_concurrent",
            f"hyperband halves a bracket only once all its trials exist, and its largest bracket "
            f"(max_t={options['max_t']}, reduction_factor={options['reduction_factor']:g}) "
            f"holds {need} trials; max_concurrent={search.max_concurrent} would stop no trial. "
            "Leave max_concurrent unset (CPUs still limit the running trials) or use asha",
        )


def hyperband_largest_bracket(max_t: int, reduction_factor: float) -> int:
    """Trials in Ray's largest HyperBand bracket (the same arithmetic as its scheduler)."""
    eta = reduction_factor
    s_max_1 = int(round(math.log(max_t) / math.log(eta))) + 1
    sizes = [
        math.ceil(s_max_1 / (s + 1) * eta**s) for s in range(s_max_1) if int(max_t * eta ** (-s)) > 0
    ]
    return max(sizes or [1])
