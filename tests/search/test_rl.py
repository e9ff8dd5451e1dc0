"""The policy-gradient controller driven directly (no Ray): valid configurations of conditional
and repeated spaces, learning, failures, modes and reward scales, seeds, save/restore, parameters."""

import math
import pickle
import statistics

import pytest
import torch

import raynas
from raynas.errors import ConfigError
from raynas.experiment import STATUS_KEY
from raynas.search.registry import SEARCHERS
from raynas.search.rl import RLSearcher
from raynas.search.searchers import RandomSearcher
from raynas.spaces import Space

from tests.search.test_evolution import DIGITS_LIKE, Driver

# Every kind of decision: a repeat's length, a condition, a sub-space option, a binned log int,
# a continuous float (binned), a stepped float with few values (one action per value).
TREE = {
    "arch": {
        "stages": {"repeat": {"min": 0, "max": 3}, "block": {"k": {"choice": [3, 5]}, "pool": {"choice": [True, False]}}},
        "head": {"choice": [{"hidden": {"int": [8, 256], "log": True}}, "linear"]},
        "optimizer": {"choice": ["adam", "sgd"]},
        "momentum": {"float": [0.5, 0.99], "when": {"optimizer": "sgd"}},
        "dropout": {"float": [0.0, 0.5], "step": 0.1},
        "units": {"int": [10, 1000], "step": 10},
    },
}


def rl(seed=0, mode="max", space=DIGITS_LIKE, **options) -> RLSearcher:
    return RLSearcher(Space(space), metric="score", mode=mode, seed=seed, **options)


def test_configurations_are_valid_and_cover_conditions_repeats_and_options():
    space = Space(TREE)
    driver = Driver(rl(space=TREE), objective=lambda c: len(c["arch"]["stages"]), concurrent=3)
    driver.step(50)
    configs = [t["config"] for t in driver.trials]
    assert all(space.contains(c) for c in configs)
    arch = [c["arch"] for c in configs]
    assert {len(a["stages"]) for a in arch} == {0, 1, 2, 3}
    assert all(("momentum" in a) == (a["optimizer"] == "sgd") for a in arch)
    assert {"linear"} < {a["head"] if a["head"] == "linear" else "sub" for a in arch} | {"linear"}
    hidden = [a["head"]["hidden"] for a in arch if a["head"] != "linear"]
    assert min(hidden) < 30 and max(hidden) > 100  # log bins reach both ends
    assert {a["dropout"] for a in arch} <= {0.0, 0.1, 0.2, 0.3, 0.4, 0.5} and len({a["units"] for a in arch}) > 15
    assert all(t["origin"]["searcher"] == "rl" for t in driver.trials)


def test_the_probability_of_the_better_choice_rises():
    space = {"x": {"choice": ["a", "b", "c", "d"]}, "y": {"int": [0, 99]}}  # y: enough room to repeat c
    assert rl(space=space).probabilities([]) == {}  # no decision asked for yet
    finals = []
    for seed in range(4):
        searcher = rl(space=space, seed=seed)
        driver = Driver(searcher, objective=lambda c: float(c["x"] == "c") + 0.01 * c["y"], concurrent=2)
        driver.step(1)
        assert searcher.probabilities([])["x"] == pytest.approx([0.25] * 4)  # zero heads: uniform
        driver.step(49)
        probs = searcher.probabilities([])["x"]
        assert probs[2] == max(probs), (seed, probs)
        finals.append(probs[2])
    assert statistics.median(finals) > 0.9, finals


def test_rl_beats_random_search_within_the_same_budget():
    # 60 trials of 2,880 configurations, two at a time, over ten seeds (as evolution's test).
    learned, sampled = [], []
    for seed in range(10):
        driver = Driver(rl(seed=seed), concurrent=2)
        driver.step(60)
        driver.finish()
        learned.append(driver.best())
        baseline = RandomSearcher(Space(DIGITS_LIKE), seed=seed)
        baseline.set_search_properties("score", "max", {})
        driver = Driver(baseline, concurrent=2)
        driver.step(60)
        sampled.append(driver.best())
    assert statistics.mean(learned) >= statistics.mean(sampled) + 0.5, (learned, sampled)


