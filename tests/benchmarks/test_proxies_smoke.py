"""benchmarks/proxies.py runs end to end on a tiny budget (no Ray; its numbers are not checked here)."""

import math

import pytest

from raynas.experiment import PROXY_NAMES
from tests.benchmarks._run import check_machine, run_benchmark

pytestmark = [pytest.mark.slow]


def test_proxies_smoke(ray_env):
    report = run_benchmark("proxies.py", "--smoke", ray_tmp=ray_env["RAY_TMPDIR"])
    assert report["benchmark"] == "proxies" and report["data"] == "digits"
    check_machine(report)
    assert (report["archs"], report["epochs"]) == (6, 1)
    assert set(report["spaces"]) == {"mlp", "cnn"}
    for name, space in report["spaces"].items():
        rows = space["rows"]
        assert len(rows) == 6, name
        assert len({repr(r["arch"]) for r in rows}) == 6, "the architectures are distinct"
        assert all(0 <= r["val_acc"] <= 1 and r["train_s"] > 0 for r in rows)
        assert all(set(r["proxy_s"]) == set(PROXY_NAMES) for r in rows)
        assert set(space["correlations"]) == {*PROXY_NAMES, "params", "flops"}
        for metric, c in space["correlations"].items():
            assert c["n"] + c["nan"] == 6, (name, metric)
            if c["n"] >= 3:
                assert -1 <= c["kendall_tau"] <= 1 and -1 <= c["spearman_rho"] <= 1, (name, metric, c)
        assert all(math.isfinite(r["values"]["params"]) for r in rows)
