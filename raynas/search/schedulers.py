"""Ray Tune schedulers configured from an experiment spec.

Metric and mode are not set here: the runner sets them once, on the Tuner, from
``objective``. Every scheduler counts time in ``epoch`` (reported by the trainable), not Tune's
``training_iteration``, so a trial resumed from a checkpoint keeps its place on the rungs.
"""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from ray.tune.schedulers import HyperBandScheduler as _TuneHyperBand
from ray.tune.schedulers.hyperband import _Bracket

TIME_ATTR = "epoch"


def build_fifo(spec) -> FIFOScheduler:
    return FIFOScheduler()


def build_asha(spec) -> AsyncHyperBandScheduler:
    o = spec.scheduler.options
    return AsyncHyperBandScheduler(
        time_attr=TIME_ATTR,
        max_t=o["max_t"],
        grace_period=o["grace_period"],
        reduction_factor=o["reduction_factor"],
        brackets=o["brackets"],
    )


class _FinishingBracket(_Bracket):
    def cleanup_full(self, tune_controller) -> None:
        """Stops the bracket's other trials once it has reached max_t: paused ones, as Tune
        does, and also one still saving its checkpoint on the way to PAUSED.

        Tune's own version passes over a trial whose pause is in flight (its status is still
        RUNNING); it then pauses, and nothing ever resumes or stops it: the run hangs with
        that trial PAUSED. It happens when two trials of the last rung report close together
        (seen in 4 of 10 runs of 9 short trials on 2 CPUs while trying a change to actor reuse
        that shifted the timing). Tune's halving step already stops such trials the same way.
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
    their milestone before the next was created: the bracket was halved short (3 trials where
    it takes 6, keeping all 3), and the trials still to come went into a new bracket. Which
    trials were compared then depended on the machine's load (seen in CI: a seeded search that
    ended differently from the same search run again). Here the bracket still taking trials
    waits, its trials paused at the milestone, until it is full, or until the search will add
    no more trials (then it is halved with those it has, as Tune would).
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


def build_hyperband(spec) -> HyperBandScheduler:
    o = spec.scheduler.options
    return HyperBandScheduler(
        time_attr=TIME_ATTR,
        max_t=o["max_t"],
        reduction_factor=o["reduction_factor"],
        stop_last_trials=o["stop_last_trials"],
    )


def build_median(spec) -> MedianStoppingRule:
    o = spec.scheduler.options
    return MedianStoppingRule(
        time_attr=TIME_ATTR,
        grace_period=o["grace_period"],
        min_samples_required=o["min_samples_required"],
        hard_stop=o["hard_stop"],
    )
