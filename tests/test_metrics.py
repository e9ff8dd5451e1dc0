"""raynas.metrics: the counts of trials by status that the driver exports (no Ray needed: the
gauges are Ray's; what raynas computes is which trial counts where)."""

from types import SimpleNamespace

from raynas.experiment import Status, TrialRecord
from raynas.metrics import TrialMetrics


def journal(*records: TrialRecord):
    return SimpleNamespace(records={r.trial_id: r for r in records}, metric="val_acc", mode="max", exp_dir="/x/exp")


def tune_trial(trial_id: str, status: str):
    return SimpleNamespace(trial_id=trial_id, status=status)


def test_each_trial_counts_once_under_its_latest_status_across_a_resume():
    # Read back on resume: one finished, one that was running.
    done = TrialRecord("a", order=1, status=Status.COMPLETED, best=0.9)
    running = TrialRecord("b", order=2, status=Status.RUNNING, best=0.5)
    j = journal(done, running)
    m = TrialMetrics(j, "mlp")
    m.setup()
    trials = [tune_trial("b", "RUNNING"), tune_trial("c", "PENDING"), tune_trial("d", "PENDING")]
    assert m.counts(trials) == {"completed": 1, "running": 1, "pending": 2}

    # c starts, b is stopped early, then c pauses and resumes, d errors.
    j.records["c"] = TrialRecord("c", order=3, status=Status.RUNNING)
    m.on_trial_start(0, trials, trials[1])
    running.status = Status.STOPPED
    m.on_trial_complete(0, trials, trials[0])
    m.on_trial_complete(0, trials, trials[0])  # a hook called twice counts once
    j.records["c"].status = Status.PAUSED
    m.on_trial_save(0, trials, trials[1])
    assert m.counts([tune_trial("c", "PAUSED")]) == {"completed": 1, "stopped": 1, "paused": 1, "pending": 1}
    assert m.counts([tune_trial("c", "RUNNING")])["running"] == 1
    j.records["d"] = TrialRecord("d", order=4, status=Status.ERROR)
    m.on_trial_error(0, trials, trials[2])
    # The end of the run: every trial seen again; finished ones are not counted twice.
    j.records["c"].status = Status.COMPLETED
    m.on_experiment_end([tune_trial(t, "TERMINATED") for t in "abcd"])
    assert m.counts([]) == {"completed": 2, "stopped": 1, "error": 1}


def test_the_callback_pickles_without_ray_objects_and_starts_over_on_load():
    import pickle

    m = TrialMetrics(journal(TrialRecord("a", order=1, status=Status.COMPLETED)), "mlp")
    m.setup()
    copy = pickle.loads(pickle.dumps(m))
    assert copy.family == "mlp" and copy.counts([]) == {}
    copy.setup()
    assert copy.counts([]) == {"completed": 1}
