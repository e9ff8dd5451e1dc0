"""benchmarks/winner.py runs search -> retrain -> compress on the cnn example (numbers not checked here)."""

import pytest

from tests.benchmarks._run import check_machine, run_benchmark

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_winner_smoke(ray_env):
    report = run_benchmark("winner.py", "--quick", "--examples", "cnn_digits", "--recipes", "magnitude 50% + int8",
                           ray_tmp=ray_env["RAY_TMPDIR"], timeout=600)
    assert report["benchmark"] == "winner"
    check_machine(report)
    (cnn,) = report["examples"]
    assert cnn["example"] == "cnn_digits" and len(cnn["retrained"]) == 1 and cnn["retrained"][0]["n"] == 2
    (row,) = cnn["compressed"]
    assert row["after"]["nonzero"] < row["before"]["nonzero"] and row["after"]["size_bytes"] < row["before"]["size_bytes"]
