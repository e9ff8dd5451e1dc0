"""The HTML report: one self-contained, offline page of an experiment folder (leaderboard,
learning curves, best so far, parallel coordinates, Pareto front, importance, per-trial
detail), and the live report a run keeps fresh while its search goes on.

The page embeds plotly.js (from the ``plotly`` package, the ``report`` extra) and the data.
While the run's report is live, the page also loads ``report_data.js`` beside it every few
seconds with a ``<script>`` tag (a ``file://`` page may load a sibling script, not fetch a
sibling file) and redraws when the data changed.

Example:
    >>> from raynas.analysis.report import write_report
    >>> write_report("raynas_results/quickstart")  # doctest: +SKIP
    PosixPath('raynas_results/quickstart/report.html')
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from raynas.analysis.results import ExperimentResults, TrialResult, is_number, load_results
from raynas.errors import ConfigError
from raynas.experiment import JOURNAL_FILE, Status, read_meta, write_text_atomic

REPORT_FILE = "report.html"
DATA_FILE = "report_data.js"
INSTALL_HINT = "pip install 'raynas[report]'"

# Result keys that are bookkeeping, not metrics worth showing in a trial's detail.
_NOT_METRICS = {"epoch", "wall_time", "resumed_from", "raynas_exploited", "sim_time", "sim_epoch_time"}
# At most this many searched keys get an axis of the parallel coordinates (the most important first).
MAX_AXES = 12

log = logging.getLogger("raynas")


def plotly_missing() -> str | None:
    """Why the report cannot be written (plotly is not installed), or None when it can."""
    try:
        import plotly.offline  # noqa: F401
    except ImportError as err:
        return f"the HTML report needs plotly ({err}); install it with: {INSTALL_HINT}"
    return None


def report_data(results: ExperimentResults, live: bool = False, importance: dict | None = None) -> dict:
    """The report's data: plain JSON, compact (values rounded to 6 significant digits).

    Args:
        results: The experiment folder, read.
        live: Whether the page should keep loading ``report_data.js`` for newer data.
        importance: ``Importance.to_json()`` to show (default: computed here; ``{}``: none).
    """
    from raynas.analysis.render import compressed_text, origin_text, status_text
    from raynas.spaces import flatten

    board = results.leaderboard()
    orders = {t.trial_id: t.order for t in results.trials}
    meta = results.meta
    t0 = meta.get("created") or min((t.started for t in board if t.started), default=None)
    multi = len(results.metrics) > 1
    trials = []
    for t in board:
        row: dict[str, Any] = {
            "id": t.trial_id, "r": t.rank, "o": t.order, "s": t.status.value, "st": status_text(t),
            "ep": t.epochs, "b": _num(t.best), "be": t.best_epoch,
            "p": _num(t.params), "f": _num(t.flops), "l": _num(t.latency_ms),
            "src": origin_text(t.origin, orders), "c": t.config,
        }
        if t.stopped_at:
            row["stop"] = t.stopped_at
        if t.origin:
            row["or"] = t.origin
        if t.error:
            row["err"] = t.error[-2000:]
        if t0 and t.started:
            row["t0"] = round(t.started - t0, 1)
        if t0 and t.ended:
            row["t1"] = round(t.ended - t0, 1)
        if t.test is not None:
            row["te"] = [_num(t.test["mean"]), _num(t.test["sd"]), t.test["n"]]
        if t.compressed:
            row["cm"] = [compressed_text(c) for c in t.compressed]
        row.update(_curve(t, results.metric))
        row["m"] = {k: _num(v) for k, v in t.metrics.items() if k not in _NOT_METRICS and is_number(v)}
        if multi:
            point = t.objectives(results.metrics, results.modes) if t.status not in (Status.FAILED, Status.ERROR) else None
            if point is not None:
                row["ob"] = [_num(point[1][m]) for m in results.metrics]
        trials.append(row)

    if importance is None:
        importance = importance_json(results)
    keys = _axes(board, flatten, importance)
    data: dict[str, Any] = {
        "v": 1,
        "name": results.name,
        "metric": results.metric,
        "mode": results.mode,
        "metrics": results.metrics,
        "modes": results.modes,
        "max_epochs": results.max_epochs,
        "status": meta.get("status"),
        "live": bool(live),
        "generated": int(time.time() * 1000),  # ms, an int: the page compares it to see new data
        "keys": keys,
        "trials": trials,
        "importance": importance,
    }
    if multi:
        data["pareto"] = _pareto(results)
    if results.one_shot:
        from raynas.analysis.render import one_shot_text

        data["stage"] = one_shot_text(results)
    return data


def importance_json(results: ExperimentResults) -> dict:
    """The importances as the report shows them; a failure becomes a note, never an error."""
    from raynas.analysis.importance import importance

    try:
        return importance(results).to_json()
    except Exception as err:  # noqa: BLE001 - a view never stops the report
        log.warning("raynas: the report has no importance: %s: %s", type(err).__name__, err)
        return {"importances": {}, "notes": [f"not computed: {type(err).__name__}: {err}"]}


def render_html(data: dict) -> str:
    """The self-contained page for ``data`` (see :func:`report_data`).

    Raises:
        ImportError: plotly is not installed (see :func:`plotly_missing`).
    """
    import plotly.offline

    page = resources.files("raynas.analysis").joinpath("report_page.html").read_text(encoding="utf-8")
    title = f"{data['name']}: raynas report"
    # Each part is one replace: a value holding a placeholder never gets substituted twice.
    parts = {
        "/*PLOTLY_JS*/": plotly.offline.get_plotlyjs(),
        "/*REPORT_DATA*/": data_script(data),
        "__TITLE__": html.escape(title, quote=False),
    }
    out, rest = [], page
    while rest:
        hits = [(rest.find(k), k) for k in parts if rest.find(k) >= 0]
        if not hits:
            out.append(rest)
            break
        at, key = min(hits)
        out += [rest[:at], parts[key]]
        rest = rest[at + len(key):]
    return "".join(out)


def data_script(data: dict) -> str:
    """``window.RAYNAS_REPORT_DATA = {...};``: safe inside a ``<script>`` element."""
    text = json.dumps(_clean(data), separators=(",", ":"), default=str)
    # "</script>" in a config string would end the element; "<\/" is the same string to JS.
    text = text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f"window.RAYNAS_REPORT_DATA = {text};\n"


def write_report(exp_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Writes the report of an experiment folder (default ``DIR/report.html``), atomically.

    Raises:
        ConfigError: ``exp_dir`` is not an experiment folder, or plotly is missing (the
            message says how to install it).
    """
    missing = plotly_missing()
    if missing:
        raise ConfigError("report", missing)
    results = load_results(exp_dir)
    target = Path(out) if out is not None else results.dir / REPORT_FILE
    if target.is_dir():
        raise ConfigError("-o", f"{target} is a folder; give a file name, e.g. {target / REPORT_FILE}")
    if not target.parent.is_dir():
        raise ConfigError("-o", f"no such folder: {target.parent} (for {target})")
    write_text_atomic(target, render_html(report_data(results)))
    return target


