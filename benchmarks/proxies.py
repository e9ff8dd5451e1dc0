"""How well each zero-cost proxy ranks architectures: rank correlation with trained accuracy.

For each space (the ``space.arch`` of an experiment file in experiments/), the script samples
``--archs`` distinct architectures (raynas's own sampler, seeded), and for each one:

* computes every proxy of :mod:`raynas.trainables.proxies` exactly as a trial with
  ``proxies: [...]`` does (:func:`~raynas.trainables.trainable.score_config`: the trial's model,
  seed and batch), timing each, plus ``params`` and ``flops`` as the baselines a proxy must beat;
* trains the same model (same seed, same initial weights) with the built-in trainable's fast
  loop for ``--epochs`` epochs with one fixed recipe (Adam, lr 3e-3, batch 64, constant lr):
  the training hyperparameters are not sampled, so the accuracy differences come from the
  architecture alone, as in NAS benchmarks;
* records the last epoch's validation accuracy.

The data is 8x8 digits (bundled with scikit-learn) unless ``--data`` names another raynas
source, e.g. Fashion-MNIST from a folder of its IDX files (``--data-path``).

Then Kendall's tau (tau-b, ties allowed) and Spearman's rho (``scipy.stats``) of each proxy
against that accuracy, over the architectures whose proxy is finite. No Ray: the trainable's
code path is called directly, one torch thread.

Usage::

    python benchmarks/proxies.py                 # the table in docs/proxies.md (100 per space)
    python benchmarks/proxies.py --archs 200 --epochs 10 --json
    python benchmarks/proxies.py --smoke --json  # a quick check (CI)
    python benchmarks/proxies.py --data fashion_mnist --data-path DIR --max-samples 3000 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from benchmarks._common import load, machine, table  # noqa: E402

#: Space name -> (experiment file whose space.arch is sampled, family).
SPACES = {
    "mlp": ("experiments/quickstart.yaml", "mlp"),
    "cnn": ("experiments/cnn_digits.yaml", "cnn"),
    "resnet": ("experiments/resnet_digits.yaml", "resnet"),
    "mbconv": ("experiments/mbconv_digits.yaml", "mbconv"),
}
#: The one training recipe every architecture gets.
TRAIN = {"optimizer": "adam", "lr": 3e-3, "batch_size": 64}
BASELINES = ("params", "flops")


def sample_archs(path: str, n: int, seed: int) -> list[dict]:
    """``n`` distinct architectures of the file's ``space.arch`` (fewer if the space is smaller)."""
    import random

    import yaml

    from raynas.spaces import Space

    with open(ROOT / path, encoding="utf-8") as f:
        space = Space({"arch": yaml.safe_load(f)["space"]["arch"]})
    rng, seen, archs = random.Random(seed), set(), []
    for _ in range(50 * n):
        arch = space.sample(rng=rng)["arch"]
        key = json.dumps(arch, sort_keys=True)
        if key not in seen:
            seen.add(key)
            archs.append(arch)
            if len(archs) == n:
                break
    return archs


def train(config: dict, job, data, epochs: int) -> tuple[float, float]:
    """(last epoch's val_acc, seconds): the model trained as the built-in trainable's fast engine does."""
    import torch

    from raynas.trainables.hparams import TrainParams
    from raynas.trainables.module import FastLoop, FastModule, TensorBatches
    from raynas.trainables.trainable import _device_tensors, build_trial_model

    began = time.perf_counter()
    net = build_trial_model(config, job, data)
    hp = TrainParams.from_config(config["train"])
    x_train, y_train, x_val, y_val = _device_tensors(data, torch.device("cpu"))[:4]
    generator = torch.Generator().manual_seed(int(torch.initial_seed() % (2**31)))
    train_batches = TensorBatches(x_train, y_train, hp.batch_size, shuffle=True, generator=generator)
    val_batches = TensorBatches(x_val, y_val, 1024, shuffle=False)
    module = FastModule(net, hp, max_epochs=epochs, steps_per_epoch=len(train_batches))
    loop = FastLoop(module, train_batches, val_batches, torch.device("cpu"), "32")
    val_acc = float("nan")
    for _ in range(epochs):
        loss = loop.train_epoch()
        if not math.isfinite(loss):
            return float("nan"), time.perf_counter() - began
        _, val_acc = loop.validate()
    return float(val_acc), time.perf_counter() - began


def run_space(name: str, archs: int, epochs: int, seed: int, data, log) -> dict:
    from raynas.trainables import proxies as P
    from raynas.trainables.families import count_flops, count_params
    from raynas.trainables.trainable import TrialJob, build_trial_model, score_config

    path, family = SPACES[name]
    job = TrialJob(model=family, max_epochs=epochs, seed=seed)
    rows = []
    for i, arch in enumerate(sample_archs(path, archs, seed)):
        config = {"arch": arch, "train": dict(TRAIN)}
        timings, notes = {}, {}
        values = score_config(config, job, data, P.names(), timings=timings, notes=notes)
        net = build_trial_model(config, job, data)
        values["params"] = count_params(net)
        values["flops"] = count_flops(net, tuple(data.input_shape))
        val_acc, train_s = train(config, job, data, epochs)
        rows.append({"arch": arch, "val_acc": val_acc, "train_s": train_s, "values": values,
                     "proxy_s": timings, "notes": notes})
        if (i + 1) % 10 == 0:
            log(f"  {name}: {i + 1} architectures")
    return {"family": family, "space_file": path, "rows": rows, "correlations": correlations(rows)}


