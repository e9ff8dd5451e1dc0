"""Shared test helpers: paths, YAML writing, running the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
QUICKSTART = EXPERIMENTS / "quickstart.yaml"
SHARED = ROOT.parent / "shared"


def folder_state(path: Path) -> dict:
    """Every file and folder under ``path`` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(path).rglob("*")}


def write_yaml(path, data) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


#: The console script pip installs beside python: what users type.
CONSOLE_SCRIPT = Path(sys.executable).with_name("raynas")


#: A user family (``model: my_nas:tiny``), as a user writes one beside the experiment file.
USER_FAMILY = "my_nas:tiny"


def write_user_family(folder) -> str:
    """Writes the module of :data:`USER_FAMILY` (an MLP, no supernet) into ``folder``; returns the reference."""
    (Path(folder) / "my_nas.py").write_text(
        "import torch.nn as nn\n\n\n"
        "def tiny(arch, input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(arch.get('hidden', 4)), nn.ReLU(),\n"
        "                         nn.Linear(arch.get('hidden', 4), num_classes))\n"
    )
    return USER_FAMILY


def raynas(*args, env=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    """Runs the installed ``raynas`` console script and captures its output."""
    assert CONSOLE_SCRIPT.exists(), "pip install should put the `raynas` command beside python"
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )


def assert_epochs_follow_lineage(rows: list, max_epochs: int, label=None) -> None:
    """A PBT trial's result log: epochs follow one another, except where the trial took another
    trial's checkpoint (a row marked as exploited), which continues from that trial's epoch.
    No trial starts over or trains an epoch twice in the same lineage."""
    from raynas.experiment import EXPLOITED_KEY

    seen = [(r["epoch"], r.get(EXPLOITED_KEY)) for r in rows]
    assert rows and rows[0]["epoch"] == 1 and rows[-1]["epoch"] == max_epochs, (label, seen)
    for before, row in zip(rows, rows[1:]):
        assert row.get(EXPLOITED_KEY) or row["epoch"] == before["epoch"] + 1, (label, seen)


def run_script(script: str, arg, results, env: dict, timeout: int = 600):
    """Runs ``script`` (Python source) in a fresh interpreter at the repository root with
    ``json.dumps(arg)`` and ``results`` as its arguments; returns the JSON its last line prints."""
    import json

    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(arg), str(results)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
