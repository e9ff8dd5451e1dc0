"""One-shot search against evolution + ASHA on the same cell space: the compute each spends and
the accuracy of what each finds, through raynas end to end.

Both search a NAS-Bench-201-style cell (4 nodes, 6 edges of none, skip, conv1x1, conv3x3,
avgpool3x3) on scikit-learn's digits with a held-out test split (or, with ``--data
fashion_mnist --data-path DIR``, on Fashion-MNIST from its IDX files, scored on its 10,000
t10k images), on a local Ray:

* ``evolution+asha``: regularized evolution proposes ``--evolution-trials`` cells, each trained
  up to ``--epochs`` epochs under ASHA (grace period 1, reduction factor 3);
* ``one-shot``: ``search.strategy: one-shot``, a supernet trained ``--supernet-epochs`` epochs,
  then ``--oneshot-trials`` cells proposed by evolution and scored with inherited weights;
* ``gradient``: ``search.strategy: gradient`` (DARTS), a supernet trained ``--supernet-epochs``
  epochs, then the one cell it derives trained ``--epochs`` epochs (part of its compute).

The compute of a search is the seconds its trials spent in epochs and scoring steps (the
``epoch_time_s`` and ``score_time_s`` they report; one CPU per trial, so CPU-seconds), which
leaves Ray's start-up and orchestration out. Quality: each search's best ``--top`` cells are
retrained from scratch by ``raynas retrain`` (``--epochs`` epochs, ``--seeds`` seeds each) and
scored on the test split (the gradient search has one cell); the table gives the test accuracy
of each search's first pick and of the best of its top cells (mean over the retrain seeds).

Usage::

    python benchmarks/oneshot_search.py                 # the table in docs/oneshot.md
    python benchmarks/oneshot_search.py --seeds 1 --evolution-trials 4 --oneshot-trials 4 \\
        --epochs 2 --supernet-epochs 2 --top 1         # a quick check
    python benchmarks/oneshot_search.py --data fashion_mnist --data-path DIR --max-samples 6000 --stages 3 \\
        --methods evolution+asha,one-shot --supernet-epochs 10 --oneshot-trials 24
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

OPS = ["none", "skip", "conv1x1", "conv3x3", "avgpool3x3"]
EDGES = ["0-1", "0-2", "1-2", "0-3", "1-3", "2-3"]
METHODS = ("evolution+asha", "one-shot", "gradient")


def data_config(args) -> dict:
    """The experiment's ``data`` section: digits with a 20% test split, or an IDX source.

    Sources with a published test set (fashion_mnist, mnist: the t10k files) keep it as the test
    split, so they take no ``test_fraction``; ``--max-samples`` subsamples the training pool
    (stratified, seed 0) before the validation split, as benchmarks/oneshot.py's
    ``load_dataset(..., max_samples=...)`` does.

    Example:
        >>> from types import SimpleNamespace
        >>> data_config(SimpleNamespace(data="digits", data_path=None, max_samples=None))
        {'source': 'digits', 'val_fraction': 0.2, 'seed': 0, 'test_fraction': 0.2}
    """
    data: dict = {"source": args.data, "val_fraction": 0.2, "seed": 0}
    if args.data == "digits":
        data["test_fraction"] = 0.2
    if args.data_path is not None:
        data["path"] = os.path.abspath(args.data_path)
    if args.max_samples is not None:
        data["max_samples"] = args.max_samples
    return data


def experiment(method: str, args, seed: int) -> dict:
    base = {
        "name": f"{method.replace('+', '-')}-{seed}",
        "data": data_config(args),
        "model": "cell",
        "space": {"arch": {"edges": {e: {"choice": OPS} for e in EDGES}, "channels": 16, "stages": args.stages,
                           "cells_per_stage": 1},
                  "train": {"lr": 0.003, "batch_size": 64, "optimizer": "adam"}},
        "objective": {"metric": "val_acc", "mode": "max"},
        "max_epochs": args.epochs,
        "resources": {"cpus_per_trial": 1},
    }
    if method == "evolution+asha":
        base["search"] = {"searcher": "evolution", "num_trials": args.evolution_trials, "max_concurrent": 2, "seed": seed}
        base["scheduler"] = {"name": "asha", "grace_period": 1, "reduction_factor": 3}
    elif method == "one-shot":
        base["search"] = {"strategy": "one-shot", "num_trials": args.oneshot_trials, "max_concurrent": 2, "seed": seed,
                          "one_shot": {"supernet_epochs": args.supernet_epochs}}
    else:
        base["search"] = {"strategy": "gradient", "seed": seed, "gradient": {"supernet_epochs": args.supernet_epochs}}
    return base


def trial_seconds(folder: Path) -> float:
    from raynas.analysis import load_results

    results = load_results(folder)
    total = sum(float(r.get("epoch_time_s") or 0.0) + float(r.get("score_time_s") or 0.0)
                for t in results.trials for r in t.curve)
    if results.one_shot:
        total += results.one_shot["supernet_worker_s"]  # its epochs times its data-parallel workers
    return total


def run_method(method: str, args, seed: int, storage: str) -> dict:
    import raynas
    from raynas.runner import RunOptions
    from raynas.winner.retrain import retrain, summary

    began = time.perf_counter()
    folder = raynas.run(raynas.spec_from_dict(experiment(method, args, seed)), storage_path=storage, progress=False,
                        report=False)
    search_wall = time.perf_counter() - began
    seconds = trial_seconds(folder)
    retrain(folder, top=1 if method == "gradient" else args.top, seeds=args.seeds, epochs=args.epochs,
            opts=RunOptions(progress=False, report=False))
    candidates = summary(folder)
    tests = [statistics.fmean(c.test_acc) for c in candidates if c.test_acc]
    return {"method": method, "seed": seed, "trial_s": seconds, "search_wall_s": search_wall,
            "first_pick_test": tests[0] if tests else None, "best_of_top_test": max(tests) if tests else None,
            "picks": [{"rank": c.rank, "config": c.config, "search_score": c.search_score, "test_acc": c.test_acc}
                      for c in candidates]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options, checked (a bad one exits 2 with argparse's message)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--search-seeds", type=int, default=2, help="searches per method (default 2)")
    parser.add_argument("--evolution-trials", type=int, default=40)
    parser.add_argument("--oneshot-trials", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of a trained cell (ASHA's max, the retrain's)")
    parser.add_argument("--supernet-epochs", type=int, default=30)
    parser.add_argument("--top", type=int, default=3, help="cells each search hands to raynas retrain (default 3)")
    parser.add_argument("--seeds", type=int, default=3, help="retrain seeds per cell (default 3)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)} (default: all)")
    parser.add_argument("--data", default="digits", help="digits (default), or fashion_mnist / mnist (IDX files in --data-path)")
    parser.add_argument("--data-path", default=None, help="folder of the IDX files")
    parser.add_argument("--max-samples", type=int, default=None, help="a seeded stratified subsample of the training pool")
    parser.add_argument("--stages", type=int, default=2, help="cell stages (default 2; 3 for 28x28 images)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        parser.error(f"--methods: choose from {', '.join(METHODS)}, got {args.methods!r}")
    if min(args.search_seeds, args.evolution_trials, args.oneshot_trials, args.epochs, args.supernet_epochs,
           args.top, args.seeds) < 1:
        parser.error("every count must be >= 1")
    if args.stages < 1:
        parser.error("--stages must be >= 1")
    args.methods = methods
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = args.methods
    import raynas
    from raynas.errors import ConfigError

    try:  # a bad --data, --data-path or --max-samples stops here, before Ray starts
        for method in methods:
            raynas.spec_from_dict(experiment(method, args, 0))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import ray

    tmp = tempfile.mkdtemp(prefix="ros", dir=os.environ.get("RAYNAS_BENCH_TMP", "/tmp"))
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _temp_dir=os.path.join(tmp, "ray"))
    rows = []
    try:
        for seed in range(args.search_seeds):
            for method in methods:
                # raynas's own lines (the stages, the report's path) go to stderr: stdout is the table or JSON.
                with contextlib.redirect_stdout(sys.stderr):
                    rows.append(run_method(method, args, seed, os.path.join(tmp, "results")))
                r = rows[-1]
                print(f"{method} seed {seed}: {r['trial_s']:.1f} trial-s, first pick test {r['first_pick_test']:.4f}",
                      file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    if args.json:
        print(json.dumps({"settings": vars(args), "runs": rows}))
        return 0
    data = args.data + (f" ({args.max_samples} samples)" if args.max_samples else "")
    print(f"cell space ({args.stages} stages) on {data}: evolution+asha ({args.evolution_trials} cells, <= {args.epochs} epochs) against "
          f"one-shot ({args.supernet_epochs} supernet epochs, {args.oneshot_trials} cells scored); "
          f"top {args.top} retrained {args.seeds}x{args.epochs} epochs; {args.search_seeds} search seeds")
    print(f"{'method':16s} {'trial-s':>8s} {'first pick test':>16s} {'best of top test':>17s}")
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        mean = lambda k: statistics.fmean(r[k] for r in mine)  # noqa: E731
        print(f"{method:16s} {mean('trial_s'):8.1f} {mean('first_pick_test'):16.4f} {mean('best_of_top_test'):17.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
