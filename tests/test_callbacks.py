"""The journal after a driver was killed between a result and the next journal write.

Real Ray Tune Trial objects, as Tune restores them from its snapshot; the journal on disk is
older than the trials' result logs (it is written at most every few seconds, the logs on every
result), which is what a SIGKILL at the wrong moment leaves behind.
"""

import json

from ray.tune.experiment import Trial

from raynas.callbacks import Journal
from raynas.experiment import RESULT_FILE, Status, TrialRecord, read_journal, write_journal

MAX_EPOCHS = 4


def rows(acc):
    return [
        {"epoch": i + 1, "val_acc": a, "checkpoint_dir_name": f"checkpoint_{i:06d}"} for i, a in enumerate(acc)
    ]


def lay_out(tmp_path, logged: dict[str, list[dict]], journal_epochs: int):
    """An experiment folder whose journal knows ``journal_epochs`` epochs of each trial."""
    records = {}
    for tid, results in logged.items():
        rec = TrialRecord(trial_id=tid, order=len(records) + 1, status=Status.RUNNING, config={"train": {"lr": 0.1}})
        rec.dir = f"trial_{tid}"
        (tmp_path / rec.dir).mkdir()
        with open(tmp_path / rec.dir / RESULT_FILE, "w") as f:
            for row in results:
                f.write(json.dumps(row) + "\n")
        for row in results[:journal_epochs]:
            rec.epochs, rec.last = row["epoch"], {"epoch": row["epoch"], "val_acc": row["val_acc"]}
        records[tid] = rec
    write_journal(tmp_path, records)


def restored(tid, status):
    trial = Trial("run_trial", config={"train": {"lr": 0.1}}, trial_id=tid, stub=True)
    trial.set_status(status)
    return trial


def test_a_trial_that_had_reported_its_last_epoch_completes_after_resume(tmp_path):
    # Killed right after epoch 4 of 4 was logged; the journal still said 2 epochs.
    lay_out(tmp_path, {"a": rows([0.5, 0.7, 0.9, 0.8])}, journal_epochs=2)
    journal = Journal(str(tmp_path), "val_acc", "max", MAX_EPOCHS)
    journal.setup()
    trial = restored("a", Trial.RUNNING)
    journal.on_step_begin(0, [trial])
    rec = journal.records["a"]
    assert (rec.epochs, rec.best, rec.best_epoch) == (4, 0.9, 3)
    assert (rec.checkpoint, rec.best_checkpoint) == ("checkpoint_000003", "checkpoint_000002")
    # The trial finds nothing left to train and returns without a result.
    trial.set_status(Trial.TERMINATED)
    journal.on_trial_complete(1, [trial], trial)
    assert read_journal(tmp_path)["a"].status is Status.COMPLETED


def test_exploits_are_rebuilt_from_the_log_without_duplicates(tmp_path):
    results = rows([0.5, 0.6, 0.9])
    results[2]["raynas_exploited"] = "trial_b"
    lay_out(tmp_path, {"a": results, "b": rows([0.8, 0.9, 0.95])}, journal_epochs=3)
    journal = Journal(str(tmp_path), "val_acc", "max", MAX_EPOCHS)
    journal.setup()
    journal.records["a"].origin["exploits"] = [{"epoch": 3, "from": "b"}]  # the journal knew it
    journal.on_step_begin(0, [restored("a", Trial.PAUSED), restored("b", Trial.RUNNING)])
    assert journal.records["a"].origin["exploits"] == [{"epoch": 3, "from": "b"}]
    assert journal.records["a"].status is Status.PAUSED


def test_a_trial_the_snapshot_saw_end_is_finished_in_the_journal(tmp_path):
    # The snapshot recorded the trial as terminated; the driver died before the journal said so.
    lay_out(tmp_path, {"a": rows([0.5, 0.6, 0.7, 0.8]), "b": rows([0.4, 0.3])}, journal_epochs=1)
    journal = Journal(str(tmp_path), "val_acc", "max", MAX_EPOCHS)
    journal.setup()
    journal.on_step_begin(0, [restored("a", Trial.TERMINATED), restored("b", Trial.TERMINATED)])
    records = read_journal(tmp_path)
    assert records["a"].status is Status.COMPLETED and records["a"].epochs == 4
    assert records["b"].status is Status.STOPPED and records["b"].best == 0.4


