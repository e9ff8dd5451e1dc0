"""A one-shot search on real Ray through the console script: killed with SIGKILL while the supernet
trains and again while subnets are scored, it resumes each stage where it stopped."""

import json
import os
import signal
import subprocess
import sys

import pytest

from raynas.analysis import load_results
from raynas.experiment import read_journal, read_meta

from tests.analysis._chromium import Page
from tests.analysis.test_report import RENDERED
from tests.helpers import raynas, write_yaml
from tests.integration.test_resume import end_process_group, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

OPS = ["none", "skip", "conv1x1", "conv3x3", "avgpool3x3"]


def cell_experiment(tmp_path, name: str, search: dict):
    """A 3-node cell space on digits (125 cells), small and quick, with the given search section."""
    return write_yaml(tmp_path / f"{name}.yaml", {
        "name": name,
        "data": {"source": "digits", "seed": 0},
        "model": "cell",
        "space": {"arch": {"edges": {e: {"choice": OPS} for e in ("0-1", "0-2", "1-2")}, "nodes": 3,
                           "channels": 8, "stages": 2, "cells_per_stage": 1},
                  "train": {"lr": 0.003, "batch_size": 64}},
        "search": search,
        "max_epochs": 2,
    })


def kill_when(args, env, condition, what):
    """Starts ``raynas ARGS`` and kills its whole session with SIGKILL once ``condition`` holds."""
    driver = subprocess.Popen([sys.executable, "-m", "raynas", *args, "--quiet"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        wait_for(condition, 240, what)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        end_process_group(driver.pid)


def epochs_reported(folder):
    if not (folder / "trials.json").exists():
        return 0
    return max((r.epochs for r in read_journal(folder).values()), default=0)


def test_a_one_shot_search_resumes_each_stage_after_sigkill(tmp_path, ray_env):
    # Scoring a subnet takes a few hundredths of a second: 40 of them leave the second kill, two
    # scores in, time to land however late the poll sees the journal.
    exp = cell_experiment(tmp_path, "os", {"strategy": "one-shot", "num_trials": 40, "max_concurrent": 1, "seed": 0,
                                           "population_size": 4, "sample_size": 2, "one_shot": {"supernet_epochs": 40}})
    folder, supernet = tmp_path / "res" / "os", tmp_path / "res" / "os" / "supernet"
    env = dict(os.environ, **ray_env)
    kill_when(["run", str(exp), "--storage-path", str(tmp_path / "res")], env,
              lambda: epochs_reported(supernet) >= 3, "three supernet epochs")
    assert epochs_reported(supernet) < 40, "killed too late to tell"
    assert not (folder / "tuner.pkl").exists()  # the subnet stage had not started

    kill_when(["resume", str(folder)], env,
              lambda: (folder / "trials.json").exists()
              and sum(r.status.finished for r in read_journal(folder).values()) >= 2, "two scored subnets")
    assert read_meta(supernet)["status"] == "finished"
    assert sum(r.status.finished for r in read_journal(folder).values()) < 40, "killed too late to tell"

    resumed = raynas("resume", folder, "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    # The supernet trained once: one trial, its 40 epochs in order, none trained twice.
    sup = load_results(supernet).trials
    assert len(sup) == 1 and sup[0].status.value == "completed"
    assert [r["epoch"] for r in sup[0].curve] == list(range(1, 41))
    board = json.loads(raynas("analyze", folder, "--format", "json").stdout)
    scored = [t for t in board if t["status"] != "lost"]
    assert len(scored) == 40 and all(t["status"] == "completed" and t["epochs"] == 1 for t in scored)
    assert all(t["metrics"]["params"] > 0 for t in scored)
    for t in scored:  # a cell whose output node (2) gets nothing scores chance; every other one learnt
        e = t["config"]["arch"]["edges"]
        cut_off = e["0-2"] == "none" and "none" in (e["0-1"], e["1-2"])
        assert (t["best"] < 0.2) if cut_off else (0.5 < t["best"] <= 1.0), (e, t["best"])
    # Evolution proposed the later ones from the scores of the first.
    assert any(t["origin"]["how"] != "random" for t in scored), [t["origin"] for t in scored]
    text = raynas("analyze", folder).stdout
    assert "one-shot: val_acc is each subnet's score with the supernet's weights" in text
    assert "supernet 40 epochs" in text
    # The report says it too, in a real browser.
    report = raynas("report", folder, "-o", tmp_path / "os.html")
    assert report.returncode == 0, report.stderr
    with Page((tmp_path / "os.html").as_uri()) as page:
        page.wait_for(RENDERED)
        assert page.evaluate("window.RAYNAS_ERRORS") == []
        summary = page.evaluate("document.getElementById('summary').textContent")
        assert "one-shot: val_acc is each subnet's score" in summary and "supernet 40 epochs" in summary


def test_a_data_parallel_supernet_trains_on_ray_train_workers_and_resumes_after_sigkill(tmp_path, ray_env):
    """``resources.workers_per_trial: 2``: the supernet trains on two Ray Train workers (half a CPU
    each: this machine's Ray has 2 CPUs), in step, and a SIGKILL leaves it to go on from its
    last checkpoint."""
    import yaml

    exp = cell_experiment(tmp_path, "dp", {"strategy": "one-shot", "num_trials": 3, "seed": 0, "population_size": 2,
                                           "sample_size": 2, "one_shot": {"supernet_epochs": 20}})
    raw = yaml.safe_load(exp.read_text())
    raw["resources"] = {"cpus_per_trial": 0.5, "workers_per_trial": 2}
    raw["data"]["test_fraction"] = 0.2  # for the retrain at the end
    exp = write_yaml(exp, raw)
    folder, supernet = tmp_path / "res" / "dp", tmp_path / "res" / "dp" / "supernet"
    env = dict(os.environ, **ray_env)
    kill_when(["run", str(exp), "--storage-path", str(tmp_path / "res")], env,
              lambda: epochs_reported(supernet) >= 3, "three supernet epochs")
    assert epochs_reported(supernet) < 20, "killed too late to tell"

    resumed = raynas("resume", folder, "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    sup = load_results(supernet).trials
    assert len(sup) == 1 and sup[0].status.value == "completed"
    rows = sup[0].curve
    assert [r["epoch"] for r in rows] == list(range(1, 21))  # went on from its checkpoint, nothing twice
    # Every epoch ran on both workers, whose weights stayed exactly in step.
    assert {r["workers"] for r in rows} == {2} and {r["worker_weight_spread"] for r in rows} == {0.0}
    # It learnt (its val_acc is one drawn path's with shared batch norm: a noisy signal).
    assert rows[-1]["train_loss"] < 0.8 * rows[0]["train_loss"]
    board = json.loads(raynas("analyze", folder, "--format", "json").stdout)
    assert len(board) == 3 and all(t["status"] == "completed" for t in board)
    text = raynas("analyze", folder).stdout
    assert "supernet 20 epochs in" in text and " on 2 workers (" in text
    # The winner is retrained as an ordinary trial: the workers were the supernet's.
    retrained = raynas("retrain", folder, "--top", "1", "--seeds", "1", "--epochs", "1", "--quiet", env=env)
    assert retrained.returncode == 0, retrained.stdout[-2000:] + retrained.stderr[-2000:]
    (trial,) = load_results(folder / "retrain").trials
    assert trial.status.value == "completed" and trial.best is not None


def test_a_gradient_search_trains_the_cell_its_supernet_derived(tmp_path, ray_env):
    exp = cell_experiment(tmp_path, "g", {"strategy": "gradient", "seed": 0, "gradient": {"supernet_epochs": 4, "max_skip": 1}})
    proc = raynas("run", exp, "--storage-path", tmp_path / "res", "--quiet", env=dict(os.environ, **ray_env))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    folder = tmp_path / "res" / "g"
    supernet = load_results(folder / "supernet").trials
    rows = supernet[0].curve
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    derived = json.loads(rows[-1]["derived_arch"])
    assert all(r["skip_edges_kept"] <= 1 for r in rows)
    assert "none" not in derived["edges"].values() and list(derived["edges"].values()).count("skip") <= 1
    trials = load_results(folder).trials
    assert len(trials) == 1 and trials[0].status.value == "completed" and trials[0].epochs == 2
    assert trials[0].config["arch"] == derived
    assert trials[0].origin == {"searcher": "gradient", "how": "cell derived after 4 supernet epochs", "parent": None}
    assert "gradient: the cell was derived from the supernet's architecture weights after 4 epochs" in raynas(
        "analyze", folder).stdout


def test_an_mbconv_one_shot_search_scores_subnets_of_its_sliced_supernet(tmp_path, ray_env):
    block = {"op": {"choice": ["identity", "mbconv"]}, "expansion": {"choice": [1, 3], "when": {"op": "mbconv"}},
             "kernel": {"choice": [3, 5], "when": {"op": "mbconv"}}}
    exp = write_yaml(tmp_path / "mb.yaml", {
        "name": "mb",
        "data": {"source": "digits", "seed": 0},
        "model": "mbconv",
        "space": {"arch": {"stem_channels": 8, "stages": [
                      {"channels": {"choice": [8, 12]}, "layers": {"repeat": {"min": 1, "max": 2}, "block": block}},
                      {"channels": 16, "stride": 2, "layers": {"repeat": {"min": 0, "max": 2}, "block": block}}]},
                  "train": {"lr": 0.003, "batch_size": 64}},
        "search": {"strategy": "one-shot", "num_trials": 4, "seed": 0, "population_size": 2, "sample_size": 2,
                   "one_shot": {"supernet_epochs": 2}},
        "max_epochs": 2,
    })
    proc = raynas("run", exp, "--storage-path", tmp_path / "res", "--quiet", env=dict(os.environ, **ray_env))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    folder = tmp_path / "res" / "mb"
    sup = load_results(folder / "supernet").trials
    assert len(sup) == 1 and [r["epoch"] for r in sup[0].curve] == [1, 2]
    board = json.loads(raynas("analyze", folder, "--format", "json").stdout)
    assert len(board) == 4 and all(t["status"] == "completed" and t["epochs"] == 1 for t in board), board
    assert all(0.0 < t["best"] <= 1.0 and t["metrics"]["params"] > 0 for t in board)
    assert all(len(t["config"]["arch"]["stages"]) == 2 for t in board)
    assert "one-shot: val_acc is each subnet's score with the supernet's weights" in raynas("analyze", folder).stdout


def test_a_transformer_one_shot_search_scores_subnets_of_its_sliced_supernet_and_retrains_the_best(tmp_path, ray_env):
    exp = write_yaml(tmp_path / "tf.yaml", {
        "name": "tf",
        "data": {"source": "digits", "seed": 0, "test_fraction": 0.2},  # retrain scores on the test split
        "model": "transformer",
        "space": {"arch": {"patch_size": 4, "width": {"choice": [16, 32]}, "blocks": {
                      "repeat": {"min": 1, "max": 2},
                      "block": {"heads": {"choice": [1, 2, 4]}, "mlp_ratio": {"choice": [1, 2]}}}},
                  "train": {"lr": 0.003, "batch_size": 64}},
        "search": {"strategy": "one-shot", "num_trials": 4, "seed": 0, "population_size": 2, "sample_size": 2,
                   "one_shot": {"supernet_epochs": 2}},
        "max_epochs": 2,
    })
    env = dict(os.environ, **ray_env)
    proc = raynas("run", exp, "--storage-path", tmp_path / "res", "--quiet", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    folder = tmp_path / "res" / "tf"
    sup = load_results(folder / "supernet").trials
    assert len(sup) == 1 and [r["epoch"] for r in sup[0].curve] == [1, 2]
    board = json.loads(raynas("analyze", folder, "--format", "json").stdout)
    assert len(board) == 4 and all(t["status"] == "completed" and t["epochs"] == 1 for t in board), board
    assert all(0.0 < t["best"] <= 1.0 and t["metrics"]["params"] > 0 for t in board)
    assert all(t["config"]["arch"]["width"] in (16, 32) for t in board)
    # The best subnet trains from scratch as an ordinary transformer trial.
    proc = raynas("retrain", folder, "--top", "1", "--seeds", "1", "--epochs", "1", "--quiet", "--no-report", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    retrained = load_results(folder / "retrain").trials
    assert len(retrained) == 1 and retrained[0].status.value == "completed"
    assert retrained[0].config["arch"] == max(board, key=lambda t: t["best"])["config"]["arch"]
