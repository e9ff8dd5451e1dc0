"""Exact resume: snapshots on trial events, a consistent copy of Tune's state, safe pruning.

Together with the per-trial result log that the journal writes straight into the results
folder (:mod:`raynas.callbacks`) and the trainable's choice of checkpoint (the newest one
whose epoch is logged), this makes ``raynas resume`` after a SIGKILL finish every trial
once, with every epoch reported once.

**Snapshots.** Ray Tune writes its experiment state (the trials, their statuses, the searcher) at most every
10 seconds, or after a number of checkpoints. A driver killed between two snapshots comes back
without the trials created or finished since the last one: finished trials run again and
new ones are lost. :class:`DurableScheduler` wraps the configured scheduler and asks the
controller for a snapshot at the end of every step in which a trial was added, finished,
failed or removed: a handful of small writes per trial, instead of one per result.

Schedulers are the one place Tune hands its controller to (``on_trial_add`` gets a restricted
wrapper, the others the controller itself), which is why this lives here and not in a callback.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import logging
import os
import shutil
import time
from typing import Any, Optional

from ray.tune.schedulers import TrialScheduler

from raynas._tune.schedulers import population_checkpoints
from raynas._tune.snapshots import Snapshots, mark_for_snapshot, set_trial_status, sync_running, unsettled
from raynas.experiment import atomic_file, checkpoint_dirs, copy_atomic

log = logging.getLogger(__name__)


class SnapshotPacer:
    """Asks for a snapshot on every trial event, spends at most ``share`` of the driver's time
    on them, and lets one be taken only when Tune's state is settled.

    **Pace.** A snapshot serialises every trial (and the searcher), so its cost grows with the
    number of trials, and one per trial event makes a long search quadratic: at 150 trivial
    trials half of the driver's time went into snapshots. While snapshots are cheap (small
    experiments, the ones whose trials take seconds) every event still gets its own; once a
    snapshot takes ``t`` seconds, the next forced one waits until ``t * (1/share - 1)``
    seconds have passed since the last one, and the events in between share it. A postponed
    request is not dropped: :meth:`poll` (called by the journal after every controller step)
    issues it when its time comes. ``t`` is timed around Tune's own
    ``sync_up_experiment_state`` (the save and, for a forced one, the wait for its copy).

    **Settled.** Tune tells the scheduler and the searcher of a result first; the decision
    they take (stop, pause) and the result's checkpoint are applied a step or more later,
    after a separate ``save`` call to the trial's actor. A snapshot in between pairs a
    scheduler that has seen the result (and, say, decided to stop the trial at a rung) with a
    trial still running from its older checkpoint: resumed from it, the trial reports the
    result again and goes on past its stop, and HyperBand counts the epoch twice. So a
    snapshot, forced or periodic, waits while any trial has a save or a decision on its way,
    and is taken at the first step that ends without one (saves take one round trip). After
    ``max_wait_s`` of none it is taken anyway. Tune's own final snapshot is never held back.
    """

    def __init__(self, share: float = 0.2, max_wait_s: float = 10.0):
        self.share = share
        self.max_wait_s = max_wait_s
        self.pending = False
        self._controller: Any = None
        self._hooked: Snapshots | None = None  # the snapshots timed and held
        self._held_since: float | None = None
        self.cost = 0.0  # seconds, of the last snapshot
        self.clock = time.monotonic

    def request(self, controller: Any) -> bool:
        self._controller = controller
        self.pending = True
        return self.poll()

    def ready(self) -> bool:
        """Asks for a snapshot; True when one is forced for the end of this controller step
        (or none can be asked for), False while snapshots are postponed."""
        if self._controller is None:
            return True
        self.pending = True
        return self.poll()

    @property
    def waiting(self) -> bool:
        """Whether a snapshot is asked for and not taken yet (postponed, or forced and held)."""
        return self.pending or bool(self._hooked is not None and self._hooked.forced)

    def _hook(self, snapshots: Snapshots) -> None:
        if self._hooked is not None and self._hooked.manager is snapshots.manager:
            return
        self._hooked = snapshots
        controller = self._controller
        pacer = self

        def around(original, save_fn, force: bool, wait: bool):
            now = pacer.clock()
            if snapshots.due(now) and not force and unsettled(controller):
                pacer._held_since = pacer._held_since or now
                if now - pacer._held_since < pacer.max_wait_s:
                    return None  # still due, at the end of the next step
            before = snapshots.last_time
            try:
                return original(save_fn=save_fn, force=force, wait=wait)
            finally:
                if snapshots.last_time != before:  # a snapshot, not a throttled call
                    pacer.cost, pacer._held_since = pacer.clock() - now, None

        snapshots.wrap(around)

    def poll(self) -> bool:
        """Forces the pending snapshot if its time has come; True if one is forced."""
        if not self.pending or self._controller is None:
            return False
        snapshots = Snapshots.of(self._controller)
        if snapshots is None:
            self.pending = False
            return False
        self._hook(snapshots)
        if self.clock() - snapshots.last_time < self.cost * (1.0 / self.share - 1.0):
            return False
        snapshots.force()
        self.pending = False
        return True


SCHEDULER_FILE = "scheduler.pkl"


class _MissingTrial:
    """Stands in for a trial the saved scheduler knew but the restored experiment does not."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id
        self.status = "TERMINATED"
        self.config: dict = {}

    def __repr__(self) -> str:
        return f"MissingTrial({self.trial_id})"


