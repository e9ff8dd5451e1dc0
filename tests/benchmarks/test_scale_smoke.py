"""benchmarks/scale.py runs trivial trials through `raynas run` (its numbers are not checked here)."""

import pytest

from tests.benchmarks._run import check_machine, run_benchmark

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_scale_smoke(ray_env):
    report = run_benchmark("scale.py", "--trials", "12", "--interval", "0.2", ray_tmp=ray_env["RAY_TMPDIR"])
    assert report["benchmark"] == "scale"
    check_machine(report)
    assert report["target_trials_per_s"] == 20.0
    assert report["trials"] == 12 and report["finished"] == 12
    assert report["wall_s"] > 0 and report["trials_per_s"] > 0
    assert report["peak_rss_mib"] > 0
    samples = report["samples"]
    assert samples and all(len(s) == 4 for s in samples)
    # Seconds rise; finished trials and the driver's CPU seconds never go down.
    assert [s[0] for s in samples] == sorted(s[0] for s in samples)
    assert [s[2] for s in samples] == sorted(s[2] for s in samples)
    cpu = [s[3] for s in samples if s[3] is not None]
    assert cpu and cpu == sorted(cpu) and cpu[-1] > 0
    for key in ("steady_trials_per_s", "rss_at_25pct_mib", "growth_after_25pct_mib", "slope_mib_per_1000_trials",
                "driver_cpu_ms_per_trial_early", "driver_cpu_ms_per_trial_late", "rss_growth_mib_per_1000_trials"):
        assert key in report
    for key in ("rss_mib_early", "rss_mib_late"):  # None when no sample fell in the window
        assert report[key] is None or 0 < report[key] <= report["peak_rss_mib"], key
