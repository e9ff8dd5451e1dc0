"""A driver killed with SIGKILL mid-run is resumed with `raynas resume` and finishes exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raynas.durable import snapshot_dir
from raynas.experiment import read_journal

from tests.helpers import CONSOLE_SCRIPT, raynas, write_yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NUM_TRIALS, EPOCHS = 8, 12


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def end_process_group(pgid: int) -> None:
    """Ends what is left of the process group this test started (Ray's agents outlive a
    SIGKILLed driver); nothing else is touched."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def snapshot(exp_dir):
    journal = read_journal(exp_dir)
    return {tid: r for tid, r in journal.items()}


def saved_tune_trials(exp_dir):
    """Trial ids in the Tune state a resume starts from (raynas's consistent copy), or None."""
    folder = snapshot_dir(exp_dir)
    files = sorted(Path(folder).glob("experiment_state-*.json")) if folder else []
    if not files:
        return None
    try:
        state = json.loads(files[-1].read_text())
    except (OSError, ValueError):  # being replaced right now
        return None
    return {json.loads(entry[0])["trial_id"] for entry in state["trial_data"]}


def test_sigkill_then_resume_finishes_every_trial_once(tmp_path, ray_env):
    exp = write_yaml(
        tmp_path / "crash.yaml",
        {
            "name": "crash",
            "model": "mlp",
            "space": {
                "arch": {"depth": {"int": [1, 3]}, "width": {"choice": [128, 256]}},
                "train": {"lr": {"float": [1.0e-3, 1.0e-2], "log": True}, "batch_size": 32},
            },
            "search": {"searcher": "random", "num_trials": NUM_TRIALS, "seed": 3},
            "max_epochs": EPOCHS,
        },
    )
    res = tmp_path / "res"
    exp_dir = res / "crash"
    env = dict(os.environ, **ray_env, PYTHONUNBUFFERED="1")
    driver = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "run", str(exp), "--storage-path", str(res)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: the test can end exactly what it started
    )
    try:
        def mid_run():
            if not (exp_dir / "trials.json").exists():
                return None
            records = snapshot(exp_dir).values()
            done = [r for r in records if r.status.value == "completed"]
            running = [r for r in records if r.status.value == "running" and r.epochs >= 1]
            # Finished trials leave Tune's state after a snapshot (the journal keeps them):
            # the resume must start from a state that no longer lists one.
            saved = saved_tune_trials(exp_dir)
            released = saved is not None and any(r.trial_id not in saved for r in done)
            return len(done) >= 2 and running and released

        wait_for(mid_run, 240, "two finished trials, one released from Tune's state, and one mid-way")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        end_process_group(driver.pid)
    before = snapshot(exp_dir)
    finished_before = {tid: r for tid, r in before.items() if r.status.value == "completed"}
    results_before = {tid: (exp_dir / r.dir / "result.json").read_bytes() for tid, r in finished_before.items()}
    assert len(finished_before) < NUM_TRIALS

    proc = raynas("resume", exp_dir, env=ray_env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    after = snapshot(exp_dir)
    live = {tid: r for tid, r in after.items() if r.status.value != "lost"}
    assert len(live) == NUM_TRIALS, {t: r.status.value for t, r in after.items()}
    assert all(r.status.value == "completed" and r.epochs == EPOCHS for r in live.values())
    # Finished trials were not run again: same trial, same results, byte for byte.
    for tid, data in results_before.items():
        assert after[tid].status.value == "completed"
        assert (exp_dir / after[tid].dir / "result.json").read_bytes() == data
    # Every trial reported each epoch exactly once (an interrupted one went on from its checkpoint).
    for r in live.values():
        epochs = [json.loads(line).get("epoch") for line in open(exp_dir / r.dir / "result.json") if line.strip()]
        assert epochs == list(range(1, EPOCHS + 1)), (r.trial_id, epochs)
    # Start order is kept across the resume and keeps counting (a trial lost to the crash,
    # if any, keeps the number it had).
    orders = [r.order for r in after.values()]
    assert None not in orders and sorted(orders) == list(range(1, len(after) + 1))
    for tid, r in before.items():
        if r.order is not None:
            assert after[tid].order == r.order
    board = json.loads(raynas("analyze", exp_dir, "--format", "json").stdout)
    assert len(board) == NUM_TRIALS and {b["trial_id"] for b in board} == set(live)
    meta = json.loads((exp_dir / "raynas.json").read_text())
    assert meta["status"] == "finished"
    # Tune restarts a resumed trial's training_iteration from the snapshot's checkpoint; the
    # log counts on, so readers that follow it never see it go back.
    for r in live.values():
        rows = [json.loads(line) for line in open(exp_dir / r.dir / "result.json") if line.strip()]
        assert [row["training_iteration"] for row in rows] == list(range(1, EPOCHS + 1)), r.trial_id
    # Resuming a finished experiment says so, changes nothing and starts no Ray.
    sessions = sorted(Path(ray_env["RAY_TMPDIR"]).rglob("session_2*"))
    state = {p: p.stat().st_mtime_ns for p in exp_dir.rglob("*")}
    again = raynas("resume", exp_dir, env=ray_env)
    assert again.returncode == 0 and "finished already; nothing to resume" in again.stdout, again.stdout + again.stderr
    assert sorted(Path(ray_env["RAY_TMPDIR"]).rglob("session_2*")) == sessions
    assert {p: p.stat().st_mtime_ns for p in exp_dir.rglob("*")} == state


def test_resume_refuses_a_folder_that_is_not_an_experiment(tmp_path, ray_env):
    proc = raynas("resume", tmp_path, env=ray_env)
    assert proc.returncode == 2
    assert "is not a raynas experiment folder" in proc.stderr
    assert not any(os.scandir(ray_env["RAY_TMPDIR"]))


def test_a_trial_whose_worker_dies_is_retried_from_its_checkpoint(tmp_path, ray_env):
    epochs = 25  # about 5 s a trial: the poll below sees one mid-way, and the kill lands before it ends
    exp = write_yaml(
        tmp_path / "retry.yaml",
        {
            "name": "retry",
            "model": "mlp",
            "space": {"arch": {"depth": 2, "width": {"choice": [256, 512]}}, "train": {"lr": 0.003, "batch_size": 32}},
            "search": {"searcher": "grid", "max_concurrent": 1},
            "max_epochs": epochs,
            "trainer": {"max_failures": 1},
        },
    )
    exp_dir = tmp_path / "res" / "retry"
    driver = subprocess.Popen(
        [sys.executable, "-m", "raynas", "run", str(exp), "--storage-path", str(tmp_path / "res")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, **ray_env), start_new_session=True,
    )
    try:
        def worker_mid_trial():
            for log in exp_dir.glob("trial_*/result.json"):
                rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
                if len(rows) >= 3 and rows[-1]["epoch"] < epochs:
                    return log.parent.name, rows[-1]["pid"]
            return None

        victim, pid = wait_for(worker_mid_trial, 240, "a trial three epochs in")
        os.kill(pid, signal.SIGKILL)  # the trial's worker process, started by this run
        out, _ = driver.communicate(timeout=300)
    finally:
        end_process_group(driver.pid)
    assert driver.returncode == 0, out[-3000:]
    journal = read_journal(exp_dir)
    assert all(r.status.value == "completed" for r in journal.values()), [(r.status.value, r.error) for r in journal.values()]
    rows = [json.loads(line) for line in (exp_dir / victim / "result.json").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert len({r["pid"] for r in rows}) == 2, "the retry ran in a new worker"


def test_ctrl_c_stops_gracefully_and_resume_finishes(tmp_path, ray_env):
    exp = write_yaml(
        tmp_path / "ctrlc.yaml",
        {
            "name": "ctrlc",
            "model": "mlp",
            "space": {"arch": {"depth": 2, "width": {"choice": [128, 256, 512]}}, "train": {"lr": 0.003, "batch_size": 32}},
            "search": {"searcher": "grid", "max_concurrent": 1},
            "max_epochs": 15,  # trials of a few seconds: Ctrl+C lands with one still to run
        },
    )
    exp_dir = tmp_path / "res" / "ctrlc"
    driver = subprocess.Popen(
        [sys.executable, "-m", "raynas", "run", str(exp), "--storage-path", str(tmp_path / "res")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, **ray_env),
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (exp_dir / "trials.json").exists()
            and any(r.status.value == "completed" for r in read_journal(exp_dir).values()),
            240, "a finished trial",
        )
        os.kill(driver.pid, signal.SIGINT)
        out, err = driver.communicate(timeout=120)
    finally:
        end_process_group(driver.pid)
    assert driver.returncode == 130, (out[-2000:], err[-2000:])
    assert f"raynas resume {exp_dir}" in err
    assert json.loads((exp_dir / "raynas.json").read_text())["status"] == "interrupted"

    proc = raynas("resume", exp_dir, env=ray_env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    journal = read_journal(exp_dir)
    live = [r for r in journal.values() if r.status.value != "lost"]
    assert len(live) == 3 and all(r.status.value == "completed" for r in live)
    for r in live:
        assert [json.loads(line)["epoch"] for line in open(exp_dir / r.dir / "result.json")] == list(range(1, 16))


def test_a_state_tune_cannot_restore_fails_the_resume_and_runs_nothing(tmp_path, ray_env):
    """Tune's own restore, on an error, starts the search again in the same folder; raynas
    stops with the reason instead (exit 1), before any trial, and leaves the results alone."""
    toy = Path(__file__).with_name("toy_trainable.py")
    (tmp_path / "toy_trainable.py").write_text(toy.read_text())
    exp = write_yaml(
        tmp_path / "broken.yaml",
        {
            "name": "broken", "trainable": "toy_trainable:train", "metrics": ["score"],
            "space": {"x": {"float": [0, 1]}, "y": {"float": [0, 1]}},
            "search": {"searcher": "random", "num_trials": 2, "seed": 0, "max_concurrent": 1},
            "objective": {"metric": "score", "mode": "max"}, "max_epochs": 2,
        },
    )
    env = dict(os.environ, **ray_env, TOY_SLEEP="0.01")
    first = raynas("run", exp, "--storage-path", tmp_path / "res", "--quiet", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    exp_dir = tmp_path / "res" / "broken"
    # A saved state Tune's restore fails on: an experiment state that lists no trial (Tune
    # takes its staging folder from the first one listed).
    for folder in (exp_dir, Path(snapshot_dir(exp_dir))):
        for state in folder.glob("experiment_state-*.json"):
            state.write_text(json.dumps({"trial_data": [], "runner_data": {}, "stats": {}}))
    (exp_dir / "raynas.json").write_text(
        json.dumps({**json.loads((exp_dir / "raynas.json").read_text()), "status": "interrupted"})
    )
    before = {p.relative_to(exp_dir): p.read_bytes() for p in exp_dir.rglob("*") if p.is_file() and p.name != "raynas.json"}

    resumed = raynas("resume", exp_dir, "--quiet", env=env)
    assert resumed.returncode == 1, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "Ray Tune could not restore the experiment's saved state" in resumed.stderr
    assert "no trial was run" in resumed.stderr
    journal = read_journal(exp_dir)
    assert len(journal) == 2 and all(r.status.value == "completed" for r in journal.values())
    after = {p.relative_to(exp_dir): p.read_bytes() for p in exp_dir.rglob("*") if p.is_file() and p.name != "raynas.json"}
    # The trials' folders and the journal are as they were (Tune may rewrite its own state files).
    assert {k: v for k, v in after.items() if k.parts[0].startswith("trial_") or k.name == "trials.json"} == {
        k: v for k, v in before.items() if k.parts[0].startswith("trial_") or k.name == "trials.json"
    }
    assert json.loads((exp_dir / "raynas.json").read_text())["status"] == "interrupted"
