"""Mutation in the space DSL: membership, sites, operations, conditions, repeats, determinism."""

import copy
import json
import math
import random
from collections import Counter

import pytest

from raynas.spec import parse_yaml
from raynas.spaces import Choice, Float, Int, Repeat, Space, flatten, mutate
from raynas.spaces.mutation import sites

# Every node type at once: repeat (searched and fixed count), list, choice of sub-spaces,
# stepped/log domains, a condition, fixed values.
EVERYTHING = """
arch:
  stages:
    repeat: {min: 1, max: 4}
    block: {channels: {choice: [16, 32, 64]}, kernel: {choice: [3, 5]}, pool: {choice: [true, false]}}
  layers: {repeat: {min: 3, max: 3}, block: {choice: [0, 1, 2]}}
  head: {hidden: {choice: [0, 64]}, norm: batch}
  op: {choice: [identity, {type: conv, k: {choice: [3, 5]}, dilation: {int: [1, 3]}}, {int: [10, 12]}]}
  pair: [{int: [0, 3]}, fixed, {float: [0, 1], step: 0.25}]
train:
  lr: {float: [1.0e-4, 1.0e-1], log: true}
  dropout: {float: [0.0, 0.3]}
  optimizer: {choice: [adam, sgd]}
  momentum: {float: [0.8, 0.99], when: {optimizer: sgd}}
  nesterov: {choice: [true, false], when: {optimizer: sgd}}
  steps: {int: [1, 1000], log: true}
"""

FLAT = {"depth": {"int": [1, 6]}, "width": {"choice": [16, 32, 64, 128]}, "lr": {"float": [1e-4, 1e-1], "log": True}, "act": {"choice": ["relu", "gelu"]}}

OPTIMIZER = {
    "optimizer": {"choice": ["adam", "sgd"]},
    "momentum": {"float": [0.8, 0.99], "when": {"optimizer": "sgd"}},
    "nesterov": {"choice": [True, False], "when": {"optimizer": "sgd"}},
    "lr": {"float": [1e-4, 1e-1], "log": True},
}


def space(text: str) -> Space:
    return Space(parse_yaml(text))


def key(config) -> str:
    return json.dumps(config, sort_keys=True)


def changed_keys(a: dict, b: dict) -> set:
    fa, fb = flatten(a), flatten(b)
    return {k for k in fa.keys() | fb.keys() if fa.get(k, "<absent>") != fb.get(k, "<absent>")}


# -- membership --------------------------------------------------------------------------------


def test_contains_accepts_every_sample_and_grid_point():
    s = space(EVERYTHING)
    assert all(s.contains(s.sample(seed=i)) for i in range(300))
    g = Space({"a": {"choice": [1, 2]}, "b": {"int": [0, 2], "when": {"a": 2}}, "c": {"repeat": {"min": 0, "max": 2}, "block": {"choice": ["x", "y"]}}})
    assert all(g.contains(c) for c in g.grid())


