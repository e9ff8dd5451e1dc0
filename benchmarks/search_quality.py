"""Search quality on LCBench in simulated time: which raynas strategy finds good networks fastest.

Every run is a real raynas experiment (``raynas.run`` on Ray Tune) whose trials are the
LCBench surrogate (``raynas.bench:lcbench``): a trial replays a configuration's 52 epochs and
sleeps each epoch's simulated seconds divided by ``--speedup``. ``--workers`` trials run at
once (one logical CPU each); a run ends once the workers have done ``--budget`` simulated
seconds each of epochs (plus a margin).

The simulated clock leaves Ray's and raynas's orchestration time out: each uninterrupted run
of a trial is placed, in the order Ray started them, on the simulated worker that is free
first, and takes the simulated seconds of its epochs. The decisions (which configurations,
which trials stop, pause or resume) are the ones the searcher and scheduler really made; the
``wall util`` column shows how much of the workers' wall time was spent in epochs, i.e. how
much orchestration cost on this machine. Anytime performance is the best validation accuracy
any trial reported by a simulated time; regret is the best accuracy any method reached on
that task (in any seed) minus it.

Usage::

    python benchmarks/search_quality.py 3945 167168 189906            # the table
    python benchmarks/search_quality.py 3945 --seeds 2 --budget 600 --json
    python benchmarks/search_quality.py 167168 189906 126026 --from-runs runs.jsonl   # re-summarise
    python benchmarks/search_quality.py 3945 --smoke                   # a quick check
    python benchmarks/search_quality.py 167168 189906 126026 --offline --seeds 50   # many seeds, no Ray

``--offline`` runs the same searchers (built from the same experiment through raynas's
registry, so with the same defaults) and Ray's own ASHA scheduler object, but in one process and
without Ray: trials are the surrogate's curves on an event-driven simulated clock of
``--workers`` workers, a finished trial's worker starts the next suggestion at once, and no
orchestration time exists. A run takes a fraction of a second (random) to a few seconds (TPE),
so many seeds fit where the noise needs them. It leaves out what only a live run has: results
arriving in wall-clock order, Ray's overheads, and HyperBand's pauses (``hyperband`` is refused).

Needs ``pip install -e ".[bench]"`` and the YAHPO data (``$RAYNAS_YAHPO_DATA`` or
``../shared/data/yahpo``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

# grace_period 3: ASHA's rungs at 3, 9, 27 and 52 epochs.
ASHA = {"name": "asha", "grace_period": 3, "reduction_factor": 3}
#: name -> (search section, scheduler section)
METHODS = {
    "random+fifo": ({"searcher": "random"}, {"name": "fifo"}),
    "random+asha": ({"searcher": "random"}, ASHA),
    "optuna+asha": ({"searcher": "optuna"}, ASHA),
    "evolution+asha": ({"searcher": "evolution"}, ASHA),
    "rl+asha": ({"searcher": "rl"}, ASHA),
    "hyperband": ({"searcher": "random"}, {"name": "hyperband", "reduction_factor": 3}),
    # Optuna as before multi-fidelity TPE: stopped trials told as pruned, TPE models final values.
    "optuna-final+asha": ({"searcher": "optuna", "multi_fidelity": "never"}, ASHA),
}
#: What runs without --methods (the ablation rows only on request).
DEFAULT_METHODS = ["random+fifo", "random+asha", "optuna+asha", "evolution+asha", "hyperband"]
METRIC = "val_accuracy"
CURVE_POINTS = 40


def experiment(task: str, method: str, seed: int, args) -> dict:
    """The experiment of one run, as the dict an experiment file would hold."""
    from raynas.bench import LCBENCH_SPACE

    search, scheduler = METHODS[method]
    search = {**search, "num_trials": 100_000, "seed": seed}
    if scheduler["name"] != "hyperband":
        # HyperBand needs its whole bracket live (paused trials hold no CPU), so CPUs alone
        # bound its running trials; the others are capped at the workers.
        search["max_concurrent"] = args.workers
    params = {"task": str(task), "speedup": args.speedup}
    if args.data_path:
        params["data_path"] = args.data_path
    return {
        "name": f"sq-{task}-{method.replace('+', '-')}-{seed}",
        "trainable": {"function": "raynas.bench:lcbench", "params": params},
        "space": LCBENCH_SPACE,
        "search": search,
        "scheduler": dict(scheduler),
        "objective": {"metric": METRIC, "mode": "max"},
        "max_epochs": 52,
        "resources": {"cpus_per_trial": 1},
        # Only HyperBand pauses and resumes trials; the others never read a checkpoint.
        "trainer": {"checkpoint_every": 1 if scheduler["name"] == "hyperband" else 0},
    }


def run_one(task: str, method: str, seed: int, args, storage: str) -> dict:
    """Runs one experiment through raynas; returns its epochs on the simulated clock."""
    import raynas
    from ray import tune

    spec = raynas.spec_from_dict(experiment(task, method, seed, args))
    work_needed = args.workers * args.budget * 1.1  # a margin: the timeline is cut at the budget below

    class Stop(tune.Stopper):
        """Ends the run once the workers have done the budget's simulated work."""

        work = 0.0

        def __call__(self, trial_id: str, result: dict) -> bool:
            self.work += float(result.get("sim_epoch_time") or 0.0)
            return False

        def stop_all(self) -> bool:
            return self.work >= work_needed

    began = time.perf_counter()
    folder = raynas.run(spec, storage_path=storage, progress=False, stop=Stop())
    wall = time.perf_counter() - began
    trials = raynas.load_results(folder).leaderboard(include_lost=True)
    shutil.rmtree(folder, ignore_errors=True)
    events, work, span = timeline([t.curve for t in trials], args.workers, args.speedup)
    if not events:
        raise RuntimeError(f"{task} {method} seed {seed}: no trial reported an epoch")
    kept = [e for e in events if e[0] <= args.budget]
    return {
        "task": str(task), "method": method, "seed": seed, "wall_s": wall,
        "trials": len({e[2] for e in kept}), "epochs": len(kept),
        # Share of the workers' wall time spent inside simulated epochs (the rest is Ray's
        # and raynas's orchestration, and idle workers).
        "wall_utilization": work / (args.workers * args.speedup * span) if span > 0 else 0.0,
        "events": [(round(t, 3), a) for t, a, _ in kept],
    }


