"""Regularized (aging) evolution, asynchronous (Real et al., 2019, "Regularized Evolution for
Image Classifier Architecture Search").

The population is the ``population_size`` most recently *completed* trials. Each new trial is a
mutation of the fittest of ``sample_size`` members drawn at random; when a trial completes it
joins the population and the *oldest* member leaves, whatever its fitness. Aging rather than
dropping the worst keeps the search moving: a lucky early score cannot rule forever, and a
good architecture survives only by being rediscovered through its descendants.

Example:
    >>> from raynas.spaces import Space
    >>> searcher = EvolutionSearcher(Space({"depth": {"int": [1, 6]}}), population_size=2, sample_size=1)
    >>> searcher.set_search_properties("score", "max", {})
    True
    >>> first = searcher.suggest("t1")
    >>> first["_raynas"]["how"]
    'random'
"""

from __future__ import annotations

import json
import math
from typing import Any

from raynas.experiment import better, loss_sign
from raynas.search.registry import evolution_sizes
from raynas.search.searchers import SpaceSearcher
from raynas.spaces import Space
from raynas.spaces.mutation import sites

__all__ = ["EvolutionSearcher", "build_evolution"]

#: Mutations tried for a child that was not suggested before, then a random sample instead.
DUPLICATE_TRIES = 20


