"""``raynas analyze --curves``: every trial's per-epoch metrics in JSON and in long CSV, checked
against the result.json files a real run wrote."""

import csv
import io
import json
from pathlib import Path

import pytest

from raynas.experiment import Status, TrialRecord, update_meta, write_journal

from tests.helpers import raynas, write_yaml

# What Ray Tune adds to each row of result.json; the trial's own metrics are the rest.
TUNE_KEYS = {
    "timestamp", "checkpoint_dir_name", "should_checkpoint", "done", "training_iteration", "trial_id", "date",
    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore",
    "iterations_since_restore", "experiment_tag",
}


def epochs_of(exp: Path, trial_dir: str) -> list[dict]:
    """A trial's epochs as its result.json has them, without Tune's keys."""
    rows = [json.loads(line) for line in (exp / trial_dir / "result.json").read_text().splitlines() if line.strip()]
    rows = [{k: v for k, v in row.items() if k not in TUNE_KEYS} for row in rows if "epoch" in row]
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    return rows


def analyze(*args) -> str:
    proc = raynas("analyze", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.ray
def test_json_curves_are_each_trials_epochs(lookup_experiment):
    exp = lookup_experiment
    plain = json.loads(analyze(exp, "--format", "json"))
    with_curves = json.loads(analyze(exp, "--format", "json", "--curves"))
    assert all("curve" not in t for t in plain)  # --format json alone is as it was
    assert [{k: v for k, v in t.items() if k != "curve"} for t in with_curves] == plain
    assert len(with_curves) == 16
    for trial in with_curves:
        assert trial["curve"] == epochs_of(exp, trial["dir"]), trial["trial_id"]
        assert len(trial["curve"]) == trial["epochs"] and trial["curve"][-1]["val_acc"] == trial["metrics"]["val_acc"]
    # ASHA stopped some trials early: their curves are shorter.
    assert {len(t["curve"]) for t in with_curves} > {4}


@pytest.mark.ray
def test_csv_curves_are_one_row_per_trial_and_epoch(lookup_experiment):
    exp = lookup_experiment
    board = json.loads(analyze(exp, "--format", "json"))
    text = analyze(exp, "--format", "csv", "--curves")
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames[:3] == ["rank", "trial_id", "epoch"]
    rows = list(reader)
    expected = []
    for trial in board:  # leaderboard order, then epochs in order
        for epoch in epochs_of(exp, trial["dir"]):
            expected.append((trial["rank"], trial["trial_id"], epoch))
    assert len(rows) == len(expected) == sum(t["epochs"] for t in board)
    metrics = set(reader.fieldnames[3:])
    assert {"val_acc", "params", "sim_time"} <= metrics
    for row, (rank, trial_id, epoch) in zip(rows, expected):
        assert (int(row["rank"]), row["trial_id"], int(row["epoch"])) == (rank, trial_id, epoch["epoch"])
        assert set(epoch) - {"epoch"} == metrics
        for key in metrics:
            # Written as Python writes the number: an int stays an int, a float reads back equal.
            assert row[key] == str(epoch[key]), (trial_id, key)


@pytest.mark.ray
def test_curves_with_top_only_those_trials(lookup_experiment):
    exp = lookup_experiment
    top = [t["trial_id"] for t in json.loads(analyze(exp, "--format", "json", "--top", "3"))]
    as_json = json.loads(analyze(exp, "--format", "json", "--top", "3", "--curves"))
    assert [t["trial_id"] for t in as_json] == top and all(t["curve"] for t in as_json)
    rows = list(csv.DictReader(io.StringIO(analyze(exp, "--format", "csv", "--top", "3", "--curves"))))
    assert list(dict.fromkeys(r["trial_id"] for r in rows)) == top


@pytest.fixture
def small_experiment(tmp_path):
    """A hand-written folder: one trial with two epochs (one without val_loss), one that never reported an epoch."""
    exp = tmp_path / "small"
    exp.mkdir()
    update_meta(exp, name="small")
    write_yaml(exp / "experiment.yaml", {"objective": {"metric": "val_acc", "mode": "max"}, "max_epochs": 2})
    (exp / "trial_a").mkdir()
    rows = [{"epoch": 1, "val_acc": 0.5, "val_loss": 1.5, "training_iteration": 1}, {"epoch": 2, "val_acc": 0.75, "training_iteration": 2}]
    (exp / "trial_a" / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_journal(exp, {
        "a": TrialRecord("a", order=1, status=Status.COMPLETED, dir="trial_a"),
        "b": TrialRecord("b", order=2, status=Status.FAILED, error="ValueError: no"),
    })
    return exp


def test_csv_curves_leave_missing_values_empty(small_experiment):
    rows = list(csv.DictReader(io.StringIO(analyze(small_experiment, "--format", "csv", "--curves"))))
    assert rows == [
        {"rank": "1", "trial_id": "a", "epoch": "1", "val_acc": "0.5", "val_loss": "1.5"},
        {"rank": "1", "trial_id": "a", "epoch": "2", "val_acc": "0.75", "val_loss": ""},
    ]
    out = json.loads(analyze(small_experiment, "--format", "json", "--curves"))
    assert [t["curve"] for t in out] == [[{"epoch": 1, "val_acc": 0.5, "val_loss": 1.5}, {"epoch": 2, "val_acc": 0.75}], []]


@pytest.mark.parametrize("args, named", [([], "--format table"), (["--pareto", "--format", "json"], "--pareto")])
def test_curves_apply_to_json_and_csv_only(small_experiment, args, named):
    proc = raynas("analyze", small_experiment, "--curves", *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("raynas: error: --curves: applies to the leaderboard's --format json and --format csv")
    assert named in proc.stderr
