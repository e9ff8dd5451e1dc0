"""Validation of a raw experiment mapping into an :class:`~raynas.spec.types.ExperimentSpec`:
every rule a run needs, checked before Ray starts."""

from __future__ import annotations

import copy
import os
import re
from dataclasses import fields
from typing import Any, Mapping, Sequence


from raynas._imports import is_reference, load_reference
from raynas.errors import ConfigError, describe, did_you_mean
from raynas.experiment import BUDGETS, PROXY_NAMES
from raynas.search import oneshot
from raynas.search.registry import SCHEDULERS, SEARCH_COMMON, SEARCHERS
from raynas.spaces import Space
from raynas.trainables.hparams import LR_SCHEDULES, OPTIMIZERS, TrainParams
from raynas.spec.types import BUILTIN_METRICS, Constraints, DataSpec, Engine, ExperimentSpec, Mode, Objective, Resources, RetrainSpec, SchedulerSpec, SearchSpec, TrainerSpec
from raynas.spec.checks import _Section, _strategy_options, check_value, unknown_keys


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
    "proxies",
    "max_epochs",
    "resources",
    "trainer",
    "metrics",
    "storage_path",
    "retrain",
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
    proxies = _proxies(raw.get("proxies"), trainable)  # before the trainable is imported: says what is wrong first
    if trainable is not None and check_imports:
        trainable_params, declared = _trainable_params(trainable, trainable_params, base_dir, max_epochs, space)
        if metrics is None:
            metrics = declared
    known = (*BUILTIN_METRICS, *proxies) if trainable is None else metrics
    if raw.get("retrain") is not None and trainable is None:
        known = (*known, "test_acc", "test_loss")  # a retrain scores the test split at its end
    objective = _objective(raw.get("objective"), known, builtin=trainable is None)
    constraints = _constraints(raw.get("constraints"), trainable)

    res = _Section(raw.get("resources"), "resources", ["cpus_per_trial", "gpus_per_trial", "workers_per_trial"])
    resources = Resources(
        cpus_per_trial=res.get("cpus_per_trial", "float", 1.0, low=0, low_open=True),
        gpus_per_trial=res.get("gpus_per_trial", "float", 0.0, low=0),
        workers_per_trial=res.get("workers_per_trial", "int", 1, low=1),
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
    search = _search_spec(raw.get("search"), space, max_epochs)
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
    retrain = _retrain_spec(raw.get("retrain"), trainable, data)
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
        proxies=proxies,
        max_epochs=max_epochs,
        resources=resources,
        trainer=trainer,
        metrics=metrics,
        storage_path=storage_path,
        retrain=retrain,
        source_file=os.path.abspath(file) if file else None,
        base_dir=base_dir,
        raw=copy.deepcopy(raw),
    )
    if search.prescreen and trainable is not None:
        raise ConfigError(
            "search.prescreen",
            f"scores the models raynas builds from space.arch; the trainable {trainable} builds its own, which raynas "
            "cannot see (use model: with a family instead, or remove search.prescreen)",
        )
    if len(search.points) > spec.num_trials:
        raise ConfigError(
            "search.points", f"{len(search.points)} points, more than the {spec.num_trials} trials the search runs "
            "(raise search.num_trials)",
        )
    for strategy in (SEARCHERS[search.searcher], SCHEDULERS[scheduler.name]):
        strategy.check(spec)  # its own rules (raynas.search.rules, raynas.search.pbt)
    if search.strategy in oneshot.SUPERNET_STRATEGIES:
        check_one_shot = oneshot.check_one_shot

        check_one_shot(spec)
    oneshot.check_workers(spec)
    return spec


def _retrain_spec(raw: Any, trainable: str | None, data: DataSpec | None) -> RetrainSpec | None:
    """The section ``raynas retrain`` writes (see RetrainSpec); checked like any other."""
    if raw is None:
        return None
    sec = _Section(raw, "retrain", ["of", "candidates", "seeds", "full_data"])
    if trainable is not None:
        raise ConfigError("retrain", "retraining needs the built-in trainable (a user trainable has no test split to score)")
    if data is None:
        raise ConfigError("retrain", "retraining needs a data section")
    of = sec.get("of", "str")
    if not of:
        raise ConfigError("retrain.of", "must name the search's experiment folder")
    candidates = sec.raw.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise ConfigError("retrain.candidates", f"expected a non-empty list, got {describe(candidates)}")
    for i, c in enumerate(candidates):
        if not isinstance(c, dict) or set(c) != {"trial", "rank", "config"} or not isinstance(c["config"], dict):
            raise ConfigError(f"retrain.candidates.{i}", f"expected {{trial, rank, config}}, got {describe(c)}")
    return RetrainSpec(of=of, candidates=tuple(candidates), seeds=sec.get("seeds", "int", 1, low=1),
                       full_data=sec.get("full_data", "bool", False))


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


