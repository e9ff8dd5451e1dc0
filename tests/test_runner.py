"""runner: the compat check runs before the Tuner is built, and the journal gets the scheduler
the Tuner runs with (no Ray started)."""

import pytest
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from raynas import _tune, runner
from raynas.callbacks import Journal
from raynas.spec import spec_from_dict
from raynas.durable import DurableScheduler


def _tuner(tmp_path, callbacks, scheduler):
    return tune.Tuner(
        lambda config: None,
        tune_config=tune.TuneConfig(scheduler=scheduler, metric="val_acc", mode="max"),
        run_config=tune.RunConfig(name="x", storage_path=str(tmp_path), callbacks=callbacks),
    )


def test_the_journal_gets_the_scheduler_the_tuner_runs_with(tmp_path):
    scheduler = DurableScheduler(FIFOScheduler(), str(tmp_path))
    journal = Journal(str(tmp_path), "val_acc", "max", 2)  # as unpickled from an older tuner.pkl
    assert runner._wire(_tuner(tmp_path, [journal], scheduler)) is journal
    assert journal.scheduler is scheduler
    assert runner._wire(_tuner(tmp_path, [], scheduler)) is None


def test_the_compat_check_runs_before_the_tuner_is_built(tmp_path, monkeypatch):
    calls = []

    class Stop(Exception):
        pass

    def resources(spec):
        calls.append("resources")
        raise Stop

    monkeypatch.setattr(runner, "_init_ray", lambda spec, opts: False)
    monkeypatch.setattr(_tune, "check_compat", lambda: calls.append("compat"))
    monkeypatch.setattr(runner, "_check_resources", resources)
    spec = spec_from_dict({
        "name": "x", "model": "mlp", "space": {"arch": {"depth": 1, "width": 8}, "train": {"lr": 1e-3}},
        "search": {"searcher": "random", "num_trials": 1}, "max_epochs": 1,
    })
    with pytest.raises(Stop):
        runner._execute(spec, runner.RunOptions(), tmp_path, None, restore=False)
    assert calls == ["compat", "resources"]
