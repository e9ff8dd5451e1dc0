"""The search-space DSL: forms, sampling, grid, size, repeat, conditions, round trips, Optuna."""

import json
import math
import random
from collections import Counter

import optuna
import pytest
import yaml

from raynas.spec import parse_yaml
from raynas.errors import ConfigError
from raynas.spaces import Choice, Fixed, Float, Int, Repeat, Space, flatten, unflatten

optuna.logging.set_verbosity(optuna.logging.WARNING)

QUICKSTART_SPACE = """
arch:
  depth: {int: [1, 4]}
  width: {choice: [32, 64, 128, 256]}
  activation: {choice: [relu, gelu]}
  dropout: {float: [0.0, 0.3]}
train:
  lr: {float: [1.0e-4, 1.0e-1], log: true}
  batch_size: {choice: [32, 64, 128]}
  optimizer: adam
"""

NAS_SPACE = """
arch:
  stages:
    repeat: {min: 1, max: 4}
    block: {channels: {choice: [16, 32, 64]}, kernel: {choice: [3, 5]}, pool: {choice: [true, false]}}
  layers: {repeat: {min: 8, max: 8}, block: {choice: [0, 1, 2]}}
  head: {hidden: {choice: [0, 64]}, norm: batch}
train:
  optimizer: {choice: [adam, sgd]}
  momentum: {float: [0.8, 0.99], when: {optimizer: sgd}}
  nesterov: {choice: [true, false], when: {optimizer: sgd}}
"""


def space(text: str) -> Space:
    return Space(parse_yaml(text))


# -- forms and sampling ----------------------------------------------------------------------


def test_quickstart_samples_are_in_range_and_json():
    s = space(QUICKSTART_SPACE)
    rng = random.Random(1)
    for _ in range(200):
        c = s.sample(rng=rng)
        assert 1 <= c["arch"]["depth"] <= 4 and isinstance(c["arch"]["depth"], int)
        assert c["arch"]["width"] in (32, 64, 128, 256)
        assert 0.0 <= c["arch"]["dropout"] <= 0.3
        assert 1e-4 <= c["train"]["lr"] <= 1e-1
        assert c["train"]["optimizer"] == "adam"
        assert json.loads(json.dumps(c)) == c


def test_sampling_is_seeded():
    s = space(NAS_SPACE)
    assert [s.sample(seed=7) for _ in range(3)] == [s.sample(seed=7) for _ in range(3)]
    assert s.sample(seed=7) != s.sample(seed=8)
    rng_a, rng_b = random.Random(3), random.Random(3)
    assert [s.sample(rng=rng_a) for _ in range(10)] == [s.sample(rng=rng_b) for _ in range(10)]


def test_int_step_and_log():
    step = Space({"x": {"int": [2, 10], "step": 2}})
    assert {step.sample(seed=i)["x"] for i in range(300)} == {2, 4, 6, 8, 10}
    assert step.size() == 5
    log = Space({"x": {"int": [1, 1000], "log": True}})
    draws = [log.sample(seed=i)["x"] for i in range(2000)]
    assert min(draws) >= 1 and max(draws) <= 1000
    # Log-uniform: about a third of the mass in each decade (1-9, 10-99, 100-999).
    decades = Counter(len(str(d)) for d in draws if d < 1000)
    assert all(500 < decades[k] < 830 for k in (1, 2, 3)), decades


def test_float_log_spreads_over_decades():
    s = Space({"lr": {"float": [1e-4, 1e-1], "log": True}})
    draws = [s.sample(seed=i)["lr"] for i in range(3000)]
    low = sum(d < 1e-3 for d in draws)
    assert 800 < low < 1200  # one decade in three


def test_yaml_reads_exponent_floats():
    # YAML 1.1 would read 1e-4 as a string; raynas reads it as a number.
    s = space("lr: {float: [1e-4, 1e-1], log: true}")
    assert s.root.items["lr"].low == pytest.approx(1e-4)


