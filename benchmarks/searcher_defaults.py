"""Searcher defaults against random search, on a tabular benchmark measured once and stored.

The table (``benchmarks/lcbench_grid.csv``) is every configuration of a finite grid over
LCBench's seven hyperparameters (:data:`GRID`, 4,050 configurations), each scored on three
LCBench tasks by the YAHPO Gym surrogate at the last epoch (52): ``val_accuracy_<task>``
(percent) and ``time_<task>`` (simulated seconds of the 52 epochs). ``--build-table``
regenerates it from the surrogate (needs ``raynas[bench]`` and the YAHPO data); everything
else reads the stored table only.

Each run drives a raynas searcher exactly as a user gets it: the search section of an
experiment file (``searcher``, ``num_trials``, ``max_concurrent``, ``seed``, nothing else) is
validated by :func:`raynas.spec.spec_from_dict` with the table as a ``raynas.bench:lookup``
trainable, and the registry builds the searcher, so every parameter is its default, including
the ones derived from ``num_trials``. No Ray is started: the script calls the searcher's
``suggest`` / ``on_trial_result`` / ``on_trial_complete`` itself, keeps ``--workers`` trials
in flight on a simulated clock (a trial takes its table time, the one finishing first is
reported first), and stops after ``--budget`` completed evaluations.

Reported:

* **Evaluations to top 1%**: per task, searcher and seed, how many evaluations had completed
  when the first configuration among the best 1% of the table (value at least the
  ``ceil(N/100)``-th best) completed; the median and quartiles over seeds (">budget" when a
  quantile falls among the seeds that never reached it), and the fraction of seeds that did.
* **Hypervolume** (two objectives: ``val_accuracy`` max, ``time`` min): Optuna's multi-objective
  TPE against NSGA-II (and random search), as the fraction of the true front's hypervolume
  (from the whole table) that the evaluated configurations dominate, with the table's worst
  accuracy and longest time as the reference point.

Usage::

    python benchmarks/searcher_defaults.py                 # the tables in docs/searcher_defaults.md
    python benchmarks/searcher_defaults.py --seeds 30 --json
    python benchmarks/searcher_defaults.py --smoke --json  # a quick check (CI)
    python benchmarks/searcher_defaults.py --build-table --data-path ../shared/data/yahpo
"""

from __future__ import annotations

import argparse
import csv
import heapq
import itertools
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from benchmarks._common import load, machine, table  # noqa: E402

TABLE = ROOT / "benchmarks" / "lcbench_grid.csv"
#: The first three tasks of YAHPO's LCBench config space.
TASKS = ("3945", "7593", "34539")
#: The grid, in raynas's space DSL: the values a user would try for each hyperparameter.
GRID = {
    "batch_size": {"choice": [16, 64, 256]},
    "learning_rate": {"choice": [0.0001, 0.0005, 0.003, 0.02, 0.1]},
    "momentum": {"choice": [0.1, 0.5, 0.9]},
    "weight_decay": {"choice": [0.00001, 0.01]},
    "num_layers": {"int": [1, 5]},
    "max_units": {"choice": [64, 256, 1024]},
    "max_dropout": {"choice": [0.0, 0.25, 0.5]},
}
KEY = "|".join(f"{{{name}}}" for name in GRID)
SEARCHERS = ("random", "optuna", "evolution", "rl")
#: Optuna samplers compared on two objectives (``auto`` is whichever raynas picks).
MULTI_SAMPLERS = ("tpe", "nsga2", "random")
TOP_FRACTION = 0.01


# -- the table -------------------------------------------------------------------------------


def build_table(path: Path, tasks, data_dir: str | None) -> None:
    """Scores every grid configuration on ``tasks`` with the LCBench surrogate (epoch 52)."""
    from raynas.bench.lcbench import EPOCHS, OUTPUTS, LCBenchSurrogate
    from raynas.bench.lookup import make_key
    from raynas.spaces import Space

    model = LCBenchSurrogate(data_dir)
    acc, seconds = OUTPUTS.index("val_accuracy"), OUTPUTS.index("time")
    header = ["key", *itertools.chain.from_iterable((f"val_accuracy_{t}", f"time_{t}") for t in tasks)]
    rows = []
    for config in Space(GRID).grid():
        row = [make_key(KEY, config)]
        for task in tasks:
            out = model.predict(task, config, [EPOCHS])[0]
            row += [f"{out[acc]:.3f}", f"{out[seconds]:.1f}"]
        rows.append(row)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)