class DurableScheduler(TrialScheduler):
    """Delegates every decision to ``inner``; requests snapshots on trial events; survives resume.

    Ray Tune neither saves a scheduler's state nor expects one back: on restore it re-adds
    every trial to a fresh scheduler, so ASHA forgets its rungs, HyperBand its brackets and
    PBT its population. This wrapper pickles the inner scheduler at every experiment snapshot
    (through the journal, into the same consistent backup as Tune's own state), with each
    ``Trial`` replaced by its id; on resume it takes the re-added trials for itself and
    unpickles the saved scheduler bound to them.

    Args:
        inner: The scheduler that decides (FIFO, ASHA, HyperBand, median, PBT, ...).
        exp_dir: The experiment folder (where the saved state lives).
    """

    def __init__(self, inner: TrialScheduler, exp_dir: str | None = None):
        self.inner = inner
        self.exp_dir = exp_dir
        self.known_ids: set[str] = set()  # every trial the inner scheduler has been told about
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self.pacer = SnapshotPacer()
        self._active = False
        self._saved: bytes | None = None  # a saved scheduler waiting for its trials (resume)
        self._saved_ids: set[str] = set()
        self._readded: dict[str, Any] = {}
        # Trials the saved scheduler had paused: Tune restores them as PENDING (see choose_trial_to_run).
        self._paused_ids: set[str] = set()
        # Trials that were running when the state was saved: they start again first.
        self._running_ids: set[str] = set()
        # Trials the saved scheduler held that Tune did not restore (see _forget_lost).
        self._missing: list[_MissingTrial] = []

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("pacer", "_active", "_saved", "_saved_ids", "_readded", "_paused_ids", "_running_ids", "_missing"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset_runtime()

    # -- persistence
    def dump(self) -> bytes:
        """The inner scheduler, pickled with each trial as its id, and the ids it knows."""
        import io

        from ray import cloudpickle

        buffer = io.BytesIO()
        statuses: dict[str, str] = {}

        class Pickler(cloudpickle.CloudPickler):
            def persistent_id(self, obj):
                if not _is_trial(obj):
                    return None
                statuses[obj.trial_id] = obj.status
                return ("trial", obj.trial_id)

        Pickler(buffer).dump(self.inner)
        paused = sorted(tid for tid, status in statuses.items() if status == "PAUSED")
        running = sorted(tid for tid, status in statuses.items() if status == "RUNNING")
        return cloudpickle.dumps(
            {"known_ids": sorted(self.known_ids), "inner": buffer.getvalue(), "paused": paused, "running": running}
        )

    def checkpoints_in_use(self) -> list[str]:
        """Paths of checkpoints the inner scheduler may still hand to a trial: PBT and PB2 keep
        each trial's checkpoint from its last perturbation, which another trial can exploit
        later, after its owner has trained on (so it must survive pruning)."""
        return population_checkpoints(self.inner)

    def _activate(self) -> None:
        """On first use, on resume: pick up the saved scheduler."""
        if self._active:
            return
        self._active = True
        if self.exp_dir is None:
            return
        folder = snapshot_dir(self.exp_dir)
        path = os.path.join(folder, SCHEDULER_FILE) if folder else ""
        if os.path.exists(path):
            from ray import cloudpickle

            with open(path, "rb") as f:
                saved = cloudpickle.load(f)
            self._saved, self._saved_ids = saved["inner"], set(saved["known_ids"])
            self._paused_ids = set(saved.get("paused", ()))
            self._running_ids = set(saved.get("running", ()))
            log.info("restoring the %s scheduler's state", type(self.inner).__name__)

    def _load_saved(self) -> None:
        if self._saved is None:
            return
        import io
        import pickle

        readded = self._readded
        missing: dict[str, _MissingTrial] = {}

        class Unpickler(pickle.Unpickler):
            def persistent_load(self, pid):
                _, trial_id = pid
                # One object per id: schedulers key their dicts by the trial object.
                return readded.get(trial_id) or missing.setdefault(trial_id, _MissingTrial(trial_id))

        self.inner = Unpickler(io.BytesIO(self._saved)).load()
        self.known_ids = set(self._saved_ids)
        self._saved = None
        self._missing = list(missing.values())

    # Tune reads these attributes directly.
    @property
    def metric(self):
        return self.inner.metric

    @property
    def _metric(self):
        return self.inner.metric

    @property
    def supports_buffered_results(self):
        return self.inner.supports_buffered_results

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller, trial) -> None:
        self._activate()
        if self._saved is not None and trial.trial_id in self._saved_ids:
            # A trial Tune re-adds on resume: the saved scheduler knows it already.
            self._readded[trial.trial_id] = trial
            if len(self._readded) == len(self._saved_ids):
                self._load_saved()
            return
        self._load_saved()
        self.inner.on_trial_add(tune_controller, trial)
        self.known_ids.add(trial.trial_id)
        self.pacer.request(tune_controller)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._load_saved()
        self.inner.on_trial_error(tune_controller, trial)
        self.pacer.request(tune_controller)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_saved()
        return self.inner.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._load_saved()
        self.inner.on_trial_complete(tune_controller, trial, result)
        self.pacer.request(tune_controller)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._load_saved()
        self.inner.on_trial_remove(tune_controller, trial)
        # Tune stops a PAUSED or PENDING trial (HyperBand halving its bracket, say) without
        # marking it for the next snapshot (it marks only trials that have an actor), so the
        # snapshot kept it as PAUSED and a resume ran it again, to the end.
        mark_for_snapshot(tune_controller, trial)
        self.pacer.request(tune_controller)

    def choose_trial_to_run(self, tune_controller):
        self._activate()
        self._load_saved()
        if self._paused_ids:
            # Tune restores every unfinished trial as PENDING, and HyperBand runs any PENDING
            # trial, so a trial paused at a milestone until its bracket is halved would train
            # on past it (and be ranked on a later epoch). It goes back to PAUSED: the
            # scheduler unpauses it when its bracket says so, as it would have without the crash.
            for trial_id in self._paused_ids:
                trial = self._readded.get(trial_id)
                if trial is not None and trial.status == "PENDING":
                    if set_trial_status(tune_controller, trial, "PAUSED"):
                        mark_for_snapshot(tune_controller, trial)
            self._paused_ids = set()
        if self._missing:
            self._forget_lost(tune_controller)
        if self._running_ids:
            # Tune restores a trial that was running as PENDING too, beside the trials that
            # were waiting for a slot, and a scheduler may pick one of those first. Search and
            # scheduler then diverge from the run that was not interrupted: Tune creates the
            # next trial only when no trial is PENDING (one at a time for raynas's searchers),
            # so while the restored trials queue for slots, a synchronous HyperBand bracket
            # whose one waiting trial got a slot first reaches its milestone alone and is
            # halved before its other trials exist. The trials that were running start again
            # first, in the order they were created, and the others then wait as they did.
            for trial_id, trial in self._readded.items():  # in Tune's order of its trials
                if trial_id in self._running_ids and trial.status == "PENDING":
                    return trial
            self._running_ids = set()
        return self.inner.choose_trial_to_run(tune_controller)

    def _forget_lost(self, tune_controller) -> None:
        """Removes from the scheduler the trials it held unfinished that the restored experiment
        lacks. Snapshots are consistent, so there should be none; one left in a HyperBand
        bracket would hold the bracket at its milestone for ever, its other trials paused."""
        from raynas.experiment import read_journal

        journal = read_journal(self.exp_dir) if self.exp_dir else {}
        for trial in self._missing:
            rec = journal.get(trial.trial_id)
            if rec is not None and rec.status.finished:
                continue  # a finished trial Tune let go of: the scheduler has done with it
            log.warning("the saved scheduler knew trial %s, which the restored experiment lacks: removed from it", trial.trial_id)
            try:
                self.inner.on_trial_remove(tune_controller, trial)
            except (KeyError, NotImplementedError):
                pass  # the scheduler kept nothing of it
        self._missing = []

    def debug_string(self) -> str:
        return self.inner.debug_string()

    def save(self, checkpoint_path: str):
        return self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str):
        return self.inner.restore(checkpoint_path)