def test_plain_values_nested_dicts_and_lists_are_fixed():
    s = Space({"a": 3, "b": {"c": "x", "d": [1, 2]}, "e": {"choice": [1, 2]}})
    c = s.sample(seed=0)
    assert c["a"] == 3 and c["b"] == {"c": "x", "d": [1, 2]}


def test_explicit_value_form_keeps_domain_like_dicts():
    s = Space({"opt": {"value": {"choice": "literally"}}})
    assert s.sample(seed=0) == {"opt": {"choice": "literally"}}


def test_choice_of_subspaces():
    s = Space({"op": {"choice": ["identity", {"type": "conv", "k": {"choice": [3, 5]}}]}})
    seen = {json.dumps(s.sample(seed=i), sort_keys=True) for i in range(100)}
    assert seen == {
        json.dumps({"op": "identity"}),
        json.dumps({"op": {"k": 3, "type": "conv"}}, sort_keys=True),
        json.dumps({"op": {"k": 5, "type": "conv"}}, sort_keys=True),
    }
    assert s.size() == 3


# -- repeat ------------------------------------------------------------------------------------


def test_repeat_blocks_choose_independently_and_count_is_searched():
    s = space(NAS_SPACE)
    lengths, mixed = set(), False
    for i in range(300):
        c = s.sample(seed=i)
        stages = c["arch"]["stages"]
        lengths.add(len(stages))
        for st in stages:
            assert set(st) == {"channels", "kernel", "pool"}
        if len({st["channels"] for st in stages}) > 1:
            mixed = True
        assert len(c["arch"]["layers"]) == 8 and set(c["arch"]["layers"]) <= {0, 1, 2}
    assert lengths == {1, 2, 3, 4}
    assert mixed, "each block should draw its own choices"


def test_repeat_of_a_single_domain_samples_a_list():
    s = space("layers: {repeat: {min: 8, max: 8}, block: {choice: [0, 1, 2]}}")
    c = s.sample(seed=0)
    assert isinstance(c["layers"], list) and len(c["layers"]) == 8
    assert s.size() == 3**8


def test_repeat_size_and_grid_agree():
    s = Space({"b": Repeat(Choice([3, 5]), min=0, max=2)})
    grid = list(s.grid())
    assert s.size() == 1 + 2 + 4 == len(grid)
    assert {"b": []} in grid and {"b": [5, 3]} in grid


# -- conditions --------------------------------------------------------------------------------


def test_condition_includes_key_only_when_sibling_matches():
    s = space(NAS_SPACE)
    for i in range(200):
        train = s.sample(seed=i)["train"]
        if train["optimizer"] == "sgd":
            assert 0.8 <= train["momentum"] <= 0.99 and "nesterov" in train
        else:
            assert "momentum" not in train and "nesterov" not in train


def test_condition_with_list_of_values_and_chained_conditions():
    s = Space(
        {
            "opt": {"choice": ["adam", "sgd", "rmsprop"]},
            "momentum": {"choice": [0.0, 0.9], "when": {"opt": ["sgd", "rmsprop"]}},
            "nesterov": {"choice": [True, False], "when": {"momentum": 0.9}},
        }
    )
    grid = list(s.grid())
    assert {"opt": "adam"} in grid
    assert {"opt": "sgd", "momentum": 0.0} in grid
    assert {"opt": "sgd", "momentum": 0.9, "nesterov": True} in grid
    # adam: 1, sgd: 1 + 2, rmsprop: 1 + 2
    assert s.size() == len(grid) == 7


def test_conditions_can_be_declared_before_their_sibling():
    s = Space({"momentum": {"float": [0.8, 0.9], "when": {"opt": "sgd"}}, "opt": {"choice": ["sgd", "adam"]}})
    c = [s.sample(seed=i) for i in range(50)]
    assert any("momentum" in x for x in c) and any("momentum" not in x for x in c)
    assert list(c[0]) in (["momentum", "opt"], ["opt"])  # written order is kept


