"""CI smoke test of benchmarks/darts_skip.py: a tiny budget, checking that it works (not its numbers)."""

import json
import subprocess
import sys

from tests.helpers import ROOT


def test_darts_skip_benchmark_smoke():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "darts_skip.py"), "--arch-lrs", "0.003,0.1", "--epochs", "2",
         "--every", "1", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(proc.stdout)["runs"]
    assert [r["arch_lr"] for r in runs] == [0.003, 0.1]
    for r in runs:
        assert [row["epoch"] for row in r["rows"]] == [1, 2]
        for row in r["rows"]:
            assert len(row["cell"]) == 6 and row["skip_edges"] == sum(op == "skip" for op in row["cell"].values())
            assert all(0.2 <= w <= 1 for w in row["strongest"]) and 0 <= row["val_acc"] <= 1
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "darts_skip.py"), "--arch-lrs", "x"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--arch-lrs must be comma-separated numbers" in bad.stderr
