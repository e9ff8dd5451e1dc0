"""A tabular NAS benchmark on digits, stored once, and the search strategies compared on it.

The table (``benchmarks/digits_cnn_table.csv``) is every architecture of a small conv-net
space (:data:`SPACE`: one or two conv stages of 8/16/32 channels, kernel 3 or 5, with or
without pooling; ReLU or GELU; no head or a 64-unit one; 624 architectures), each trained once
on scikit-learn's 8x8 digits with one fixed recipe (Adam, lr 3e-3, batch 64, :data:`EPOCHS`
epochs, the built-in trainable's fast loop, seed 0), with its validation accuracy, parameters,
FLOPs, training seconds and every zero-cost proxy of :mod:`raynas.trainables.proxies`.
``--build-table`` regenerates it (about 15 minutes on one core); everything else reads it.

Each search drives a raynas searcher as users get it (an experiment's ``search`` section with
``searcher``, ``num_trials``, ``max_concurrent: 4`` and ``seed`` only, validated and built by
the registry), without Ray: 4 trials in flight on a simulated clock (each takes its table
training time), the first to finish reported first. ``random+prescreen`` is random search
with ``search.prescreen: {proxy: naswot, candidates: 8}``, its candidates scored from the
table's naswot column, so its evaluations count trained architectures only.

Reported: evaluations to a top-1% architecture (the table's best 1%, ties included), median
[quartiles] over seeds, the share of runs that reached one, and the final rank of the best
architecture found.

Usage::

    python benchmarks/nas_table.py                   # the table in docs/nas_strategies.md
    python benchmarks/nas_table.py --seeds 50 --json
    python benchmarks/nas_table.py --smoke           # a quick check (CI)
    python benchmarks/nas_table.py --build-table     # retrain every architecture (slow)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from benchmarks.searcher_defaults import quantile, simulate, summary_hits  # noqa: E402

TABLE = ROOT / "benchmarks" / "digits_cnn_table.csv"
SPACE = {
    "stages": {
        "repeat": {"min": 1, "max": 2},
        "block": {"channels": {"choice": [8, 16, 32]}, "kernel": {"choice": [3, 5]}, "pool": {"choice": [True, False]}},
    },
    "activation": {"choice": ["relu", "gelu"]},
    "head_width": {"choice": [0, 64]},
}
EPOCHS = 6
SEARCHERS = ("random", "random+prescreen", "random+prescreen=snip", "random+prescreen=params", "optuna", "evolution",
             "evolution+prescreen=snip", "rl")
PRESCREEN = {"proxy": "naswot", "candidates": 8}
TOP_FRACTION = 0.01


def key_of(arch: dict) -> str:
    return json.dumps(arch, sort_keys=True)


def build_table(path: Path) -> None:
    from benchmarks.proxies import TRAIN, train
    from raynas.spaces import Space
    from raynas.trainables import proxies as P
    from raynas.trainables.data import load_dataset
    from raynas.trainables.families import count_flops, count_params
    from raynas.trainables.trainable import TrialJob, build_trial_model, score_config

    import torch

    torch.set_num_threads(1)
    data = load_dataset("digits", val_fraction=0.2, seed=0)
    job = TrialJob(model="cnn", max_epochs=EPOCHS, seed=0)
    archs = [c["arch"] for c in Space({"arch": SPACE}).grid()]
    names = P.names()
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["key", "val_acc", "params", "flops", "train_s", *names])
        for i, arch in enumerate(archs):
            config = {"arch": arch, "train": dict(TRAIN)}
            values = score_config(config, job, data, names)
            net = build_trial_model(config, job, data)
            val_acc, seconds = train(config, job, data, EPOCHS)
            out.writerow([key_of(arch), f"{val_acc:.6f}", count_params(net), count_flops(net, tuple(data.input_shape)),
                          f"{seconds:.3f}", *(f"{values[n]:.6g}" for n in names)])
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(archs)} architectures", file=sys.stderr, flush=True)


def read_table(path: Path = TABLE) -> dict[str, dict[str, float]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row.pop("key"): {k: float(v) for k, v in row.items()} for row in csv.DictReader(f)}


def searcher_for(name: str, budget: int, workers: int, seed: int, rows: dict):
    """The searcher raynas builds for this search section, wrapped for a prescreen if named."""
    from raynas.search.prescreen import PrescreenSearcher
    from raynas.search.registry import SEARCHERS as REGISTRY
    from raynas.spec import spec_from_dict

    base = name.split("+")[0]  # "random+prescreen" or "random+prescreen=snip"
    raw = {
        "name": "nas-table",
        "model": "cnn",
        "space": {"arch": SPACE, "train": {"lr": 0.003}},
        "search": {"searcher": base, "num_trials": budget, "max_concurrent": workers, "seed": seed},
        "objective": {"metric": "val_acc", "mode": "max"},
        "max_epochs": EPOCHS,
    }
    spec = spec_from_dict(raw)
    searcher = REGISTRY[base].build(spec)
    if "+prescreen" in name:
        column = name.partition("+prescreen=")[2] or PRESCREEN["proxy"]
        searcher = PrescreenSearcher(searcher, column, PRESCREEN["candidates"])
        searcher.attach(lambda configs: [rows[key_of(c["arch"])][column] for c in configs])
    return searcher


def run_search(searcher, rows: dict, budget: int, workers: int) -> list[str]:
    """Keys of the architectures trained, in the order their trials completed."""

    def result_of(key: str) -> dict:
        value = rows[key]["val_acc"]
        if not math.isfinite(value):
            return {"raynas_status": "failed", "epoch": EPOCHS}
        return {"val_acc": value, "epoch": EPOCHS, "training_iteration": EPOCHS}

    return simulate(searcher, budget, workers, key_of=lambda config: key_of(config["arch"]),
                    seconds_of=lambda key: rows[key]["train_s"], result_of=result_of)


def top_keys(rows: dict, fraction: float = TOP_FRACTION) -> set[str]:
    values = sorted((r["val_acc"] for r in rows.values() if math.isfinite(r["val_acc"])), reverse=True)
    threshold = values[math.ceil(fraction * len(rows)) - 1]
    return {k for k, r in rows.items() if r["val_acc"] >= threshold}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--searchers", default=",".join(SEARCHERS))
    parser.add_argument("--table", default=str(TABLE))
    parser.add_argument("--smoke", action="store_true", help="2 seeds, 16 evaluations")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--build-table", action="store_true")
    args = parser.parse_args(argv)
    if args.build_table:
        build_table(Path(args.table))
        print(f"wrote {args.table}")
        return 0
    if args.smoke:
        args.seeds, args.budget = 2, 16
    rows = read_table(Path(args.table))
    top = top_keys(rows)
    started = time.perf_counter()
    report = {"archs": len(rows), "top": len(top), "budget": args.budget, "seeds": args.seeds, "searchers": {}}
    for name in args.searchers.split(","):
        hits, ranks = [], []
        for seed in range(args.seeds):
            order = run_search(searcher_for(name, args.budget, args.workers, seed, rows), rows, args.budget, args.workers)
            hits.append(next((i + 1 for i, k in enumerate(order) if k in top), None))
            best = max(rows[k]["val_acc"] for k in order)
            ranks.append(1 + sum(r["val_acc"] > best for r in rows.values()))
        report["searchers"][name] = {"hits": summary_hits(hits),
                                     "final_rank": {q: quantile(ranks, p) for q, p in (("q1", .25), ("median", .5), ("q3", .75))}}
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"digits cnn table: {len(rows)} architectures, top 1% = {len(top)}; {args.budget} evaluations, "
          f"{args.workers} in flight, {args.seeds} seeds ({report['seconds']} s)")
    print("| searcher | evaluations to top 1% | reached | final rank |")
    print("| --- | --- | --- | --- |")
    for name, s in report["searchers"].items():
        h, r = s["hits"], s["final_rank"]
        v = lambda x: f">{args.budget}" if x is None else f"{x:g}"  # noqa: E731
        print(f"| {name} | {v(h['median'])} [{v(h['q1'])}-{v(h['q3'])}] | {h['reached']:.0%} | "
              f"{r['median']:g} [{r['q1']:g}-{r['q3']:g}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
