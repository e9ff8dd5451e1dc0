"""CI smoke test of benchmarks/oneshot_search.py: a tiny budget, checking that it works (not its numbers)."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_oneshot_search_benchmark_smoke(ray_env):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "oneshot_search.py"), "--search-seeds", "1", "--evolution-trials", "3",
         "--oneshot-trials", "3", "--epochs", "1", "--supernet-epochs", "1", "--top", "1", "--seeds", "1", "--methods", "one-shot,gradient",
         "--json"],
        capture_output=True, text=True, timeout=900, env={**os.environ, **ray_env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(proc.stdout)["runs"]
    assert [r["method"] for r in runs] == ["one-shot", "gradient"]  # evolution+asha is a plain raynas search
    for r in runs:
        assert r["trial_s"] > 0 and 0 <= r["first_pick_test"] <= 1 and len(r["picks"]) == 1
