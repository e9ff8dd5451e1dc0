"""Start-up: `raynas run` of a one-trial experiment, from the command to the first reported
epoch and to the process's exit.

The command runs as a subprocess (a fresh Python, a fresh local Ray); this script watches the
results folder every 10 ms and notes when

* ``raynas.json`` appears (the file was validated and the data loaded, before Ray starts),
* ``trials.json`` appears (Tune started the first trial),
* the trial's ``result.json`` holds its first epoch (the journal writes it as it arrives),
* the process exits.

``--components`` also times, each in a fresh interpreter, what the path is made of:
``import torch``, ``import pytorch_lightning``, ``import ray.tune`` and ``ray.init()``.

Examples:
    python benchmarks/startup.py                 # 3 repeats, medians
    python benchmarks/startup.py --repeat 1 --components --json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, ray_tmpdir, table  # noqa: E402

TARGET_S = 15.0

EXPERIMENT = {
    "name": "startup",
    "data": {"source": "digits", "val_fraction": 0.2, "seed": 0},
    "model": "mlp",
    "space": {"arch": {"depth": 2, "width": 128}, "train": {"lr": 0.001, "batch_size": 64, "optimizer": "adam"}},
    "search": {"searcher": "random", "num_trials": 1, "max_concurrent": 1, "seed": 0},
    "scheduler": {"name": "fifo"},
    "objective": {"metric": "val_acc", "mode": "max"},
    "max_epochs": 2,
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
}


def _first_epoch(exp_dir: str) -> bool:
    for path in glob.glob(os.path.join(exp_dir, "trial_*", "result.json")):
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if '"epoch"' in line and line.endswith("\n"):
                        return True
        except OSError:
            pass
    return False


def one_run(timeout: float) -> dict:
    import yaml

    with tempfile.TemporaryDirectory(prefix="raynas-startup-") as tmp, ray_tmpdir() as rt:
        path = os.path.join(tmp, "startup.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(EXPERIMENT, f, sort_keys=False)
        storage = os.path.join(tmp, "results")
        exp_dir = os.path.join(storage, "startup")
        env = dict(os.environ, RAY_TMPDIR=rt)
        cmd = [sys.executable, "-m", "raynas", "run", path, "--storage-path", storage, "--quiet"]
        marks: dict[str, float] = {}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        while proc.poll() is None:
            now = time.perf_counter() - t0
            if now > timeout:
                proc.kill()
                raise RuntimeError(f"raynas run took over {timeout} s")
            if "folder_s" not in marks and os.path.exists(os.path.join(exp_dir, "raynas.json")):
                marks["folder_s"] = now
            if "trial_started_s" not in marks and os.path.exists(os.path.join(exp_dir, "trials.json")):
                marks["trial_started_s"] = now
            if "first_epoch_s" not in marks and _first_epoch(exp_dir):
                marks["first_epoch_s"] = now
            time.sleep(0.01)
        marks["exit_s"] = time.perf_counter() - t0
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"raynas run exited {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}")
        if "first_epoch_s" not in marks and _first_epoch(exp_dir):
            marks["first_epoch_s"] = marks["exit_s"]  # finished between two polls
        return marks


COMPONENTS = {
    "import torch": "import torch",
    "import pytorch_lightning": "import pytorch_lightning",
    "import ray.tune": "import ray.tune",
    "ray.init()": "import ray; ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)",
    "import raynas.runner": "import raynas.runner",
}


def component(code: str) -> float:
    with ray_tmpdir() as rt:
        script = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=dict(os.environ, RAY_TMPDIR=rt), timeout=300)
        return float(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("Examples:")[1])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--components", action="store_true", help="also time imports and ray.init in fresh interpreters")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    report: dict = {"benchmark": "startup", "machine": machine(), "target_s": TARGET_S, "runs": []}
    for i in range(args.repeat):
        marks = one_run(args.timeout)
        report["runs"].append(marks)
        if not args.json:
            print(f"  run {i + 1}/{args.repeat}: " + ", ".join(f"{k} {v:.2f}" for k, v in marks.items()),
                  file=sys.stderr, flush=True)
    keys = ("folder_s", "trial_started_s", "first_epoch_s", "exit_s")
    report["median"] = {k: median([r[k] for r in report["runs"] if k in r]) for k in keys}
    if args.components:
        report["components"] = {name: component(code) for name, code in COMPONENTS.items()}
    report["load_after"] = machine()["load"]
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    m = report["machine"]
    print(f"start-up · {m['cpus']} CPUs · load before {m['load']} after {report['load_after']} · "
          f"{args.repeat} run(s), medians; target first epoch <= {TARGET_S:g} s")
    labels = {"folder_s": "results folder written (validated, data loaded)", "trial_started_s": "first trial started",
              "first_epoch_s": "first epoch reported", "exit_s": "process exited"}
    table(["milestone", "s since command"], [[labels[k], f"{report['median'][k]:.2f}"] for k in keys])
    if args.components:
        print()
        table(["component (fresh interpreter)", "s"], [[k, f"{v:.2f}"] for k, v in report["components"].items()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