def _objective(raw: Any, known: Sequence[str] | None, builtin: bool = False) -> Objective:
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
            if m in PROXY_NAMES and builtin:  # the built-in trainable computes it, when asked
                raise ConfigError(where, f"{m!r} is a zero-cost proxy, reported only when asked for: add proxies: [{m}]")
            raise ConfigError(
                where, f"the trainable never reports {m!r}{did_you_mean(m, known)}; it reports {', '.join(known)}"
            )
    return Objective(tuple(metrics), tuple(Mode(m) for m in modes))


def _proxies(raw: Any, trainable: str | None) -> tuple[str, ...]:
    """``proxies: [naswot, synflow, ...]``: zero-cost proxies each trial computes before training."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise ConfigError("proxies", f"expected a list of proxy names ({', '.join(PROXY_NAMES)}), got {describe(raw)}")
    for i, name in enumerate(raw):
        if name not in PROXY_NAMES:
            raise ConfigError(
                f"proxies.{i}", f"unknown proxy {name!r}{did_you_mean(name, PROXY_NAMES)}; known: {', '.join(PROXY_NAMES)}"
            )
        if raw.index(name) != i:
            raise ConfigError(f"proxies.{i}", f"{name!r} is listed twice; list each proxy once")
    if raw and trainable is not None:
        raise ConfigError(
            "proxies", f"proxies are computed by the built-in trainable on the model it builds; trainable "
            f"{trainable} builds its own, which raynas never sees. Remove proxies, or compute them in the "
            "trainable (raynas.trainables.proxies.compute) and report them as metrics"
        )
    return tuple(raw)


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
    if metric in BUDGETS or metric in PROXY_NAMES:
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


def _search_spec(raw: Any, space: Space, max_epochs: int) -> SearchSpec:
    STRATEGIES = oneshot.STRATEGIES

    strategy = (raw or {}).get("strategy", "standalone") if isinstance(raw, dict) else "standalone"
    if strategy not in STRATEGIES:
        raise ConfigError("search.strategy", f"unknown strategy {strategy!r}{did_you_mean(str(strategy), STRATEGIES)}; "
                                             f"known: {', '.join(STRATEGIES)}")
    # One-shot search proposes subnets with regularized evolution unless told otherwise (SPOS).
    default = "evolution" if strategy == "one-shot" else "random"
    searcher, options, raw = _strategy(raw, "search", "searcher", SEARCHERS, default, SEARCH_COMMON)
    sec = _Section({k: v for k, v in raw.items() if k in SEARCH_COMMON}, "search", SEARCH_COMMON)
    spec = SearchSpec(
        searcher=searcher,
        num_trials=sec.get("num_trials", "int", None, low=1),
        max_concurrent=sec.get("max_concurrent", "int", None, low=1),
        seed=sec.get("seed", "int", 0),
        options=options,
        warm_start=_warm_start(raw.get("warm_start")),
        points=_points(raw.get("points"), space),
        prescreen=_prescreen(raw.get("prescreen")),
        strategy=strategy,
        one_shot=_one_shot_settings(raw.get("one_shot"), strategy, max_epochs),
        gradient=_gradient_settings(raw.get("gradient"), strategy, max_epochs),
    )
    if searcher == "grid":
        space.grid()  # raises a ConfigError naming the continuous domains
        size = space.size()
        if size > 10_000_000:
            raise ConfigError("space", f"the grid has {int(size):,} configurations; use random or optuna search")
    return spec


def _settings_section(raw: Any, strategy: str, key: str, keys: list[str]):
    """``search.<key>``'s reader, or None when the strategy is not ``key`` (and it is absent)."""
    name = key.replace("_", "-")
    if raw is not None and strategy != name:
        raise ConfigError(f"search.{key}", f"only used with search.strategy: {name}")
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"search.{key}", f"expected a mapping of {', '.join(keys)}; got {describe(raw)}")
    return _Section(raw or {}, f"search.{key}", keys) if strategy == name else None


