"""Experiment files: defaults, overrides, and one clear message per broken rule."""

import copy
import os

import pytest

from raynas.spec import apply_overrides, load_spec, spec_from_dict
from raynas.errors import ConfigError

from tests.helpers import QUICKSTART, write_yaml

BASE = {
    "name": "t",
    "data": {"source": "digits"},
    "model": "mlp",
    "space": {"arch": {"depth": {"int": [1, 2]}, "width": 16}, "train": {"lr": 0.01}},
    "search": {"searcher": "random", "num_trials": 2},
    "max_epochs": 2,
}


def with_change(path: str, value):
    raw = copy.deepcopy(BASE)
    node = raw
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    if value is DELETE:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return raw


DELETE = object()


def test_quickstart_loads_with_the_issue_values():
    spec = load_spec(QUICKSTART)
    assert spec.name == "quickstart"
    assert spec.search.searcher == "optuna" and spec.num_trials == 24 and spec.search.max_concurrent == 2
    assert spec.scheduler.name == "asha" and spec.scheduler.options["grace_period"] == 1
    assert spec.scheduler.options["reduction_factor"] == 3 and spec.scheduler.options["max_t"] == 10
    assert spec.objective.metric == "val_acc" and spec.objective.mode.value == "max"
    assert spec.resources.cpus_per_trial == 1 and spec.resources.gpus_per_trial == 0
    assert spec.data.source == "digits" and spec.data.val_fraction == 0.2
    assert spec.model == "mlp" and spec.max_epochs == 10


def test_defaults():
    spec = spec_from_dict({"space": {"arch": {"depth": 1}}})
    assert spec.model == "mlp" and spec.data.source == "digits"
    assert spec.search.searcher == "random" and spec.scheduler.name == "fifo"
    assert spec.objective.metric == "val_acc" and spec.max_epochs == 10
    assert spec.trainer.engine.value == "fast" and spec.trainer.checkpoint_every == 1


def test_overrides_parse_yaml_values_and_create_keys():
    raw = apply_overrides(BASE, ["search.num_trials=5", "space.train.lr=1e-3", "scheduler.name=asha", "data.seed=3"])
    assert raw["search"]["num_trials"] == 5
    assert raw["space"]["train"]["lr"] == pytest.approx(1e-3)
    assert raw["scheduler"] == {"name": "asha"}
    assert BASE["search"]["num_trials"] == 2  # the input is not modified
    spec = load_spec(QUICKSTART, ["search.num_trials=4", "space.arch.depth={int: [1, 2]}"])
    assert spec.num_trials == 4 and spec.space.size() == float("inf")


def test_grid_num_trials_defaults_to_grid_size():
    raw = with_change("search", {"searcher": "grid"})
    assert spec_from_dict(raw).num_trials == 2
    raw["search"]["num_trials"] = 1
    assert spec_from_dict(raw).num_trials == 1


