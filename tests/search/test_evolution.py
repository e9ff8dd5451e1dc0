"""Regularized evolution driven directly (no Ray): random start, tournaments, aging, failures,
duplicates, modes, reproducibility, save/restore, and a search-quality check against random."""

import json
import math
import statistics

import pytest

import raynas
from raynas.errors import ConfigError
from raynas.experiment import ORIGIN_KEY, STATUS_KEY
from raynas.search.evolution import EvolutionSearcher
from raynas.search.registry import SEARCHERS
from raynas.search.searchers import RandomSearcher
from raynas.spaces import Space, flatten

DIGITS_LIKE = {
    "arch": {
        "depth": {"int": [1, 6]},
        "width": {"choice": [16, 32, 64, 128]},
        "stages": {"repeat": {"min": 1, "max": 4}, "block": {"k": {"choice": [3, 5, 7]}}},
    }
}
TARGET_KERNELS = [3, 5, 7, 5]


def score(config: dict) -> float:
    """A synthetic objective with one optimum (0): depth 4, width 64, kernels 3, 5, 7."""
    arch = config["arch"]
    kernels = [block["k"] for block in arch["stages"]]
    return (
        -abs(arch["depth"] - 4)
        - abs(math.log2(arch["width"]) - 6)
        - 1.5 * abs(len(kernels) - 3)
        - sum(k != t for k, t in zip(kernels, TARGET_KERNELS))
    )


def strip(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != ORIGIN_KEY}


def evolution(seed=0, mode="max", **options) -> EvolutionSearcher:
    searcher = EvolutionSearcher(Space(DIGITS_LIKE), seed=seed, **options)
    searcher.set_search_properties("score", mode, {})
    return searcher


class Driver:
    """Suggests and completes trials like Tune with ``concurrent`` slots, oldest finishing first."""

    def __init__(self, searcher, objective=score, concurrent=1, sign=1.0):
        self.searcher, self.objective, self.concurrent, self.sign = searcher, objective, concurrent, sign
        self.flying: list[tuple[str, dict]] = []
        self.trials: list[dict] = []  # every suggestion: id, config, origin

    def step(self, n: int = 1) -> list[dict]:
        out = []
        for _ in range(n):
            trial_id = f"t{len(self.trials):03d}"
            config = self.searcher.suggest(trial_id)
            trial = {"id": trial_id, "config": strip(config), "origin": config[ORIGIN_KEY]}
            self.trials.append(trial)
            out.append(trial)
            self.flying.append((trial_id, strip(config)))
            if len(self.flying) >= self.concurrent:
                self.complete()
        return out

    def complete(self) -> None:
        trial_id, config = self.flying.pop(0)
        self.searcher.on_trial_complete(trial_id, {"score": self.sign * self.objective(config), "epoch": 1})

    def finish(self) -> None:
        while self.flying:
            self.complete()

    def best(self) -> float:
        return max(score(t["config"]) for t in self.trials)


def test_first_population_is_random_then_mutations_of_tournament_winners():
    searcher = evolution(population_size=5, sample_size=5)  # a full tournament: the winner is the best
    driver = Driver(searcher)
    start = driver.step(5)
    assert [t["origin"] for t in start] == [{"searcher": "evolution", "how": "random", "parent": None}] * 5
    for trial in driver.step(30):
        assert trial["origin"]["searcher"] == "evolution" and trial["origin"]["how"] == "mutation"
        parent = trial["origin"]["parent"]
        # The population as it was when this trial was suggested: the 5 latest completed before it.
        members = [t for t in driver.trials if t["id"] < trial["id"]][-5:]
        assert parent in [m["id"] for m in members]
        parent_config = next(t["config"] for t in driver.trials if t["id"] == parent)
        assert score(parent_config) == max(score(m["config"]) for m in members)  # ties: any of the best
        assert searcher.space.contains(trial["config"]) and trial["config"] != parent_config
        # One site changed: one flat key, or a stage inserted/removed (the keys after it shift).
        before, after = parent_config["arch"]["stages"], trial["config"]["arch"]["stages"]
        changed = {k for k, v in flatten(trial["config"]).items() if flatten(parent_config).get(k) != v}
        assert len(changed) == 1 or abs(len(before) - len(after)) == 1, changed


