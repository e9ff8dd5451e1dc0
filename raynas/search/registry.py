"""Searcher and scheduler registry: a name in YAML -> its parameters -> a configured Ray Tune object.

This is the only place that maps a strategy name to code. Parameter declarations are plain
data so an experiment file can be checked (``raynas validate``) without importing Ray; the
builders import Ray Tune lazily.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Param:
    """One strategy parameter as written in YAML.

    Attributes:
        kind: ``int``, ``float``, ``bool``, ``str``, ``enum`` or ``strlist``.
        default: Value used when the key is absent; ``None`` means "derived" (see help).
        low: Smallest allowed value for numbers (inclusive unless ``low_open``); ``high`` likewise.
        choices: Allowed values for ``enum``.
    """

    kind: str
    default: Any = None
    low: float | None = None
    low_open: bool = False
    choices: tuple = ()
    help: str = ""
    high: float | None = None
    high_open: bool = False


@dataclass(frozen=True)
class Strategy:
    """A registered searcher or scheduler: its parameters and a lazy ``module:function`` builder."""

    name: str
    params: dict[str, Param] = field(default_factory=dict)
    builder: str = ""
    help: str = ""
    #: ``module:function`` that checks a validated spec against this strategy's own rules
    #: (and sets its derived options); Ray-free, since validation runs before Ray is imported.
    rules: str = ""

    def build(self, *args, **kwargs) -> Any:
        return _load(self.builder)(*args, **kwargs)

    def check(self, spec) -> None:
        """Raises ConfigError where ``spec`` breaks this strategy's rules."""
        if self.rules:
            _load(self.rules)(spec)


def _load(ref: str) -> Callable:
    module, _, func = ref.partition(":")
    return getattr(importlib.import_module(module), func)


# Keys every searcher accepts; the rest of `search:` are the chosen searcher's parameters.
SEARCH_COMMON = ("searcher", "num_trials", "max_concurrent", "seed", "warm_start", "points", "prescreen", "strategy",
                 "one_shot", "gradient")

SEARCHERS: dict[str, Strategy] = {
    "random": Strategy(
        "random",
        builder="raynas.search.searchers:build_random",
        help="independent seeded samples from the space",
    ),
    "grid": Strategy(
        "grid",
        builder="raynas.search.searchers:build_grid",
        help="every configuration of a finite space once (num_trials defaults to the grid size)",
    ),
    "optuna": Strategy(
        "optuna",
        params={
            "sampler": Param(
                "enum", "auto", choices=("auto", "tpe", "nsga2", "random"),
                help="auto: TPE, also for several objectives (multi-objective TPE)",
            ),
            "n_startup_trials": Param("int", 8, low=0, help="random trials before TPE models the results"),
            "multivariate": Param("bool", True, help="TPE models parameters jointly"),
            "constant_liar": Param("bool", True, help="spread out concurrent suggestions"),
            "multi_fidelity": Param(
                "enum", "auto", choices=("auto", "always", "never"),
                help="TPE models the trials' values at the largest epoch enough of them reached (BOHB); "
                "auto: when the scheduler stops trials early (asha, hyperband, median); one objective only",
            ),
            "min_points": Param(
                "int", None, low=2,
                help="trials an epoch needs before TPE models it there (default: the space's dimension + 2, "
                "at least n_startup_trials)",
            ),
        },
        builder="raynas.search.searchers:build_optuna",
        help="Optuna TPE through the define-by-run bridge",
    ),
    "evolution": Strategy(
        "evolution",
        params={
            "population_size": Param(
                "int", None, low=2,
                help="members kept: the most recently completed trials; also the random start "
                "(default: num_trials // 10, within 6..20)",
            ),
            "sample_size": Param(
                "int", None, low=1,
                help="tournament size: members drawn to pick each parent (default: 3/4 of population_size, rounded up)",
            ),
            "mutations": Param("int", 1, low=1, help="most places a child changes from its parent"),
        },
        builder="raynas.search.evolution:build_evolution",
        rules="raynas.search.rules:check_evolution",
        help="regularized (aging) evolution: mutate the winner of a random tournament, oldest member leaves",
    ),
    "rl": Strategy(
        "rl",
        params={
            "lr": Param("float", 0.02, low=0, low_open=True, high=1, help="Adam's learning rate, one step per finished trial"),
            "entropy_weight": Param("float", 0.05, low=0, high=1, help="weight of the entropy bonus (rewards are scaled to unit spread)"),
            "baseline_decay": Param("float", 0.5, low=0, high=1, high_open=True, help="decay of the rewards' moving-average baseline"),
            "hidden_size": Param("int", 32, low=1, high=1024, help="width of the controller's GRU state and embeddings"),
            "float_bins": Param("int", 8, low=2, high=1000, help="bins of a continuous float (log-spaced for log ranges) or a large int range"),
        },
        builder="raynas.search.rl:build_rl",
        rules="raynas.search.rules:check_rl",
        help="policy-gradient controller (REINFORCE, Zoph & Le / ENAS): a GRU emits each decision of the space in turn",
    ),
}

