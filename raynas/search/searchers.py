"""Ray Tune searchers over raynas spaces: random, grid and Optuna (TPE, NSGA-II).

Each one is a :class:`ray.tune.search.Searcher` whose whole state (RNG, grid position,
Optuna study) goes through ``save``/``restore``, so ``raynas resume`` continues the same
search instead of starting a new one.
"""

from __future__ import annotations

import itertools
import math
import warnings
import pickle
import random
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ray.tune.search import Searcher

from raynas.experiment import BUDGETS, atomic_file, FAILED_STATUSES, ORIGIN_KEY, STATUS_KEY, better, loss_sign
from raynas.spaces import Space



@dataclass
class Prior:
    """An earlier trial handed to a searcher before it starts (``search.warm_start``).

    Attributes:
        config: Its configuration, mapped into this search's space.
        value: Best value of the objective it reached; None when it failed, was rejected or
            never reported it.
        epochs: Epochs it trained.
        complete: It trained to its experiment's ``max_epochs`` (False: stopped early).
        values: Each objective's value at its best epoch (several objectives).
        curve: ``epoch -> objective value``, for the epochs it reported.
        source: ``folder/trial_id``, for reports.
        same_data: It was trained on this search's data (the same ``data`` and trainable
            settings), so its values compare with this search's; from other data, only their
            order says something here.
    """

    config: dict
    value: float | None
    epochs: int = 0
    complete: bool = True
    values: dict = field(default_factory=dict)
    curve: dict = field(default_factory=dict)
    source: str = ""
    same_data: bool = True


def best_priors(priors: list[Prior], mode: str, k: int) -> list[Prior]:
    """The ``k`` best earlier trials with a score, best first."""
    scored = [p for p in priors if p.value is not None and math.isfinite(p.value)]
    return sorted(scored, key=lambda p: loss_sign(mode) * p.value)[:k]


