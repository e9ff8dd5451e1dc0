"""A lookup trainable: any tabular NAS benchmark (architecture key -> metrics) as Ray Tune trials.

The table is a JSON or CSV file. Each architecture has a key, a string built from the sampled
config with a template such as ``"{arch.op1}|{arch.op2}"`` (placeholders are dotted key paths
of the config; values are written with Python's ``str``). Its metrics are numbers (reported
unchanged every epoch, e.g. a parameter count) or per-epoch curves (reported one epoch at a
time). A ``time`` metric, if present, holds the simulated seconds of each epoch (or of the
whole training, for an architecture without curves); the trial sleeps it divided by
``speedup``.

Accepted layouts::

    # JSON, a mapping from key to metrics (lists are per-epoch curves)
    {"conv3|skip": {"val_acc": [61.2, 70.4, 74.9], "time": [12.1, 12.0, 12.2], "params": 81234}}
    # JSON, a list of rows; CSV, one row per architecture ...
    key,val_acc,params,time
    conv3|skip,74.9,81234,36.3
    # ... or one row per architecture and epoch (an ``epoch`` column, 1..n)
    key,epoch,val_acc,time
    conv3|skip,1,61.2,12.1

Example (experiment file)::

    trainable:
      function: raynas.bench:lookup
      params: {table: tiny_nas.csv, key: "{arch.op1}|{arch.op2}", speedup: 100}
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from typing import Any, Mapping

from raynas.errors import ConfigError, describe

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


class TableError(ValueError):
    """A table breaks a rule (the message names the file, the row or key, and the value)."""


class LookupTable:
    """A loaded table: ``entries[key] = {"curves": {metric: [...]}, "static": {...}, "time": [...] or float or None}``.

    Args:
        path: The ``.json`` or ``.csv`` file.
        key_column: Column (CSV, JSON rows) holding the architecture key.
        time: Metric holding simulated seconds (per epoch, or in all for an entry without curves).

    Raises:
        TableError: The file cannot be read or breaks a rule.
    """

    def __init__(self, path: str | os.PathLike, key_column: str = "key", time: str = "time"):
        self.path = os.fspath(path)
        self.key_column, self.time_name = key_column, time
        if not os.path.isfile(self.path):
            raise TableError(f"no such table file {os.path.abspath(self.path)}")
        ext = os.path.splitext(self.path)[1].lower()
        if ext == ".json":
            rows = self._read_json()
        elif ext == ".csv":
            rows = self._read_csv()
        else:
            raise TableError(f"{self.path}: a table is a .json or .csv file, got {ext or 'no extension'!r}")
        self.entries = self._build(rows)
        if not self.entries:
            raise TableError(f"{self.path}: the table has no rows")
        self.metrics = sorted({m for e in self.entries.values() for m in (*e["curves"], *e["static"])})

    # -- reading
    def _read_json(self) -> list[tuple[str, dict]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as err:
            raise TableError(f"{self.path}: not valid JSON: {err}") from None
        if isinstance(data, dict):
            out = []
            for key, metrics in data.items():
                if not isinstance(metrics, dict):
                    raise TableError(f"{self.path}: {key!r}: expected a mapping of metrics, got {describe(metrics)}")
                out.append((f"key {key!r}", {self.key_column: key, **metrics}))
            return out
        if isinstance(data, list):
            for i, row in enumerate(data):
                if not isinstance(row, dict):
                    raise TableError(f"{self.path}: row {i}: expected a mapping, got {describe(row)}")
            return [(f"row {i}", row) for i, row in enumerate(data)]
        raise TableError(f"{self.path}: expected a mapping from key to metrics or a list of rows, got {type(data).__name__}")

    def _read_csv(self) -> list[tuple[str, dict]]:
        try:
            with open(self.path, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, csv.Error, UnicodeDecodeError) as err:
            raise TableError(f"{self.path}: cannot read the CSV: {err}") from None
        out = []
        for i, row in enumerate(rows):
            if None in row:
                raise TableError(f"{self.path}: line {i + 2}: more values than the header has columns")
            parsed = {}
            for column, text in row.items():
                if column == self.key_column:
                    parsed[column] = text
                elif text is None or text.strip() == "":
                    continue  # an empty cell: the metric is not known for this row
                else:
                    parsed[column] = _number(text)
            out.append((f"line {i + 2}", parsed))
        return out

    # -- checking
    def _build(self, rows: list[tuple[str, dict]]) -> dict:
        entries: dict[str, dict] = {}
        long_form: dict[str, dict[int, dict]] = {}
        for where, row in rows:
            key = row.get(self.key_column)
            if key is None or key == "":
                raise TableError(f"{self.path}: {where}: no {self.key_column!r} value (the architecture key)")
            key = str(key)
            metrics = {m: v for m, v in row.items() if m != self.key_column}
            for metric, value in metrics.items():
                _check_value(value, f"{self.path}: {where}: {metric}", allow_list=("epoch" not in metrics))
            if "epoch" in metrics:
                epoch = metrics.pop("epoch")
                if not isinstance(epoch, (int, float)) or epoch != int(epoch) or epoch < 1:
                    raise TableError(f"{self.path}: {where}: epoch must be a whole number >= 1, got {epoch!r}")
                per_key = long_form.setdefault(key, {})
                if int(epoch) in per_key:
                    raise TableError(f"{self.path}: {where}: key {key!r} has epoch {int(epoch)} twice")
                per_key[int(epoch)] = metrics
                continue
            if key in entries or key in long_form:
                raise TableError(f"{self.path}: {where}: key {key!r} appears twice")
            entries[key] = self._entry(key, metrics)
        for key, epochs in long_form.items():
            if key in entries:
                raise TableError(f"{self.path}: key {key!r} appears both with and without an epoch column")
            n = max(epochs)
            gaps = [e for e in range(1, n + 1) if e not in epochs]
            if gaps:
                raise TableError(f"{self.path}: key {key!r} has epochs up to {n} but not {gaps[:5]}")
            names = sorted({m for row in epochs.values() for m in row})
            curves = {}
            for m in names:
                missing = [e for e in range(1, n + 1) if m not in epochs[e]]
                if missing:
                    raise TableError(f"{self.path}: key {key!r}: {m} is missing for epochs {missing[:5]}")
                curves[m] = [epochs[e][m] for e in range(1, n + 1)]
            entries[key] = self._entry(key, curves)
        return entries

    def _entry(self, key: str, metrics: dict) -> dict:
        curves = {m: list(v) for m, v in metrics.items() if isinstance(v, list)}
        static = {m: v for m, v in metrics.items() if not isinstance(v, list)}
        lengths = {len(v) for v in curves.values()}
        if len(lengths) > 1:
            detail = ", ".join(f"{m}: {len(v)}" for m, v in curves.items())
            raise TableError(f"{self.path}: key {key!r}: per-epoch curves differ in length ({detail})")
        if lengths == {0}:
            raise TableError(f"{self.path}: key {key!r}: an empty curve")
        time = curves.pop(self.time_name, None)
        if time is None and self.time_name in static:
            time = static.pop(self.time_name)
            if curves:
                # One number for a curve: the seconds of the whole run, spread evenly.
                n = len(next(iter(curves.values())))
                time = [time / n] * n
        for seconds in time if isinstance(time, list) else [time] if time is not None else []:
            if not isinstance(seconds, (int, float)) or seconds < 0:
                raise TableError(f"{self.path}: key {key!r}: {self.time_name} must be seconds >= 0, got {seconds!r}")
        return {"curves": curves, "static": static, "time": time}

    # -- use
    def rows(self, key: str) -> tuple[list[dict], list[float] | None, dict]:
        """Per-epoch rows, per-epoch seconds (or None) and static metrics of ``key``."""
        entry = self.entries[key]
        curves, time = entry["curves"], entry["time"]
        if not curves:
            return [dict(entry["static"])], ([float(time)] if time is not None else None), {}
        n = len(next(iter(curves.values())))
        rows = [{m: v[i] for m, v in curves.items()} for i in range(n)]
        return rows, (list(map(float, time)) if time is not None else None), dict(entry["static"])


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _check_value(value: Any, where: str, allow_list: bool) -> None:
    values = value if isinstance(value, list) and allow_list else [value]
    if isinstance(value, list) and not allow_list:
        raise TableError(f"{where}: a row with an epoch column holds one value per metric, got a list")
    for v in values:
        if isinstance(v, bool) or isinstance(v, (dict, list)):
            raise TableError(f"{where}: expected a number (or a list of numbers, one per epoch), got {describe(v)}")
        if isinstance(v, float) and math.isnan(v):
            continue  # a missing value; tune.report takes NaN
        if not isinstance(v, (int, float, str)):
            raise TableError(f"{where}: expected a number, got {describe(v)}")


_TABLES: dict[tuple, LookupTable] = {}


def load_table(path: str, key_column: str = "key", time: str = "time") -> LookupTable:
    """A table, cached per process (Ray reuses trial workers) until its file changes."""
    stamp = (os.path.abspath(path), key_column, time, os.path.getmtime(path) if os.path.exists(path) else None)
    if stamp not in _TABLES:
        _TABLES.clear()
        _TABLES[stamp] = LookupTable(path, key_column, time)
    return _TABLES[stamp]


def make_key(template: str, config: Mapping[str, Any]) -> str:
    """Formats ``template`` with the config's values (``{arch.op1}`` -> ``str(config['arch']['op1'])``).

    Raises:
        KeyError: A placeholder names no key of the config.
    """
    from raynas.bench.replay import flat_config

    flat = flat_config(config)

    def value(match: re.Match) -> str:
        path = match.group(1)
        if path not in flat:
            raise KeyError(f"the key template {template!r} names {path!r}, which the config lacks (it has {', '.join(sorted(flat))})")
        return str(flat[path])

    return _PLACEHOLDER.sub(value, template)


def validate_params(
    params: Mapping[str, Any], *, base_dir: str | None = None, max_epochs: int = 1, space: Any = None
) -> tuple[dict, tuple]:
    """Checks ``trainable.params`` of ``raynas.bench:lookup`` (and reads the table) before Ray starts.

    Keys: ``table`` (required; relative to the experiment file), ``key`` (template, required),
    ``key_column`` (``key``), ``time`` (``time``), ``speedup`` (1), ``sleep`` (true).
    """
    from raynas.bench.replay import check_speed, need_mapping
    from raynas.spec import check_value, unknown_keys

    params = need_mapping(params, "")
    unknown_keys(params, ["table", "key", "key_column", "time", "speedup", "sleep"], "")
    out = check_speed(params)
    if params.get("table") is None:
        raise ConfigError("table", "name the table file (.json or .csv) that maps architecture keys to metrics")
    table = check_value(params["table"], "str", "table")
    if base_dir is not None and not os.path.isabs(os.path.expanduser(table)):
        table = os.path.normpath(os.path.join(base_dir, table))
    out["table"] = os.path.expanduser(table)
    if params.get("key") is None:
        raise ConfigError("key", 'give a key template built from the config, e.g. "{arch.op1}|{arch.op2}"')
    out["key"] = check_value(params["key"], "str", "key")
    if not _PLACEHOLDER.search(out["key"]):
        raise ConfigError("key", f"the template needs at least one {{key.path}} placeholder, got {out['key']!r}")
    out["key_column"] = check_value(params.get("key_column", "key"), "str", "key_column")
    out["time"] = check_value(params.get("time", "time"), "str", "time")
    if space is not None:
        from raynas.bench.replay import flat_config

        # Conditional keys exist in some samples only: a placeholder must appear in one of a few.
        seen: set = set()
        for seed in range(16):
            seen |= set(flat_config(space.sample(seed=seed)))
        for path in _PLACEHOLDER.findall(out["key"]):
            if path not in seen:
                from raynas.errors import did_you_mean

                raise ConfigError("key", f"the template names {{{path}}}, which is no key of the space"
                                  f"{did_you_mean(path, sorted(seen))}; keys: {', '.join(sorted(seen))}")
    try:
        loaded = load_table(out["table"], out["key_column"], out["time"])
    except TableError as err:
        raise ConfigError("table", str(err)) from None
    metrics = ("epoch", *loaded.metrics, "wall_time", "resumed_from") + (("sim_time", "sim_epoch_time") if any(
        e["time"] is not None for e in loaded.entries.values()) else ())
    return out, tuple(dict.fromkeys(metrics))


def lookup(config: dict, context) -> None:
    """Ray Tune trainable: looks the sampled architecture up in a table and replays its metrics.

    An architecture whose key is not in the table fails its trial (``raynas_status: failed``,
    with the key in the message); the search goes on.
    """
    from raynas.bench.replay import replay
    from raynas.trainables.trainable import report_failure

    params = context.params
    table = load_table(params["table"], params.get("key_column", "key"), params.get("time", "time"))
    try:
        key = make_key(params["key"], config)
    except KeyError as err:
        return report_failure(str(err.args[0]))
    if key not in table.entries:
        return report_failure(f"no architecture {key!r} in the table {params['table']}")
    rows, seconds, static = table.rows(key)
    replay(rows, seconds, max_epochs=context.max_epochs, speedup=float(params.get("speedup", 1.0)),
           sleep=bool(params.get("sleep", True)), checkpoint_every=context.checkpoint_every, static=static)


lookup.validate_params = validate_params  # type: ignore[attr-defined]
