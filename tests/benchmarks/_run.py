"""Runs a benchmark script with a tiny budget and returns its --json output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import ROOT

BENCHMARKS = ROOT / "benchmarks"


def run_benchmark(name: str, *args: str, ray_tmp: str, timeout: float = 300) -> dict:
    env = dict(os.environ, RAY_TMPDIR=ray_tmp)
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args, "--json"],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def check_machine(report: dict) -> None:
    machine = report["machine"]
    assert machine["cpus"] >= 1
    assert isinstance(machine["load"], list)
    assert isinstance(report["load_after"], list)
