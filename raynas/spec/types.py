"""The typed experiment spec: what a validated experiment file becomes."""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass, field


from raynas.experiment import BUDGETS, RETRAIN_KEY
from raynas.spaces import Space


#: Metrics the built-in trainable reports every epoch (and the zero-cost proxies that
#: ``proxies:`` lists, ``raynas.experiment.PROXY_NAMES``).
BUILTIN_METRICS = ("val_acc", "val_loss", "train_loss", "params", "flops", "latency_ms", "epoch")


class Mode(str, enum.Enum):
    MAX = "max"
    MIN = "min"


class Engine(str, enum.Enum):
    """How a trial trains its LightningModule.

    ``fast`` drives the module's own hooks (training_step, validation_step,
    configure_optimizers) in a lean loop; ``lightning`` runs a ``pl.Trainer``.
    """

    FAST = "fast"
    LIGHTNING = "lightning"


@dataclass
class DataSpec:
    source: str = "digits"
    val_fraction: float = 0.2
    seed: int = 0
    path: str | None = None
    target: str | None = None
    download: bool = False
    max_samples: int | None = None
    params: dict = field(default_factory=dict)
    test_fraction: float = 0.0


#: Trials a search runs when ``search.num_trials`` is not set (grid: the grid size).
DEFAULT_NUM_TRIALS = 10


@dataclass
class SearchSpec:
    searcher: str = "random"
    num_trials: int | None = None
    max_concurrent: int | None = None
    seed: int | None = 0
    options: dict = field(default_factory=dict)
    #: Earlier experiment folders whose trials the searcher starts from (absolute paths).
    warm_start: list = field(default_factory=list)
    #: Configurations to evaluate first, in order (each one of the space's).
    points: list = field(default_factory=list)
    #: ``{"proxy": name, "candidates": n}``: n suggestions per trial, the best by the proxy trains.
    prescreen: dict | None = None
    #: ``standalone`` (every trial trains its network), ``one-shot`` (one weight-sharing
    #: supernet trains, and trials score subnets with its weights) or ``gradient`` (DARTS
    #: derives one cell, which then trains): raynas.search.oneshot.
    strategy: str = "standalone"
    #: One-shot settings: ``{"supernet_epochs": int, "calibration_batches": int}``.
    one_shot: dict = field(default_factory=dict)
    #: Gradient (DARTS) settings: ``{"supernet_epochs": int, "arch_lr": float, "max_skip": int | None}``.
    gradient: dict = field(default_factory=dict)


#: Schedulers whose trials exploit each other (Ray's PBT and PB2).
POPULATION_SCHEDULERS = ("pbt", "pb2")


@dataclass
class SchedulerSpec:
    name: str = "fifo"
    options: dict = field(default_factory=dict)

    @property
    def population_based(self) -> bool:
        """PBT or PB2: trials exploit each other's checkpoints."""
        return self.name in POPULATION_SCHEDULERS

    @property
    def synchronous_population(self) -> bool:
        """Synchronous PBT/PB2: perturbs only once the whole population reached the point."""
        return self.population_based and bool(self.options.get("synch"))


@dataclass
class Objective:
    """One metric to optimise, or several (a Pareto search).

    Attributes:
        metrics: The objective metrics; the first one ranks trials.
        modes: ``max`` or ``min`` for each metric.
    """

    metrics: tuple[str, ...] = ("val_acc",)
    modes: tuple[Mode, ...] = (Mode.MAX,)

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def mode(self) -> Mode:
        return self.modes[0]

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    def mode_of(self, metric: str) -> Mode:
        return self.modes[self.metrics.index(metric)]


@dataclass
class Constraints:
    """Budgets an architecture must meet before it trains (None: no limit).

    An architecture over budget is measured, rejected without training, and reported to the
    searcher as infeasible.
    """

    max_params: int | None = None
    max_flops: int | None = None
    max_latency_ms: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in self.limits().values())

    def limits(self) -> dict[str, float | None]:
        """``{metric: limit}`` for each budget metric (``experiment.BUDGETS``), None for no limit."""
        return {metric: getattr(self, f"max_{metric}") for metric in BUDGETS}

    def violations(self, stats: dict) -> dict[str, float]:
        """``{metric: relative excess}`` for every budget ``stats`` exceeds (empty: feasible)."""
        out = {}
        for metric, limit in self.limits().items():
            if limit is not None and stats.get(metric) is not None and stats[metric] > limit:
                out[metric] = stats[metric] / limit - 1.0
        return out


@dataclass
class Resources:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    #: Ray Train workers of a data-parallel trial (the one-shot supernet's), each with
    #: ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs; 1: the trial trains in its own actor.
    workers_per_trial: int = 1


@dataclass
class TrainerSpec:
    engine: Engine = Engine.FAST
    precision: str = "32"
    checkpoint_every: int = 1
    num_threads: int | None = None
    max_failures: int = 1


@dataclass
class RetrainSpec:
    """The ``retrain`` section that ``raynas retrain`` writes: this experiment trains the best
    configurations of an earlier search again, from scratch, with several seeds, and scores
    each on the test split at its last epoch (its trials read the test split; a search's never).

    Attributes:
        of: The search's experiment folder.
        candidates: ``({"trial": id, "rank": n, "config": {...}}, ...)``, best first.
        seeds: Trainings of each candidate, with seeds ``0 .. seeds - 1``.
        full_data: Train on train + validation (the validation scores are then on data the
            model trained on).
    """

    of: str
    candidates: tuple
    seeds: int = 1
    full_data: bool = False

    def configs(self) -> list[dict]:
        """The trials' configurations, candidate by candidate, seed by seed."""
        return [{**c["config"], RETRAIN_KEY: {"trial": c["trial"], "rank": c["rank"], "seed": seed}}
                for c in self.candidates for seed in range(self.seeds)]




@dataclass
class ExperimentSpec:
    """A validated experiment. Built by :func:`load_spec` or :func:`spec_from_dict`."""

    name: str
    space: Space
    data: DataSpec | None = None
    model: str | None = None
    trainable: str | None = None
    trainable_params: dict = field(default_factory=dict)
    search: SearchSpec = field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    objective: Objective = field(default_factory=Objective)
    constraints: Constraints = field(default_factory=Constraints)
    proxies: tuple[str, ...] = ()
    max_epochs: int = 10
    resources: Resources = field(default_factory=Resources)
    trainer: TrainerSpec = field(default_factory=TrainerSpec)
    metrics: tuple[str, ...] | None = None
    storage_path: str | None = None
    retrain: RetrainSpec | None = None
    source_file: str | None = None
    base_dir: str | None = None
    raw: dict = field(default_factory=dict)

    @property
    def num_trials(self) -> int:
        """Trials the search runs (grid: the grid size unless ``num_trials`` is smaller;
        a retrain: its candidates times its seeds)."""
        if self.retrain is not None:
            return len(self.retrain.candidates) * self.retrain.seeds
        if self.search.searcher == "grid":
            size = int(self.space.size())
            return size if self.search.num_trials is None else min(size, self.search.num_trials)
        return self.search.num_trials if self.search.num_trials is not None else DEFAULT_NUM_TRIALS

    @property
    def scheduler_metric(self) -> str:
        """The metric Tune and the scheduler see (the objective's, or the one named for early stopping)."""
        return self.scheduler.options.get("metric") or self.objective.metric

    @property
    def scheduler_mode(self) -> "Mode":
        return self.objective.mode_of(self.scheduler_metric)

    def to_raw(self) -> dict:
        """The file's content after overrides (what ``raynas resume`` re-validates)."""
        return copy.deepcopy(self.raw)
