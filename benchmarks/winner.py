"""The winner of the cnn and mbconv examples, compressed: before/after tables for docs/winner.md.

For each example (experiments/cnn_digits.yaml, experiments/mbconv_digits.yaml) it runs, through
the `raynas` console script as a user would:

1. the search, as the file says (a fifth of digits held out as the test split);
2. ``raynas retrain DIR --top K --seeds S``: the K best from scratch, S seeds each;
3. ``raynas compress DIR/retrain --rank 1`` with each recipe below, and reads the before/after
   table each one stores: parameters, non-zero parameters, size (state dict bytes), CPU latency
   per sample (one thread, median of 50 runs: as trials measure it) and test accuracy.

Recipes: structured (channel) pruning of half the channels + 3 fine-tuning epochs + int8;
magnitude pruning of half the weights + int8, without and with fine-tuning; int8 alone; fp16
alone.

Examples:
    python benchmarks/winner.py                   # both examples, as the files say (~15 min on 2 cores)
    python benchmarks/winner.py --quick --json    # 2 trials x 2 epochs each, for the smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, load, machine, ray_tmpdir, table

RECIPES = {
    "channels 50% + ft 3 + int8": ["--prune", "0.5", "--structured", "--finetune-epochs", "3", "--quantize", "int8"],
    "magnitude 50% + int8": ["--prune", "0.5", "--quantize", "int8"],
    "magnitude 50% + ft 3 + int8": ["--prune", "0.5", "--finetune-epochs", "3", "--quantize", "int8"],
    "int8": ["--quantize", "int8"],
    "fp16": ["--quantize", "fp16"],
}
EXAMPLES = ("cnn_digits", "mbconv_digits")
CONSOLE = Path(sys.executable).with_name("raynas")


def raynas(*args, env: dict) -> str:
    proc = subprocess.run([str(CONSOLE), *map(str, args)], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"raynas {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stderr[-4000:]}")
    return proc.stdout


def example(name: str, storage: Path, quick: bool, top: int, seeds: int, recipes: list[str], env: dict) -> dict:
    extra = ["--set", "search.num_trials=2", "--set", "max_epochs=2"] if quick else []
    began = time.perf_counter()
    raynas("run", ROOT / "experiments" / f"{name}.yaml", "--storage-path", storage, "--quiet", "--no-report", *extra, env=env)
    search_s = time.perf_counter() - began
    folder = storage / name
    began = time.perf_counter()
    raynas("retrain", folder, "--top", str(top), "--seeds", str(seeds), "--quiet", "--no-report", env=env)
    retrain_s = time.perf_counter() - began
    board = json.loads(raynas("analyze", folder, "--format", "json", env=env))
    retrained = [t for t in board if "test" in t]
    rows = []
    for recipe in recipes:
        args = RECIPES[recipe]
        out = storage / f"{name}-{len(rows)}.pt"
        raynas("compress", folder / "retrain", "--rank", "1", *args, "-o", out, env=env)
        stored = json.loads(Path(f"{out}.json").read_text())
        rows.append({"recipe": recipe, "before": stored["before"], "after": stored["after"], "notes": stored["notes"],
                     "steps": stored["steps"]})
    return {"example": name, "search_s": round(search_s, 1), "retrain_s": round(retrain_s, 1),
            "retrained": [{"trial": t["trial_id"], "search": t["best"], **t["test"]} for t in retrained],
            "compressed": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials x 2 epochs per search, top 1 x 2 seeds")
    parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
    parser.add_argument("--examples", nargs="+", default=list(EXAMPLES), choices=EXAMPLES)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = parser.parse_args()
    top, seeds = (1, 2) if args.quick else (3, 3)
    results = []
    with ray_tmpdir() as ray_tmp, tempfile.TemporaryDirectory(prefix="raynas-winner-") as storage:
        env = {**os.environ, "RAY_TMPDIR": ray_tmp}
        for name in args.examples:
            results.append(example(name, Path(storage), args.quick, top, seeds, args.recipes, env))
    report = {"benchmark": "winner", "machine": machine(), "quick": args.quick, "top": top, "seeds": seeds,
              "examples": results, "load_after": load()}
    if args.json:
        print(json.dumps(report))
        return
    print(f"machine: {report['machine']}")
    for res in results:
        print(f"\n{res['example']}: search {res['search_s']} s, retrain of the top {top} x {seeds} seeds {res['retrain_s']} s")
        table(["search trial", "search val_acc", "test_acc mean", "sd", "seeds"],
              [[r["trial"], f"{r['search']:.4f}", f"{r['mean']:.4f}", f"{r['sd']:.4f}" if r["sd"] is not None else "-",
                r["n"]] for r in res["retrained"]])
        print()
        rows = []
        for c in res["compressed"]:
            b, a = c["before"], c["after"]
            rows.append([c["recipe"], f"{b['params']:,} -> {a['params']:,}", f"{b['nonzero']:,} -> {a['nonzero']:,}",
                         f"{b['size_bytes'] / 1024:.1f} -> {a['size_bytes'] / 1024:.1f}",
                         f"{b['latency_ms']:.3f} -> {a['latency_ms']:.3f}", f"{b['accuracy']:.4f} -> {a['accuracy']:.4f}"])
        table(["recipe (best retrained model)", "params", "non-zero", "size KiB", "latency ms", "test acc"], rows)
        for c in res["compressed"]:
            for note in c["notes"]:
                print(f"  {c['recipe']}: {note}")


if __name__ == "__main__":
    main()
