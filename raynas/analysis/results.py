"""Read an experiment folder, rank its trials and find its Pareto front (no Ray needed,
works while a run goes on)."""

from __future__ import annotations

from collections import Counter
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from raynas.experiment import (
    SCREENED_FILE,
    SUPERNET_DIR,
    SUPERNET_STRATEGIES,
    PROXY_NAMES,
    loss_sign,
    RETRAIN_DIR,
    RETRAIN_KEY,
    SPEC_FILE,
    Status,
    TrialRecord,
    is_experiment_dir,
    read_journal,
    read_meta,
    read_results,
)
from raynas.errors import ConfigError, describe, did_you_mean

# As raynas.analysis.pareto.MODES; not imported from there, to keep numpy out of a plain analyze.
_MODES = ("max", "min")

# Default hypervolume reference, in normalised units: 10% beyond the worst scored trial, so
# that the worst trials on each objective still add volume.
REFERENCE_MARGIN = 1.1

# Trials whose values, even if some epochs were reported, are not a result to trade off.
_UNSCORABLE = (Status.FAILED, Status.ERROR)

# Keys Ray Tune adds to every result; not the trial's own metrics.
_TUNE_KEYS = {
    "timestamp",
    "checkpoint_dir_name",
    "should_checkpoint",
    "done",
    "training_iteration",
    "trial_id",
    "date",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "hostname",
    "node_ip",
    "config",
    "time_since_restore",
    "iterations_since_restore",
    "experiment_tag",
}


@dataclass
class TrialResult:
    """One trial as ``raynas analyze`` shows it.

    Attributes:
        rank: 1 for the best trial; ``None`` until ranked.
        best: Best value of the objective over the trial's epochs (None if it never reported it).
        metrics: The trial's last reported metrics (without Tune's bookkeeping keys).
        curve: Every epoch's metrics, in order.
        order: 1 for the first trial started, 2 for the next, ...
        started, ended: When the trial started and ended (Unix seconds; None if not yet).
        test: For a search trial that ``raynas retrain`` trained again: ``{"mean", "sd",
            "n", "test_acc"}`` over its seeds (test split accuracy); None otherwise.
        compressed: What ``raynas compress`` made of this trial's model: its stored
            before/after tables (``steps``, ``before``, ``after``, ``split``, ``artifact``).
    """

    trial_id: str
    status: Status
    order: int | None
    epochs: int
    best: float | None
    best_epoch: int | None
    metrics: dict
    config: dict
    error: str | None = None
    dir: str | None = None
    curve: list[dict] = field(default_factory=list)
    rank: int | None = None
    origin: dict = field(default_factory=dict)
    stopped_at: dict | None = None
    started: float | None = None
    ended: float | None = None
    test: dict | None = None
    compressed: list[dict] = field(default_factory=list)

    @property
    def params(self) -> Any:
        return self.metrics.get("params")

    @property
    def flops(self) -> Any:
        return self.metrics.get("flops")

    @property
    def latency_ms(self) -> Any:
        return self.metrics.get("latency_ms")

    @property
    def proxies(self) -> dict[str, Any]:
        """The zero-cost proxies the trial computed (``proxies:`` in the experiment), by name."""
        return {name: self.metrics[name] for name in PROXY_NAMES if name in self.metrics}

    def to_json(self) -> dict:
        return {
            "rank": self.rank,
            "trial_id": self.trial_id,
            "status": self.status.value,
            "epochs": self.epochs,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "metrics": self.metrics,
            "params": self.params,
            "flops": self.flops,
            "latency_ms": self.latency_ms,
            **({"proxies": self.proxies} if self.proxies else {}),
            "config": self.config,
            "order": self.order,
            "error": self.error,
            "dir": self.dir,
            "origin": self.origin,
            "stopped_at": self.stopped_at,
            **({"test": self.test} if self.test is not None else {}),
            **({"compressed": self.compressed} if self.compressed else {}),
        }

    def objectives(self, metrics: Sequence[str], modes: Sequence[str]) -> tuple[int | None, dict[str, float]] | None:
        """The trial as one point of a multi-objective comparison.

        Every value comes from one epoch, hence one model state: the epoch where the trial
        scored best on ``metrics[0]`` (the earliest such epoch on a tie). Per-model metrics
        such as ``params``, ``flops`` and ``latency_ms`` are the same at every epoch.

        Args:
            metrics: Metric names; the first one picks the epoch.
            modes: ``"max"`` or ``"min"`` for each metric (only the first one is used here).

        Returns:
            ``(epoch, {metric: value})``, or ``None`` when the trial never reported the first
            metric or lacks a finite value of another metric at that epoch.

        Example:
            >>> trial.objectives(["val_acc", "params"], ["max", "min"])  # doctest: +SKIP
            (7, {'val_acc': 0.91, 'params': 12345})
        """
        scored = [row for row in self.curve if is_finite(row.get(metrics[0]))]
        if not scored:
            return None
        row = min(scored, key=lambda r: loss_sign(modes[0]) * r[metrics[0]])  # the first of equal values: earliest
        values = {m: row.get(m) for m in metrics}
        if not all(is_finite(v) for v in values.values()):
            return None
        epoch = row.get("epoch")
        return (int(epoch) if is_finite(epoch) else None), values


