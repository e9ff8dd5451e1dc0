"""Ray's PBT and PB2, fed by raynas's random or grid searcher (imports Ray Tune; see raynas.search.pbt)."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.schedulers.pb2 import PB2


class _WithoutSearcher:
    """The controller as PBT's ``on_trial_add`` sees it: without a search algorithm."""

    search_alg = None

    def __init__(self, controller: Any):
        self._controller = controller

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)


class _RaynasPopulation:
    """What raynas changes in Ray's PBT and PB2 (a mixin placed before them).

    Ray refuses every search algorithm beside PBT, because PBT changes trial configs under a
    searcher that would learn from them. raynas allows only searchers that learn nothing
    (random and grid: checked in the config), which sample the initial population from the
    raynas space; the refusal is lifted for them. Each exploit also asks for an experiment
    snapshot (see :mod:`raynas.durable`).
    """

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(_WithoutSearcher(tune_controller), trial)

    def _exploit(self, tune_controller, trial, trial_to_clone):
        super()._exploit(tune_controller, trial, trial_to_clone)
        # The trial now has another trial's config (architecture included): the experiment
        # state must say so before the trial writes checkpoints of that architecture, or a
        # resume would rebuild its old architecture and load weights that do not fit.
        from raynas.durable import request_snapshot

        request_snapshot(tune_controller)


class RaynasPBT(_RaynasPopulation, PopulationBasedTraining):
    """Ray's PBT, fed by raynas's random or grid searcher."""


class RaynasPB2(_RaynasPopulation, PB2):
    """Ray's PB2 (scikit-learn's Gaussian process), fed by raynas's random or grid searcher."""
