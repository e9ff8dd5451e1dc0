"""Searcher state survives save/restore exactly (what `raynas resume` relies on)."""

import pytest

from raynas.search.searchers import OptunaSearcher
from raynas.spaces import Space

SPACE = Space({
    "arch": {"depth": {"int": [1, 4]}, "width": {"choice": [16, 32, 64, 128]}},
    "train": {"lr": {"float": [1e-4, 1e-1], "log": True}},
})


def _score(config) -> dict:
    arch = config["arch"]
    return {"val_acc": arch["depth"] / 4 + arch["width"] / 128 - abs(config["train"]["lr"] - 0.01),
            "params": arch["depth"] * arch["width"] ** 2, "epoch": 4}


def _searcher(sampler: str, multi: bool) -> OptunaSearcher:
    objectives = [("val_acc", "max"), ("params", "min")] if multi else None
    return OptunaSearcher(SPACE, metric="val_acc", mode="max", seed=3, sampler=sampler, n_startup_trials=4,
                          max_epochs=4, objectives=objectives, constraints=multi)


def _step(searcher, i: int, complete: bool = True) -> dict:
    config = searcher.suggest(f"t{i}")
    if complete:
        result = _score(config)
        if searcher.constraints:
            result["raynas_violation"] = [0.0, 0.0, 0.0]
        searcher.on_trial_result(f"t{i}", result)
        searcher.on_trial_complete(f"t{i}", result)
    return config


@pytest.mark.parametrize("sampler, multi", [("tpe", False), ("nsga2", True), ("tpe", True), ("random", False)])
def test_optuna_searcher_resumes_the_same_sequence(tmp_path, sampler, multi):
    """The saved state holds no sampler object (Optuna 5.1's GA samplers hold a thread lock,
    which made every multi-objective run crash at Tune's first snapshot); the restored
    searcher suggests what an uninterrupted one does, live trials included."""
    from optuna.trial import TrialState

    uninterrupted, first = _searcher(sampler, multi), _searcher(sampler, multi)
    for searcher in (uninterrupted, first):
        for i in range(10):
            _step(searcher, i)
        _step(searcher, 10, complete=False)  # live at the snapshot
    path = str(tmp_path / "searcher.pkl")
    first.save(path)
    resumed = _searcher(sampler, multi)
    resumed.restore(path)
    assert [t.state for t in resumed.study.get_trials()] == [TrialState.COMPLETE] * 10 + [TrialState.RUNNING]
    for searcher in (uninterrupted, resumed):
        result = _score(searcher.live["t10"])
        searcher.on_trial_result("t10", result)
        searcher.on_trial_complete("t10", {**result, "raynas_violation": [0.0, 0.0, 0.0]})
    assert [_step(uninterrupted, i) for i in range(11, 30)] == [_step(resumed, i) for i in range(11, 30)]