@pytest.mark.parametrize(
    "path, value, where, words",
    [
        ("serach", {"searcher": "random"}, "serach", ["unknown key", "did you mean 'search'"]),
        ("search.searcher", "bayes", "search.searcher", ["unknown searcher 'bayes'", "random, grid, optuna"]),
        ("search.searcher", "optuan", "search.searcher", ["did you mean 'optuna'"]),
        ("search.n_startup", 3, "search.n_startup", ["unknown key"]),
        ("search.num_trials", 0, "search.num_trials", [">= 1", "0"]),
        ("search.num_trials", "many", "search.num_trials", ["expected an integer", "'many'"]),
        ("scheduler", {"name": "ashha"}, "scheduler.name", ["unknown scheduler 'ashha'", "did you mean 'asha'"]),
        ("scheduler", {"name": "asha", "grace": 2}, "scheduler.grace", ["unknown key", "did you mean 'grace_period'"]),
        ("scheduler", {"name": "asha", "reduction_factor": 1}, "scheduler.reduction_factor", ["> 1"]),
        ("scheduler", {"name": "asha", "grace_period": 5}, "scheduler.grace_period", ["<= max_t", "5"]),
        ("model", "transfomer", "model", ["unknown model family 'transfomer'", "did you mean 'transformer'", "mlp"]),
        ("model", "nosuchmodule_xyz:build", "model", ["cannot import", "nosuchmodule_xyz"]),
        ("data.source", "imagenet", "data.source", ["imagenet"]),
        ("data.source", "mnist", "data.path", ["path"]),
        ("data.path", "/definitely/not/here", "data.path", ["/definitely/not/here"]),
        ("data.val_fraction", 1.5, "data.val_fraction", ["< 1", "1.5"]),
        ("objective", {"metric": "accuracy"}, "objective.metric", ["never reports 'accuracy'", "val_acc"]),
        ("objective", {"metric": "val_acc", "mode": "maximize"}, "objective.mode", ["max, min", "'maximize'"]),
        ("max_epochs", 0, "max_epochs", [">= 1"]),
        ("max_epochs", True, "max_epochs", ["integer", "True"]),
        ("resources.cpus_per_trial", 0, "resources.cpus_per_trial", ["> 0"]),
        ("resources.gpus_per_trial", 1.5, "resources.gpus_per_trial", ["whole number", "1.5"]),
        ("space.arch.depth", {"int": [4, 2]}, "space.arch.depth", ["low <= high", "low=4, high=2"]),
        ("space.arch.width", {"choice": []}, "space.arch.width.choice", ["at least one option"]),
        ("space.train.lrate", 0.1, "space.train.lrate", ["unknown key", "did you mean 'lr'"]),
        ("space.train.optimizer", "adamm", "space.train.optimizer", ["unknown optimizer 'adamm'", "did you mean 'adam'"]),
        ("space.train.optimizer", {"choice": ["adam", "sgdd"]}, "space.train.optimizer.choice.1", ["'sgdd'"]),
        ("space.archh", {}, "space.archh", ["unknown key", "did you mean 'arch'"]),
        ("space", DELETE, "space", ["needs a search space"]),
        ("trainer.engine", "turbo", "trainer.engine", ["fast, lightning", "'turbo'"]),
        ("trainer.precision", "16-mixed", "trainer.precision", ["needs a GPU", "bf16-mixed"]),
        ("name", "my run", "name", ["'my run'"]),
        ("scheduler", {"name": "hyperband"}, None, None),
        # Strategies (issue 3): unknown parameters, impossible combinations.
        ("search", {"searcher": "evolution", "population": 8}, "search.population", ["unknown key", "did you mean 'population_size'"]),
        ("search", {"searcher": "evolution", "population_size": 1}, "search.population_size", [">= 2"]),
        ("search", {"searcher": "evolution", "population_size": 3, "sample_size": 4}, "search.sample_size", ["<= population_size (3)", "4"]),
        ("search", {"searcher": "optuna", "sampler": "cmaes"}, "search.sampler", ["auto, tpe, nsga2, random", "'cmaes'"]),
        ("scheduler", {"name": "pbt", "perturbation_intervall": 2}, "scheduler.perturbation_intervall", ["did you mean 'perturbation_interval'"]),
        ("scheduler", {"name": "pbt", "quantile_fraction": 0.7}, "scheduler.quantile_fraction", ["<= 0.5", "0.7"]),
        ("scheduler", {"name": "pbt"}, "scheduler", ["searches none it can perturb"]),
        ("scheduler", {"name": "pbt", "hyperparams": ["momentum"]}, "scheduler.hyperparams.0", ["space.train has no 'momentum'"]),
        ("scheduler", {"name": "asha", "metric": "val_loss"}, "scheduler.metric", ["must be one of the objective metrics", "'val_loss'"]),
        ("objective", {"metric": ["val_acc", "params"], "mode": ["max"]}, "objective.mode", ["one of them per metric (2)", "['max']"]),
        ("constraints.max_parameters", 10, "constraints.max_parameters", ["unknown key", "did you mean 'max_params'"]),
        ("constraints.max_params", -5, "constraints.max_params", ["-5"]),
    ],
)
def test_each_broken_rule_has_one_clear_message(path, value, where, words):
    if where is None:  # a valid change (kept in the table to show the contrast)
        spec_from_dict(with_change(path, value))
        return
    with pytest.raises(ConfigError) as err:
        spec_from_dict(with_change(path, value), file="exp.yaml")
    message = str(err.value)
    assert message.startswith(f"exp.yaml: {where}:"), message
    for word in words:
        assert word in message, message


def test_grid_with_continuous_domain_names_it():
    raw = with_change("space.train.lr", {"float": [0.001, 0.1]})
    raw["search"]["searcher"] = "grid"
    with pytest.raises(ConfigError, match=r"space\.train\.lr: .*continuous"):
        spec_from_dict(raw)


def test_user_trainable_declares_metrics(tmp_path):
    (tmp_path / "mytrain.py").write_text("def train(config):\n    pass\n")
    raw = {"trainable": "mytrain:train", "space": {"x": {"int": [0, 3]}}, "objective": {"metric": "score"}}
    spec = spec_from_dict(raw, base_dir=str(tmp_path))  # undeclared metrics: checked at run time
    assert spec.data is None and spec.model is None
    raw["metrics"] = ["loss"]
    with pytest.raises(ConfigError, match=r"objective\.metric: the trainable never reports 'score'"):
        spec_from_dict(raw, base_dir=str(tmp_path))
    del raw["metrics"]
    raw["trainable"] = "mytrain:nope"
    with pytest.raises(ConfigError, match=r"trainable: cannot import 'mytrain:nope'"):
        spec_from_dict(raw, base_dir=str(tmp_path))


def test_yaml_errors_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: {arch: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_spec(bad)
    assert str(err.value).startswith(f"{bad}: line ") and "not valid YAML" in str(err.value)
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"--set: expected key\.path=value, got 'search'"):
        load_spec(QUICKSTART, ["search"])


