"""One-shot (single-path, weight-sharing) scores against stand-alone training, on a space of any built-in family.

Does a supernet rank architectures as training them one by one does, and at what cost? On
scikit-learn's 8x8 digits and a NAS-Bench-201-style cell space (4 nodes, 6 edges, each one of
none, skip, conv1x1, conv3x3, avgpool3x3; 15,625 architectures), or with ``--family mbconv`` an
mbconv space (experiments/oneshot_mbconv_digits.yaml's: three stages of two widths each and 1-3
layers, each identity or an MBConv of expansion 1, 3 or 6 and kernel 3 or 5), or with ``--family
transformer`` experiments/oneshot_transformer_digits.yaml's space (width 32 or 64, 1-3 blocks of
1, 2 or 4 heads and MLP ratio 1, 2 or 4; its AdamW recipe), ``--family mlp`` or ``resnet`` their
one-shot examples' spaces, or ``--family cnn`` three stages of 16 or 32 channels and kernel 3 or 5
(docs/oneshot.md's cnn example with a third stage):

1. trains one supernet (:mod:`raynas.trainables.supernet`) for ``--supernet-epochs`` epochs,
   one path drawn uniformly from the space per batch, with the fast engine's loop;
2. scores ``--archs`` distinct random architectures with inherited weights: batch norm
   recalibrated on ``--calibration-batches`` training batches, then validation accuracy;
3. trains each of those architectures on its own (``--epochs`` epochs, same recipe), with two
   seeds, so the table also shows how well stand-alone training ranks them against itself
   (the ceiling any cheap score can reach);
4. prints Kendall tau and Spearman rho of the one-shot scores, of the parameter count and of
   the second stand-alone seed against the first seed's accuracy, which architecture each picks
   and the CPU seconds each step took.

Usage::

    python benchmarks/oneshot.py                       # the table in docs/oneshot.md
    python benchmarks/oneshot.py --archs 8 --epochs 2 --supernet-epochs 2   # a quick check
    python benchmarks/oneshot.py --json
    python benchmarks/oneshot.py --data fashion_mnist --data-path DIR --max-samples 2000 --stages 3 --epochs 5
    python benchmarks/oneshot.py --family mbconv --archs 30 --epochs 8 --supernet-epochs 30
    python benchmarks/oneshot.py --family transformer --epochs 10 --supernet-epochs 20
    python benchmarks/oneshot.py --family mlp --epochs 10 --supernet-epochs 20     # also cnn, resnet
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

OPS5 = ["none", "skip", "conv1x1", "conv3x3", "avgpool3x3"]
EDGES = ["0-1", "0-2", "1-2", "0-3", "1-3", "2-3"]
#: The space's arch: only the edges are searched (the rest is the supernet's skeleton).
ARCH_SPACE = {"edges": {e: {"choice": OPS5} for e in EDGES}, "channels": 16, "stages": 2, "cells_per_stage": 1}
_MB_BLOCK = {"op": {"choice": ["identity", "mbconv"]}, "expansion": {"choice": [1, 3, 6], "when": {"op": "mbconv"}},
             "kernel": {"choice": [3, 5], "when": {"op": "mbconv"}}}
#: The mbconv space (--family mbconv): experiments/oneshot_mbconv_digits.yaml's arch.
MBCONV_SPACE = {"stem_channels": 16, "stages": [
    {"channels": {"choice": c}, "stride": s, "layers": {"repeat": {"min": 1, "max": 3}, "block": _MB_BLOCK}}
    for c, s in (([16, 24], 1), ([24, 32], 2), ([32, 48], 2))], "head_channels": 64, "dropout": 0.1}
#: The transformer space (--family transformer): experiments/oneshot_transformer_digits.yaml's arch.
TRANSFORMER_SPACE = {"patch_size": 4, "pool": "cls", "width": {"choice": [32, 64]}, "blocks": {
    "repeat": {"min": 1, "max": 3}, "block": {"heads": {"choice": [1, 2, 4]}, "mlp_ratio": {"choice": [1, 2, 4]}}}}
#: The mlp and resnet spaces: experiments/oneshot_mlp_digits.yaml's and oneshot_resnet_digits.yaml's arch.
MLP_SPACE = {"layers": {"repeat": {"min": 1, "max": 3}, "block": {"width": {"choice": [32, 64, 128]},
                                                                   "dropout": {"choice": [0.0, 0.1]}}},
             "activation": "relu", "batch_norm": True}
RESNET_SPACE = {"stem_channels": {"choice": [16, 32]}, "stages": [
    {"channels": {"choice": c}, "blocks": {"choice": [1, 2]}, "stride": s} for c, s in (([16, 32], 1), ([32, 48], 2),
                                                                                        ([48, 64], 2))],
    "activation": "relu", "dropout": {"choice": [0.0, 0.1]}}
#: The cnn space (--family cnn): docs/oneshot.md's cnn example with a third stage.
CNN_SPACE = {"stages": [{"channels": {"choice": [16, 32]}, "kernel": {"choice": [3, 5]}, "stride": s} for s in (1, 2, 2)],
             "dropout": {"choice": [0.0, 0.2]}}
TRAIN = {"optimizer": "adam", "lr": 3e-3, "batch_size": 64}
#: And its recipe (the example's).
TRANSFORMER_TRAIN = {"optimizer": "adamw", "lr": 3e-3, "batch_size": 64, "weight_decay": 0.01}
#: The family the benchmark runs (--family).
FAMILY = "cell"


def sample_archs(n: int, seed: int) -> list[dict]:
    from raynas.spaces import Space

    space, rng, seen, archs = Space({"arch": ARCH_SPACE}), random.Random(seed), set(), []
    while len(archs) < n:
        arch = space.sample(rng=rng)["arch"]
        key = json.dumps(arch, sort_keys=True)
        if key not in seen:
            seen.add(key)
            archs.append(arch)
    return archs


def loop_for(net, data, epochs: int, seed: int):
    import torch

    from raynas.trainables.hparams import TrainParams
    from raynas.trainables.module import FastLoop, FastModule, TensorBatches
    from raynas.trainables.trainable import _device_tensors

    hp = TrainParams.from_config(TRAIN)
    x_train, y_train, x_val, y_val = _device_tensors(data, torch.device("cpu"))[:4]
    generator = torch.Generator().manual_seed(seed)
    train_batches = TensorBatches(x_train, y_train, hp.batch_size, shuffle=True, generator=generator)
    val_batches = TensorBatches(x_val, y_val, 1024, shuffle=False)
    module = FastModule(net, hp, max_epochs=epochs, steps_per_epoch=len(train_batches))
    return FastLoop(module, train_batches, val_batches, torch.device("cpu"), "32"), train_batches


def stand_alone(arch: dict, data, epochs: int, seed: int) -> float:
    import torch

    from raynas.trainables.families import build_model

    torch.manual_seed(seed)
    net = build_model(FAMILY, arch, tuple(data.input_shape), data.num_classes)
    loop, _ = loop_for(net, data, epochs, seed)
    for _ in range(epochs):
        if not math.isfinite(loop.train_epoch()):
            return float("nan")
    return float(loop.validate()[1])


def train_supernet(data, epochs: int, seed: int):
    import torch

    from raynas.spaces import Space
    from raynas.trainables.supernet import build_supernet

    torch.manual_seed(seed)
    net = build_supernet(FAMILY, ARCH_SPACE, tuple(data.input_shape), data.num_classes)
    space, rng = Space({"arch": ARCH_SPACE}), random.Random(seed)
    net.sampler = lambda: space.sample(rng=rng)["arch"]  # one uniform path per batch
    loop, train_batches = loop_for(net, data, epochs, seed)
    for _ in range(epochs):
        loop.train_epoch()
    return net, loop, train_batches


def one_shot_score(net, loop, train_batches, arch: dict, calibration: int) -> float:
    from itertools import islice

    from raynas.trainables.supernet import recalibrate_bn

    net.set_arch(arch)
    recalibrate_bn(net, (x for x, _ in islice(iter(train_batches), calibration)))
    return float(loop.validate()[1])


def correlation(x: list[float], y: list[float]) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    xs, ys = zip(*pairs)
    return float(kendalltau(xs, ys).statistic), float(spearmanr(xs, ys).statistic)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=50, help="architectures to score and train (default 50)")
    parser.add_argument("--epochs", type=int, default=10, help="stand-alone training epochs (default 10)")
    parser.add_argument("--supernet-epochs", type=int, default=50, help="supernet training epochs (default 50)")
    parser.add_argument("--calibration-batches", type=int, default=10, help="batches to recalibrate batch norm (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="digits", help="digits (default), or fashion_mnist / mnist (IDX files in --data-path)")
    parser.add_argument("--data-path", default=None, help="folder of the IDX files")
    parser.add_argument("--max-samples", type=int, default=None, help="a seeded stratified subsample of the images")
    parser.add_argument("--stages", type=int, default=2, help="cell stages (default 2; 3 for 28x28 images)")
    parser.add_argument("--family", choices=["cell", "mbconv", "transformer", "mlp", "cnn", "resnet"], default="cell", help="the space (default cell)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if min(args.archs, args.epochs, args.supernet_epochs, args.calibration_batches) < 1 or args.archs < 3:
        parser.error("--archs must be >= 3 and the epoch and batch counts >= 1")

    import torch

    from raynas.trainables.data import load_dataset
    from raynas.trainables.families import build_model, count_params

    torch.set_num_threads(1)
    data = load_dataset(args.data, path=args.data_path, val_fraction=0.2, seed=0, max_samples=args.max_samples)
    global FAMILY, ARCH_SPACE, TRAIN
    FAMILY = args.family
    if FAMILY == "mbconv":
        ARCH_SPACE = MBCONV_SPACE
    elif FAMILY == "transformer":
        ARCH_SPACE, TRAIN = TRANSFORMER_SPACE, TRANSFORMER_TRAIN
    elif FAMILY != "cell":
        ARCH_SPACE = {"mlp": MLP_SPACE, "cnn": CNN_SPACE, "resnet": RESNET_SPACE}[FAMILY]
    else:
        ARCH_SPACE["stages"] = args.stages
    archs = sample_archs(args.archs, args.seed)

    began = time.process_time()
    net, loop, train_batches = train_supernet(data, args.supernet_epochs, args.seed)
    supernet_s = time.process_time() - began
    began = time.process_time()
    scores = [one_shot_score(net, loop, train_batches, a, args.calibration_batches) for a in archs]
    scoring_s = time.process_time() - began
    began = time.process_time()
    first = [stand_alone(a, data, args.epochs, args.seed) for a in archs]
    stand_alone_s = time.process_time() - began
    second = [stand_alone(a, data, args.epochs, args.seed + 1) for a in archs]
    params = [float(count_params(build_model(FAMILY, a, tuple(data.input_shape), data.num_classes))) for a in archs]

    truth = [(a + b) / 2 for a, b in zip(first, second)]
    rows = {}
    for name, values in (("one-shot", scores), ("params", params), ("stand-alone, other seed", second)):
        reference = first if name == "stand-alone, other seed" else truth
        tau, rho = correlation(values, reference)
        pick = max(range(len(archs)), key=lambda i: values[i] if math.isfinite(values[i]) else -math.inf)
        rows[name] = {"kendall_tau": tau, "spearman_rho": rho, "picked_acc": truth[pick]}
    result = {
        "settings": {**vars(args), "space": ARCH_SPACE, "train": TRAIN,
                     "data": f"{args.data} ({len(data.y_train)} train / {len(data.y_val)} val)"},
        "rows": rows,
        "best_acc": max(truth),
        "median_acc": statistics.median(truth),
        "cpu_s": {"supernet": supernet_s, "scoring": scoring_s, "stand_alone_one_seed": stand_alone_s},
        "archs": [{"arch": a, "one_shot": s, "acc_seed0": f, "acc_seed1": g} for a, s, f, g in zip(archs, scores, first, second)],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"one-shot on {result['settings']['data']}: {args.archs} {FAMILY} architectures, supernet {args.supernet_epochs} epochs, "
          f"stand-alone {args.epochs} epochs x 2 seeds (truth: their mean)")
    print(f"{'score':26s} {'Kendall tau':>11s} {'Spearman rho':>12s} {'acc of its pick':>15s}")
    for name, row in rows.items():
        print(f"{name:26s} {row['kendall_tau']:11.3f} {row['spearman_rho']:12.3f} {row['picked_acc']:15.4f}")
    print(f"best of the {args.archs}: {result['best_acc']:.4f}, median {result['median_acc']:.4f}")
    c = result["cpu_s"]
    print(f"CPU seconds: supernet {c['supernet']:.1f}, scoring all {c['scoring']:.1f}, "
          f"stand-alone training of all (one seed) {c['stand_alone_one_seed']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
