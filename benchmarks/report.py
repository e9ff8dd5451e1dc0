"""The HTML report at scale: a synthetic experiment folder of N trials x E epochs (the
journal and result.json files as raynas writes them), then

* ``load_s``: ``load_results`` of the folder,
* ``importance_s``: Optuna's fANOVA over the scored trials,
* ``data_s``: the report's data from the loaded results (importance given),
* ``page_s``: the page written (plotly.js + data), ``html_mib`` its size, ``data_mib`` the
  size of ``report_data.js`` (what the live page reloads),
* ``refresh_s``: what a live refresh costs the driver (load + data + write, importance
  cached) and the interval it sets (max(5 s, 20 x refresh)),
* ``render_ms``: the page's own measure of its first render in headless Chromium (table,
  curves, best so far, parallel coordinates, importance), and ``chromium_s`` the browser's
  wall time from launch to the dumped DOM.

Examples:
    python benchmarks/report.py                       # 10,000 trials x 20 epochs
    python benchmarks/report.py --trials 200 --epochs 5 --json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from html import unescape as html_unescape
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import load, machine, table

from raynas.experiment import (
    RESULT_FILE,
    Status,
    TrialRecord,
    update_meta,
    write_journal,
)

CHROMIUM = "/usr/bin/chromium"
TARGET_RENDER_MS = 5000  # a 10,000-trial page should draw within a few seconds

SPACE = {
    "arch": {"depth": {"int": [1, 6]}, "width": {"choice": [32, 64, 128, 256, 512]},
             "activation": {"choice": ["relu", "gelu", "silu"]}, "dropout": {"float": [0.0, 0.5]}},
    "train": {"lr": {"float": [1.0e-4, 1.0e-1], "log": True}, "batch_size": {"choice": [32, 64, 128]}, "optimizer": "adam"},
}


def synthetic_experiment(path: Path, trials: int, epochs: int, stopped: float = 0.3, seed: int = 0) -> Path:
    """An experiment folder as an ASHA search of ``trials`` MLPs leaves it (made-up curves):
    a ``stopped`` fraction of the trials stopped at a rung, the others ran every epoch."""
    rng = random.Random(seed)
    path.mkdir(parents=True)
    t0 = 1_700_000_000.0
    update_meta(path, name=path.name, status="finished", created=t0, num_trials=trials)
    (path / "experiment.yaml").write_text(json.dumps({
        "name": path.name, "space": SPACE, "objective": {"metric": "val_acc", "mode": "max"}, "max_epochs": epochs,
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3}}))
    rungs = [r for r in (1, 3, 9, 27) if r < epochs]
    records = {}
    clock = t0
    for i in range(trials):
        config = {"arch": {"depth": rng.randint(1, 6), "width": rng.choice([32, 64, 128, 256, 512]),
                           "activation": rng.choice(["relu", "gelu", "silu"]), "dropout": rng.uniform(0, 0.5)},
                  "train": {"lr": 10 ** rng.uniform(-4, -1), "batch_size": rng.choice([32, 64, 128]), "optimizer": "adam"}}
        ceiling = 0.7 + 0.05 * math.log2(config["arch"]["width"] / 32) / 4 - 0.3 * abs(math.log10(config["train"]["lr"]) + 2.5) / 1.5
        stop = rng.choice(rungs) if rungs and rng.random() < stopped else epochs
        tid = f"{i:05d}{rng.randrange(16 ** 3):03x}"
        d = path / f"trial_{tid}"
        d.mkdir()
        started = clock
        lines = []
        for e in range(1, stop + 1):
            clock += rng.uniform(0.5, 2.0) / 4
            acc = max(0.05, ceiling * (1 - math.exp(-e / 4)) + rng.gauss(0, 0.01))
            lines.append(json.dumps({
                "epoch": e, "val_acc": acc, "val_loss": 2.3 * (1 - acc), "train_loss": 2.2 * (1 - acc), "params": 1000 * config["arch"]["width"],
                "wall_time": clock, "timestamp": int(clock), "training_iteration": e, "trial_id": tid, "time_total_s": clock - started,
                "time_this_iter_s": 0.4, "done": False, "checkpoint_dir_name": None, "should_checkpoint": False, "pid": 1,
                "hostname": "bench", "node_ip": "127.0.0.1", "time_since_restore": clock - started, "iterations_since_restore": e}))
        (d / RESULT_FILE).write_text("\n".join(lines) + "\n")
        last = json.loads(lines[-1])
        best = max(json.loads(line)["val_acc"] for line in lines)
        records[tid] = TrialRecord(
            tid, order=i + 1, status=Status.STOPPED if stop < epochs else Status.COMPLETED, config=config, dir=d.name,
            epochs=stop, best=best, last={"epoch": stop, "val_acc": last["val_acc"]}, started=started, ended=clock,
            origin={"searcher": "random", "how": "sample", "parent": None})
    write_journal(path, records)
    return path


def render_in_chromium(html: Path) -> tuple[float | None, float, dict]:
    """The page's render time (its own measure), Chromium's wall time and the page's time
    per view, network off."""
    prefix = ["unshare", "-n"] if shutil.which("unshare") and subprocess.run(
        ["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0 else []
    began = time.perf_counter()
    proc = subprocess.run(
        [*prefix, CHROMIUM, "--headless", "--no-sandbox", "--enable-unsafe-swiftshader", "--window-size=1400,2300",
         "--virtual-time-budget=120000", "--dump-dom", html.as_uri()],
        capture_output=True, text=True, timeout=600, check=False, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - began
    found = re.search(r'data-render-ms="(\d+)"', proc.stdout)
    steps = re.search(r'data-steps="([^"]*)"', proc.stdout)
    errors = re.search(r'<pre id="errors">([^<]*)</pre>', proc.stdout)
    if errors:
        raise RuntimeError(f"the page reported errors: {errors.group(1)[:2000]}")
    return (float(found.group(1)) if found else None), wall, (json.loads(html_unescape(steps.group(1))) if steps else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--stopped", type=float, default=0.3, help="fraction of trials stopped early at a rung")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium render")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from raynas.analysis import load_results
    from raynas.analysis.importance import importance
    from raynas.analysis.report import (
        DATA_FILE,
        _Watcher,
        data_script,
        render_html,
        report_data,
    )
    from raynas.experiment import write_text_atomic

    work = Path(tempfile.mkdtemp(prefix="raynas-report-bench-"))
    try:
        began = time.perf_counter()
        folder = synthetic_experiment(work / "report_bench", args.trials, args.epochs, args.stopped)
        made = time.perf_counter() - began

        t = time.perf_counter()
        results = load_results(folder)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        imp = importance(results).to_json()
        importance_s = time.perf_counter() - t
        t = time.perf_counter()
        data = report_data(results, importance=imp)
        data_s = time.perf_counter() - t
        t = time.perf_counter()
        html = folder / "report.html"
        write_text_atomic(html, render_html(data))
        write_text_atomic(folder / DATA_FILE, data_script(data))
        page_s = time.perf_counter() - t

        # What the live report's process does on each refresh (importance cached, as during a run).
        watcher = _Watcher(folder, min_interval=5.0)
        watcher._importance = (sum(1 for tr in results.trials if tr.best is not None), imp)
        error = watcher.build(live=True, page=False)
        if error:
            raise RuntimeError(error)
        refresh_s = watcher.last_refresh_s

        render_ms = chromium_s = None
        steps: dict = {}
        if not args.no_browser and Path(CHROMIUM).exists():
            render_ms, chromium_s, steps = render_in_chromium(html)
        report = {
            "benchmark": "report",
            "machine": machine(),
            "trials": args.trials,
            "epochs": args.epochs,
            "points": sum(len(tr.curve) for tr in results.trials),
            "make_folder_s": round(made, 2),
            "load_s": round(load_s, 3),
            "importance_s": round(importance_s, 3),
            "data_s": round(data_s, 3),
            "page_s": round(page_s, 3),
            "build_s": round(load_s + importance_s + data_s + page_s, 3),
            "refresh_s": round(refresh_s, 3),
            "refresh_interval_s": round(max(watcher.min_interval, 20 * refresh_s), 1),
            "html_mib": round(html.stat().st_size / 2**20, 2),
            "data_mib": round((folder / DATA_FILE).stat().st_size / 2**20, 2),
            "render_ms": render_ms,
            "chromium_s": None if chromium_s is None else round(chromium_s, 2),
            "render_steps_ms": steps,
            "target_render_ms": TARGET_RENDER_MS,
            "load_after": load(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report))
        return
    print(f"report of {args.trials:,} trials x up to {args.epochs} epochs ({report['points']:,} points) on {report['machine']['cpus']} CPUs, load {report['machine']['load']}")
    table(["step", "value"], [
        ["load_results", f"{report['load_s']:.2f} s"],
        ["importance (fANOVA)", f"{report['importance_s']:.2f} s"],
        ["report data", f"{report['data_s']:.2f} s"],
        ["page written", f"{report['page_s']:.2f} s"],
        ["build, all of it", f"{report['build_s']:.2f} s"],
        ["live refresh (importance cached)", f"{report['refresh_s']:.2f} s -> every {report['refresh_interval_s']} s"],
        ["report.html", f"{report['html_mib']:.1f} MiB"],
        ["report_data.js", f"{report['data_mib']:.1f} MiB"],
        ["render in Chromium (page's measure)", "-" if render_ms is None else f"{render_ms:.0f} ms (target {TARGET_RENDER_MS} ms)"],
        *[[f"  {name}", f"{ms} ms"] for name, ms in steps.items()],
        ["Chromium launch to DOM", "-" if chromium_s is None else f"{chromium_s:.1f} s"],
    ])


if __name__ == "__main__":
    main()