class EvolutionSearcher(SpaceSearcher):
    """Aging evolution over a :class:`~raynas.spaces.Space`, using the DSL's mutation.

    * The first ``population_size`` suggestions are random samples (origin ``random``); so are
      later ones while no trial has completed yet (the first ones are all in flight), or while
      every member failed: there is no score to exploit.
    * Afterwards, each suggestion draws ``sample_size`` distinct members of the population
      uniformly (all of them when the population is smaller), takes the fittest, and mutates
      it at 1..``mutations`` sites (origin ``mutation``, ``parent`` its trial id). Ties go to
      the member drawn first. Sampling without replacement makes ``sample_size`` the number
      of distinct contestants; the paper's version may draw a member twice.
    * A completed trial joins the population with its fitness: the best value of the objective
      over its epochs. A trial the scheduler stopped early (ASHA, HyperBand) keeps the value it
      reached, so short trials compete with the score they had when stopped; with a scheduler,
      fitness is therefore biased towards architectures that learn fast. A failed or rejected
      trial, or one that never reported the metric, joins with the worst possible fitness: it
      takes a place and ages out like any other member, and never becomes a parent while a
      member has a real score (a tournament of failures only is drawn again among the scored
      members), so the search is not drawn back to a region that cannot train.
    * Beyond ``population_size`` members, the oldest leaves.
    * A child suggested before is mutated again (up to 20 tries), then replaced by a random
      sample; random samples also avoid repeats while they can.

    Every piece of state is a plain attribute (population, RNG, seen configs, counters), so
    ``save``/``restore`` continue the same sequence of suggestions after a resume.

    Args:
        space: The search space.
        metric: Objective metric (Tune sets it through ``set_search_properties`` otherwise).
        mode: ``"max"`` or ``"min"``.
        seed: Seed of the searcher's random generator; with the same completion order, the
            same seed gives the same suggestions.
        population_size: Members kept (the most recently completed trials), at least 2;
            default ``num_trials // 10`` within 6..20 (20 without ``num_trials``).
        sample_size: Tournament size, at least 1 (1 is random parent choice, a
            ``population_size`` tournament is greedy); default three quarters of
            ``population_size``, rounded up.
        mutations: Most sites a child changes, at least 1.
        num_trials: The search's budget, from which the sizes not given are derived
            (:func:`raynas.search.registry.evolution_sizes`).

    Raises:
        ValueError: A parameter is out of range (the experiment file is checked earlier,
            in :mod:`raynas.spec`; this guards the Python API).

    Example:
        >>> from raynas.spaces import Space
        >>> searcher = EvolutionSearcher(Space({"x": {"int": [0, 9]}}), metric="score", mode="max",
        ...                              population_size=2, sample_size=2, seed=1)
        >>> for trial in ("a", "b"):
        ...     config = searcher.suggest(trial)
        ...     searcher.on_trial_complete(trial, {"score": config["x"], "epoch": 1})
        >>> child = searcher.suggest("c")
        >>> child["_raynas"]["how"], child["_raynas"]["parent"] in ("a", "b")
        ('mutation', True)
    """

    name = "evolution"

    def __init__(
        self,
        space: Space,
        metric: str | None = None,
        mode: str | None = None,
        seed: int | None = 0,
        *,
        population_size: int | None = None,
        sample_size: int | None = None,
        mutations: int = 1,
        num_trials: int | None = None,
    ):
        population_size, sample_size = evolution_sizes(num_trials, population_size, sample_size)
        for label, value, low in (("population_size", population_size, 2), ("sample_size", sample_size, 1), ("mutations", mutations, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"evolution: {label} must be an integer >= {low}, got {value!r}")
        super().__init__(space, metric, mode, seed)
        self.population_size = population_size
        self.sample_size = sample_size
        self.mutations = mutations
        # Oldest first: [trial_id, config, fitness]; fitness is +-inf for failed trials.
        self.population: list[list] = []
        self.seen: set[str] = set()  # JSON keys of every config suggested
        self.num_completed = 0
        self.num_mutations = 0
        self.num_duplicates = 0  # children that fell back to a random sample

    # -- suggestions
    #: Started from earlier searches' best trials (``search.warm_start``): no random start.
    warmed = False

    def _next(self, trial_id: str) -> dict:
        parent = self._tournament() if self.warmed or self.num_suggested >= self.population_size else None
        # No parent yet (every member failed, or none has completed), or one with nothing to
        # change (a space of one configuration): sample instead.
        if parent is None or not sites(self.space, parent[1]):
            self.last_origin = {"how": "random"}
            return self._remember(self._random())
        parent_id, config = parent
        for _ in range(DUPLICATE_TRIES):
            child = self.space.mutate(config, rng=self.rng, n=self.mutations)
            if _key(child) not in self.seen:
                self.num_mutations += 1
                self.last_origin = {"how": "mutation", "parent": parent_id}
                return self._remember(child)
        # The winner's neighbourhood is used up: explore elsewhere rather than repeat a trial.
        self.num_duplicates += 1
        self.last_origin = {"how": "random"}
        return self._remember(self._random())

    def _tournament(self) -> tuple[str, dict] | None:
        """``(trial_id, config)`` of the fittest of ``sample_size`` random members, or None."""
        scored = [m for m in self.population if math.isfinite(m[2])]
        if not scored:
            return None  # nothing to learn from a population of failures
        contestants = self.rng.sample(self.population, min(self.sample_size, len(self.population)))
        if not any(math.isfinite(m[2]) for m in contestants):
            # Failures never become parents while a member has a real score: draw among those.
            contestants = self.rng.sample(scored, min(self.sample_size, len(scored)))
        winner = contestants[0]
        for member in contestants[1:]:
            if better(member[2], winner[2], self._mode):
                winner = member
        return winner[0], winner[1]

    def _random(self) -> dict:
        config = self.space.sample(rng=self.rng)
        for _ in range(DUPLICATE_TRIES - 1):
            if _key(config) not in self.seen:
                break
            config = self.space.sample(rng=self.rng)  # a small space may run out: repeats are allowed then
        return config

    def _remember(self, config: dict) -> dict:
        self.seen.add(_key(config))
        return config

    # -- starting points
    def add_points(self, points: list[dict]) -> None:
        super().add_points(points)
        self.seen.update(_key(p) for p in points)  # mutations do not repeat them

    def warm_start(self, priors: list) -> str:
        """Starts the population from the earlier trials' best ``population_size``.

        Trials on the same data join as members with their fitness (the best is the youngest,
        so it ages out last), and tournaments start at once. Trials on other data have fitness
        on another scale, which would win or lose every tournament for that alone: their best
        are evaluated first instead, in place of the random start, and join with what they
        score here.
        """
        from raynas.search.searchers import best_priors

        other = [p for p in priors if not p.same_data]
        priors = [p for p in priors if p.same_data]
        line = self._add_members(priors) if priors else ""
        if other:
            best = best_priors(other, self._mode, self.population_size)
            self.add_points([p.config for p in best])
            line = (f"{line}; " if line else "evolution: ") + (
                f"the best {len(best)} of {len(other)} trials on other data are evaluated first, in place of the random start")
        return line

    def _add_members(self, priors: list) -> str:
        self.seen.update(_key(p.config) for p in priors)
        scored = [p for p in priors if p.value is not None and math.isfinite(p.value)]
        scored.sort(key=lambda p: -loss_sign(self._mode) * p.value)  # worst first
        members = scored[-self.population_size:]
        self.population = [[f"warm:{p.source}", p.config, float(p.value)] for p in members] + self.population
        self.population = self.population[-self.population_size:]
        self.warmed = bool(self.population)
        if not members:
            return f"evolution: none of the {len(priors)} earlier trials has a score; the search starts at random"
        return (f"evolution: the population starts from the best {len(members)} of {len(priors)} earlier trials "
                f"(fitness {members[0].value:.4g} to {members[-1].value:.4g})")

    # -- results
    def _completed(self, trial_id: str, config: dict | None, result: dict | None, failed: bool, best: float | None) -> None:
        if config is None:  # not one of ours (or lost before a restore): nothing to breed from
            return
        self.num_completed += 1
        fitness = self._worst() if failed or best is None else best
        self.population.append([trial_id, config, fitness])
        if len(self.population) > self.population_size:
            del self.population[0]  # aging: the oldest leaves, not the worst

    def _worst(self) -> float:
        return loss_sign(self._mode) * math.inf

    # -- for reports
    def population_summary(self) -> list[tuple[str, float]]:
        """``(trial_id, fitness)`` of the current members, oldest first.

        Example:
            >>> EvolutionSearcher(Space({"x": {"int": [0, 9]}})).population_summary()
            []
        """
        return [(trial_id, fitness) for trial_id, _, fitness in self.population]


def _key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def build_evolution(spec: Any) -> EvolutionSearcher:
    """The searcher for a validated experiment, with the objective's metric and mode.

    The objective is given here rather than left to ``set_search_properties``: Ray Tune
    (2.x) only calls that when the Tuner has a ``param_space``, and raynas passes none, so
    the searcher would never learn which metric to read.
    """
    return EvolutionSearcher(
        spec.space,
        metric=spec.objective.metric,
        mode=spec.objective.mode.value,
        seed=spec.search.seed,
        num_trials=spec.num_trials,
        **spec.search.options,
    )