class _Trial:
    """What Ray's schedulers read of a trial (its id)."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def run_offline(task: str, method: str, seed: int, args) -> dict:
    """One run without Ray: the experiment's searcher and scheduler on a simulated clock."""
    began = time.perf_counter()
    events, _ = simulate(task, method, seed, args)
    return {
        "task": str(task), "method": method, "seed": seed, "wall_s": time.perf_counter() - began,
        "trials": len({e[2] for e in events}), "epochs": len(events),
        "wall_utilization": 1.0,  # no orchestration on the simulated clock
        "events": [(t, a) for t, a, _ in events], "offline": True,
    }


def simulate(task: str, method: str, seed: int, args) -> tuple[list, set]:
    """The events ``[(simulated time, val_accuracy, trial id), ...]`` of one offline run, and the
    trials still running when the budget ran out."""
    import heapq

    import raynas
    from raynas.bench.lcbench import hyperparameters, surrogate
    from raynas.search.registry import SCHEDULERS, SEARCHERS

    spec = raynas.spec_from_dict(experiment(task, method, seed, args))
    searcher = SEARCHERS[spec.search.searcher].build(spec)
    scheduler = SCHEDULERS[spec.scheduler.name].build(spec)
    scheduler.set_search_properties(METRIC, "max")
    model = surrogate(args.data_path)
    running: list = []  # (simulated time the epoch ends, order, trial id, epoch)
    curves: dict = {}
    events: list = []
    count = 0

    def start(clock: float) -> bool:
        nonlocal count
        trial_id = f"t{count:05d}"
        config = searcher.suggest(trial_id)
        if not isinstance(config, dict):
            return False  # the searcher waits (or is finished): the worker idles
        count += 1
        curve = model.curve(task, hyperparameters(config), spec.max_epochs)
        times = curve["time"]
        seconds = [max(0.0, t - (times[i - 1] if i else 0.0)) for i, t in enumerate(times)]
        curves[trial_id] = (curve[METRIC], seconds)
        scheduler.on_trial_add(None, _Trial(trial_id))
        heapq.heappush(running, (clock + seconds[0], count, trial_id, 1))
        return True

    idle = args.workers  # workers without a trial
    while idle and start(0.0):
        idle -= 1
    while running:
        clock, order, trial_id, epoch = heapq.heappop(running)
        if clock > args.budget:
            heapq.heappush(running, (clock, order, trial_id, epoch))
            break
        values, seconds = curves[trial_id]
        result = {METRIC: values[epoch - 1], "epoch": epoch, "training_iteration": epoch}
        events.append((round(clock, 3), values[epoch - 1], trial_id))
        searcher.on_trial_result(trial_id, result)
        if epoch >= spec.max_epochs or scheduler.on_trial_result(None, _Trial(trial_id), result) == "STOP":
            if epoch >= spec.max_epochs:
                scheduler.on_trial_complete(None, _Trial(trial_id), result)
            else:
                scheduler.on_trial_remove(None, _Trial(trial_id))
            searcher.on_trial_complete(trial_id, result)
            idle += 1
            while idle and start(clock):
                idle -= 1
        else:
            heapq.heappush(running, (clock + seconds[epoch], order, trial_id, epoch + 1))
    return events, {trial_id for _, _, trial_id, _ in running}


