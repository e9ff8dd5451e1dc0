"""raynas's HyperBand: Ray Tune's synchronous HyperBand, with a bracket that ends every trial.

Real Tune scheduler and Trial objects; the controller records what the scheduler asks of it
(the decisions and stops a real TuneController would carry out).
"""

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler as TuneHyperBand
from ray.tune.schedulers import TrialScheduler

from raynas.search.schedulers import HyperBandScheduler


class Controller:
    def __init__(self):
        self.stopped = []

    def stop_trial(self, trial):
        self.stopped.append(trial.trial_id)


def _bracket_of_two(scheduler, controller):
    """max_t 3, eta 3: HyperBand's first bracket holds 2 trials, both run to epoch 3."""
    trials = [Trial("run_trial", config={}, trial_id=f"t{i}", stub=True) for i in range(2)]
    for trial in trials:
        trial.set_status(Trial.RUNNING)
        scheduler.on_trial_add(controller, trial)
    return trials


def _last_rung_race(scheduler, pause_in_flight=True):
    """Two trials of a one-rung bracket report max_t close together: the first is told to
    pause and, when the second's result ends the bracket, its checkpoint is still being saved
    (status RUNNING) or it has paused. Returns the trials the scheduler stopped itself."""
    scheduler.set_search_properties("score", "max")
    controller = Controller()
    first, second = _bracket_of_two(scheduler, controller)
    assert scheduler.on_trial_result(controller, first, {"epoch": 3, "score": 0.5}) == TrialScheduler.PAUSE
    if pause_in_flight:
        first.temporary_state.saving_to = object()  # Tune is saving it on the way to PAUSED
    else:
        first.set_status(Trial.PAUSED)
    assert scheduler.on_trial_result(controller, second, {"epoch": 3, "score": 0.7}) == TrialScheduler.STOP
    return controller.stopped


def test_a_finished_bracket_stops_a_trial_whose_pause_is_still_in_flight():
    assert _last_rung_race(HyperBandScheduler(time_attr="epoch", max_t=3, reduction_factor=3)) == ["t0"]
    # Tune's own bracket leaves that trial to pause, and nothing resumes or stops it later:
    # the run never ends.
    assert _last_rung_race(TuneHyperBand(time_attr="epoch", max_t=3, reduction_factor=3)) == []


def test_a_finished_bracket_stops_its_paused_trials_and_leaves_the_reporting_one_to_tune():
    scheduler = HyperBandScheduler(time_attr="epoch", max_t=3, reduction_factor=3)
    # The reporting trial (t1) is stopped by the STOP decision, not by the bracket.
    assert _last_rung_race(scheduler, pause_in_flight=False) == ["t0"]