def test_parents_come_from_the_population_through_tournaments():
    driver = Driver(evolution(population_size=6, sample_size=2, seed=3))
    driver.step(6)
    ranks = []
    for trial in driver.step(120):
        if trial["origin"]["how"] != "mutation":
            continue
        members = {t["id"]: score(t["config"]) for t in [t for t in driver.trials if t["id"] < trial["id"]][-6:]}
        parent = trial["origin"]["parent"]
        assert parent in members
        ranks.append(sum(value > members[parent] for value in members.values()))  # members strictly better
    # The fittest of 2 distinct members out of 6: never the strictly worst; the best (rank 0)
    # wins at least 1/3 of the tournaments (more with ties), the mean rank is 4/3 without ties.
    assert max(ranks) <= 4 and ranks.count(0) > len(ranks) / 3
    assert statistics.mean(ranks) < 1.5


def test_while_the_random_start_is_in_flight_it_keeps_sampling():
    searcher = evolution(population_size=3, sample_size=2)
    first = [searcher.suggest(f"t{i}") for i in range(6)]  # nothing completed yet
    assert [c[ORIGIN_KEY]["how"] for c in first] == ["random"] * 6
    searcher.on_trial_complete("t4", {"score": 1.0, "epoch": 1})
    child = searcher.suggest("t6")
    assert child[ORIGIN_KEY] == {"searcher": "evolution", "how": "mutation", "parent": "t4"}


def test_aging_drops_the_oldest_not_the_worst():
    searcher = evolution(population_size=3, sample_size=1)
    for i, value in enumerate([10.0, 1.0, 2.0, 3.0]):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"score": value, "epoch": 1})
    assert searcher.population_summary() == [("t1", 1.0), ("t2", 2.0), ("t3", 3.0)]  # t0 was the best


def test_fitness_is_the_best_epoch_also_when_stopped_early():
    searcher = evolution(population_size=2)
    searcher.suggest("a")
    for epoch, value in enumerate([0.3, 0.7, 0.5], start=1):
        searcher.on_trial_result("a", {"score": value, "epoch": epoch})
    searcher.on_trial_complete("a", {"score": 0.5, "epoch": 3})  # e.g. stopped by ASHA at epoch 3
    assert searcher.population_summary() == [("a", 0.7)]


def test_a_trial_stopped_while_paused_keeps_its_best_score():
    # HyperBand stops the losers of a bracket while they are PAUSED; Tune then completes them
    # with no result, which is not a failure.
    searcher = evolution(population_size=2)
    searcher.suggest("a")
    for epoch, value in enumerate([0.3, 0.7], start=1):
        searcher.on_trial_result("a", {"score": value, "epoch": epoch})
    searcher.on_trial_complete("a")
    assert searcher.population_summary() == [("a", 0.7)]
    searcher.suggest("b")
    searcher.on_trial_complete("b", error=True)  # an error stays a failure
    assert searcher.population_summary()[1] == ("b", -math.inf)


def test_a_stopped_trial_is_pruned_in_the_optuna_study_also_when_stopped_while_paused():
    import optuna

    from raynas.search.searchers import OptunaSearcher

    searcher = OptunaSearcher(Space({"x": {"float": [0, 1]}}), metric="score", mode="max", seed=0, max_epochs=8)
    searcher.suggest("a")
    for epoch in (1, 2):
        searcher.on_trial_result("a", {"score": 0.1 * epoch, "epoch": epoch})
    searcher.on_trial_complete("a")
    (trial,) = searcher.study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values == {1: 0.1, 2: 0.2}


def test_failed_trials_never_become_parents_while_a_scored_one_exists():
    searcher = evolution(population_size=8, sample_size=3, seed=1)
    for i in range(8):
        searcher.suggest(f"t{i}")
    # Three ways to fail: an error, a trial that reports failure, one that never reports the metric.
    searcher.on_trial_complete("t0", error=True)
    searcher.on_trial_complete("t1", {STATUS_KEY: "failed", "epoch": 1})
    searcher.on_trial_complete("t2", {STATUS_KEY: "rejected"})
    searcher.on_trial_complete("t3", {"epoch": 1})
    for i in range(4, 7):
        searcher.on_trial_complete(f"t{i}", error=True)
    searcher.on_trial_complete("t7", {"score": -100.0, "epoch": 1})  # a poor score still beats a failure
    assert [f for _, f in searcher.population_summary()] == [-math.inf] * 7 + [-100.0]
    origins = [searcher.suggest(f"c{i}")[ORIGIN_KEY] for i in range(10)]
    assert all(o["how"] == "mutation" and o["parent"] == "t7" for o in origins)


