"""Finished trials leave Tune's controller (and its snapshots) once the journal has them.

A real run (its own local Ray, started by raynas as `raynas run` starts it) of short toy
trials, in a subprocess that watches Tune's controller from inside: which trials it still
holds at each step, and whether the ones it let go are really freed.
"""

import json
import textwrap
from pathlib import Path

import pytest

from raynas.durable import snapshot_dir
from raynas.experiment import read_journal

from tests.helpers import run_script

pytestmark = [pytest.mark.ray]

TRIALS = 24

_WATCH = textwrap.dedent("""
    import gc, json, os, sys, weakref
    from ray.tune.execution.tune_controller import TuneController
    from raynas.spec import spec_from_dict
    from raynas.runner import RunOptions, run

    seen = {}           # trial id -> weak reference, for every trial the controller ever held
    held_finished = []  # finished trials still in the controller, after each step
    alive = []          # trials that left the controller and are still in memory, at the end
    encoder_keys = []   # Ray's log-once keys from Tune's JSON encoder, at the end
    staged = []         # trial folders in Tune's staging folder, at the end
    empty = []          # steps after the first trial that left the controller without any
    journal_held = []   # records raynas's journal still held in memory, at the end

    step = TuneController.step
    def watched(self):
        step(self)
        for trial in self._trials:
            seen.setdefault(trial.trial_id, weakref.ref(trial))
        held_finished.append(sum(1 for t in self._trials if t.status in ("TERMINATED", "ERROR")))
        if seen and not self._trials:
            empty.append(len(seen))
    TuneController.step = watched

    end = TuneController.end_experiment_callbacks
    def ended(self):
        gc.collect()
        held = {t.trial_id for t in self._trials}
        alive.extend(tid for tid, ref in seen.items() if tid not in held and ref() is not None)
        from ray.util import debug
        encoder_keys.extend(k for k in debug._logged if k.startswith("tune_func_encode:"))
        staging = self._storage.experiment_driver_staging_path
        staged.extend(name for name in os.listdir(staging) if name.startswith("trial_"))
        from raynas.callbacks import Journal
        journal_held.extend(len(cb.records) for cb in self._callbacks._callbacks if isinstance(cb, Journal))
        return end(self)
    TuneController.end_experiment_callbacks = ended

    run(spec_from_dict(json.loads(sys.argv[1])), RunOptions(storage_path=sys.argv[2], progress=False, num_cpus=2))
    print(json.dumps({"seen": len(seen), "max_held_finished": max(held_finished),
                      "last_held_finished": held_finished[-1], "alive": alive,
                      "encoder_keys": len(encoder_keys), "staged": len(staged), "empty": empty,
                      "journal_held": journal_held}))
""")


@pytest.mark.parametrize("concurrent", [1, 2])
def test_finished_trials_leave_tunes_controller_and_its_snapshots(tmp_path, ray_env, concurrent):
    raw = {
        "name": "released", "trainable": "tests.integration.toy_trainable:train",
        "space": {"x": {"float": [0, 1]}, "y": {"float": [0, 1]}},
        "search": {"searcher": "random", "num_trials": TRIALS, "seed": 0, "max_concurrent": concurrent},
        "objective": {"metric": "score", "mode": "max"}, "max_epochs": 2,
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    }
    report = run_script(_WATCH, raw, tmp_path / "results", {**ray_env, "TOY_SLEEP": "0.02"})
    exp_dir = tmp_path / "results" / "released"

    # The journal has every trial, finished.
    records = read_journal(exp_dir)
    assert len(records) == TRIALS and {r.status.value for r in records.values()} == {"completed"}
    assert report["seen"] == TRIALS
    # Tune let go of finished trials as the run went on, not only at its end: it never held
    # more than a few at once (Tune's own rule keeps all of them, up to 24 here)...
    assert report["max_held_finished"] < TRIALS // 2, report
    # ...and nothing else kept them in memory (Tune's own progress callback did).
    assert report["alive"] == [], report
    # Tune's JSON encoder leaves a few log-once keys in Ray per trial it encodes (its storage
    # context, its metric windows); those of released trials are gone too.
    assert report["encoder_keys"] < TRIALS, report
    # Tune's staging folder, which it copies whole into the results folder at every snapshot,
    # holds no folder of a finished trial for long (Tune's own rule keeps one per trial)...
    assert report["staged"] < TRIALS // 2, report
    # ...while each trial's folder in the results folder keeps its result log.
    # raynas's journal let go of them too: it keeps their records in its file only.
    [held] = report["journal_held"]
    assert held <= report["last_held_finished"] + 2 < TRIALS, report
    for rec in records.values():
        assert (exp_dir / rec.dir / "result.json").stat().st_size > 0, rec.dir
    # The controller never went without a trial (Tune cannot resume from a snapshot that
    # lists none: it starts the search again), even between one trial's end and the next
    # trial's creation, or after the last trial.
    assert report["empty"] == [], report
    # Its snapshots, and raynas's copy that a resume starts from, list only the trials not
    # yet released.
    for folder in (exp_dir, Path(snapshot_dir(exp_dir))):
        [state] = folder.glob("experiment_state-*.json")
        listed = json.loads(state.read_text())["trial_data"]
        assert len(listed) <= report["last_held_finished"] + 2 < TRIALS, (folder, len(listed))
