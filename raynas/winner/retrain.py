"""``raynas retrain``: the best architectures of a search, trained again from scratch with
several seeds and scored on the test split: NAS papers' final-evaluation protocol.

The retrain is an experiment of its own in ``DIR/retrain`` (its ``experiment.yaml`` is the
search's, with a ``retrain`` section naming the candidates and seeds): it runs as Ray Tune
trials on the same cluster, resumes like a search (``raynas retrain DIR`` again, or
``raynas resume DIR/retrain``), and ``raynas analyze``/``raynas report`` read it. Its trials
are the only ones that read the test split, once, after their last epoch.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from raynas.errors import ConfigError
from raynas.winner.folder import check_experiment, data_info, search_spec_raw
from raynas.experiment import (
    ORIGIN_KEY,
    RETRAIN_DIR,
    RETRAIN_KEY,
    SPEC_FILE,
    RunStatus,
    is_experiment_dir,
    read_meta,
    run_status,
)


def retrain_spec(exp_dir: Path, top: int, seeds: int, epochs: int | None, full_data: bool):
    """The retrain's spec: the search's, with its ``top`` best configurations as candidates.

    Raises:
        ConfigError: Bad numbers, a folder that is itself a retrain, a search with no scored
            trial or without a test split, or a user trainable.
    """
    from raynas.analysis import load_results
    from raynas.spec import spec_from_dict

    for name, value, low in (("--top", top, 1), ("--seeds", seeds, 1), ("--epochs", epochs, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ConfigError(name, f"must be an int >= {low}, got {value!r}")
    raw = search_spec_raw(exp_dir)
    if raw.get("retrain") is not None:
        raise ConfigError("DIR", f"{exp_dir} is a retrain already; give the search's folder ({raw['retrain'].get('of')})")
    if raw.get("trainable") is not None:
        raise ConfigError("DIR", f"{exp_dir} ran the user trainable {raw['trainable']!r}; raynas retrains only its "
                                 "built-in trainable (it owns the training loop that scores the test split)")
    results = load_results(exp_dir)
    ranked = [t for t in results.leaderboard() if t.best is not None]
    if not ranked:
        raise ConfigError("DIR", f"no trial of {exp_dir} scored {results.metric!r}; there is nothing to retrain")

    if not data_info(exp_dir).get("sizes", {}).get("test"):  # a folder without data.json: the data loaded again
        raise ConfigError(
            "data.test_fraction",
            f"the search in {exp_dir} held out no test split, so a retrain has nothing unbiased to score "
            "(the validation split chose the architectures). Set data.test_fraction (digits, csv, user "
            "sources) or put the official test files beside mnist/fashion_mnist/cifar10, and search again",
        )
    candidates = [{"trial": t.trial_id, "rank": t.rank, "config": _plain_config(t.config)} for t in ranked[:top]]
    raw = copy.deepcopy(raw)
    raw["name"] = RETRAIN_DIR
    raw.pop("storage_path", None)
    raw.pop("scheduler", None)  # every candidate trains all its epochs: no early stopping
    raw.pop("constraints", None)  # the candidates met them in the search
    raw["search"] = {"num_trials": len(candidates) * seeds}
    if isinstance(raw.get("resources"), dict):
        # Data-parallel workers trained a one-shot search's supernet; each candidate trains on one.
        raw["resources"].pop("workers_per_trial", None)
    if epochs is not None:
        raw["max_epochs"] = epochs
    metrics = list(results.metrics)
    modes = list(results.modes)
    raw["objective"] = {"metric": ["test_acc", *metrics[1:]] if len(metrics) > 1 else "test_acc",
                        "mode": ["max", *modes[1:]] if len(metrics) > 1 else "max"}
    raw["retrain"] = {"of": str(exp_dir), "candidates": candidates, "seeds": seeds, "full_data": full_data}
    meta = read_meta(exp_dir)
    return spec_from_dict(raw, file=str(exp_dir / SPEC_FILE), base_dir=meta.get("base_dir"))


def _plain_config(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != ORIGIN_KEY}


def retrain(exp_dir: str | Path, top: int = 3, seeds: int = 3, epochs: int | None = None, full_data: bool = False,
            opts: Any = None) -> Path:
    """Retrains the ``top`` best configurations of the search in ``exp_dir``, ``seeds`` times
    each; returns the retrain's folder (``exp_dir/retrain``). An unfinished retrain with the
    same settings resumes; a finished one is left as it is.

    Raises:
        ConfigError: See :func:`retrain_spec`; or ``exp_dir/retrain`` holds a retrain with
            other settings.
    """
    from raynas.runner import RunOptions, resume, run

    exp_dir = check_experiment(exp_dir)
    spec = retrain_spec(exp_dir, top, seeds, epochs, full_data)
    target = exp_dir / RETRAIN_DIR
    if target.exists():
        if not is_experiment_dir(target):
            raise ConfigError("DIR", f"{target} exists and is no raynas experiment folder; move it away to retrain")
        done = search_spec_raw(target)
        if _settings(done) != _settings(spec.raw):
            raise ConfigError(
                "DIR", f"{target} holds a retrain with other settings ({_describe(done)}; asked: {_describe(spec.raw)}); "
                "delete that folder to retrain anew, or ask for the same settings to continue it")
        if run_status(target) is RunStatus.FINISHED:
            return target
        return resume(target, opts or RunOptions())
    opts = opts or RunOptions()
    opts.storage_path, opts.name = str(exp_dir), RETRAIN_DIR
    return run(spec, opts)


def _settings(raw: dict) -> tuple:
    r = raw.get("retrain") or {}
    return ([c["trial"] for c in r.get("candidates", [])], r.get("seeds"), bool(r.get("full_data")), raw.get("max_epochs"))


def _describe(raw: dict) -> str:
    trials, seeds, full, epochs = _settings(raw)
    return f"top {len(trials)}, {seeds} seeds, {epochs} epochs{', full data' if full else ''}"


@dataclass
class Candidate:
    """One retrained architecture: its search trial and the test scores of its seeds."""

    trial: str
    rank: int
    config: dict
    search_score: float | None
    test_acc: list[float] = field(default_factory=list)
    trials: list[str] = field(default_factory=list)
    params: Any = None
    latency_ms: Any = None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.test_acc) if self.test_acc else None

    @property
    def sd(self) -> float | None:
        """Sample standard deviation over the seeds (None below two)."""
        return statistics.stdev(self.test_acc) if len(self.test_acc) > 1 else None

    def to_json(self) -> dict:
        return {"trial": self.trial, "rank": self.rank, "search_score": self.search_score,
                "test_acc_mean": self.mean, "test_acc_sd": self.sd, "test_acc": self.test_acc,
                "seeds_done": len(self.test_acc), "retrain_trials": self.trials,
                "params": self.params, "latency_ms": self.latency_ms, "config": self.config}


def summary(exp_dir: str | Path) -> list[Candidate] | None:
    """The retrain's candidates with their seeds' test scores, best search rank first; None
    when ``exp_dir`` (the search's folder or the retrain's) has no retrain."""
    from raynas.analysis import load_results

    path = Path(exp_dir).expanduser().resolve()
    if (path / SPEC_FILE).is_file() and search_spec_raw(path).get("retrain"):
        path = Path(search_spec_raw(path)["retrain"]["of"])
    results = load_results(path)
    if results.retrain is None:
        return None
    section = search_spec_raw(results.retrain.dir).get("retrain") or {}
    by_id = {t.trial_id: t for t in results.trials}
    found = []
    for c in section.get("candidates", []):
        t = by_id.get(c["trial"])
        cand = Candidate(c["trial"], c["rank"], c["config"], t.best if t else None)
        if t is not None and t.test is not None:
            cand.test_acc = list(t.test["test_acc"])
        found.append(cand)
    for r in results.retrain.trials:  # the retrained models' own size and latency
        cand = next((c for c in found if c.trial == (r.config.get(RETRAIN_KEY) or {}).get("trial")), None)
        if cand is not None and r.params is not None:
            cand.params, cand.latency_ms = r.params, r.latency_ms
            cand.trials.append(r.trial_id)
    return sorted(found, key=lambda c: c.rank)


def render_summary(candidates: list[Candidate], metric: str = "val_acc") -> str:
    """The candidates as a text table: test accuracy mean ± sd over the seeds."""
    header = f"{'rank':>4}  {'search trial':<14}  {'search ' + metric:>16}  {'test_acc (mean ± sd)':>22}  {'seeds':>5}  {'params':>9}"
    lines = [header, "-" * len(header)]
    for c in candidates:
        score = f"{c.search_score:.4f}" if c.search_score is not None else "-"
        if c.mean is None:
            test = "-"
        else:
            test = f"{c.mean:.4f} ± {c.sd:.4f}" if c.sd is not None else f"{c.mean:.4f}"
        params = f"{c.params:,}" if isinstance(c.params, int) else "-"
        lines.append(f"{c.rank:>4}  {c.trial:<14}  {score:>16}  {test:>22}  {len(c.test_acc):>5}  {params:>9}")
    return "\n".join(lines)
