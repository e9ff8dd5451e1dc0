"""CI smoke test of benchmarks/oneshot.py: a tiny budget, checking that it works (not its numbers)."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.parametrize("family", ["cell", "mbconv", "transformer", "mlp", "cnn", "resnet"])
def test_oneshot_benchmark_smoke(family):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "oneshot.py"), "--archs", "4", "--epochs", "1",
         "--supernet-epochs", "1", "--calibration-batches", "2", "--family", family, "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert set(out["rows"]) == {"one-shot", "params", "stand-alone, other seed"}
    for row in out["rows"].values():
        assert -1 <= row["kendall_tau"] <= 1 and 0 <= row["picked_acc"] <= 1
    assert len(out["archs"]) == 4 and len({json.dumps(a["arch"], sort_keys=True) for a in out["archs"]}) == 4
    assert all(0 <= a["one_shot"] <= 1 and 0 <= a["acc_seed0"] <= 1 for a in out["archs"])
    assert out["cpu_s"]["supernet"] > 0 and out["cpu_s"]["stand_alone_one_seed"] > 0
    assert ("edges" in out["archs"][0]["arch"]) == (family == "cell")
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "oneshot.py"), "--archs", "2"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--archs must be >= 3" in bad.stderr
