"""A compact, refreshing table of trials for the terminal (instead of a wall of Ray logs).

On a terminal the table is redrawn in place at most twice a second; in a log file (not a
TTY) each finished trial gets one line and the final table is printed once.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from typing import IO, Iterable

from raynas.experiment import Status, TrialRecord, loss_sign

_SHORT = {
    Status.PENDING: "pending",
    Status.RUNNING: "running",
    Status.PAUSED: "paused",
    Status.COMPLETED: "done",
    Status.STOPPED: "stopped",
    Status.FAILED: "failed",
    Status.REJECTED: "rejected",
    Status.ERROR: "error",
    Status.LOST: "lost",
}


def fmt_metric(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        return f"{int(value):,}"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def rank_key(metric_mode: str):
    """Sort key putting the best ``best`` first (None last) for the given mode."""

    def key(rec: TrialRecord):
        if rec.best is None:
            return (1, 0.0)
        return (0, loss_sign(metric_mode) * rec.best)

    return key


def _no_retired() -> dict:
    """A view's state of retired trials when it has none: counts by status, the best few."""
    return {"_retired_counts": {s: 0 for s in Status}, "_retired_top": []}


class ProgressView:
    """Renders the journal's records as a small table.

    Args:
        name: Experiment name (header).
        metric: Objective metric.
        mode: ``max`` or ``min``.
        num_trials: Trials the search will run in total.
        max_epochs: Epochs per trial.
        stream: Where to write (stdout by default).
        interactive: Redraw in place; defaults to ``stream.isatty()``.
        top: How many finished trials to list besides the running ones.
    """

    def __init__(
        self,
        name: str,
        metric: str,
        mode: str,
        num_trials: int,
        max_epochs: int,
        stream: IO[str] | None = None,
        interactive: bool | None = None,
        top: int = 5,
        min_interval: float = 0.5,
    ):
        self.name, self.metric, self.mode = name, metric, mode
        self.num_trials, self.max_epochs, self.top = num_trials, max_epochs, top
        self.stream = stream
        self.interactive = interactive
        self.min_interval = min_interval
        self.began = time.time()
        self._last_draw = 0.0
        self._drawn_lines = 0
        self.forget_retired()

    def __getstate__(self):
        # Pickled with Tune's run config (for resume): drop the live stream and the counts
        # (the journal is read back and its trials retired again).
        state = dict(self.__dict__)
        state["stream"] = None
        state["_drawn_lines"] = 0
        state.update(_no_retired())
        return state

    def forget_retired(self) -> None:
        """Forgets every retired trial (see :meth:`retire`)."""
        self.__dict__.update(_no_retired())

    def retire(self, rec: TrialRecord) -> None:
        """Counts a trial the caller no longer passes in its records (it will not change
        again), keeping it only if it is among the best few."""
        self._retired_counts[rec.status] += 1
        if rec.best is not None and rec.status is not Status.LOST:
            self._retired_top.append(rec)
            self._retired_top.sort(key=rank_key(self.mode))
            del self._retired_top[max(self.top, 1):]

    def _out(self) -> IO[str]:
        return self.stream or sys.stdout

    def _is_tty(self) -> bool:
        if self.interactive is not None:
            return self.interactive
        out = self._out()
        return bool(getattr(out, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"

    def lines(self, records: Iterable[TrialRecord]) -> list[str]:
        """The table: ``records`` and the retired trials."""
        records = list(records)
        counts = dict(self._retired_counts)
        for rec in records:
            counts[rec.status] += 1
        finished = sum(counts[s] for s in Status if s.finished)
        ranked = sorted(
            [*(r for r in records if r.best is not None and r.status is not Status.LOST), *self._retired_top],
            key=rank_key(self.mode),
        )
        best = ranked[0] if ranked else None
        head = [
            f"{self.name}",
            f"{finished}/{self.num_trials} done",
            f"{counts[Status.RUNNING]} running",
        ]
        if counts[Status.PAUSED]:
            head.append(f"{counts[Status.PAUSED]} paused")
        if counts[Status.STOPPED]:
            head.append(f"{counts[Status.STOPPED]} stopped early")
        if counts[Status.FAILED] or counts[Status.ERROR]:
            head.append(f"{counts[Status.FAILED] + counts[Status.ERROR]} failed")
        if counts[Status.REJECTED]:
            head.append(f"{counts[Status.REJECTED]} over budget")
        if best is not None:
            head.append(f"best {self.metric} {fmt_metric(best.best)} (#{best.order})")
        head.append(fmt_duration(time.time() - self.began))
        out = [" · ".join(head)]

        running = sorted((r for r in records if r.status in (Status.RUNNING, Status.PAUSED)), key=lambda r: r.order or 0)
        shown = running + [r for r in ranked if r.status.finished][: self.top]
        if shown:
            out.append(f"  {'#':>4}  {'trial':<14} {'status':<8} {'epoch':>7}  {'best ' + self.metric:>14}  {'params':>10}")
            for rec in shown:
                epoch = f"{rec.epochs}/{self.max_epochs}"
                params = rec.last.get("params")
                out.append(
                    f"  {rec.order or '-':>4}  {rec.trial_id:<14} {_SHORT[rec.status]:<8} {epoch:>7}  "
                    f"{fmt_metric(rec.best):>14}  {fmt_metric(params) if params is not None else '-':>10}"
                )
        return out

    def update(self, records: Iterable[TrialRecord], force: bool = False) -> None:
        if not self._is_tty():
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        width = shutil.get_terminal_size((100, 20)).columns
        lines = [line[: width - 1] for line in self.lines(records)]
        out = self._out()
        if self._drawn_lines:
            out.write(f"\x1b[{self._drawn_lines}F\x1b[J")
        out.write("\n".join(lines) + "\n")
        out.flush()
        self._drawn_lines = len(lines)

    def event(self, rec: TrialRecord, records: Iterable[TrialRecord], done: int | None = None) -> None:
        """A trial finished: one line in logs; a redraw on a terminal. ``done``: the finished
        trials, if the caller keeps count (else counted in ``records``)."""
        if self._is_tty():
            self.update(records, force=True)
            return
        if done is None:
            done = sum(1 for r in records if r.status.finished)
        what = {
            Status.COMPLETED: f"completed {rec.epochs} epochs",
            Status.STOPPED: f"stopped early after {rec.epochs} epoch{'s' if rec.epochs != 1 else ''}",
            Status.FAILED: f"failed: {rec.error}",
            Status.REJECTED: f"rejected: {rec.error}",
            Status.ERROR: f"error: {rec.error}",
        }.get(rec.status, rec.status.value)
        score = f", best {self.metric} {fmt_metric(rec.best)}" if rec.best is not None else ""
        out = self._out()
        out.write(f"[{done}/{self.num_trials}] trial #{rec.order} {rec.trial_id} {what}{score}\n")
        out.flush()

    def close(self, records: Iterable[TrialRecord]) -> None:
        records = list(records)
        if self._is_tty():
            self.update(records, force=True)
        else:
            out = self._out()
            out.write("\n".join(self.lines(records)) + "\n")
            out.flush()