def test_a_population_of_failures_samples_at_random():
    searcher = evolution(population_size=2, sample_size=2)
    for i in range(2):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", error=True)
    assert searcher.suggest("t2")[ORIGIN_KEY]["how"] == "random"


def test_mode_min_makes_the_same_choices_on_the_negated_objective():
    as_max = Driver(evolution(seed=4, population_size=6, sample_size=3), concurrent=2)
    as_min = Driver(evolution(seed=4, mode="min", population_size=6, sample_size=3), concurrent=2, sign=-1.0)
    as_max.step(40)
    as_min.step(40)
    assert as_max.trials == as_min.trials
    assert sum(t["origin"]["how"] == "mutation" for t in as_min.trials) >= 30
    failing = evolution(mode="min", population_size=2)
    failing.suggest("x")
    failing.on_trial_complete("x", error=True)
    assert failing.population_summary() == [("x", math.inf)]  # the worst value when minimizing


def test_the_same_seed_gives_the_same_search():
    runs = []
    for seed in (7, 7, 8):
        driver = Driver(evolution(seed=seed, population_size=5, sample_size=2, mutations=2), concurrent=3)
        driver.step(40)
        runs.append(driver.trials)
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_save_and_restore_continue_exactly(tmp_path):
    original = evolution(seed=2, population_size=5, sample_size=2)
    driver = Driver(original, concurrent=3)
    driver.step(12)  # two trials still in flight, mutations under way
    original.save(str(tmp_path / "searcher.pkl"))

    fresh = EvolutionSearcher(Space(DIGITS_LIKE), seed=99)  # other settings: all come from the file
    fresh.restore(str(tmp_path / "searcher.pkl"))
    resumed = Driver(fresh, concurrent=3)
    resumed.flying, resumed.trials = list(driver.flying), list(driver.trials)

    assert resumed.step(20) == driver.step(20)
    assert fresh.population == original.population and fresh.seen == original.seen


def test_children_are_not_repeats_and_a_used_up_neighbourhood_falls_back_to_random():
    driver = Driver(evolution(seed=5, population_size=8, sample_size=3))
    driver.step(200)
    keys = [json.dumps(t["config"], sort_keys=True) for t in driver.trials]
    assert len(set(keys)) == len(keys)  # 200 distinct out of 2,880

    tiny = EvolutionSearcher(Space({"x": {"int": [0, 2]}}), seed=0, population_size=2, sample_size=2)
    tiny.set_search_properties("score", "max", {})
    small = Driver(tiny, objective=lambda c: c["x"])
    small.step(6)
    assert len({t["config"]["x"] for t in small.trials[:3]}) == 3  # the space, without repeats
    assert tiny.num_duplicates >= 1 and small.trials[-1]["origin"]["how"] == "random"


def test_evolution_beats_random_search_within_the_same_budget():
    # 60 trials out of 2,880 configurations, two at a time, over ten seeds. Over 40 seeds
    # evolution finds on average 1.4 points more (sd of a 10-seed mean: 0.25) and never less.
    evolved, sampled = [], []
    for seed in range(10):
        driver = Driver(evolution(seed=seed, population_size=8, sample_size=4), concurrent=2)
        driver.step(60)
        driver.finish()
        evolved.append(driver.best())
        baseline = RandomSearcher(Space(DIGITS_LIKE), seed=seed)
        baseline.set_search_properties("score", "max", {})
        driver = Driver(baseline, concurrent=2)
        driver.step(60)
        sampled.append(driver.best())
    assert statistics.mean(evolved) >= statistics.mean(sampled) + 0.75, (evolved, sampled)
    assert sum(e >= s for e, s in zip(evolved, sampled)) >= 9, (evolved, sampled)


