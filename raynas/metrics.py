"""Trial metrics for Ray's dashboard: each trial's per-epoch metrics and the count of trials by
status, exported through Ray's metrics API (``ray.util.metrics``) from the driver.

Ray's metrics agent on each node serves them to Prometheus (``ray_`` is prefixed to each
name), and Ray's Metrics view shows them through Grafana; ``GRAFANA_DASHBOARD`` is a Grafana
dashboard of them (README, "Ray's dashboard"). They are set where the journal already holds
every result, so every trainable's trials are exported (built-in, user, surrogate), and a
trial's worker does nothing more per epoch; a set costs about 2 microseconds
(benchmarks/overhead.py measures a run with and without).

========================== ===================================================================
``raynas_trial_objective`` the objective's value at the trial's last epoch (tag ``metric``)
``raynas_trial_best``      the best objective value of the trial so far
``raynas_trial_val_loss``  validation loss at the last epoch
``raynas_trial_train_loss`` training loss at the last epoch
``raynas_trial_epoch``     epochs the trial has reported
``raynas_experiment_best`` the best objective value of any trial so far
``raynas_trials``          trials by status (tag ``status``: pending, running, completed, ...)
========================== ===================================================================

Trial series carry the tags ``experiment``, ``trial`` (its id), ``number`` (its start order,
as ``raynas analyze`` shows it) and ``family`` (the model family or trainable).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from typing import Any

from ray.tune import Callback

from raynas.experiment import Status, better

log = logging.getLogger("raynas")

#: The Grafana dashboard of these metrics, shipped with the package.
GRAFANA_DASHBOARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grafana_dashboard.json")

TRIAL_TAGS = ("experiment", "trial", "number", "family")
# Gauge name -> (description, the result key it reads; None: computed).
TRIAL_GAUGES = {
    "raynas_trial_objective": ("The objective's value at the trial's last epoch", None),
    "raynas_trial_best": ("The best objective value of the trial so far", None),
    "raynas_trial_val_loss": ("Validation loss at the trial's last epoch", "val_loss"),
    "raynas_trial_train_loss": ("Training loss at the trial's last epoch", "train_loss"),
    "raynas_trial_epoch": ("Epochs the trial has reported", "epoch"),
}
EXPERIMENT_BEST = "raynas_experiment_best"
TRIALS_BY_STATUS = "raynas_trials"
METRIC_NAMES = (*TRIAL_GAUGES, EXPERIMENT_BEST, TRIALS_BY_STATUS)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TrialMetrics(Callback):
    """A Tune callback, after the :class:`~raynas.callbacks.Journal` (whose records give each
    trial's number, best value and status), that sets the gauges above.

    Args:
        journal: The run's journal.
        family: The ``family`` tag (model family name or trainable reference).
        status_interval: Seconds between updates of the counts by status.
    """

    def __init__(self, journal: Any, family: str, status_interval: float = 2.0):
        self.journal, self.family, self.status_interval = journal, family, status_interval
        self._reset()

    def _reset(self) -> None:
        self._gauges: dict[str, Any] | None = None
        # For the counts by status: unfinished trials' statuses, and finished trials counted (the
        # driver's memory stays flat however many trials a search runs).
        self._live: dict[str, Status] = {}
        self._finished: Counter = Counter()
        self._best: float | None = None
        self._last_counts = 0.0
        self._failed = False

    def __getstate__(self):
        # Pickled into Tune's tuner.pkl: Ray's metric objects are made again where it is used.
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    @property
    def experiment(self) -> str:
        return os.path.basename(self.journal.exp_dir)

    def _make_gauges(self) -> dict[str, Any] | None:
        if self._gauges is None and not self._failed:
            try:
                from ray.util.metrics import Gauge

                gauges = {name: Gauge(name, text, tag_keys=TRIAL_TAGS + (("metric",) if key is None else ()))
                          for name, (text, key) in TRIAL_GAUGES.items()}
                gauges[EXPERIMENT_BEST] = Gauge(EXPERIMENT_BEST, "The best objective value of any trial so far",
                                                tag_keys=("experiment", "metric"))
                gauges[TRIALS_BY_STATUS] = Gauge(TRIALS_BY_STATUS, "Trials by status", tag_keys=("experiment", "status"))
                self._gauges = gauges
            except Exception as err:  # noqa: BLE001 - a view never stops the search
                self._fail(err)
        return self._gauges

    def _fail(self, err: Exception) -> None:
        if not self._failed:
            self._failed = True
            log.warning("raynas: warning: trial metrics are not exported to Ray's metrics (%s: %s); the search goes on",
                        type(err).__name__, err)

    # -- Tune hooks
    def setup(self, **info: Any) -> None:
        self._make_gauges()
        for rec in self.journal.records.values():
            self._set_status(rec.trial_id, rec.status)
        scored = [rec.best for rec in self.journal.records.values() if rec.best is not None]
        mode = self.journal.mode
        for value in scored:
            if self._best is None or better(value, self._best, mode):
                self._best = value

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        gauges = self._gauges
        if gauges is None:
            return
        try:
            rec = self.journal.records.get(trial.trial_id)
            tags = {"experiment": self.experiment, "trial": trial.trial_id,
                    "number": str(rec.order or "") if rec is not None else "", "family": self.family}
            for name, (_, key) in TRIAL_GAUGES.items():
                if key is not None and _number(result.get(key)):
                    gauges[name].set(float(result[key]), tags=tags)
            metric = self.journal.metric
            value = result.get(metric)
            if _number(value):
                tags["metric"] = metric
                gauges["raynas_trial_objective"].set(float(value), tags=tags)
                if rec is not None and rec.best is not None:
                    gauges["raynas_trial_best"].set(rec.best, tags=tags)
                    if self._best is None or better(rec.best, self._best, self.journal.mode):
                        self._best = rec.best
                        gauges[EXPERIMENT_BEST].set(rec.best, tags={"experiment": self.experiment, "metric": metric})
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            self._gauges = None

    def _set_status(self, trial_id: str, status: Status) -> None:
        if status.finished:  # once per trial: _status passes only trials still live
            self._live.pop(trial_id, None)
            self._finished[status.value] += 1
        else:
            self._live[trial_id] = status

    def _status(self, trial) -> None:
        rec = self.journal.records.get(trial.trial_id)
        if rec is not None and (not rec.status.finished or trial.trial_id in self._live):
            self._set_status(trial.trial_id, rec.status)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._status(trial)

    def on_trial_save(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._status(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._status(trial)
        self._last_counts = 0.0  # counted at the end of this step

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._status(trial)
        self._last_counts = 0.0

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if self._gauges is None or now - self._last_counts < self.status_interval:
            return
        self._last_counts = now
        self._set_counts(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._gauges is not None:
            for trial in trials:
                self._status(trial)
            self._set_counts(trials)

    def counts(self, trials: list) -> Counter:
        """Trials by status (their values): the journal's, and Tune's trials it has not seen start."""
        for trial in trials:
            status = self._live.get(trial.trial_id)
            if trial.status == "PENDING" and status is None:
                self._live[trial.trial_id] = Status.PENDING
            elif trial.status == "RUNNING" and status is Status.PAUSED:
                self._live[trial.trial_id] = Status.RUNNING
        return self._finished + Counter(status.value for status in self._live.values())

    def _set_counts(self, trials: list) -> None:
        try:
            counts = self.counts(trials)
            gauge = self._gauges[TRIALS_BY_STATUS]
            for status in Status:
                gauge.set(float(counts.get(status.value, 0)), tags={"experiment": self.experiment, "status": status.value})
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            self._gauges = None
