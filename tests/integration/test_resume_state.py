"""Resume keeps every state: searcher (Optuna's study, evolution's population, the RL controller's policy) and scheduler. A seeded search killed with SIGKILL and
resumed ends with the same trials (configurations, and where each stopped) as one that ran
through. Ray's own restore drops the scheduler's state, and the decisions then differ."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from raynas.experiment import read_journal

from tests.helpers import assert_epochs_follow_lineage, raynas, write_yaml
from tests.integration.test_resume import end_process_group, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOY = Path(__file__).with_name("toy_trainable.py")


def outcome(exp_dir) -> list:
    return sorted(
        (r.status.value, r.epochs, json.dumps(r.config, sort_keys=True))
        for r in read_journal(exp_dir).values()
        if r.status.value != "lost"
    )


@pytest.mark.parametrize(
    "search, scheduler",
    [
        ({"searcher": "optuna", "max_concurrent": 1, "n_startup_trials": 4}, {"name": "asha", "reduction_factor": 2}),
        ({"searcher": "random"}, {"name": "hyperband", "reduction_factor": 2}),
        (
            {"searcher": "evolution", "max_concurrent": 1, "population_size": 4, "sample_size": 2},
            {"name": "asha", "reduction_factor": 2},
        ),
        ({"searcher": "rl", "max_concurrent": 1}, {"name": "asha", "reduction_factor": 2}),
    ],
    ids=["optuna+asha", "random+hyperband", "evolution+asha", "rl+asha"],
)
def test_resumed_search_matches_an_uninterrupted_one(tmp_path, ray_env, search, scheduler):
    shutil.copy(TOY, tmp_path / "toy_trainable.py")
    exp = write_yaml(
        tmp_path / "det.yaml",
        {
            "name": "det",
            "trainable": "toy_trainable:train",
            "metrics": ["score"],
            "space": {"x": {"float": [0, 1]}, "y": {"float": [0, 1]}},
            "search": {**search, "num_trials": 12, "seed": 3},
            "scheduler": scheduler,
            "objective": {"metric": "score", "mode": "max"},
            "max_epochs": 8,
        },
    )
    env = dict(os.environ, **ray_env, TOY_SLEEP="0.1")
    full = raynas("run", exp, "--storage-path", tmp_path / "res", "--name", "full", "--quiet", env=env)
    assert full.returncode == 0, full.stderr[-2000:]

    killed_dir = tmp_path / "res" / "killed"
    driver = subprocess.Popen(
        [sys.executable, "-m", "raynas", "run", str(exp), "--storage-path", str(tmp_path / "res"), "--name", "killed", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    try:
        wait_for(
            lambda: (killed_dir / "trials.json").exists()
            and sum(r.status.finished for r in read_journal(killed_dir).values()) >= 4,
            240, "four finished trials",
        )
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        end_process_group(driver.pid)
    assert sum(r.status.finished for r in read_journal(killed_dir).values()) < 12, "killed too late to tell"
    resumed = raynas("resume", killed_dir, "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    expected, got = outcome(tmp_path / "res" / "full"), outcome(killed_dir)
    assert len(got) == 12
    assert got == expected
    # The search really early-stopped trials, so the comparison covers scheduler decisions.
    assert any(status == "stopped" for status, _, _ in expected)


def test_pbt_survives_a_kill_and_keeps_its_population(tmp_path, ray_env):
    exp = write_yaml(
        tmp_path / "pbt.yaml",
        {
            "name": "pbt",
            "model": "mlp",
            "space": {
                "arch": {"depth": {"int": [1, 2]}, "width": {"choice": [16, 128]}},
                "train": {"lr": {"float": [1.0e-4, 3.0e-2], "log": True}, "batch_size": 32},
            },
            "search": {"searcher": "random", "num_trials": 4, "seed": 2},
            "scheduler": {"name": "pbt", "perturbation_interval": 2, "quantile_fraction": 0.5},
            "max_epochs": 10,
        },
    )
    exp_dir = tmp_path / "res" / "pbt"
    driver = subprocess.Popen(
        [sys.executable, "-m", "raynas", "run", str(exp), "--storage-path", str(tmp_path / "res"), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, **ray_env), start_new_session=True,
    )
    try:
        wait_for(
            lambda: (exp_dir / "trials.json").exists()
            and any(r.origin.get("exploits") for r in read_journal(exp_dir).values()),
            240, "a first PBT exploit",
        )
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        end_process_group(driver.pid)
    before = {tid: list(r.origin.get("exploits", [])) for tid, r in read_journal(exp_dir).items()}
    resumed = raynas("resume", exp_dir, "--quiet", env=ray_env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    journal = read_journal(exp_dir)
    assert len(journal) == 4 and all(r.status.value == "completed" for r in journal.values()), [
        (r.status.value, r.error) for r in journal.values()
    ]
    for tid, rec in journal.items():
        rows = [json.loads(line) for line in open(exp_dir / rec.dir / "result.json")]
        assert_epochs_follow_lineage(rows, 10, tid)  # the kill made no trial start over
        # Exploits recorded before the kill are still there after the resume.
        assert rec.origin.get("exploits", [])[: len(before.get(tid, []))] == before.get(tid, [])