def timeline(curves: list[list[dict]], workers: int, speedup: float) -> tuple[list, float, float]:
    """Places every epoch on the simulated clock of ``workers`` workers without overhead.

    Each uninterrupted run of a trial (a segment: from its start, or from a checkpoint after a
    pause, until it stops) is one job of its epochs' simulated seconds. Jobs go, in the wall-clock
    order Ray started them, to the worker that is free first. So the decisions are the ones the
    searcher and scheduler really made, and the clock counts only simulated training time.

    Returns:
        ``[(simulated time, val_accuracy, trial), ...]`` sorted by time, the simulated seconds
        of all epochs, and the wall seconds from the first epoch's start to the last report.
    """
    import heapq

    segments = []
    for trial, curve in enumerate(curves):
        rows = [r for r in curve if "sim_epoch_time" in r and METRIC in r]
        by_start: dict = {}
        for r in rows:
            by_start.setdefault(int(r.get("resumed_from", 0)), []).append(r)
        for part in by_start.values():
            part.sort(key=lambda r: r["epoch"])
            start = part[0]["wall_time"] - part[0]["sim_epoch_time"] / speedup
            segments.append((start, trial, part))
    if not segments:
        return [], 0.0, 0.0
    segments.sort(key=lambda s: s[0])
    free = [0.0] * workers
    events, work = [], 0.0
    for _, trial, part in segments:
        clock = heapq.heappop(free)
        for r in part:
            clock += float(r["sim_epoch_time"])
            work += float(r["sim_epoch_time"])
            events.append((clock, float(r[METRIC]), trial))
        heapq.heappush(free, clock)
    events.sort()
    span = max(r["wall_time"] for _, _, p in segments for r in p) - segments[0][0]
    return events, work, span


def anytime(events: list, grid: list[float]) -> list[float | None]:
    """Best accuracy reported up to each grid time (None before the first report)."""
    out, best, i = [], None, 0
    for t in grid:
        while i < len(events) and events[i][0] <= t:
            best = events[i][1] if best is None else max(best, events[i][1])
            i += 1
        out.append(best)
    return out


