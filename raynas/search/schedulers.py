"""Ray Tune schedulers configured from an experiment spec.

Metric and mode are not set here: the runner sets them once, on the Tuner, from
``objective``. Every scheduler counts time in ``epoch`` (reported by the trainable), not Tune's
``training_iteration``, so a trial resumed from a checkpoint keeps its place on the rungs.
"""

from __future__ import annotations

from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
)

# Synchronous HyperBand overrides Tune's private hooks, so it lives behind the wall; its names
# are kept here (schedulers saved by earlier versions refer to them here).
from raynas._tune.schedulers import HyperBandScheduler, _FinishingBracket  # noqa: F401

TIME_ATTR = "epoch"


def build_fifo(spec) -> FIFOScheduler:
    return FIFOScheduler()


def build_asha(spec) -> AsyncHyperBandScheduler:
    o = spec.scheduler.options
    return AsyncHyperBandScheduler(
        time_attr=TIME_ATTR,
        max_t=o["max_t"],
        grace_period=o["grace_period"],
        reduction_factor=o["reduction_factor"],
        brackets=o["brackets"],
    )


def build_hyperband(spec) -> HyperBandScheduler:
    o = spec.scheduler.options
    return HyperBandScheduler(
        time_attr=TIME_ATTR,
        max_t=o["max_t"],
        reduction_factor=o["reduction_factor"],
        stop_last_trials=o["stop_last_trials"],
    )


def build_median(spec) -> MedianStoppingRule:
    o = spec.scheduler.options
    return MedianStoppingRule(
        time_attr=TIME_ATTR,
        grace_period=o["grace_period"],
        min_samples_required=o["min_samples_required"],
        hard_stop=o["hard_stop"],
    )
