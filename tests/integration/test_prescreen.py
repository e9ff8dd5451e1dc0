"""search.prescreen on real Ray through the console script: killed with SIGKILL and resumed, the
prescreen goes on (its scorer re-attached to the restored searcher) and every trained trial was
the best of its candidates."""

import json
import os
import signal
import subprocess
import sys

import pytest

from raynas.experiment import read_journal

from tests.helpers import raynas, write_yaml
from tests.integration.test_resume import end_process_group, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_prescreened_search_survives_a_kill_and_resumes(tmp_path, ray_env):
    exp = write_yaml(tmp_path / "pre.yaml", {
        "name": "pre",
        "data": {"source": "digits"},
        "model": "mlp",
        "proxies": ["snip"],
        "space": {"arch": {"depth": {"int": [1, 3]}, "width": {"choice": [16, 32, 64, 128]}}, "train": {"lr": 0.003, "batch_size": 8}},
        "search": {"searcher": "optuna", "num_trials": 8, "max_concurrent": 1, "seed": 0,
                   "prescreen": {"proxy": "snip", "candidates": 3}},
        # Small batches on all of digits make each trial last most of a second: the kill must land
        # with trials still to run, however late the poll below sees the journal.
        "max_epochs": 10,
    })
    folder = tmp_path / "res" / "pre"
    env = dict(os.environ, **ray_env)
    driver = subprocess.Popen(
        [sys.executable, "-m", "raynas", "run", str(exp), "--storage-path", str(tmp_path / "res"), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    try:
        wait_for(lambda: (folder / "trials.json").exists()
                 and sum(r.status.finished for r in read_journal(folder).values()) >= 2, 240, "two finished trials")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        end_process_group(driver.pid)
    assert sum(r.status.finished for r in read_journal(folder).values()) < 8, "killed too late to tell"
    resumed = raynas("resume", folder, "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]

    board = json.loads(raynas("analyze", folder, "--format", "json").stdout)
    trained = [t for t in board if t["status"] != "lost"]
    assert len(trained) == 8 and all(t["status"] == "completed" for t in trained)
    for t in trained:  # each one the best of 3 by snip, which it also reported as a metric
        assert t["origin"]["prescreen"].startswith("snip ") and t["origin"]["prescreen"].endswith("best of 3")
        assert float(t["origin"]["prescreen"].split()[1].rstrip(",")) == pytest.approx(t["metrics"]["snip"], rel=1e-3)
    screened = json.loads((folder / "screened.json").read_text())
    assert screened["proxy"] == "snip" and len(screened["screened"]) >= 2 * 8
    by_id = {t["trial_id"]: t for t in trained}
    matched = [e for e in screened["screened"] if e["for"] in by_id]
    assert len(matched) >= 2 * 6, (len(matched), sorted(by_id))
    for entry in matched:  # a screened-out candidate never scored above the one that trained
        assert entry["snip"] is None or entry["snip"] <= by_id[entry["for"]]["metrics"]["snip"] * (1 + 1e-6)
