"""Optuna's multi-fidelity path (BOHB-style): TPE models the trials' values at the largest epoch
enough of them reached. Driven directly, no Ray."""

import doctest
import random

import pytest

import raynas
from raynas.experiment import STATUS_KEY
from raynas.search import searchers
from raynas.search.registry import SEARCHERS
from raynas.search.searchers import OptunaSearcher, budget_view, fidelity_budget, min_points_for, value_at
from raynas.spaces import Space

optuna = pytest.importorskip("optuna")
from optuna.distributions import FloatDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402


def test_doctests():
    assert doctest.testmod(searchers).failed == 0


def test_budget_is_the_largest_epoch_enough_trials_reached():
    # ASHA-like: 9 trials stopped at 3, 4 promoted to 9 (one of them on to 27), 2 just started.
    reached = [3] * 9 + [9, 9, 9, 27] + [0, 1]
    assert fidelity_budget(reached, 4) == 9
    assert fidelity_budget(reached, 1) == 27
    assert fidelity_budget(reached, 13) == 3
    assert fidelity_budget(reached, 14) == 1
    assert fidelity_budget(reached, 15) is None  # a trial with no epoch yet is no observation


def test_value_at_a_budget_is_the_best_up_to_it():
    curve = {1: 0.2, 2: 0.6, 3: 0.5, 9: 0.9}
    assert value_at(curve, 3, "max") == 0.6
    assert value_at(curve, 3, "min") == 0.2
    assert value_at(curve, 9, "max") == 0.9
    assert value_at(curve, 10, "max") is None
    assert value_at({}, 1, "max") is None


def test_min_points_is_the_dimension_plus_two_at_least_the_startup():
    class T:
        def __init__(self, d):
            self.distributions = dict.fromkeys(range(d))

    assert min_points_for([T(3), T(7)], 8) == 9
    assert min_points_for([T(3)], 8) == 8
    assert min_points_for([T(3)], 0) == 5


def _frozen(state, x, curve=None, constraints=None, values=None):
    system_attrs = {"constraints": constraints} if constraints else {}
    return create_trial(state=state, params={"x": x}, distributions={"x": FloatDistribution(0, 1)},
                        intermediate_values=curve or {}, system_attrs=system_attrs, values=values)


def test_the_view_holds_trials_at_the_budget_live_ones_and_infeasible_ones():
    trials = [
        _frozen(TrialState.PRUNED, 0.1, {1: 50.0, 2: 60.0, 3: 55.0}),  # stopped at 3: reached 3
        _frozen(TrialState.PRUNED, 0.2, {1: 40.0}),  # stopped before 3: left out
        _frozen(TrialState.COMPLETE, 0.3, {1: 70.0, 3: 80.0, 9: 90.0}, values=[90.0]),  # 80 at 3
        _frozen(TrialState.RUNNING, 0.4, {1: 10.0}),  # live, below 3: running (constant liar)
        _frozen(TrialState.RUNNING, 0.5, {1: 10.0, 3: 20.0}),  # live, past 3: an observation
        _frozen(TrialState.FAIL, 0.6, {1: 99.0, 3: 99.0}),  # failed: left out, whatever it reported
        _frozen(TrialState.COMPLETE, 0.7, constraints=[2.0, 0.0], values=[-1e30]),  # over budget
    ]
    view = budget_view(trials, 3, "max")
    assert [(t.params["x"], t.state, t.value) for t in view] == [
        (0.1, TrialState.COMPLETE, 60.0),
        (0.3, TrialState.COMPLETE, 80.0),
        (0.4, TrialState.RUNNING, None),
        (0.5, TrialState.COMPLETE, 20.0),
        (0.7, TrialState.COMPLETE, -1e30),
    ]
    assert view[-1].constraints == {"0": 2.0, "1": 0.0}
    assert [t.params["x"] for t in budget_view(trials, 3, "max", running=False)] == [0.1, 0.3, 0.5, 0.7]
    # No budget yet: only the live and infeasible trials (TPE samples at random).
    assert [t.state for t in budget_view(trials, None, "max")] == [TrialState.RUNNING] * 2 + [TrialState.COMPLETE]


SPACE = Space({"x": {"float": [0.0, 1.0]}})


def _curve(x: float, epoch: int) -> float:
    """Early on x near 0.2 learns fastest; from epoch 3 on x near 0.8 is best."""
    return -abs(x - 0.2) if epoch < 3 else 1 - abs(x - 0.8)


def test_tpe_models_the_largest_well_observed_epoch():
    """With 20 trials stopped at epoch 1 and 12 that reached epoch 3 (min_points 10), TPE
    models epoch 3, where x near 0.8 wins, not epoch 1 (most trials), where x near 0.2 does."""
    means = []
    for seed in range(3):
        searcher = OptunaSearcher(SPACE, metric="v", mode="max", seed=seed, max_epochs=9, n_startup_trials=8,
                                  multi_fidelity=True, min_points=10)
        for i in range(32):
            config = searcher.suggest(f"t{i}")
            last = 3 if i % 8 < 3 else 1  # 12 of 32 trials get to epoch 3
            for epoch in range(1, last + 1):
                searcher.on_trial_result(f"t{i}", {"v": _curve(config["x"], epoch), "epoch": epoch})
            searcher.on_trial_complete(f"t{i}", {"v": _curve(config["x"], last), "epoch": last})
        assert searcher.budgets[0] is None and searcher.budgets[-1] == 3
        xs = [searcher.suggest(f"n{i}")["x"] for i in range(10)]
        means.append(sum(xs) / len(xs))
        # The study keeps the real record: stopped trials pruned, with their curves.
        states = [t.state for t in searcher.study.get_trials()]
        assert states.count(TrialState.PRUNED) == 32 and states.count(TrialState.RUNNING) == 10
    assert min(means) > 0.6, means


