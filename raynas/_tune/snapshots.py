"""Tune's experiment snapshots, reached from a scheduler's hooks: force one, time and hold
them, tell whether Tune's state is settled, set a restored trial's status. Used by
:mod:`raynas.durable`, which decides when; here is only how, on the installed Tune."""

from __future__ import annotations

from typing import Any, Callable

from raynas._tune import feature


def _controller(controller: Any) -> Any:
    """Tune's controller itself, also behind the restricted wrapper ``on_trial_add`` gets."""
    return getattr(controller, "_tune_controller", controller)


class Snapshots:
    """Tune's experiment checkpoint manager, as raynas drives it.

    Tune writes its experiment state at the end of a controller step when a forced snapshot
    is pending or its period has passed (``sync_up_experiment_state``).
    """

    def __init__(self, manager: Any):
        self.manager = manager

    @classmethod
    def of(cls, controller: Any) -> "Snapshots | None":
        """The snapshots of ``controller``'s experiment; None where the feature cannot apply."""
        if not feature("snapshots_on_trial_events").applies():
            return None
        manager = getattr(_controller(controller), "_checkpoint_manager", None)
        return None if manager is None else cls(manager)

    @property
    def forced(self) -> bool:
        """Whether a snapshot is forced for the end of the current step."""
        return bool(self.manager._should_force_sync_up)

    def force(self) -> None:
        self.manager._should_force_sync_up = True

    @property
    def last_time(self) -> float:
        return self.manager._last_save_time or 0.0

    def due(self, now: float) -> bool:
        """Whether a snapshot would be written at this step (forced, or its period has passed)."""
        return self.forced or now - self.last_time >= self.manager._checkpoint_period

    def wrap(self, around: Callable[..., Any]) -> None:
        """Routes this manager's snapshots through ``around(original, save_fn, force, wait)``;
        each save waits for the upload of the snapshot before it (:meth:`wait_for_upload`)."""
        original = self.manager.sync_up_experiment_state

        def sync_up_experiment_state(save_fn, force: bool = False, wait: bool = False):
            def save_after_upload():
                self.wait_for_upload()
                return save_fn()

            return around(original, save_after_upload, force, wait)

        self.manager.sync_up_experiment_state = sync_up_experiment_state

    def wait_for_upload(self) -> None:
        """Waits until the background copy of the last snapshot into the results folder is done.

        Tune writes a snapshot into its staging folder while that copy may still be listing the
        folder: a state file it listed was then replaced (written beside, then renamed) before
        it was read, and the copy failed with a FileNotFoundError traceback in the user's
        output. The copy's outcome is left for Tune to collect, as before.
        """
        syncer = getattr(getattr(self.manager, "_storage", None), "syncer", None)
        thread = getattr(getattr(syncer, "_sync_process", None), "_process", None)
        if thread is not None and thread.is_alive():
            thread.join()


def unsettled(controller: Any) -> bool:
    """Whether a trial has a save (a result's checkpoint, a pause) or a decision on its way."""
    controller = _controller(controller)
    if getattr(controller, "_cached_trial_decisions", None):
        return True
    live = getattr(controller, "_live_trials", None)
    if live is None:
        live = controller.get_trials() if hasattr(controller, "get_trials") else ()
    return any(getattr(t, "is_saving", False) for t in live)


def set_trial_status(controller: Any, trial: Any, status: str) -> bool:
    """Sets a trial's status as Tune's controller does; False where the feature cannot apply."""
    if not feature("trial_states_restored").applies():
        return False
    _controller(controller)._set_trial_status(trial, status)
    return True


def mark_for_snapshot(controller: Any, trial: Any) -> None:
    """Has Tune write ``trial``'s state (status included) into its next snapshot."""
    if feature("trial_states_restored").applies():
        _controller(controller)._mark_trial_to_checkpoint(trial)


def sync_running(syncer: Any) -> bool | None:
    """Whether ``syncer`` is copying the staging folder now; None where that cannot be told."""
    if not feature("staging_folders_removed").applies() or not hasattr(syncer, "_sync_process"):
        return None
    process = syncer._sync_process
    return bool(process is not None and process.is_running)


def tuner_parts(tuner: Any) -> tuple[Any, list]:
    """The scheduler and the callbacks a Tuner will run with (for a restored Tuner, those Tune
    unpickled from its ``tuner.pkl``); (None, []) where the feature cannot apply."""
    if not feature("run_objects_wired").applies():
        return None, []
    internal = getattr(tuner, "_local_tuner", None)  # None for a Ray Client Tuner
    if internal is None:
        return None, []
    return internal._tune_config.scheduler, list(internal._run_config.callbacks or ())


def tuner_searcher(tuner: Any) -> Any:
    """The search algorithm a (restored) Tuner will run with, None where it cannot be reached."""
    internal = getattr(tuner, "_local_tuner", None)
    return None if internal is None else internal._tune_config.search_alg