def test_a_finished_trial_keeps_tunes_statistics_of_the_objectives_only(tmp_path):
    """Tune's per-metric running statistics of a finished trial (a real Trial, fed real
    results) shrink to the objective metrics, in memory and in the snapshot's JSON."""
    lay_out(tmp_path, {"a": rows([0.6, 0.7])}, journal_epochs=2)
    journal = Journal(str(tmp_path), "val_acc", "max", 2, objectives=("val_acc", "params"))
    journal.setup()
    trial = restored("a", Trial.RUNNING)
    for epoch in (1, 2):
        trial.update_last_result({"epoch": epoch, "val_acc": 0.5 + epoch / 10, "val_loss": 1.0 / epoch,
                                  "params": 100, "epoch_time_s": 0.01, "training_iteration": epoch})
    journal.on_step_begin(0, [trial])
    _, before = trial.get_json_state()
    assert {"val_loss", "epoch_time_s"} <= set(trial.run_metadata.metric_analysis)
    assert {"val_loss", "epoch_time_s"} <= set(json.loads(before)["metric_analysis"])
    trial.set_status(Trial.TERMINATED)
    journal.on_trial_complete(1, [trial], trial)
    assert read_journal(tmp_path)["a"].status is Status.COMPLETED
    assert set(trial.run_metadata.metric_analysis) == {"val_acc", "params"}
    assert set(trial.run_metadata.metric_n_steps) == {"val_acc", "params"}
    assert trial.run_metadata.metric_analysis["val_acc"]["max"] == 0.7
    _, after = trial.get_json_state()
    # The snapshot's JSON of the trial is written anew, smaller.
    assert set(json.loads(after)["metric_analysis"]) == {"val_acc", "params"}
    assert len(after) < len(before)


def test_a_finished_trial_missing_from_the_restored_state_stays_finished(tmp_path):
    """Finished trials leave Tune's state once the journal says they finished
    (raynas._tune.controller.finished_trials_released); only unfinished ones missing from it are lost."""
    lay_out(tmp_path, {"a": rows([0.5, 0.6, 0.7, 0.8]), "b": rows([0.4]), "c": rows([0.3])}, journal_epochs=4)
    records = read_journal(tmp_path)
    records["a"].status = Status.COMPLETED
    write_journal(tmp_path, records)
    journal = Journal(str(tmp_path), "val_acc", "max", MAX_EPOCHS)
    journal.setup()
    assert journal.settled("a") and not journal.settled("b")
    journal.on_step_begin(0, [restored("c", Trial.RUNNING)])  # neither a nor b is in Tune's state
    after = read_journal(tmp_path)
    assert after["a"].status is Status.COMPLETED and after["a"].epochs == 4
    assert after["b"].status is Status.LOST and after["c"].status is Status.RUNNING


def test_a_finished_trial_is_settled_only_once_its_end_is_written(tmp_path):
    lay_out(tmp_path, {"a": rows([0.5])}, journal_epochs=1)
    journal = Journal(str(tmp_path), "val_acc", "max", 1)
    journal.setup()
    trial = restored("a", Trial.RUNNING)
    journal.on_step_begin(0, [trial])
    assert not journal.settled("a")  # running
    trial.set_status(Trial.TERMINATED)
    journal.on_trial_complete(1, [trial], trial)  # no snapshot pacer here: written at once
    assert read_journal(tmp_path)["a"].status is Status.COMPLETED and journal.settled("a")
    journal._dirty = True  # a change waiting for the next write (held until a snapshot)
    assert not journal.settled("a")


def test_start_orders_go_on_from_the_journal_read_back(tmp_path):
    lay_out(tmp_path, {"a": rows([0.5]), "b": rows([0.6])}, journal_epochs=1)  # orders 1 and 2
    journal = Journal(str(tmp_path), "val_acc", "max", MAX_EPOCHS)
    journal.setup()
    new = [restored(tid, Trial.RUNNING) for tid in ("c", "d")]
    for trial in new:
        journal.on_trial_start(0, new, trial)
    journal.on_trial_start(0, new, new[0])  # started again after a pause: keeps its number
    assert {tid: journal.records[tid].order for tid in "abcd"} == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert read_journal(tmp_path)["d"].order == 4


def test_the_log_counts_finished_trials_across_a_resume(tmp_path):
    import io

    from raynas.progress import ProgressView

    lay_out(tmp_path, {"a": rows([0.5, 0.6]), "b": rows([0.7]), "c": rows([0.4])}, journal_epochs=1)
    records = read_journal(tmp_path)
    records["a"].status = Status.COMPLETED  # finished before the driver stopped
    write_journal(tmp_path, records)
    out = io.StringIO()
    view = ProgressView("exp", "val_acc", "max", 3, MAX_EPOCHS, stream=out, interactive=False)
    journal = Journal(str(tmp_path), "val_acc", "max", MAX_EPOCHS, view=view)
    journal.setup()
    b, c = restored("b", Trial.RUNNING), restored("c", Trial.RUNNING)
    journal.on_step_begin(0, [b, c])
    for trial in (b, c, c):  # c's end told twice: counted once
        trial.set_status(Trial.TERMINATED)
        journal.on_trial_complete(1, [b, c], trial)
    assert [line.split(" trial")[0] for line in out.getvalue().splitlines()] == ["[2/3]", "[3/3]", "[3/3]"]