@dataclass
class FrontTrial:
    """A trial on a Pareto front.

    Attributes:
        rank: 1 for the front's best trial on the first objective, 2 for the next, ...
        trial: The trial.
        epoch: The epoch its objective values come from (its best on the first objective).
        objectives: ``{metric: value}`` for every objective.
    """

    rank: int
    trial: TrialResult
    epoch: int | None
    objectives: dict[str, float]

    def to_json(self) -> dict:
        """The trial as ``raynas analyze --format json`` writes it, plus its objectives."""
        out = self.trial.to_json()
        out["rank"] = self.rank
        out["objectives"] = dict(self.objectives)
        out["objectives_epoch"] = self.epoch
        return out


@dataclass
class ParetoResult:
    """The Pareto front of an experiment and its hypervolume.

    How the hypervolume is made comparable and free of units: each objective is turned
    into one to minimise (``max`` ones negated) and min-max scaled over the scored trials,
    so 0 is the best value any scored trial reached and 1 the worst. ``hypervolume`` is
    measured in that space against ``reference_normalised`` (by default
    :data:`REFERENCE_MARGIN` = 1.1 on every objective, so at most 1.1 ** d). The scaling
    depends on the trials, so compare hypervolumes of one experiment over time; to compare
    experiments, give them one explicit ``reference`` and compare ``hypervolume_raw``.

    Attributes:
        metrics: The objectives, the first one ranks the front.
        modes: ``"max"`` or ``"min"`` for each.
        front: The non-dominated trials, best on the first objective first (ties: the next
            objectives, then the earlier trial). Trials with equal values are all on it.
        hypervolume: Hypervolume of the front in the normalised space (0.0 for no front).
        hypervolume_raw: The same volume in the metrics' own units (their product).
        reference: The reference point in the metrics' own units (``None`` with no scored trial).
        reference_normalised: The reference point in the normalised space.
        reference_given: True when ``reference`` was passed, False for the default.
        normalisation: ``{metric: {"min": lowest, "max": highest}}`` over the scored trials,
            in the metric's own units. A metric with a single value is scaled by 1 (every
            trial sits at 0 on it).
        scored: How many trials have a finite value for every objective (the front's pool).
        unscored: How many of the trials looked at do not: failed, errored, or missing one.

    Example:
        >>> front = load_results("raynas_results/nas").pareto()  # doctest: +SKIP
        >>> front.hypervolume, front.reference  # doctest: +SKIP
        (0.8421, [0.6123, 1480213.0])
        >>> [(f.rank, f.trial.trial_id, f.objectives) for f in front.front][:1]  # doctest: +SKIP
        [(1, 'a1b2c_00007', {'val_acc': 0.93, 'params': 1190544})]
    """

    metrics: list[str]
    modes: list[str]
    front: list[FrontTrial]
    hypervolume: float
    hypervolume_raw: float
    reference: list[float] | None
    reference_normalised: list[float] | None
    reference_given: bool
    normalisation: dict[str, dict[str, float]]
    scored: int
    unscored: int

    def to_json(self) -> dict:
        return {
            "metrics": list(self.metrics),
            "modes": list(self.modes),
            "hypervolume": self.hypervolume,
            "hypervolume_raw": self.hypervolume_raw,
            "reference": self.reference,
            "reference_normalised": self.reference_normalised,
            "reference_given": self.reference_given,
            "normalisation": self.normalisation,
            "scored": self.scored,
            "unscored": self.unscored,
            "front": [f.to_json() for f in self.front],
        }


