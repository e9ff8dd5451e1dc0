"""TensorBoard event files of an experiment's trials, written after the fact from the results
folder (no logger runs inside trials; works while the search runs: it writes what is there).

One run folder per trial, named by its start order and id (``0003_1f76d004``), holds:

- every numeric metric of each epoch as a scalar, step = the epoch (a metric the trial
  reported outside any epoch, as a trial rejected over a budget reports its ``params``, at
  step 0);
- ``best/<objective>``: the best value of each objective over the trial's epochs, at the
  epoch it was reached;
- the HParams plugin's session: the trial's flattened config (``arch.depth``, ...) and
  ``status`` as hyperparameters. TensorBoard's HParams table shows them against the scalars
  above: the ``best/`` ones and each metric's last reported value.

The writer is tensorboardX (installed with ``ray[tune]``); viewing needs the ``tensorboard``
package (``pip install 'raynas[tensorboard]'``).

Example:
    >>> from raynas.analysis.tensorboard import write_tensorboard
    >>> logs = write_tensorboard("raynas_results/quickstart")  # doctest: +SKIP
    >>> print(f"tensorboard --logdir {logs.logdir}")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raynas.analysis.results import is_finite, is_number
from raynas.errors import ConfigError

#: Where the command lists the run folders it owns in a logdir (replaced on the next write).
MANIFEST = "raynas_tensorboard.json"
#: The end of the name of every event file raynas writes: files without it are never removed.
SUFFIX = ".raynas"
DEFAULT_LOGDIR = "tensorboard"  # inside the experiment folder

# The HParams plugin's summary tags and plugin name (tensorboard.plugins.hparams.metadata).
_PLUGIN = "hparams"
_SESSION_START_TAG = "_hparams_/session_start_info"
_SESSION_END_TAG = "_hparams_/session_end_info"


@dataclass
class TensorBoardLogs:
    """What :func:`write_tensorboard` wrote.

    Attributes:
        logdir: The folder to give ``tensorboard --logdir``.
        runs: The run folder of each trial, in start order (trials never started last).
        removed: Run folders of an earlier write that no trial has now (removed).
    """

    logdir: Path
    runs: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def write_tensorboard(exp_dir: str | os.PathLike, logdir: str | os.PathLike | None = None) -> TensorBoardLogs:
    """Writes TensorBoard event files of every trial of an experiment folder.

    Rewriting replaces the run folders an earlier call wrote to the same ``logdir`` (listed
    in its :data:`MANIFEST`) and leaves every other file there alone. Trials lost to a crash
    (superseded on resume) are left out, as ``raynas analyze`` does.

    Args:
        exp_dir: An experiment folder written by ``raynas run``.
        logdir: Where to write (default: ``<exp_dir>/tensorboard``).

    Returns:
        The logdir and its run folders.

    Raises:
        ConfigError: ``exp_dir`` is not an experiment folder (path ``""``); ``logdir`` cannot
            be written, or holds a folder of a trial's name that an earlier call did not
            write (path ``"logdir"``).
    """
    from raynas.analysis.results import load_results
    from raynas.experiment import Status

    results = load_results(exp_dir)
    trials = [t for t in results.trials if t.status is not Status.LOST]
    out = Path(logdir).expanduser().resolve() if logdir is not None else results.dir / DEFAULT_LOGDIR
    _check_writable(out)
    try:
        from tensorboardX.event_file_writer import EventsWriter
    except ImportError as err:
        raise ConfigError(
            "tensorboard",
            f"writing TensorBoard files needs tensorboardX, which ray[tune] installs ({err}); "
            "install it with: pip install tensorboardX",
        ) from None

    width = max(4, len(str(max((t.order or 0 for t in trials), default=0))))
    names = [run_name(t.order, t.trial_id, width) for t in trials]
    owned = _read_manifest(out)
    for name in names:
        if (out / name).exists() and name not in owned:
            raise ConfigError(
                "logdir",
                f"{out / name} exists and was not written by raynas tensorboard; "
                "give another --logdir, or remove that folder",
            )
    # Claim every folder this call may touch before touching it, so a crash half-way leaves
    # a manifest that still names them all for the next call to replace.
    _write_manifest(out, results.dir, sorted(set(owned) | set(names)))
    for name in owned:
        _remove_own_files(out / name)
    stamp = f".{time.time_ns()}{SUFFIX}"  # later writes sort later: a live TensorBoard reads the newest file
    for trial, name in zip(trials, names):
        (out / name).mkdir(exist_ok=True)
        # The plain, synchronous writer: SummaryWriter starts two threads per run folder.
        writer = EventsWriter(str(out / name / "events"), stamp)
        try:
            _write_trial(writer, results, trial)
        finally:
            writer.close()
    _write_manifest(out, results.dir, names)
    removed = sorted(set(owned) - set(names))
    return TensorBoardLogs(out, names, removed)


def run_name(order: int | None, trial_id: str, width: int = 4) -> str:
    """A trial's run folder: ``0003_1f76d004`` (start order, then id), so TensorBoard lists
    runs in start order; ``unstarted_<id>`` for a trial that never started."""
    safe = re.sub(r"[^\w.-]", "_", trial_id)
    return f"{order:0{width}d}_{safe}" if order is not None else f"unstarted_{safe}"


def _write_trial(writer, results, trial) -> None:
    from raynas.experiment import read_results
    from raynas.spaces import flatten

    # Tune's timestamp of each epoch: TensorBoard's wall-time axis shows when it was reported.
    stamps = {}
    if trial.dir:
        stamps = {row.get("epoch"): row.get("timestamp") for row in read_results(results.dir / trial.dir)}
    in_epochs: set[str] = set()
    for row in trial.curve:
        scalars = {k: v for k, v in row.items() if k != "epoch" and is_number(v)}
        _add_scalars(writer, scalars, int(row["epoch"]), stamps.get(row["epoch"]))
        in_epochs.update(scalars)
    _add_scalars(writer, {k: v for k, v in trial.metrics.items() if k != "epoch" and k not in in_epochs and is_number(v)}, 0)
    for metric, mode in zip(results.metrics, results.modes):
        best = _best(trial.curve, metric, mode)
        if best is not None:
            _add_scalars(writer, {f"best/{metric}": best[0]}, best[1], stamps.get(best[1]))

    hparams = dict(flatten(trial.config))
    hparams["status" if "status" not in hparams else "trial.status"] = trial.status.value
    _add(writer, _session_start(hparams))
    if trial.status.finished:
        _add(writer, _session_end(trial.status))


def _add_scalars(writer, scalars: dict[str, float], step: int, wall: Any = None) -> None:
    """One event of scalars (32-bit, as TensorBoard keeps them)."""
    from tensorboardX.proto.summary_pb2 import Summary

    if scalars:
        _add(writer, Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]), step, wall)


def _add(writer, summary, step: int = 0, wall: Any = None) -> None:
    from tensorboardX.proto.event_pb2 import Event

    writer.write_event(Event(summary=summary, step=step, wall_time=float(wall) if is_number(wall) else time.time()))


def _best(curve: list[dict], metric: str, mode: str) -> tuple[float, int] | None:
    """(value, epoch) of the best finite value of ``metric`` (the earliest on a tie)."""
    from raynas.experiment import loss_sign

    values = [(row[metric], int(row["epoch"])) for row in curve if is_finite(row.get(metric))]
    return min(values, key=lambda ve: loss_sign(mode) * ve[0]) if values else None


def _session_start(hparams: dict[str, Any]):
    from tensorboardX.proto.plugin_hparams_pb2 import (
        HParamsPluginData,
        SessionStartInfo,
    )

    info = SessionStartInfo()
    for key, value in hparams.items():
        if value is None:
            continue  # an unset key: the table shows an empty cell
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
        elif is_number(value):
            info.hparams[key].number_value = float(value)
        elif isinstance(value, str):
            info.hparams[key].string_value = value
        else:  # an empty list or dict that flatten keeps: its JSON text
            info.hparams[key].string_value = json.dumps(value)
    return _summary(_SESSION_START_TAG, HParamsPluginData(session_start_info=info, version=0))


def _session_end(status):
    from tensorboardX.proto.api_pb2 import Status as SessionStatus
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo

    from raynas.experiment import Status

    # Stopped early by the scheduler is a normal end, as in Tune.
    ok = status in (Status.COMPLETED, Status.STOPPED)
    info = SessionEndInfo(status=SessionStatus.Value("STATUS_SUCCESS" if ok else "STATUS_FAILURE"))
    return _summary(_SESSION_END_TAG, HParamsPluginData(session_end_info=info, version=0))


def _summary(tag: str, data):
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=_PLUGIN, content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def _check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError("logdir", f"{out} is a file, not a folder; give a folder for the event files")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".{MANIFEST}.probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError("logdir", f"cannot write to {out}: {err.strerror or err}; give a folder you can write to") from None


def _read_manifest(out: Path) -> list[str]:
    try:
        raw = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise ConfigError("logdir", f"cannot read {out / MANIFEST} ({err}); remove it, or give another --logdir") from None
    runs = raw.get("runs") if isinstance(raw, dict) else None
    # Only plain names of folders directly in the logdir: never a path out of it.
    return [r for r in runs or [] if isinstance(r, str) and r and os.sep not in r and r not in (".", "..")]


def _write_manifest(out: Path, exp_dir: Path, runs: list[str]) -> None:
    from raynas.experiment import write_json_atomic

    write_json_atomic(out / MANIFEST, {"written_by": "raynas tensorboard", "experiment": str(exp_dir), "runs": runs})


def _remove_own_files(run_dir: Path) -> None:
    """Removes the event files raynas wrote in a run folder, and the folder once empty."""
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        if path.is_file() and "tfevents" in path.name and path.name.endswith(SUFFIX):
            path.unlink()
    try:
        run_dir.rmdir()
    except OSError:
        pass  # it holds files of someone else: they stay
