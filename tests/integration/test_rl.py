"""The RL controller on real Ray Tune: with ASHA (stopped trials rewarded with what they reached)
and HyperBand (trials paused and stopped while paused), its state saved with the experiment."""

import pickle

import pytest

import raynas
from raynas.experiment import read_journal
from raynas.spaces import Space

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("shared_ray")]

SPACE = {
    "arch": {
        "depth": {"int": [1, 2]},
        "width": {"choice": [16, 32, 64]},
        "activation": {"choice": ["relu", "gelu"]},
    },
    "train": {"lr": {"float": [1e-3, 3e-2], "log": True}, "optimizer": {"choice": ["adam", "sgd"]},
              "momentum": {"float": [0.5, 0.9], "when": {"optimizer": "sgd"}}},
}


@pytest.mark.parametrize(
    "scheduler, live",
    # HyperBand halves a bracket once all its trials exist: max_concurrent stays unset.
    [({"name": "asha", "grace_period": 1, "reduction_factor": 2}, {"max_concurrent": 2}),
     ({"name": "hyperband", "reduction_factor": 2}, {})],
)
def test_rl_learns_from_every_trial_with_asha_and_hyperband(tmp_path, scheduler, live):
    spec = raynas.spec_from_dict(
        {
            "name": f"rl_{scheduler['name']}",
            "space": SPACE,
            "search": {"searcher": "rl", "num_trials": 6, "seed": 3, **live},
            "scheduler": scheduler,
            "max_epochs": 3,
        }
    )
    folder = raynas.run(spec, storage_path=str(tmp_path), progress=False)
    journal = sorted(read_journal(folder).values(), key=lambda r: r.order)
    assert len(journal) == 6 and all(r.status.value in ("completed", "stopped") for r in journal), [
        (r.status.value, r.error) for r in journal
    ]
    assert all(Space(SPACE).contains(r.config) and r.origin["searcher"] == "rl" for r in journal)
    # One REINFORCE step per finished trial, each rewarded with the best accuracy it reached
    # (also the trials the scheduler stopped, while running or paused).
    state = pickle.load(open(next(folder.glob("searcher-state-*.pkl")), "rb"))["state"]
    rewards = {trial_id: reward for trial_id, reward, _ in state["history"]}
    assert state["num_updates"] == 6 and state["num_failed"] == 0 and not state["actions"]
    assert rewards == {r.trial_id: pytest.approx(r.best) for r in journal}
