"""The experiment folder on disk: layout, metadata and the trial journal (no Ray needed).

::

    <storage>/<name>/
      raynas.json        metadata: name, source file, overrides, status, raynas/ray versions
      experiment.yaml    the effective experiment (file content after --set overrides)
      trials.json        the journal: one record per trial (order, status, config, best, error)
      trial_<id>/        Ray Tune's trial folders: result.json (one line per epoch), checkpoints
      tuner.pkl, experiment_state-*.json, searcher-state-*.pkl   Ray Tune's own state (resume)

The journal is written by the driver (see :mod:`raynas.callbacks`) atomically on every trial
state change; ``raynas analyze`` reads it together with each trial's ``result.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any, Iterator

# Keys raynas adds to what trials report and to suggested configs.
STATUS_KEY = "raynas_status"  # "failed" or "rejected": the trial ended without a usable score
ERROR_KEY = "raynas_error"  # why
FAILED_STATUSES = ("failed", "rejected")
ORIGIN_KEY = "_raynas"  # in a suggested config: {searcher, how, parent}; removed before training
EXPLOITED_KEY = "raynas_exploited"  # in a result: the trial folder whose weights (and arch) it took

#: Metrics a budget (``constraints``) limits, in the order a rejected trial reports its excess
#: (``raynas_violation``); fixed by the architecture, they do not improve with training.
BUDGETS = ("params", "flops", "latency_ms")

#: Zero-cost proxies a trial computes before training when the experiment lists them
#: (``proxies:``), each reported as a metric of that name; fixed by the architecture like the
#: budgets. The functions are in :mod:`raynas.trainables.proxies` (which imports torch).
PROXY_NAMES = ("synflow", "naswot", "grad_norm", "snip", "jacob_cov")


def better(a: float, b: float, mode: str) -> bool:
    """Whether ``a`` is strictly better than ``b`` for ``mode`` (``"max"`` or ``"min"``)."""
    return a > b if mode == "max" else a < b


def loss_sign(mode: str) -> float:
    """The factor that turns a value of ``mode`` into one to minimise: -1 for max, 1 for min."""
    return -1.0 if mode == "max" else 1.0


META_FILE = "raynas.json"
SPEC_FILE = "experiment.yaml"
JOURNAL_FILE = "trials.json"
RESULT_FILE = "result.json"
#: The candidates ``search.prescreen`` scored and did not train (proxy, configs, scores).
SCREENED_FILE = "screened.json"
#: The supernet stage of a one-shot or gradient search, inside its experiment folder.
SUPERNET_DIR = "supernet"
#: The search strategies that train a supernet in SUPERNET_DIR first (raynas.search.oneshot).
SUPERNET_STRATEGIES = ("one-shot", "gradient")
RETRAIN_DIR = "retrain"  # raynas retrain's experiment, inside the search's folder
RETRAIN_KEY = "raynas_retrain"  # in a retrain trial's config: {trial, rank, seed} it trains again
DATA_FILE = "data.json"  # the data's shape, classes, preprocessing and split sizes (Dataset.info)
FORMAT_VERSION = 1


class Status(str, Enum):
    """What happened to a trial, in raynas' words."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"  # ran every epoch
    STOPPED = "stopped"  # stopped early by the scheduler
    FAILED = "failed"  # could not train: arch does not fit, bad hyperparameters, non-finite loss
    REJECTED = "rejected"  # over a budget (constraints): measured, never trained
    ERROR = "error"  # raised an exception
    LOST = "lost"  # unfinished at a crash and absent from the state it was resumed from

    @property
    def finished(self) -> bool:
        return self in (Status.COMPLETED, Status.STOPPED, Status.FAILED, Status.REJECTED, Status.ERROR)


class RunStatus(str, Enum):
    """What ``raynas.json`` says of the search as a whole."""

    RUNNING = "running"
    FINISHED = "finished"  # every trial it was to run has ended
    INTERRUPTED = "interrupted"  # stopped before its end (Ctrl-C, a stop rule, a crash): resume it