def _one_shot_settings(raw: Any, strategy: str, max_epochs: int) -> dict:
    """``search.one_shot``: ``supernet_epochs`` (default ``max_epochs``) and
    ``calibration_batches`` (default 10); refused without ``strategy: one-shot``."""
    sec = _settings_section(raw, strategy, "one_shot", ["supernet_epochs", "calibration_batches"])
    if sec is None:
        return {}
    return {
        "supernet_epochs": sec.get("supernet_epochs", "int", max_epochs, low=1),
        "calibration_batches": sec.get("calibration_batches", "int", oneshot.CALIBRATION_BATCHES, low=1),
    }


def _gradient_settings(raw: Any, strategy: str, max_epochs: int) -> dict:
    """``search.gradient``: ``supernet_epochs`` (default ``max_epochs``), ``arch_lr`` (default
    :data:`raynas.search.oneshot.ARCH_LR`) and ``max_skip`` (default 2; ``null``: no limit); refused without
    ``strategy: gradient``."""
    sec = _settings_section(raw, strategy, "gradient", ["supernet_epochs", "arch_lr", "max_skip"])
    if sec is None:
        return {}
    max_skip = (raw or {}).get("max_skip", 2)
    if max_skip is not None:
        max_skip = sec.get("max_skip", "int", 2, low=0)
    return {
        "supernet_epochs": sec.get("supernet_epochs", "int", max_epochs, low=1),
        "arch_lr": sec.get("arch_lr", "float", oneshot.ARCH_LR, low=0, low_open=True),
        "max_skip": max_skip,
    }


def _warm_start(raw: Any) -> list[str]:
    """``search.warm_start``: folders of earlier experiments (read when the run starts)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(p, str) and p for p in raw):
        raise ConfigError("search.warm_start", f"expected a list of experiment folders, got {describe(raw)}")
    return [os.path.abspath(os.path.expanduser(p)) for p in raw]


def _prescreen(raw: Any) -> dict | None:
    """``search.prescreen: {proxy: naswot, candidates: 10}``."""
    if raw is None:
        return None
    sec = _Section(raw, "search.prescreen", ["proxy", "candidates"])
    proxy = sec.get("proxy", "str")
    if proxy is None or proxy not in PROXY_NAMES:
        raise ConfigError(
            "search.prescreen.proxy",
            f"{'a zero-cost proxy is needed' if proxy is None else f'unknown proxy {proxy!r}'}"
            f"{did_you_mean(str(proxy), PROXY_NAMES)}; known: {', '.join(PROXY_NAMES)}",
        )
    return {"proxy": proxy, "candidates": sec.get("candidates", "int", 10, low=2)}


def _points(raw: Any, space: Space) -> list[dict]:
    """``search.points``: configurations of the space, evaluated first (constants may be left out)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError("search.points", f"expected a list of configurations ({{arch: {{...}}, train: {{...}}}}), got {describe(raw)}")
    from raynas.spaces.replay import OutsideSpace

    points = []
    for i, point in enumerate(raw):
        key = f"search.points[{i}]"
        if not isinstance(point, dict):
            raise ConfigError(key, f"expected a configuration of the space (a mapping), got {describe(point)}")
        try:
            config, changes = space.project(point)
        except OutsideSpace as err:
            raise ConfigError(key, f"not a configuration of the space: {err}") from None
        if changes:
            raise ConfigError(key, f"not a configuration of the space: {changes[0]} would be needed to fit it")
        points.append(config)
    return points


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
        raw, "data", ["source", "val_fraction", "test_fraction", "seed", "path", "target", "download", "max_samples", "params"]
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
        test_fraction=sec.get("test_fraction", "float", 0.0, low=0, high=1, high_open=True),
    )
    if spec.val_fraction + spec.test_fraction >= 1:
        raise ConfigError(
            "data.test_fraction",
            f"val_fraction + test_fraction must be < 1 (something must be left to train on), got "
            f"{spec.val_fraction:g} + {spec.test_fraction:g}",
        )
    from raynas.trainables.data.sources import _PUBLISHED_TEST

    if spec.test_fraction and spec.source in _PUBLISHED_TEST:
        raise ConfigError(
            "data.test_fraction",
            f"source {spec.source!r} holds out its official test set ({_PUBLISHED_TEST[spec.source]}); "
            f"test_fraction applies to digits, csv and user sources, got {spec.test_fraction:g}",
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
