"""Orchestration overhead: raynas and plain Ray Tune + Lightning against the compute limit.

A fixed workload (seeded architectures on scikit-learn's digits, the same epochs for every
system, no early stopping, 2 trials in parallel) is trained by

* ``limit``: a plain PyTorch loop, one architecture after another in one process with one
  thread; its wall time divided by the parallelism is the compute limit (all ratios are to it);
* ``limit-parallel``: the same loop in two processes at once, each training half of the
  architectures, timed from the first one's start of training to the last one's end: the
  limit as this (shared) machine really delivers it with two trials side by side;
* ``limit-cold``: ``limit-parallel`` in two fresh processes, timed from their spawn to the
  last one's end, so it includes what any system that trains in new processes pays in each of
  them: Python's start, ``import torch`` and the first optimizer step (which imports
  ``torch._dynamo``); the data comes ready from a ``.npz`` file (no scikit-learn import);
* ``raynas``: ``raynas.run`` on an experiment file (results folder, journal, checkpoints, trial
  metrics exported through Ray's metrics API);
* ``raynas-no-metrics``: the same without the metrics export (``--no-metrics``), its cost;
* ``tune-reuse`` and ``tune-default``: Ray Tune with a Lightning ``Trainer`` inside a
  function trainable that reports through Ray's ``TuneReportCheckpointCallback``, as Ray's
  docs show it, with ``reuse_actors=True`` and with Tune's default (no reuse).

Each system runs in its own subprocess with its own Ray (started with the same settings);
the figure is the wall time from after ``ray.init`` to the end of the run (Ray's start is
printed apart: it is the start-up benchmark's business). Ratios are to the limit of the same
repeat, because the machines are shared and absolute times drift.

Workloads:
    mlp: 16 MLPs (depth 1-3, width 64-256), 5 epochs, batch 64, Adam (target raynas <= 1.5x).
    cnn: 8 wide CNNs (two 3x3 conv stages of 128-192 channels on the 8x8 images), 5 epochs
         that take >= 1 s each on one core, batch 64, Adam (target raynas <= 1.1x).

Examples:
    python benchmarks/overhead.py                       # both workloads, all systems
    python benchmarks/overhead.py --workload mlp --systems limit,raynas --repeat 3
    python benchmarks/overhead.py --workload mlp --trials 2 --epochs 1 --json   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, ray_tmpdir, run_child, table  # noqa: E402

SYSTEMS = ("limit", "limit-parallel", "limit-cold", "raynas", "raynas-no-metrics", "tune-reuse", "tune-default")
PARALLEL = 2
TARGETS = {"mlp": 1.5, "cnn": 1.1}


# -- the workloads ---------------------------------------------------------------------------

def architectures(workload: str, trials: int, seed: int = 0) -> tuple[str, list[dict]]:
    """(family, seeded architecture dicts)."""
    import random

    rng = random.Random(seed)
    archs = []
    for _ in range(trials):
        if workload == "mlp":
            archs.append({"depth": rng.randint(1, 3), "width": rng.choice([64, 128, 256]),
                          "activation": rng.choice(["relu", "gelu"])})
        else:
            # 8x8 inputs, no downsampling until the head: wide convs cost ~1-2 s an epoch on one core.
            c1, c2 = rng.choice([128, 160]), rng.choice([160, 192])
            archs.append({"stages": [{"channels": c1, "kernel": 3}, {"channels": c2, "kernel": 3}],
                          "activation": "relu"})
    return ("mlp" if workload == "mlp" else "cnn"), archs


def default_size(workload: str) -> tuple[int, int]:
    """(trials, epochs) of a workload."""
    return (16, 5) if workload == "mlp" else (8, 5)


def _data():
    from raynas.trainables.data import load_dataset

    return load_dataset("digits", val_fraction=0.2, seed=0)


BATCH, LR = 64, 1e-3


# -- limit: a plain PyTorch loop -------------------------------------------------------------

def run_limit_parallel(workload: str, trials: int, epochs: int, data_file: str | None = None) -> dict:
    """Two plain loops at once, each training every other architecture.

    With ``data_file`` (``limit-cold``) the two processes start cold: they import torch and
    take their first optimizer step inside the timed span, which runs from their spawn.
    """
    import subprocess

    if data_file:
        import numpy as np

        data = _data()
        np.savez(data_file, x_train=data.x_train, y_train=data.y_train, x_val=data.x_val, y_val=data.y_val,
                 input_shape=np.asarray(data.input_shape), num_classes=np.asarray(data.num_classes))
    spawned = time.time()
    procs = [
        subprocess.Popen([sys.executable, __file__, "--child", "limit", "--workload", workload, "--trials", str(trials),
                          "--epochs", str(epochs), "--shard", f"{k}/{PARALLEL}",
                          *(["--data-file", data_file] if data_file else [])], stdout=subprocess.PIPE, text=True)
        for k in range(PARALLEL)
    ]
    outs = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"a limit shard exited {proc.returncode}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    start = spawned if data_file else min(o["start"] for o in outs)
    return {"wall_s": max(o["end"] for o in outs) - start, "epochs": sum(o["epochs"] for o in outs)}


def run_limit(family: str, archs: list[dict], epochs: int, shard: str | None = None,
              data_file: str | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    from raynas.trainables.families import build_model

    torch.set_num_threads(1)
    if shard:
        k, n = map(int, shard.split("/"))
        archs = archs[k::n]
    if data_file:  # limit-cold: the arrays as the parent wrote them
        import numpy as np

        arrays = np.load(data_file)
        xt, yt = torch.as_tensor(arrays["x_train"]), torch.as_tensor(arrays["y_train"])
        xv, yv = torch.as_tensor(arrays["x_val"]), torch.as_tensor(arrays["y_val"])
        input_shape, num_classes = tuple(int(d) for d in arrays["input_shape"]), int(arrays["num_classes"])
    else:
        data = _data()
        xt, yt = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
        xv, yv = torch.as_tensor(data.x_val), torch.as_tensor(data.y_val)
        input_shape, num_classes = tuple(data.input_shape), int(data.num_classes)
        # Warm-up: the first optimizer step imports torch._dynamo (seconds); the limit is compute.
        warm = build_model(family, archs[0], input_shape, num_classes)
        warm_opt = torch.optim.Adam(warm.parameters(), lr=LR)
        F.cross_entropy(warm(xt[:BATCH]), yt[:BATCH]).backward()
        warm_opt.step()
    start = time.time()
    began = time.perf_counter()
    epoch_times = []
    for i, arch in enumerate(archs):
        torch.manual_seed(i)
        net = build_model(family, arch, input_shape, num_classes)
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        for _ in range(epochs):
            t0 = time.perf_counter()
            net.train()
            order = torch.randperm(len(xt))
            for j in range(0, len(xt), BATCH):
                idx = order[j:j + BATCH]
                loss = F.cross_entropy(net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                logits = net(xv)
                float(F.cross_entropy(logits, yv)), float((logits.argmax(1) == yv).float().mean())
            epoch_times.append(time.perf_counter() - t0)
    total = time.perf_counter() - began
    return {"wall_s": total / PARALLEL, "sequential_s": total, "epochs": len(epoch_times),
            "start": start, "end": time.time(),
            "epoch_s": sum(epoch_times) / len(epoch_times)}


# -- raynas ----------------------------------------------------------------------------------

def experiment(family: str, archs: list[dict], epochs: int, name: str) -> dict:
    """The experiment file: exactly these architectures (a grid over them), FIFO, no stopping."""
    return {
        "name": name,
        "data": {"source": "digits", "val_fraction": 0.2, "seed": 0},
        "model": family,
        "space": {"arch": {"choice": archs}, "train": {"lr": LR, "batch_size": BATCH, "optimizer": "adam"}},
        "search": {"searcher": "grid", "num_trials": len(archs), "max_concurrent": PARALLEL, "seed": 0},
        "scheduler": {"name": "fifo"},
        "objective": {"metric": "val_acc", "mode": "max"},
        "max_epochs": epochs,
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    }


def run_raynas(family: str, archs: list[dict], epochs: int, tmp: str, profile: str | None = None,
               metrics: bool = True) -> dict:
    import yaml

    import raynas
    from raynas.runner import RunOptions, _init_ray

    path = os.path.join(tmp, "overhead.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(experiment(family, archs, epochs, "overhead"), f, sort_keys=False)
    spec = raynas.load_spec(path)
    opts = RunOptions(storage_path=os.path.join(tmp, "results"), progress=False, num_cpus=PARALLEL, metrics=metrics)
    t0 = time.perf_counter()
    _init_ray(spec, opts)  # the same Ray raynas would start; run() then joins it
    init_s = time.perf_counter() - t0
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    t0 = time.perf_counter()
    folder = raynas.run(spec, opts)
    wall = time.perf_counter() - t0
    if profiler is not None:
        profiler.stop()
        with open(profile, "w") as f:
            f.write(profiler.output_text(unicode=False, color=False, show_all=False))
    results = raynas.load_results(folder)
    return {"wall_s": wall, "ray_init_s": init_s, "epochs": sum(t.epochs for t in results.trials),
            "trials": len(results.trials)}


# -- plain Ray Tune + Lightning, as in Ray's docs ---------------------------------------------

def tune_trainable(config: dict, data=None, epochs: int = 5, family: str = "mlp") -> None:
    """A function trainable in the style of Ray's "Using PyTorch Lightning with Tune" guide."""
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F
    from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback
    from torch.utils.data import DataLoader, TensorDataset

    from raynas.trainables.families import build_model

    class LitClassifier(pl.LightningModule):
        def __init__(self, net, lr):
            super().__init__()
            self.net, self.lr = net, lr

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            self.log("val_loss", F.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    net = build_model(family, config["arch"], tuple(data.input_shape), int(data.num_classes))
    model = LitClassifier(net, config["lr"])
    train = DataLoader(TensorDataset(torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)),
                       batch_size=config["batch_size"], shuffle=True)
    val = DataLoader(TensorDataset(torch.as_tensor(data.x_val), torch.as_tensor(data.y_val)),
                     batch_size=config["batch_size"])
    trainer = pl.Trainer(
        max_epochs=epochs,
        enable_progress_bar=False,
        callbacks=[TuneReportCheckpointCallback({"val_loss": "val_loss", "val_acc": "val_acc"},
                                                on="validation_end")],
    )
    trainer.fit(model, train, val)


