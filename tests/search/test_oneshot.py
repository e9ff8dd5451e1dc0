"""search.strategy: one-shot: the experiment file's rules, and the two stages' specs (no Ray)."""

import pytest

from raynas.errors import ConfigError
from raynas.experiment import ORIGIN_KEY
from raynas.search.stages import scoring_spec, supernet_spec
from raynas.spec import spec_from_dict

OPS = ["none", "skip", "conv1x1", "conv3x3", "avgpool3x3"]
EDGES = {e: {"choice": OPS} for e in ("0-1", "0-2", "1-2", "0-3", "1-3", "2-3")}


def raw(**changes):
    base = {
        "name": "os",
        "data": {"source": "digits"},
        "model": "cell",
        "space": {"arch": {"edges": EDGES, "channels": 8, "stages": 2, "cells_per_stage": 1},
                  "train": {"lr": 0.003, "batch_size": 32}},
        "search": {"strategy": "one-shot", "num_trials": 20, "seed": 3},
        "max_epochs": 7,
    }
    for key, value in changes.items():
        base[key] = value
    return base


def test_defaults_evolution_proposes_and_the_supernet_trains_max_epochs():
    spec = spec_from_dict(raw())
    assert spec.search.strategy == "one-shot" and spec.search.searcher == "evolution"
    assert spec.search.one_shot == {"supernet_epochs": 7, "calibration_batches": 10}
    assert spec_from_dict(raw(search={"num_trials": 3})).search.strategy == "standalone"
    assert spec_from_dict(raw(search={"num_trials": 3})).search.searcher == "random"


def test_the_supernet_stage_is_one_fifo_trial_of_the_supernet_family_with_the_same_recipe():
    spec = spec_from_dict(raw(search={"strategy": "one-shot", "num_trials": 20, "seed": 3,
                                      "one_shot": {"supernet_epochs": 4, "calibration_batches": 2}}))
    sub = supernet_spec(spec)
    assert sub.name == "supernet" and sub.num_trials == 1 and sub.max_epochs == 4
    assert sub.model == "raynas.trainables.supernet:supernet_family" and sub.scheduler.name == "fifo"
    assert sub.space.sample(seed=0)["train"] == {"lr": 0.003, "batch_size": 32}
    arch = sub.space.sample(seed=0)["arch"]
    assert arch["family"] == "cell" and arch["seed"] == 3 and '"0-1"' in arch["space"]
    scoring = scoring_spec(spec, "/ckpt")
    assert scoring.max_epochs == 1 and scoring.trainable == "raynas.trainables.supernet:score_subnet"
    assert scoring.trainable_params["weights"] == "/ckpt" and scoring.trainable_params["calibration_batches"] == 2
    assert scoring.trainable_params["batch_size"] == 32 and scoring.search.searcher == "evolution"


@pytest.mark.parametrize("changes, message", [
    ({"model": "resnet", "space": {"arch": {"stages": [{"channels": {"choice": [8, 16]}}]}}},
     (r"model: one-shot search needs a family whose choices can share weights \(cell, mbconv, transformer, mlp, cnn\); "
      r"'resnet' has no supernet")),
    ({"space": {"arch": {"edges": EDGES, "channels": {"choice": [8, 16]}}}},
     r"space\.arch\.channels: is searched, but in a cell supernet only arch\.edges"),
    ({"space": {"arch": {"edges": EDGES}, "train": {"lr": {"float": [0.001, 0.01]}}}},
     r"space\.train\.lr: one supernet trains with one recipe"),
    ({"scheduler": {"name": "asha"}}, r"scheduler: one-shot search scores each subnet in one step"),
    ({"proxies": ["snip"]}, r"proxies: one-shot search scores each subnet in one step and computes no zero-cost proxies"),
    ({"search": {"strategy": "one-shot", "prescreen": {"proxy": "snip", "candidates": 3}}}, r"search\.prescreen: "),
    ({"search": {"strategy": "oneshot"}}, r"search\.strategy: unknown strategy 'oneshot' \(did you mean 'one-shot'\?\)"),
    ({"search": {"one_shot": {"supernet_epochs": 3}}}, r"search\.one_shot: only used with search\.strategy: one-shot"),
    ({"search": {"strategy": "one-shot", "one_shot": {"supernet_epoch": 3}}}, r"search\.one_shot\.supernet_epoch"),
    ({"search": {"strategy": "one-shot", "one_shot": {"calibration_batches": 0}}}, r"search\.one_shot\.calibration_batches"),
])
def test_what_one_shot_cannot_do_is_refused_naming_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        spec_from_dict(raw(**changes))


