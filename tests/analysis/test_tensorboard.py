"""``raynas tensorboard``: event files of a real run, read back with TensorBoard's own event
reader and served by the ``tensorboard`` command the output names."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
# TensorBoard itself (the test extra installs it) reads what raynas wrote.
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2 as hparams_api
from tensorboard.plugins.hparams import metadata as hparams_metadata

from raynas.analysis.tensorboard import MANIFEST, write_tensorboard
from raynas.errors import ConfigError
from raynas.experiment import Status, TrialRecord, update_meta, write_journal

from tests.helpers import raynas, write_yaml

# What Ray Tune adds to each row of result.json; the trial's own metrics are the rest.
TUNE_KEYS = {
    "timestamp", "checkpoint_dir_name", "should_checkpoint", "done", "training_iteration", "trial_id", "date",
    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore",
    "iterations_since_restore", "experiment_tag",
}


def read_run(run_dir: Path) -> dict:
    """A run folder as TensorBoard reads it: {tag: [(step, value, wall_time)]}, the session's
    hparams and its end status (None without an end)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    end = None
    if hparams_metadata.SESSION_END_INFO_TAG in content:
        info = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
        end = hparams_api.Status.Name(info.status)
    return {"scalars": scalars, "hparams": hparams, "end": end}


def f32(value) -> float:
    """TensorBoard keeps scalars as 32-bit floats."""
    return float(np.float32(value))


def journal(exp: Path) -> dict:
    return json.loads((exp / "trials.json").read_text())["trials"]


