"""DurableScheduler: a scheduler's state saved with trials as ids, restored onto new Trial objects.

Real Ray Tune schedulers and Trial objects; the controller is the minimal object the
schedulers' bookkeeping touches (nothing here pauses or stops a trial).
"""

import os
from pathlib import Path

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler, MedianStoppingRule

from raynas import durable
from raynas.durable import BACKUP_DIR, SCHEDULER_FILE, DurableScheduler
from raynas.search.pbt_scheduler import RaynasPB2, RaynasPBT


class Controller:
    """What schedulers read from Tune's controller while recording results."""

    search_alg = None

    def __init__(self, trials):
        self._trials = trials

    def get_trials(self):
        return self._trials

    def get_live_trials(self):
        return self._trials

    def _set_trial_status(self, trial, status):
        trial.set_status(status)

    def _mark_trial_to_checkpoint(self, trial):
        self.marked = getattr(self, "marked", []) + [trial]


def trials(prefix: str, n: int):
    return [Trial("run_trial", config={"train": {"lr": 0.01 * (i + 1)}}, trial_id=f"{prefix}{i}", stub=True) for i in range(n)]


def feed(scheduler, controller, ts, epochs):
    decisions = {}
    for t in ts:
        t.set_status(Trial.RUNNING)
        scheduler.on_trial_add(controller, t)
    for epoch in range(1, epochs + 1):
        for i, t in enumerate(ts):
            result = {"epoch": epoch, "val_acc": 0.1 * (i + 1) * epoch, "training_iteration": epoch, "time_total_s": epoch}
            decisions[(t.trial_id, epoch)] = scheduler.on_trial_result(controller, t, result)
    return decisions