def test_data_parallel_workers_train_the_supernet_and_score_subnets_alone():
    spec = spec_from_dict(raw(resources={"cpus_per_trial": 2, "workers_per_trial": 4}))
    sub = supernet_spec(spec)
    assert sub.resources.workers_per_trial == 4 and sub.resources.cpus_per_trial == 2
    scoring = scoring_spec(spec, "/ckpt")
    assert scoring.resources.workers_per_trial == 1 and scoring.resources.cpus_per_trial == 2
    # The stage resumes from its own saved file: the key must survive it.
    assert spec_from_dict(sub.raw).resources.workers_per_trial == 4


@pytest.mark.parametrize("changes, message", [
    ({"search": {"num_trials": 3}},
     r"resources\.workers_per_trial: data-parallel training \(Ray Train\) is built for the supernet of "
     r"search\.strategy: one-shot; each trial of a standard search trains on one worker"),
    ({"search": {"strategy": "gradient"}}, r"resources\.workers_per_trial: .*a gradient search's architecture steps"),
    ({"trainer": {"engine": "lightning"}}, r"trainer\.engine: the supernet's 2 data-parallel workers run the fast engine"),
    ({"resources": {"gpus_per_trial": 0.5, "workers_per_trial": 2}},
     r"resources\.gpus_per_trial: data-parallel workers need a whole GPU each .* got 0\.5"),
    ({"space": {"arch": {"edges": EDGES}, "train": {"batch_size": 3}}},
     r"space\.train\.batch_size: each batch is split between the 2 workers.*a batch of 3 is too small \(at least 4\)"),
    ({"resources": {"workers_per_trial": 0}}, r"resources\.workers_per_trial"),
])
def test_what_data_parallel_training_cannot_do_is_refused_naming_the_key(changes, message):
    base = raw(resources={"workers_per_trial": 2})
    base.update(changes)
    with pytest.raises(ConfigError, match=message):
        spec_from_dict(base)


@pytest.mark.parametrize("value, refused", [("0", True), ("False", True), ("1", False), ("true", False)])
def test_data_parallel_training_needs_ray_train_v2(monkeypatch, value, refused):
    monkeypatch.setenv("RAY_TRAIN_V2_ENABLED", value)
    if not refused:
        assert spec_from_dict(raw(resources={"workers_per_trial": 2})).resources.workers_per_trial == 2
        return
    with pytest.raises(ConfigError, match=rf"resources\.workers_per_trial: .*Ray Train V2 .*RAY_TRAIN_V2_ENABLED={value} "
                                          r"in this environment selects Ray Train's old API"):
        spec_from_dict(raw(resources={"workers_per_trial": 2}))
    assert spec_from_dict(raw()).resources.workers_per_trial == 1  # one worker does not use Ray Train


def test_a_gradient_search_derives_one_cell_from_a_darts_supernet():
    spec = spec_from_dict(raw(search={"strategy": "gradient", "seed": 2, "gradient": {"supernet_epochs": 5}}))
    assert spec.search.gradient == {"supernet_epochs": 5, "arch_lr": 3e-3, "max_skip": 2}
    sub = supernet_spec(spec)
    assert sub.model == "raynas.trainables.supernet:darts_family" and sub.max_epochs == 5 and sub.num_trials == 1
    arch = sub.space.sample(seed=0)["arch"]
    assert arch["arch_lr"] == 3e-3 and arch["max_skip"] == 2 and arch["seed"] == 2
    unlimited = spec_from_dict(raw(search={"strategy": "gradient", "gradient": {"max_skip": None}}))
    assert unlimited.search.gradient["max_skip"] is None
    from raynas.search.stages import derived_spec

    cell = {"edges": {e: "conv3x3" for e in EDGES}, "channels": 8, "stages": 2, "cells_per_stage": 1}
    trained = derived_spec(spec, cell, 5)
    origin = {"searcher": "gradient", "how": "cell derived after 5 supernet epochs"}
    assert trained.num_trials == 1 and trained.search.points == [
        {"arch": cell, "train": {"lr": 0.003, "batch_size": 32}, ORIGIN_KEY: origin}]


