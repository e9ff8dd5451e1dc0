"""The driver-side Ray Tune callback: the trial journal, each trial's result log, the progress view.

Everything here is written straight into the results folder (Tune's own loggers write to a
staging folder that is copied over later, which a crash can cut short):

* ``trials.json``, the journal: rewritten atomically when a trial starts, pauses, finishes or
  fails, and at most every ``write_interval`` seconds while results arrive;
* ``trial_<id>/result.json``: one JSON line per reported epoch, flushed as it arrives, and
  ``trial_<id>/params.json`` with the trial's configuration.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import IO, Any

from ray.tune import Callback
from ray.tune.progress_reporter import TrialProgressCallback

from raynas import durable
from raynas._tune.controller import forget_metric_statistics
from raynas.experiment import (
    better,
    ERROR_KEY,
    EXPLOITED_KEY,
    FAILED_STATUSES,
    ORIGIN_KEY,
    RESULT_FILE,
    STATUS_KEY,
    JournalWriter,
    Status,
    TrialRecord,
    read_journal,
    read_result_rows,
    write_json_atomic,
)
from raynas.progress import ProgressView


_TUNE_STATUS = {
    "PENDING": Status.PENDING,
    "RUNNING": Status.RUNNING,
    "PAUSED": Status.PAUSED,
}

# Result keys copied into the journal's `last` (everything is in result.json).
_KEEP = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_acc",
    "params",
    "flops",
    "latency_ms",
    "lr",
    "epoch_time_s",
    "time_total_s",
)
# Per-result keys not worth a line in result.json (the config is in params.json).
_DROP = ("config",)


def trial_dirname(trial) -> str:
    """Trial folder names: ``trial_<id>`` (stable, short, matching the journal)."""
    return f"trial_{trial.trial_id}"


class Journal(Callback):
    """Keeps the journal and the result logs, and feeds the progress view.

    On resume the journal is read back; unfinished trials the restored Tune state does not
    know become ``lost`` (finished ones are expected to be missing from it: see
    :func:`raynas._tune.controller.finished_trials_released`).

    Args:
        exp_dir: The experiment folder.
        metric: Objective metric (``best`` tracks it).
        mode: ``max`` or ``min``.
        max_epochs: Epochs per trial (a trial that ends earlier was stopped early).
        view: Optional :class:`~raynas.progress.ProgressView` to refresh.
        write_interval: Seconds between journal rewrites while only results arrive.
        objectives: The objective metrics whose running statistics Tune keeps for a finished
            trial (default: ``metric``); see
            :func:`~raynas._tune.controller.forget_metric_statistics`.
        scheduler: The run's :class:`~raynas.durable.DurableScheduler`: the journal saves its
            state at each snapshot and holds its writes while the scheduler's pacer holds a
            snapshot. Handed over by the runner (pickled with the journal into Tune's
            ``tuner.pkl``, so a resumed journal has the resumed scheduler).
    """

    # A journal unpickled from the tuner.pkl of an earlier raynas has none until the runner
    # hands it over.
    scheduler: Any = None

    def __init__(self, exp_dir: str, metric: str, mode: str, max_epochs: int, view: ProgressView | None = None,
                 write_interval: float = 2.0, objectives: tuple[str, ...] | None = None,
                 scheduler: Any = None):
        self.exp_dir, self.metric, self.mode, self.max_epochs = exp_dir, metric, mode, max_epochs
        self.scheduler = scheduler
        self.view = view
        self.write_interval = write_interval
        self.objectives = tuple(objectives or (metric,))
        self._reset()

    def _reset(self) -> None:
        self.records: dict[str, TrialRecord] = {}
        self._dirty = False
        self._last_write = 0.0
        self._reconciled = False
        self._trials: list = []  # the controller's trial list (for pruning at snapshot time)
        self._staging: str | None = None  # Tune's staging folder for its experiment state
        self._to_prune: set[str] = set()
        self._logs: dict[str, IO[str]] = {}
        # The last training_iteration each open log holds (see on_trial_result).
        self._iterations: dict[str, int] = {}
        # The journal's text, per trial: a write re-encodes only the records changed since
        # the last one (a full rewrite per trial event made long searches quadratic), and
        # copies the lines of retired trials from the file (see retire()).
        self._writer = JournalWriter(self.exp_dir)
        self._changed: set[str] = set()
        self._retiring: set[str] = set()  # trials to retire at the next write
        # Counted in setup() from every record read back, then kept (a count over every
        # record at each event made long searches quadratic, and retired records are gone).
        self._last_order = 0  # the highest start order given
        self._done = 0  # finished trials, for the progress view
        # Finished trials' folders in Tune's staging folder, removed at a snapshot, and the
        # experiment's syncer (see durable.remove_staging_dirs).
        self._staged: list[str] = []
        self._syncer: Any = None

    def __getstate__(self):
        # Pickled into Tune's tuner.pkl: keep the settings, drop the live state.
        state = dict(self.__dict__)
        for key in ("records", "_dirty", "_last_write", "_reconciled", "_trials", "_staging", "_to_prune", "_logs", "_iterations", "_writer", "_changed", "_retiring", "_last_order", "_staged", "_syncer", "_done"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    # -- helpers
    def _record(self, trial) -> TrialRecord:
        # Every hook that changes a record gets it here first: the next write re-encodes it.
        self._changed.add(trial.trial_id)
        rec = self.records.get(trial.trial_id)
        if rec is None:
            rec = self.records[trial.trial_id] = TrialRecord(trial_id=trial.trial_id)
        if not rec.config:
            config = dict(trial.config)
            rec.origin = config.pop(ORIGIN_KEY, None) or {}
            rec.config = config
        if rec.dir is None:
            rec.dir = trial_dirname(trial)
        return rec

    def _next_order(self) -> int:
        """The next start order: one more than any trial's so far."""
        self._last_order += 1
        return self._last_order

    def _pacer(self):
        return self.scheduler.pacer if self.scheduler is not None else None

    def _write(self, force: bool = True, final: bool = False, finished: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < self.write_interval:
            self._dirty = True
            return
        pacer = None if final else self._pacer()
        if pacer is not None and finished:
            pacer.ready()  # asks for the snapshot that will carry this write
        if pacer is not None and (pacer.waiting or finished):
            # The journal must not call a trial finished before the snapshot a resume starts
            # from does (it would be lost, or run again), and that snapshot may be postponed
            # or held until Tune's state is settled (see durable.SnapshotPacer). JournalFlush
            # writes it when the snapshot is taken.
            self._dirty = True
            return
        retire = [tid for tid in self._retiring if tid in self.records and _settled_status(self.records[tid])]
        self._writer.write(self.records, self._changed, retire)
        for trial_id in retire:
            rec = self.records.pop(trial_id)
            if self.view is not None:
                self.view.retire(rec)
        self._retiring.clear()
        self._changed = set()
        self._last_write = now
        self._dirty = False

    def retire(self, trial_ids) -> None:
        """Lets go of finished trials' records once they are written: called for the trials
        Tune's controller lets go of (:func:`raynas._tune.controller.finished_trials_released`), which
        report nothing more. At the next write their lines join the part of the journal that
        is copied from the file, and only the progress view's counts and best trials keep
        anything of them, so the driver's memory does not grow with every trial run."""
        self._retiring.update(trial_ids)

    def _refresh(self, force: bool = False) -> None:
        if self.view is not None:
            self.view.update(self.records.values(), force=force)

    def _log(self, rec: TrialRecord) -> IO[str]:
        log = self._logs.get(rec.trial_id)
        if log is None:
            trial_dir = os.path.join(self.exp_dir, rec.dir)
            os.makedirs(trial_dir, exist_ok=True)
            path = os.path.join(trial_dir, RESULT_FILE)
            if os.path.exists(path):  # a resumed trial: its log goes on where it ended
                rows = read_result_rows(trial_dir)
                if rows and isinstance(rows[-1].get("training_iteration"), int):
                    self._iterations[rec.trial_id] = rows[-1]["training_iteration"]
            log = self._logs[rec.trial_id] = open(path, "a", encoding="utf-8")
        return log

    def _close_log(self, trial_id: str) -> None:
        log = self._logs.pop(trial_id, None)
        self._iterations.pop(trial_id, None)
        if log is not None:
            log.close()

    def settled(self, trial_id: str) -> bool:
        """Whether the journal on disk says this trial finished (nothing of it waits to be written)."""
        rec = self.records.get(trial_id)
        return rec is not None and rec.status.finished and trial_id not in self._changed and not self._dirty

    def trial_label(self, trial) -> str:
        """How Ray's dashboard names the tasks of a trial: ``<experiment> #<number> <id>``, the
        number being the order ``raynas analyze`` shows (from the trial's start on)."""
        rec = self.records.get(trial.trial_id)
        number = f" #{rec.order}" if rec is not None and rec.order else ""
        return f"{os.path.basename(self.exp_dir)}{number} {trial.trial_id}"

    # -- Tune's snapshot hook: get_state runs right after Tune wrote its experiment state
    def get_state(self) -> dict:
        """Backs up the snapshot Tune just wrote and prunes checkpoints it no longer needs."""
        # The folder is the same for every trial and the whole run; remembered, because
        # finished trials leave the controller's list (it can be empty between trials).
        staging = self._staging = self._staging or next(
            (t.storage.experiment_driver_staging_path for t in self._trials if t.storage), None
        )
        scheduler = self.scheduler
        if staging:
            extra = {durable.SCHEDULER_FILE: scheduler.dump()} if scheduler is not None else None
            durable.backup_state(staging, self.exp_dir, extra)
        # Checkpoints still referred to: each trial's own in the snapshot, another trial's it is
        # about to continue from (PBT), and those PBT may hand out at its next exploit.
        paths = [t.checkpoint.path for t in self._trials if getattr(t, "checkpoint", None) is not None]
        if scheduler is not None:
            paths += scheduler.checkpoints_in_use()
        referenced: dict[str, set] = {}
        for path in paths:
            folder, name = os.path.split(path.rstrip("/"))
            referenced.setdefault(os.path.basename(folder), set()).add(name)
        for trial_id in list(self._to_prune):
            rec = self.records.get(trial_id)
            if rec is not None and rec.dir is not None:
                keep = {rec.best_checkpoint, rec.checkpoint} | referenced.get(rec.dir, set())
                durable.prune_checkpoints(os.path.join(self.exp_dir, rec.dir), keep)
            self._to_prune.discard(trial_id)
        self._staged = durable.remove_staging_dirs(self._staged, self._syncer)
        return {"snapshot": time.time()}

    def set_state(self, state: dict) -> None:
        pass  # the journal is re-read from trials.json in setup()

    # -- Tune hooks
    def setup(self, **info: Any) -> None:
        self.records = read_journal(self.exp_dir)
        self._writer = JournalWriter(self.exp_dir)
        self._changed, self._retiring = set(), set()
        self._last_order = max((r.order or 0 for r in self.records.values()), default=0)
        self._done = sum(1 for r in self.records.values() if r.status.finished)
        if self.view is not None:
            self.view.forget_retired()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._trials = trials
        if not self._reconciled:
            self._reconciled = True
            known = {t.trial_id for t in trials}
            for rec in self.records.values():
                # A finished trial leaves Tune's state once the journal says it finished.
                if rec.trial_id not in known and not rec.status.finished and rec.status is not Status.LOST:
                    rec.status = Status.LOST
                    rec.error = "started before the driver stopped, but missing from the state it was resumed from"
                if rec.trial_id not in known and _settled_status(rec):
                    self._retiring.add(rec.trial_id)  # released before the driver stopped, or lost
            for trial in trials:
                rec = self._record(trial)
                status = _TUNE_STATUS.get(trial.status)
                if rec.status.finished:
                    continue
                if status is not None:
                    rec.status = status
                    self._catch_up(rec)
                elif trial.status in ("TERMINATED", "ERROR"):
                    # The snapshot saw it end, but the driver died before the journal said so.
                    self._catch_up(rec)
                    rec.status = Status.ERROR if trial.status == "ERROR" else self._ended_status(rec, trial)
                    rec.ended = rec.ended or time.time()
                    self._done += 1
            self._write()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._dirty:
            self._write(force=False)
        pacer = self._pacer()
        if pacer is not None:
            pacer.poll()  # a snapshot postponed to keep their cost bounded
        self._refresh()

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        rec = self._record(trial)
        if rec.order is None:
            rec.order = self._next_order()
            rec.started = time.time()
            trial_dir = os.path.join(self.exp_dir, rec.dir)
            os.makedirs(trial_dir, exist_ok=True)
            write_json_atomic(os.path.join(trial_dir, "params.json"), rec.config)
        rec.status = Status.RUNNING
        self._write()
        self._refresh(force=True)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        rec = self._record(trial)
        log = self._log(rec)
        row = {k: v for k, v in result.items() if k not in _DROP}
        # Tune restarts a resumed trial's training_iteration from the snapshot's checkpoint,
        # while the built-in engines go on from a newer one: the log counts on, so readers
        # that follow training_iteration (ExperimentAnalysis) never see it go back.
        counted, last = row.get("training_iteration"), self._iterations.get(rec.trial_id)
        if isinstance(counted, int):
            if last is not None and counted <= last:
                row["training_iteration"] = counted = last + 1
            self._iterations[rec.trial_id] = counted
        log.write(json.dumps(row, default=_jsonable) + "\n")
        log.flush()
        # PBT changes a trial's config as it trains; the journal keeps the one it trains now.
        config = {k: v for k, v in dict(trial.config).items() if k != ORIGIN_KEY}
        if config != rec.config:
            rec.config = config
        if self._apply(rec, result):
            self._last_write = 0.0  # an exploit: written at the end of this step, not throttled
        self._dirty = True

    def _apply(self, rec: TrialRecord, result: dict) -> bool:
        """Folds one reported result into a trial's record; True when it records an exploit."""
        if result.get(STATUS_KEY) in FAILED_STATUSES:
            rec.error = result.get(ERROR_KEY)
        exploited = bool(result.get(EXPLOITED_KEY))
        if exploited:
            # PBT: the trial now trains another trial's architecture and weights, with
            # perturbed hyperparameters.
            source = result[EXPLOITED_KEY]
            parent = next((r.trial_id for r in self.records.values() if r.dir == source), None)
            if parent is None:  # a retired trial: its folder is named after it
                parent = source[len("trial_"):] if source.startswith("trial_") else source
            rec.origin.setdefault("exploits", []).append({"epoch": result.get("epoch"), "from": parent})
        rec.last = {k: result[k] for k in _KEEP if k in result}
        epoch = result.get("epoch")
        if isinstance(epoch, (int, float)):
            rec.epochs = int(epoch)
        checkpoint = result.get("checkpoint_dir_name")
        if checkpoint:
            rec.checkpoint = checkpoint
            self._to_prune.add(rec.trial_id)
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            if rec.best is None or better(value, rec.best, self.mode):
                rec.best, rec.best_epoch = float(value), rec.epochs or None
                if checkpoint:
                    rec.best_checkpoint = checkpoint
        return exploited

    def _catch_up(self, rec: TrialRecord) -> None:
        """Rebuilds an unfinished trial's progress from its result log after a resume.

        The journal is written at most every ``write_interval`` seconds, the log on every
        result: a driver killed in between leaves a journal some epochs behind the log and the
        checkpoints, which the trial continues from. A trial that had just reported its last
        epoch then has nothing left to train, and its record must still show every epoch.
        """
        rows = read_result_rows(os.path.join(self.exp_dir, rec.dir)) if rec.dir else []
        if not rows:
            return
        rec.epochs, rec.best, rec.best_epoch, rec.last = 0, None, None, {}
        rec.checkpoint = rec.best_checkpoint = None
        rec.origin.pop("exploits", None)
        for row in rows:
            self._apply(rec, row)

    def _finish(self, trial, status: Status, error: str | None = None) -> None:
        forget_metric_statistics(trial, getattr(self, "objectives", (self.metric,)))
        rec = self._record(trial)
        if not rec.status.finished:
            self._done += 1
        rec.status = status
        rec.ended = time.time()
        if error:
            rec.error = error
        self._close_log(trial.trial_id)
        staging = durable.staging_dir(trial)
        if staging is not None:
            self._staged.append(staging)
            self._syncer = self._syncer or getattr(trial.storage, "syncer", None)
        self._write(finished=True)
        if self.view is not None:
            self.view.event(rec, self.records.values(), done=self._done)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._finish(trial, self._ended_status(self._record(trial), trial))

    def _ended_status(self, rec: TrialRecord, trial) -> Status:
        marked = (trial.last_result or {}).get(STATUS_KEY)
        if rec.error is not None and marked in FAILED_STATUSES:
            return Status.REJECTED if marked == "rejected" else Status.FAILED
        return Status.COMPLETED if rec.epochs >= self.max_epochs else Status.STOPPED

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._finish(trial, Status.ERROR, _error_text(trial))

    def on_trial_save(self, iteration: int, trials: list, trial, **info: Any) -> None:
        # A save that is not a result's checkpoint is a pause (HyperBand, PBT).
        rec = self._record(trial)
        if trial.status == "PAUSED" and rec.status is Status.RUNNING:
            rec.status = Status.PAUSED
            self._dirty = True

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in trials:
            rec = self._record(trial)
            status = _TUNE_STATUS.get(trial.status)
            if status is not None and not rec.status.finished:
                rec.status = status
        for trial_id in list(self._logs):
            self._close_log(trial_id)
        self._write(final=True)
        if self.view is not None:
            self.view.close(self.records.values())


class QuietTrialProgress(TrialProgressCallback):
    """Takes the place of the progress callback Tune adds by itself, which prints nothing at
    ``verbose=0`` yet keeps every trial it ever saw (with its last result) until the run ends.
    raynas shows progress from its journal."""

    def on_trial_result(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_trial_error(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_trial_complete(self, *args: Any, **kwargs: Any) -> None:
        pass


class JournalFlush(Callback):
    """Writes the journal's held changes when Tune takes an experiment snapshot.

    Registered after the :class:`Journal`: Tune calls each callback's ``get_state`` right
    after writing its state, so the journal and the snapshot a resume starts from agree
    even while :class:`~raynas.durable.SnapshotPacer` postpones snapshots.
    """

    def __init__(self, journal: Journal):
        self.journal = journal

    def get_state(self) -> dict:
        if self.journal._dirty:
            self.journal._write(final=True)
        return {}

    def set_state(self, state: dict) -> None:
        pass


def _settled_status(rec: TrialRecord) -> bool:
    """A status the trial's record keeps for good (finished, or lost at a crash)."""
    return rec.status.finished or rec.status is Status.LOST


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _error_text(trial) -> str:
    """The last line of a trial's error file (the exception), or a generic note."""
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        for line in reversed(lines):
            if not line.startswith(("File ", "^", "~")):
                return line[:500]
    return "the trial raised an exception (see its error.txt)"