def summarise(runs: list[dict], args) -> dict:
    grid = [args.budget * (k + 1) / CURVE_POINTS for k in range(CURVE_POINTS)]
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    methods = list(dict.fromkeys(r["method"] for r in runs))
    reference = {t: max(a for r in runs if r["task"] == t for _, a in r["events"]) for t in tasks}
    table: dict = {}
    for m in methods:
        per_task = {}
        for t in tasks:
            mine = [r for r in runs if r["task"] == t and r["method"] == m]
            curves = [anytime(r["events"], grid) for r in mine]
            regret = [
                statistics.fmean(reference[t] - c[k] if c[k] is not None else reference[t] for c in curves)
                for k in range(len(grid))
            ]
            finals = [c[-1] for c in curves if c[-1] is not None]
            per_task[t] = {
                "best_mean": statistics.fmean(finals) if finals else None,
                "best_sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                "regret_curve": regret,
                "regret": regret[-1],
                "regret_quarter": regret[CURVE_POINTS // 4 - 1],
                "regret_half": regret[CURVE_POINTS // 2 - 1],
                "trials": statistics.fmean(r["trials"] for r in mine),
                "wall_utilization": statistics.fmean(r["wall_utilization"] for r in mine),
                "seeds": len(mine),
            }
        table[m] = {
            "tasks": per_task,
            "regret": statistics.fmean(v["regret"] for v in per_task.values()),
            "regret_quarter": statistics.fmean(v["regret_quarter"] for v in per_task.values()),
            "regret_half": statistics.fmean(v["regret_half"] for v in per_task.values()),
        }
        # Standard errors over seeds: each seed's regret averaged over the tasks it ran on.
        for key, k in (("regret_quarter", CURVE_POINTS // 4 - 1), ("regret_half", CURVE_POINTS // 2 - 1),
                       ("regret", CURVE_POINTS - 1)):
            by_seed: dict = {}
            for r in runs:
                if r["method"] == m:
                    best = anytime(r["events"], grid)[k]
                    by_seed.setdefault(r["seed"], []).append(reference[r["task"]] - best if best is not None
                                                             else reference[r["task"]])
            per_seed = [statistics.fmean(v) for v in by_seed.values()]
            table[m][key + "_se"] = statistics.stdev(per_seed) / len(per_seed) ** 0.5 if len(per_seed) > 1 else 0.0
    # Mean rank of the final regret across tasks (1 = best).
    for t in tasks:
        order = sorted(methods, key=lambda m: table[m]["tasks"][t]["regret"])
        for rank, m in enumerate(order, 1):
            table[m]["tasks"][t]["rank"] = rank
    for m in methods:
        table[m]["rank"] = statistics.fmean(table[m]["tasks"][t]["rank"] for t in tasks)
    return {
        "settings": {
            "tasks": tasks, "methods": methods, "seeds": args.seeds, "workers": args.workers,
            "budget_sim_s": args.budget, "speedup": args.speedup, "metric": METRIC,
        },
        "reference": reference, "grid": grid, "methods": table,
    }


def render(summary: dict) -> str:
    s = summary["settings"]
    tasks, methods = s["tasks"], s["methods"]
    lines = [
        f"LCBench search quality: {len(tasks)} task(s), {s['seeds']} seed(s), {s['workers']} workers, "
        f"budget {s['budget_sim_s']:g} simulated s, speed-up {s['speedup']:g}x",
        "best val_accuracy at the end of the budget (mean ± sd over seeds), regret = best seen by any method - incumbent",
        "(mean over tasks and seeds ± standard error over seeds of the per-seed mean over tasks)",
        "",
    ]
    header = ["method"] + [f"task {t}" for t in tasks] + ["regret@25%", "regret@50%", "regret@100%", "rank", "trials", "wall util"]
    body = []
    for m in methods:
        row = summary["methods"][m]
        cells = [m]
        for t in tasks:
            v = row["tasks"][t]
            cells.append("-" if v["best_mean"] is None else f"{v['best_mean']:.2f} ± {v['best_sd']:.2f}")
        trials = statistics.fmean(row["tasks"][t]["trials"] for t in tasks)
        util = statistics.fmean(row["tasks"][t]["wall_utilization"] for t in tasks)
        cells += [f"{row[k]:.2f} ± {row[k + '_se']:.2f}" for k in ("regret_quarter", "regret_half", "regret")]
        cells += [f"{row['rank']:.1f}", f"{trials:.0f}", f"{util:.0%}"]
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines += [fmt(header)] + [fmt(r) for r in body]
    lines.append("")
    lines.append("reference (best val_accuracy seen on each task): " + ", ".join(
        f"{t}: {summary['reference'][t]:.2f}" for t in tasks))
    return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = summary["settings"]["tasks"]
    grid = [g / 60 for g in summary["grid"]]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks) + 0.6, 2.8), squeeze=False, sharey=False)
    for ax, t in zip(axes[0], tasks):
        for m in summary["settings"]["methods"]:
            curve = [max(v, 1e-2) for v in summary["methods"][m]["tasks"][t]["regret_curve"]]
            ax.plot(grid, curve, label=m, linewidth=1.2)
        ax.set_yscale("log")
        ax.set_title(f"LCBench task {t}", fontsize=9)
        ax.set_xlabel("simulated minutes", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("regret (val accuracy, %)", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", help="LCBench OpenML task ids, e.g. 3945 167168 189906")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per task and method (default 5; with --from-runs: seeds 0..N-1 of the log, default all)")
    parser.add_argument("--budget", type=float, default=200.0, help="simulated seconds per run (default 200)")
    parser.add_argument("--speedup", type=float, default=100.0, help="simulated seconds per wall second (default 100)")
    parser.add_argument("--workers", type=int, default=8, help="simulated workers (default 8)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, of {', '.join(METHODS)} (default: {', '.join(DEFAULT_METHODS)})")
    parser.add_argument("--data-path", default=None, help="YAHPO data folder (default $RAYNAS_YAHPO_DATA or ../shared/data/yahpo)")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "search_quality.png"), help="PNG to write ('' for none)")
    parser.add_argument("--json", action="store_true", help="print the summary (and every run) as JSON")
    parser.add_argument("--save", default=None, help="also write the JSON to this file")
    parser.add_argument("--runs-log", default=None,
                        help="append each finished run to this JSON-lines file (runs already in it are skipped)")
    parser.add_argument("--from-runs", default=None, help="summarise the runs of a --runs-log file instead of running")
    parser.add_argument("--smoke", action="store_true", help="a tiny budget: 1 seed, 2 workers, 60 simulated s at 200x")
    parser.add_argument("--offline", action="store_true",
                        help="simulate without Ray (same searchers and ASHA; no orchestration; not hyperband)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.workers, args.budget, args.speedup = 1, 2, 60.0, 200.0
    chosen_seeds, args.seeds = args.seeds, 5 if args.seeds is None else args.seeds
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or args.seeds < 1 or args.workers < 1 or args.budget <= 0 or args.speedup <= 0:
        parser.error(f"unknown methods {unknown}" if unknown else "seeds, workers, budget and speed-up must be positive")

    if args.offline and "hyperband" in methods:
        parser.error("--offline cannot run hyperband (it pauses and resumes trials); leave it out of --methods")
    if args.offline and args.methods == parser.get_default("methods"):
        methods.remove("hyperband")

    if args.from_runs:
        with open(args.from_runs, encoding="utf-8") as f:
            runs = [json.loads(line) for line in f if line.strip()]
        runs = [r for r in runs if r["task"] in args.tasks and r["method"] in methods
                and (chosen_seeds is None or r["seed"] < chosen_seeds)]
        args.seeds = len({r["seed"] for r in runs})
        return report(runs, args)

    import raynas

    # Check the settings (and the data) before Ray starts.
    for task in args.tasks:
        try:
            raynas.spec_from_dict(experiment(task, methods[0], 0, args))
        except raynas.ConfigError as err:
            print(f"search_quality: {err}", file=sys.stderr)
            return 2
    if args.offline:
        return report(offline_runs(methods, args), args)
    import ray

    # Short: Ray's socket paths must stay < 108 bytes.
    tmp = tempfile.mkdtemp(prefix="rsq", dir=os.environ.get("RAYNAS_BENCH_TMP", "/tmp"))
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _temp_dir=os.path.join(tmp, "ray"))
    runs = []
    if args.runs_log and os.path.exists(args.runs_log):
        # Continue an interrupted benchmark: runs already in the log are not run again.
        with open(args.runs_log, encoding="utf-8") as f:
            runs = [json.loads(line) for line in f if line.strip()]
        runs = [r for r in runs if r["task"] in args.tasks and r["method"] in methods and r["seed"] < args.seeds]
    done = {(r["task"], r["method"], r["seed"]) for r in runs}
    log = open(args.runs_log, "a", encoding="utf-8") if args.runs_log else None
    try:
        total = len(args.tasks) * len(methods) * args.seeds
        # Seeds outermost: an interrupted benchmark still has whole seeds of every task and method.
        for seed in range(args.seeds):
            for task in args.tasks:
                for method in methods:
                    if (str(task), method, seed) in done:
                        continue
                    run = run_one(task, method, seed, args, os.path.join(tmp, "results"))
                    runs.append(run)
                    if log:
                        log.write(json.dumps(run) + "\n")
                        log.flush()
                    print(f"[{len(runs)}/{total}] task {task} {method} seed {seed}: best {max(a for _, a in run['events']):.2f} "
                          f"trials {run['trials']} wall util {run['wall_utilization']:.0%} wall {run['wall_s']:.1f}s",
                          file=sys.stderr, flush=True)
    finally:
        if log:
            log.close()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return report(runs, args)


def offline_runs(methods: list[str], args) -> list[dict]:
    """Every (seed, task, method) through :func:`run_offline`, logged as the live runs are."""
    runs = []
    log = open(args.runs_log, "a", encoding="utf-8") if args.runs_log else None
    try:
        for seed in range(args.seeds):
            for task in args.tasks:
                for method in methods:
                    run = run_offline(str(task), method, seed, args)
                    runs.append(run)
                    if log:
                        log.write(json.dumps(run) + "\n")
    finally:
        if log:
            log.close()
    print(f"{len(runs)} offline runs", file=sys.stderr)
    return runs


def report(runs: list[dict], args) -> int:
    summary = summarise(runs, args)
    if args.plot:
        plot(summary, args.plot)
    document = json.dumps({**summary, "runs": runs})
    if args.save:
        Path(args.save).write_text(document)
    if args.json:
        print(document)
    else:
        print(render(summary))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