def result_rows(exp: Path, trial_dir: str) -> list[dict]:
    lines = (exp / trial_dir / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def written(lookup_experiment, tmp_path_factory):
    """The run's folder with ``raynas tensorboard EXP`` done once (the default logdir)."""
    proc = raynas("tensorboard", lookup_experiment)
    assert proc.returncode == 0, proc.stderr
    logdir = lookup_experiment / "tensorboard"
    assert f"View them: tensorboard --logdir {logdir}" in proc.stdout
    assert "Wrote TensorBoard files of 16 trials" in proc.stdout
    return lookup_experiment, logdir


@pytest.mark.ray
def test_every_trials_scalars_and_hparams_match_its_results(written):
    exp, logdir = written
    trials = journal(exp)
    runs = sorted(p.name for p in logdir.iterdir() if p.is_dir())
    assert runs == sorted(f"{rec['order']:04d}_{tid}" for tid, rec in trials.items())
    statuses = set()
    for tid, rec in trials.items():
        run = read_run(logdir / f"{rec['order']:04d}_{tid}")
        rows = [r for r in result_rows(exp, rec["dir"]) if "epoch" in r]
        assert rows, tid
        expected = {}
        for row in rows:
            for key, value in row.items():
                if key not in TUNE_KEYS and key != "epoch":
                    expected.setdefault(key, []).append((row["epoch"], f32(value), float(row["timestamp"])))
        best = max(rows, key=lambda r: (r["val_acc"], -r["epoch"]))  # the earliest epoch on a tie
        expected["best/val_acc"] = [(best["epoch"], f32(best["val_acc"]), float(best["timestamp"]))]
        assert {"val_acc", "params", "sim_time"} <= set(expected)
        assert run["scalars"] == expected, tid
        assert best["val_acc"] == rec["best"]
        # The HParams table: the flattened config and the status.
        assert run["hparams"] == {"arch.edge1": rec["config"]["arch"]["edge1"], "arch.edge2": rec["config"]["arch"]["edge2"],
                                  "status": rec["status"]}
        assert run["end"] == "STATUS_SUCCESS"
        statuses.add(rec["status"])
    assert statuses == {"completed", "stopped"}


def start_tensorboard(logdir: Path):
    """``tensorboard --logdir OUT`` as the output says, on a free port; returns (process, url)."""
    exe = Path(sys.executable).with_name("tensorboard")
    proc = subprocess.Popen(
        [str(exe), "--logdir", str(logdir), "--port", "0", "--host", "127.0.0.1", "--load_fast", "false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise AssertionError("tensorboard did not start: " + "".join(seen)[-2000:])


def post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.ray
def test_tensorboard_serves_the_hparams_table(written):
    exp, logdir = written
    trials = journal(exp)
    proc, url = start_tensorboard(logdir)
    try:
        deadline = time.monotonic() + 60
        while True:
            groups = post(url, "/data/plugin/hparams/session_groups", {
                "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            }).get("sessionGroups", [])
            if len(groups) == len(trials) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        experiment = post(url, "/data/plugin/hparams/experiment", {"experimentName": ""})
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    columns = {h["name"] for h in experiment["hparamInfos"]}
    assert columns == {"arch.edge1", "arch.edge2", "status"}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"best/val_acc", "val_acc", "params"} <= metrics
    by_run = {g["name"]: g for g in groups}
    assert set(by_run) == {f"{rec['order']:04d}_{tid}" for tid, rec in trials.items()}
    for tid, rec in trials.items():
        group = by_run[f"{rec['order']:04d}_{tid}"]
        assert group["hparams"] == {"arch.edge1": rec["config"]["arch"]["edge1"],
                                    "arch.edge2": rec["config"]["arch"]["edge2"], "status": rec["status"]}
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert values["best/val_acc"] == pytest.approx(rec["best"], rel=1e-6)
        assert values["val_acc"] == pytest.approx(rec["last"]["val_acc"], rel=1e-6)  # the last epoch's


def event_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if "tfevents" in p.name)


@pytest.mark.ray
def test_rerunning_replaces_its_own_files_only(lookup_experiment, tmp_path):
    out = tmp_path / "tb"
    first = raynas("tensorboard", lookup_experiment, "--logdir", out)
    assert first.returncode == 0, first.stderr
    assert f"View them: tensorboard --logdir {out}" in first.stdout
    before = event_files(out)
    assert len(before) == 16
    # Someone else's files in the logdir and in a run folder, and a run folder of a trial that is gone.
    (out / "notes.txt").write_text("mine")
    (out / "other_run").mkdir()
    (out / "other_run" / "events.out.tfevents.1.other").write_bytes(b"x")
    run = before[0].parent
    (run / "comment.txt").write_text("mine too")
    gone = out / "0099_gone"
    gone.mkdir()
    (gone / "events.out.tfevents.1.host.1.raynas").write_bytes(b"x")
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["runs"].append("0099_gone")
    (out / MANIFEST).write_text(json.dumps(manifest))

    second = raynas("tensorboard", lookup_experiment, "--logdir", out)
    assert second.returncode == 0, second.stderr
    assert "Removed the event files of 1 trial no longer in" in second.stdout
    after = [p for p in event_files(out) if p.parent.name != "other_run"]
    assert len(after) == 16 and not set(after) & set(before)  # one new file per run, the old ones gone
    assert {p.parent for p in after} == {p.parent for p in before}
    assert not gone.exists()
    assert (out / "notes.txt").read_text() == "mine" and (run / "comment.txt").read_text() == "mine too"
    assert (out / "other_run" / "events.out.tfevents.1.other").read_bytes() == b"x"
    assert json.loads((out / MANIFEST).read_text())["runs"] == sorted(p.parent.name for p in after)
    # What is there reads as one write: every run folder has each of its scalars once per step.
    scalars = read_run(run)["scalars"]
    assert all(len({step for step, _, _ in points}) == len(points) for points in scalars.values())


@pytest.mark.ray
def test_a_folder_it_did_not_write_is_bad_input(lookup_experiment, tmp_path):
    trials = journal(lookup_experiment)
    tid, rec = next(iter(trials.items()))
    out = tmp_path / "tb"
    name = f"{rec['order']:04d}_{tid}"
    (out / name).mkdir(parents=True)
    proc = raynas("tensorboard", lookup_experiment, "--logdir", out)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"raynas: error: --logdir: {out / name} exists and was not written by raynas tensorboard")
    assert [p.name for p in out.iterdir()] == [name]


def test_bad_input_exits_2(tmp_path):
    not_exp = tmp_path / "plain"
    not_exp.mkdir()
    proc = raynas("tensorboard", not_exp)
    assert proc.returncode == 2 and proc.stderr.startswith("raynas: error: ") and "not a raynas experiment folder" in proc.stderr
    proc = raynas("tensorboard", tmp_path / "missing")
    assert proc.returncode == 2 and "no such folder" in proc.stderr
    assert not any(not_exp.iterdir())

    exp = hand_written(tmp_path / "exp")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for logdir, rule in [(a_file, "is a file, not a folder;"), (a_file / "sub", "cannot write to")]:
        proc = raynas("tensorboard", exp, "--logdir", logdir)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith("raynas: error: --logdir: ") and f"{rule} " in proc.stderr and str(logdir) in proc.stderr
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        proc = raynas("tensorboard", exp, "--logdir", locked / "tb")
        assert proc.returncode == 2 and "--logdir: cannot write to" in proc.stderr


def hand_written(exp: Path) -> Path:
    """A folder as a run in progress leaves it: every kind of trial, two objectives."""
    exp.mkdir()
    update_meta(exp, name="hand")
    write_yaml(exp / "experiment.yaml", {"objective": {"metric": ["val_acc", "val_loss"], "mode": ["max", "min"]}, "max_epochs": 3})
    logs = {
        "done": [{"epoch": 1, "val_acc": 0.5, "val_loss": 2.0, "params": 100, "timestamp": 1000},
                 {"epoch": 2, "val_acc": 0.7, "val_loss": float("nan"), "params": 100, "timestamp": 1010},
                 {"epoch": 3, "val_acc": 0.7, "val_loss": 1.0, "params": 100, "timestamp": 1020, "note": "text"}],
        "running": [{"epoch": 1, "val_acc": 0.4, "val_loss": 3.0, "timestamp": 1005}],
        "rejected": [{"raynas_status": "rejected", "raynas_error": "over budget", "params": 5000, "raynas_violation": [1.0, 0, 0]}],
    }
    for tid, rows in logs.items():
        (exp / f"trial_{tid}").mkdir()
        with open(exp / f"trial_{tid}" / "result.json", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    config = {"arch": {"depth": 2, "bn": True, "act": "relu", "skip": None, "blocks": [{"k": 3}, {"k": 5}], "extra": []},
              "train": {"lr": 0.01}}
    write_journal(exp, {
        "done": TrialRecord("done", order=1, status=Status.COMPLETED, config=config, dir="trial_done"),
        "running": TrialRecord("running", order=2, status=Status.RUNNING, config=config, dir="trial_running"),
        "rejected": TrialRecord("rejected", order=3, status=Status.REJECTED, config=config, dir="trial_rejected"),
        "lost": TrialRecord("lost", order=4, status=Status.LOST, config=config),
        "waiting": TrialRecord("waiting", status=Status.PENDING, config={"arch": {"depth": 1}}),
    })
    return exp


def test_every_kind_of_trial_of_a_run_in_progress(tmp_path):
    exp = hand_written(tmp_path / "exp")
    logs = write_tensorboard(exp)
    assert logs.logdir == exp / "tensorboard"
    # The lost trial is left out, as analyze does; the one never started comes last.
    assert logs.runs == ["0001_done", "0002_running", "0003_rejected", "unstarted_waiting"]
    assert sorted(p.name for p in logs.logdir.iterdir()) == sorted([*logs.runs, MANIFEST])

    done = read_run(logs.logdir / "0001_done")
    assert done["scalars"]["val_acc"] == [(1, 0.5, 1000.0), (2, f32(0.7), 1010.0), (3, f32(0.7), 1020.0)]
    assert done["scalars"]["params"] == [(1, 100.0, 1000.0), (2, 100.0, 1010.0), (3, 100.0, 1020.0)]
    steps, values, _ = zip(*done["scalars"]["val_loss"])
    assert steps == (1, 2, 3) and values[0] == 2.0 and np.isnan(values[1]) and values[2] == 1.0
    # The best of each objective, at its (earliest) epoch; NaN is never the best.
    assert done["scalars"]["best/val_acc"] == [(2, f32(0.7), 1010.0)]
    assert done["scalars"]["best/val_loss"] == [(3, 1.0, 1020.0)]
    assert set(done["scalars"]) == {"val_acc", "val_loss", "params", "best/val_acc", "best/val_loss"}  # not "note"
    assert done["hparams"] == {"arch.depth": 2.0, "arch.bn": True, "arch.act": "relu", "arch.blocks.0.k": 3.0,
                               "arch.blocks.1.k": 5.0, "arch.extra": "[]", "train.lr": 0.01, "status": "completed"}
    assert done["end"] == "STATUS_SUCCESS"

    running = read_run(logs.logdir / "0002_running")
    assert running["scalars"]["val_acc"] == [(1, f32(0.4), 1005.0)] and running["end"] is None
    assert running["hparams"]["status"] == "running"

    # Rejected over a budget before any epoch: its measured params at step 0.
    rejected = read_run(logs.logdir / "0003_rejected")
    assert rejected["scalars"] == {"params": [(0, 5000.0, rejected["scalars"]["params"][0][2])]}
    assert rejected["end"] == "STATUS_FAILURE" and rejected["hparams"]["status"] == "rejected"

    waiting = read_run(logs.logdir / "unstarted_waiting")
    assert waiting["scalars"] == {} and waiting["hparams"] == {"arch.depth": 1.0, "status": "pending"}


def test_api_errors_name_the_logdir(tmp_path):
    exp = hand_written(tmp_path / "exp")
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError) as err:
        write_tensorboard(exp, tmp_path / "f")
    assert err.value.path == "logdir"