class SpaceSearcher(Searcher):
    """Base class: suggests configurations of a :class:`~raynas.spaces.Space`.

    Subclasses implement :meth:`_next` (a config, ``None`` to wait, or ``Searcher.FINISHED``)
    and may override :meth:`_completed`. State lives in plain attributes listed by
    :meth:`get_state` so that ``save``/``restore`` cover everything.

    Args:
        space: The search space.
        metric: Objective metric; ``None`` lets Tune set it through ``set_search_properties``.
        mode: ``"max"`` or ``"min"``.
        seed: Seed of the searcher's random generator.
    """

    def __init__(self, space: Space, metric: str | None = None, mode: str | None = None, seed: int | None = 0):
        super().__init__(metric=metric, mode=mode)
        self.space = space
        self.seed = seed
        self.rng = random.Random(seed)
        self.live: dict[str, dict] = {}  # trial_id -> config, for trials not yet complete
        self.best: dict[str, float] = {}  # trial_id -> best objective value reported so far
        self.last: dict[str, dict] = {}  # trial_id -> last result (for a trial stopped while paused)
        self.num_suggested = 0

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: Dict, **spec) -> bool:
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    # -- Tune hooks
    #: Name shown as the trial's origin (``raynas analyze``).
    name = "space"
    #: Given configurations not yet suggested (``search.points``), and how many were given;
    #: class defaults so that a state saved before points existed restores.
    points: tuple | list = ()
    num_points = 0

    def suggest(self, trial_id: str) -> Optional[Dict]:
        self.last_origin: dict = {"how": "sample"}
        if self.points:
            config = self.points.pop(0)
            # A stage's point may say where it came from (a gradient search's derived cell).
            self.last_origin = config.pop(ORIGIN_KEY, None) or {
                "how": f"given point {self.num_points - len(self.points)} of {self.num_points}"}
        else:
            config = self._next(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        self.live[trial_id] = config
        self.num_suggested += 1
        origin = {"searcher": self.name, "how": "sample", "parent": None, **self.last_origin}
        return {**config, ORIGIN_KEY: origin}

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        self._track(trial_id, result)
        self.last[trial_id] = {k: v for k, v in result.items() if k != "config"}

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        last = self.last.pop(trial_id, None)
        if result is None and not error:
            # Stopped while PAUSED or PENDING (HyperBand halving its bracket): Tune passes no
            # result, but the trial was stopped early, not failed; its last result says where.
            result = last
        self._track(trial_id, result)
        config = self.live.pop(trial_id, None)
        failed = error or result is None or result.get(STATUS_KEY) in FAILED_STATUSES
        self._completed(trial_id, config, result, failed, self.best.pop(trial_id, None))

    def _track(self, trial_id: str, result: Optional[Dict]) -> None:
        value = _finite(result.get(self._metric)) if result and self._metric else None
        if value is None:
            return
        best = self.best.get(trial_id)
        if best is None or better(value, best, self._mode):
            self.best[trial_id] = value

    # -- starting points
    def add_points(self, points: list[dict]) -> None:
        """Configurations to suggest first, in order (``search.points``), before the searcher's own."""
        self.points = [*self.points, *(dict(p) for p in points)]
        self.num_points += len(points)

    def warm_start(self, priors: list[Prior]) -> str:
        """Learns from earlier trials before the first suggestion; returns one line saying how.

        Subclasses that learn override it; this one (random and grid search) cannot use them.
        """
        return f"{self.name}: does not learn from earlier trials; the {len(priors)} given are not used"

    def adopt(self, saved: dict, *, same_data: bool, source: str) -> str | None:
        """Starts from an earlier search's saved state of this searcher (``search.warm_start``
        of a folder that ran the same searcher); returns a line saying so, or None where it does
        not apply. Only the RL controller adopts one (its policy)."""
        return None

    def screened_out(self, trial_id: str, score: float) -> None:
        """A suggestion that a prescreen (``search.prescreen``) scored below another and did not
        train. This base class forgets it (random search has nothing to learn); subclasses
        may learn from it."""
        self.live.pop(trial_id, None)

    # -- for subclasses
    def _next(self, trial_id: str) -> Any:
        raise NotImplementedError

    def _completed(self, trial_id: str, config: dict | None, result: dict | None, failed: bool, best: float | None) -> None:
        """Called once per finished trial (``failed``: errored, NaN loss, or rejected)."""

    # -- persistence
    def get_state(self) -> Dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_Searcher") and k != "space"}

    def set_state(self, state: Dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with atomic_file(checkpoint_path, "wb") as f:
            pickle.dump({"state": self.get_state(), "space": self.space.to_dict()}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            saved = pickle.load(f)
        self.set_state(saved["state"])


class RandomSearcher(SpaceSearcher):
    """Independent samples from the space, reproducible for a seed (also across resume)."""

    name = "random"

    def _next(self, trial_id: str) -> dict:
        return self.space.sample(rng=self.rng)


class GridSearcher(SpaceSearcher):
    """Every configuration of a finite space once, in the space's grid order."""

    name = "grid"

    def __init__(self, space: Space, metric=None, mode=None, seed=0):
        super().__init__(space, metric, mode, seed)
        self.position = 0
        self.size = int(space.size())

    def _next(self, trial_id: str) -> Any:
        if self.position >= self.size:
            return Searcher.FINISHED
        # The grid is regenerated lazily rather than held, so restore needs no iterator state.
        config = next(itertools.islice(self.space.grid(), self.position, None))
        self.position += 1
        self.last_origin = {"how": f"grid point {self.position}"}
        return config


class ConfigsSearcher(SpaceSearcher):
    """Given configurations, each once, in order (``raynas retrain``'s candidates and seeds)."""

    name = "configs"

    def __init__(self, space: Space, configs: list[dict], metric=None, mode=None):
        super().__init__(space, metric, mode, seed=0)
        self.configs = list(configs)
        self.position = 0

    def _next(self, trial_id: str) -> Any:
        if self.position >= len(self.configs):
            return Searcher.FINISHED
        config = self.configs[self.position]
        self.position += 1
        self.last_origin = {"how": f"given {self.position} of {len(self.configs)}"}
        return config


class OptunaSearcher(SpaceSearcher):
    """Optuna through the define-by-run bridge: TPE (multi-objective TPE for several
    objectives) unless ``sampler`` names NSGA-II or random sampling.

    Unlike Ray's ``OptunaSearch``, a trial the scheduler stops early is told to Optuna as
    *pruned* with its intermediate values (TPE then ranks it by how far it got), and a
    failed trial as *failed*, instead of both being reported as complete. A trial rejected
    for its budget is told as infeasible through Optuna's constraints, so TPE and NSGA-II
    learn to avoid such architectures (Optuna's samplers rank trials with a constraint above
    zero below every feasible one).

    With ``multi_fidelity`` (the default under a scheduler that stops trials early), TPE
    models the trials as BOHB does (Falkner et al., 2018): at the largest epoch ``b`` that at
    least ``min_points`` trials reached, each trial that reached ``b`` counts as complete with
    its best value up to ``b`` and the others are left out (still running ones stay in as
    running, for the constant liar). Under ASHA few trials complete and a stopped trial's
    final value says little about its configuration, so ranking trials by how far they got
    (the pruned path) made TPE trail random sampling on LCBench (docs/benchmarks.md,
    "Search quality"). Until some epoch has ``min_points`` trials, configurations are random.

    Args:
        objectives: ``[(metric, mode), ...]`` when there are several; a complete trial is
            told the values it reported at its best epoch on the first metric.
        constraints: Whether budgets are set (enables Optuna's constraint handling).
        multi_fidelity: Model trials at the largest well-observed epoch (one objective, TPE).
        min_points: Trials an epoch needs before TPE models it there (default: the space's
            dimension + 2, at least ``n_startup_trials``; see :func:`min_points_for`).
    """

    name = "optuna"

    def __init__(
        self,
        space: Space,
        metric=None,
        mode=None,
        seed=0,
        *,
        sampler: str = "auto",
        n_startup_trials: int = 8,
        multivariate: bool = True,
        constant_liar: bool = True,
        max_epochs: int | None = None,
        objectives: list[tuple[str, str]] | None = None,
        constraints: bool = False,
        multi_fidelity: bool = False,
        min_points: int | None = None,
    ):
        super().__init__(space, metric, mode, seed)
        self.objectives = list(objectives) if objectives else None
        self.sampler_name = sampler
        self.max_epochs = max_epochs
        self.constraints = constraints
        self.options = dict(n_startup_trials=n_startup_trials, multivariate=multivariate, constant_liar=constant_liar)
        self.study = None
        self.optuna_ids: dict[str, tuple[int, int]] = {}  # trial_id -> (storage trial id, number)
        self.best_rows: dict[str, dict] = {}  # trial_id -> objective values at its best epoch
        # Only one objective has intermediate values to model, and only TPE models them.
        self.multi_fidelity = bool(multi_fidelity) and not self.multi and sampler in ("auto", "tpe")
        self.min_points = min_points
        self.budgets: list[int | None] = []  # the epoch each suggestion was modelled at (None: random)

    @property
    def multi(self) -> bool:
        return bool(self.objectives) and len(self.objectives) > 1

    def _ensure_study(self):
        if self.study is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            kind = self.sampler_name
            if kind == "auto":
                # Also for several objectives: multi-objective TPE dominated more of the true
                # front than NSGA-II at 120 trials (benchmarks/searcher_defaults.py).
                kind = "tpe"
            if kind == "random":
                sampler = optuna.samplers.RandomSampler(seed=self.seed)
            elif kind == "nsga2":
                sampler = optuna.samplers.NSGAIISampler(seed=self.seed)
            else:
                sampler = optuna.samplers.TPESampler(
                    seed=self.seed,
                    n_startup_trials=self.options["n_startup_trials"],
                    multivariate=self.options["multivariate"],
                    group=self.options["multivariate"],  # conditional/repeated keys are groups
                    constant_liar=self.options["constant_liar"],
                )
            modes = [m for _, m in self.objectives] if self.objectives else [self._mode]
            directions = ["maximize" if m == "max" else "minimize" for m in modes]
            self.study = optuna.create_study(directions=directions, sampler=sampler)
        return self.study

    # -- persistence: the study as plain data. Optuna's samplers are not picklable (5.1's GA
    # samplers hold a thread lock), so the trials, the study's system attributes and the
    # samplers' random states are saved, and a fresh study is rebuilt from them on restore.
    def get_state(self) -> Dict:
        state = super().get_state()
        study = state.pop("study")
        if study is not None:
            state["study_data"] = {
                "trials": study.get_trials(deepcopy=True),
                "system_attrs": study._storage.get_study_system_attrs(study._study_id),
                "random_states": _random_states(study.sampler),
            }
        return state

    def set_state(self, state: Dict) -> None:
        state = dict(state)
        saved = state.pop("study_data", None)
        super().set_state(state)  # a state saved by an older raynas holds the study itself
        if saved is None:
            return
        self.study = None
        study = self._ensure_study()
        for key, value in saved["system_attrs"].items():
            study._storage.set_study_system_attr(study._study_id, key, value)
        old_ids = {t.number: t._trial_id for t in saved["trials"]}
        study.add_trials(saved["trials"])
        # Storage ids follow the order trials were added; map raynas's trials onto them.
        new_ids = {t.number: t._trial_id for t in study.get_trials(deepcopy=False)}
        if new_ids != old_ids:
            by_old = {old_ids[n]: new_ids[n] for n in old_ids}
            self.optuna_ids = {k: (by_old[sid], n) for k, (sid, n) in self.optuna_ids.items()}
        _set_random_states(study.sampler, saved["random_states"])

    def _trial(self, trial_id: str):
        import optuna

        storage_id, _ = self.optuna_ids[trial_id]
        return optuna.trial.Trial(self._ensure_study(), storage_id)

    def _next(self, trial_id: str) -> dict:
        study = self._ensure_study()
        # Given points wait in the study's queue, which only its own ask hands out.
        if self.multi_fidelity and not study.get_trials(deepcopy=False, states=(optuna_state("WAITING"),)):
            return self._next_at_budget(trial_id, study)
        trial = study.ask()
        self.optuna_ids[trial_id] = (trial._trial_id, trial.number)
        sampler = type(study.sampler).__name__.replace("Sampler", "").lower()
        # TPE samples at random until it has n_startup_trials results (complete or pruned,
        # earlier searches' trials included) to model.
        startup = sampler == "tpe" and trial.number < self.options["n_startup_trials"] + self.num_warm - self.num_warm_scored
        self.last_origin = {"how": "startup sample" if startup else sampler}
        if "fixed_params" in study._storage.get_trial_system_attrs(trial._trial_id):
            self.num_points_asked += 1
            self.last_origin = {"how": f"given point {self.num_points_asked} of {self.num_points}"}
        return self.space.suggest(trial)

    def _next_at_budget(self, trial_id: str, study) -> dict:
        """A configuration from TPE fitted to the trials' values at one epoch (BOHB's model).

        The view is a throwaway in-memory study rebuilt from the main one, with a sampler
        seeded from this searcher's generator, so a restored searcher suggests the same.
        """
        import optuna
        from optuna.trial import TrialState, create_trial

        trials = study.get_trials(deepcopy=False)
        min_points = self.min_points or min_points_for(trials, self.options["n_startup_trials"])
        budget = fidelity_budget([max(t.intermediate_values, default=0) for t in trials
                                  if t.state != TrialState.FAIL], min_points)
        sampler = optuna.samplers.TPESampler(
            seed=self.rng.randrange(2**32),
            n_startup_trials=min(self.options["n_startup_trials"], min_points),
            multivariate=self.options["multivariate"],
            group=self.options["multivariate"],
            constant_liar=self.options["constant_liar"],
        )
        view = optuna.create_study(direction=study.direction, sampler=sampler)
        view.add_trials(budget_view(trials, budget, self._mode, running=self.options["constant_liar"]))
        ask = view.ask()
        config = self.space.suggest(ask)
        template = create_trial(state=TrialState.RUNNING, params=ask.params, distributions=ask.distributions)
        storage_id = study._storage.create_new_trial(study._study_id, template_trial=template)
        self.optuna_ids[trial_id] = (storage_id, study._storage.get_trial_number_from_id(storage_id))
        self.budgets.append(budget)
        self.last_origin = {"how": "startup sample" if budget is None else f"tpe at epoch {budget}"}
        return config

    # Given points go through Optuna's queue, so that the study holds them as its own trials.
    num_points_asked = 0
    num_warm = 0  # earlier searches' trials added to the study, and how many of them had a score
    num_warm_scored = 0

    def add_points(self, points: list[dict]) -> None:
        study = self._ensure_study()
        for point in points:
            study.enqueue_trial(self.space.params(point), skip_if_exists=False)
        self.num_points += len(points)

    def screened_out(self, trial_id: str, score: float) -> None:
        """Told as pruned before its first epoch: TPE ranks it below every trial that trained."""
        import optuna

        super().screened_out(trial_id, score)
        if trial_id in self.optuna_ids:
            _, number = self.optuna_ids.pop(trial_id)
            self._ensure_study().tell(number, state=optuna.trial.TrialState.PRUNED)

    def warm_start(self, priors: list[Prior]) -> str:
        """Trials on the same data join the study as they were: complete ones with their values,
        stopped ones as pruned with their curves, failed ones as failed; TPE models them at once.

        Trials on other data score on another scale (a data set's accuracies are not another's),
        and TPE splits good from bad by value, so mixed in they would outrank or bury every new
        trial (benchmarks/warm_start.py). Their best ``n_startup_trials`` are evaluated first
        instead, in place of the random start-up trials, and TPE models what they score here.
        """
        other = [p for p in priors if not p.same_data]
        line = self._add_trials([p for p in priors if p.same_data])
        if other:
            best = best_priors(other, self._mode, max(1, self.options["n_startup_trials"]))
            self.add_points([p.config for p in best])
            line = (f"{line + '; ' if line else ''}the best {len(best)} of {len(other)} trials on other data "
                    "are evaluated first, in place of random start-up trials")
        return f"optuna: {line}"

    def _add_trials(self, priors: list[Prior]) -> str:
        import optuna

        if not priors:
            return ""
        study = self._ensure_study()
        State = optuna.trial.TrialState
        counts = {"complete": 0, "pruned": 0, "failed": 0}
        for prior in priors:
            replay = optuna.trial.FixedTrial(self.space.params(prior.config))
            self.space.suggest(replay)
            attrs = {}
            if self.constraints:
                # Its budgets were not measured against this search's limits: counted feasible.
                attrs["constraints"] = [0.0] * len(BUDGETS)
            curve = {int(e): float(v) for e, v in prior.curve.items() if _finite(v) is not None}
            values = None
            if self.multi:
                values = [_finite(prior.values.get(m)) for m, _ in self.objectives]
                values = None if any(v is None for v in values) else values
            elif _finite(prior.value) is not None:
                values = [float(prior.value)]
            if values is None:
                state, kind = State.FAIL, "failed"
            elif prior.complete or self.multi:
                state, kind = State.COMPLETE, "complete"
            else:
                state, kind = State.PRUNED, "pruned"
            study.add_trial(optuna.trial.create_trial(
                params=replay.params, distributions=replay.distributions, state=state,
                values=values if state is State.COMPLETE else None,
                intermediate_values=curve if not self.multi else None, system_attrs=attrs,
            ))
            counts[kind] += 1
        self.num_warm += len(priors)
        self.num_warm_scored += counts["complete"] + counts["pruned"]
        parts = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        return f"{len(priors)} earlier trials added to the study ({parts or 'none'})"

    def _track(self, trial_id: str, result: Optional[Dict]) -> None:
        before = self.best.get(trial_id)
        super()._track(trial_id, result)
        if self.objectives and result and self.best.get(trial_id) != before:
            self.best_rows[trial_id] = {m: _finite(result.get(m)) for m, _ in self.objectives}

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        super().on_trial_result(trial_id, result)
        if self.multi:
            return  # Optuna keeps no intermediate values for several objectives
        value = _finite(result.get(self._metric))
        step = result.get("epoch", result.get("training_iteration"))
        if value is not None and step is not None and trial_id in self.optuna_ids:
            trial = self._trial(trial_id)
            if int(step) not in trial.storage.get_trial(trial._trial_id).intermediate_values:
                trial.report(value, int(step))

    def _completed(self, trial_id, config, result, failed, best) -> None:
        import optuna

        if trial_id not in self.optuna_ids:
            return
        if result is not None and not failed:
            self.on_trial_result(trial_id, result)  # the final result is not passed to on_trial_result
        row = self.best_rows.pop(trial_id, None)
        trial = self._trial(trial_id)
        storage_id, number = self.optuna_ids.pop(trial_id)
        study = self._ensure_study()
        State = optuna.trial.TrialState
        modes = [m for _, m in self.objectives] if self.objectives else [self._mode]
        if self.constraints:
            # Every trial gets its constraint values (0 when within budget), so that the
            # samplers see a constrained study and rank the infeasible ones last.
            violation = (result or {}).get("raynas_violation") or [0.0] * len(BUDGETS)
            for name, value in zip(BUDGETS, violation):
                trial.set_constraint(name, float(value))
        if failed and result is not None and result.get(STATUS_KEY) == "rejected" and self.constraints:
            # Infeasible: the sampler ranks it by its violation, below every feasible trial;
            # its values only need to be finite.
            study.tell(number, [loss_sign(m) * 1e30 for m in modes])
            return
        if failed or best is None:
            study.tell(number, state=State.FAIL)
            return
        epochs = result.get("epoch") if result else None
        if self.max_epochs is not None and epochs is not None and int(epochs) < self.max_epochs:
            study.tell(number, state=State.PRUNED)
            return
        if self.multi:
            values = [row.get(m) if row else None for m, _ in self.objectives]
            if any(v is None for v in values):
                study.tell(number, state=State.FAIL)
                return
            study.tell(number, values)
        else:
            study.tell(number, best)


def optuna_state(name: str):
    """``optuna.trial.TrialState[name]``, importing Optuna only when a study exists."""
    from optuna.trial import TrialState

    return TrialState[name]


def fidelity_budget(reached: list[int], min_points: int) -> int | None:
    """The largest epoch that at least ``min_points`` trials reached (``None`` if none did).

    ``reached`` holds the last epoch each trial reported (0: none yet). BOHB fits its model at
    the largest budget with enough observations: the most faithful data it has enough of.

    Example:
        >>> fidelity_budget([3, 3, 3, 9, 9, 27, 14, 0], 3)
        9
        >>> fidelity_budget([3, 3, 0], 3) is None
        True
    """
    ranked = sorted((e for e in reached if e > 0), reverse=True)
    return ranked[min_points - 1] if len(ranked) >= min_points else None


def min_points_for(trials: list, n_startup_trials: int) -> int:
    """Trials an epoch needs before TPE models it: the dimension + 2, at least ``n_startup_trials``.

    BOHB asks for the dimension + 1 points at a budget before fitting its KDEs (a Parzen
    estimator of d parameters is degenerate on fewer); one more keeps a point outside TPE's
    "good" tenth. The dimension is the most parameters any trial has (spaces with conditions
    and repeats vary); LCBench's 7 give 9.

    Example:
        >>> from types import SimpleNamespace as T
        >>> min_points_for([T(distributions=dict.fromkeys("abcdefg"))], 8)
        9
        >>> min_points_for([], 8)
        8
    """
    dimension = max((len(t.distributions) for t in trials), default=0)
    return max(n_startup_trials, dimension + 2 if dimension else 0, 1)


def value_at(curve: dict[int, float], budget: int, mode: str) -> float | None:
    """A trial's best value up to epoch ``budget``; ``None`` if it did not get that far.

    Example:
        >>> value_at({1: 0.5, 2: 0.7, 3: 0.6, 4: 0.9}, 3, "max"), value_at({1: 0.5}, 3, "max")
        (0.7, None)
    """
    if not curve or max(curve) < budget:
        return None
    values = [v for e, v in curve.items() if e <= budget and math.isfinite(v)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def budget_view(trials: list, budget: int | None, mode: str, running: bool = True) -> list:
    """The trials as TPE should see them when it models epoch ``budget``.

    A trial that reached ``budget`` is complete with its value there; a live trial that did
    not is running (the constant liar spreads new suggestions away from it) unless
    ``running`` is false; an infeasible trial (over a budget, never trained) keeps its
    values and constraints, so TPE still avoids its region; the rest (stopped before
    ``budget``, failed) are left out, as BOHB leaves out observations at smaller budgets.
    """
    from optuna.trial import TrialState, create_trial

    view = []
    for t in trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            continue
        value = value_at(t.intermediate_values, budget, mode) if budget is not None else None
        common = dict(params=t.params, distributions=t.distributions, system_attrs=dict(t.system_attrs))
        if value is not None:
            view.append(create_trial(state=TrialState.COMPLETE, value=value, **common))
        elif t.state == TrialState.RUNNING:
            if running:
                view.append(create_trial(state=TrialState.RUNNING, **common))
        elif t.state == TrialState.COMPLETE and any(c > 0 for c in t.constraints.values()):
            view.append(create_trial(state=TrialState.COMPLETE, values=t.values, **common))
    return view


def _random_objects(obj: Any, path: str = "", seen: set | None = None):
    """``(path, generator)`` for each numpy random generator inside an Optuna sampler."""
    import numpy as np

    seen = set() if seen is None else seen
    for name, value in vars(obj).items():
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, (np.random.RandomState, np.random.Generator)):
            yield path + name, value
        elif type(value).__module__.startswith("optuna") and hasattr(value, "__dict__"):
            yield from _random_objects(value, f"{path}{name}.", seen)


def _random_states(sampler) -> dict:
    import numpy as np

    return {
        path: rng.get_state() if isinstance(rng, np.random.RandomState) else rng.bit_generator.state
        for path, rng in _random_objects(sampler)
    }


def _set_random_states(sampler, states: dict) -> None:
    import numpy as np

    for path, rng in _random_objects(sampler):
        if path in states:
            if isinstance(rng, np.random.RandomState):
                rng.set_state(states[path])
            else:
                rng.bit_generator.state = states[path]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# -- builders used by the registry -------------------------------------------------------------


def _objective(spec) -> dict:
    # The searchers optimise the objective (its first metric), which may differ from the
    # metric Tune and the scheduler use when there are several objectives.
    return {"metric": spec.objective.metric, "mode": spec.objective.mode.value}


def build_random(spec) -> RandomSearcher:
    return RandomSearcher(spec.space, seed=spec.search.seed, **_objective(spec))


def build_grid(spec) -> GridSearcher:
    return GridSearcher(spec.space, seed=spec.search.seed, **_objective(spec))


#: Schedulers that stop trials early, under which ``multi_fidelity: auto`` models trials per epoch.
EARLY_STOPPING = ("asha", "hyperband", "median")


def build_optuna(spec) -> OptunaSearcher:
    objectives = [(m, mode.value) for m, mode in zip(spec.objective.metrics, spec.objective.modes)]
    options = dict(spec.search.options)
    fidelity = options.pop("multi_fidelity", "auto")
    multi_fidelity = fidelity == "always" or (fidelity == "auto" and spec.scheduler.name in EARLY_STOPPING)
    return OptunaSearcher(
        spec.space,
        seed=spec.search.seed,
        max_epochs=spec.max_epochs,
        objectives=objectives if spec.objective.multi else None,
        constraints=bool(spec.constraints),
        multi_fidelity=multi_fidelity,
        **_objective(spec),
        **options,
    )