def test_failed_and_rejected_trials_get_the_worst_reward():
    searcher = rl(baseline_decay=0.9)
    searcher.suggest("f0")
    searcher.on_trial_complete("f0", error=True)  # nothing reported yet: an advantage of -1
    assert searcher.history[-1] == ("f0", None, -1.0)
    for i, value in enumerate([0.5, 0.9, 0.7]):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"score": value, "epoch": 1})
    scale = statistics.pstdev([0.5, 0.9, 0.7])
    searcher.suggest("rejected")
    searcher.on_trial_complete("rejected", {STATUS_KEY: "rejected", "epoch": 0})
    searcher.suggest("nan")
    searcher.on_trial_complete("nan", {"score": math.nan, "epoch": 3})  # never reported a finite value
    for trial_id, reward, advantage in searcher.history[-2:]:
        assert reward == pytest.approx(0.5 - scale) and math.isfinite(advantage)
        assert advantage < min(a for t, _, a in searcher.history if t.startswith("t"))
    assert searcher.num_failed == 3 and searcher.baseline == pytest.approx((0.5 * 0.81 + 0.9 * 0.9 + 0.7) / 2.71)  # the bias-corrected average


def test_a_stopped_trial_is_rewarded_with_the_best_value_it_reached():
    searcher = rl()
    searcher.suggest("a")
    for epoch, value in enumerate([0.3, 0.8, 0.6], start=1):
        searcher.on_trial_result("a", {"score": value, "epoch": epoch})
    searcher.on_trial_complete("a")  # stopped while paused (HyperBand): no result passed
    assert searcher.history == [("a", 0.8, 0.0)] and searcher.num_failed == 0


def test_mode_min_and_the_metrics_scale_do_not_change_the_search():
    runs = []
    for mode, sign in (("max", 1.0), ("min", -1.0), ("max", 100.0)):
        driver = Driver(rl(seed=4, mode=mode), concurrent=2, sign=sign)
        driver.step(40)
        runs.append(driver.trials)
    assert runs[0] == runs[1] == runs[2]


def test_the_same_seed_gives_the_same_search_and_leaves_torchs_generator_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    runs = []
    for seed in (7, 7, 8):
        driver = Driver(rl(seed=seed), concurrent=3)
        driver.step(30)
        runs.append(driver.trials)
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert torch.equal(torch.get_rng_state(), before)


def test_save_and_restore_continue_exactly(tmp_path):
    original = rl(seed=2, space=TREE)
    objective = lambda c: len(c["arch"]["stages"]) + (c["arch"]["optimizer"] == "sgd")  # noqa: E731
    driver = Driver(original, objective=objective, concurrent=3)
    driver.step(12)  # two trials in flight
    original.save(str(tmp_path / "searcher.pkl"))

    fresh = RLSearcher(Space(TREE), seed=99, lr=0.5, hidden_size=4)  # other settings: all come from the file
    fresh.restore(str(tmp_path / "searcher.pkl"))
    resumed = Driver(fresh, objective=objective, concurrent=3)
    resumed.flying, resumed.trials = list(driver.flying), list(driver.trials)

    assert resumed.step(25) == driver.step(25)
    assert fresh.history == original.history and fresh.num_updates == original.num_updates == 35
    assert all(torch.equal(fresh.params[k], original.params[k]) for k in original.params)


def test_the_searcher_pickles_whole():
    # Tune pickles the searcher with the Tuner (tuner.pkl); a torch.Generator alone cannot be.
    searcher = rl(seed=3)
    Driver(searcher, concurrent=2).step(5)
    copy = pickle.loads(pickle.dumps(searcher))
    assert copy.suggest("x") == searcher.suggest("x")


def test_parameters_are_checked():
    space = Space(DIGITS_LIKE)
    for bad in ({"lr": 0}, {"entropy_weight": -0.1}, {"baseline_decay": 1}, {"hidden_size": 2.5}, {"float_bins": 1},
                {"hidden_size": True}, {"lr": math.nan}):
        with pytest.raises(ValueError, match="rl: .* must be"):
            RLSearcher(space, **bad)


@pytest.mark.parametrize(
    "option, message",
    [
        ({"lr": 0}, r"search\.lr: must be > 0, got 0"),
        ({"lr": 1.5}, r"search\.lr: must be <= 1"),
        ({"entropy_weight": -1}, r"search\.entropy_weight: must be >= 0"),
        ({"baseline_decay": 1.0}, r"search\.baseline_decay: must be < 1"),
        ({"hidden_size": 0}, r"search\.hidden_size: must be >= 1"),
        ({"float_bins": 1}, r"search\.float_bins: must be >= 2"),
        ({"bins": 4}, r"search\.bins: unknown key.*float_bins"),
    ],
)
def test_experiment_parameters_out_of_range_are_config_errors(option, message):
    raw = {"name": "e", "space": DIGITS_LIKE, "search": {"searcher": "rl", **option}}
    with pytest.raises(ConfigError, match=message):
        raynas.spec_from_dict(raw)


