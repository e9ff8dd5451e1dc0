"""A one-shot supernet trained on one trial's own worker against N data-parallel Ray Train
workers (``resources.workers_per_trial``): the time of its epochs, what starting Ray Train
costs, and whether the supernet still learns.

The supernet of ``experiments/oneshot_digits.yaml`` (a 4-node cell of five ops on 8x8 digits,
16 channels, or ``--channels``) trains ``--epochs`` epochs through ``raynas.run``, once per worker count in
``--workers``, each worker with one torch thread (``trainer.num_threads: 1``; the workers share
``--cpus`` CPUs of the local Ray between them). The subnet stage scores ``--subnets``
architectures, so each run also shows that scoring works on what the workers trained.

Reported per run: the median epoch time of the supernet (worker 0's ``epoch_time_s``), the
seconds from the trial's start to its first epoch beyond that epoch's own time (Ray Train's
controller, worker group and process group are started there), the supernet's last
``val_acc`` (one path, shared batch-norm statistics: a progress signal), and the best and mean
subnet score.

Usage::

    python benchmarks/supernet_workers.py                      # 1 and 2 workers, 30 epochs
    python benchmarks/supernet_workers.py --channels 64 --epochs 10   # a wider supernet
    python benchmarks/supernet_workers.py --epochs 2 --subnets 2 --json   # a quick check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def run_once(workers: int, args, storage: str) -> dict:
    import raynas
    from raynas.analysis import load_results

    raw = yaml.safe_load((ROOT / "experiments" / "oneshot_digits.yaml").read_text())
    raw["name"] = f"workers-{workers}"
    raw["search"].update(num_trials=args.subnets, population_size=max(2, min(12, args.subnets)),
                         sample_size=max(2, min(4, args.subnets)), one_shot={"supernet_epochs": args.epochs})
    raw["space"]["arch"]["channels"] = args.channels
    raw["trainer"] = {"num_threads": 1}
    # One worker takes a whole CPU; N share the machine's, leaving their driver its hundredth.
    raw["resources"] = {"cpus_per_trial": 1 if workers == 1 else round((args.cpus - 0.02) / workers, 2),
                        "workers_per_trial": workers}
    folder = raynas.run(raynas.spec_from_dict(raw), storage_path=storage, progress=False, report=False, stream=sys.stderr,
                        num_cpus=args.cpus)
    trial = load_results(folder / "supernet").trials[0]
    rows = trial.curve
    with open(folder / "supernet" / trial.dir / "result.json", encoding="utf-8") as f:
        first = json.loads(f.readline())  # Tune's row: the seconds since the trial started
    subnets = [t.best for t in load_results(folder).trials if t.best is not None]
    return {"workers": workers, "epochs": len(rows),
            "epoch_s": statistics.median(float(r["epoch_time_s"]) for r in rows),
            "start_s": float(first["time_this_iter_s"]) - float(first["epoch_time_s"]),
            "supernet_val_acc": float(rows[-1]["val_acc"]),
            "spread": max(float(r.get("worker_weight_spread") or 0.0) for r in rows),
            "best_subnet": max(subnets), "mean_subnet": statistics.fmean(subnets)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated (default 1,2)")
    parser.add_argument("--epochs", type=int, default=30, help="supernet epochs (default 30)")
    parser.add_argument("--subnets", type=int, default=12, help="subnets scored after it (default 12)")
    parser.add_argument("--channels", type=int, default=16, help="the cell's channels (default 16, as the example)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="raynas-bench-") as storage:
        runs = [run_once(int(n), args, storage) for n in args.workers.split(",")]
    if args.json:
        print(json.dumps({"epochs": args.epochs, "runs": runs}))
        return 0
    print(f"{'workers':>7} {'epoch s':>8} {'start s':>8} {'supernet acc':>12} {'best subnet':>11} {'mean subnet':>11} {'spread':>7}")
    for r in runs:
        print(f"{r['workers']:>7} {r['epoch_s']:>8.3f} {r['start_s']:>8.1f} {r['supernet_val_acc']:>12.4f} "
              f"{r['best_subnet']:>11.4f} {r['mean_subnet']:>11.4f} {r['spread']:>7.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
