"""The quickstart, run as the README says, on real Ray Tune with 2 CPUs; then analyze it."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from raynas.experiment import read_journal, read_results

from tests.helpers import QUICKSTART, raynas

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("qs")
    rt = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    began = time.monotonic()
    # Exactly the README's command: the installed console script, from a fresh folder.
    script = Path(sys.executable).with_name("raynas")
    assert script.exists(), "pip install should put the `raynas` command beside python"
    proc = subprocess.run(
        [str(script), "run", str(QUICKSTART)], cwd=cwd, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, RAY_TMPDIR=rt),
    )
    shutil.rmtree(rt, ignore_errors=True)
    elapsed = time.monotonic() - began
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"dir": cwd / "raynas_results" / "quickstart", "stdout": proc.stdout, "elapsed": elapsed}


def analyze_json(exp_dir: Path, *args) -> list[dict]:
    proc = raynas("analyze", exp_dir, "--format", "json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_quickstart_reaches_accuracy_in_time(quickstart):
    board = analyze_json(quickstart["dir"])
    assert len(board) == 24
    assert board[0]["best"] >= 0.95, board[0]
    # The issue asks for < 3 minutes on 2 cores, Ray start-up included.
    assert quickstart["elapsed"] < 180, quickstart["elapsed"]


def test_asha_stops_weak_trials_early(quickstart):
    journal = read_journal(quickstart["dir"])
    statuses = [r.status.value for r in journal.values()]
    stopped = [r for r in journal.values() if r.status.value == "stopped"]
    completed = [r for r in journal.values() if r.status.value == "completed"]
    assert len(stopped) >= 6, statuses
    assert completed, statuses
    assert all(r.epochs < 10 for r in stopped) and all(r.epochs == 10 for r in completed)
    # ASHA with grace 1 and rf 3: rungs at epochs 1, 3, 9 (stops happen only there).
    assert {r.epochs for r in stopped} <= {1, 3, 9}


def test_analyze_ranks_by_best_objective_over_epochs(quickstart):
    exp_dir = quickstart["dir"]
    board = analyze_json(exp_dir)
    journal = read_journal(exp_dir)
    expected = []
    for rec in journal.values():
        rows = read_results(exp_dir / rec.dir)
        best = max(r["val_acc"] for r in rows if "val_acc" in r)
        expected.append((-best, rec.order, rec.trial_id, best))
    expected.sort()
    assert [b["trial_id"] for b in board] == [e[2] for e in expected]
    assert [b["best"] for b in board] == pytest.approx([e[3] for e in expected])
    assert [b["rank"] for b in board] == list(range(1, 25))


def test_analyze_json_fields(quickstart):
    board = analyze_json(quickstart["dir"])
    orders = sorted(b["order"] for b in board)
    assert orders == list(range(1, 25))
    for b in board:
        assert {"rank", "trial_id", "status", "epochs", "best", "metrics", "params", "flops", "latency_ms", "config", "order"} <= set(b)
        assert set(b["config"]) == {"arch", "train"}
        assert 1 <= b["config"]["arch"]["depth"] <= 4 and b["config"]["train"]["optimizer"] == "adam"
        assert b["params"] > 0 and b["flops"] > 0 and b["latency_ms"] > 0
        assert {"train_loss", "val_loss", "val_acc", "epoch"} <= set(b["metrics"])
        assert b["metrics"]["epoch"] == b["epochs"]
    # Params follow from the architecture (depth hidden layers of width units on 64 inputs).
    for b in board:
        a = b["config"]["arch"]
        d, w = a["depth"], a["width"]
        assert b["params"] == 64 * w + w + (d - 1) * (w * w + w) + w * 10 + 10


def test_analyze_top_csv_and_table(quickstart):
    exp_dir = quickstart["dir"]
    assert len(analyze_json(exp_dir, "--top", "3")) == 3
    csv = raynas("analyze", exp_dir, "--format", "csv", "--top", "5")
    assert csv.returncode == 0
    lines = csv.stdout.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("rank,trial_id,status")
    assert "config.arch.depth" in lines[0]
    table = raynas("analyze", exp_dir)
    assert table.returncode == 0 and "ranked by best val_acc (max)" in table.stdout
    assert "depth" in table.stdout and "width" in table.stdout


def test_run_shows_a_compact_progress_log_not_ray_logs(quickstart):
    out = quickstart["stdout"]
    lines = out.splitlines()
    assert sum(1 for line in lines if line.startswith("[") and "trial #" in line) == 24
    assert "raynas analyze" in out
    assert "INFO" not in out and "Trial status" not in out
    assert len(lines) < 60, out


def test_existing_results_folder_is_never_overwritten(quickstart, tmp_path, ray_env):
    exp_dir = quickstart["dir"]
    before = {p: p.stat().st_mtime_ns for p in exp_dir.rglob("*")}
    proc = raynas("run", QUICKSTART, "--storage-path", exp_dir.parent, env=ray_env)
    assert proc.returncode == 2
    assert "exists already" in proc.stderr and f"raynas resume {exp_dir}" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in exp_dir.rglob("*")} == before
    assert not any(Path(ray_env["RAY_TMPDIR"]).iterdir()), "Ray must not start"
