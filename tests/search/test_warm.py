"""Searchers started from earlier trials (search.warm_start) and given points (search.points), no Ray."""

import optuna
import pytest

from raynas.search.evolution import EvolutionSearcher
from raynas.search.searchers import OptunaSearcher, Prior, RandomSearcher
from raynas.spaces import Space

SPACE = Space({"arch": {"x": {"int": [0, 30]}, "k": {"choice": [3, 5, 7]}}, "train": {"lr": {"float": [1e-3, 1e-1], "log": True}}})


def score(config):
    """A smooth objective whose best is at x=23, k=5."""
    return -abs(config["arch"]["x"] - 23) - 3 * (config["arch"]["k"] != 5)


def priors(n=40, seed=0):
    out = []
    for i in range(n):
        config = SPACE.sample(seed=seed * 1000 + i)
        complete = i % 4 != 0
        out.append(Prior(config=config, value=score(config), epochs=4 if complete else 1, complete=complete,
                         curve={1: score(config) - 1.0, **({4: score(config)} if complete else {})}, source=f"old/t{i}"))
    out.append(Prior(config=SPACE.sample(seed=999), value=None, epochs=1, complete=False, source="old/failed"))
    return out


def run(searcher, n):
    """Suggests and completes ``n`` trials one at a time; returns the configs in order."""
    configs = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        clean = {k: v for k, v in config.items() if k != "_raynas"}
        searcher.on_trial_complete(f"t{i}", {"score": score(clean), "epoch": 4})
        configs.append(config)
    return configs


def test_optuna_adds_earlier_trials_to_its_study_complete_pruned_and_failed():
    searcher = OptunaSearcher(SPACE, metric="score", mode="max", max_epochs=4)
    line = searcher.warm_start(priors())
    assert line == "optuna: 41 earlier trials added to the study (30 complete, 10 pruned, 1 failed)"
    trials = searcher._ensure_study().trials
    State = optuna.trial.TrialState
    assert [t.state for t in trials].count(State.PRUNED) == 10 and trials[-1].state is State.FAIL
    assert trials[1].params == SPACE.params(priors()[1].config) and trials[1].value == priors()[1].value
    assert trials[0].intermediate_values == {1: priors()[0].value - 1.0}


def test_warm_started_optuna_and_evolution_find_the_optimum_sooner_than_cold_ones():
    for make in (lambda: OptunaSearcher(SPACE, metric="score", mode="max", seed=3, max_epochs=4),
                 lambda: EvolutionSearcher(SPACE, metric="score", mode="max", seed=3, num_trials=30)):
        cold, warm = make(), make()
        warm.warm_start(priors(seed=1))
        mean = lambda configs: sum(score({k: v for k, v in c.items() if k != "_raynas"}) for c in configs) / len(configs)
        warm_configs = run(warm, 8)
        # No random phase: the earlier trials are modelled (TPE) or bred (evolution) at once.
        assert all(c["_raynas"]["how"] in ("tpe", "mutation") for c in warm_configs), [c["_raynas"] for c in warm_configs]
        assert mean(warm_configs) > mean(run(cold, 8)) + 3, (mean(warm_configs), mean(run(make(), 8)))


def test_evolution_population_starts_from_the_earlier_best_and_breeds_from_it():
    searcher = EvolutionSearcher(SPACE, metric="score", mode="max", population_size=5, sample_size=5)
    earlier = priors()
    line = searcher.warm_start(earlier)
    best5 = sorted((p.value for p in earlier if p.value is not None), reverse=True)[:5]
    assert sorted(f for _, f in searcher.population_summary()) == sorted(best5)
    assert line.startswith("evolution: the population starts from the best 5 of 41 earlier trials")
    child = searcher.suggest("a")["_raynas"]
    assert child["how"] == "mutation" and child["parent"].startswith("warm:old/t")


def test_a_searcher_that_cannot_learn_from_earlier_trials_says_so():
    assert RandomSearcher(SPACE).warm_start(priors()) == "random: does not learn from earlier trials; the 41 given are not used"


@pytest.mark.parametrize("make", [
    lambda: RandomSearcher(SPACE, metric="score", mode="max", seed=2),
    lambda: OptunaSearcher(SPACE, metric="score", mode="max", seed=2),
    lambda: EvolutionSearcher(SPACE, metric="score", mode="max", seed=2, population_size=4),
])
def test_given_points_come_first_in_order_and_the_searcher_goes_on_after_them(make):
    points = [{"arch": {"x": 1, "k": 3}, "train": {"lr": 0.01}}, {"arch": {"x": 2, "k": 7}, "train": {"lr": 0.02}}]
    searcher = make()
    searcher.add_points(points)
    configs = run(searcher, 4)
    assert [{k: v for k, v in c.items() if k != "_raynas"} for c in configs[:2]] == points
    assert [c["_raynas"]["how"] for c in configs[:2]] == ["given point 1 of 2", "given point 2 of 2"]
    assert not configs[2]["_raynas"]["how"].startswith("given")


