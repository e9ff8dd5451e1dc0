"""CI smoke test of benchmarks/supernet_workers.py: one data-parallel run, one epoch (works, not its numbers)."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_supernet_workers_benchmark_smoke(ray_env):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "supernet_workers.py"), "--workers", "2",
                           "--epochs", "1", "--subnets", "2", "--json"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **ray_env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = json.loads(proc.stdout)["runs"]
    assert run["workers"] == 2 and run["epochs"] == 1 and run["spread"] == 0.0
    assert run["epoch_s"] > 0 and run["start_s"] > 0 and 0 <= run["best_subnet"] <= 1
