"""Patches of Tune's trial controller and of the helpers it calls: restore, trainable lookups,
and what the driver keeps of finished trials. Each is a context manager that replaces its
targets for the duration of ``Tuner.fit`` and keeps Tune's own behaviour where the feature
cannot apply on the installed Ray (:func:`raynas._tune.check_compat` reports that)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable

from raynas._tune import feature
from raynas.errors import ResumeError


class _RestoreFailed(BaseException):
    """Carries a failed restore of Tune's state past Tune's own handler (see
    :func:`restore_failure_raised`); not an ``Exception``, which Tune catches."""


@contextlib.contextmanager
def restore_failure_raised(on_restored: Callable[[Any], Any] | None = None):
    """A resume whose saved state Tune cannot restore fails with :class:`ResumeError`.

    Tune's controller catches any error of its restore, logs it and starts the whole search
    again in the same folder, under a trial budget it no longer knows. raynas stops instead,
    before any trial starts. After a successful restore, ``on_restored`` gets the controller's
    storage context (the runner removes raynas's files from Tune's staging copy with it).
    """
    if not feature("restore_failure_raised").applies():
        yield
        return
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController.resume

    def resume(self, *args, **kwargs):
        try:
            result = original(self, *args, **kwargs)
        except Exception as err:
            raise _RestoreFailed() from err
        if on_restored is not None:
            on_restored(getattr(self, "_storage", None))
        return result

    TuneController.resume = resume
    try:
        yield
    except _RestoreFailed as failed:
        err = failed.__cause__
        raise ResumeError(
            f"Ray Tune could not restore the experiment's saved state ({type(err).__name__}: {err}); "
            "no trial was run. The results so far are intact: rank them with raynas analyze"
        ) from err
    finally:
        TuneController.resume = original


@contextlib.contextmanager
def trainable_lookups_cached():
    """Within the block, each trainable name is looked up (two GCS round trips and an
    unpickling of the class, ``Trial.get_trainable_cls``) once, not several times per trial.

    The trainable of a run never changes while it runs; an unknown name still raises Tune's
    own error. Profiled in benchmarks/scale.py.
    """
    if not feature("trainable_lookups_cached").applies():
        yield
        return
    from ray.tune.experiment import trial as trial_module

    original, original_validate = trial_module.get_trainable_cls, trial_module.validate_trainable
    found: dict = {}

    def get_trainable_cls(name):
        if name not in found:
            found[name] = original(name)  # validates first: an unknown name raises TuneError
        return found[name]

    def validate_trainable(name):
        get_trainable_cls(name)

    trial_module.get_trainable_cls, trial_module.validate_trainable = get_trainable_cls, validate_trainable
    try:
        yield
    finally:
        trial_module.get_trainable_cls, trial_module.validate_trainable = original, original_validate


@contextlib.contextmanager
def finished_trials_released(journal: Any):
    """Finished trials leave Tune's controller once a snapshot and the journal both say so.

    Tune keeps every trial of a run in its controller until the run ends (the trial, its
    config, last result, metadata, storage context and a cached JSON of its state, which every
    experiment snapshot writes again), so the driver's memory and each snapshot grow with the
    trials run. raynas's journal (``trials.json``) and each trial's folder hold what a finished
    trial left; Tune needs it no more, except to list it when it builds its own analysis.

    After each snapshot, a trial that was finished (``TERMINATED`` or ``ERROR``) when the
    snapshot was written, whose end ``journal`` (the run's :class:`raynas.callbacks.Journal`)
    has written too, and that has no actor, is dropped from the controller. A resume from
    either snapshot is exact: the older one lists the trial as finished, the newer one not at
    all, and the journal keeps its record. Not for PBT and PB2, which read every trial's state
    from the controller (the runner does not enter this block for them).

    After a release the journal lets go of the trials' records too
    (:meth:`raynas.callbacks.Journal.retire`), the log-once keys Tune's encoder left in Ray for
    the trials go (:func:`forget_encoded_objects`), and the C heap's free pages go back to the
    system (:class:`HeapTrim`). Shown by tests/test_released_trials.py.
    """
    if journal is None or not feature("finished_trials_released").applies():
        yield
        return
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController.save_to_dir
    trim = HeapTrim()

    def save_to_dir(self, *args, **kwargs):
        finished = [t for t in self._trials if t.status in ("TERMINATED", "ERROR")]
        result = original(self, *args, **kwargs)
        if finished and release_finished(self, finished, journal):
            forget_encoded_objects()
            trim.maybe()
        return result

    TuneController.save_to_dir = save_to_dir
    try:
        yield
    finally:
        TuneController.save_to_dir = original


def release_finished(controller: Any, finished: list, journal: Any) -> int:
    """Drops from ``controller`` the trials of ``finished`` that the journal has written as
    finished and that no snapshot still needs; returns how many."""
    gone = {
        trial
        for trial in finished
        if trial.status in ("TERMINATED", "ERROR")  # as when the snapshot was written
        and journal.settled(trial.trial_id)
        and trial not in controller._trial_to_actor
        and trial not in controller._trials_to_cache  # changed since: the next snapshot has it
    }
    kept = [t for t in controller._trials if t not in gone]
    if not kept and gone:
        # Tune's resume takes the staging folder of the first trial of its snapshot and, from
        # a snapshot without any, fails and starts the whole search again: the last finished
        # trial stays until another trial is there.
        last = next(t for t in reversed(controller._trials) if t in gone)
        gone.discard(last)
        kept = [last]
    if not gone:
        return 0
    # In place: callbacks and schedulers hold the list itself (Tune passes it to them).
    controller._trials[:] = kept
    journal.retire(trial.trial_id for trial in gone)
    for trial in gone:
        controller._stopped_trials.discard(trial)
        controller._failed_trials.discard(trial)
        controller._trial_metadata.pop(trial.trial_id, None)
    return len(gone)


class HeapTrim:
    """Hands the C heap's free pages back to the system after trials are released.

    glibc keeps freed memory in its heap, between blocks still in use, so the driver's
    resident memory grew after releases although the memory in use did not
    (benchmarks/scale.py). ``malloc_trim(0)`` returns those pages. After a trim that took
    ``t``, the next waits at least ``spacing * t``, so trims take at most about 1/``spacing``
    of the driver's time. A no-op without glibc.
    """

    def __init__(self, spacing: float = 20.0):
        self.spacing = spacing
        self._next = 0.0
        self._trim = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                self._trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):  # musl and others: no malloc_trim
                pass

    def maybe(self) -> bool:
        """Trims unless the last trim was too recent; returns whether it trimmed."""
        start = time.monotonic()
        if self._trim is None or start < self._next:
            return False
        self._trim(0)
        end = time.monotonic()
        self._next = end + self.spacing * (end - start)
        return True


def forget_encoded_objects() -> None:
    """Drops the log-once keys Tune's JSON encoder leaves for every trial.

    ``TuneFunctionEncoder`` falls back to cloudpickle for objects JSON cannot hold (a trial's
    storage context, its metric windows) and, to log that only once, keeps ``str(obj)`` in
    Ray's ``log_once`` set, never dropped. Only those keys are removed.
    """
    if not feature("encoder_log_keys_forgotten").applies():
        return
    from ray.util import debug

    logged = debug._logged
    if isinstance(logged, set):
        for key in [k for k in logged if isinstance(k, str) and k.startswith("tune_func_encode:")]:
            logged.discard(key)


def forget_metric_statistics(trial: Any, keep) -> None:
    """Drops Tune's running statistics of a finished trial's metrics, except those in ``keep``.

    For every numeric key of every result, Tune keeps per trial, for the whole run, its max,
    min, mean, last value and windowed means (``Trial.run_metadata.metric_analysis`` and
    ``metric_n_steps``), and writes them into every experiment snapshot. Only Tune's
    ``ExperimentAnalysis.get_best_trial`` reads them; raynas ranks trials from its own journal
    and keeps the objective metrics' statistics for whoever opens the folder with Tune.
    """
    meta = getattr(trial, "run_metadata", None)
    analysis = getattr(meta, "metric_analysis", None)
    windows = getattr(meta, "metric_n_steps", None)
    if not isinstance(analysis, dict) or not isinstance(windows, dict):
        return  # a stub trial, or a Tune without them (reported by check_compat)
    dropped = [key for key in analysis if key not in keep]
    for key in dropped:
        analysis.pop(key, None)
        windows.pop(key, None)
    if dropped and callable(getattr(meta, "invalidate_cache", None)):
        meta.invalidate_cache()  # its JSON for the next snapshot is cached
