"""CI smoke test of benchmarks/search_quality.py: a tiny budget, checking that it works (not its numbers)."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, SHARED

pytestmark = [pytest.mark.ray, pytest.mark.slow]

DATA = SHARED / "data" / "yahpo"


@pytest.mark.skipif(not (DATA / "lcbench" / "model.onnx").is_file(), reason=f"the YAHPO LCBench data is not at {DATA}")
def test_search_quality_smoke(tmp_path, ray_env):
    pytest.importorskip("onnxruntime", reason="raynas[bench] is not installed")
    pytest.importorskip("matplotlib", reason="raynas[bench] is not installed")
    plot = tmp_path / "sq.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_quality.py"), "167168", "--smoke",
         "--methods", "random+fifo,random+asha", "--json", "--plot", str(plot), "--data-path", str(DATA)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **ray_env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["settings"]["methods"] == ["random+fifo", "random+asha"]
    assert out["settings"]["budget_sim_s"] == 60 and out["settings"]["seeds"] == 1
    for method in ("random+fifo", "random+asha"):
        row = out["methods"][method]["tasks"]["167168"]
        assert 0 < row["best_mean"] <= 100 and row["trials"] >= 1
        assert all(r >= 0 for r in row["regret_curve"])  # the reference is the best any method saw
    for run in out["runs"]:
        times = [t for t, _ in run["events"]]
        assert times == sorted(times) and times[-1] <= 60
    assert plot.stat().st_size > 1000
    # A bad task id stops before Ray starts, exit code 2, with the key path.
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_quality.py"), "1234", "--smoke", "--plot", ""],
        capture_output=True, text=True, timeout=120, env={**os.environ, **ray_env},
    )
    assert bad.returncode == 2 and "trainable.params.task: unknown LCBench task '1234'" in bad.stderr


def _module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_quality", ROOT / "benchmarks" / "search_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(epoch, wall, seconds, acc, resumed=0):
    return {"epoch": epoch, "wall_time": wall, "sim_epoch_time": seconds, "val_accuracy": acc, "resumed_from": resumed}


def test_timeline_places_trial_runs_on_the_first_free_worker():
    sq = _module()
    curves = [
        [row(1, 1.0, 10, 50.0), row(2, 2.0, 10, 60.0), row(3, 9.0, 10, 70.0, resumed=2)],  # paused after epoch 2
        [row(1, 1.5, 5, 40.0)],
        [row(1, 3.0, 20, 80.0)],
    ]
    events, work, span = sq.timeline(curves, workers=2, speedup=10.0)
    # Worker A: trial 0 epochs 1-2 (0-20); worker B: trial 1 (0-5), then trial 2 (5-25);
    # trial 0's resumed epoch 3 goes to worker A, free first (20-30).
    assert events == [(5.0, 40.0, 1), (10.0, 50.0, 0), (20.0, 60.0, 0), (25.0, 80.0, 2), (30.0, 70.0, 0)]
    assert work == 55.0 and span == pytest.approx(9.0 - 0.0)
    assert sq.anytime(events, [4, 10, 26, 100]) == [None, 50.0, 80.0, 80.0]


def test_regret_standard_errors_are_over_seeds_of_the_mean_over_tasks():
    from types import SimpleNamespace

    sq = _module()

    def run(task, method, seed, acc):
        return {"task": task, "method": method, "seed": seed, "events": [(1.0, acc)], "trials": 1, "wall_utilization": 1.0}

    # Reference: 90 on task a, 80 on task b. Method m's per-seed mean regrets: 2, 4, 6.
    runs = [run("a", "best", 0, 90.0), run("b", "best", 0, 80.0)]
    runs += [run("a", "m", s, 90.0 - 2 * (s + 1)) for s in range(3)]
    runs += [run("b", "m", s, 80.0 - 2 * (s + 1)) for s in range(3)]
    summary = sq.summarise(runs, SimpleNamespace(budget=10.0, seeds=3, workers=1, speedup=1.0))
    row = summary["methods"]["m"]
    assert row["regret"] == pytest.approx(4.0)
    assert row["regret_se"] == pytest.approx(2.0 / 3 ** 0.5)  # sd 2 of (2, 4, 6), over sqrt(3)
    assert summary["methods"]["best"]["regret_se"] == 0.0  # one seed: no spread to estimate
    assert "4.00 ± 1.15" in sq.render(summary)


@pytest.mark.skipif(not (DATA / "lcbench" / "model.onnx").is_file(), reason=f"the YAHPO LCBench data is not at {DATA}")
def test_offline_runs_the_experiments_searcher_under_rays_asha_without_ray(tmp_path):
    pytest.importorskip("onnxruntime", reason="raynas[bench] is not installed")
    from types import SimpleNamespace

    sq = _module()
    args = SimpleNamespace(workers=3, budget=60.0, speedup=100.0, data_path=str(DATA))
    fifo = sq.run_offline("167168", "random+fifo", 0, args)
    asha = sq.run_offline("167168", "random+asha", 0, args)
    assert asha == {**sq.run_offline("167168", "random+asha", 0, args), "wall_s": asha["wall_s"]}  # seeded
    for run in (fifo, asha):
        times = [t for t, _ in run["events"]]
        assert times == sorted(times) and 0 < times[-1] <= 60 and run["epochs"] == len(times)
    # Same seed, same configurations: the first trial's first epochs are the same under both.
    assert fifo["events"][0] == asha["events"][0]
    # ASHA stops most trials at its first rung (epoch 3), so far more trials fit the budget.
    assert asha["trials"] > 2 * fifo["trials"] >= 2 * 3
    # Methods that pause trials cannot run offline: the command line says so (exit 2).
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_quality.py"), "167168", "--offline",
         "--methods", "random+asha,hyperband", "--plot", ""],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "--offline cannot run hyperband" in proc.stderr


@pytest.mark.skipif(not (DATA / "lcbench" / "model.onnx").is_file(), reason=f"the YAHPO LCBench data is not at {DATA}")
def test_offline_asha_stops_trials_where_rays_rung_rule_says():
    """A finished trial ends at a rung (3, 9, 27) or at the end (52); one that ended at a rung was
    below the top third of the values recorded there before it; one that went on was not."""
    pytest.importorskip("onnxruntime", reason="raynas[bench] is not installed")
    from types import SimpleNamespace

    import numpy as np

    sq = _module()
    events, running = sq.simulate("167168", "random+asha", 1, SimpleNamespace(workers=4, budget=120.0, speedup=100.0,
                                                                              data_path=str(DATA)))
    length: dict = {}
    for _, _, trial in events:
        length[trial] = length.get(trial, 0) + 1
    assert running and all(length[t] in (3, 9, 27, 52) for t in length if t not in running)
    rungs: dict = {3: [], 9: [], 27: []}
    stopped = promoted = 0
    seen: dict = {}
    for _, acc, trial in events:  # in time order, as the scheduler saw them
        seen[trial] = epoch = seen.get(trial, 0) + 1
        if epoch in rungs:
            if rungs[epoch] and trial not in running:
                cutoff = np.nanpercentile(rungs[epoch], 100 * (1 - 1 / 3))
                if length[trial] == epoch:
                    assert acc < cutoff
                    stopped += 1
                else:
                    assert acc >= cutoff
                    promoted += 1
            rungs[epoch].append(acc)
    assert stopped >= 10 and promoted >= 2
