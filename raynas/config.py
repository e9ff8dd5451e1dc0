"""Experiment spec: load a YAML file, apply ``--set`` overrides, validate into typed dataclasses.

Everything a run needs is checked here, before Ray starts: unknown keys (with a
did-you-mean), types, ranges, the space, strategy names and parameters, the objective
metric, the model family and the data source. A broken rule raises
:class:`~raynas.errors.ConfigError` naming the file, the key path, the rule and the value.

Example:
    >>> spec = spec_from_dict({"name": "demo", "space": {"arch": {"depth": {"int": [1, 3]}}},
    ...                        "search": {"num_trials": 2}})
    >>> spec.objective.metric, spec.search.searcher
    ('val_acc', 'random')
"""

from __future__ import annotations

import copy
import enum
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping, Sequence

import yaml

from raynas._imports import is_reference, load_reference
from raynas.errors import ConfigError, describe, did_you_mean
from raynas.experiment import BUDGETS
from raynas.search.registry import SCHEDULERS, SEARCH_COMMON, SEARCHERS, Param, Strategy
from raynas.spaces import Space
from raynas.trainables.hparams import LR_SCHEDULES, OPTIMIZERS, TrainParams

#: Metrics the built-in trainable reports every epoch.
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


#: Trials a search runs when ``search.num_trials`` is not set (grid: the grid size).
DEFAULT_NUM_TRIALS = 10


@dataclass
class SearchSpec:
    searcher: str = "random"
    num_trials: int | None = None
    max_concurrent: int | None = None
    seed: int | None = 0
    options: dict = field(default_factory=dict)


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


@dataclass
class TrainerSpec:
    engine: Engine = Engine.FAST
    precision: str = "32"
    checkpoint_every: int = 1
    num_threads: int | None = None
    max_failures: int = 1


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
    max_epochs: int = 10
    resources: Resources = field(default_factory=Resources)
    trainer: TrainerSpec = field(default_factory=TrainerSpec)
    metrics: tuple[str, ...] | None = None
    storage_path: str | None = None
    source_file: str | None = None
    base_dir: str | None = None
    raw: dict = field(default_factory=dict)

    @property
    def num_trials(self) -> int:
        """Trials the search runs (grid: the grid size unless ``num_trials`` is smaller)."""
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


_TOP_KEYS = (
    "name",
    "data",
    "model",
    "trainable",
    "space",
    "search",
    "scheduler",
    "objective",
    "constraints",
    "max_epochs",
    "resources",
    "trainer",
    "metrics",
    "storage_path",
)


# -- YAML -----------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.2), as users expect."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, file: str | None = None) -> Any:
    """Parses YAML text; syntax errors become a ConfigError with the line and column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(where, f"not valid YAML: {problem}", file) from None


def load_spec(
    file: str | os.PathLike, overrides: Sequence[str] = (), *, check_imports: bool = True
) -> ExperimentSpec:
    """Reads, overrides and validates an experiment file.

    Args:
        file: Path to the YAML file.
        overrides: ``key.path=value`` strings (values are YAML), applied before validation.
        check_imports: Import ``module:function`` references to check them (the driver will
            need them anyway).

    Raises:
        ConfigError: The file is missing, not YAML, or breaks a rule.

    Example:
        >>> spec = load_spec("experiments/quickstart.yaml", ["search.num_trials=4"])  # doctest: +SKIP
    """
    file = os.fspath(file)
    if not os.path.isfile(file):
        raise ConfigError("", f"no such experiment file (looked at {os.path.abspath(file)})", file)
    with open(file, encoding="utf-8") as f:
        raw = parse_yaml(f.read(), file)
    if raw is None:
        raise ConfigError("", "the experiment file is empty", file)
    if not isinstance(raw, dict):
        raise ConfigError("", f"an experiment file is a mapping of keys, got {type(raw).__name__}", file)
    raw = apply_overrides(raw, overrides, file)
    name = raw.get("name")
    if name is None:
        raw["name"] = os.path.splitext(os.path.basename(file))[0]
    return spec_from_dict(raw, file=file, base_dir=os.path.dirname(os.path.abspath(file)), check_imports=check_imports)


def apply_overrides(raw: dict, overrides: Sequence[str], file: str | None = None) -> dict:
    """Applies ``a.b.c=value`` strings to a copy of ``raw`` (values parsed as YAML).

    Example:
        >>> apply_overrides({"search": {"num_trials": 24}}, ["search.num_trials=4"])
        {'search': {'num_trials': 4}}
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError("--set", f"expected key.path=value, got {item!r}", file)
        value = parse_yaml(text, file) if text.strip() else None
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {key}", f"{where} holds {describe(child)}, not a mapping", file)
            node = child
        node[parts[-1]] = value
    return out