def run_status(path: str | os.PathLike) -> RunStatus | None:
    """The status ``raynas.json`` records (None: no folder, or no status yet)."""
    value = read_meta(path).get("status")
    return RunStatus(value) if value in RunStatus._value2member_map_ else None


@dataclass
class TrialRecord:
    """One trial as the journal keeps it."""

    trial_id: str
    order: int | None = None
    status: Status = Status.PENDING
    config: dict = field(default_factory=dict)
    dir: str | None = None
    epochs: int = 0
    best: float | None = None
    best_epoch: int | None = None
    last: dict = field(default_factory=dict)
    error: str | None = None
    started: float | None = None
    ended: float | None = None
    origin: dict = field(default_factory=dict)  # which searcher produced it, and how
    checkpoint: str | None = None  # folder of the latest checkpoint (for resume)
    best_checkpoint: str | None = None  # folder of the best epoch's checkpoint (for export)

    def to_json(self) -> dict:
        # Shallow (asdict deep-copies every config): the result is encoded right away.
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["status"] = self.status.value
        return out

    @classmethod
    def from_json(cls, raw: dict) -> "TrialRecord":
        raw = dict(raw)
        raw["status"] = Status(raw.get("status", "pending"))
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in raw.items() if k in known})


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """A file opened for writing that replaces ``path`` only once the block ends without an
    error (a temporary file beside it, then ``os.replace``): readers never see half of it."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def copy_atomic(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copies a file so that ``dest`` is never half written (see :func:`atomic_file`)."""
    with open(src, "rb") as f, atomic_file(dest, "wb") as out:
        shutil.copyfileobj(f, out)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Writes JSON atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=1, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def is_experiment_dir(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(path, META_FILE))


def read_meta(path: str | os.PathLike) -> dict:
    return read_json(os.path.join(path, META_FILE), {}) or {}


def update_meta(path: str | os.PathLike, **changes: Any) -> dict:
    meta = read_meta(path)
    meta.update(changes)
    meta["updated"] = time.time()
    write_json_atomic(os.path.join(path, META_FILE), meta)
    return meta


def read_journal(path: str | os.PathLike) -> dict[str, TrialRecord]:
    """Every trial's record, in start order (trials never started last, in file order)."""
    raw = read_json(os.path.join(path, JOURNAL_FILE), {}) or {}
    records = [TrialRecord.from_json(rec) for rec in raw.get("trials", {}).values()]
    records.sort(key=lambda r: (r.order is None, r.order or 0))
    return {rec.trial_id: rec for rec in records}


def write_journal(path: str | os.PathLike, records: dict[str, TrialRecord]) -> None:
    """Writes the journal atomically, one trial per line (see :class:`JournalWriter`)."""
    JournalWriter(path).write(records)