def run_tune(family: str, archs: list[dict], epochs: int, tmp: str, reuse: bool) -> dict:
    import ray
    from ray import tune

    t0 = time.perf_counter()
    ray.init(num_cpus=PARALLEL, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    init_s = time.perf_counter() - t0
    import logging

    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    t0 = time.perf_counter()
    data = _data()
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, data=data, epochs=epochs, family=family), {"cpu": 1}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"arch": tune.grid_search(archs), "lr": LR, "batch_size": BATCH},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", max_concurrent_trials=PARALLEL,
                                    reuse_actors=reuse),
        run_config=tune.RunConfig(name="tune", storage_path=os.path.join(tmp, "results"), verbose=0),
    )
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    epochs_done = sum(int((r.metrics or {}).get("training_iteration", 0)) for r in grid)
    errors = sum(1 for r in grid if r.error)
    ray.shutdown()
    return {"wall_s": wall, "ray_init_s": init_s, "epochs": epochs_done, "trials": len(grid), "errors": errors}


# -- orchestration -----------------------------------------------------------------------------

def child(args) -> None:
    family, archs = architectures(args.workload, args.trials)
    with tempfile.TemporaryDirectory(prefix="raynas-overhead-") as tmp:
        if args.child == "limit":
            out = run_limit(family, archs, args.epochs, args.shard, args.data_file)
        elif args.child == "limit-parallel":
            out = run_limit_parallel(args.workload, args.trials, args.epochs)
        elif args.child == "limit-cold":
            out = run_limit_parallel(args.workload, args.trials, args.epochs, os.path.join(tmp, "data.npz"))
        elif args.child in ("raynas", "raynas-no-metrics"):
            out = run_raynas(family, archs, args.epochs, tmp, args.profile, metrics=args.child == "raynas")
        else:
            out = run_tune(family, archs, args.epochs, tmp, reuse=args.child == "tune-reuse")
    print(json.dumps(out))