# -- validation ----------------------------------------------------------------------------


class _Section:
    """Reads one mapping of the experiment file, checking keys and types with key paths."""

    def __init__(self, raw: Any, path: str, allowed: Iterable[str], *, required: bool = False):
        if raw is None and not required:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(path, f"expected a mapping, got {describe(raw)}")
        self.raw, self.path = raw, path
        self.allowed = list(allowed)
        unknown_keys(raw, self.allowed, path)

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: str, default: Any = None, **rules: Any) -> Any:
        if name not in self.raw or self.raw[name] is None:
            return default
        return check_value(self.raw[name], kind, self.key(name), **rules)


def unknown_keys(raw: Mapping, allowed: Sequence[str], path: str) -> None:
    for key in raw:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(
                where,
                f"unknown key{did_you_mean(key, allowed) or ''}; allowed here: {', '.join(allowed)}",
            )


def check_value(
    value: Any,
    kind: str,
    path: str,
    *,
    low: float | None = None,
    low_open: bool = False,
    high: float | None = None,
    high_open: bool = False,
    choices: Sequence[Any] = (),
) -> Any:
    """Checks one scalar against a kind and bounds; returns it converted."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {describe(value)}")
        return value
    if kind == "strlist":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(path, f"expected a list of names, got {describe(value)}")
        return list(value)
    if kind in ("str", "enum"):
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {describe(value)}")
        if kind == "enum" and value not in choices:
            raise ConfigError(
                path, f"expected one of {', '.join(map(str, choices))}, got {value!r}{did_you_mean(value, choices)}"
            )
        return value
    if kind in ("int", "float"):
        v = value
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(path, f"expected {'an integer' if kind == 'int' else 'a number'}, got {describe(value)}")
        if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
            raise ConfigError(path, f"expected a finite number, got {describe(value)}")
        if kind == "int":
            if float(v) != int(v):
                raise ConfigError(path, f"expected an integer, got {describe(value)}")
            v = int(v)
        else:
            v = float(v)
        if low is not None and (v < low or (low_open and v == low)):
            raise ConfigError(path, f"must be {'>' if low_open else '>='} {low:g}, got {value}")
        if high is not None and (v > high or (high_open and v == high)):
            raise ConfigError(path, f"must be {'<' if high_open else '<='} {high:g}, got {value}")
        return v
    raise ValueError(f"unknown kind {kind}")  # internal misuse


def _strategy_options(strategy: Strategy, raw: Mapping, path: str, skip: Sequence[str]) -> dict:
    allowed = list(skip) + list(strategy.params)
    unknown_keys(raw, allowed, path)
    out = {}
    for name, param in strategy.params.items():
        out[name] = _param_value(param, raw.get(name), f"{path}.{name}")
    return out


def _param_value(param: Param, value: Any, path: str) -> Any:
    if value is None:
        return param.default
    return check_value(
        value, param.kind, path, low=param.low, low_open=param.low_open, high=param.high,
        high_open=param.high_open, choices=param.choices,
    )


def spec_from_dict(
    raw: Mapping[str, Any],
    *,
    file: str | None = None,
    base_dir: str | None = None,
    check_imports: bool = True,
) -> ExperimentSpec:
    """Validates an experiment given as a dict (the YAML content after overrides).

    Raises:
        ConfigError: A rule is broken (attributed to ``file`` when given).
    """
    try:
        return _validate(dict(raw), file, base_dir, check_imports)
    except ConfigError as err:
        raise err.with_file(file) from None


def _validate(raw: dict, file: str | None, base_dir: str | None, check_imports: bool) -> ExperimentSpec:
    top = _Section(raw, "", _TOP_KEYS)
    name = top.get("name", "str", "experiment")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise ConfigError("name", f"use letters, digits, '_', '-' and '.', starting with a letter or digit; got {name!r}")

    trainable, trainable_params = _trainable_ref(raw.get("trainable"))
    model = top.get("model", "str")
    max_epochs = top.get("max_epochs", "int", 10, low=1)

    # -- space
    if "space" not in raw or raw["space"] is None:
        raise ConfigError("space", "an experiment needs a search space (space: {arch: {...}, train: {...}})")
    if not isinstance(raw["space"], dict):
        raise ConfigError("space", f"expected a mapping like {{arch: {{...}}, train: {{...}}}}, got {describe(raw['space'])}")
    space = Space(raw["space"], path="space")
    if trainable is None:
        unknown_keys(raw["space"], ["arch", "train"], "space")
        if "arch" not in raw["space"]:
            raise ConfigError("space", "the built-in trainable needs space.arch (the architecture dict)")
        _check_train_space(raw["space"].get("train"))

    # -- objective
    metrics = raw.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise ConfigError("metrics", f"expected a list of metric names, got {describe(metrics)}")
        metrics = tuple(metrics)
        if trainable is None:
            raise ConfigError("metrics", "only a user trainable declares its metrics; the built-in one reports " + ", ".join(BUILTIN_METRICS))
    if trainable is not None and check_imports:
        trainable_params, declared = _trainable_params(trainable, trainable_params, base_dir, max_epochs, space)
        if metrics is None:
            metrics = declared
    known = BUILTIN_METRICS if trainable is None else metrics
    objective = _objective(raw.get("objective"), known)
    constraints = _constraints(raw.get("constraints"), trainable)

    res = _Section(raw.get("resources"), "resources", ["cpus_per_trial", "gpus_per_trial"])
    resources = Resources(
        cpus_per_trial=res.get("cpus_per_trial", "float", 1.0, low=0, low_open=True),
        gpus_per_trial=res.get("gpus_per_trial", "float", 0.0, low=0),
    )
    if resources.gpus_per_trial > 1 and resources.gpus_per_trial != int(resources.gpus_per_trial):
        raise ConfigError(
            "resources.gpus_per_trial",
            f"more than one GPU per trial must be a whole number, got {resources.gpus_per_trial:g}",
        )

    tr = _Section(raw.get("trainer"), "trainer", ["engine", "precision", "checkpoint_every", "num_threads", "max_failures"])
    trainer = TrainerSpec(
        engine=Engine(tr.get("engine", "enum", "fast", choices=[e.value for e in Engine])),
        precision=str(tr.raw.get("precision", "32")),
        checkpoint_every=tr.get("checkpoint_every", "int", 1, low=0),
        num_threads=tr.get("num_threads", "int", None, low=1),
        max_failures=tr.get("max_failures", "int", 1, low=0),
    )
    if trainer.precision not in ("32", "16-mixed", "bf16-mixed"):
        raise ConfigError(
            "trainer.precision", f"expected 32, 16-mixed or bf16-mixed, got {trainer.precision!r}"
        )
    if trainer.precision == "16-mixed" and resources.gpus_per_trial == 0:
        raise ConfigError(
            "trainer.precision", "16-mixed needs a GPU (resources.gpus_per_trial > 0); use bf16-mixed on CPUs"
        )

    # -- search and scheduler
    search = _search_spec(raw.get("search"), space)
    scheduler = _scheduler_spec(raw.get("scheduler"), max_epochs)
    _check_scheduler_metric(scheduler, objective)

    # -- model and data (the built-in trainable needs both; a user trainable may use data)
    data = None
    if raw.get("data") is not None or trainable is None:
        data = _data_spec(raw.get("data"), base_dir, check_imports)
    if trainable is None:
        model = model or "mlp"
        _check_model(model, base_dir, check_imports)
    elif model is not None:
        _check_model(model, base_dir, check_imports)
    if trainable is not None and check_imports:
        _check_reference(trainable, "trainable", base_dir)

    storage_path = top.get("storage_path", "str")
    spec = ExperimentSpec(
        name=name,
        space=space,
        data=data,
        model=model,
        trainable=trainable,
        trainable_params=trainable_params,
        search=search,
        scheduler=scheduler,
        objective=objective,
        constraints=constraints,
        max_epochs=max_epochs,
        resources=resources,
        trainer=trainer,
        metrics=metrics,
        storage_path=storage_path,
        source_file=os.path.abspath(file) if file else None,
        base_dir=base_dir,
        raw=copy.deepcopy(raw),
    )
    for strategy in (SEARCHERS[search.searcher], SCHEDULERS[scheduler.name]):
        strategy.check(spec)  # its own rules (raynas.search.rules, raynas.search.pbt)
    return spec


def _trainable_ref(raw: Any) -> tuple[str | None, dict]:
    """``trainable: pkg.mod:fn`` or ``trainable: {function: pkg.mod:fn, params: {...}}``."""
    if raw is None:
        return None, {}
    params: Any = {}
    path = "trainable"
    if isinstance(raw, dict):
        sec = _Section(raw, "trainable", ["function", "params"])
        if sec.raw.get("function") is None:
            raise ConfigError("trainable.function", "a trainable mapping needs function: package.module:function")
        ref, path = sec.get("function", "str"), "trainable.function"
        params = sec.raw.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError("trainable.params", f"expected a mapping of keyword arguments, got {describe(params)}")
    else:
        ref = check_value(raw, "str", "trainable")
    if not is_reference(ref):
        raise ConfigError(path, f"expected package.module:function, got {ref!r}")
    return ref, dict(params)


def _trainable_params(ref: str, params: dict, base_dir: str | None, max_epochs: int, space: Space) -> tuple[dict, tuple | None]:
    """Lets a trainable check its ``params`` before Ray starts.

    A trainable may carry ``validate_params(params, base_dir=..., max_epochs=..., space=...)``, returning
    ``(params, metrics)``: the checked (e.g. paths made absolute) parameters and the metrics it
    reports (None: unknown). It raises ConfigError with key paths relative to ``params``.
    """
    try:
        fn = load_reference(ref, base_dir)
    except Exception:  # noqa: BLE001 - reported with the reason by _check_reference
        return params, None
    hook = getattr(fn, "validate_params", None)
    if hook is None:
        return params, None
    try:
        checked, metrics = hook(params, base_dir=base_dir, max_epochs=max_epochs, space=space)
    except ConfigError as err:
        # Paths are relative to params, except a top-level key the hook was given.
        raise (err if err.path == "max_epochs" else err.under("trainable.params")) from None
    return checked, (tuple(metrics) if metrics is not None else None)


def _objective(raw: Any, known: Sequence[str] | None) -> Objective:
    """``{metric: val_acc, mode: max}`` or ``{metric: [val_acc, params], mode: [max, min]}``."""
    sec = _Section(raw, "objective", ["metric", "mode"])
    metric = sec.raw.get("metric", "val_acc")
    metrics = [metric] if isinstance(metric, str) else metric
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise ConfigError("objective.metric", f"expected a metric name or a list of names, got {describe(metric)}")
    if len(set(metrics)) != len(metrics):
        raise ConfigError("objective.metric", f"a metric appears twice: {metrics}")
    mode = sec.raw.get("mode", "max")
    modes = [mode] * len(metrics) if isinstance(mode, str) else mode
    if not isinstance(modes, list) or len(modes) != len(metrics):
        raise ConfigError(
            "objective.mode",
            f"expected max or min, or one of them per metric ({len(metrics)}), got {describe(mode)}",
        )
    for i, m in enumerate(modes):
        check_value(m, "enum", f"objective.mode{'' if isinstance(mode, str) else f'.{i}'}", choices=[x.value for x in Mode])
    for i, m in enumerate(metrics):
        if known is not None and m not in known:
            where = "objective.metric" if isinstance(metric, str) else f"objective.metric.{i}"
            raise ConfigError(
                where, f"the trainable never reports {m!r}{did_you_mean(m, known)}; it reports {', '.join(known)}"
            )
    return Objective(tuple(metrics), tuple(Mode(m) for m in modes))


def _constraints(raw: Any, trainable: str | None) -> Constraints:
    sec = _Section(raw, "constraints", ["max_params", "max_flops", "max_latency_ms"])
    constraints = Constraints(
        max_params=sec.get("max_params", "int", None, low=1),
        max_flops=sec.get("max_flops", "int", None, low=1),
        max_latency_ms=sec.get("max_latency_ms", "float", None, low=0, low_open=True),
    )
    if constraints and trainable is not None:
        raise ConfigError(
            "constraints", "budgets are checked by the built-in trainable (it measures each architecture); "
            "a user trainable enforces its own"
        )
    return constraints




def _check_scheduler_metric(scheduler: SchedulerSpec, objective: Objective) -> None:
    """The metric an early-stopping scheduler compares trials by: one of the objective's, and
    one that changes with training (each strategy's own rules are in its registry entry)."""
    if scheduler.name == "fifo":
        return
    metric = scheduler.options.get("metric")
    if metric is None and objective.multi:
        raise ConfigError(
            "scheduler.metric",
            f"{scheduler.name} compares trials by one metric, and the objective has several "
            f"({', '.join(objective.metrics)}); name the one it should use (e.g. metric: {objective.metrics[0]}), "
            "or use scheduler fifo",
        )
    metric = metric or objective.metric
    if metric not in objective.metrics:
        raise ConfigError(
            "scheduler.metric",
            f"must be one of the objective metrics ({', '.join(objective.metrics)}), got {metric!r}"
            + did_you_mean(metric, objective.metrics),
        )
    if metric in BUDGETS:
        raise ConfigError(
            "scheduler.metric",
            f"{metric} is fixed by the architecture and does not change during training, so {scheduler.name} "
            "could not tell a promising trial from a weak one; use a training metric such as val_acc",
        )


def _check_train_space(train: Any) -> None:
    if train is None:
        return
    if not isinstance(train, dict):
        raise ConfigError("space.train", f"expected a mapping of training hyperparameters, got {describe(train)}")
    unknown_keys(train, [f.name for f in fields(TrainParams)], "space.train")
    # Fixed values and choice options of known enums are checked here, before Ray starts.

    for key, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES)):
        value = train.get(key)
        options = value.get("choice") if isinstance(value, dict) else [value] if value is not None else []
        for i, option in enumerate(options or []):
            if isinstance(option, str) and option not in allowed:
                where = f"space.train.{key}" + (f".choice.{i}" if isinstance(value, dict) else "")
                raise ConfigError(
                    where, f"unknown {key} {option!r}{did_you_mean(option, allowed)}; known: {', '.join(allowed)}"
                )


