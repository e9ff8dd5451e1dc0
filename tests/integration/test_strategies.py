"""Searchers, schedulers and engines on real Ray Tune, through the Python API in one Ray session."""

import json
import math

import pytest
import ray

import raynas
from raynas.experiment import read_journal, read_results
from raynas.spaces import Space

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("shared_ray")]


def run(tmp_path, raw: dict):
    spec = raynas.spec_from_dict({"name": "s", **raw})
    folder = raynas.run(spec, storage_path=str(tmp_path), progress=False)
    assert ray.is_initialized(), "raynas must not shut down a Ray it did not start"
    return folder, read_journal(folder)


def epochs_logged(folder, rec) -> list:
    return [json.loads(line).get("epoch") for line in open(folder / rec.dir / "result.json") if line.strip()]


MLP = {"depth": {"int": [1, 2]}, "width": {"choice": [16, 64]}}


def test_grid_runs_every_configuration_once(tmp_path):
    space = {"arch": {"depth": {"int": [1, 2]}, "width": {"choice": [16, 32]}}, "train": {"lr": {"choice": [0.01, 0.003]}}}
    folder, journal = run(tmp_path, {"space": space, "search": {"searcher": "grid"}, "max_epochs": 1})
    expected = sorted(json.dumps(c, sort_keys=True) for c in Space(space).grid())
    assert sorted(json.dumps(r.config, sort_keys=True) for r in journal.values()) == expected
    assert all(r.status.value == "completed" for r in journal.values())


def test_random_search_is_reproducible_for_a_seed(tmp_path):
    raw = {"space": {"arch": MLP, "train": {"lr": {"float": [1e-3, 1e-1], "log": True}}}, "search": {"num_trials": 3, "seed": 5}, "max_epochs": 1}
    configs = []
    for i in range(2):
        spec = raynas.spec_from_dict({"name": f"r{i}", **raw})
        folder = raynas.run(spec, storage_path=str(tmp_path), progress=False)
        configs.append(sorted(json.dumps(r.config, sort_keys=True) for r in read_journal(folder).values()))
    assert configs[0] == configs[1]
    expected = Space(raw["space"])
    import random

    rng = random.Random(5)
    assert sorted(json.dumps(expected.sample(rng=rng), sort_keys=True) for _ in range(3)) == configs[0]


def test_hyperband_pauses_and_resumes_trials_from_checkpoints(tmp_path):
    # max_t 3, rf 3: a bracket of 2 trials run to 3 epochs, and one of 3 trials halved at epoch 1.
    folder, journal = run(
        tmp_path,
        {
            "space": {"arch": MLP, "train": {"lr": {"float": [1e-3, 3e-2], "log": True}}},
            "search": {"searcher": "random", "num_trials": 5, "seed": 1},
            "scheduler": {"name": "hyperband", "reduction_factor": 3},
            "max_epochs": 3,
        },
    )
    statuses = sorted(r.status.value for r in journal.values())
    assert statuses.count("completed") >= 2 and statuses.count("stopped") >= 1, statuses
    for rec in journal.values():
        epochs = epochs_logged(folder, rec)
        assert epochs == list(range(1, rec.epochs + 1)), (rec.trial_id, epochs)
    # A trial continued after its pause from the checkpoint it paused with (no epoch repeated,
    # optimizer state kept): it needs an epoch 1 and an epoch 3 logged, and it did continue.
    continued = [r for r in journal.values() if r.epochs == 3]
    assert continued


def test_median_stopping_rule(tmp_path):
    folder, journal = run(
        tmp_path,
        {
            "space": {"arch": MLP, "train": {"lr": {"choice": [1e-4, 3e-2]}}},
            "search": {"searcher": "grid", "max_concurrent": 2},
            "scheduler": {"name": "median", "grace_period": 1, "min_samples_required": 2},
            "max_epochs": 4,
        },
    )
    statuses = [r.status.value for r in journal.values()]
    assert "stopped" in statuses and "completed" in statuses, statuses


def test_lightning_engine_trains_reports_and_resumes_after_a_pause(tmp_path):
    folder, journal = run(
        tmp_path,
        {
            "space": {"arch": MLP, "train": {"lr": 0.01, "lr_schedule": "cosine"}},
            "search": {"searcher": "random", "num_trials": 5, "seed": 2},
            "scheduler": {"name": "hyperband", "reduction_factor": 3},
            "trainer": {"engine": "lightning"},
            "max_epochs": 3,
        },
    )
    for rec in journal.values():
        rows = read_results(folder / rec.dir)
        assert [r["epoch"] for r in rows] == list(range(1, rec.epochs + 1))
        for row in rows:
            assert math.isfinite(row["train_loss"]) and 0 <= row["val_acc"] <= 1 and row["params"] > 0
    completed = [r for r in journal.values() if r.status.value == "completed"]
    assert completed and max(r.best for r in completed) > 0.8


def test_user_trainable_with_context(tmp_path):
    import textwrap

    (tmp_path / "my_trainable.py").write_text(
        textwrap.dedent(
            """
            from ray import tune

            def train(config, context):
                assert context.max_epochs == 3 and context.metric == "score"
                assert context.data is not None and context.data.num_classes == 10
                for epoch in range(1, context.max_epochs + 1):
                    tune.report({"epoch": epoch, "score": -(config["x"] - 3) ** 2 + epoch})
            """
        )
    )
    spec = raynas.spec_from_dict(
        {
            "name": "own",
            "trainable": "my_trainable:train",
            "data": {"source": "digits"},
            "metrics": ["score"],
            "space": {"x": {"int": [0, 5]}},
            "search": {"searcher": "grid"},
            "objective": {"metric": "score", "mode": "max"},
            "max_epochs": 3,
        },
        base_dir=str(tmp_path),
    )
    # A Ray started by the caller ships nothing: workers find the module in the experiment's folder.
    folder = raynas.run(spec, storage_path=str(tmp_path / "res"), progress=False)
    results = raynas.load_results(folder)
    board = results.leaderboard()
    assert len(board) == 6 and all(t.status.value == "completed" for t in board)
    assert board[0].config == {"x": 3} and board[0].best == 3
