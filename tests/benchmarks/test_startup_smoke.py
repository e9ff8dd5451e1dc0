"""benchmarks/startup.py times a real `raynas run` (its numbers are not checked here)."""

import pytest

from tests.benchmarks._run import check_machine, run_benchmark

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_startup_smoke(ray_env):
    report = run_benchmark("startup.py", "--repeat", "1", ray_tmp=ray_env["RAY_TMPDIR"])
    assert report["benchmark"] == "startup"
    check_machine(report)
    assert report["target_s"] == 15.0
    (run,) = report["runs"]
    # The milestones come in the order the run passes them.
    assert 0 < run["folder_s"] <= run["trial_started_s"] <= run["first_epoch_s"] <= run["exit_s"]
    assert report["median"] == run
    assert "components" not in report
