"""The benchmark trainables run through raynas on real Ray Tune and report what the table or
the surrogate says, epoch by epoch, across pauses and PBT's checkpoint copies."""

import os
import signal

import pytest
from ray import tune

import raynas
from raynas.bench.lookup import LookupTable
from raynas.experiment import read_journal
from tests.helpers import EXPERIMENTS, SHARED

pytestmark = [pytest.mark.ray, pytest.mark.slow]

DATA = SHARED / "data" / "yahpo"


def trials(folder):
    return raynas.load_results(folder).leaderboard(include_lost=True)


def check_contiguous(trial, jumps=False):
    """Epochs 1, 2, 3, ...: none twice, none skipped. With ``jumps``, a trial may also skip
    ahead where it restarted from another trial's later checkpoint (PBT's exploit of a trial
    that ran ahead): the row after the gap says it resumed from the epoch before it."""
    rows = trial.curve
    epochs = [row["epoch"] for row in rows]
    assert epochs and epochs[0] == 1, (trial.trial_id, epochs)
    for before, row in zip(rows, rows[1:]):
        e = row["epoch"]
        ok = e == before["epoch"] + 1 or (jumps and e > before["epoch"] and row["resumed_from"] == e - 1)
        assert ok, (trial.trial_id, [(r["epoch"], r["resumed_from"]) for r in rows])


def test_lookup_example_replays_the_table(shared_ray, tmp_path):
    folder = raynas.run(
        str(EXPERIMENTS / "lookup_tiny.yaml"),
        overrides=["trainable.params.speedup=2000", "search.searcher=grid", "search.num_trials=16"],
        storage_path=str(tmp_path), progress=False,
    )
    table = LookupTable(EXPERIMENTS / "lookup_tiny.csv")
    found = trials(folder)
    assert len(found) == 16 and {t.status.value for t in found} <= {"completed", "stopped"}
    assert any(t.status.value == "stopped" for t in found)  # ASHA stopped some after a rung
    for t in found:
        check_contiguous(t)
        rows, seconds, _ = table.rows(f"{t.config['arch']['edge1']}|{t.config['arch']['edge2']}")
        for row in t.curve:
            e = row["epoch"]
            assert row["val_acc"] == pytest.approx(rows[e - 1]["val_acc"])
            assert row["params"] == rows[e - 1]["params"]
            assert row["sim_time"] == pytest.approx(sum(seconds[:e]))
    best_in_table = max(r[-1]["val_acc"] for r in (table.rows(k)[0] for k in table.entries))
    assert raynas.load_results(folder).best().best == pytest.approx(best_in_table)