def test_relative_data_path_resolves_against_the_file(tmp_path):
    (tmp_path / "table.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    path = write_yaml(tmp_path / "exp.yaml", with_change("data", {"source": "csv", "path": "table.csv", "target": "y"}))
    spec = load_spec(path)
    assert spec.data.path == os.path.join(str(tmp_path), "table.csv")


def test_hyperband_needs_room_for_its_largest_bracket():
    raw = with_change("scheduler", {"name": "hyperband", "reduction_factor": 3})
    raw["max_epochs"] = 9
    raw["search"]["max_concurrent"] = 2
    with pytest.raises(ConfigError) as err:
        spec_from_dict(raw)
    assert str(err.value).startswith("search.max_concurrent:")
    assert "holds 9 trials" in str(err.value) and "max_concurrent=2" in str(err.value)
    raw["search"]["max_concurrent"] = 9
    assert spec_from_dict(raw).scheduler.options["max_t"] == 9


@pytest.mark.parametrize("scheduler", ["pbt", "pb2"])
def test_synchronous_pbt_needs_its_whole_population_live(scheduler):
    from raynas.runner import _max_concurrent

    raw = with_change("scheduler", {"name": scheduler, "synch": True})
    raw["space"]["train"] = {"lr": {"float": [1e-4, 1e-1], "log": True}}
    raw["search"] = {"searcher": "random", "num_trials": 6, "max_concurrent": 2}
    with pytest.raises(ConfigError) as err:
        spec_from_dict(raw)
    assert str(err.value).startswith("search.max_concurrent:")
    assert "all 6 trials" in str(err.value) and "max_concurrent=2" in str(err.value)
    raw["search"]["max_concurrent"] = 6
    assert _max_concurrent(spec_from_dict(raw), slots=2) == 6
    # Unset: every trial may be live (the cluster still bounds the running ones)...
    del raw["search"]["max_concurrent"]
    assert _max_concurrent(spec_from_dict(raw), slots=2) is None
    # ...while asynchronous PBT runs as many as the slots hold, and any max_concurrent is fine.
    raw["scheduler"]["synch"] = False
    assert _max_concurrent(spec_from_dict(raw), slots=2) == 2
    raw["search"]["max_concurrent"] = 2
    assert _max_concurrent(spec_from_dict(raw), slots=2) == 2


def test_hyperband_bracket_arithmetic_matches_ray():
    from ray.tune.schedulers import HyperBandScheduler

    from raynas.search.rules import hyperband_largest_bracket

    for max_t, rf in [(9, 3), (10, 3), (81, 3), (100, 4), (12, 2), (5, 3), (1, 3)]:
        hb = HyperBandScheduler(max_t=max_t, reduction_factor=rf)
        expected = max(hb._get_n0(s) for s in range(hb._s_max_1) if hb._get_r0(s) > 0)
        assert hyperband_largest_bracket(max_t, rf) == expected


def test_strategy_combinations_that_cannot_work_are_refused_with_the_reason():
    multi = {"metric": ["val_acc", "params"], "mode": ["max", "min"]}
    cases = [
        ({"objective": multi, "scheduler": {"name": "asha"}}, "scheduler.metric", "has several (val_acc, params)"),
        ({"objective": multi, "scheduler": {"name": "asha", "metric": "params"}}, "scheduler.metric", "fixed by the architecture"),
        ({"objective": multi, "search": {"searcher": "evolution"}}, "search.searcher", "use optuna (multi-objective TPE)"),
        ({"objective": multi, "scheduler": {"name": "pbt"}}, "scheduler.metric", "pbt compares trials by one metric"),
        ({"search": {"searcher": "optuna"}, "scheduler": {"name": "pbt"}}, "search.searcher", "use searcher random"),
        (
            {"scheduler": {"name": "pbt"}, "trainer": {"engine": "lightning"}, "space": {"arch": {"depth": 1}, "train": {"lr": {"float": [0.001, 0.1]}}}},
            "trainer.engine",
            "pbt needs the fast engine",
        ),
    ]
    for change, where, words in cases:
        raw = {**copy.deepcopy(BASE), **change}
        with pytest.raises(ConfigError) as err:
            spec_from_dict(raw, file="exp.yaml")
        assert str(err.value).startswith(f"exp.yaml: {where}:") and words in str(err.value), (change, str(err.value))
    # The ones that can work are accepted: several metrics with fifo or a named scheduler metric.
    spec_from_dict({**copy.deepcopy(BASE), "objective": multi})
    spec_from_dict({**copy.deepcopy(BASE), "objective": multi, "scheduler": {"name": "asha", "metric": "val_acc"}})


def test_an_impossible_budget_is_refused_before_ray_starts():
    from raynas.runner import preflight

    raw = {**copy.deepcopy(BASE), "constraints": {"max_params": 100}}
    spec = spec_from_dict(raw, file="exp.yaml")  # the sizes need the data's shape
    with pytest.raises(ConfigError) as err:
        preflight(spec)
    message = str(err.value)
    assert "constraints.max_params: no architecture of the space can meet it" in message
    assert "'depth': 1" in message and "> 100" in message
    raw["constraints"] = {"max_params": 5000}  # depth 1, width 16 on 8x8 digits: ~1.2k parameters
    preflight(spec_from_dict(raw))