@pytest.mark.parametrize("search, message", [
    ({"strategy": "gradient", "searcher": "evolution"}, r"search\.searcher: a gradient search derives its one cell"),
    ({"strategy": "gradient", "num_trials": 5}, r"search\.num_trials: a gradient search derives its one cell"),
    ({"strategy": "gradient", "gradient": {"arch_lr": 0}}, r"search\.gradient\.arch_lr: must be > 0"),
    ({"strategy": "one-shot", "gradient": {"arch_lr": 0.1}}, r"search\.gradient: only used with search\.strategy: gradient"),
])
def test_what_a_gradient_search_cannot_take_is_refused(search, message):
    with pytest.raises(ConfigError, match=message):
        spec_from_dict(raw(search=search))
    with pytest.raises(ConfigError, match=r"trainer\.engine: a gradient search reports the architecture it derives"):
        spec_from_dict(raw(search={"strategy": "gradient"}, trainer={"engine": "lightning"}))


MBCONV_ARCH = {"stem_channels": 8, "stages": [
    {"channels": 8, "layers": {"repeat": {"min": 1, "max": 2}, "block": {
        "op": {"choice": ["identity", "mbconv"]}, "expansion": {"choice": [1, 3], "when": {"op": "mbconv"}},
        "kernel": {"choice": [3, 5], "when": {"op": "mbconv"}}}}},
    {"channels": 16, "stride": 2},
]}


def test_an_mbconv_one_shot_search_trains_its_supernet_and_scores_mbconv_subnets():
    spec = spec_from_dict(raw(model="mbconv", space={"arch": MBCONV_ARCH, "train": {"lr": 0.003}}))
    sub = supernet_spec(spec)
    arch = sub.space.sample(seed=0)["arch"]
    assert arch["family"] == "mbconv" and sub.model == "raynas.trainables.supernet:supernet_family"
    assert scoring_spec(spec, "/ckpt").trainable_params["family"] == "mbconv"


@pytest.mark.parametrize("arch, message", [
    ({**MBCONV_ARCH, "stages": {"repeat": {"min": 1, "max": 2}, "block": {"channels": 8}}},
     r"space\.arch\.stages: an mbconv supernet holds a constant list of stages"),
    ({**MBCONV_ARCH, "stages": [{"channels": 8, "stride": {"choice": [1, 2]}}]},
     r"space\.arch\.stages\.0\.stride: must be 1 or 2, a constant"),
    ({**MBCONV_ARCH, "dropout": {"choice": [0.0, 0.1]}},
     r"space\.arch\.dropout: is searched, but in an mbconv supernet"),
])
def test_what_an_mbconv_supernet_cannot_hold_stops_the_spec(arch, message):
    with pytest.raises(ConfigError, match=message):
        spec_from_dict(raw(model="mbconv", space={"arch": arch}))


def test_a_gradient_search_of_mbconv_derives_a_network_and_of_a_transformer_is_refused():
    spec = spec_from_dict(raw(model="mbconv", space={"arch": MBCONV_ARCH, "train": {"lr": 0.003}},
                              search={"strategy": "gradient"}))
    sub = supernet_spec(spec)
    assert sub.model == "raynas.trainables.supernet:darts_family"
    assert sub.space.sample(seed=0)["arch"]["family"] == "mbconv"
    with pytest.raises(ConfigError, match=r"model: gradient search relaxes the op choices of a cell's edges or an "
                                          r"mbconv's layers \(cell, mbconv\); 'transformer' has a single-path supernet "
                                          r"only: use search\.strategy: one-shot"):
        spec_from_dict(raw(model="transformer", space={"arch": {"blocks": [{"heads": 2}], "width": 8}},
                           search={"strategy": "gradient"}))
