"""Importance of the searched keys (Optuna's evaluators over the scored trials), and
``raynas analyze --importance``, on hand-written experiment folders."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest

from raynas.analysis import load_results
from raynas.analysis.importance import EVALUATORS, MIN_TRIALS, importance
from raynas.errors import ConfigError
from raynas.experiment import Status, TrialRecord, update_meta, write_journal
from tests.helpers import raynas, write_yaml

SPACE = {
    "arch": {"width": {"choice": [16, 32, 64, 128]}, "depth": {"int": [1, 4]}, "act": {"choice": ["relu", "gelu"]}},
    "train": {"lr": {"float": [1.0e-4, 1.0e-1], "log": True}, "optimizer": "adam"},
}


def make_experiment(path, n: int, objective=None, seed: int = 0, extra=None):
    """``n`` trials whose val_acc is driven by width, a little by lr, not at all by depth or act."""
    rng = random.Random(seed)
    path.mkdir()
    update_meta(path, name=path.name, status="finished")
    write_yaml(path / "experiment.yaml", {"space": SPACE, "objective": objective or {"metric": "val_acc", "mode": "max"},
                                          "max_epochs": 2})
    records = {}
    for i in range(n):
        config = {"arch": {"width": rng.choice([16, 32, 64, 128]), "depth": rng.randint(1, 4), "act": rng.choice(["relu", "gelu"])},
                  "train": {"lr": 10 ** rng.uniform(-4, -1), "optimizer": "adam"}}
        if extra:
            config = extra(i, config)
        acc = 0.5 + 0.1 * [16, 32, 64, 128].index(config["arch"]["width"]) + 0.01 * (config["train"]["lr"] > 0.01)
        tid = f"t{i:03d}"
        d = path / f"trial_{tid}"
        d.mkdir()
        (d / "result.json").write_text("".join(
            json.dumps({"epoch": e, "val_acc": acc - 0.05 * (2 - e), "params": 100 * config["arch"]["width"]}) + "\n" for e in (1, 2)))
        records[tid] = TrialRecord(tid, order=i + 1, status=Status.COMPLETED, config=config, dir=d.name, epochs=2)
    write_journal(path, records)
    return path


def test_the_key_that_drives_the_objective_ranks_first(tmp_path):
    results = load_results(make_experiment(tmp_path / "exp", 60))
    result = importance(results)
    assert result.evaluator == "fanova" and result.trials == 60 and result.metric == "val_acc"
    assert next(iter(result.importances)) == "arch.width"
    assert result.importances["arch.width"] > 0.6
    assert set(result.importances) == {"arch.width", "arch.depth", "arch.act", "train.lr"}
    assert sum(result.importances.values()) == pytest.approx(1.0)
    assert result.left_out == {"train.optimizer": "the same value in every scored trial ('adam')"}
    assert result.notes == []
    # Seeded: the same numbers again.
    assert importance(results).importances == result.importances
    # PED-ANOVA rates what sets the best trials apart (lr, among the widest): only its keys are checked.
    for name in EVALUATORS:
        assert set(importance(results, evaluator=name).importances) == set(result.importances), name


def test_too_few_trials_constant_objective_and_conditional_keys_are_notes(tmp_path):
    few = importance(load_results(make_experiment(tmp_path / "few", MIN_TRIALS - 1)))
    assert few.importances == {} and few.trials == MIN_TRIALS - 1
    assert few.notes == [f"{MIN_TRIALS - 1} scored trial(s): importance needs at least {MIN_TRIALS}"]

    def same_width(i, config):  # width and the side of lr fixed: every trial scores the same
        config["arch"]["width"] = 64
        config["train"]["lr"] = 0.001 * (1 + i % 5)
        return config

    flat = importance(load_results(make_experiment(tmp_path / "flat", 12, extra=same_width)))
    assert flat.importances == {} and "every scored trial has the same best val_acc" in flat.notes[0]

    def blocks(i, config):  # a repeated block: its keys exist in some trials only
        config["arch"]["stages"] = [{"k": 3}] * (1 + i % 2)
        return config

    cond = importance(load_results(make_experiment(tmp_path / "cond", 20, extra=blocks)))
    assert "arch.stages.1.k" in cond.left_out and "set in 10 of 20 scored trials" in cond.left_out["arch.stages.1.k"]
    assert next(iter(cond.importances)) == "arch.width"

    with pytest.raises(ConfigError, match="evaluator: must be one of fanova, ped-anova"):
        importance(load_results(tmp_path / "flat"), evaluator="shap")


def test_only_scored_trials_count_and_several_objectives_say_which(tmp_path):
    folder = make_experiment(tmp_path / "exp", 20, objective={"metric": ["val_acc", "params"], "mode": ["max", "min"]})
    records = load_results(folder)
    records.trials[0].status = Status.FAILED
    records.trials[1].best = None
    result = importance(records)
    assert result.trials == 18
    assert result.notes[0] == "importance of the first objective (val_acc) only"


def test_analyze_importance_formats(tmp_path):
    folder = make_experiment(tmp_path / "exp", 40)
    proc = raynas("analyze", folder, "--importance", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data == importance(load_results(folder)).to_json()
    assert next(iter(data["importances"])) == "arch.width"

    table = raynas("analyze", folder, "--importance")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "importance of each searched key for best val_acc (max): Optuna's fanova evaluator over 40 scored trials"
    assert lines[1].split()[0] == "arch.width"
    assert "not rated: train.optimizer: the same value in every scored trial ('adam')" in table.stdout

    rows = list(csv.DictReader(io.StringIO(raynas("analyze", folder, "--importance", "--format", "csv").stdout)))
    assert rows[0]["key"] == "arch.width" and float(rows[0]["importance"]) == pytest.approx(data["importances"]["arch.width"], abs=1e-4)
    assert rows[-1] == {"key": "train.optimizer", "importance": "", "left_out": "the same value in every scored trial ('adam')"}


def test_analyze_importance_bad_flags(tmp_path):
    folder = make_experiment(tmp_path / "exp", 5)
    proc = raynas("analyze", folder, "--importance", "--pareto")
    assert proc.returncode == 2 and "raynas: error: --importance: give --importance or --pareto, not both" in proc.stderr
    proc = raynas("analyze", folder, "--importance", "--top", "3")
    assert proc.returncode == 2 and "raynas: error: --top: does not apply to --importance" in proc.stderr


def test_many_trials_are_rated_on_a_seeded_sample(tmp_path):
    results = load_results(make_experiment(tmp_path / "exp", 50))
    sampled = importance(results, max_trials=30)
    assert sampled.trials == 30
    assert sampled.notes == ["on a random sample of 30 of the 50 scored trials (seed 0)"]
    assert next(iter(sampled.importances)) == "arch.width"
    assert importance(results, max_trials=30).importances == sampled.importances
    assert importance(results, max_trials=None).trials == 50
