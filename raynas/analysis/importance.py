"""How much each searched key (a hyperparameter or an architecture choice) explains the
objective, by Optuna's importance evaluators over an experiment's scored trials.

The trials go into an in-memory Optuna study (``optuna.trial.create_trial``), one parameter
per flattened config key (``arch.width``, ``train.lr``) that varies between them; its
distribution comes from the experiment's space where the key is a plain range (bounds and
log scale) and from the values the trials took otherwise. The target is each trial's best
value of the first objective, the value trials are ranked by.

Example:
    >>> from raynas.analysis import load_results
    >>> from raynas.analysis.importance import importance
    >>> result = importance(load_results("raynas_results/quickstart"))  # doctest: +SKIP
    >>> result.importances  # doctest: +SKIP
    {'train.lr': 0.61, 'arch.width': 0.22, 'arch.depth': 0.12, 'arch.activation': 0.05}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from raynas.analysis.results import ExperimentResults
from raynas.errors import ConfigError, describe
from raynas.experiment import Status

#: The evaluators ``importance`` accepts, by name.
# Not Optuna's MeanDecreaseImpurityImportanceEvaluator: on categorical keys (Optuna 5.1) it
# credited a key that does not change the objective (tests/analysis/test_importance.py's data).
EVALUATORS = ("fanova", "ped-anova")

#: Fewer scored trials than this give no importance (an evaluator needs a spread to fit).
MIN_TRIALS = 3

#: At most this many scored trials go into the study (a seeded random sample beyond it):
#: fANOVA's time grows faster than the trials (docs/benchmarks.md, "The report").
MAX_TRIALS = 1000


@dataclass
class Importance:
    """The importances of an experiment's searched keys.

    Attributes:
        metric: The objective the importances explain (the first objective).
        mode: ``"max"`` or ``"min"``.
        evaluator: The Optuna evaluator's name (see :data:`EVALUATORS`).
        trials: How many scored trials went into the study (at most ``max_trials``).
        importances: ``{key: importance}``, largest first, summing to 1 (empty when it
            could not be computed: ``notes`` says why).
        left_out: ``{key: why}`` for searched keys not rated: the same value in every
            trial, or a key only some trials have (a conditional or a repeated block's).
        notes: What limits the result, in words (too few trials, a constant objective).
    """

    metric: str
    mode: str
    evaluator: str
    trials: int
    importances: dict[str, float] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            "mode": self.mode,
            "evaluator": self.evaluator,
            "trials": self.trials,
            "importances": dict(self.importances),
            "left_out": dict(self.left_out),
            "notes": list(self.notes),
        }


def importance(results: ExperimentResults, evaluator: str = "fanova", seed: int = 0,
               max_trials: int | None = MAX_TRIALS) -> Importance:
    """Rates each searched key by how much of the objective's variation it explains.

    Args:
        results: An experiment folder, read (:func:`raynas.analysis.load_results`).
        evaluator: ``"fanova"`` (Optuna's FanovaImportanceEvaluator, the default) or
            ``"ped-anova"`` (PedAnovaImportanceEvaluator: what sets the best trials apart).
        seed: fANOVA's seed and the sample's, for repeatable output.
        max_trials: Rate on a random sample of this many scored trials when there are more
            (None: all of them); the notes say so.

    Returns:
        The importances; with too few scored trials, no varying key or a constant
        objective, empty importances and a note that says so (never an exception).

    Raises:
        ConfigError: ``evaluator`` is not one of :data:`EVALUATORS`.
    """
    if evaluator not in EVALUATORS:
        raise ConfigError("evaluator", f"must be one of {', '.join(EVALUATORS)}, got {describe(evaluator)}")
    from raynas.spaces import flatten

    scored = [t for t in results.trials
              if t.best is not None and math.isfinite(t.best) and t.status not in (Status.LOST, Status.FAILED, Status.ERROR)]
    out = Importance(results.metric, results.mode, evaluator, len(scored))
    if len(results.metrics) > 1:
        out.notes.append(f"importance of the first objective ({results.metric}) only")
    if max_trials is not None and len(scored) > max_trials:
        import random

        out.notes.append(f"on a random sample of {max_trials:,} of the {len(scored):,} scored trials (seed {seed})")
        scored = random.Random(seed).sample(scored, max_trials)
        out.trials = max_trials
    flat = {t.trial_id: flatten(t.config) for t in scored}
    keys: dict[str, None] = {}  # every key any trial has, in first-seen order
    for values in flat.values():
        keys.update(dict.fromkeys(values))
    space = _space_nodes(results)
    params: dict[str, Any] = {}
    for key in keys:
        seen = [values[key] for values in flat.values() if key in values]
        if len(seen) < len(flat):
            out.left_out[key] = f"set in {len(seen)} of {len(flat)} scored trials (a conditional or repeated key)"
        elif len({_hashable(v) for v in seen}) < 2:
            out.left_out[key] = f"the same value in every scored trial ({_short(seen[0])})"
        else:
            params[key] = _distribution(seen, space.get(key))
    if len(scored) < MIN_TRIALS:
        out.notes.append(f"{len(scored)} scored trial(s): importance needs at least {MIN_TRIALS}")
        return out
    if not params:
        out.notes.append("no searched key took two or more values in every scored trial: nothing to rate")
        return out
    if len({t.best for t in scored}) < 2:
        out.notes.append(f"every scored trial has the same best {results.metric} ({scored[0].best}): no variation to explain")
        return out

    import warnings

    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(direction="maximize" if results.mode == "max" else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t in scored:
        values = flat[t.trial_id]
        study.add_trial(optuna.trial.create_trial(
            params={k: _param_value(values[k], dist) for k, dist in params.items()},
            distributions=params,
            value=float(t.best),
        ))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            found = optuna.importance.get_param_importances(study, evaluator=_evaluator(evaluator, seed), params=list(params))
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        out.notes.append(f"the {evaluator} evaluator could not rate these trials: {type(err).__name__}: {err}")
        return out
    out.importances = {k: float(v) for k, v in sorted(found.items(), key=lambda kv: -kv[1])}
    if len(scored) < 10:
        out.notes.append(f"only {len(scored)} scored trials: a rough estimate")
    return out


def _evaluator(name: str, seed: int):
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    if name == "fanova":
        return FanovaImportanceEvaluator(seed=seed)
    return PedAnovaImportanceEvaluator()


def _space_nodes(results: ExperimentResults) -> dict[str, Any]:
    """``{flattened key: node}`` for the plain ranges of the experiment's space (``{}`` when
    experiment.yaml has no readable space: the observed values are used instead)."""
    import yaml

    from raynas.experiment import SPEC_FILE
    from raynas.spaces.domains import Dict, Float, Int, parse_space

    try:
        with open(results.dir / SPEC_FILE, encoding="utf-8") as f:
            raw = (yaml.safe_load(f) or {}).get("space")
        root = parse_space(raw) if isinstance(raw, dict) else None
    except (OSError, ValueError, ConfigError, yaml.YAMLError):
        return {}
    found: dict[str, Any] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Dict):
            for k, child in node.items.items():
                walk(child, f"{key}.{k}" if key else k)
        elif isinstance(node, (Int, Float)):
            found[key] = node

    walk(root, "")
    return found


def _distribution(seen: list, node: Any):
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from raynas.spaces.domains import Int

    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in seen)
    if numbers and node is not None:
        low, high = min(min(seen), node.low), max(max(seen), node.high)
        log = bool(node.log) and low > 0
        if all(isinstance(v, int) for v in seen) and isinstance(node, Int):
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    if numbers and len(set(seen)) > 8:
        # Many numeric values with no range in the space: a range, not categories.
        return FloatDistribution(float(min(seen)), float(max(seen)))
    return CategoricalDistribution(sorted({_hashable(v) for v in seen}, key=repr))


def _param_value(value: Any, dist) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return _hashable(value)
    return float(value) if isinstance(dist, FloatDistribution) else int(value)


def _hashable(value: Any) -> Any:
    """A value Optuna can store as a category: None, bool, int, float or str."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

