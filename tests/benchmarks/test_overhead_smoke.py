"""benchmarks/overhead.py runs end to end on a tiny workload (its numbers are not checked here).

The plain Ray Tune + Lightning systems are left out to keep CI short (each starts its own Ray);
they run in the benchmark itself."""

import pytest

from tests.benchmarks._run import check_machine, run_benchmark

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_overhead_smoke(ray_env):
    report = run_benchmark(
        "overhead.py", "--workload", "mlp", "--systems", "limit,limit-parallel,limit-cold,raynas",
        "--trials", "2", "--epochs", "1", ray_tmp=ray_env["RAY_TMPDIR"],
    )
    assert report["benchmark"] == "overhead"
    check_machine(report)
    mlp = report["workloads"]["mlp"]
    assert (mlp["trials"], mlp["epochs_per_trial"], mlp["epochs_total"], mlp["parallel"]) == (2, 1, 2, 2)
    assert mlp["target_ratio"] == 1.5
    assert set(mlp["systems"]) == {"limit", "limit-parallel", "limit-cold", "raynas"}
    for name, system in mlp["systems"].items():
        assert len(system["wall_s"]) == 1 and system["wall_s"][0] > 0, name
        assert system["median_s"] == system["wall_s"][0]
        assert system["median_ratio"] > 0
        # Every system trained the whole workload: the comparison is like for like.
        assert system["epochs"] == [2], name
    assert mlp["systems"]["limit"]["median_ratio"] == 1.0
    assert mlp["systems"]["limit"]["epoch_s"] > 0
    assert mlp["systems"]["raynas"]["ray_init_s"] > 0
    assert mlp["systems"]["raynas"]["median_ratio_to_parallel"] > 0
    # The cold floor is measured from the processes' spawn, so it includes their imports.
    assert mlp["systems"]["limit-cold"]["median_ratio_to_cold"] == 1.0
    assert mlp["systems"]["raynas"]["median_ratio_to_cold"] > 0
    assert "ratio_to_cold" not in mlp["systems"]["limit-parallel"]