def read_table(path: Path = TABLE) -> dict[str, dict[str, float]]:
    """``{key: {column: value}}`` of the stored table."""
    with open(path, newline="", encoding="utf-8") as f:
        return {row.pop("key"): {k: float(v) for k, v in row.items()} for row in csv.DictReader(f)}


def tasks_of(rows: dict) -> list[str]:
    first = next(iter(rows.values()))
    return [c[len("val_accuracy_"):] for c in first if c.startswith("val_accuracy_")]


# -- one search ------------------------------------------------------------------------------


def parse_searcher(text: str) -> tuple[str, dict]:
    """``evolution:population_size=20:sample_size=5`` -> ``("evolution", {...})`` (numbers become ints or floats)."""
    name, *pairs = text.split(":")
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        options[key] = _number(value)
    return name, options


def _number(text: str):
    """``"20"`` -> 20, ``"0.1"`` -> 0.1, anything else as written."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def searcher_for(name: str, task: str, budget: int, workers: int, seed: int, table_path: Path,
                 multi: bool = False, options: dict | None = None):
    """The searcher raynas builds for this search section (every other parameter its default)."""
    from raynas.spec import spec_from_dict
    from raynas.search.registry import SEARCHERS as REGISTRY

    acc, cost = f"val_accuracy_{task}", f"time_{task}"
    raw = {
        "name": f"searcher-defaults-{task}",
        "trainable": {"function": "raynas.bench:lookup", "params": {"table": str(table_path), "key": KEY, "sleep": False}},
        "space": GRID,
        "search": {"searcher": name, "num_trials": budget, "max_concurrent": workers, "seed": seed, **(options or {})},
        "objective": {"metric": [acc, cost], "mode": ["max", "min"]} if multi else {"metric": acc, "mode": "max"},
        "max_epochs": 1,
    }
    spec = spec_from_dict(raw)
    return REGISTRY[name].build(spec), spec


def simulate(searcher, budget: int, workers: int, key_of, seconds_of, result_of) -> list[str]:
    """Drives ``searcher`` on a simulated clock: ``workers`` trials in flight, each taking
    ``seconds_of(key)``, the first to finish reported first with ``result_of(key)``. Returns the
    keys (``key_of(config)``) evaluated, in the order their trials completed."""
    running: list[tuple[float, int, str, str]] = []  # (finish time, start order, trial id, key)
    now, started, done = 0.0, 0, []
    while len(done) < budget:
        while len(running) < workers and started < budget:
            trial_id = f"t{started:04d}"
            config = searcher.suggest(trial_id)
            if not isinstance(config, dict):
                raise RuntimeError(f"{type(searcher).__name__} suggested {config!r} for trial {started}")
            key = key_of(config)
            heapq.heappush(running, (now + seconds_of(key), started, trial_id, key))
            started += 1
        now, _, trial_id, key = heapq.heappop(running)
        result = result_of(key)
        searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, result)
        done.append(key)
    return done


def run_search(searcher, rows: dict, task: str, budget: int, workers: int) -> list[str]:
    """Keys of the configurations evaluated, in the order their trials completed."""
    from raynas.bench.lookup import make_key
    from raynas.experiment import ORIGIN_KEY

    acc, cost = f"val_accuracy_{task}", f"time_{task}"
    return simulate(
        searcher, budget, workers,
        key_of=lambda config: make_key(KEY, {k: v for k, v in config.items() if k != ORIGIN_KEY}),
        seconds_of=lambda key: rows[key][cost],
        result_of=lambda key: {acc: rows[key][acc], cost: rows[key][cost], "epoch": 1, "training_iteration": 1},
    )


# -- measures --------------------------------------------------------------------------------


def top_keys(rows: dict, task: str, fraction: float = TOP_FRACTION) -> set[str]:
    """The best ``fraction`` of the table on ``task`` (ties at the threshold included)."""
    column = f"val_accuracy_{task}"
    values = sorted((r[column] for r in rows.values()), reverse=True)
    threshold = values[math.ceil(fraction * len(values)) - 1]
    return {k for k, r in rows.items() if r[column] >= threshold}


def evaluations_to(order: list[str], targets: set[str]) -> int | None:
    """1-based count of evaluations when the first target completed, None if none did."""
    return next((i + 1 for i, key in enumerate(order) if key in targets), None)


def rank_of_best(order: list[str], rows: dict, task: str) -> int:
    """1 + the number of table configurations better than the best one evaluated."""
    column = f"val_accuracy_{task}"
    best = max(rows[k][column] for k in order)
    return 1 + sum(r[column] > best for r in rows.values())


def random_median(top: int, size: int) -> int:
    """Median evaluations to the first of ``top`` targets for independent uniform samples."""
    return math.ceil(math.log(0.5) / math.log(1 - top / size))


def hypervolume_ratio(order: list[str], rows: dict, task: str) -> float:
    """Hypervolume of the evaluated points over the true front's (reference: the table's worst)."""
    import numpy as np

    from raynas.analysis.pareto import hypervolume

    cols = (f"val_accuracy_{task}", f"time_{task}")
    modes = ["max", "min"]
    every = np.array([[r[c] for c in cols] for r in rows.values()])
    reference = [every[:, 0].min(), every[:, 1].max()]
    found = np.array([[rows[k][c] for c in cols] for k in dict.fromkeys(order)])
    return float(hypervolume(found, modes, reference) / hypervolume(every, modes, reference))


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile, linear between order statistics (``inf`` stays ``inf``)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if ordered[hi] == math.inf:
        return math.inf
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary_hits(hits: list[int | None]) -> dict:
    """Median and quartiles of evaluations-to-top (``None``: never, counts as infinitely late)."""
    values = [math.inf if h is None else float(h) for h in hits]
    out = {q: quantile(values, p) for q, p in (("q1", 0.25), ("median", 0.5), ("q3", 0.75))}
    out = {k: (None if v == math.inf else v) for k, v in out.items()}
    out["reached"] = sum(h is not None for h in hits) / len(hits)
    out["runs"] = len(hits)
    return out


def summary_values(values: list[float]) -> dict:
    return {"q1": quantile(values, 0.25), "median": quantile(values, 0.5), "q3": quantile(values, 0.75), "runs": len(values)}


# -- the benchmark ---------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=None, help="comma-separated task ids (default: every task of the table)")
    parser.add_argument("--seeds", type=int, default=30, help="seeds per task and searcher")
    parser.add_argument("--budget", type=int, default=120, help="evaluations per search")
    parser.add_argument("--workers", type=int, default=4, help="trials in flight")
    parser.add_argument("--searchers", default=",".join(SEARCHERS),
                        help="comma-separated; name:key=value:... sets parameters (e.g. evolution:population_size=20)")
    parser.add_argument("--samplers", default=",".join(MULTI_SAMPLERS), help="Optuna samplers for two objectives ('' skips)")
    parser.add_argument("--table", default=str(TABLE))
    parser.add_argument("--smoke", action="store_true", help="one task, 2 seeds, 24 evaluations")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (docs/searcher_defaults.md)")
    parser.add_argument("--build-table", action="store_true", help="regenerate the table from the surrogate, then stop")
    parser.add_argument("--data-path", default=None, help="YAHPO data folder (for --build-table)")
    args = parser.parse_args(argv)
    table_path = Path(args.table)
    if args.build_table:
        build_table(table_path, args.tasks.split(",") if args.tasks else TASKS, args.data_path)
        print(f"wrote {table_path}")
        return 0
    if args.smoke:
        args.seeds, args.budget = 2, 24
    rows = read_table(table_path)
    tasks = args.tasks.split(",") if args.tasks else tasks_of(rows)
    if args.smoke and not args.tasks:
        tasks = tasks[:1]
    unknown = [t for t in tasks if t not in tasks_of(rows)]
    if unknown:
        print(f"--tasks: no column val_accuracy_{unknown[0]} in {table_path}; tasks: {', '.join(tasks_of(rows))}", file=sys.stderr)
        return 2
    searchers = [s for s in args.searchers.split(",") if s]
    samplers = [s for s in args.samplers.split(",") if s]
    started = time.perf_counter()
    report: dict = {
        "settings": {"tasks": tasks, "seeds": args.seeds, "budget": args.budget, "workers": args.workers,
                     "table": table_path.name, "configurations": len(rows), "top_fraction": TOP_FRACTION},
        "machine": machine(), "defaults": {}, "single": {}, "multi": {},
    }
    report["random_expected_median"] = {t: random_median(len(top_keys(rows, t)), len(rows)) for t in tasks}
    for label in searchers:
        name, options = parse_searcher(label)
        report["single"][label] = {"tasks": {}}
        hits, ranks = [], []
        for task in tasks:
            targets = top_keys(rows, task)
            task_hits, task_ranks = [], []
            for seed in range(args.seeds):
                searcher, spec = searcher_for(name, task, args.budget, args.workers, seed, table_path, options=options)
                order = run_search(searcher, rows, task, args.budget, args.workers)
                task_hits.append(evaluations_to(order, targets))
                task_ranks.append(rank_of_best(order, rows, task))
            report["defaults"][label] = dict(spec.search.options)
            report["single"][label]["tasks"][task] = {"top": len(targets), "hits": task_hits, "final_ranks": task_ranks,
                                                      **summary_hits(task_hits)}
            hits += task_hits
            ranks += task_ranks
        report["single"][label]["all"] = {**summary_hits(hits), "final_rank": summary_values(ranks)}
    auto = None
    for sampler in samplers:
        report["multi"][sampler] = {"tasks": {}}
        pooled = []
        for task in tasks:
            ratios = []
            for seed in range(args.seeds):
                searcher, spec = searcher_for("optuna", task, args.budget, args.workers, seed, table_path,
                                              multi=True, options={"sampler": sampler})
                ratios.append(hypervolume_ratio(run_search(searcher, rows, task, args.budget, args.workers), rows, task))
            report["multi"][sampler]["tasks"][task] = {"ratios": ratios, **summary_values(ratios)}
            pooled += ratios
        report["multi"][sampler]["all"] = summary_values(pooled)
    if samplers:
        searcher, _ = searcher_for("optuna", tasks[0], args.budget, args.workers, 0, table_path, multi=True)
        searcher._ensure_study()
        auto = type(searcher.study.sampler).__name__
    report["multi_auto_sampler"] = auto
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_after"] = load()
    if args.json:
        print(json.dumps(report))
    else:
        print_tables(report, markdown=args.markdown)
    return 0


def markdown_table(header: list[str], rows: list[list]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def print_tables(report: dict, markdown: bool = False) -> None:
    show = markdown_table if markdown else table
    s = report["settings"]
    budget, tasks = s["budget"], s["tasks"]

    def hits(r):
        fmt = lambda v: f">{budget}" if v is None else f"{v:g}"  # noqa: E731
        return f"{fmt(r['median'])} [{fmt(r['q1'])}-{fmt(r['q3'])}]"

    if report["single"]:
        print(f"Evaluations to a top-{s['top_fraction']:.0%} configuration ({s['configurations']} configurations, "
              f"{budget} evaluations, {s['workers']} in flight, {s['seeds']} seeds per task; "
              f"median [quartiles], >{budget}: not reached)\n")
        out = []
        for name, res in report["single"].items():
            options = " ".join(f"{k}={v}" for k, v in report["defaults"][name].items()) or "-"
            rank = res["all"]["final_rank"]
            out.append([name, options, *(hits(res["tasks"][t]) for t in tasks), hits(res["all"]),
                        f"{res['all']['reached']:.0%}", f"{rank['median']:g} [{rank['q1']:g}-{rank['q3']:g}]"])
        show(["searcher", "parameters", *tasks, "all tasks", "reached", "final rank"], out)
        expected = ", ".join(f"{t}: {m}" for t, m in report["random_expected_median"].items())
        print(f"\nIndependent uniform sampling's median: {expected}. Final rank: of the best configuration "
              "found (1: the table's best), over all tasks.")
    if report["multi"]:
        print(f"\nHypervolume after {budget} evaluations, as a fraction of the true front's (val_accuracy max, "
              f"time min; {s['seeds']} seeds per task; median [quartiles]); auto builds {report['multi_auto_sampler']}\n")
        cell = lambda r: f"{r['median']:.3f} [{r['q1']:.3f}-{r['q3']:.3f}]"  # noqa: E731
        out = [[name, *(cell(res["tasks"][t]) for t in tasks), cell(res["all"])] for name, res in report["multi"].items()]
        show(["sampler", *tasks, "all tasks"], out)
    print(f"\n{report['seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