def _finished(tid, order, best):
    return TrialRecord(trial_id=tid, order=order, status=Status.COMPLETED, config={"x": order},
                       dir=f"trial_{tid}", epochs=1, best=best)


def test_retired_trials_are_kept_in_the_file_only(tmp_path):
    from raynas.experiment import JournalWriter

    records = {t: _finished(t, n, 0.1 * n) for n, t in enumerate("abc", 1)}
    records["d"] = TrialRecord(trial_id="d", order=4, status=Status.RUNNING, dir="trial_d")
    writer = JournalWriter(tmp_path)
    writer.write(records, retire=["a", "b"])
    for tid in ("a", "b"):
        del records[tid]
    assert set(writer.encoded) == {"c", "d"}
    # Later writes copy the retired lines from the file; changed and new records are encoded.
    records["d"].status, records["d"].epochs = Status.COMPLETED, 1
    records["e"] = TrialRecord(trial_id="e", order=5, status=Status.RUNNING)
    writer.write(records, changed={"d", "e"}, retire=["c"])
    del records["c"]
    writer.write(records, changed=set())
    back = read_journal(tmp_path)
    assert list(back) == ["a", "b", "c", "d", "e"]  # in start order, whatever the file's order
    assert [back[t].best for t in "abc"] == [0.1, 0.2, 0.1 * 3] and back["a"].config == {"x": 1}
    assert back["d"].status is Status.COMPLETED and back["e"].status is Status.RUNNING
    assert set(writer.encoded) == {"d", "e"}
    json.loads((tmp_path / "trials.json").read_text())  # one JSON object


def test_retired_trials_survive_another_hand_rewriting_the_file(tmp_path, caplog):
    from raynas.experiment import JournalWriter

    records = {t: _finished(t, n, 0.5) for n, t in enumerate("ab", 1)}
    writer = JournalWriter(tmp_path)
    writer.write(records, retire=["a"])
    del records["a"]
    # Rewritten (same content, another layout): the byte range of "a" is no longer valid.
    raw = json.loads((tmp_path / "trials.json").read_text())
    (tmp_path / "trials.json").write_text(json.dumps(raw, indent=2))
    records["b"].epochs = 2
    writer.write(records, changed={"b"})
    back = read_journal(tmp_path)
    assert back["a"].best == 0.5 and back["a"].config == {"x": 1} and back["b"].epochs == 2
    # Removed: what it listed of retired trials is gone, and the log says so.
    (tmp_path / "trials.json").unlink()
    writer.write(records, changed=set())
    assert list(read_journal(tmp_path)) == ["b"]
    assert "removed or emptied" in caplog.text


def _run_trials(journal, ids, trials):
    for tid in ids:
        trial = restored(tid, Trial.RUNNING)
        trials.append(trial)
        journal.on_trial_start(0, trials, trial)
        acc = 0.9 if tid == "b" else 0.5
        journal.on_trial_result(0, trials, trial, {"epoch": 1, "val_acc": acc})
        trial.set_status(Trial.TERMINATED)
        journal.on_trial_complete(0, trials, trial)


def test_the_journal_lets_go_of_retired_trials_and_the_view_still_counts_them(tmp_path):
    import io

    from raynas.progress import ProgressView

    out = io.StringIO()
    view = ProgressView("exp", "val_acc", "max", 8, 1, stream=out, interactive=False, top=2)
    journal = Journal(str(tmp_path), "val_acc", "max", 1, view=view)
    journal.setup()
    trials = []
    journal.on_step_begin(0, trials)
    _run_trials(journal, "abcde", trials)
    journal.retire(["a", "b", "c"])  # as the runner does for trials Tune's controller let go
    assert set(journal.records) == set("abcde")  # until the next write
    _run_trials(journal, "f", trials)
    assert set(journal.records) == set("def")
    assert journal.records["f"].order == 6
    assert [line.split(" trial")[0] for line in out.getvalue().splitlines()] == [f"[{n}/8]" for n in range(1, 7)]
    head, _, *rows = view.lines(journal.records.values())
    assert "6/8 done" in head and "best val_acc 0.9000 (#2)" in head
    assert rows[0].split()[1] == "b"  # the best trial, retired, still listed
    assert set(read_journal(tmp_path)) == set("abcdef")

    # A resume reads every record back, and lets go at once of those Tune's state lacks.
    view = ProgressView("exp", "val_acc", "max", 8, 1, stream=io.StringIO(), interactive=False)
    journal = Journal(str(tmp_path), "val_acc", "max", 1, view=view)
    journal.setup()
    kept = restored("f", Trial.TERMINATED)
    journal.on_step_begin(0, [kept])
    assert set(journal.records) == {"f"}
    trials = [kept]
    _run_trials(journal, "g", trials)
    assert journal.records["g"].order == 7
    assert "7/8 done" in view.lines(journal.records.values())[0]
    back = read_journal(tmp_path)
    assert list(back) == list("abcdefg") and back["b"].best == 0.9
