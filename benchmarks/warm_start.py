"""Warm starts on pairs of related tasks: does a search that starts from an earlier search's
trials reach the cold search's final quality in fewer evaluations?

The stored tabular benchmark of ``benchmarks/searcher_defaults.py`` (4,050 LCBench
configurations scored on three OpenML tasks) gives pairs of related tasks: the same
hyperparameters, another data set. For each ordered pair (source, target), searcher and seed:

1. a cold search on the source task (the searcher as users get it, 120 evaluations, 4 in
   flight on a simulated clock, no Ray), whose evaluated configurations and scores become the
   earlier trials (:class:`raynas.search.searchers.Prior`);
2. a cold search on the target task with the same seed; its best value at the end is the
   *cold final quality*;
3. the same search on the target task, started with ``warm_start(priors)`` as
   ``search.warm_start`` does.

Reported per searcher, over pairs and seeds: evaluations the cold search needed to reach its
own final quality, evaluations the warm search needed to reach it (``>budget`` when it never
did), the share of runs where the warm one got there first, and evaluations to a top-1%
configuration of the target for both.

Usage::

    python benchmarks/warm_start.py                    # the table in docs/warm_start.md
    python benchmarks/warm_start.py --seeds 5 --json
    python benchmarks/warm_start.py --smoke            # a quick check (CI)
    python benchmarks/warm_start.py --as-same-data     # ablation: earlier values mixed in as they are
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from benchmarks.searcher_defaults import (  # noqa: E402
    GRID, KEY, TABLE, evaluations_to, read_table, run_search, searcher_for, summary_hits, tasks_of, top_keys,
)

#: Ordered (source, target) pairs: 3945 and 34539 are related (Spearman's rho 0.87 between
#: their accuracies over the table), 7593 is weakly related to either (0.59 and 0.46).
PAIRS = (("3945", "34539"), ("34539", "3945"), ("7593", "3945"), ("34539", "7593"))
SEARCHERS = ("optuna", "evolution")


def configs_by_key() -> dict[str, dict]:
    from raynas.bench.lookup import make_key
    from raynas.spaces import Space

    return {make_key(KEY, c): c for c in Space(GRID).grid()}


def first_reaching(order: list[str], rows: dict, task: str, value: float) -> int | None:
    column = f"val_accuracy_{task}"
    return next((i + 1 for i, key in enumerate(order) if rows[key][column] >= value), None)


def one_pair(name: str, source: str, target: str, seed: int, args, rows: dict, configs: dict) -> dict:
    from raynas.search.searchers import Prior

    table = Path(args.table)
    searcher, _ = searcher_for(name, source, args.budget, args.workers, seed, table)
    earlier = run_search(searcher, rows, source, args.budget, args.workers)
    priors = [Prior(config=configs[k], value=rows[k][f"val_accuracy_{source}"], epochs=1, complete=True,
                    source=f"{source}/{i}", same_data=source == target or args.as_same_data) for i, k in enumerate(earlier)]
    cold_searcher, _ = searcher_for(name, target, args.budget, args.workers, seed, table)
    cold = run_search(cold_searcher, rows, target, args.budget, args.workers)
    final = max(rows[k][f"val_accuracy_{target}"] for k in cold)
    warm_searcher, _ = searcher_for(name, target, args.budget, args.workers, seed, table)
    warm_searcher.warm_start(priors)
    warm = run_search(warm_searcher, rows, target, args.budget, args.workers)
    top = top_keys(rows, target)
    return {
        "searcher": name, "source": source, "target": target, "seed": seed, "cold_final": final,
        "cold_to_final": first_reaching(cold, rows, target, final),
        "warm_to_final": first_reaching(warm, rows, target, final),
        "cold_to_top": evaluations_to(cold, top), "warm_to_top": evaluations_to(warm, top),
        "warm_final": max(rows[k][f"val_accuracy_{target}"] for k in warm),
    }


def rho(rows: dict, source: str, target: str) -> float:
    """Spearman's rank correlation of the two tasks' accuracies over the whole table."""
    from scipy.stats import spearmanr

    keys = list(rows)
    return float(spearmanr([rows[k][f"val_accuracy_{source}"] for k in keys], [rows[k][f"val_accuracy_{target}"] for k in keys])[0])


def fmt(summary: dict, budget: int) -> str:
    def v(x):
        return f">{budget}" if x is None else f"{x:g}"

    return f"{v(summary['median'])} [{v(summary['q1'])}-{v(summary['q3'])}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=120)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--searchers", default=",".join(SEARCHERS))
    parser.add_argument("--table", default=str(TABLE))
    parser.add_argument("--smoke", action="store_true", help="one pair, 1 seed, 24 evaluations")
    parser.add_argument("--as-same-data", action="store_true",
                        help="an ablation: hand the earlier trials over as if trained on the same data (values mixed in)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    pairs = PAIRS
    if args.smoke:
        args.seeds, args.budget, pairs = 1, 24, PAIRS[:1]
    rows = read_table(Path(args.table))
    missing = {t for pair in pairs for t in pair} - set(tasks_of(rows))
    if missing:
        parser.error(f"the table has no task {', '.join(sorted(missing))}")
    configs = configs_by_key()
    started = time.perf_counter()
    runs = [one_pair(name, s, t, seed, args, rows, configs)
            for name in args.searchers.split(",") for s, t in pairs for seed in range(args.seeds)]
    report = {"budget": args.budget, "workers": args.workers, "seeds": args.seeds, "pairs": pairs, "runs": runs,
              "seconds": round(time.perf_counter() - started, 1), "summary": {}}
    groups = [(name, pair) for name in args.searchers.split(",") for pair in pairs]
    for name, (source, target) in groups:
        mine = [r for r in runs if r["searcher"] == name and (r["source"], r["target"]) == (source, target)]
        report["summary"][f"{name} {source}->{target}"] = {
            "rho": rho(rows, source, target),
            "cold_to_final": summary_hits([r["cold_to_final"] for r in mine]),
            "warm_to_final": summary_hits([r["warm_to_final"] for r in mine]),
            "warm_first": sum((r["warm_to_final"] or 10**9) < r["cold_to_final"] for r in mine) / len(mine),
            "cold_to_top": summary_hits([r["cold_to_top"] for r in mine]),
            "warm_to_top": summary_hits([r["warm_to_top"] for r in mine]),
        }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"Warm starts on LCBench task pairs {', '.join(f'{s}->{t}' for s, t in pairs)}: {args.budget} evaluations, "
          f"{args.workers} in flight, {args.seeds} seeds per pair ({report['seconds']} s)")
    print("evaluations, median [quartiles] over pairs and seeds")
    print("| searcher, source->target | rho | cold: to its final quality | warm: to the cold final quality | warm first | cold: to top 1% | warm: to top 1% |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, s in report["summary"].items():
        print(f"| {name} | {s['rho']:.2f} | {fmt(s['cold_to_final'], args.budget)} | {fmt(s['warm_to_final'], args.budget)} "
              f"({s['warm_to_final']['reached']:.0%} reached) | {s['warm_first']:.0%} | {fmt(s['cold_to_top'], args.budget)} "
              f"| {fmt(s['warm_to_top'], args.budget)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