@dataclass
class ExperimentResults:
    """An experiment folder, read.

    ``metric`` and ``mode`` are the first objective (the one trials are ranked by);
    ``metrics`` and ``modes`` list every objective of a multi-objective experiment.

    Example:
        >>> results = load_results("raynas_results/quickstart")  # doctest: +SKIP
        >>> [t.trial_id for t in results.leaderboard(top=3)]  # doctest: +SKIP
    """

    dir: Path
    name: str
    metric: str
    mode: str
    max_epochs: int
    meta: dict
    trials: list[TrialResult]
    metrics: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    #: The retrain of this search (``DIR/retrain``), read; None without one.
    retrain: ExperimentResults | None = None
    #: What ``search.prescreen`` did not train (``screened.json``: proxy, candidates); None without one.
    screened: dict | None = None
    #: A one-shot search's supernet stage and costs (:func:`_one_shot_summary`); None otherwise.
    one_shot: dict | None = None

    def __post_init__(self) -> None:
        if not self.metrics:
            self.metrics = [self.metric]
        if not self.modes:
            self.modes = [self.mode] * len(self.metrics)

    def leaderboard(self, top: int | None = None, include_lost: bool = False) -> list[TrialResult]:
        """Trials ranked by their best objective value (ties: the earlier trial first).

        Trials that never reported the objective (failed, errored, not started) come last.
        """
        trials = [t for t in self.trials if include_lost or t.status is not Status.LOST]
        sign = loss_sign(self.mode)
        ranked = sorted(
            trials,
            key=lambda t: (t.best is None, sign * t.best if t.best is not None else 0.0, t.order or math.inf),
        )
        for i, trial in enumerate(ranked, start=1):
            trial.rank = i
        return ranked[:top] if top else ranked

    def best(self) -> TrialResult | None:
        board = self.leaderboard(top=1)
        return board[0] if board and board[0].best is not None else None

    def failure_summary(self) -> str | None:
        """Why no trial scored the objective, or None when one did.

        For a search whose trials all failed, errored or were rejected, or never reported the
        objective metric: the count of each status, then each distinct error with its count.
        """
        trials = [t for t in self.trials if t.status is not Status.LOST]
        if not trials or any(t.best is not None for t in trials):
            return None
        counts = Counter(t.status.value for t in trials)
        lines = [f"no trial scored the objective {self.metric!r}: " + ", ".join(f"{n} {s}" for s, n in counts.most_common())]
        errors = Counter(t.error.strip().splitlines()[-1] for t in trials if t.error and t.error.strip())
        lines += [f"  {n} x {text}" for text, n in errors.most_common(5)]
        if len(errors) > 5:
            lines.append(f"  ... and {len(errors) - 5} other errors (raynas analyze --format json lists each trial's)")
        if not errors:
            reported = ", ".join(self.reported_metrics()) or "nothing"
            lines.append(f"  trials ended without reporting {self.metric!r}; they reported: {reported}")
        return "\n".join(lines)

    def reported_metrics(self) -> list[str]:
        """Names of the numeric metrics any trial reported in any epoch, sorted."""
        names = {k for t in self.trials for row in t.curve for k, v in row.items() if is_number(v)}
        return sorted(names)

    def pareto(
        self,
        metrics: Sequence[str] | None = None,
        modes: Sequence[str] | str | None = None,
        reference: Sequence[float] | None = None,
        include_lost: bool = False,
    ) -> ParetoResult:
        """The trials no other trial beats on every objective, and the front's hypervolume.

        Each trial is one point, its objective values taken at its best epoch on the first
        metric (see :meth:`TrialResult.objectives`). Failed and errored trials, and trials
        without a finite value for every objective, are not on the front.
        See :class:`ParetoResult` for the normalisation and the default reference point.

        Args:
            metrics: Objectives to use instead of the experiment's own (two or more).
            modes: ``"max"``/``"min"`` per metric, or one for all; needed with ``metrics``.
            reference: Reference point in the metrics' own units, worse than the trials
                that should count (default: 10% beyond the worst scored trial on each).
            include_lost: Also look at trials lost to a crash (superseded on resume).

        Raises:
            ConfigError: Fewer than two objectives, a bad mode, a metric no trial reported,
                or a reference of the wrong length or with a non-finite value.

        Example:
            >>> results = load_results("raynas_results/quickstart")  # doctest: +SKIP
            >>> front = results.pareto(["val_acc", "params"], ["max", "min"])  # doctest: +SKIP
            >>> [(f.trial.trial_id, f.objectives) for f in front.front]  # doctest: +SKIP
            >>> results.pareto(["val_acc", "params"], ["max", "min"], reference=[0.5, 2e6]).hypervolume_raw  # doctest: +SKIP
        """
        # numpy only here: a plain `raynas analyze` stays quick to start.
        import numpy as np

        from raynas.analysis.pareto import hypervolume, pareto_front, to_minimisation

        given = metrics is not None
        where = "metrics" if given else "objective.metric"
        file = None if given else str(self.dir / SPEC_FILE)
        if given:
            metrics = [metrics] if isinstance(metrics, str) else list(metrics)
            if modes is None:
                raise ConfigError("modes", "give a mode ('max' or 'min') for each metric, or one for all")
        elif modes is not None:
            raise ConfigError("modes", "modes go with metrics: pass both, or neither for the experiment's objectives")
        else:
            metrics, modes = list(self.metrics), list(self.modes)
        modes = [modes] * len(metrics) if isinstance(modes, str) else list(modes)
        _check_objectives(metrics, modes, where, "modes" if given else "objective.mode", file)
        if len(metrics) < 2:
            raise ConfigError(
                where,
                f"a Pareto front needs two or more objectives, got only {metrics[0]!r}; "
                + ("pass two or more metrics" if given else "give objective.metric a list, e.g. "
                   "objective: {metric: [val_acc, params], mode: [max, min]}"),
                file,
            )
        known = self.reported_metrics()
        if known:  # before any trial reported, an empty front is the honest answer
            for m in metrics:
                if m not in known:
                    raise ConfigError(
                        where,
                        f"no trial reported {m!r}{did_you_mean(m, known)}; reported: {', '.join(known)}",
                        file,
                    )
        ref_raw = None if reference is None else _check_reference(reference, len(metrics))

        looked_at = [t for t in self.trials if include_lost or t.status is not Status.LOST]
        points: list[tuple[TrialResult, int | None, dict]] = []
        for t in looked_at:
            point = t.objectives(metrics, modes) if t.status not in _UNSCORABLE else None
            if point is not None:
                points.append((t, *point))
        unscored = len(looked_at) - len(points)
        if not points:
            return ParetoResult(metrics, modes, [], 0.0, 0.0, ref_raw, None, ref_raw is not None, {}, 0, unscored)

        raw = np.array([[values[m] for m in metrics] for _, _, values in points], dtype=float)
        loss = to_minimisation(raw, modes)
        low, high = loss.min(axis=0), loss.max(axis=0)
        # A metric every trial shares has no range: scale it by 1 rather than divide by 0.
        span = np.where(high > low, high - low, 1.0)
        norm = (loss - low) / span
        if ref_raw is None:
            ref_norm = np.full(len(metrics), REFERENCE_MARGIN)
            ref_loss = low + ref_norm * span
            signs = np.array([loss_sign(m) for m in modes])
            ref_raw = [float(v) for v in ref_loss * signs]
            ref_given = False
        else:
            ref_norm = (to_minimisation(np.array([ref_raw]), modes)[0] - low) / span
            ref_given = True
        hv = hypervolume(norm, ["min"] * len(metrics), ref_norm)
        hv_raw = hypervolume(raw, modes, ref_raw)

        on_front = pareto_front(raw, modes)
        # Best first on the first objective, then on the next ones, then the earlier trial.
        ordered = sorted(on_front, key=lambda i: (*loss[i], points[i][0].order or math.inf))
        front = [
            FrontTrial(rank, points[i][0], points[i][1], {m: points[i][2][m] for m in metrics})
            for rank, i in enumerate(ordered, start=1)
        ]
        normalisation = {m: {"min": float(raw[:, k].min()), "max": float(raw[:, k].max())} for k, m in enumerate(metrics)}
        return ParetoResult(
            metrics=metrics,
            modes=modes,
            front=front,
            hypervolume=hv,
            hypervolume_raw=hv_raw,
            reference=ref_raw,
            reference_normalised=[float(v) for v in ref_norm],
            reference_given=ref_given,
            normalisation=normalisation,
            scored=len(points),
            unscored=unscored,
        )

    def to_frame(self, top: int | None = None):
        """The leaderboard as a pandas DataFrame (config and last metrics flattened to columns)."""
        import pandas as pd

        from raynas.spaces import flatten

        rows = []
        for t in self.leaderboard(top):
            row = {k: v for k, v in t.to_json().items() if k not in ("metrics", "config")}
            row.update({f"metrics.{k}": v for k, v in t.metrics.items()})
            row.update({f"config.{k}": v for k, v in flatten(t.config).items()})
            row.pop("compressed", None)
            row.update(row.pop("proxies", None) or {})  # a column per proxy, beside params and flops
            if t.test is not None:
                row.pop("test", None)
                row.update({"test_acc_mean": t.test["mean"], "test_acc_sd": t.test["sd"], "test_seeds": t.test["n"]})
            rows.append(row)
        return pd.DataFrame(rows)