def test_condition_on_a_fixed_value_is_allowed_and_inactive():
    s = Space({"optimizer": "adam", "momentum": {"float": [0.8, 0.99], "when": {"optimizer": "sgd"}}})
    assert s.sample(seed=0) == {"optimizer": "adam"}


# -- grid and size -----------------------------------------------------------------------------


def test_grid_enumerates_every_configuration_once():
    s = Space({"a": {"int": [1, 3]}, "b": {"choice": ["x", "y"]}, "c": {"float": [0, 1], "step": 0.5}})
    grid = list(s.grid())
    assert len(grid) == s.size() == 3 * 2 * 3
    assert len({json.dumps(g, sort_keys=True) for g in grid}) == len(grid)
    assert {"a": 2, "b": "y", "c": 0.5} in grid


def test_grid_names_the_infinite_domain():
    s = space(QUICKSTART_SPACE)
    with pytest.raises(ConfigError) as err:
        list(s.grid())
    assert "space.arch.dropout" in str(err.value) and "space.train.lr" in str(err.value)
    one = Space({"a": {"choice": [1, 2]}, "lr": {"float": [0.1, 0.2]}})
    with pytest.raises(ConfigError, match=r"space\.lr: .*continuous.*step"):
        one.grid()


def test_size_and_describe():
    s = space(QUICKSTART_SPACE)
    assert s.size() == math.inf
    assert s.discrete_size() == 4 * 4 * 2 * 3
    text = s.describe_size()
    assert "infinite" in text and "arch.dropout" in text and "96 discrete" in text
    assert Space({"a": {"choice": [1, 2, 3]}}).describe_size() == "3 configurations"


# -- flatten and round trips -------------------------------------------------------------------


def test_flatten_and_unflatten_round_trip():
    s = space(NAS_SPACE)
    for i in range(50):
        c = s.sample(seed=i)
        flat = flatten(c)
        assert "arch.stages.0.kernel" in flat
        assert "arch.layers.7" in flat
        assert unflatten(flat) == c


def test_flatten_keeps_empty_lists():
    c = {"arch": {"stages": [], "depth": 1}}
    assert flatten(c) == {"arch.stages": [], "arch.depth": 1}
    assert unflatten(flatten(c)) == c


def test_space_json_round_trip():
    for text in (QUICKSTART_SPACE, NAS_SPACE):
        s = space(text)
        again = Space.from_json(s.to_json())
        assert again == s
        assert [again.sample(seed=i) for i in range(20)] == [s.sample(seed=i) for i in range(20)]
        assert yaml.safe_load(yaml.safe_dump(s.to_dict())) == s.to_dict()