def _asha_like(searcher, i: int, rng: random.Random) -> None:
    """One trial: a config, its epochs, stopped at 1 or 3 unless good (max_epochs 9)."""
    config = searcher.suggest(f"t{i}")
    x = config["x"]
    last = 9 if x > 0.7 else 3 if x > 0.4 else 1
    result = None
    for epoch in range(1, last + 1):
        result = {"v": x * epoch + rng.random() * 0.01, "epoch": epoch}
        searcher.on_trial_result(f"t{i}", result)
    searcher.on_trial_complete(f"t{i}", result)


def test_the_multi_fidelity_searcher_resumes_the_same_sequence(tmp_path):
    def make():
        return OptunaSearcher(SPACE, metric="v", mode="max", seed=5, max_epochs=9, n_startup_trials=4,
                              multi_fidelity=True)

    uninterrupted, first = make(), make()
    for searcher in (uninterrupted, first):
        rng = random.Random(0)
        for i in range(14):
            _asha_like(searcher, i, rng)
        searcher.suggest("live")
        searcher.on_trial_result("live", {"v": 0.5, "epoch": 1})  # live at the snapshot
    path = str(tmp_path / "searcher.pkl")
    first.save(path)
    resumed = make()
    resumed.restore(path)
    assert resumed.budgets == first.budgets and any(b is not None for b in resumed.budgets)
    tail = []
    for searcher in (uninterrupted, resumed):
        rng = random.Random(1)
        searcher.on_trial_complete("live", {"v": 0.6, "epoch": 2})
        for i in range(14, 30):
            _asha_like(searcher, i, rng)
        tail.append([t.params for t in searcher.study.get_trials()])
    assert tail[0] == tail[1]


def _built(scheduler: str, objective=None, **search):
    raw = {"name": "o", "space": {"arch": {"x": {"float": [0.0, 1.0]}}}, "max_epochs": 9,
           "search": {"searcher": "optuna", **search}, "scheduler": {"name": scheduler}}
    if objective:
        raw["objective"] = objective
        raw["scheduler"]["metric"] = objective["metric"][0]
    return SEARCHERS["optuna"].build(raynas.spec_from_dict(raw))


def test_multi_fidelity_is_the_default_under_early_stopping_only():
    assert _built("asha").multi_fidelity and _built("median").multi_fidelity
    assert not _built("fifo").multi_fidelity
    assert not _built("asha", multi_fidelity="never").multi_fidelity
    assert _built("fifo", multi_fidelity="always").multi_fidelity
    # Several objectives, or a sampler that is not TPE: the final values, as before.
    assert not _built("asha", {"metric": ["val_acc", "params"], "mode": ["max", "min"]}).multi_fidelity
    assert not _built("asha", sampler="nsga2").multi_fidelity
    assert _built("asha", min_points=5).min_points == 5
    with pytest.raises(raynas.ConfigError, match="multi_fidelity"):
        _built("asha", multi_fidelity="yes please")


def test_rejected_trials_stay_infeasible_in_the_model():
    """With budgets, a rejected (over-budget) trial never trains, so it reaches no epoch; the
    multi-fidelity view still holds it with its violation, which TPE ranks below every
    feasible trial (see test_optuna_sampler for the effect on the samplers)."""
    searcher = OptunaSearcher(SPACE, metric="v", mode="max", seed=0, max_epochs=3, n_startup_trials=6,
                              multi_fidelity=True, constraints=True)
    rejected = 0
    for i in range(24):
        x = searcher.suggest(f"t{i}")["x"]
        if x > 0.5:
            rejected += 1
            searcher.on_trial_complete(f"t{i}", {STATUS_KEY: "rejected", "raynas_violation": [x - 0.5, 0.0, 0.0]})
            continue
        for epoch in (1, 2, 3):
            result = {"v": x * epoch, "epoch": epoch, "raynas_violation": [0.0, 0.0, 0.0]}
            searcher.on_trial_result(f"t{i}", result)
        searcher.on_trial_complete(f"t{i}", result)
    trials = searcher.study.get_trials()
    assert all(set(t.constraints) == {"params", "flops", "latency_ms"} for t in trials)
    assert searcher.budgets[-1] == 3
    view = budget_view(trials, 3, "max")
    infeasible = [t for t in view if t.constraints["params"] > 0]
    assert rejected > 0 and len(infeasible) == rejected and len(view) == len(trials)


def test_given_points_come_first_and_earlier_trials_feed_the_model():
    """search.points still go through the study's queue; same-data priors with their curves are
    observations at the budget, so TPE models them from the first suggestion."""
    from raynas.experiment import ORIGIN_KEY
    from raynas.search.searchers import Prior

    searcher = OptunaSearcher(SPACE, metric="v", mode="max", seed=0, max_epochs=3, n_startup_trials=4,
                              multi_fidelity=True)
    searcher.add_points([{"x": 0.25}])
    priors = [Prior(config={"x": x / 20}, value=_curve(x / 20, 3), epochs=3, complete=True,
                    curve={e: _curve(x / 20, e) for e in (1, 2, 3)}) for x in range(20)]
    assert "20 earlier trials" in searcher.warm_start(priors)
    first = searcher.suggest("t0")
    assert first["x"] == 0.25 and first[ORIGIN_KEY]["how"] == "given point 1 of 1"
    assert searcher.budgets == []  # the queue, not the model
    second = searcher.suggest("t1")
    assert searcher.budgets == [3] and second[ORIGIN_KEY]["how"] == "tpe at epoch 3"
