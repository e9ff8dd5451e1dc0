"""Does DARTS collapse to skip connections on the digits cell space? Without the guard.

DARTS (first order) is reported to end in cells of mostly ``skip`` edges after long searches on
CIFAR-10. This trains raynas's DARTS supernet (:func:`raynas.trainables.supernet.darts_family`)
with the guard off (``max_skip: null``) on scikit-learn's 8x8 digits, half the training split for
the weights and half for the architecture, as a gradient search does, and prints every
``--every`` epochs: the validation accuracy of the supernet, how many of the six edges derive
``skip``, the derived cell and each edge's strongest softmax weight. No Ray; one torch thread.

Usage::

    python benchmarks/darts_skip.py                               # arch lr 0.003, 0.03, 0.1; 60 epochs
    python benchmarks/darts_skip.py --arch-lrs 0.003 --epochs 100
    python benchmarks/darts_skip.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

OPS5 = ["none", "skip", "conv1x1", "conv3x3", "avgpool3x3"]
EDGES = ["0-1", "0-2", "1-2", "0-3", "1-3", "2-3"]
SPACE = {"edges": {e: {"choice": OPS5} for e in EDGES}, "channels": 16, "stages": 2, "cells_per_stage": 1}


def run(arch_lr: float, epochs: int, every: int, seed: int) -> dict:
    import torch

    from raynas.trainables.data import load_dataset
    from raynas.trainables.hparams import TrainParams
    from raynas.trainables.module import FastLoop, FastModule, TensorBatches
    from raynas.trainables.supernet import darts_family

    torch.manual_seed(seed)
    data = load_dataset("digits", val_fraction=0.2, seed=0)
    x, y = torch.as_tensor(data.x_train, dtype=torch.float32), torch.as_tensor(data.y_train, dtype=torch.long)
    xv, yv = torch.as_tensor(data.x_val, dtype=torch.float32), torch.as_tensor(data.y_val, dtype=torch.long)
    net = darts_family({"family": "cell", "space": json.dumps(SPACE), "seed": seed, "arch_lr": arch_lr,
                        "max_skip": None}, (1, 8, 8), 10)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    half = len(y) // 2
    net.set_arch_data(x[perm[half:]], y[perm[half:]], 64)
    params = TrainParams.from_config({"lr": 0.003, "batch_size": 64, "optimizer": "adam"})
    batches = TensorBatches(x[perm[:half]], y[perm[:half]], 64, shuffle=True, generator=torch.Generator().manual_seed(seed))
    loop = FastLoop(FastModule(net, params, max_epochs=epochs, steps_per_epoch=len(batches)), batches,
                    TensorBatches(xv, yv, 1024, shuffle=False), torch.device("cpu"))
    rows, start = [], time.process_time()
    for epoch in range(1, epochs + 1):
        loop.train_epoch()
        if epoch % every == 0 or epoch == epochs:
            metrics = net.epoch_metrics()
            rows.append({
                "epoch": epoch,
                "val_acc": round(float(loop.validate()[1]), 4),
                "skip_edges": int(metrics["skip_edges"]),
                "cell": json.loads(metrics["derived_arch"])["edges"],
                "strongest": [round(float(torch.softmax(a.detach(), 0).max()), 2) for a in net.alphas()],
            })
    return {"arch_lr": arch_lr, "rows": rows, "cpu_s": time.process_time() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch-lrs", default="0.003,0.03,0.1", help="comma-separated architecture learning rates")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--every", type=int, default=10, help="print every N epochs (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        lrs = [float(v) for v in args.arch_lrs.split(",")]
    except ValueError:
        parser.error(f"--arch-lrs must be comma-separated numbers, got {args.arch_lrs!r}")
    if args.epochs < 1 or args.every < 1 or any(lr <= 0 for lr in lrs):
        parser.error("--epochs, --every and each --arch-lrs value must be > 0")
    import torch

    torch.set_num_threads(1)
    results = [run(lr, args.epochs, args.every, args.seed) for lr in lrs]
    if args.json:
        print(json.dumps({"settings": vars(args), "runs": results}, indent=1))
        return 0
    print(f"{'arch lr':>8} {'epoch':>5} {'val acc':>7} {'skip edges':>10}  strongest weight per edge   derived cell")
    for result in results:
        for row in result["rows"]:
            cell = " ".join(f"{e}:{op}" for e, op in row["cell"].items())
            print(f"{result['arch_lr']:>8g} {row['epoch']:>5} {row['val_acc']:>7.3f} {row['skip_edges']:>10}  "
                  f"{' '.join(f'{w:.2f}' for w in row['strongest']):<26}  {cell}")
        print(f"{'':>8} {result['cpu_s']:.1f} CPU-s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
