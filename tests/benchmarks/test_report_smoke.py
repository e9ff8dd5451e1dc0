"""benchmarks/report.py builds and renders the report of a synthetic folder (its numbers are not checked here)."""

import tempfile
from pathlib import Path

from tests.analysis._chromium import CHROMIUM, require_chromium
from tests.benchmarks._run import check_machine, run_benchmark


def test_report_smoke():
    require_chromium()
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as ray_tmp:
        report = run_benchmark("report.py", "--trials", "60", "--epochs", "5", ray_tmp=ray_tmp)
    assert report["benchmark"] == "report"
    check_machine(report)
    assert report["trials"] == 60 and 60 <= report["points"] <= 300
    for key in ("load_s", "importance_s", "data_s", "page_s", "build_s", "refresh_s"):
        assert report[key] >= 0, key
    assert report["refresh_interval_s"] >= 5.0
    assert report["html_mib"] > report["data_mib"] > 0  # plotly.js is in the page, not in the data
    assert Path(CHROMIUM).exists() and report["render_ms"] > 0 and report["chromium_s"] > 0
