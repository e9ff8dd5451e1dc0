"""benchmarks/nas_table.py: its stored table covers the space exactly, and a tiny run (no Ray)."""

import json
import math
import subprocess
import sys

from tests.helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "nas_table.py"
sys.path.insert(0, str(ROOT))


def test_the_table_holds_every_architecture_of_the_space_once_with_every_proxy():
    from benchmarks.nas_table import SPACE, key_of, read_table
    from raynas.experiment import PROXY_NAMES
    from raynas.spaces import Space

    rows = read_table()
    keys = [key_of(c["arch"]) for c in Space({"arch": SPACE}).grid()]
    assert len(keys) == len(set(keys)) == len(rows) == 624 and set(keys) == set(rows)
    for row in rows.values():
        assert 0 <= row["val_acc"] <= 1 and row["params"] > 0 and row["train_s"] > 0
        assert all(name in row for name in PROXY_NAMES)
    assert sum(math.isfinite(r["naswot"]) for r in rows.values()) > 600


def test_smoke_run_reports_every_searcher():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", "--searchers", "random,random+prescreen,evolution"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert set(report["searchers"]) == {"random", "random+prescreen", "evolution"}
    assert report["archs"] == 624 and report["top"] >= 7
    for summary in report["searchers"].values():
        assert summary["hits"]["runs"] == 2 and summary["final_rank"]["median"] >= 1
