"""Prescreening: any searcher proposes several candidates per trial, a zero-cost proxy scores
them without training, and only the best one trains (``search.prescreen``).

The candidates are scored as Ray tasks on the cluster's workers, in parallel, each building the
model the trial would build and computing the proxy on one batch of training data
(:func:`raynas.trainables.trainable.score_config`). The tasks reserve no CPU: they last a forward
and backward pass, and trial actors that Tune keeps for reuse hold the CPUs, so a reserving task
could wait behind them forever. The candidates not chosen are told to the searcher as screened
out (:meth:`SpaceSearcher.screened_out`: Optuna records them as pruned before their first epoch,
so TPE ranks them below every trained trial) and written to ``screened.json`` in the results
folder.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ray.tune.search import Searcher

from raynas.experiment import ORIGIN_KEY, SCREENED_FILE, atomic_file, write_json_atomic

__all__ = ["PrescreenSearcher", "SCREENED_FILE", "make_scorer"]

#: Seconds to wait for the candidates' scores before the run stops with an error.
SCORE_TIMEOUT = 600


class PrescreenSearcher(Searcher):
    """Wraps a :class:`~raynas.search.searchers.SpaceSearcher`: ``candidates`` suggestions per
    trial, the one with the highest ``proxy`` score trains.

    Args:
        inner: The searcher that proposes (any of raynas's).
        proxy: Name of the zero-cost proxy (:data:`raynas.trainables.proxies.PROXIES`).
        candidates: Suggestions scored per trial (at least 2).

    The scorer (``configs -> scores``, NaN for an architecture that does not build) is attached
    by the runner with :meth:`attach`, on a new run and on a resume; it is not part of the state.
    """

    def __init__(self, inner: Any, proxy: str, candidates: int):
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self.proxy = proxy
        self.candidates = int(candidates)
        self.chosen: dict[str, str] = {}  # trial_id -> the inner searcher's id of the one that trains
        self.screened: list[dict] = []  # candidates not trained: {"for", "config", proxy, "best"}
        self._scorer: Callable[[list[dict]], list[float]] | None = None

    def attach(self, scorer: Callable[[list[dict]], list[float]]) -> None:
        self._scorer = scorer

    @property
    def space(self):
        return self.inner.space

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: Dict, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def add_points(self, points: list[dict]) -> None:
        self.inner.add_points(points)

    def warm_start(self, priors: list) -> str:
        return self.inner.warm_start(priors)

    def adopt(self, saved: dict, **kwargs) -> str | None:
        return self.inner.adopt(saved, **kwargs)

    # -- Tune hooks
    def suggest(self, trial_id: str) -> Optional[Dict]:
        if self.inner.points:  # given points train as given
            config = self.inner.suggest(trial_id)
            self.chosen[trial_id] = trial_id
            return config
        configs, ids = [], []
        for k in range(self.candidates):
            inner_id = f"{trial_id}~{k}"
            config = self.inner.suggest(inner_id)
            if config is None or config == Searcher.FINISHED:
                if not configs:
                    return config
                break
            configs.append(config)
            ids.append(inner_id)
        if self._scorer is None:
            raise RuntimeError("search.prescreen: no scorer attached (raynas's runner attaches one)")
        scores = [float(s) for s in self._scorer([_plain(c) for c in configs])]
        best = max(range(len(configs)), key=lambda i: (math.isfinite(scores[i]), scores[i] if math.isfinite(scores[i]) else 0.0))
        for i, (config, inner_id) in enumerate(zip(configs, ids)):
            if i != best:
                self.inner.screened_out(inner_id, scores[i])
                self.screened.append({"for": trial_id, "config": _plain(config), self.proxy: _json_number(scores[i])})
        self.chosen[trial_id] = ids[best]
        config = dict(configs[best])
        origin = dict(config.get(ORIGIN_KEY) or {})
        origin["prescreen"] = f"{self.proxy} {scores[best]:.4g}, best of {len(configs)}"
        config[ORIGIN_KEY] = origin
        return config

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        self.inner.on_trial_result(self.chosen.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        self.inner.on_trial_complete(self.chosen.pop(trial_id, trial_id), result, error)

    # -- persistence
    def get_state(self) -> Dict:
        return {"inner": self.inner.get_state(), "chosen": dict(self.chosen), "screened": list(self.screened)}

    def set_state(self, state: Dict) -> None:
        self.inner.set_state(state["inner"])
        self.chosen = dict(state["chosen"])
        self.screened = list(state["screened"])

    def save(self, checkpoint_path: str) -> None:
        with atomic_file(checkpoint_path, "wb") as f:
            pickle.dump({"state": self.get_state(), "space": self.inner.space.to_dict()}, f)
        write_json_atomic(Path(checkpoint_path).parent / SCREENED_FILE, {"proxy": self.proxy, "screened": self.screened})

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f)["state"])

    def __getstate__(self) -> dict:
        # Tune pickles the searcher into tuner.pkl: the scorer (it holds an object ref) stays out.
        return {k: v for k, v in self.__dict__.items() if k != "_scorer"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._scorer = None


def _plain(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != ORIGIN_KEY}


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def make_scorer(job: Any, dataset: Any, proxy: str) -> Callable[[list[dict]], list[float]]:
    """``configs -> scores``: one Ray task per candidate on the cluster, with no CPU reserved."""
    import ray

    from raynas.trainables.trainable import score_candidate  # Ray-free at import: workers load it cheaply

    data = ray.put(dataset)
    task = ray.remote(num_cpus=0, max_retries=1)(score_candidate)

    def score(configs: list[dict]) -> list[float]:
        return ray.get([task.remote(c, job, data, proxy) for c in configs], timeout=SCORE_TIMEOUT)

    return score