@pytest.mark.parametrize(
    "config, words",
    [
        ({"depth": 7, "width": 16, "lr": 0.01, "act": "relu"}, "depth: 7 is outside [1, 6]"),
        ({"depth": 2.0, "width": 16, "lr": 0.01, "act": "relu"}, "depth: expected an integer"),
        ({"depth": True, "width": 16, "lr": 0.01, "act": "relu"}, "depth: expected an integer"),
        ({"depth": 2, "width": 17, "lr": 0.01, "act": "relu"}, "width: expected one of [16, 32, 64, 128]"),
        ({"depth": 2, "width": 16, "lr": 0.5, "act": "relu"}, "lr: 0.5 is outside"),
        ({"depth": 2, "width": 16, "lr": "x", "act": "relu"}, "lr: expected a number"),
        ({"depth": 2, "width": 16, "lr": 0.01}, "act: missing"),
        ({"depth": 2, "width": 16, "lr": 0.01, "act": "relu", "extra": 1}, "extra: not a key"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_contains_rejects_non_members_and_names_the_key(config, words):
    s = Space(FLAT)
    assert not s.contains(config)
    assert words in s.root.mismatch(config, "space")


def test_contains_checks_conditions_repeats_steps_and_subspaces():
    s = Space(OPTIMIZER)
    assert s.contains({"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.01})
    assert not s.contains({"optimizer": "adam", "momentum": 0.9, "nesterov": True, "lr": 0.01})  # inactive present
    assert not s.contains({"optimizer": "sgd", "lr": 0.01})  # active missing
    assert not s.contains({"optimizer": "sgd", "momentum": 0.9, "nesterov": 1, "lr": 0.01})  # 1 is not True
    r = Space({"b": Repeat(Choice([3, 5]), min=1, max=2)})
    assert r.contains({"b": [3]}) and r.contains({"b": [5, 3]})
    assert not r.contains({"b": []}) and not r.contains({"b": [3, 3, 3]}) and not r.contains({"b": [4]})
    stepped = Space({"x": Float(0, 1, step=0.25), "n": Int(2, 10, step=2)})
    assert stepped.contains({"x": 0.75, "n": 4}) and not stepped.contains({"x": 0.7, "n": 4})
    assert not stepped.contains({"x": 0.75, "n": 5})
    sub = Space({"op": {"choice": ["identity", {"type": "conv", "k": {"choice": [3, 5]}}]}})
    assert sub.contains({"op": "identity"}) and sub.contains({"op": {"type": "conv", "k": 5}})
    assert not sub.contains({"op": {"type": "conv", "k": 4}}) and not sub.contains({"op": "conv"})
    # Sampling a log range goes through exp(log(high)), which can overshoot by an ulp.
    assert Space({"lr": Float(1e-4, 0.1, log=True)}).contains({"lr": math.exp(math.log(0.1))})


# -- sites ---------------------------------------------------------------------------------------


def test_sites_are_the_active_domains_with_more_than_one_value():
    s = space(EVERYTHING)
    config = {
        "arch": {
            "stages": [{"channels": 16, "kernel": 3, "pool": True}],
            "layers": [0, 1, 2],
            "head": {"hidden": 0, "norm": "batch"},
            "op": {"type": "conv", "k": 3, "dilation": 2},
            "pair": [1, "fixed", 0.5],
        },
        "train": {"lr": 0.01, "dropout": 0.1, "optimizer": "adam", "steps": 10},
    }
    found = [(site.key, site.kind) for site in sites(s, config)]
    assert found == [
        ("arch.stages", "count"),
        ("arch.stages.0.channels", "option"),
        ("arch.stages.0.kernel", "option"),
        ("arch.stages.0.pool", "option"),
        # a fixed-count repeat has no count site, only its blocks
        ("arch.layers.0", "option"),
        ("arch.layers.1", "option"),
        ("arch.layers.2", "option"),
        ("arch.head.hidden", "option"),  # head.norm is fixed
        ("arch.op", "option"),  # switching option, and the sites inside the current one
        ("arch.op.k", "option"),
        ("arch.op.dilation", "value"),
        ("arch.pair.0", "value"),
        ("arch.pair.2", "value"),
        ("train.lr", "value"),
        ("train.dropout", "value"),
        ("train.optimizer", "option"),  # momentum and nesterov are inactive
        ("train.steps", "value"),
    ]


def test_a_space_with_one_configuration_cannot_mutate():
    with pytest.raises(ValueError, match="single configuration"):
        Space({"a": 1, "b": {"choice": ["x"]}, "c": {"int": [3, 3]}, "d": {"float": [0.5, 0.5]}}).mutate(
            {"a": 1, "b": "x", "c": 3, "d": 0.5}, seed=0
        )


def test_bad_input_is_refused_with_the_key_named():
    s = Space(FLAT)
    with pytest.raises(ValueError, match=r"not in the space: space\.depth: 9 is outside"):
        s.mutate({"depth": 9, "width": 16, "lr": 0.01, "act": "relu"}, seed=0)
    with pytest.raises(ValueError, match="integer >= 1"):
        s.mutate(s.sample(seed=0), seed=0, n=0)


# -- the child -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3])
def test_child_differs_is_a_member_and_input_is_untouched(n):
    s = space(EVERYTHING)
    rng = random.Random(n)
    for _ in range(1500):
        parent = s.sample(rng=rng)
        before = copy.deepcopy(parent)
        child = s.mutate(parent, rng=rng, n=n)
        assert parent == before
        assert child != parent and s.contains(child), s.root.mismatch(child)
        # The child shares no containers with its parent: editing one cannot change the other.
        child["arch"]["stages"].append("x")
        assert parent == before


def test_one_site_changes_one_flat_key_and_n_sites_at_most_n():
    s = Space(FLAT)  # no conditions, repeats or sub-spaces: one site is one flat key
    rng = random.Random(0)
    for n in (1, 2, 4):
        counts = Counter()
        for _ in range(600):
            parent = s.sample(rng=rng)
            counts[len(changed_keys(parent, s.mutate(parent, rng=rng, n=n)))] += 1
        assert set(counts) == set(range(1, n + 1)), (n, counts)  # 1..n, each seen


def test_side_effects_only_from_conditions_repeats_and_subspaces():
    s = space(EVERYTHING)
    rng = random.Random(5)
    for _ in range(1000):
        parent = s.sample(rng=rng)
        child = s.mutate(parent, rng=rng)
        changed = changed_keys(parent, child)
        if len(changed) > 1:
            roots = {k.split(".")[1] for k in changed}
            # A repeat that grew or shrank, a switched sub-space option, or an optimizer switch
            # that brought or took its conditional keys.
            if roots & {"optimizer", "momentum", "nesterov"}:
                assert roots <= {"optimizer", "momentum", "nesterov"}, changed
                assert parent["train"]["optimizer"] != child["train"]["optimizer"]
            else:
                assert roots in ({"stages"}, {"op"}), changed


def test_int_moves_to_a_neighbour_or_resamples_never_the_same():
    s = Space({"x": Int(0, 100)})
    rng = random.Random(1)
    moves = Counter()
    for start in (0, 37, 100):
        for _ in range(400):
            new = s.mutate({"x": start}, rng=rng)["x"]
            assert new != start and 0 <= new <= 100
            moves["neighbour" if abs(new - start) == 1 else "jump"] += 1
    assert 0.45 < moves["neighbour"] / sum(moves.values()) < 0.6, moves  # p=0.5 plus lucky resamples


def test_stepped_domains_stay_on_their_grid():
    s = Space({"n": Int(2, 10, step=2), "x": Float(0, 1, step=0.25)})
    rng = random.Random(2)
    config = s.sample(rng=rng)
    for _ in range(300):
        config = s.mutate(config, rng=rng)
        assert config["n"] in (2, 4, 6, 8, 10) and config["x"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_float_perturbs_in_log_space_within_bounds():
    s = Space({"lr": Float(1e-5, 1e-1, log=True)})
    rng = random.Random(3)
    ratios = []
    for start in (1e-5, 1e-3, 1e-1):  # both bounds and the middle
        for _ in range(300):
            new = s.mutate({"lr": start}, rng=rng)["lr"]
            assert new != start and 1e-5 <= new <= 1e-1
            ratios.append(abs(math.log10(new / start)))
    # A log-space step of sigma 0.2 * 4 decades moves by under 0.8 decade two times in three;
    # half the mutations are such steps, so well over a third stay within one decade.
    assert sum(r < 1 for r in ratios) / len(ratios) > 0.4


def test_repeat_adds_and_removes_blocks_within_bounds():
    s = Space({"stages": Repeat({"k": {"choice": [3, 5, 7]}}, min=1, max=3)})
    rng = random.Random(4)
    seen = Counter()
    config = {"stages": [{"k": 3}]}
    for _ in range(2000):
        child = s.mutate(config, rng=rng)
        before, after = len(config["stages"]), len(child["stages"])
        assert 1 <= after <= 3 and abs(after - before) <= 1
        if after != before:
            seen["add" if after > before else "remove"] += 1
            seen[f"{before}->{after}"] += 1
            # The other blocks are kept, in order: one was inserted or deleted.
            longer, shorter = (child, config) if after > before else (config, child)
            assert any(longer["stages"][:i] + longer["stages"][i + 1:] == shorter["stages"] for i in range(len(longer["stages"])))
        config = child
    assert {"1->2", "2->3", "3->2", "2->1"} <= set(seen) and "1->0" not in seen and "3->4" not in seen, seen


def test_conditional_keys_appear_and_disappear_with_their_parent():
    s = Space(OPTIMIZER)
    rng = random.Random(6)
    switched = kept = 0
    for _ in range(500):
        parent = s.sample(rng=rng)
        child = s.mutate(parent, rng=rng)
        if child["optimizer"] == "sgd":
            assert {"momentum", "nesterov"} <= set(child) and 0.8 <= child["momentum"] <= 0.99
        else:
            assert "momentum" not in child and "nesterov" not in child
        if parent["optimizer"] != child["optimizer"]:
            switched += 1
            assert child["lr"] == parent["lr"]  # unconditional siblings are kept
        elif parent["optimizer"] == "sgd":
            kept += 1
            assert len(changed_keys(parent, child)) == 1  # a change elsewhere keeps the conditional keys
    assert switched > 50 and kept > 50


def test_chained_conditions_follow_in_order():
    s = Space(
        {
            "a": {"choice": ["x", "y"]},
            "b": {"choice": [1, 2], "when": {"a": "y"}},
            "c": {"int": [0, 9], "when": {"b": 2}},
        }
    )
    rng = random.Random(7)
    for _ in range(500):
        parent = s.sample(rng=rng)
        child = s.mutate(parent, rng=rng)
        assert s.contains(child)
        if child["a"] == "x":
            assert set(child) == {"a"}
    # Switching a on samples b fresh, and c with it when b lands on 2.
    grown = [s.mutate({"a": "x"}, seed=i) for i in range(50)]
    assert all(g["a"] == "y" and ("c" in g) == (g["b"] == 2) for g in grown)
    assert {g["b"] for g in grown} == {1, 2}


def test_choice_of_subspaces_switches_and_mutates_inside():
    s = Space({"op": {"choice": ["identity", {"type": "conv", "k": {"choice": [3, 5]}, "d": {"int": [1, 2]}}]}})
    rng = random.Random(8)
    children = Counter(key(s.mutate({"op": {"type": "conv", "k": 3, "d": 1}}, rng=rng)) for _ in range(600))
    # Switch to identity (1 site in 3) or change k or d inside the current option.
    assert set(children) == {
        key({"op": "identity"}),
        key({"op": {"type": "conv", "k": 5, "d": 1}}),
        key({"op": {"type": "conv", "k": 3, "d": 2}}),
    }
    assert all(150 < c < 250 for c in children.values()), children
    fresh = {key(s.mutate({"op": "identity"}, rng=rng)) for _ in range(200)}
    assert len(fresh) == 4  # switching into the sub-space samples it fresh


def test_mutation_is_deterministic_for_a_seed():
    s = space(EVERYTHING)
    parent = s.sample(seed=0)
    a = [s.mutate(parent, rng=random.Random(11), n=2) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng_a, rng_b = random.Random(12), random.Random(12)
    assert [s.mutate(parent, rng=rng_a, n=3) for _ in range(20)] == [mutate(s, parent, rng_b, 3) for _ in range(20)]
    assert len({key(s.mutate(parent, seed=i)) for i in range(20)}) > 10