def test_python_api_matches_yaml():
    py = Space(
        {
            "arch": {"depth": Int(1, 4), "width": Choice([32, 64]), "stages": Repeat({"k": Choice([3, 5])}, min=1, max=2)},
            "train": {"lr": Float(1e-4, 1e-1, log=True), "opt": Fixed("adam")},
        }
    )
    yml = space(
        """
arch:
  depth: {int: [1, 4]}
  width: {choice: [32, 64]}
  stages: {repeat: {min: 1, max: 2}, block: {k: {choice: [3, 5]}}}
train:
  lr: {float: [1.0e-4, 1.0e-1], log: true}
  opt: adam
"""
    )
    assert py == yml
    assert py.sample(seed=3) == yml.sample(seed=3)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, path, words",
    [
        ({"d": {"int": [4, 2]}}, "space.d", ["low <= high", "low=4", "high=2"]),
        ({"d": {"float": [0.5, 0.1]}}, "space.d", ["low <= high"]),
        ({"d": {"choice": []}}, "space.d.choice", ["at least one option", "empty"]),
        ({"d": {"choice": 3}}, "space.d.choice", ["list of options", "3"]),
        ({"d": {"int": [1, 4], "lgo": True}}, "space.d.lgo", ["unknown key", "did you mean 'log'"]),
        ({"d": {"int": [1.5, 4]}}, "space.d.int.0", ["integer", "1.5"]),
        ({"d": {"int": [1, 4], "log": True, "step": 2}}, "space.d", ["log", "step"]),
        ({"d": {"float": [0, 1], "log": True}}, "space.d", ["low > 0"]),
        ({"d": {"int": [1, 2], "choice": [1]}}, "space.d", ["exactly one"]),
        ({"d": {"repeat": {"min": 3, "max": 1}, "block": 1}}, "space.d.repeat", ["min <= max"]),
        ({"d": {"repeat": {"min": 1, "max": 2}}}, "space.d", ["needs a `block`"]),
        ({"m": {"float": [0, 1], "when": {"optimiser": "sgd"}}, "optimizer": {"choice": ["sgd", "adam"]}},
         "space.m.when.optimiser", ["no 'optimiser'", "did you mean 'optimizer'"]),
        ({"m": {"float": [0, 1], "when": {"opt": "sdg"}}, "opt": {"choice": ["sgd", "adam"]}},
         "space.m.when.opt", ["never hold", "did you mean 'sgd'"]),
        ({"a": {"choice": [1, 2], "when": {"b": 1}}, "b": {"choice": [1, 2], "when": {"a": 1}}}, "space.", ["cycle"]),
        ({"a.b": 1}, "space.a.b", ["contain '.'"]),
        ({"a": {"when": {"b": 1}, "x": 1}}, "space.a.when", ["put `when` on each"]),
    ],
)
def test_errors_name_path_rule_and_value(raw, path, words):
    with pytest.raises(ConfigError) as err:
        Space(raw)
    message = str(err.value)
    assert message.startswith(path), message
    for word in words:
        assert word in message, message


# -- Optuna bridge -----------------------------------------------------------------------------


def test_optuna_bridge_names_and_conditional_keys():
    s = space(NAS_SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_sgd = seen_adam = False
    for _ in range(40):
        trial = study.ask()
        config = s.suggest(trial)
        params = trial.params
        n = len(config["arch"]["stages"])
        assert params["arch.stages.len"] == n
        for i in range(4):
            assert (f"arch.stages.{i}.kernel" in params) == (i < n)
        for i in range(8):
            assert params[f"arch.layers.{i}"] == config["arch"]["layers"][i]
        assert "arch.head.norm" not in params  # fixed values are not parameters
        if config["train"]["optimizer"] == "sgd":
            seen_sgd = True
            assert params["train.momentum"] == config["train"]["momentum"]
        else:
            seen_adam = True
            assert "train.momentum" not in params and "momentum" not in config["train"]
        study.tell(trial, float(n))
    assert seen_sgd and seen_adam


def test_optuna_bridge_with_tpe_learns_within_the_space():
    # TPE (with grouped, conditional parameters) should find the larger x faster than chance.
    s = Space({"x": {"int": [0, 50]}, "opt": {"choice": ["a", "b"]}, "m": {"float": [0, 1], "when": {"opt": "b"}}})
    sampler = optuna.samplers.TPESampler(seed=1, n_startup_trials=8, multivariate=True, group=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(40):
        trial = study.ask()
        c = s.suggest(trial)
        study.tell(trial, c["x"] + (c.get("m", 0) * 10))
    late = [t.params["x"] for t in study.trials[-15:]]
    assert sum(late) / len(late) > 33  # uniform would average 25


def test_optuna_bridge_choice_of_subspaces_uses_indices():
    s = Space({"op": {"choice": ["identity", {"k": {"choice": [3, 5]}}]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        c = s.suggest(trial)
        if c["op"] == "identity":
            assert trial.params == {"op": 0}
        else:
            assert trial.params["op"] == 1 and trial.params["op.1.k"] == c["op"]["k"]
        study.tell(trial, 0.0)
