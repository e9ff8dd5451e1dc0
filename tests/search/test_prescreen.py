"""search.prescreen's searcher, with a scorer in the test process (no Ray): N candidates per
trial, the best by the proxy trains, the others are screened out and told to the searcher."""

import json
import math

import optuna
import pytest

from raynas.search.evolution import EvolutionSearcher
from raynas.search.prescreen import SCREENED_FILE, PrescreenSearcher
from raynas.search.searchers import OptunaSearcher, RandomSearcher
from raynas.spaces import Space

SPACE = Space({"arch": {"x": {"int": [0, 50]}, "k": {"choice": [3, 5]}}})


def proxy(configs):
    """Higher for larger x; NaN (does not build) for x == 13."""
    return [math.nan if c["arch"]["x"] == 13 else float(c["arch"]["x"]) for c in configs]


def wrapped(inner, candidates=4):
    searcher = PrescreenSearcher(inner, "naswot", candidates)
    searcher.attach(proxy)
    return searcher


def drive(searcher, n):
    out = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        searcher.on_trial_result(f"t{i}", {"acc": 0.5, "epoch": 1})
        searcher.on_trial_complete(f"t{i}", {"acc": 0.5, "epoch": 1})
        out.append(config)
    return out


@pytest.mark.parametrize("make", [
    lambda: RandomSearcher(SPACE, metric="acc", mode="max", seed=1),
    lambda: EvolutionSearcher(SPACE, metric="acc", mode="max", seed=1, population_size=3),
    lambda: OptunaSearcher(SPACE, metric="acc", mode="max", seed=1, max_epochs=1),
])
def test_the_best_of_the_candidates_by_the_proxy_trains_and_the_rest_are_screened_out(make):
    searcher = wrapped(make())
    configs = drive(searcher, 5)
    assert len(searcher.screened) == 5 * 3
    for i, config in enumerate(configs):
        others = [s for s in searcher.screened if s["for"] == f"t{i}"]
        assert len(others) == 3
        assert all(s["naswot"] is None or s["naswot"] <= config["arch"]["x"] for s in others)
        assert config["_raynas"]["prescreen"] == f"naswot {config['arch']['x']:.4g}, best of 4"
    assert not searcher.inner.live  # every candidate is accounted for


def test_optuna_records_the_screened_out_candidates_as_pruned_before_any_epoch():
    searcher = wrapped(OptunaSearcher(SPACE, metric="acc", mode="max", seed=1, max_epochs=1))
    drive(searcher, 3)
    states = [t.state for t in searcher.inner._ensure_study().trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == 9 and states.count(optuna.trial.TrialState.COMPLETE) == 3
    pruned = [t for t in searcher.inner._ensure_study().trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(not t.intermediate_values for t in pruned)


def test_a_candidate_whose_model_does_not_build_never_wins_over_one_that_does():
    searcher = wrapped(RandomSearcher(Space({"arch": {"x": {"choice": [13, 2]}}}), metric="acc", mode="max"), candidates=6)
    assert all(c["arch"]["x"] == 2 for c in drive(searcher, 4))


def test_given_points_train_as_given_without_a_prescreen():
    inner = RandomSearcher(SPACE, metric="acc", mode="max")
    inner.add_points([{"arch": {"x": 0, "k": 3}}])
    configs = drive(wrapped(inner), 2)
    assert configs[0]["arch"] == {"x": 0, "k": 3} and "prescreen" not in configs[0]["_raynas"]
    assert "prescreen" in configs[1]["_raynas"]


def test_save_and_restore_continue_exactly_and_write_the_screened_candidates(tmp_path):
    make = lambda: wrapped(EvolutionSearcher(SPACE, metric="acc", mode="max", seed=4, population_size=3))
    original, twin = make(), make()
    drive(original, 3)
    drive(twin, 3)
    original.save(str(tmp_path / "searcher-state.pkl"))
    written = json.loads((tmp_path / SCREENED_FILE).read_text())
    assert written["proxy"] == "naswot" and len(written["screened"]) == 9
    restored = make()
    restored.restore(str(tmp_path / "searcher-state.pkl"))
    assert drive(restored, 3) == drive(twin, 3)


def test_the_scorer_is_not_pickled_with_the_searcher():
    import pickle

    searcher = wrapped(RandomSearcher(SPACE, metric="acc", mode="max"))
    assert pickle.loads(pickle.dumps(searcher))._scorer is None


def test_a_prescreen_needs_a_model_raynas_builds():
    import raynas
    from raynas.errors import ConfigError

    raw = {"name": "x", "trainable": "tests.integration.toy_trainable:train", "space": {"x": {"int": [0, 3]}},
           "search": {"prescreen": {"proxy": "naswot"}}, "metrics": ["score"], "objective": {"metric": "score"}}
    with pytest.raises(ConfigError, match=r"search.prescreen: scores the models raynas builds from space.arch; the trainable "):
        raynas.spec_from_dict(raw, check_imports=False)