SCHEDULERS = {
    "asha": lambda: AsyncHyperBandScheduler(time_attr="epoch", max_t=8, grace_period=1, reduction_factor=2),
    "hyperband": lambda: HyperBandScheduler(time_attr="epoch", max_t=8, reduction_factor=2),
    "median": lambda: MedianStoppingRule(time_attr="epoch", grace_period=1, min_samples_required=2),
    "pbt": lambda: RaynasPBT(time_attr="epoch", perturbation_interval=100, hyperparam_mutations={"train": {"lr": [0.01, 0.02]}}),
    "pb2": lambda: RaynasPB2(time_attr="epoch", perturbation_interval=100, hyperparam_bounds={"train": {"lr": [0.01, 0.1]}}),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_saved_scheduler_rebinds_to_the_restored_trials(tmp_path, name):
    exp_dir = str(tmp_path)
    first = DurableScheduler(SCHEDULERS[name](), exp_dir)
    first.set_search_properties("val_acc", "max")
    old = trials("t", 4)
    feed(first, Controller(old), old, epochs=2)
    state_before = first.inner.debug_string()
    os.makedirs(tmp_path / BACKUP_DIR)
    (tmp_path / BACKUP_DIR / SCHEDULER_FILE).write_bytes(first.dump())

    # A resumed run: Tune unpickles the scheduler as it was at the start (tuner.pkl, written
    # with cloudpickle), then re-adds every restored trial (new objects, same ids) to it.
    from ray import cloudpickle

    fresh = SCHEDULERS[name]()
    fresh.set_search_properties("val_acc", "max")
    resumed = cloudpickle.loads(cloudpickle.dumps(DurableScheduler(fresh, exp_dir)))
    new = trials("t", 4)
    controller = Controller(new)
    for t in new:
        t.set_status(Trial.RUNNING)
        resumed.on_trial_add(controller, t)
    assert resumed.inner is not fresh, "the saved scheduler should replace the fresh one"
    assert resumed.inner.debug_string() == state_before
    assert resumed.known_ids == {t.trial_id for t in new}

    # Every Trial the restored scheduler holds is one of the new objects, not a stale copy.
    held = []

    def walk(obj, depth=0):
        if depth > 6:
            return
        if isinstance(obj, Trial):
            held.append(obj)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(k, depth + 1)
                walk(v, depth + 1)
        elif isinstance(obj, (list, tuple, set)):
            for v in obj:
                walk(v, depth + 1)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            walk(vars(obj), depth + 1)

    walk(resumed.inner)
    assert all(any(h is t for t in new) for h in held)

    # A trial the saved scheduler did not know is added normally.
    extra = trials("x", 1)[0]
    extra.set_status(Trial.RUNNING)
    resumed.on_trial_add(controller, extra)
    assert extra.trial_id in resumed.known_ids


def hyperband():
    scheduler = HyperBandScheduler(time_attr="epoch", max_t=8, reduction_factor=2)
    scheduler.set_search_properties("val_acc", "max")
    return scheduler


def resume_and_start(tmp_path, first, n, finished=()):
    """Saves ``first``'s state, resumes a fresh HyperBand onto ``n`` new trials (PENDING, as Tune
    restores them, except those in ``finished``) and starts what it chooses, in turn, until it
    chooses none. Returns the new trials and the chosen ones in order."""
    exp_dir = str(tmp_path)
    os.makedirs(tmp_path / BACKUP_DIR)
    (tmp_path / BACKUP_DIR / SCHEDULER_FILE).write_bytes(first.dump())
    resumed = DurableScheduler(hyperband(), exp_dir)
    new = trials("t", n)
    controller = Controller(new)
    for t in new:
        t.set_status(Trial.TERMINATED if t.trial_id in finished else Trial.PENDING)
        resumed.on_trial_add(controller, t)
    chosen = []
    while (trial := resumed.choose_trial_to_run(controller)) is not None:
        chosen.append(trial)
        trial.set_status(Trial.RUNNING)
    return new, chosen


def test_a_trial_paused_at_a_milestone_stays_paused_after_resume(tmp_path):
    # HyperBand pauses a trial at its bracket's milestone until the bracket can be halved. Tune
    # restores every unfinished trial as PENDING, and HyperBand runs any PENDING trial: resumed
    # as is, the paused trial trains on past its milestone and is ranked on a later epoch.
    first = DurableScheduler(hyperband(), str(tmp_path))
    old = trials("t", 6)  # two brackets: 4 trials to epoch 8, then 2 (of 4) to epoch 4
    controller = Controller(old)
    for t in old:
        t.set_status(Trial.RUNNING)
        first.on_trial_add(controller, t)
    decisions = [first.on_trial_result(controller, old[4], {"epoch": e, "val_acc": 0.1 * e}) for e in (1, 2, 3, 4)]
    assert decisions[-1] == "PAUSE"  # at its milestone; its bracket waits for the others
    old[4].set_status(Trial.PAUSED)

    new, chosen = resume_and_start(tmp_path, first, 6)
    assert new[4].status == Trial.PAUSED
    assert chosen == [t for i, t in enumerate(new) if i != 4]


def finished_first_bracket(tmp_path, n: int):
    """A saved-to-be HyperBand with ``n`` trials added (PENDING) and the first bracket's four
    finished at epoch 8; returns the scheduler, the trials and the controller."""
    first = DurableScheduler(hyperband(), str(tmp_path))
    old = trials("t", n)
    controller = Controller(old)
    for t in old:
        t.set_status(Trial.PENDING)
        first.on_trial_add(controller, t)
    for t in old[:4]:
        t.set_status(Trial.TERMINATED)
        first.on_trial_complete(controller, t, {"epoch": 8, "val_acc": 0.8})
    return first, old, controller


def test_trials_that_were_running_start_again_before_those_that_waited(tmp_path):
    # Tune restores running and waiting trials alike as PENDING, and creates a new trial only
    # when none is PENDING. HyperBand picks a waiting trial of its newest bracket first: it
    # reached its milestone alone, and the bracket was halved before its other trials existed.
    # brackets of 4 (to epoch 8), 4 (halved at 4) and 1 of 6 (halved at 2)
    first, old, controller = finished_first_bracket(tmp_path, 9)
    for t in old[4:6]:
        t.set_status(Trial.RUNNING)
        assert [first.on_trial_result(controller, t, {"epoch": e, "val_acc": 0.1 * e}) for e in (1, 2, 3, 4)][-1] == "PAUSE"
        t.set_status(Trial.PAUSED)
    for t in old[6:8]:
        t.set_status(Trial.RUNNING)
        assert first.on_trial_result(controller, t, {"epoch": 1, "val_acc": 0.1}) == "CONTINUE"

    new, chosen = resume_and_start(tmp_path, first, 9, finished={"t0", "t1", "t2", "t3"})
    assert [t.trial_id for t in chosen] == ["t6", "t7", "t8"]
    assert new[4].status == new[5].status == Trial.PAUSED


def test_a_paused_trial_that_is_stopped_is_written_into_the_next_snapshot(tmp_path):
    # Tune marks a trial for its next snapshot when it stops the trial's actor; a PAUSED trial
    # has none, so HyperBand's halving stopped it without the snapshot knowing, and a resume
    # ran it again to the end.
    scheduler = DurableScheduler(HyperBandScheduler(time_attr="epoch", max_t=8, reduction_factor=2), str(tmp_path))
    scheduler.set_search_properties("val_acc", "max")
    ts = trials("t", 2)
    controller = Controller(ts)
    for t in ts:
        t.set_status(Trial.PAUSED)
        scheduler.on_trial_add(controller, t)
    scheduler.on_trial_remove(controller, ts[1])  # what Tune's stop_trial calls for a PAUSED trial
    assert controller.marked == [ts[1]]


def test_a_trial_the_restored_experiment_lacks_does_not_hold_its_bracket(tmp_path):
    # A saved HyperBand whose bracket holds a trial Tune did not restore (and the journal never
    # saw): its three other trials, paused at the milestone, waited for it for ever.
    from raynas.experiment import Status, TrialRecord, write_journal

    first, old, controller = finished_first_bracket(tmp_path, 8)  # brackets of 4 (to epoch 8) and 4 (halved at 4)
    for i, t in enumerate(old[4:7]):
        t.set_status(Trial.RUNNING)
        decisions = [first.on_trial_result(controller, t, {"epoch": e, "val_acc": 0.1 * e + i}) for e in (1, 2, 3, 4)]
        assert decisions[-1] == "PAUSE"
        t.set_status(Trial.PAUSED)
    write_journal(
        str(tmp_path),
        {t.trial_id: TrialRecord(t.trial_id, order=i + 1, status=Status.COMPLETED) for i, t in enumerate(old[:4])},
    )
    os.makedirs(tmp_path / BACKUP_DIR)
    (tmp_path / BACKUP_DIR / SCHEDULER_FILE).write_bytes(first.dump())

    # Tune restores the three paused trials only (the finished ones were released).
    resumed = DurableScheduler(hyperband(), str(tmp_path))
    new = [t for t in trials("t", 8)][4:7]

    class Stopping(Controller):
        def stop_trial(self, trial):
            trial.set_status(Trial.TERMINATED)
            resumed.on_trial_remove(self, trial)

    controller = Stopping(new)
    for t in new:
        t.set_status(Trial.PENDING)
        resumed.on_trial_add(controller, t)
    chosen = resumed.choose_trial_to_run(controller)
    # The bracket is halved without t7: its best two go on to epoch 8, the third stops.
    assert new[0].status == Trial.TERMINATED
    assert chosen is new[1]
    chosen.set_status(Trial.RUNNING)
    assert resumed.choose_trial_to_run(controller) is new[2]


def test_a_crash_while_backing_up_leaves_the_previous_snapshot_whole(tmp_path, monkeypatch):
    # The scheduler used to be replaced in the backup before Tune's files and the manifest: a
    # SIGKILL between them resumed one snapshot's scheduler with the trials of the one before.
    staging, exp = tmp_path / "staging", tmp_path / "exp"
    staging.mkdir()
    exp.mkdir()
    names = ["experiment_state-s.json", "searcher-state-s.pkl", "search_gen_state-s.json", "callback-states-s.pkl"]

    def snapshot(tag: bytes):
        for name in names:
            (staging / name).write_bytes(tag + name.encode())
        durable.backup_state(str(staging), str(exp), {SCHEDULER_FILE: tag + b"scheduler"})

    snapshot(b"first ")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the manifest")

    monkeypatch.setattr(durable, "atomic_file", killed)
    with pytest.raises(KeyboardInterrupt):
        snapshot(b"second ")
    monkeypatch.undo()
    folder = Path(durable.snapshot_dir(str(exp)))
    assert (folder / SCHEDULER_FILE).read_bytes() == b"first scheduler"
    assert durable.restore_state_backup(str(exp))
    for name in names:
        assert (exp / name).read_bytes() == b"first " + name.encode()
    snapshot(b"third ")  # the next snapshot replaces both, and the half-written one goes
    assert (Path(durable.snapshot_dir(str(exp))) / SCHEDULER_FILE).read_bytes() == b"third scheduler"
    assert len([p for p in (exp / BACKUP_DIR).iterdir() if p.is_dir()]) == 1


def test_a_backup_in_the_flat_layout_still_restores(tmp_path):
    # Folders backed up before snapshots had folders of their own: files beside the manifest.
    import json

    backup = tmp_path / BACKUP_DIR
    backup.mkdir()
    (backup / "experiment_state-s.json").write_text("{}")
    (backup / SCHEDULER_FILE).write_bytes(b"old")
    (backup / durable.MANIFEST).write_text(json.dumps({"files": ["experiment_state-s.json", SCHEDULER_FILE]}))
    assert durable.snapshot_dir(str(tmp_path)) == str(backup)
    assert durable.restore_state_backup(str(tmp_path))
    assert (tmp_path / "experiment_state-s.json").read_text() == "{}"


def test_a_fresh_run_has_nothing_to_restore(tmp_path):
    scheduler = DurableScheduler(SCHEDULERS["asha"](), str(tmp_path))
    scheduler.set_search_properties("val_acc", "max")
    inner = scheduler.inner
    t = trials("t", 1)
    feed(scheduler, Controller(t), t, epochs=1)
    assert scheduler.inner is inner


@pytest.mark.parametrize("name", ["pbt", "pb2"])
def test_population_checkpoints_stay_in_use_until_replaced(tmp_path, name):
    """PBT keeps each trial's checkpoint from its last perturbation for later exploits; the
    journal must not prune it while the trial trains on."""
    from ray import tune

    scheduler = DurableScheduler(SCHEDULERS[name](), str(tmp_path))
    scheduler.set_search_properties("val_acc", "max")
    ts = trials("p", 2)
    feed(scheduler, Controller(ts), ts, epochs=1)
    assert scheduler.checkpoints_in_use() == []
    for i, t in enumerate(ts):
        scheduler.inner._trial_state[t].last_checkpoint = tune.Checkpoint(str(tmp_path / f"trial_{t.trial_id}" / f"checkpoint_00000{i}"))
    assert sorted(scheduler.checkpoints_in_use()) == [
        str(tmp_path / "trial_p0" / "checkpoint_000000"),
        str(tmp_path / "trial_p1" / "checkpoint_000001"),
    ]
    assert DurableScheduler(SCHEDULERS["asha"](), str(tmp_path / "other")).checkpoints_in_use() == []


def _snapshot_manager(tmp_path):
    """Tune's own experiment snapshot manager, on a real storage context (it needs Ray's
    session), and a save function that writes a state file of a given cost."""
    import time

    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp")

    def save(seconds: float = 0.0):
        def save_fn():
            os.makedirs(storage.experiment_driver_staging_path, exist_ok=True)
            with open(os.path.join(storage.experiment_driver_staging_path, "experiment_state-x.json"), "w") as f:
                f.write("{}")
            time.sleep(seconds)

        return save_fn

    return _ExperimentCheckpointManager(storage=storage, checkpoint_period="auto"), save


@pytest.mark.ray
def test_the_pacer_times_each_snapshot_not_the_gap_since_it_asked(tmp_path, shared_ray):
    import time
    from types import SimpleNamespace

    manager, save = _snapshot_manager(tmp_path)
    controller = SimpleNamespace(_checkpoint_manager=manager)
    pacer = durable.SnapshotPacer(share=0.2)
    assert pacer.request(controller) and manager._should_force_sync_up
    manager.sync_up_experiment_state(save_fn=save(0.05))
    assert 0.05 <= pacer.cost < 1.0
    # A cheap snapshot of Tune's own, a while later: the pacer's cost is that snapshot's, so a
    # trial event soon after gets its snapshot (the pacer used to take the whole 0.5 s since it
    # asked as the cost, and postponed every later snapshot by four times that gap).
    time.sleep(0.5)
    manager.sync_up_experiment_state(save_fn=save(), force=True)
    assert pacer.cost < 0.25  # the 0.5 s gap is not in it
    time.sleep(5 * pacer.cost)
    assert pacer.request(controller) and manager._should_force_sync_up
    # A throttled call writes nothing and leaves the cost alone.
    manager.sync_up_experiment_state(save_fn=save())
    cost = pacer.cost
    manager.sync_up_experiment_state(save_fn=save(0.2))
    assert pacer.cost == cost


@pytest.mark.ray
def test_the_pacer_postpones_snapshots_that_cost_more_than_their_share(tmp_path, shared_ray):
    import time
    from types import SimpleNamespace

    manager, save = _snapshot_manager(tmp_path)
    controller = SimpleNamespace(_checkpoint_manager=manager)
    pacer = durable.SnapshotPacer(share=0.5)
    pacer.request(controller)
    manager.sync_up_experiment_state(save_fn=save(0.2))
    assert not pacer.request(controller) and pacer.pending  # 0.2 s snapshots at 50%: wait 0.2 s
    time.sleep(0.3)
    assert pacer.poll() and manager._should_force_sync_up and not pacer.pending


@pytest.mark.ray
def test_snapshots_wait_until_no_checkpoint_or_decision_is_on_its_way(tmp_path, shared_ray):
    # Tune tells the scheduler of a result a step before it registers the result's checkpoint
    # and applies the decision (stop, pause). A snapshot in between would resume the trial from
    # its older checkpoint, past a stop the restored scheduler had already decided.
    from types import SimpleNamespace

    manager, save = _snapshot_manager(tmp_path)
    a, b = trials("t", 2)
    controller = SimpleNamespace(_checkpoint_manager=manager, _cached_trial_decisions={}, _live_trials={a, b})
    pacer = durable.SnapshotPacer(share=0.2, max_wait_s=3600)
    saved = []
    assert pacer.request(controller)
    a.temporary_state.saving_to = object()  # a's last result: its checkpoint is being saved
    manager.sync_up_experiment_state(save_fn=lambda: saved.append("forced"))
    assert saved == [] and manager._should_force_sync_up and pacer.waiting  # held, and still due
    a.temporary_state.saving_to = None
    controller._cached_trial_decisions["t1"] = "STOP"  # b: a decision waiting for its save
    manager.sync_up_experiment_state(save_fn=lambda: saved.append("forced"))
    assert saved == []
    controller._cached_trial_decisions.clear()
    manager.sync_up_experiment_state(save_fn=save())
    assert not manager._should_force_sync_up and manager._last_save_time > 0  # settled: taken
    assert not pacer.waiting
    # Tune's own final snapshot (force=True) is never held.
    b.temporary_state.saving_to = object()
    manager.sync_up_experiment_state(save_fn=lambda: saved.append("final"), force=True)
    assert saved == ["final"]


@pytest.mark.ray
def test_a_held_snapshot_is_taken_after_max_wait(tmp_path, shared_ray):
    from types import SimpleNamespace

    manager, save = _snapshot_manager(tmp_path)
    (a,) = trials("t", 1)
    controller = SimpleNamespace(_checkpoint_manager=manager, _cached_trial_decisions={}, _live_trials={a})
    pacer = durable.SnapshotPacer(share=0.2, max_wait_s=5.0)
    pacer.request(controller)
    a.temporary_state.saving_to = object()  # saving all the time
    clock = [1000.0]
    pacer.clock = lambda: clock[0]
    saved = []
    manager.sync_up_experiment_state(save_fn=lambda: saved.append(1))
    clock[0] += 4.0
    manager.sync_up_experiment_state(save_fn=lambda: saved.append(1))
    assert saved == []
    clock[0] += 2.0
    manager.sync_up_experiment_state(save_fn=lambda: saved.append(1))
    assert saved == [1]


def test_a_state_file_cut_short_by_a_crash_is_replaced_from_the_backup(tmp_path):
    # Tune copies its state files from its staging folder into the results folder in the
    # background; a SIGKILL mid-copy left an empty callback-states file, and resume failed on it.
    staging, exp = tmp_path / "staging", tmp_path / "exp"
    staging.mkdir()
    exp.mkdir()
    names = ["experiment_state-s.json", "searcher-state-s.pkl", "search_gen_state-s.json", "callback-states-s.pkl"]
    for name in names:
        (staging / name).write_bytes(b"complete " + name.encode())
    durable.backup_state(str(staging), str(exp), {SCHEDULER_FILE: b"scheduler"})
    for name in names:
        (exp / name).write_bytes(b"")  # cut short
    (exp / "callback-states-newer.pkl").write_bytes(b"")  # a half-synced newer snapshot's
    assert durable.restore_state_backup(str(exp))
    for name in names:
        assert (exp / name).read_bytes() == b"complete " + name.encode()
    assert not (exp / "callback-states-newer.pkl").exists()


def test_tunes_staging_copy_keeps_no_raynas_file_after_a_resume(tmp_path, shared_ray):
    """Tune's resume copies the results folder's top-level JSON files into its staging folder,
    and every snapshot copies that folder back: without the removal the journal went back to
    what it said at the resume."""
    import json

    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    results = tmp_path / "res" / "exp"
    results.mkdir(parents=True)
    for name in ("trials.json", "raynas.json", "experiment_state-x.json"):
        (results / name).write_text(json.dumps({"at": "resume"}))
    storage = StorageContext(storage_path=str(tmp_path / "res"), experiment_dir_name="exp")
    manager = _ExperimentCheckpointManager(storage=storage, checkpoint_period="auto")

    def snapshot_after_raynas_wrote():
        for name in ("trials.json", "raynas.json"):
            (results / name).write_text(json.dumps({"at": "later"}))
        manager.sync_up_experiment_state(save_fn=lambda: None, force=True, wait=True)
        storage.syncer.wait()
        return {name: json.loads((results / name).read_text())["at"] for name in ("trials.json", "raynas.json")}

    manager.sync_down_experiment_state()  # what Tune's resume does
    assert snapshot_after_raynas_wrote() == {"trials.json": "resume", "raynas.json": "resume"}  # Tune's rule
    manager.sync_down_experiment_state()
    removed = durable.remove_downloaded_raynas_files(storage)
    assert sorted(os.path.basename(p) for p in removed) == ["raynas.json", "trials.json"]
    assert snapshot_after_raynas_wrote() == {"trials.json": "later", "raynas.json": "later"}
    assert (Path(storage.experiment_driver_staging_path) / "experiment_state-x.json").exists()  # Tune's own stay


def test_no_raynas_file_is_removed_where_tune_stages_in_the_results_folder(tmp_path):
    class Storage:
        experiment_driver_staging_path = str(tmp_path)
        experiment_fs_path = str(tmp_path)

    (tmp_path / "trials.json").write_text("{}")
    assert durable.remove_downloaded_raynas_files(Storage()) == []
    assert (tmp_path / "trials.json").exists()
    assert durable.remove_downloaded_raynas_files(object()) == []  # another Tune's storage


@pytest.mark.ray
def test_a_snapshot_is_written_only_once_the_last_one_is_uploaded(tmp_path, shared_ray):
    # Tune's syncer copies the staging folder in the background; a snapshot written meanwhile
    # replaced a file the copy had listed, and the copy failed with a traceback for the user.
    import threading

    from raynas._tune.snapshots import Snapshots

    manager, _ = _snapshot_manager(tmp_path)
    Snapshots(manager).wrap(lambda original, save_fn, force, wait: original(save_fn=save_fn, force=force, wait=wait))
    syncer = manager._storage.syncer
    release = threading.Event()
    syncer._launch_sync_process((release.wait, {}))  # an upload still in flight
    uploading = []

    def save_fn():
        uploading.append(syncer._sync_process is not None and bool(syncer._sync_process.is_running))

    threading.Timer(0.5, release.set).start()
    manager.sync_up_experiment_state(save_fn=save_fn, force=True)
    assert uploading == [False]
