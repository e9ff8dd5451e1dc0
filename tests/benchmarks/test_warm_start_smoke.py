"""benchmarks/warm_start.py: a tiny run through its command line (no Ray), and its measure."""

import json
import subprocess
import sys

from tests.helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "warm_start.py"


def test_smoke_run_prints_one_summary_per_searcher_and_pair():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert set(report["summary"]) == {"optuna 3945->34539", "evolution 3945->34539"}
    for run in report["runs"]:
        # The cold search reaches its own final quality by definition; warm runs are measured.
        assert 1 <= run["cold_to_final"] <= 24 and run["cold_final"] > 0
        assert run["warm_to_final"] is None or 1 <= run["warm_to_final"] <= 24
    assert 0.8 < report["summary"]["optuna 3945->34539"]["rho"] < 0.95


def test_first_reaching_counts_evaluations_until_a_value_is_matched():
    sys.path.insert(0, str(ROOT))
    from benchmarks.warm_start import first_reaching

    rows = {"a": {"val_accuracy_t": 1.0}, "b": {"val_accuracy_t": 3.0}, "c": {"val_accuracy_t": 2.0}}
    assert first_reaching(["a", "c", "b"], rows, "t", 2.0) == 2
    assert first_reaching(["a"], rows, "t", 2.0) is None
