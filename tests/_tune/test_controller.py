"""_tune.controller: Tune's per-trial trainable lookups, once per name within a run; the driver's housekeeping.

Ray Tune's real registry and Trial objects (without Ray started, the registry keeps
registrations in the process; once Ray runs, each lookup is a GCS round trip).
"""

import json
import sys

import pytest
from ray import tune
from ray.tune.error import TuneError
from ray.tune.experiment import Trial
from ray.tune.experiment import trial as trial_module
from ray.tune.utils.serialization import TuneFunctionEncoder
from ray.util import debug

from raynas._tune.controller import HeapTrim, forget_encoded_objects, trainable_lookups_cached


def _fn(config):
    tune.report({"x": 1})


def test_each_name_is_looked_up_once_and_tune_is_restored_after(monkeypatch):
    tune.register_trainable("raynas_lookup_test", _fn)
    calls = []
    original = trial_module.get_trainable_cls
    monkeypatch.setattr(trial_module, "get_trainable_cls", lambda trainable_name: calls.append(trainable_name) or original(trainable_name))
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


def test_heap_trims_are_spaced_by_their_own_cost():
    trim = HeapTrim(spacing=1e9)  # after one trim, the next waits a billion times its cost
    if not sys.platform.startswith("linux"):
        assert trim.maybe() is False  # no glibc: nothing to trim, never an error
        return
    assert trim.maybe() is True
    assert trim.maybe() is False
    assert HeapTrim(spacing=0).maybe() is True


def test_only_tunes_encoder_log_once_keys_are_forgotten():
    class Opaque:  # JSON cannot hold it: Tune's encoder pickles it and logs that once
        def __str__(self):
            return "opaque-for-raynas-test"

    json.dumps({"x": Opaque()}, cls=TuneFunctionEncoder)
    debug.log_once("raynas-test-other-key")
    assert "tune_func_encode:opaque-for-raynas-test" in debug._logged
    forget_encoded_objects()
    assert not any(k.startswith("tune_func_encode:") for k in debug._logged)
    assert "raynas-test-other-key" in debug._logged
    debug._logged.discard("raynas-test-other-key")