def correlations(rows: list[dict]) -> dict:
    from scipy import stats

    from raynas.trainables.proxies import names

    out = {}
    for metric in (*names(), *BASELINES):
        pairs = [(r["values"][metric], r["val_acc"]) for r in rows
                 if math.isfinite(r["values"][metric]) and math.isfinite(r["val_acc"])]
        entry = {"n": len(pairs), "nan": len(rows) - len(pairs)}
        if len(pairs) >= 3:
            xs, ys = zip(*pairs)
            entry["kendall_tau"] = float(stats.kendalltau(xs, ys).statistic)
            entry["spearman_rho"] = float(stats.spearmanr(xs, ys).statistic)
        if entry["nan"]:
            # A NaN proxy (e.g. naswot's singular kernel: log det = -inf) ranked below every
            # finite one, as a search that screens by the proxy would treat it.
            worst = [(r["values"][metric] if math.isfinite(r["values"][metric]) else -math.inf, r["val_acc"])
                     for r in rows if math.isfinite(r["val_acc"])]
            xs, ys = zip(*worst)
            entry["kendall_tau_nan_worst"] = float(stats.kendalltau(xs, ys).statistic)
            entry["spearman_rho_nan_worst"] = float(stats.spearmanr(xs, ys).statistic)
        times = [r["proxy_s"][metric] for r in rows if metric in r["proxy_s"]]
        if times:
            entry["median_ms"] = 1000 * statistics.median(times)
            entry["mean_ms"] = 1000 * statistics.fmean(times)
        out[metric] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spaces", default="mlp,cnn", help=f"comma-separated, of {', '.join(SPACES)}")
    parser.add_argument("--archs", type=int, default=100, help="architectures per space")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs per architecture")
    parser.add_argument("--data", default="digits", help="a raynas data source: digits (bundled with scikit-learn), "
                        "fashion_mnist or mnist (their IDX files in --data-path)")
    parser.add_argument("--data-path", help="folder of the IDX files (fashion_mnist, mnist)")
    parser.add_argument("--max-samples", type=int, help="a seeded, stratified subsample (train + validation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a quick check: 6 architectures, 1 epoch")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    if args.smoke:
        args.archs, args.epochs = 6, 1
    spaces = args.spaces.split(",")
    unknown = [s for s in spaces if s not in SPACES]
    if unknown:
        parser.error(f"unknown space {unknown[0]!r}; known: {', '.join(SPACES)}")

    import torch

    from raynas.trainables.data import load_dataset

    torch.set_num_threads(1)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else (lambda msg: print(msg, flush=True))
    info = machine()
    data = load_dataset(args.data, path=args.data_path, val_fraction=0.2, seed=0, max_samples=args.max_samples)
    began = time.perf_counter()
    results = {}
    for name in spaces:
        log(f"{name}: {args.archs} architectures, {args.epochs} epochs each")
        results[name] = run_space(name, args.archs, args.epochs, args.seed, data, log)
    report = {"benchmark": "proxies", "machine": info, "load_after": load(), "data": args.data,
              "train_samples": len(data.x_train), "val_samples": len(data.x_val), "input_shape": list(data.input_shape),
              "archs": args.archs, "epochs": args.epochs, "seed": args.seed, "train": TRAIN,
              "wall_s": time.perf_counter() - began, "spaces": results}
    if args.json:
        print(json.dumps(report))
        return 0
    for name, res in results.items():
        accs = [r["val_acc"] for r in res["rows"] if math.isfinite(r["val_acc"])]
        print(f"\n{args.data} {name} ({res['space_file']}, {len(res['rows'])} architectures, {args.epochs} epochs, "
              f"{len(data.x_train)} train / {len(data.x_val)} val samples): "
              f"val_acc min {min(accs):.3f} median {statistics.median(accs):.3f} max {max(accs):.3f}; "
              f"training {statistics.median(r['train_s'] for r in res['rows']):.2f} s per architecture (median)")
        rows = []
        for metric, c in res["correlations"].items():
            rows.append([metric, f"{c.get('kendall_tau', math.nan):+.3f}", f"{c.get('spearman_rho', math.nan):+.3f}",
                         c["n"], c["nan"],
                         f"{c['kendall_tau_nan_worst']:+.3f} / {c['spearman_rho_nan_worst']:+.3f}" if c["nan"] else "-",
                         f"{c['median_ms']:.1f}" if "median_ms" in c else "-"])
        table(["metric", "kendall tau", "spearman rho", "n", "NaN", "tau / rho, NaN as worst", "ms per arch (median)"], rows)
    print(f"\nwall {report['wall_s']:.0f} s; load before {info['load']}, after {report['load_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
