"""Every registered searcher and scheduler builds from an experiment file's settings (no Ray started)."""

import pytest

import raynas
from raynas.search.registry import SCHEDULERS, SEARCHERS

SPACE = {"arch": {"depth": {"int": [1, 3]}, "width": {"choice": [16, 64]}},
         "train": {"lr": {"float": [1.0e-4, 1.0e-1], "log": True}, "batch_size": {"choice": [32, 64, 128]}}}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_builds_with_its_defaults(name):
    spec = raynas.spec_from_dict({"name": "t", "space": SPACE, "scheduler": {"name": name}, "max_epochs": 9})
    from ray.tune.schedulers import TrialScheduler

    scheduler = SCHEDULERS[name].build(spec)
    assert isinstance(scheduler, TrialScheduler)
    if name != "fifo":  # every other scheduler counts the trials' epochs, not Tune's iterations
        assert scheduler._time_attr == "epoch"


@pytest.mark.parametrize("name", ["pbt", "pb2"])
def test_population_schedulers_tune_only_training_hyperparameters(name):
    spec = raynas.spec_from_dict({"name": "t", "space": SPACE, "scheduler": {"name": name}})
    scheduler = SCHEDULERS[name].build(spec)
    # Only space.train keys: the architecture comes with the weights it is copied with.
    assert set(scheduler._hyperparam_mutations) == {"train"}
    assert set(scheduler._hyperparam_mutations["train"]) == {"lr", "batch_size"}
    # The explore hook puts any proposal back inside the space (PB2 proposes numbers in [low, high]).
    config = scheduler._custom_explore_fn({"arch": {"depth": 2}, "train": {"lr": 5.0, "batch_size": 70.3}})
    assert config["train"] == {"lr": 0.1, "batch_size": 64}


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_every_searcher_builds_with_its_defaults(name):
    spec = raynas.spec_from_dict({"name": "t", "space": SPACE if name != "grid" else {"arch": {"depth": {"int": [1, 3]}}},
                                  "search": {"searcher": name, "seed": 1}})
    searcher = SEARCHERS[name].build(spec)
    assert (searcher.metric, searcher.mode) == ("val_acc", "max")