def test_parameters_are_checked():
    space = Space(DIGITS_LIKE)
    for bad in ({"population_size": 1}, {"sample_size": 0}, {"mutations": 0}, {"population_size": 2.5}, {"mutations": True}):
        with pytest.raises(ValueError, match="must be an integer"):
            EvolutionSearcher(space, **bad)


def test_registered_and_built_from_an_experiment():
    assert "evolution" in SEARCHERS and set(SEARCHERS["evolution"].params) == {"population_size", "sample_size", "mutations"}
    raw = {"name": "e", "space": DIGITS_LIKE, "search": {"searcher": "evolution", "seed": 3, "population_size": 4, "mutations": 2}}
    searcher = SEARCHERS["evolution"].build(raynas.spec_from_dict(raw))
    assert isinstance(searcher, EvolutionSearcher)
    # sample_size defaults to three quarters of the population, rounded up.
    assert (searcher.seed, searcher.population_size, searcher.sample_size, searcher.mutations) == (3, 4, 3, 2)
    with pytest.raises(ConfigError, match=r"search\.sample_size: .*<= population_size \(4\), got 5"):
        raynas.spec_from_dict({**raw, "search": {**raw["search"], "sample_size": 5}})
    # Tune calls set_search_properties only with a param_space, which raynas does not pass.
    assert (searcher.metric, searcher.mode) == ("val_acc", "max")
    with pytest.raises(ConfigError, match=r"search\.population_size.*>= 2"):
        raynas.spec_from_dict({**raw, "search": {"searcher": "evolution", "population_size": 1}})


@pytest.mark.parametrize(
    "search, sizes",
    [
        ({"num_trials": 120}, (12, 9)),  # a tenth of the budget, tournaments of three quarters
        ({"num_trials": 30}, (6, 5)),  # never below 6 ...
        ({}, (6, 5)),  # ... also with the default budget (10 trials)
        ({"num_trials": 5000}, (20, 15)),  # ... nor above 20
        ({"num_trials": 120, "population_size": 30}, (30, 23)),  # the user's population, its tournament derived
        ({"num_trials": 120, "sample_size": 2}, (12, 2)),
        ({"num_trials": 120, "population_size": 20, "sample_size": 5}, (20, 5)),  # explicit values win
    ],
)
def test_default_sizes_follow_the_budget(search, sizes):
    raw = {"name": "e", "space": DIGITS_LIKE, "search": {"searcher": "evolution", **search}}
    spec = raynas.spec_from_dict(raw)
    assert (spec.search.options["population_size"], spec.search.options["sample_size"]) == sizes
    searcher = SEARCHERS["evolution"].build(spec)
    assert (searcher.population_size, searcher.sample_size) == sizes


def test_python_api_derives_the_sizes_from_num_trials():
    space = Space(DIGITS_LIKE)
    assert (EvolutionSearcher(space, num_trials=120).population_size, EvolutionSearcher(space, num_trials=120).sample_size) == (12, 9)
    assert (EvolutionSearcher(space).population_size, EvolutionSearcher(space).sample_size) == (20, 15)  # no budget
    assert EvolutionSearcher(space, num_trials=120, population_size=8).sample_size == 6
    # A derived default is never taken for a bad explicit value.
    with pytest.raises(ValueError, match="sample_size must be an integer >= 1"):
        EvolutionSearcher(space, num_trials=120, sample_size=0)


def test_budget_aware_defaults_reach_good_configurations_sooner_than_the_old_ones():
    # 60 trials of 2,880 configurations, two at a time, 20 seeds: the first trial within 1
    # point of the optimum comes sooner with the defaults for 60 trials (6, 5) than with a
    # population of 20 and tournaments of 5 (which spend a third of the budget sampling);
    # over 100 seeds the medians are 20 and 40.5 trials.
    def first_good(**options):
        out = []
        for seed in range(20):
            driver = Driver(evolution(seed=seed, **options), concurrent=2)
            driver.step(60)
            driver.finish()
            out.append(next((i for i, t in enumerate(driver.trials) if score(t["config"]) >= -1), 60))
        return statistics.median(out)

    assert first_good(num_trials=60) < first_good(population_size=20, sample_size=5)
