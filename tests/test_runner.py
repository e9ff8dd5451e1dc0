"""runner.trainable_lookups_cached: Tune's per-trial trainable lookups, once per name within a run.

Ray Tune's real registry and Trial objects (without Ray started, the registry keeps
registrations in the process; once Ray runs, each lookup is a GCS round trip).
"""

import pytest
from ray import tune
from ray.tune.error import TuneError
from ray.tune.experiment import Trial
from ray.tune.experiment import trial as trial_module

from raynas.runner import trainable_lookups_cached


def _fn(config):
    tune.report({"x": 1})


def test_each_name_is_looked_up_once_and_tune_is_restored_after(monkeypatch):
    tune.register_trainable("raynas_lookup_test", _fn)
    calls = []
    original = trial_module.get_trainable_cls
    monkeypatch.setattr(trial_module, "get_trainable_cls", lambda name: calls.append(name) or original(name))
    patched_original = trial_module.get_trainable_cls
    with trainable_lookups_cached():
        trials = [Trial("raynas_lookup_test", config={"i": i}) for i in range(3)]
        for t in trials:
            t.get_trainable_cls()
            t.create_placement_group_factory()  # looks the trainable up again in Tune
        assert calls == ["raynas_lookup_test"]
        with pytest.raises(TuneError, match="Unknown trainable"):
            Trial("raynas_no_such_trainable")
    assert trial_module.get_trainable_cls is patched_original
    with pytest.raises(TuneError, match="Unknown trainable"):
        Trial("raynas_no_such_trainable")