def measure(workload: str, systems: list[str], repeat: int, trials: int, epochs: int,
            quiet: bool, profile_dir: str | None) -> dict:
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for r in range(repeat):
        for system in systems:
            args = [__file__, "--child", system, "--workload", workload, "--trials", str(trials), "--epochs", str(epochs)]
            if profile_dir and system == "raynas":
                args += ["--profile", os.path.join(profile_dir, f"raynas-{workload}-{r}.txt")]
            with ray_tmpdir() as rt:
                out = run_child(args, env={"RAY_TMPDIR": rt})
            runs[system].append(out)
            if not quiet:
                print(f"  [{workload} {r + 1}/{repeat}] {system}: {out['wall_s']:.2f} s", file=sys.stderr, flush=True)
    result = {"trials": trials, "epochs_per_trial": epochs, "epochs_total": trials * epochs,
              "parallel": PARALLEL, "target_ratio": TARGETS[workload], "systems": {}}
    for system, outs in runs.items():
        walls = [o["wall_s"] for o in outs]
        entry = {"wall_s": walls, "median_s": median(walls), "epochs": [o.get("epochs") for o in outs]}
        if "ray_init_s" in outs[0]:
            entry["ray_init_s"] = median([o["ray_init_s"] for o in outs])
        if "limit" in runs:
            # A ratio per repeat, against the limit measured in the same repeat.
            entry["ratio"] = [w / lim["wall_s"] for w, lim in zip(walls, runs["limit"])]
            entry["median_ratio"] = median(entry["ratio"])
        if system == "limit":
            entry["epoch_s"] = median([o["epoch_s"] for o in outs])
        if "limit-parallel" in runs and system != "limit":
            entry["ratio_to_parallel"] = [w / lp["wall_s"] for w, lp in zip(walls, runs["limit-parallel"])]
            entry["median_ratio_to_parallel"] = median(entry["ratio_to_parallel"])
        if "limit-cold" in runs and system not in ("limit", "limit-parallel"):
            entry["ratio_to_cold"] = [w / lc["wall_s"] for w, lc in zip(walls, runs["limit-cold"])]
            entry["median_ratio_to_cold"] = median(entry["ratio_to_cold"])
        result["systems"][system] = entry
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("Examples:")[1])
    p.add_argument("--workload", choices=("mlp", "cnn", "both"), default="both")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {', '.join(SYSTEMS)}")
    p.add_argument("--repeat", type=int, default=1, help="repeats of every system (medians are reported)")
    p.add_argument("--trials", type=int, help="architectures (default: 16 mlp, 8 cnn)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--profile-dir", help="write a pyinstrument profile of each raynas driver run here")
    p.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--profile", help=argparse.SUPPRESS)
    p.add_argument("--shard", help=argparse.SUPPRESS)
    p.add_argument("--data-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.workload = "mlp" if args.workload == "both" else args.workload
        d_trials, d_epochs = default_size(args.workload)
        args.trials, args.epochs = args.trials or d_trials, args.epochs or d_epochs
        child(args)
        return 0
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        p.error(f"--systems: unknown {unknown}; choose from {', '.join(SYSTEMS)}")
    systems = [s for s in SYSTEMS if s in systems]  # the limit first
    if args.profile_dir:
        os.makedirs(args.profile_dir, exist_ok=True)
    report = {"benchmark": "overhead", "machine": machine(), "workloads": {}}
    for workload in (("mlp", "cnn") if args.workload == "both" else (args.workload,)):
        d_trials, d_epochs = default_size(workload)
        report["workloads"][workload] = measure(workload, systems, args.repeat, args.trials or d_trials,
                                                args.epochs or d_epochs, args.json, args.profile_dir)
    report["load_after"] = machine()["load"]
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    m = report["machine"]
    print(f"overhead · {m['cpus']} CPUs · load before {m['load']} after {report['load_after']} · "
          f"torch {m.get('torch')} ray {m.get('ray')} lightning {m.get('pytorch_lightning')}")
    for workload, res in report["workloads"].items():
        lim = res["systems"].get("limit", {})
        extra = f", {lim['epoch_s']:.3f} s/epoch in the plain loop" if lim else ""
        print(f"\n{workload}: {res['trials']} trials x {res['epochs_per_trial']} epochs = {res['epochs_total']} epochs, "
              f"{PARALLEL} in parallel{extra}; raynas target <= {res['target_ratio']}x")
        rows = []
        for system, e in res["systems"].items():
            rows.append([system, f"{e['median_s']:.2f}", f"{e['median_ratio']:.2f}x" if "median_ratio" in e else "-",
                         f"{e['median_ratio_to_parallel']:.2f}x" if "median_ratio_to_parallel" in e else "-",
                         f"{e['median_ratio_to_cold']:.2f}x" if "median_ratio_to_cold" in e else "-",
                         f"{e['ray_init_s']:.1f}" if "ray_init_s" in e else "-", e["epochs"][0]])
        table(["system", "wall s", "ratio to limit", "to limit-parallel", "to limit-cold", "ray.init s (apart)",
               "epochs"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
