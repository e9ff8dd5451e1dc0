"""The fast engine's epoch loop against the same loop at an earlier git revision: what a change
to ``raynas/trainables/module.py`` costs per epoch, with the orchestration left out.

Both versions of the module are loaded in this one process and train the same seeded MLP on
scikit-learn's digits (one thread, batch 64, Adam), epoch by epoch, alternating old and new so
that drift of a shared machine falls on both; the figure is the ratio of the median epoch
times (new / old). Small MLPs make the loop's own per-batch work as large a part of an epoch
as it gets in raynas's workloads.

Usage::

    python benchmarks/epoch_loop.py --baseline 2578f20        # 200 epochs each
    python benchmarks/epoch_loop.py --baseline HEAD~1 --epochs 20 --json   # a quick check
    python benchmarks/epoch_loop.py --baseline old/module.py               # a file, not a revision
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def load_module_at(revision: str):
    """``raynas.trainables.module`` as it was at ``revision`` (a module of its own); a path to
    a file is read as it is."""
    if Path(revision).is_file():
        source = Path(revision).read_text()
    else:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:raynas/trainables/module.py"],
                                check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="raynas-bench-")) / "module_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("module_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_loop(mod, x, y):
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    hp = {"lr": 0.001, "batch_size": 64, "optimizer": "adam"}
    batches = mod.TensorBatches(x, y, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    module = mod.FastModule(net, hp, max_epochs=10**6, steps_per_epoch=len(batches))
    return mod.FastLoop(module, batches, batches, torch.device("cpu"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision of the loop to compare with (or a module.py)")
    parser.add_argument("--epochs", type=int, default=200, help="epochs timed for each version (default 200)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from sklearn.datasets import load_digits

    import raynas.trainables.module as current

    torch.set_num_threads(1)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    loops = {"old": make_loop(load_module_at(args.baseline), x, y), "new": make_loop(current, x, y)}
    times: dict[str, list[float]] = {"old": [], "new": []}
    for name in loops:  # warm-up: the first epoch imports and allocates
        loops[name].train_epoch()
    for _ in range(args.epochs):
        for name, loop in loops.items():
            began = time.perf_counter()
            loop.train_epoch()
            times[name].append(time.perf_counter() - began)
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    result = {"baseline": args.baseline, "epochs": args.epochs, "batches": len(loops["new"].train_batches),
              "old_ms": old * 1000, "new_ms": new * 1000, "ratio": new / old}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"median epoch ({result['batches']} batches): old {result['old_ms']:.2f} ms, "
              f"new {result['new_ms']:.2f} ms, new/old {result['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
