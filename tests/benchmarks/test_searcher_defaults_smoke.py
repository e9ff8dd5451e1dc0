"""benchmarks/searcher_defaults.py: its stored table, its measures, and a tiny run (numbers not checked).

The run drives the searchers directly (no Ray is started)."""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.benchmarks._run import check_machine
from tests.helpers import ROOT, SHARED

SCRIPT = ROOT / "benchmarks" / "searcher_defaults.py"
DATA = SHARED / "data" / "yahpo"


def module():
    spec = importlib.util.spec_from_file_location("searcher_defaults", SCRIPT)
    out = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(out)
    return out


def test_the_table_holds_every_grid_configuration_once():
    from raynas.bench.lookup import make_key
    from raynas.spaces import Space

    sd = module()
    rows = sd.read_table()
    keys = [make_key(sd.KEY, config) for config in Space(sd.GRID).grid()]
    assert len(keys) == len(set(keys)) == len(rows) == 4050 and set(keys) == set(rows)
    assert sd.tasks_of(rows) == list(sd.TASKS)
    for row in rows.values():
        for task in sd.TASKS:
            assert 0 < row[f"val_accuracy_{task}"] <= 100 and row[f"time_{task}"] > 0


@pytest.mark.skipif(not (DATA / "lcbench" / "model.onnx").is_file(), reason=f"the YAHPO LCBench data is not at {DATA}")
def test_the_table_is_what_the_surrogate_predicts(tmp_path):
    pytest.importorskip("onnxruntime", reason="raynas[bench] is not installed")
    sd = module()
    rebuilt = tmp_path / "grid.csv"
    sd.build_table(rebuilt, sd.TASKS, str(DATA))
    stored, again = sd.read_table(), sd.read_table(rebuilt)
    assert list(again) == list(stored)
    for key, row in stored.items():
        assert again[key] == pytest.approx(row, rel=1e-3, abs=2e-3), key  # printed to 3 decimals


def test_measures_on_a_small_table():
    sd = module()
    # 200 configurations: accuracy 0..199, time the reverse; a two-point front at the ends.
    rows = {f"k{i}": {"val_accuracy_t": float(i), "time_t": float(400 - i)} for i in range(200)}
    assert sd.top_keys(rows, "t") == {"k199", "k198"}  # ceil(1% of 200) = 2
    assert sd.evaluations_to(["k3", "k198", "k199"], {"k199", "k198"}) == 2
    assert sd.evaluations_to(["k3"], {"k199"}) is None
    assert sd.rank_of_best(["k3", "k197"], rows, "t") == 3
    assert sd.hypervolume_ratio(list(rows), rows, "t") == pytest.approx(1.0)
    assert sd.hypervolume_ratio(["k199"], rows, "t") == pytest.approx(1.0)  # it dominates every other point
    assert 0 < sd.hypervolume_ratio(["k100"], rows, "t") < 1
    assert sd.random_median(1, 2) == 1 and sd.random_median(41, 4050) == 69
    summary = sd.summary_hits([10, 20, None, None])
    assert summary["median"] is None and summary["q1"] == 17.5 and summary["reached"] == 0.5
    assert sd.parse_searcher("evolution:population_size=20:sample_size=5") == ("evolution", {"population_size": 20, "sample_size": 5})
    assert sd.parse_searcher("rl:lr=0.02:float_bins=4") == ("rl", {"lr": 0.02, "float_bins": 4})


@pytest.mark.slow
def test_searcher_defaults_smoke():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    check_machine(report)
    settings = report["settings"]
    assert (settings["budget"], settings["seeds"], settings["workers"], settings["configurations"]) == (24, 2, 4, 4050)
    task = settings["tasks"][0]
    assert set(report["single"]) == {"random", "optuna", "evolution", "rl"}
    # The searchers as a user gets them: evolution's sizes come from num_trials (24).
    assert report["defaults"]["evolution"] == {"population_size": 6, "sample_size": 5, "mutations": 1}
    assert report["defaults"]["optuna"]["sampler"] == "auto" and report["defaults"]["random"] == {}
    for result in report["single"].values():
        row = result["tasks"][task]
        assert row["top"] >= 41 and len(row["hits"]) == 2
        assert all(h is None or 1 <= h <= 24 for h in row["hits"]) and all(r >= 1 for r in row["final_ranks"])
        assert 0 <= result["all"]["reached"] <= 1
    assert report["random_expected_median"] == {task: 69}
    assert report["multi_auto_sampler"] == "TPESampler"
    for sampler in ("tpe", "nsga2", "random"):
        ratios = report["multi"][sampler]["tasks"][task]["ratios"]
        assert len(ratios) == 2 and all(0 < r <= 1 for r in ratios)
    bad = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--tasks", "1234"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "--tasks: no column val_accuracy_1234" in bad.stderr
