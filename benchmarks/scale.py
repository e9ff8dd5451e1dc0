"""Driver scale: thousands of trivial trials through `raynas run`: trials per second and the
driver's memory over time.

The trainable reports one epoch and returns, so the figure is raynas's and Ray Tune's
per-trial cost (actor reuse, result handling, the journal, experiment snapshots). The
command runs as a subprocess; this script samples the driver's resident memory (RSS, from
/proc), its CPU seconds, and the number of finished trials (from the journal,
``trials.json``) every ``--interval`` seconds.

Reported: trials per second over the whole run (command to exit) and in the steady state
(from 10% to 100% of the trials finished), the driver's peak RSS, and its growth after
warm-up: the RSS at 25% of the trials against the peak, and the slope of a line fitted to
the samples after 25% (MiB per 1,000 trials). Flat memory means a slope near 0. And the
driver's CPU milliseconds per trial early (20-45% of the trials) and late (70-95%): a driver
whose work per trial does not grow with the trials already run keeps them equal. Its median
RSS over the same two windows gives the memory growth per 1,000 trials clear of start-up and
of the end of the run (Tune's end and the CLI's table of the best trials, which reads every
trial's results, make the peak); the fitted slope counts those last samples too.

Examples:
    python benchmarks/scale.py                      # 2,000 trials
    python benchmarks/scale.py --trials 200 --json  # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, ray_tmpdir, table  # noqa: E402

TARGET_TPS = 20.0

TRAINABLE = '''\
from ray import tune


def train(config):
    """A trivial trial: one epoch, one score."""
    tune.report({"epoch": 1, "score": config["x"] * (1.0 - config["x"])})
'''


def experiment(trials: int, concurrent: int, cpus_per_trial: float) -> dict:
    return {
        "name": "scale",
        "trainable": "scale_trainable:train",
        "metrics": ["score"],
        "space": {"x": {"float": [0.0, 1.0]}},
        "search": {"searcher": "random", "num_trials": trials, "max_concurrent": concurrent, "seed": 0},
        "scheduler": {"name": "fifo"},
        "objective": {"metric": "score", "mode": "max"},
        "max_epochs": 1,
        "resources": {"cpus_per_trial": cpus_per_trial, "gpus_per_trial": 0},
    }


def _finished(journal: str) -> int:
    try:
        with open(journal, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return -1
    records = data.get("trials", data) if isinstance(data, dict) else data
    if isinstance(records, dict):
        records = list(records.values())
    done = ("completed", "stopped", "failed", "rejected", "error")
    return sum(1 for r in records if isinstance(r, dict) and r.get("status") in done)


def _read_proc(pid: int, name: str, parse, portable) -> float | None:
    """``parse`` of the text of ``/proc/<pid>/<name>`` on Linux, ``portable`` of the
    ``psutil.Process`` elsewhere; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/{name}", encoding="ascii") as f:
            return parse(f.read())
    except FileNotFoundError:
        if os.path.isdir("/proc"):
            return None  # the process is gone
        import psutil

        try:
            return portable(psutil.Process(pid))
        except psutil.Error:
            return None
    except (OSError, ValueError, IndexError):
        return None


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB, None once it is gone."""

    def parse(text: str) -> float | None:
        line = next((line for line in text.splitlines() if line.startswith("VmRSS:")), None)
        return int(line.split()[1]) / 1024 if line else None

    return _read_proc(pid, "status", parse, lambda p: p.memory_info().rss / 2**20)


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, None once it is gone."""

    def parse(text: str) -> float:
        fields = text.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def portable(process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    return _read_proc(pid, "stat", parse, portable)


def _cpu_ms_per_trial(samples: list, start: float, end: float, trials: int) -> float | None:
    """The driver's CPU milliseconds per trial finished between two fractions of the trials."""
    a = next((s for s in samples if s[2] >= start * trials and s[3] is not None), None)
    b = next((s for s in reversed(samples) if s[2] <= end * trials and s[3] is not None), None)
    if a is None or b is None or b[2] <= a[2]:
        return None
    return 1000 * (b[3] - a[3]) / (b[2] - a[2])


def _rss_median(samples: list, start: float, end: float, trials: int) -> float | None:
    """The driver's median RSS while between two fractions of the trials were finished."""
    window = sorted(s[1] for s in samples if start * trials <= s[2] <= end * trials)
    if not window:
        return None
    mid = len(window) // 2
    return window[mid] if len(window) % 2 else (window[mid - 1] + window[mid]) / 2


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y on x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def run(trials: int, concurrent: int, cpus_per_trial: float, interval: float, timeout: float,
        metrics: bool = True) -> dict:
    import yaml

    with tempfile.TemporaryDirectory(prefix="raynas-scale-") as tmp, ray_tmpdir() as rt:
        with open(os.path.join(tmp, "scale_trainable.py"), "w") as f:
            f.write(TRAINABLE)
        path = os.path.join(tmp, "scale.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(experiment(trials, concurrent, cpus_per_trial), f, sort_keys=False)
        storage = os.path.join(tmp, "results")
        journal = os.path.join(storage, "scale", "trials.json")
        cmd = [sys.executable, "-m", "raynas", "run", path, "--storage-path", storage, "--quiet",
               "--num-cpus", str(os.cpu_count() or 2)] + ([] if metrics else ["--no-metrics"])
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, RAY_TMPDIR=rt))
        samples = []  # (seconds, rss MiB, finished trials, driver CPU s)
        while proc.poll() is None:
            now = time.perf_counter() - t0
            if now > timeout:
                proc.kill()
                raise RuntimeError(f"raynas run took over {timeout} s")
            rss = rss_mib(proc.pid)
            if rss is None:
                break
            cpu = cpu_s(proc.pid)
            samples.append((round(now, 2), round(rss, 1), _finished(journal), None if cpu is None else round(cpu, 2)))
            time.sleep(interval)
        out, err = proc.communicate()
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"raynas run exited {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}")
        done = _finished(journal)
    samples = [s for s in samples if s[2] >= 0] or samples

    def when(fraction: float) -> float | None:
        return next((t for t, _, d, _ in samples if d >= fraction * trials), None)

    t10, t25 = when(0.10), when(0.25)
    steady = None
    if t10 is not None and samples:
        last_t, _, last_d, _ = samples[-1]
        d10 = next(d for t, _, d, _ in samples if t == t10)
        steady = (last_d - d10) / (last_t - t10) if last_t > t10 and last_d > d10 else None
    peak = max((r for _, r, _, _ in samples), default=float("nan"))
    after = [(d, r) for t, r, d, _ in samples if t25 is not None and t >= t25]
    rss25 = after[0][1] if after else float("nan")
    rss_early, rss_late = _rss_median(samples, 0.20, 0.45, trials), _rss_median(samples, 0.70, 0.95, trials)
    return {
        "trials": trials,
        "finished": done,
        "concurrent": concurrent,
        "cpus_per_trial": cpus_per_trial,
        "wall_s": wall,
        "trials_per_s": done / wall,
        "steady_trials_per_s": steady,
        "first_finished_s": when(1 / trials) if trials else None,
        "peak_rss_mib": peak,
        "rss_at_25pct_mib": rss25,
        "growth_after_25pct_mib": peak - rss25 if after else None,
        "slope_mib_per_1000_trials": _slope(after) * 1000 if len(after) > 1 else None,
        # The driver's own CPU per trial early and late in the run (20-45% and 70-95% of the
        # trials: clear of start-up and of Ray's shutdown): equal if the driver's work per
        # trial does not grow with the trials run; less noisy than the rate, which the trial
        # workers also set.
        "driver_cpu_ms_per_trial_early": _cpu_ms_per_trial(samples, 0.20, 0.45, trials),
        "driver_cpu_ms_per_trial_late": _cpu_ms_per_trial(samples, 0.70, 0.95, trials),
        # The driver's median RSS over the same windows, and its growth between them per
        # 1,000 trials (the windows' middles are half the trials apart).
        "rss_mib_early": rss_early,
        "rss_mib_late": rss_late,
        "rss_growth_mib_per_1000_trials": (
            (rss_late - rss_early) / (0.5 * trials / 1000) if rss_early is not None and rss_late is not None else None
        ),
        "samples": samples,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("Examples:")[1])
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--concurrent", type=int, default=4, help="max_concurrent trials (default 4)")
    p.add_argument("--cpus-per-trial", type=float, default=0.5, help="resources.cpus_per_trial (default 0.5)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--no-metrics", dest="metrics", action="store_false",
                   help="run without the export of trial metrics to Ray's metrics (to measure its cost)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    report = {"benchmark": "scale", "machine": machine(), "target_trials_per_s": TARGET_TPS}
    report.update(run(args.trials, args.concurrent, args.cpus_per_trial, args.interval, args.timeout, args.metrics))
    report["load_after"] = machine()["load"]
    if args.json:
        print(json.dumps(report))
        return 0
    m = report["machine"]
    print(f"driver scale · {m['cpus']} CPUs · load before {m['load']} after {report['load_after']} · "
          f"{args.trials} trivial trials, {args.concurrent} at once, {args.cpus_per_trial:g} CPU each")

    def f(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    table(["measure", "value"], [
        ["trials finished", report["finished"]],
        ["wall s (command to exit)", f(report["wall_s"])],
        ["trials/s overall", f(report["trials_per_s"], ".2f")],
        [f"trials/s steady (10%-100%; target >= {TARGET_TPS:g})", f(report["steady_trials_per_s"], ".2f")],
        ["driver peak RSS MiB", f(report["peak_rss_mib"])],
        ["driver RSS at 25% MiB", f(report["rss_at_25pct_mib"])],
        ["growth after 25% MiB", f(report["growth_after_25pct_mib"])],
        ["slope after 25% MiB/1000 trials", f(report["slope_mib_per_1000_trials"])],
        ["driver CPU ms per trial, 20%-45% of trials", f(report["driver_cpu_ms_per_trial_early"], ".2f")],
        ["driver CPU ms per trial, 70%-95% of trials", f(report["driver_cpu_ms_per_trial_late"], ".2f")],
        ["driver RSS MiB (median), 20%-45% of trials", f(report["rss_mib_early"])],
        ["driver RSS MiB (median), 70%-95% of trials", f(report["rss_mib_late"])],
        ["RSS growth between them, MiB/1000 trials", f(report["rss_growth_mib_per_1000_trials"], ".2f")],
    ])
    # The memory curve, at tenths of the trials.
    print()
    rows = []
    for tenth in range(1, 11):
        s = next((s for s in report["samples"] if s[2] >= tenth * args.trials / 10), None)
        if s:
            rows.append([f"{tenth * 10}%", s[2], f"{s[0]:.1f}", f"{s[1]:.1f}"])
    table(["trials done", "n", "s", "driver RSS MiB"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