def load_results(path: str | os.PathLike) -> ExperimentResults:
    """Reads an experiment folder written by ``raynas run``.

    Raises:
        ConfigError: ``path`` is not a raynas experiment folder.
    """
    exp_dir = Path(path).expanduser().resolve()
    if not exp_dir.is_dir():
        raise ConfigError("", f"no such folder: {exp_dir}")
    if not is_experiment_dir(exp_dir):
        raise ConfigError("", f"{exp_dir} is not a raynas experiment folder (no raynas.json in it)")
    meta = read_meta(exp_dir)
    raw = {}
    if (exp_dir / SPEC_FILE).exists():
        with open(exp_dir / SPEC_FILE, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    metrics, modes = _read_objective(raw.get("objective"), str(exp_dir / SPEC_FILE))
    max_epochs = int(raw.get("max_epochs", 10))

    records = read_journal(exp_dir)
    # Trials rank by the first objective; the others matter only for the Pareto front.
    rungs = asha_rungs(raw.get("scheduler"), max_epochs)
    trials = [_trial(exp_dir, rec, metrics[0], modes[0], rungs) for rec in records.values()]
    name = meta.get("name", exp_dir.name)
    results = ExperimentResults(exp_dir, name, metrics[0], modes[0], max_epochs, meta, trials, metrics, modes)
    if raw.get("retrain") is None and is_experiment_dir(exp_dir / RETRAIN_DIR):
        results.retrain = load_results(exp_dir / RETRAIN_DIR)
        _attach_test_scores(results)
    _attach_compressed(results)
    if (exp_dir / SCREENED_FILE).exists():
        with open(exp_dir / SCREENED_FILE, encoding="utf-8") as f:
            results.screened = json.load(f)
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    if search.get("strategy") in SUPERNET_STRATEGIES and raw.get("retrain") is None:
        results.one_shot = _one_shot_summary(results, search["strategy"])
    return results


def _one_shot_summary(results: ExperimentResults, strategy: str) -> dict:
    """The supernet stage of a one-shot or gradient search (``supernet/``) and what each stage
    cost.

    ``supernet_s`` and ``scoring_s`` are trial seconds (the supernet's epochs; the subnets'
    scoring steps, summed over trials); times ``cpus`` they are CPU-seconds. A supernet trained
    data-parallel (``workers`` Ray Train workers) spent ``supernet_worker_s``: its epochs' seconds
    times the workers. A gradient search adds the cell it derived (``derived``) and its skip
    edges before and after the guard.
    """
    folder = results.dir / SUPERNET_DIR
    out: dict = {"strategy": strategy, "folder": str(folder), "epochs": 0, "supernet_s": 0.0, "supernet_worker_s": 0.0,
                 "workers": 1,
                 "scoring_s": sum(float(r.get("score_time_s") or 0.0) for t in results.trials for r in t.curve),
                 "scored": sum(1 for t in results.trials if t.best is not None)}
    if is_experiment_dir(folder):
        supernet = load_results(folder)
        for trial in supernet.trials:
            out["epochs"] = max(out["epochs"], max((int(r.get("epoch") or 0) for r in trial.curve), default=0))
            out["supernet_s"] += sum(float(r.get("epoch_time_s") or 0.0) for r in trial.curve)
            out["supernet_worker_s"] += sum(float(r.get("epoch_time_s") or 0.0) * int(r.get("workers") or 1)
                                            for r in trial.curve)
            out["workers"] = max([out["workers"], *(int(r.get("workers") or 1) for r in trial.curve)])
            derived = [r for r in trial.curve if r.get("derived_arch")]
            if derived:
                out["derived"] = json.loads(derived[-1]["derived_arch"])
                out["skip_edges"], out["skip_edges_kept"] = derived[-1].get("skip_edges"), derived[-1].get("skip_edges_kept")
        out["status"] = (supernet.meta or {}).get("status")
    return out


#: Where ``raynas compress`` writes its artifacts and before/after tables (``*.json``).
COMPRESS_DIR = "compressed"


def _attach_compressed(results: ExperimentResults) -> None:
    by_id = {t.trial_id: t for t in results.trials}
    for path in sorted((results.dir / COMPRESS_DIR).glob("*.json")):
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a table being written, or not raynas's
        trial = by_id.get(table.get("trial_id")) if isinstance(table, dict) else None
        if trial is not None and isinstance(table.get("before"), dict) and isinstance(table.get("after"), dict):
            trial.compressed.append(table)


def _attach_test_scores(results: ExperimentResults) -> None:
    """Gives each retrained search trial its seeds' test accuracies (mean, sample sd)."""
    import statistics

    scores: dict[str, list[float]] = {}
    for t in results.retrain.trials:
        tag = t.config.get(RETRAIN_KEY) or {}
        acc = t.metrics.get("test_acc")
        if tag.get("trial") and is_finite(acc):
            scores.setdefault(tag["trial"], []).append(float(acc))
    for t in results.trials:
        accs = scores.get(t.trial_id)
        if accs:
            t.test = {"mean": statistics.fmean(accs), "sd": statistics.stdev(accs) if len(accs) > 1 else None,
                      "n": len(accs), "test_acc": accs}


def _read_objective(objective: Any, file: str) -> tuple[list[str], list[str]]:
    """``objective`` of experiment.yaml: ``{metric: name, mode: m}`` or lists of both
    (``{metric: [val_acc, params], mode: [max, min]}``; one mode string applies to all)."""
    if objective is None:
        objective = {}
    if not isinstance(objective, dict):
        raise ConfigError("objective", f"expected a mapping like {{metric: val_acc, mode: max}}, got {describe(objective)}", file)
    metric = objective.get("metric", "val_acc")
    metrics = [metric] if isinstance(metric, str) else metric
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise ConfigError("objective.metric", f"expected a metric name or a list of them, got {describe(metric)}", file)
    mode = objective.get("mode", "max")
    modes = [mode] * len(metrics) if isinstance(mode, str) else mode
    if not isinstance(modes, list):
        raise ConfigError("objective.mode", f"expected 'max', 'min' or a list of them, got {describe(mode)}", file)
    _check_objectives(metrics, modes, "objective.metric", "objective.mode", file)
    return list(metrics), list(modes)


def _check_objectives(metrics: list, modes: list, metric_path: str, mode_path: str, file: str | None) -> None:
    if not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise ConfigError(metric_path, f"expected metric names, got {describe(metrics)}", file)
    twice = sorted({m for m in metrics if metrics.count(m) > 1})
    if twice:
        raise ConfigError(metric_path, f"{twice[0]!r} is listed twice; list each metric once", file)
    if len(modes) != len(metrics):
        raise ConfigError(
            mode_path, f"got {len(modes)} modes for {len(metrics)} metrics; give one mode per metric, or one for all", file
        )
    for i, m in enumerate(modes):
        if m not in _MODES:
            raise ConfigError(f"{mode_path}.{i}" if len(modes) > 1 else mode_path, f"must be 'max' or 'min', got {describe(m)}", file)


def _check_reference(reference: Any, dims: int) -> list[float]:
    values = None if isinstance(reference, (str, bytes)) or not hasattr(reference, "__len__") else list(reference)
    if values is None or len(values) != dims or not all(is_finite(v) for v in values):
        raise ConfigError(
            "reference",
            f"expected {dims} finite numbers (one per objective, in its own units), got {describe(reference)}",
        )
    return [float(v) for v in values]


def is_number(value: Any) -> bool:
    """A real number that is not a bool (what a metric value is)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def asha_rungs(scheduler: Any, max_epochs: int) -> list[int] | None:
    """The epochs at which ASHA can stop a trial (grace_period * reduction_factor**k), or None."""
    if not isinstance(scheduler, dict) or scheduler.get("name") != "asha":
        return None
    grace = int(scheduler.get("grace_period") or 1)
    factor = float(scheduler.get("reduction_factor") or 3)
    max_t = int(scheduler.get("max_t") or max_epochs)
    rungs, t = [], float(grace)
    while t < max_t and factor > 1:
        rungs.append(int(t))
        t *= factor
    return rungs


def _trial(exp_dir: Path, rec: TrialRecord, metric: str, mode: str, rungs: list[int] | None = None) -> TrialResult:
    curve = []
    if rec.dir:
        curve = [{k: v for k, v in row.items() if k not in _TUNE_KEYS} for row in read_results(exp_dir / rec.dir)]
    # A result of a trial that could not train carries only raynas_status and the error.
    curve_scored = [row for row in curve if "epoch" in row]
    best, best_epoch = rec.best, rec.best_epoch
    values = [(row.get(metric), row.get("epoch")) for row in curve_scored]
    values = [(v, e) for v, e in values if is_finite(v)]
    if values:
        best, best_epoch = min(values, key=lambda ve: loss_sign(mode) * ve[0])
    last = dict(curve[-1]) if curve else dict(rec.last)
    epochs = max([int(row["epoch"]) for row in curve_scored] or [rec.epochs])
    stopped_at = None
    if rec.status is Status.STOPPED:
        stopped_at = {"epoch": epochs}
        if rungs and epochs in rungs:
            stopped_at["rung"] = rungs.index(epochs) + 1  # 1: the first rung (grace_period)
    return TrialResult(
        trial_id=rec.trial_id,
        status=rec.status,
        order=rec.order,
        epochs=epochs,
        best=best,
        best_epoch=best_epoch,
        metrics=last,
        config=rec.config,
        error=rec.error,
        dir=rec.dir,
        curve=curve_scored,
        origin=dict(rec.origin or {}),
        stopped_at=stopped_at,
        started=rec.started,
        ended=rec.ended,
    )


def dumps(obj: Any) -> str:
    """JSON text for analysis output (non-finite floats become null, as JSON has none)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=2)