@pytest.mark.skipif(not (DATA / "lcbench" / "model.onnx").is_file(), reason=f"the YAHPO LCBench data is not at {DATA}")
@pytest.mark.parametrize("scheduler", ["hyperband", "pbt"])
def test_lcbench_trials_report_the_surrogate_across_pauses(shared_ray, tmp_path, scheduler):
    pytest.importorskip("onnxruntime", reason="raynas[bench] is not installed")
    from raynas.bench import LCBENCH_SPACE, LCBenchSurrogate

    train = ("batch_size", "learning_rate", "momentum", "weight_decay")
    raw = {
        "name": f"lc-{scheduler}",
        "trainable": {"function": "raynas.bench:lcbench", "params": {"task": "167168", "speedup": 3000, "data_path": str(DATA)}},
        # Nested as arch/train so that PBT may perturb the training hyperparameters.
        "space": {"arch": {k: v for k, v in LCBENCH_SPACE.items() if k not in train},
                  "train": {k: v for k, v in LCBENCH_SPACE.items() if k in train}},
        "search": {"searcher": "random", "num_trials": 9 if scheduler == "hyperband" else 4, "seed": 1},
        "scheduler": {"name": "hyperband", "reduction_factor": 3} if scheduler == "hyperband" else
                     # Synchronous: at every point the weakest of the 4 exploits. Asynchronous
                     # PBT exploits only where a weak trial reaches a point after stronger ones
                     # reported, which these fast trials may never do (CI saw a run without
                     # any); tests/integration/test_resume_state.py waits for asynchronous ones.
                     {"name": "pbt", "perturbation_interval": 3, "hyperparams": ["learning_rate"], "synch": True},
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "max_epochs": 9,
        "resources": {"cpus_per_trial": 0.25},
    }
    folder = raynas.run(raynas.spec_from_dict(raw), storage_path=str(tmp_path), progress=False)
    found = trials(folder)
    journal = read_journal(folder)
    assert all(r.status.value in ("completed", "stopped") for r in journal.values()), [r.error for r in journal.values()]
    surrogate = LCBenchSurrogate(DATA)
    resumed = 0
    for t in found:
        check_contiguous(t, jumps=scheduler == "pbt")
        resumed += any(row["resumed_from"] > 0 for row in t.curve)
        if scheduler == "hyperband":
            # The trial's own configuration throughout: each epoch is the surrogate's value.
            flat = {**t.config["arch"], **t.config["train"]}
            curve = surrogate.curve("167168", flat, 9)
            for row in t.curve:
                e = row["epoch"]
                assert row["val_accuracy"] == pytest.approx(curve["val_accuracy"][e - 1], rel=1e-5)
                assert row["sim_time"] == pytest.approx(curve["time"][e - 1], rel=1e-4)
    # HyperBand paused and resumed trials; PBT restarted exploiting trials from copied checkpoints.
    assert resumed > 0
    assert max(t.epochs for t in found) == 9


class StopAfter(tune.Stopper):
    """Ends the whole search after a few results."""

    def __init__(self, results: int):
        self.left = results

    def __call__(self, trial_id, result):
        self.left -= 1
        return False

    def stop_all(self):
        return self.left <= 0


def test_a_stop_rule_ends_the_search_with_trials_still_pending(shared_ray, tmp_path):
    folder = raynas.run(
        str(EXPERIMENTS / "lookup_tiny.yaml"),
        # HyperBand lets Tune queue many trials (max_concurrent unset): some never start.
        overrides=["trainable.params.speedup=20", "scheduler={name: hyperband}", "search.num_trials=16"],
        storage_path=str(tmp_path), progress=False, stop=StopAfter(3),
    )
    found = trials(folder)
    assert 1 <= len([t for t in found if t.curve]) < 16
    assert raynas.load_results(folder).best().best > 0


def test_a_folder_whose_trainable_had_the_functions_name_resumes(shared_ray, tmp_path, monkeypatch):
    """Trial actors are named after their experiment (Ray's dashboard shows it); a folder
    written when they were named after the function (run_trial) still resumes, as Tune
    restores a folder only with the trainable name it was written with."""
    from raynas import runner

    class InterruptThisRun(StopAfter):
        """Ctrl-C after a few results (Tune stops gracefully, and ends its actors in the shared
        Ray); Tune restores its stopper on resume, where it is spent."""

        def __call__(self, trial_id, result):
            self.left -= 1
            if self.left == 0:
                os.kill(os.getpid(), signal.SIGINT)
            return False

        def stop_all(self):
            return False

        def __setstate__(self, state):
            self.left = -1

    with monkeypatch.context() as m:
        m.setattr(runner, "trainable_name", lambda experiment: "run_trial")
        raynas.run(
            str(EXPERIMENTS / "lookup_tiny.yaml"), overrides=["trainable.params.speedup=20", "search.num_trials=6"],
            storage_path=str(tmp_path), progress=False, stop=InterruptThisRun(3),
        )
    folder = tmp_path / "lookup_tiny"
    assert raynas.experiment.run_status(folder) is raynas.experiment.RunStatus.INTERRUPTED
    raynas.resume(folder, progress=False)
    assert raynas.experiment.run_status(folder) is raynas.experiment.RunStatus.FINISHED
    assert len([t for t in trials(folder) if t.status.finished]) == 6
