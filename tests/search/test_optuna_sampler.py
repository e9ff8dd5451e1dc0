"""Which Optuna sampler `auto` builds, and that budgets still steer it with several objectives
(driven directly, no Ray)."""

import pytest

import raynas
from raynas.experiment import ORIGIN_KEY, STATUS_KEY
from raynas.search.registry import SEARCHERS
from raynas.search.searchers import OptunaSearcher
from raynas.spaces import Space

optuna = pytest.importorskip("optuna")

SPACE = {"arch": {"depth": {"int": [1, 3]}, "width": {"choice": [16, 64]}}}
MULTI = {"metric": ["val_acc", "params"], "mode": ["max", "min"]}


def sampler_of(objective=None, **search) -> object:
    raw = {"name": "o", "space": SPACE, "search": {"searcher": "optuna", **search}}
    if objective:
        raw["objective"] = objective
    searcher = SEARCHERS["optuna"].build(raynas.spec_from_dict(raw))
    searcher.suggest("t0")
    return searcher.study.sampler


def test_auto_is_tpe_for_one_objective_and_for_several():
    assert isinstance(sampler_of(), optuna.samplers.TPESampler)
    multi = sampler_of(MULTI)
    assert isinstance(multi, optuna.samplers.TPESampler)
    assert len(raynas.spec_from_dict({"name": "o", "space": SPACE, "objective": MULTI}).objective.metrics) == 2
    # Named samplers are still available.
    assert isinstance(sampler_of(MULTI, sampler="nsga2"), optuna.samplers.NSGAIISampler)
    assert isinstance(sampler_of(MULTI, sampler="random"), optuna.samplers.RandomSampler)


def infeasible_rate(constraints: bool, seed: int) -> float:
    """Share of over-budget proposals among the last 24 of 48 (x, y in 0..9, both maximised,
    x + y > 9 over budget: rejected before training, like an architecture too large)."""
    space = Space({"x": {"int": [0, 9]}, "y": {"int": [0, 9]}})
    searcher = OptunaSearcher(space, metric="x", mode="max", seed=seed, n_startup_trials=8,
                              objectives=[("x", "max"), ("y", "max")], constraints=constraints)
    infeasible = []
    for i in range(48):
        config = searcher.suggest(f"t{i}")
        assert ORIGIN_KEY in config
        over = config["x"] + config["y"] - 9
        infeasible.append(over > 0)
        if over > 0:
            result = {STATUS_KEY: "rejected", "raynas_violation": [float(over), 0.0, 0.0]}
        else:
            result = {"x": config["x"], "y": config["y"], "epoch": 1, "raynas_violation": [0.0, 0.0, 0.0]}
        searcher.on_trial_complete(f"t{i}", result)
    assert isinstance(searcher.study.sampler, optuna.samplers.TPESampler)
    if constraints:
        assert all(set(t.constraints) == {"params", "flops", "latency_ms"} for t in searcher.study.trials)
    return sum(infeasible[-24:]) / 24


def test_several_objectives_with_budgets_keep_tpe_off_infeasible_configurations():
    # Without the violations TPE only sees failures and is drawn to the over-budget corner
    # (both objectives grow towards it); with them it ranks infeasible trials last and keeps
    # to the feasible front. Random sampling proposes x + y > 9 for 45% of configurations.
    with_budgets = [infeasible_rate(True, seed) for seed in range(3)]
    without = [infeasible_rate(False, seed) for seed in range(3)]
    assert sum(with_budgets) / 3 < 0.55 and sum(without) / 3 > 0.85, (with_budgets, without)