def _is_trial(obj: Any) -> bool:
    from ray.tune.experiment import Trial

    return isinstance(obj, Trial)


# -- Tune's state files, kept consistent across a crash ----------------------------------------

BACKUP_DIR = ".raynas-state"
MANIFEST = "manifest.json"
# What Tune reads back on restore, written (by then complete) in its staging folder. The
# callbacks' state is backed up as the previous snapshot left it (the journal's backup runs
# while Tune collects that state): raynas's callbacks keep none in it, but Tune refuses to
# resume from a file its copy left cut short by a SIGKILL.
STATE_PATTERNS = ("experiment_state-*.json", "searcher-state-*.pkl", "search_gen_state-*.json", "callback-states-*.pkl")


def backup_state(staging_dir: str, exp_dir: str, extra: dict[str, bytes] | None = None) -> list[str]:
    """Copies Tune's just-written state files from its staging folder into ``exp_dir``'s backup.

    Tune writes them in a staging folder and copies them to the results folder in a
    background thread, file by file and not atomically, so a crash can leave the results
    folder with a half-copied or mixed set. This copy is taken at snapshot time into a new
    folder of its own, and the manifest, replaced atomically last, names that folder: a
    crash at any point leaves the manifest naming one complete snapshot, never the scheduler
    of one snapshot beside Tune's trials of the one before (a resumed HyperBand then waited
    for a trial that Tune did not have).

    Args:
        staging_dir: Tune's staging folder for the experiment.
        exp_dir: The results folder.
        extra: raynas's own state of the same moment (the scheduler), by file name.

    Returns:
        The names of the files backed up.
    """
    backup = os.path.join(exp_dir, BACKUP_DIR)
    snapshot = f"snapshot-{time.time_ns():x}"
    folder = os.path.join(backup, snapshot)
    os.makedirs(folder, exist_ok=True)
    names = []
    for name, data in (extra or {}).items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
        names.append(name)
    for pattern in STATE_PATTERNS:
        for path in glob.glob(os.path.join(staging_dir, pattern)):
            name = os.path.basename(path)
            shutil.copyfile(path, os.path.join(folder, name))
            names.append(name)
    if not names:
        shutil.rmtree(folder, ignore_errors=True)
        return names
    with atomic_file(os.path.join(backup, MANIFEST)) as f:
        json.dump({"snapshot": snapshot, "files": sorted(names)}, f)
    # Older snapshots, and the loose files of the flat layout raynas wrote before.
    for name in os.listdir(backup):
        if name not in (snapshot, MANIFEST) and ".tmp-" not in name:
            path = os.path.join(backup, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
    return names


def snapshot_dir(exp_dir: str | os.PathLike) -> str | None:
    """The folder of the last complete backed-up snapshot, or None when there is none.

    Results folders written before snapshots had folders of their own keep their files
    directly in the backup folder (a manifest without ``snapshot``, or none at all).
    """
    backup = os.path.join(exp_dir, BACKUP_DIR)
    try:
        with open(os.path.join(backup, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return backup if os.path.isdir(backup) else None
    except json.JSONDecodeError:
        return None
    snapshot = manifest.get("snapshot") if isinstance(manifest, dict) else None
    return os.path.join(backup, snapshot) if snapshot else backup


def restore_state_backup(exp_dir: str) -> bool:
    """Puts the last complete snapshot back in place before Tune restores from ``exp_dir``.

    State files of other snapshots (a half-synced newer one, say) are removed so Tune
    cannot pick them. Returns False when there is no backup.
    """
    backup = os.path.join(exp_dir, BACKUP_DIR)
    try:
        with open(os.path.join(backup, MANIFEST), encoding="utf-8") as f:
            names = json.load(f)["files"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return False
    folder = snapshot_dir(exp_dir)
    for pattern in STATE_PATTERNS:
        for path in glob.glob(os.path.join(exp_dir, pattern)):
            if os.path.basename(path) not in names:
                os.remove(path)
    for name in names:
        if any(fnmatch.fnmatch(name, pattern) for pattern in STATE_PATTERNS):  # Tune's files go back
            copy_atomic(os.path.join(folder, name), os.path.join(exp_dir, name))
    return True


def prune_checkpoints(trial_dir: str, keep: set) -> None:
    """Deletes a trial's checkpoint folders except the newest and those named in ``keep``.

    Only safe right after a snapshot: the state just written refers to nothing older than
    the checkpoints in ``keep`` (the one it records, and the best one, kept for export).
    """
    found = checkpoint_dirs(trial_dir)
    if found:
        keep = set(keep) | {found[-1].name}
    for path in found:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


def staging_dir(trial: Any) -> str | None:
    """The trial's folder in Tune's driver staging folder (None where Tune keeps none)."""
    try:
        return trial.storage.trial_driver_staging_path
    except Exception:  # no storage (a stub trial), another Tune layout
        return None


def remove_staging_dirs(paths: list[str], syncer: Any) -> list[str]:
    """Removes finished trials' empty folders from Tune's driver staging folder; returns those
    left for a later call (a copy of the staging folder is running now).

    Tune makes a folder there for every trial it starts (for driver-side loggers, which raynas
    does not add) and, at every experiment snapshot, copies the whole staging folder into the
    results folder, so each copy walked one empty folder per trial ever run: at 6,000 trivial
    trials the copy thread held a quarter of the driver's samples (py-spy). The trial's own
    folder in the results folder (checkpoints, raynas's result log) is not touched. A folder is
    removed only when empty, and only while no copy is running (a copy lists the folder as it
    goes). Called from the snapshot hook, on Tune's thread, which alone starts copies.
    """
    if not paths:
        return paths
    running = sync_running(syncer)
    if running is None:
        return []  # cannot tell when a copy runs: leave the folders alone
    if running:
        return paths
    for path in paths:
        try:
            os.rmdir(path)
        except OSError:  # not empty (a logger wrote there), or gone
            pass
    return []


def remove_downloaded_raynas_files(storage: Any) -> list[str]:
    """Removes raynas's own files from the copy Tune's resume made in its staging folder;
    returns the paths removed.

    To restore, Tune copies every ``.json`` and ``.pkl`` file at the top of the results folder
    into its driver staging folder, and every later snapshot copies that folder back into the
    results folder: the journal (``trials.json``) and ``raynas.json`` as they were at the
    resume went back over what raynas wrote since, at each snapshot, until raynas wrote them
    again (a reader, or a second crash, in between found the journal of the resume's moment,
    and a resume from it took trials finished since for lost). raynas writes both straight
    into the results folder; Tune's copies go. Nothing is removed where the staging folder is
    the results folder itself, or for a Tune whose storage lacks these paths.
    """
    from raynas.experiment import JOURNAL_FILE, META_FILE

    staging = getattr(storage, "experiment_driver_staging_path", None)
    results = getattr(storage, "experiment_fs_path", None)
    if not isinstance(staging, str) or not isinstance(results, str):
        return []
    if os.path.realpath(staging) == os.path.realpath(results):
        return []
    removed = []
    for name in (JOURNAL_FILE, META_FILE):
        path = os.path.join(staging, name)
        try:
            os.remove(path)
        except FileNotFoundError:
            continue
        except OSError as err:  # the resume goes on; the journal is written again soon
            log.warning("could not remove Tune's copy %s: %s", path, err)
            continue
        removed.append(path)
    return removed
