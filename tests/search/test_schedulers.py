"""raynas's HyperBand: Ray Tune's synchronous HyperBand, with a bracket that ends every trial.

Real Tune scheduler and Trial objects; the controller records what the scheduler asks of it
(the decisions and stops a real TuneController would carry out).
"""

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler as TuneHyperBand
from ray.tune.schedulers import TrialScheduler

from raynas.search.schedulers import HyperBandScheduler


class Search:
    """What the scheduler reads of Tune's search: whether it will create more trials."""

    def __init__(self):
        self.finished = False

    def is_finished(self):
        return self.finished


class Controller:
    def __init__(self):
        self.stopped = []
        self.search_alg = Search()

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


def _trial(name, scheduler, controller):
    trial = Trial("run_trial", config={}, trial_id=name, stub=True)
    trial.set_status(Trial.RUNNING)
    scheduler.on_trial_add(controller, trial)
    return trial


def _bracket_halved_at_epoch_2(scheduler):
    """max_t 4, eta 2: the first bracket holds 3 trials run to epoch 4; the second holds 3
    trials halved at epoch 2 (2 go on). The second bracket's first two trials reach epoch 2
    before its third exists (the next trial is created late, on a busy machine)."""
    scheduler.set_search_properties("score", "max")
    controller = Controller()
    for i in range(3):
        _trial(f"first{i}", scheduler, controller)
    weak, strong = _trial("weak", scheduler, controller), _trial("strong", scheduler, controller)
    assert scheduler.on_trial_result(controller, weak, {"epoch": 2, "score": 0.1}) == TrialScheduler.PAUSE
    weak.set_status(Trial.PAUSED)
    return controller, weak, strong


def test_a_bracket_waits_for_its_last_trial_before_it_is_halved():
    scheduler = HyperBandScheduler(time_attr="epoch", max_t=4, reduction_factor=2)
    controller, weak, strong = _bracket_halved_at_epoch_2(scheduler)
    assert scheduler.on_trial_result(controller, strong, {"epoch": 2, "score": 0.5}) == TrialScheduler.PAUSE
    strong.set_status(Trial.PAUSED)
    assert scheduler.choose_trial_to_run(controller) is None  # both wait, paused at epoch 2
    late = _trial("late", scheduler, controller)
    assert scheduler._trial_info[late][0] is scheduler._trial_info[weak][0]
    # The third trial's result halves the bracket of three: the weakest stops, two go on.
    assert scheduler.on_trial_result(controller, late, {"epoch": 2, "score": 0.3}) == TrialScheduler.CONTINUE
    assert controller.stopped == ["weak"]
    assert scheduler.choose_trial_to_run(controller) is strong


def test_tune_halves_a_bracket_before_its_last_trial_exists():
    """What raynas's bracket prevents: Tune's halves the two it has, keeps both, and the third
    trial goes into another bracket, so the weakest trial is never compared with it."""
    scheduler = TuneHyperBand(time_attr="epoch", max_t=4, reduction_factor=2)
    controller, weak, strong = _bracket_halved_at_epoch_2(scheduler)
    assert scheduler.on_trial_result(controller, strong, {"epoch": 2, "score": 0.5}) == TrialScheduler.CONTINUE
    late = _trial("late", scheduler, controller)
    assert scheduler._trial_info[late][0] is not scheduler._trial_info[weak][0]
    assert controller.stopped == []


def test_a_bracket_waiting_for_trials_is_halved_when_the_search_ends_without_them():
    scheduler = HyperBandScheduler(time_attr="epoch", max_t=4, reduction_factor=2)
    controller, weak, strong = _bracket_halved_at_epoch_2(scheduler)
    assert scheduler.on_trial_result(controller, strong, {"epoch": 2, "score": 0.5}) == TrialScheduler.PAUSE
    strong.temporary_state.saving_to = object()  # its pause is still in flight
    controller.search_alg.finished = True
    assert scheduler.choose_trial_to_run(controller) is None  # not halved under a pause in flight
    strong.temporary_state.saving_to = None
    strong.set_status(Trial.PAUSED)
    # Halved with the two it has (as Tune would have): both go on to epoch 4.
    assert scheduler.choose_trial_to_run(controller) in (weak, strong)
    assert controller.stopped == []
    assert scheduler._trial_info[weak][0]._cumul_r == 4