class LiveReport:
    """Keeps ``report.html`` and ``report_data.js`` of a running experiment fresh.

    The work happens in a child process (``python -m raynas.analysis.report --watch DIR``),
    so reading a folder of thousands of trials takes neither the driver's memory nor its
    interpreter: it writes the page once, then rewrites only ``report_data.js`` when
    ``trials.json`` changed, waiting ``max(min_interval, 20 x the last refresh)`` between
    refreshes; when ``stop`` closes its stdin (or the driver dies) it writes the final page,
    no longer live. Nothing here raises into the run: a failure is said once and the
    search goes on.

    Args:
        exp_dir: The experiment folder.
        min_interval: Shortest wait between two refreshes, in seconds.
        say: Where the one-line notes go (the report's path, or why it is off).
        enabled: False makes every method do nothing.
    """

    def __init__(self, exp_dir: str | os.PathLike, min_interval: float = 5.0,
                 say: Callable[[str], None] | None = None, enabled: bool = True):
        self.dir = Path(exp_dir)
        self.path = self.dir / REPORT_FILE
        self.min_interval = min_interval
        self.say = say or print
        self.wanted = enabled
        self.child: subprocess.Popen | None = None
        self.announced = False

    def start(self) -> None:
        """Starts the child that writes the page (returns at once; see :meth:`announce`)."""
        if not self.wanted or self.child is not None:
            return
        missing = plotly_missing()
        if missing:
            self.wanted = False
            self.say(f"raynas: the live report is off: {missing}")
            return
        # The child imports this raynas, wherever the driver found it.
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        try:
            self.child = subprocess.Popen(
                [sys.executable, "-m", "raynas.analysis.report", "--watch", str(self.dir), "--interval", str(self.min_interval)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                start_new_session=True,  # Ctrl-C stops the run, which then stops the report
            )
        except OSError as err:
            self._off(f"{type(err).__name__}: {err}")

    def announce(self, timeout: float = 120) -> bool:
        """Waits for the first page and says where it is; False (said once) if it failed."""
        if self.child is None or self.announced:
            return self.announced
        line = _read_line(self.child, timeout)
        if line == "ok":
            self.announced = True
            self.say(f"Report: {self.path} (refreshes while the search runs)")
            return True
        self._off(line or "no answer from the report's process")
        return False

    def stop(self, timeout: float = 300) -> None:
        """Has the child write the final page and waits for it."""
        child, self.child = self.child, None
        if child is None:
            return
        try:
            child.stdin.close()
            child.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as err:
            log.warning("raynas: the report's final page was not written (%s); write it with: raynas report %s", err, self.dir)
            child.kill()
            child.wait()
        finally:
            child.stdout.close()

    def _off(self, why: str) -> None:
        log.warning("raynas: the live report could not be written (%s); the search goes on", why)
        child, self.child = self.child, None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()


def _read_line(child: subprocess.Popen, timeout: float) -> str:
    """The child's first line of output, or "" when it said nothing within ``timeout``."""
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(child.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return found[0].strip() if found else ""


class _Watcher:
    """The child's side of :class:`LiveReport`."""

    def __init__(self, exp_dir: Path, min_interval: float):
        self.dir = exp_dir
        self.min_interval = min_interval
        self.last_refresh_s = 0.0
        self.builds = 0
        self._stamp: tuple | None = None
        self._importance: tuple[int, dict] | None = None
        self._failed = False

    def run(self, done: threading.Event) -> int:
        error = self.build(live=True, page=True)
        print("ok" if error is None else error, flush=True)
        if error is not None:
            return 1
        while not done.wait(max(self.min_interval, 20 * self.last_refresh_s)):
            if _stamp(self.dir / JOURNAL_FILE) != self._stamp:
                self.build(live=True, page=False)
        self._failed = False  # the final page is worth one more try
        return 0 if self.build(live=False, page=True, force_importance=True) is None else 1

    def build(self, live: bool, page: bool, force_importance: bool = False) -> str | None:
        """Writes the data (and the page); returns why it failed, or None."""
        began = time.perf_counter()
        try:
            self._stamp = _stamp(self.dir / JOURNAL_FILE)
            results = load_results(self.dir)
            fit = time.perf_counter()
            importance = self._importance_for(results, force_importance)
            fit = time.perf_counter() - fit
            data = report_data(results, live=live, importance=importance)
            if not live:
                data["status"] = read_meta(self.dir).get("status", data["status"])
            write_text_atomic(self.dir / DATA_FILE, data_script(data))
            # The interval follows the work every refresh does; the page (written twice) and
            # the occasional importance fit would stretch it for the whole run.
            took = time.perf_counter() - began - fit
            if page:
                write_text_atomic(self.dir / REPORT_FILE, render_html(data))
        except Exception as err:  # noqa: BLE001 - the report never stops the run
            why = f"{type(err).__name__}: {err}"
            if not self._failed and self.builds:
                log.warning("raynas: the live report could not be refreshed (%s); the search goes on", why)
            self._failed = True
            return why
        self.builds += 1
        self.last_refresh_s = took
        return None

    def _importance_for(self, results: ExperimentResults, force: bool) -> dict:
        """The importances, refitted only when the scored trials grew by a quarter (or 5):
        fitting fANOVA is the slowest part of a build (seconds for 1,000 trials)."""
        scored = sum(1 for t in results.trials if t.best is not None)
        if self._importance is not None and not force:
            before, value = self._importance
            if scored - before < max(5, before // 4):
                return value
        value = importance_json(results)
        self._importance = (scored, value)
        return value


def _watch(argv: list[str]) -> int:
    """``python -m raynas.analysis.report --watch DIR [--interval S]``: until stdin closes."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m raynas.analysis.report")
    parser.add_argument("--watch", required=True, metavar="DIR")
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    if hasattr(os, "nice"):
        os.nice(10)  # a view: the trials come first on a busy machine
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    return _Watcher(Path(args.watch), args.interval).run(done)


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _curve(t: TrialResult, metric: str) -> dict:
    """The objective per epoch: ``{"y": [...]}`` when the epochs are 1, 2, ..., else with ``"x"``."""
    rows = [r for r in t.curve if is_number(r.get("epoch"))]
    xs = [int(r["epoch"]) for r in rows]
    ys = [_num(r.get(metric)) if is_number(r.get(metric)) else None for r in rows]
    if not rows:
        return {}
    if xs == list(range(1, len(xs) + 1)):
        return {"y": ys}
    return {"x": xs, "y": ys}


def _axes(board: list[TrialResult], flatten, importance: dict) -> list[str]:
    """Searched keys that vary between trials (or that only some trials have), the most
    important first, at most MAX_AXES."""
    keys: dict[str, set] = {}
    counts: dict[str, int] = {}
    for t in board:
        for k, v in flatten(t.config).items():
            seen = keys.setdefault(k, set())
            counts[k] = counts.get(k, 0) + 1
            if len(seen) < 2:
                seen.add(repr(v))
    varying = [k for k, seen in keys.items() if len(seen) > 1 or counts[k] < len(board)]
    rated = (importance or {}).get("importances") or {}
    varying.sort(key=lambda k: -rated.get(k, -1.0))
    return varying[:MAX_AXES]


def _pareto(results: ExperimentResults) -> dict:
    try:
        front = results.pareto()
    except (ConfigError, ValueError) as err:
        return {"note": str(err), "front": []}
    return {
        "front": [f.trial.trial_id for f in front.front],
        "hypervolume": _num(front.hypervolume),
        "scored": front.scored,
        "unscored": front.unscored,
    }


def _num(value: Any) -> Any:
    """A number rounded to 6 significant digits (ints kept; non-finite as None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


__all__ = [
    "DATA_FILE",
    "REPORT_FILE",
    "LiveReport",
    "data_script",
    "plotly_missing",
    "render_html",
    "report_data",
    "write_report",
]


if __name__ == "__main__":
    sys.exit(_watch(sys.argv[1:]))
