"""Subclasses of Tune's schedulers that override their private hooks: synchronous HyperBand
(``_process_bracket``, ``_create_bracket``, ``_Bracket``) and PBT/PB2 (``_exploit``).

They live here, not in :mod:`raynas.search.schedulers`, because each reads or overrides a
dozen of Tune's private names; the search modules re-export them under their old names (saved
schedulers refer to them there). Ray Tune is imported with this module.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler as _TuneHyperBand
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.hyperband import _Bracket
from ray.tune.schedulers.pb2 import PB2

from raynas._tune import feature
from raynas._tune.snapshots import Snapshots


class _FinishingBracket(_Bracket):
    def cleanup_full(self, tune_controller) -> None:
        """Stops the bracket's other trials once it has reached max_t: paused ones, as Tune
        does, and also one still saving its checkpoint on the way to PAUSED.

        Tune's own version passes over a trial whose pause is in flight (its status is still
        RUNNING); it then pauses, and nothing ever resumes or stops it: the run hangs with
        that trial PAUSED (two trials of the last rung reporting close together). Tune's
        halving step already stops such trials the same way.
        """
        for trial in self.current_trials():
            if trial.status == Trial.PAUSED or (trial.status == Trial.RUNNING and trial.is_saving):
                tune_controller.stop_trial(trial)


class HyperBandScheduler(_TuneHyperBand):
    """Ray Tune's synchronous HyperBand, with a bracket that stops every trial when it ends and
    that halves only once all its trials exist.

    Tune's HyperBand halves a bracket as soon as every trial *added to it so far* has reached
    the milestone. raynas's searchers hand Tune one trial at a time (the next is created when
    none is waiting for a slot), so on a busy machine the bracket's first trials could reach
    their milestone before the next was created: the bracket was halved short, and which
    trials were compared depended on the machine's load. Here the bracket still taking trials
    waits, its trials paused at the milestone, until it is full, or until the search will add
    no more trials (then it is halved with those it has, as Tune would).
    See tests/search/test_schedulers.py.
    """

    # The bracket whose halving waits for its trials (a class default: schedulers saved by
    # an earlier raynas lack the attribute).
    _waiting: _Bracket | None = None

    def _process_bracket(self, tune_controller, bracket) -> str:
        if self._waits_for_trials(tune_controller, bracket) and bracket.cur_iter_done():
            self._waiting = bracket
            return TrialScheduler.PAUSE
        if bracket is self._waiting:
            self._waiting = None
        return super()._process_bracket(tune_controller, bracket)

    def _waits_for_trials(self, tune_controller, bracket) -> bool:
        """Whether ``bracket`` would be halved short: it still takes trials, and more will come."""
        return (
            bracket is self._state["bracket"]
            and bracket._halves > 0
            and not bracket.filled()
            and not _search_finished(tune_controller)
        )

    def choose_trial_to_run(self, tune_controller):
        bracket = self._waiting
        if bracket is not None and not self._waits_for_trials(tune_controller, bracket):
            # The search ended without the trials it waited for, and none of its trials will
            # report again: halve it now, once no pause is still in flight.
            if all(trial.status == Trial.PAUSED for trial in bracket.current_trials()):
                self._waiting = None
                super()._process_bracket(tune_controller, bracket)
        return super().choose_trial_to_run(tune_controller)

    def _create_bracket(self, s):
        return _FinishingBracket(
            time_attr=self._time_attr,
            max_trials=self._get_n0(s),
            init_t_attr=self._get_r0(s),
            max_t_attr=self._max_t_attr,
            eta=self._eta,
            s=s,
            stop_last_trials=self._stop_last_trials,
        )


def _search_finished(tune_controller) -> bool:
    """Whether Tune's search will create no more trials (true where it cannot tell: Tune's rule)."""
    search_alg = getattr(tune_controller, "search_alg", None)
    return search_alg is None or bool(search_alg.is_finished())


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
    raynas space; the refusal is lifted for them. Each exploit also forces an experiment
    snapshot (see :mod:`raynas.durable`).
    """

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(_WithoutSearcher(tune_controller), trial)

    def _exploit(self, tune_controller, trial, trial_to_clone):
        super()._exploit(tune_controller, trial, trial_to_clone)
        # The trial now has another trial's config (architecture included): the experiment
        # state must say so before the trial writes checkpoints of that architecture, or a
        # resume would rebuild its old architecture and load weights that do not fit.
        snapshots = Snapshots.of(tune_controller)
        if snapshots is not None:
            snapshots.force()


class RaynasPBT(_RaynasPopulation, PopulationBasedTraining):
    """Ray's PBT, fed by raynas's random or grid searcher."""


class RaynasPB2(_RaynasPopulation, PB2):
    """Ray's PB2 (scikit-learn's Gaussian process), fed by raynas's random or grid searcher."""


def population_checkpoints(scheduler: Any) -> list[str]:
    """Paths of the checkpoints PBT or PB2 keeps from each trial's last perturbation, which
    another trial can exploit later, after its owner has trained on (empty for others)."""
    if not isinstance(scheduler, PopulationBasedTraining) or not feature("population_checkpoints_kept").applies():
        return []
    paths = []
    for state in (scheduler._trial_state or {}).values():
        checkpoint = getattr(state, "last_checkpoint", None)
        if checkpoint is not None and getattr(checkpoint, "path", None):
            paths.append(checkpoint.path)
    return paths
