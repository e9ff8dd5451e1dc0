"""Every example experiment runs (small budgets), and --dashboard serves Ray's dashboard."""

import os
import subprocess
import sys
import time
import urllib.request

import pytest
import ray

import raynas
from raynas.experiment import read_journal

from tests.helpers import EXPERIMENTS, QUICKSTART

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("cnn_digits", []),
        ("resnet_digits", []),
        ("mbconv_digits", []),
        ("evolution_digits", ["search.population_size=2", "search.sample_size=2"]),
        ("pbt_digits", ["max_epochs=4", "search.max_concurrent=3"]),
        ("pareto_digits", []),
    ],
)
def test_example_experiment_runs(shared_ray, tmp_path, name, overrides):
    folder = raynas.run(
        str(EXPERIMENTS / f"{name}.yaml"),
        overrides=["search.num_trials=3", "max_epochs=2"] + overrides,
        storage_path=str(tmp_path),
        progress=False,
    )
    journal = read_journal(folder)
    assert len(journal) == 3
    # A budget may reject an architecture before it trains; nothing fails.
    assert all(r.status.value in ("completed", "stopped", "rejected") for r in journal.values()), [
        (r.status.value, r.error) for r in journal.values()
    ]
    best = raynas.load_results(folder).best()
    assert best.best > 0.3 and best.flops > 0  # 10 classes: chance is 0.1


def test_dashboard_is_served_while_the_search_runs(tmp_path, ray_env):
    env = dict(os.environ, **ray_env, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raynas", "run", str(QUICKSTART), "--dashboard", "--storage-path", str(tmp_path),
         "--set", "search.num_trials=6", "--set", "max_epochs=6"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        line = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "Ray dashboard" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "raynas exited before printing the dashboard address"
        assert line.startswith("Ray dashboard: http://127.0.0.1:"), line
        url = line.split()[2]
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        if "sign in" in line:
            assert "~/.ray/auth_token" in line
    finally:
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:]


def test_run_on_a_terminal_redraws_the_table_in_place(tmp_path, ray_env):
    import pty

    master, slave = pty.openpty()
    env = dict(os.environ, **ray_env, TERM="xterm")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raynas", "run", str(QUICKSTART), "--storage-path", str(tmp_path),
         "--set", "search.num_trials=4", "--set", "max_epochs=3"],
        stdout=slave, stderr=slave, env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(master)
    out = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, out[-2000:]
    assert "\x1b[" in out and "F\x1b[J" in out, "the table should be redrawn in place"
    assert "quickstart · 4/4 done" in out
    assert "[1/4] trial" not in out  # the per-trial log lines are for non-terminals
