"""Replaying precomputed learning curves as a Ray Tune trial, in simulated time.

Both benchmark trainables (the LCBench surrogate and the lookup table) end here: a list of
per-epoch metric rows and the simulated seconds each epoch took. A trial reports one row per
epoch through ``tune.report`` (the same path as a real trial) and sleeps each epoch's
simulated time divided by ``speedup``, so the scheduler and searcher see the timing a real
run would have, compressed. Every result carries ``sim_time``, the trial's simulated seconds
so far, so curves can be compared across speed-ups.

Checkpoints hold only the epoch counter and the simulated time (a few bytes), so schedulers
that pause or copy trials (HyperBand, PBT) and ``raynas resume`` continue a trial at the next
epoch instead of replaying it from the start.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping, Sequence

from raynas.errors import ConfigError, describe

STATE_FILE = "bench_state.json"


def check_speed(params: Mapping[str, Any]) -> dict:
    """Checks the timing parameters shared by the benchmark trainables.

    ``speedup`` (> 0, default 1): simulated seconds per wall second; ``sleep`` (default true):
    false reports epochs as fast as Ray takes them (no timing at all).
    """
    from raynas.spec import check_value

    out = {
        "speedup": check_value(params.get("speedup", 1.0), "float", "speedup", low=0, low_open=True),
        "sleep": check_value(params.get("sleep", True), "bool", "sleep"),
    }
    return out


def _load_state() -> tuple[int, float]:
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0, 0.0
    with checkpoint.as_directory() as path:
        with open(os.path.join(path, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
    return int(state["epoch"]), float(state["sim_time"])


def _report(metrics: dict, state: dict | None) -> None:
    from raynas.trainables.trainable import report_with_checkpoint

    def write(folder: str) -> None:
        with open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump(state, f)

    report_with_checkpoint(metrics, None if state is None else write)


def replay(
    rows: Sequence[Mapping[str, Any]],
    epoch_seconds: Sequence[float] | None,
    *,
    max_epochs: int,
    speedup: float = 1.0,
    sleep: bool = True,
    checkpoint_every: int = 1,
    static: Mapping[str, Any] | None = None,
) -> None:
    """Reports ``rows[i]`` as epoch ``i + 1`` for the epochs ``1..min(len(rows), max_epochs)``.

    Args:
        rows: Metrics per epoch.
        epoch_seconds: Simulated seconds of each epoch (None: no timing known; nothing sleeps
            and ``sim_time`` is not reported).
        max_epochs: The experiment's epochs per trial.
        speedup: Simulated seconds per wall-clock second.
        sleep: False reports without sleeping.
        checkpoint_every: Checkpoint every N epochs (0: only the last epoch).
        static: Metrics reported unchanged with every epoch.
    """
    last = min(len(rows), max_epochs)
    start, sim_time = _load_state()
    # A deadline per epoch (not a sleep per epoch) keeps the trial's wall time at
    # sim_time / speedup even when reporting itself takes a while.
    origin = time.monotonic() - sim_time / speedup
    for epoch in range(start + 1, last + 1):
        seconds = None
        if epoch_seconds is not None:
            seconds = max(0.0, float(epoch_seconds[epoch - 1]))
            sim_time += seconds
            if sleep:
                wait = origin + sim_time / speedup - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        metrics = {"epoch": epoch, **(static or {}), **rows[epoch - 1], "wall_time": time.time(),
                   "resumed_from": start}
        if seconds is not None:
            metrics["sim_time"] = sim_time
            metrics["sim_epoch_time"] = seconds
        save = epoch == last or (checkpoint_every > 0 and epoch % checkpoint_every == 0)
        _report(metrics, {"epoch": epoch, "sim_time": sim_time} if save else None)


def flat_config(config: Mapping[str, Any]) -> dict:
    """``{"arch": {"a": 1}, "b": 2}`` -> ``{"arch.a": 1, "b": 2}`` (leaves by dotted path)."""
    out: dict = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            out[prefix] = node

    walk(config, "")
    return out


def need_mapping(value: Any, path: str) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping, got {describe(value)}")
    return dict(value)