def test_a_point_that_names_its_origin_keeps_it():
    # How a gradient search's derived cell reaches its training stage (raynas.search.stages.derived_spec).
    searcher = RandomSearcher(SPACE, metric="score", mode="max", seed=2)
    origin = {"searcher": "gradient", "how": "cell derived after 4 supernet epochs"}
    searcher.add_points([{"arch": {"x": 1, "k": 3}, "train": {"lr": 0.01}, "_raynas": origin}])
    first, second = run(searcher, 2)
    assert first == {"arch": {"x": 1, "k": 3}, "train": {"lr": 0.01}, "_raynas": {**origin, "parent": None}}
    assert second["_raynas"]["searcher"] == "random"


@pytest.mark.parametrize("make", [
    lambda: OptunaSearcher(SPACE, metric="score", mode="max", seed=2),
    lambda: EvolutionSearcher(SPACE, metric="score", mode="max", seed=2, population_size=4),
])
def test_warm_start_and_points_survive_save_and_restore(make, tmp_path):
    original, twin = make(), make()
    for s in (original, twin):
        s.warm_start(priors())
        s.add_points([{"arch": {"x": 9, "k": 3}, "train": {"lr": 0.05}}])
    run(original, 3)
    run(twin, 3)
    original.save(str(tmp_path / "state.pkl"))
    restored = make()
    restored.restore(str(tmp_path / "state.pkl"))
    assert run(restored, 5) == run(twin, 5)


@pytest.mark.parametrize("make, first", [
    (lambda: OptunaSearcher(SPACE, metric="score", mode="max", seed=3, n_startup_trials=4), 4),
    (lambda: EvolutionSearcher(SPACE, metric="score", mode="max", seed=3, population_size=5), 5),
])
def test_trials_on_other_data_are_not_mixed_in_by_value_their_best_are_evaluated_first(make, first):
    """Another data set's scores are on another scale: only their order carries over."""
    earlier = priors()
    for p in earlier:
        p.same_data = False
    searcher = make()
    line = searcher.warm_start(earlier)
    assert f"the best {first} of 41 trials on other data are evaluated first" in line
    best = sorted((p for p in earlier if p.value is not None), key=lambda p: -p.value)[:first]
    configs = run(searcher, first + 1)
    assert [{k: v for k, v in c.items() if k != "_raynas"} for c in configs[:first]] == [p.config for p in best]
    if isinstance(searcher, OptunaSearcher):
        assert len(searcher._ensure_study().trials) == first + 1  # no earlier values in the study
    else:
        assert all(not m[0].startswith("warm:") for m in searcher.population)


def test_rl_starts_from_an_earlier_policy_where_the_spaces_match(tmp_path):
    import pickle

    import torch

    from raynas.search.rl import RLSearcher

    earlier = RLSearcher(SPACE, metric="score", mode="max", seed=0)
    run(earlier, 30)
    earlier.save(str(tmp_path / "searcher-state.pkl"))
    saved = pickle.loads((tmp_path / "searcher-state.pkl").read_bytes())

    later = RLSearcher(SPACE, metric="score", mode="max", seed=5)
    line = later.adopt(saved, same_data=True, source="old")
    assert line == "rl: starts from the policy of old (30 updates, with its baseline and reward scale)"
    assert all(torch.equal(later.params[k], earlier.params[k]) for k in earlier.params)
    assert later.baseline == earlier.baseline
    # Its trials are in the policy already: not learned twice, only remembered.
    priors = [Prior(config={k: v for k, v in c.items() if k != "_raynas"}, value=1.0, source=f"old/t{i}")
              for i, c in enumerate([earlier.suggest("x")])]
    assert later.warm_start(priors) == "rl: the 1 earlier trials are in the policy it started from"
    assert later.num_updates == 0 and all(torch.equal(later.params[k], earlier.params[k]) for k in earlier.params)
    # The learned policy carries over: its samples score better than a fresh controller's.
    fresh = RLSearcher(SPACE, metric="score", mode="max", seed=5)
    mean = lambda configs: sum(score({k: v for k, v in c.items() if k != "_raynas"}) for c in configs) / len(configs)
    assert mean([later.suggest(f"a{i}") for i in range(20)]) > mean([fresh.suggest(f"b{i}") for i in range(20)])

    other_space = Space({"arch": {"x": {"int": [0, 40]}, "k": {"choice": [3, 5, 7]}}, "train": {"lr": {"float": [1e-3, 1e-1], "log": True}}})
    assert RLSearcher(other_space, metric="score", mode="max").adopt(saved, same_data=True, source="old") is None
    assert RLSearcher(SPACE, metric="score", mode="max", hidden_size=16).adopt(saved, same_data=True, source="old") is None
    on_other_data = RLSearcher(SPACE, metric="score", mode="max")
    assert "other data: its baseline is not used" in on_other_data.adopt(saved, same_data=False, source="old")
    assert on_other_data.baseline is None