class JournalWriter:
    """Writes ``trials.json`` atomically, one trial per line, keeping in memory only the text
    of the trials it may still have to change.

    A trial that will not change again (finished, and let go by Tune's controller) is
    *retired*: its line moves into the first part of the file, which each later write copies
    byte for byte from the file it wrote before, so that the driver's memory and its work per
    write do not grow with every trial ever run (a long search keeps thousands of records it
    will never change). The file stays one JSON object; readers sort by start order.

    Args:
        path: The experiment folder.
    """

    def __init__(self, path: str | os.PathLike):
        self.file = os.path.join(path, JOURNAL_FILE)
        self.encoded: dict[str, str] = {}  # each kept trial's line, as last written
        self._retired: tuple[int, int] = (0, 0)  # byte range of the retired trials' lines
        self._written: tuple | None = None  # (inode, size, mtime) of the file as last written

    def write(self, records: dict[str, TrialRecord], changed: set[str] | None = None, retire=()) -> None:
        """Writes every record, and the retired trials' lines from the previous file.

        Args:
            records: The records kept in memory (retired ones are not among them).
            changed: Trial ids whose records changed since the last write (``None``: all);
                the others' text is reused.
            retire: Ids in ``records`` to retire with this write: the caller drops their
                records after it, and later writes copy their lines from the file.
        """
        changed = set(records) if changed is None else changed
        retire = [tid for tid in retire if tid in records]
        retiring = set(retire)
        for trial_id, rec in records.items():
            if trial_id in changed or trial_id not in self.encoded:
                self.encoded[trial_id] = _journal_line(trial_id, rec.to_json())
        for trial_id in set(self.encoded) - set(records):
            del self.encoded[trial_id]
        old = self._retired_text()
        new = ",\n".join(self.encoded.pop(tid) for tid in retire).encode()
        kept = ",\n".join(self.encoded[tid] for tid in records if tid not in retiring).encode()
        head = json.dumps({"version": FORMAT_VERSION, "updated": time.time()})[:-1].encode() + b', "trials": {\n'
        with atomic_file(self.file, "wb") as f:
            f.write(head)
            size = self._copy_retired(old, f)
            if size and new:
                f.write(b",\n")
                size += 2
            f.write(new)
            size += len(new)
            if size and kept:
                f.write(b",\n")
            f.write(kept + b"\n}}\n")
        self._retired = (len(head), len(head) + size)
        self._written = _file_stamp(self.file)

    def _retired_text(self):
        """Where the retired trials' lines are: a byte range of the file as written last, or,
        if the file was changed by someone else since, their text read back from it."""
        start, end = self._retired
        if end == start:
            return b""
        if _file_stamp(self.file) == self._written:
            return (start, end)
        # Rewritten by another hand: keep what it says of the trials this writer let go.
        try:
            raw = (read_json(self.file, {}) or {}).get("trials", {})
        except (OSError, ValueError) as e:
            raw = {}
            logging.getLogger("raynas").warning("could not read %s back (%s)", self.file, e)
        if not raw:
            logging.getLogger("raynas").warning(
                "%s was removed or emptied during the run: the finished trials written to it before are no "
                "longer listed there (their folders keep their results)", self.file)
        return ",\n".join(_journal_line(tid, rec) for tid, rec in raw.items() if tid not in self.encoded).encode()

    def _copy_retired(self, old, out) -> int:
        if isinstance(old, bytes):
            out.write(old)
            return len(old)
        start, end = old
        with open(self.file, "rb") as src:
            src.seek(start)
            left = end - start
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise OSError(f"{self.file} ended {left} bytes early while copying its retired trials")
                out.write(chunk)
                left -= len(chunk)
        return end - start


def _journal_line(trial_id: str, record: dict) -> str:
    """One trial's line in ``trials.json``, without the separator."""
    return f"{json.dumps(trial_id)}: {json.dumps(record, default=_json_default)}"


def _file_stamp(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def read_result_rows(trial_dir: str | os.PathLike) -> list[dict]:
    """Every row of one trial's result log, in the order it was written (lines cut short by a
    crash are skipped); empty when there is no log."""
    rows = []
    try:
        with open(Path(trial_dir) / RESULT_FILE, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
    except FileNotFoundError:
        return []
    return rows


def read_results(trial_dir: str | os.PathLike) -> list[dict]:
    """Per-epoch results of one trial, one per epoch (a resumed trial's repeats: last wins)."""
    rows: dict[Any, dict] = {}
    for n, row in enumerate(read_result_rows(trial_dir)):
        rows[row.get("epoch", row.get("training_iteration", n))] = row
    return [rows[k] for k in sorted(rows, key=lambda k: (k is None, k))]


CHECKPOINT_PREFIX = "checkpoint_"


def checkpoint_dirs(trial_dir: str | os.PathLike) -> list[Path]:
    """A trial's checkpoint folders, oldest first."""
    try:
        found = [p for p in Path(trial_dir).iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)]
    except FileNotFoundError:
        return []
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):] or 0))


