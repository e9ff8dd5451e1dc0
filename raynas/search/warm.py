"""Warm starts: earlier experiments' trials, read and mapped into this search's space.

``search.warm_start: [PATH, ...]`` names earlier experiment folders. Their finished trials
become :class:`~raynas.search.searchers.Prior` objects for the searcher's ``warm_start``; each
configuration is mapped into the new space key path by key path (:meth:`Space.project`), or
skipped when it cannot be, and the run says how many of each. Everything here reads files only,
so bad input is refused before Ray starts.
"""

from __future__ import annotations

import json
import os
import pickle
from collections import Counter
from pathlib import Path

from raynas.errors import ConfigError
from raynas.experiment import Status
from raynas.search.searchers import Prior

__all__ = ["load_priors"]

#: Statuses whose trials say something about their configuration.
_USED = (Status.COMPLETED, Status.STOPPED, Status.FAILED, Status.REJECTED, Status.ERROR)


def load_priors(spec) -> tuple[list[Prior], list[str], list[dict]]:
    """The earlier trials of ``spec.search.warm_start``, one line per folder saying what was
    used, and the saved searcher states of the folders that ran this search's searcher
    (``{"folder", "saved", "same_data"}``: the RL controller starts from such a policy).

    Raises:
        ConfigError: A folder is not a raynas experiment, or its objective differs from this one
            (``search.warm_start[i]``).
    """
    from raynas.analysis import load_results
    from raynas.experiment import is_experiment_dir

    priors: list[Prior] = []
    lines: list[str] = []
    states: list[dict] = []
    metrics = list(spec.objective.metrics)
    modes = [m.value for m in spec.objective.modes]
    for i, path in enumerate(spec.search.warm_start):
        key = f"search.warm_start[{i}]"
        folder = Path(path)
        if not folder.exists():
            written = spec.raw.get("search", {}).get("warm_start")
            written = written[i] if isinstance(written, list) and i < len(written) else written
            raise ConfigError(
                key, f"{path} does not exist (a relative path, here {written!r}, is read from the folder raynas "
                "runs in; run the earlier experiment first, or give its folder)", spec.source_file,
            )
        if not is_experiment_dir(folder):
            raise ConfigError(key, f"{path} is not a raynas experiment folder (no raynas.json in it)", spec.source_file)
        try:
            results = load_results(folder)
        except ConfigError as err:
            raise ConfigError(key, f"cannot read {path}: {err.message}", spec.source_file) from None
        if results.metrics != metrics or results.modes != modes:
            theirs = ", ".join(f"{mode} {m}" for m, mode in zip(results.metrics, results.modes))
            ours = ", ".join(f"{mode} {m}" for m, mode in zip(metrics, modes))
            raise ConfigError(
                key, f"{path} optimised {theirs}, this experiment {ours}; a warm start needs the same objective",
                spec.source_file,
            )
        earlier_raw = _earlier_raw(folder)
        same = _task(earlier_raw, results.meta.get("base_dir")) == _task(spec.raw, spec.base_dir)
        search = earlier_raw.get("search") if isinstance(earlier_raw.get("search"), dict) else {}
        saved = sorted(folder.glob("searcher-state-*.pkl"))
        if search.get("searcher", "random") == spec.search.searcher and saved:
            try:
                with open(saved[-1], "rb") as f:
                    states.append({"folder": folder.name, "saved": pickle.load(f), "same_data": same})
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
                pass  # an unreadable state: the trials below still teach the searcher
        used, mapped, skipped = 0, 0, Counter()
        for trial in results.trials:
            if trial.status not in _USED:
                continue
            try:
                config, changes = spec.space.project(trial.config)
            except ValueError as err:  # OutsideSpace
                skipped[str(err).split(":")[0]] += 1
                continue
            mapped += bool(changes)
            used += 1
            curve = {int(row["epoch"]): row.get(results.metric) for row in trial.curve if "epoch" in row}
            point = trial.objectives(results.metrics, results.modes) if len(metrics) > 1 else None
            priors.append(Prior(
                config=config,
                value=trial.best,
                epochs=trial.epochs,
                complete=trial.status is Status.COMPLETED and trial.epochs >= results.max_epochs,
                values=point[1] if point else {},
                curve=curve,
                source=f"{folder.name}/{trial.trial_id}",
                same_data=same,
            ))
        line = f"warm start from {folder}: {used} trials ({used - mapped} as they were, {mapped} mapped into this space"
        if skipped:
            where = ", ".join(f"{n} at {k}" for k, n in skipped.most_common(3))
            line += f", {sum(skipped.values())} skipped: outside this space ({where})"
        lines.append(line + ")" + ("" if same else "; it trained on other data (its data or trainable section differs)"))
    return priors, lines, states


def _earlier_raw(folder: Path) -> dict:
    import yaml

    from raynas.experiment import SPEC_FILE

    try:
        with open(folder / SPEC_FILE, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except OSError:
        return {}


def _task(raw: dict, base_dir: str | None) -> tuple:
    """What makes two experiments' scores comparable: their data and trainable sections, with a
    relative data path resolved where each file was."""
    data = dict(raw.get("data") or {}) if isinstance(raw.get("data"), dict) else raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str) and base_dir and not os.path.isabs(data["path"]):
        data["path"] = os.path.normpath(os.path.join(base_dir, data["path"]))
    return tuple(json.dumps(v, sort_keys=True, default=str) for v in (data, raw.get("trainable"), raw.get("model")))
