"""CI smoke test of benchmarks/epoch_loop.py: two epochs against the same loop (works, not its numbers).
The baseline is given as a file, so the test needs no git history."""

import json
import subprocess
import sys

from tests.helpers import ROOT


def test_epoch_loop_benchmark_smoke():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "epoch_loop.py"), "--baseline",
                           str(ROOT / "raynas" / "trainables" / "module.py"),
                           "--epochs", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["batches"] == 29 and result["old_ms"] > 0 and result["new_ms"] > 0 and result["ratio"] > 0
