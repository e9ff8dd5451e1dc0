"""Every example experiment runs (small budgets), and --dashboard serves Ray's dashboard."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import EXPERIMENTS, QUICKSTART, SHARED, raynas

pytestmark = [pytest.mark.ray, pytest.mark.slow]


# Small budgets per file; every file in experiments/ must have an entry (checked below).
SMALL = {
    "quickstart": ["search.num_trials=3", "max_epochs=2"],
    "quickstart_warm": ["search.num_trials=3", "max_epochs=2"],
    "cnn_digits": ["search.num_trials=3", "max_epochs=2"],
    "wine_csv": ["search.num_trials=2", "max_epochs=2"],
    "resnet_digits": ["search.num_trials=3", "max_epochs=2"],
    "mbconv_digits": ["search.num_trials=3", "max_epochs=2"],
    "cell_digits": ["search.num_trials=3", "max_epochs=2", "search.population_size=2", "search.sample_size=2"],
    "transformer_digits": ["search.num_trials=3", "max_epochs=2"],
    "transformer_wine": ["search.num_trials=2", "max_epochs=2"],
    "evolution_digits": ["search.num_trials=3", "max_epochs=2", "search.population_size=2", "search.sample_size=2"],
    "rl_digits": ["search.num_trials=3", "max_epochs=2"],
    "pbt_digits": ["search.num_trials=3", "max_epochs=4", "search.max_concurrent=3"],
    "pareto_digits": ["search.num_trials=4", "max_epochs=2"],
    "prescreen_digits": ["search.num_trials=3", "max_epochs=2", "search.prescreen.candidates=4"],
    "lcbench": ["search.num_trials=4", "max_epochs=3", "trainable.params.speedup=1000"],
    "lookup_tiny": ["search.num_trials=4"],
    "oneshot_digits": ["search.num_trials=4", "search.one_shot.supernet_epochs=2", "max_epochs=2"],
    "oneshot_mbconv_digits": ["search.num_trials=4", "search.one_shot.supernet_epochs=6", "max_epochs=2"],
    "oneshot_transformer_digits": ["search.num_trials=4", "search.one_shot.supernet_epochs=3", "max_epochs=2"],
    "oneshot_resnet_digits": ["search.num_trials=4", "search.one_shot.supernet_epochs=3", "max_epochs=2"],
    "oneshot_mlp_digits": ["search.num_trials=4", "search.one_shot.supernet_epochs=3", "max_epochs=2"],
    "gradient_digits": ["search.gradient.supernet_epochs=2", "max_epochs=2"],
    "gradient_mbconv_digits": ["search.gradient.supernet_epochs=2", "max_epochs=2"],
}
FILES = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))


def test_every_experiment_file_has_a_small_budget():
    assert sorted(SMALL) == FILES


@pytest.mark.parametrize("name", FILES)
def test_experiment_file_runs_through_the_console_script(tmp_path, ray_env, name):
    """As a user runs it: `raynas run FILE` in a fresh process (its own Ray), then `raynas analyze`."""
    if name == "lcbench" and not (SHARED / "data" / "yahpo" / "lcbench").is_dir():
        pytest.skip(f"the YAHPO LCBench data is not in {SHARED / 'data' / 'yahpo'}")
    overrides = [arg for value in SMALL[name] for arg in ("--set", value)]
    if name == "quickstart_warm":
        # As its comment says: the quickstart first, then this file from the same folder, which
        # finds raynas_results/quickstart there.
        first = raynas("run", QUICKSTART, "--quiet", *overrides, env=ray_env, cwd=tmp_path)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    proc = raynas("run", EXPERIMENTS / f"{name}.yaml", "--storage-path", tmp_path, "--quiet", *overrides, env=ray_env,
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if name == "quickstart_warm":
        assert f"warm start from {tmp_path / 'raynas_results' / 'quickstart'}: 3 trials (3 as they were" in proc.stdout
        assert "optuna: 3 earlier trials added to the study" in proc.stdout
    assert "Token authentication" not in proc.stdout + proc.stderr  # Ray's notice stays out of the view
    folder = tmp_path / name
    board = raynas("analyze", folder, "--format", "json")
    assert board.returncode == 0, board.stderr
    trials = json.loads(board.stdout)
    # A gradient search trains the one cell it derives.
    expected = int(next((v for v in SMALL[name] if v.startswith("search.num_trials=")), "=1").split("=")[1])
    assert len(trials) == expected
    # A budget may reject an architecture before it trains; nothing fails.
    assert all(t["status"] in ("completed", "stopped", "rejected") for t in trials), [(t["status"], t["error"]) for t in trials]
    assert trials[0]["best"] > 0.3  # 10 classes on digits: chance is 0.1
    if trials[0]["flops"] is not None:
        assert trials[0]["flops"] > 0
    if name == "quickstart_warm":
        assert [t["origin"]["how"] for t in trials].count("given point 1 of 1") == 1
        given = next(t for t in trials if t["origin"]["how"] == "given point 1 of 1")
        assert given["config"]["arch"] == {"depth": 2, "width": 512, "activation": "relu", "dropout": 0.1}
    if name == "rl_digits":
        # A second search warm-started from this one: the controller starts from its policy.
        again = raynas("run", EXPERIMENTS / f"{name}.yaml", "--storage-path", tmp_path, "--quiet", "--name", "again",
                       *overrides, "--set", f"search.warm_start=[{folder}]", env=ray_env, cwd=tmp_path)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert f"rl: starts from the policy of {name} (3 updates, with its baseline and reward scale)" in again.stdout
        assert "rl: the 3 earlier trials are in the policy it started from" in again.stdout
    if name == "prescreen_digits":
        # Each trained trial was the best of 4 by naswot, recorded as a metric too; 9 were screened out.
        assert all(t["origin"]["prescreen"].startswith("naswot ") for t in trials)
        assert all(isinstance(t["metrics"].get("naswot"), float) for t in trials)
        screened = json.loads((folder / "screened.json").read_text())
        assert screened["proxy"] == "naswot" and len(screened["screened"]) == 9
        table = raynas("analyze", folder)
        assert "prescreen: 9 candidates screened out by naswot without training" in table.stdout, table.stdout
    if name == "gradient_mbconv_digits":
        # The network the DARTS supernet derived trained as the one trial, and is a point of the file's space.
        assert trials[0]["origin"] == {"searcher": "gradient", "how": "network derived after 2 supernet epochs",
                                       "parent": None}
        import yaml

        from raynas.spec import spec_from_dict

        raw = yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text())
        raw["search"] = {"num_trials": 1, "points": [{"arch": trials[0]["config"]["arch"]}]}
        spec_from_dict(raw)
        assert "gradient: the network was derived from the supernet's architecture weights after 2 epochs" in raynas(
            "analyze", folder).stdout
    if name == "pareto_digits":
        front = raynas("analyze", folder, "--pareto", "--format", "json")
        assert front.returncode == 0, front.stderr
        assert json.loads(front.stdout)["front"]


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
