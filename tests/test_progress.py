"""The trial table: redrawn in place on a terminal, one line per finished trial in a log."""

import io

from raynas.experiment import Status, TrialRecord
from raynas.progress import ProgressView, fmt_duration, fmt_metric


def records():
    return [
        TrialRecord("aaa", order=1, status=Status.COMPLETED, epochs=10, best=0.97, last={"params": 9610}),
        TrialRecord("bbb", order=2, status=Status.STOPPED, epochs=1, best=0.41),
        TrialRecord("ccc", order=3, status=Status.RUNNING, epochs=4, best=0.9, last={"params": 2410}),
        TrialRecord("ddd", order=4, status=Status.FAILED, epochs=0, error="ArchError: too deep"),
        TrialRecord("eee", order=5, status=Status.LOST, epochs=3, best=0.99),
    ]


def test_table_lines_summarise_counts_best_and_running_trials():
    view = ProgressView("exp", "val_acc", "max", num_trials=24, max_epochs=10)
    lines = view.lines(records())
    head = lines[0]
    assert head.startswith("exp · 3/24 done · 1 running · 1 stopped early · 1 failed")
    assert "best val_acc 0.9700 (#1)" in head  # the lost trial does not count
    body = "\n".join(lines[1:])
    assert "ccc" in body and "running" in body and "4/10" in body
    assert "aaa" in body and "9,610" in body
    assert "eee" not in body


def test_min_mode_ranks_lowest_first():
    view = ProgressView("exp", "val_loss", "min", num_trials=2, max_epochs=3)
    recs = [
        TrialRecord("hi", order=1, status=Status.COMPLETED, epochs=3, best=0.9),
        TrialRecord("lo", order=2, status=Status.COMPLETED, epochs=3, best=0.2),
    ]
    lines = view.lines(recs)
    assert "best val_loss 0.2000 (#2)" in lines[0]
    assert lines[2].split()[1] == "lo"


def test_terminal_redraws_in_place():
    out = io.StringIO()
    view = ProgressView("exp", "val_acc", "max", 24, 10, stream=out, interactive=True, min_interval=0)
    view.update(records())
    first = out.getvalue()
    assert "\x1b[" not in first  # nothing to erase yet
    view.update(records())
    second = out.getvalue()[len(first):]
    n = len(first.strip("\n").splitlines())
    assert second.startswith(f"\x1b[{n}F\x1b[J")  # cursor up over the old table, clear, redraw


def test_terminal_redraw_is_throttled():
    out = io.StringIO()
    view = ProgressView("exp", "val_acc", "max", 24, 10, stream=out, interactive=True, min_interval=60)
    view.update(records())
    size = len(out.getvalue())
    view.update(records())
    assert len(out.getvalue()) == size
    view.update(records(), force=True)
    assert len(out.getvalue()) > size


def test_log_gets_one_line_per_finished_trial_and_a_final_table():
    out = io.StringIO()
    view = ProgressView("exp", "val_acc", "max", 24, 10, stream=out, interactive=False)
    recs = records()
    view.update(recs)  # no live table in a log
    assert out.getvalue() == ""
    view.event(recs[1], recs)
    view.event(recs[3], recs)
    assert out.getvalue().splitlines() == [
        "[3/24] trial #2 bbb stopped early after 1 epoch, best val_acc 0.4100",
        "[3/24] trial #4 ddd failed: ArchError: too deep",
    ]
    view.close(recs)
    assert out.getvalue().splitlines()[2].startswith("exp · 3/24 done")


def test_formatting():
    assert fmt_metric(None) == "-" and fmt_metric(float("nan")) == "-"
    assert fmt_metric(0.98765) == "0.9877" and fmt_metric(123456) == "123,456"
    assert fmt_duration(65) == "1:05" and fmt_duration(3725) == "1:02:05"