#: Evolution's population bounds when it is derived from the budget (``num_trials // 10``).
EVOLUTION_POPULATION = (6, 20)


def evolution_sizes(num_trials: int | None, population_size: int | None = None, sample_size: int | None = None) -> tuple[int, int]:
    """Evolution's ``(population_size, sample_size)``: the ones given, the others derived.

    The population is also the random start, so a small budget gets a small one (a tenth of
    ``num_trials``, within 6..20; 20 without a budget), and tournaments of three quarters of
    it pick strong parents, so that a small budget is spent exploiting. At 120 trials these
    sizes reach a top-1% configuration sooner than a population of 20 with tournaments of 5
    (benchmarks/searcher_defaults.py, docs/searcher_defaults.md).

    Example:
        >>> evolution_sizes(120), evolution_sizes(10), evolution_sizes(1000), evolution_sizes(120, 4)
        ((12, 9), (6, 5), (20, 15), (4, 3))
    """
    if population_size is None:
        low, high = EVOLUTION_POPULATION
        population_size = high if num_trials is None else min(high, max(low, num_trials // 10))
    if sample_size is None:
        sample_size = max(1, math.ceil(0.75 * population_size))
    return population_size, sample_size


# Early stopping compares trials by one metric: with several objectives, name it.
_SCHEDULER_METRIC = Param("str", None, help="the objective metric that drives early stopping (needed with several)")

def _population_params(**extra: Param) -> dict[str, Param]:
    """PBT's and PB2's parameters, plus ``extra`` (Ray's PB2 has no burn-in or resampling)."""
    return {
        "perturbation_interval": Param("int", 2, low=1, help="epochs between exploit/explore steps"),
        "quantile_fraction": Param("float", 0.25, low=0, low_open=True, high=0.5),
        **extra,
        "hyperparams": Param("strlist", None, help="space.train keys to perturb (default: every searched numeric one)"),
        "synch": Param("bool", False, help="synchronous (waits for the whole population)"),
        "metric": _SCHEDULER_METRIC,
    }


SCHEDULERS: dict[str, Strategy] = {
    "fifo": Strategy("fifo", builder="raynas.search.schedulers:build_fifo", help="no early stopping"),
    "asha": Strategy(
        "asha",
        params={
            "grace_period": Param("int", 1, low=1, help="epochs every trial gets before it can be stopped"),
            "reduction_factor": Param("float", 3, low=1, low_open=True, help="keep 1/rf of the trials per rung"),
            "brackets": Param("int", 1, low=1, help="number of ASHA brackets"),
            "max_t": Param("int", None, low=1, help="longest a trial runs (defaults to max_epochs)"),
            "metric": _SCHEDULER_METRIC,
        },
        builder="raynas.search.schedulers:build_asha",
        help="asynchronous successive halving",
    ),
    "hyperband": Strategy(
        "hyperband",
        params={
            "reduction_factor": Param("float", 3, low=1, low_open=True),
            "max_t": Param("int", None, low=1, help="longest a trial runs (defaults to max_epochs)"),
            "stop_last_trials": Param("bool", True),
            "metric": _SCHEDULER_METRIC,
        },
        builder="raynas.search.schedulers:build_hyperband",
        rules="raynas.search.rules:check_hyperband",
        help="synchronous HyperBand (pauses and resumes trials from checkpoints)",
    ),
    "median": Strategy(
        "median",
        params={
            "grace_period": Param("int", 1, low=1),
            "min_samples_required": Param("int", 3, low=1),
            "hard_stop": Param("bool", True),
            "metric": _SCHEDULER_METRIC,
        },
        builder="raynas.search.schedulers:build_median",
        help="stop trials below the median of the others at the same epoch",
    ),
    "pbt": Strategy(
        "pbt",
        params=_population_params(
            burn_in_period=Param("int", 0, low=0, help="epochs before the first perturbation"),
            resample_probability=Param("float", 0.25, low=0, high=1),
        ),
        builder="raynas.search.pbt:build_pbt",
        rules="raynas.search.pbt:check_spec",
        help="population based training: the worst trials take the weights and architecture of the best, "
        "with perturbed training hyperparameters",
    ),
    "pb2": Strategy(
        "pb2",
        params=_population_params(),
        builder="raynas.search.pbt:build_pb2",
        rules="raynas.search.pbt:check_spec",
        help="population based bandits: pbt whose new hyperparameters come from a GP bandit "
        "(scikit-learn) fitted to the population's progress",
    ),
}