def _strategy(raw: Any, section: str, key: str, registry: dict, default: str, common: Sequence[str]) -> tuple[str, dict, dict]:
    """Looks up ``section.key`` in a strategy registry; returns (name, its options, the raw mapping)."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(section, f"expected a mapping like {{{key}: {default}}}, got {describe(raw)}")
    raw = raw or {}
    name = raw.get(key, default)
    if not isinstance(name, str) or name not in registry:
        kind = "searcher" if section == "search" else "scheduler"
        raise ConfigError(
            f"{section}.{key}",
            f"unknown {kind} {name!r}{did_you_mean(str(name), registry)}; known: {', '.join(registry)}",
        )
    return name, _strategy_options(registry[name], raw, section, common), raw


def _search_spec(raw: Any, space: Space) -> SearchSpec:
    searcher, options, raw = _strategy(raw, "search", "searcher", SEARCHERS, "random", SEARCH_COMMON)
    sec = _Section({k: v for k, v in raw.items() if k in SEARCH_COMMON}, "search", SEARCH_COMMON)
    spec = SearchSpec(
        searcher=searcher,
        num_trials=sec.get("num_trials", "int", None, low=1),
        max_concurrent=sec.get("max_concurrent", "int", None, low=1),
        seed=sec.get("seed", "int", 0),
        options=options,
    )
    if searcher == "grid":
        space.grid()  # raises a ConfigError naming the continuous domains
        size = space.size()
        if size > 10_000_000:
            raise ConfigError("space", f"the grid has {int(size):,} configurations; use random or optuna search")
    return spec


def _scheduler_spec(raw: Any, max_epochs: int) -> SchedulerSpec:
    name, options, _ = _strategy(raw, "scheduler", "name", SCHEDULERS, "fifo", ("name",))
    if "max_t" in options:
        if options["max_t"] is None:
            options["max_t"] = max_epochs
        elif options["max_t"] > max_epochs:
            raise ConfigError(
                "scheduler.max_t", f"must be <= max_epochs ({max_epochs}), got {options['max_t']}"
            )
    grace = options.get("grace_period")
    limit = options.get("max_t", max_epochs)
    if grace is not None and grace > limit:
        raise ConfigError(
            "scheduler.grace_period",
            f"must be <= {'max_t' if 'max_t' in options else 'max_epochs'} ({limit}), got {grace}",
        )
    return SchedulerSpec(name=name, options=options)


def _data_spec(raw: Any, base_dir: str | None, check_imports: bool) -> DataSpec:
    sec = _Section(
        raw, "data", ["source", "val_fraction", "seed", "path", "target", "download", "max_samples", "params"]
    )
    spec = DataSpec(
        source=sec.get("source", "str", "digits"),
        val_fraction=sec.get("val_fraction", "float", 0.2, low=0, low_open=True, high=1, high_open=True),
        seed=sec.get("seed", "int", 0),
        path=sec.get("path", "str"),
        target=sec.get("target", "str"),
        download=sec.get("download", "bool", False),
        max_samples=sec.get("max_samples", "int", None, low=2),
        params=sec.raw.get("params") or {},
    )
    if not isinstance(spec.params, dict):
        raise ConfigError("data.params", f"expected a mapping of keyword arguments, got {describe(spec.params)}")
    from raynas.trainables.data import check_data_args

    if is_reference(spec.source) and not check_imports:
        return spec
    check_data_args(spec.source, spec.path, spec.target, base_dir, download=spec.download, params=spec.params)
    if spec.path is not None and base_dir is not None and not os.path.isabs(spec.path):
        spec.path = os.path.normpath(os.path.join(base_dir, spec.path))
    return spec


def _check_model(model: str, base_dir: str | None, check_imports: bool) -> None:
    from raynas.trainables.registry import UnknownFamilyError, resolve_family

    if is_reference(model):
        if check_imports:
            _check_reference(model, "model", base_dir)
        return
    try:
        resolve_family(model)
    except UnknownFamilyError as err:
        raise ConfigError("model", str(err)) from None


def _check_reference(ref: str, path: str, base_dir: str | None) -> None:
    try:
        obj = load_reference(ref, base_dir)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(path, f"cannot import {ref!r}: {err}") from None
    except Exception as err:  # the user's module raised while importing
        raise ConfigError(path, f"importing {ref!r} failed: {type(err).__name__}: {err}") from None
    if not callable(obj):
        raise ConfigError(path, f"{ref!r} is not callable")
