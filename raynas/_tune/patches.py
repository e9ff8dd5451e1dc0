"""Every patch of Tune, applied together for one ``Tuner.fit``."""

from __future__ import annotations

import contextlib
from typing import Any

from raynas._tune import controller, workers


@contextlib.contextmanager
def patched(local: Any, journal: Any, on_restored: Any = None, release_finished: bool = True, label: Any = None):
    """Applies every patch of Tune for the duration of a ``Tuner.fit``, and undoes them after.

    Args:
        local: The local Ray raynas started (:data:`raynas._tune.workers.LocalRay`), or None.
        journal: The run's journal (finished trials are released only once it wrote them).
        on_restored: Called with Tune's storage context after a successful restore.
        release_finished: Whether finished trials leave Tune's controller (not for PBT/PB2).
        label: ``label(trial)`` names the trial's tasks in Ray's dashboard (None: Ray's names).
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(controller.restore_failure_raised(on_restored))
        stack.enter_context(controller.trainable_lookups_cached())
        stack.enter_context(workers.trial_actors_on_prestarted_workers(local))
        stack.enter_context(workers.starting_actors_kept_as_spares(local))
        stack.enter_context(workers.trial_tasks_named(label))
        if release_finished:
            stack.enter_context(controller.finished_trials_released(journal))
        yield
