"""A configuration's decisions (Space.params) and mapping one from another space (Space.project)."""

import optuna
import pytest

from raynas.spaces import Space
from raynas.spaces.replay import OutsideSpace

TREE = {
    "arch": {
        "kind": {"choice": ["a", "b"]},
        "depth": {"int": [1, 4], "when": {"kind": "a"}},
        "blocks": {"repeat": {"min": 1, "max": 3}, "block": {"k": {"choice": [3, 5]}, "w": {"float": [0.1, 1.0], "log": True}}},
        "head": {"choice": [{"name": "mlp", "units": {"int": [8, 64], "step": 8}}, {"name": "linear"}]},
        "pair": [{"int": [0, 2]}, {"choice": [1, 2]}],
        "act": "relu",
    },
    "train": {"lr": {"float": [1e-4, 1e-1], "log": True}},
}


@pytest.mark.parametrize("seed", range(40))
def test_params_replay_every_sampled_config_through_optuna(seed):
    space = Space(TREE)
    config = space.sample(seed=seed)
    params = space.params(config)
    assert space.suggest(optuna.trial.FixedTrial(params)) == config
    assert space.project(config) == (config, [])


def test_params_name_a_nonplain_choice_by_its_option_index_and_a_repeat_by_its_length():
    space = Space(TREE)
    config = {"arch": {"kind": "b", "blocks": [{"k": 3, "w": 0.5}], "head": {"name": "linear"}, "pair": [1, 2], "act": "relu"},
              "train": {"lr": 0.01}}
    params = space.params(config)
    assert params["arch.head"] == 1 and params["arch.blocks.len"] == 1
    assert "arch.depth" not in params  # inactive: kind is b


def test_project_clips_snaps_picks_the_nearest_option_and_drops_what_has_no_place():
    space = Space({"depth": {"int": [1, 4]}, "units": {"int": [8, 64], "step": 8}, "width": {"choice": [32, 64, 128]},
                   "lr": {"float": [0.001, 0.1]}, "blocks": {"repeat": {"min": 1, "max": 2}, "block": {"k": {"choice": [3, 5]}}},
                   "act": "relu"})
    old = {"depth": 7, "units": 30, "width": 100, "lr": 0.5, "blocks": [{"k": 3}, {"k": 5}, {"k": 3}], "act": "gelu", "norm": "bn"}
    config, changes = space.project(old)
    assert config == {"depth": 4, "units": 32, "width": 128, "lr": 0.1, "blocks": [{"k": 3}, {"k": 5}], "act": "relu"}
    assert space.contains(config)
    assert changes == ["depth: 7 -> 4", "units: 30 -> 32", "width: 100 -> 128", "lr: 0.5 -> 0.1",
                       "blocks: 3 blocks -> 2", "act: 'gelu' -> 'relu'", "norm: dropped"]


@pytest.mark.parametrize("old, where", [
    ({"width": 64}, "depth: missing"),
    ({"depth": "deep", "width": 64}, "depth: 'deep' is not a number"),
    ({"depth": 2, "width": "wide"}, "width: 'wide' is a value of none of the options"),
])
def test_project_refuses_what_cannot_be_mapped_naming_the_key(old, where):
    space = Space({"depth": {"int": [1, 4]}, "width": {"choice": [32, 64]}})
    with pytest.raises(OutsideSpace, match=where):
        space.project(old)