def test_registered_and_built_from_an_experiment():
    raw = {"name": "e", "space": DIGITS_LIKE, "search": {"searcher": "rl", "seed": 3, "lr": 0.1, "float_bins": 4}}
    searcher = SEARCHERS["rl"].build(raynas.spec_from_dict(raw))
    assert isinstance(searcher, RLSearcher)
    assert (searcher.seed, searcher.lr, searcher.float_bins, searcher.metric, searcher.mode) == (3, 0.1, 4, "val_acc", "max")
    multi = {**raw, "objective": {"metric": ["val_acc", "params"], "mode": ["max", "min"]}}
    with pytest.raises(ConfigError, match=r"search\.searcher: rl's reward is one score"):
        raynas.spec_from_dict(multi)


def test_repeats_are_drawn_again_then_replaced_by_a_uniform_sample():
    searcher = rl(space={"x": {"int": [0, 2]}})
    driver = Driver(searcher, objective=lambda c: c["x"])
    driver.step(5)
    assert sorted(t["config"]["x"] for t in driver.trials[:3]) == [0, 1, 2]  # the space, without repeats
    assert searcher.num_duplicates >= 1 and driver.trials[-1]["origin"]["how"] == "random"


def test_warm_start_replays_earlier_trials_and_survives_restore(tmp_path):
    from raynas.search.searchers import Prior

    space = {"x": {"choice": ["a", "b", "c", "d"]}, "y": {"int": [0, 99]}}
    value = lambda c: float(c["x"] == "c") + 0.01 * c["y"]  # noqa: E731
    priors = [Prior(config=c, value=value(c)) for c in (Space(space).sample(seed=i) for i in range(40))]
    priors += [Prior(config={"x": "a", "y": 5}, value=None), Prior(config={"x": "e", "y": 5}, value=1.0)]
    warm = rl(space=space, seed=5)
    line = warm.warm_start(priors)
    assert line == "rl: 41 earlier trials replayed through the policy (1 as failed), 1 skipped (not replayable in this space)"
    probs = warm.probabilities([])["x"]
    assert probs[2] == max(probs) and probs[2] > 0.4, probs
    assert warm.num_updates == 41 and warm.num_suggested == 0
    warm.save(str(tmp_path / "searcher.pkl"))
    restored = rl(space=space, seed=0)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.probabilities([]) == warm.probabilities([])
    assert Driver(restored, objective=value).step(10) == Driver(warm, objective=value).step(10)


def test_given_points_are_learned_from():
    searcher = rl(space={"x": {"choice": ["a", "b"]}, "y": {"int": [0, 3]}})
    searcher.add_points([{"x": "b", "y": 2}])
    first = searcher.suggest("p")
    assert first["_raynas"]["how"] == "given point 1 of 1"
    searcher.on_trial_complete("p", {"score": 1.0})
    searcher.suggest("q")
    searcher.on_trial_complete("q", {"score": 0.0})
    assert [h[0] for h in searcher.history] == ["p", "q"]


def test_doctests():
    import doctest

    from raynas.search import rl as module

    failed, attempted = doctest.testmod(module)
    assert attempted >= 3 and failed == 0


def test_trials_on_other_data_teach_by_their_order_and_leave_the_baseline_alone():
    from raynas.search.searchers import Prior

    space = {"x": {"choice": ["a", "b", "c", "d"]}, "y": {"int": [0, 99]}}
    value = lambda c: 50.0 + 40 * (c["x"] == "c") + 0.1 * c["y"]  # noqa: E731 - percent, another scale
    priors = [Prior(config=c, value=value(c), same_data=False) for c in (Space(space).sample(seed=i) for i in range(40))]
    warm = rl(space=space, seed=5)
    line = warm.warm_start([*priors, Prior(config={"x": "a", "y": 1}, value=None, same_data=False)])
    assert line == "rl: 41 earlier trials replayed through the policy (1 as failed; 41 on other data, by their order only)"
    probs = warm.probabilities([])["x"]
    assert probs[2] == max(probs) and probs[2] > 0.4, probs
    assert warm.baseline is None and warm.reward_stats == [0, 0.0, 0.0] and warm.worst is None
    assert min(a for _, _, a in warm.history) == warm.history[-1][2] < -1  # the failed one: below the worst
    assert warm.num_updates == 41


def test_screened_out_candidates_are_forgotten():
    searcher = rl()
    searcher.suggest("t~0")
    searcher.suggest("t~1")
    searcher.screened_out("t~1", 0.5)
    searcher.on_trial_complete("t~0", {"score": 1.0})
    assert searcher.actions == {} and searcher.live == {} and [h[0] for h in searcher.history] == ["t~0"]
