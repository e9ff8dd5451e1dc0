"""``raynas compress``: prune, fine-tune and quantize a trial's model, measure before and after.

The model-level steps live in :mod:`raynas.winner.compress`; this module picks the trials,
loads their models and the experiment's data, runs the steps, scores each model on the test
split, and writes each result as an artifact (:mod:`raynas.winner.artifact`) with its
before/after table in ``DIR/compressed``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from raynas.errors import ConfigError, did_you_mean
from raynas.analysis.results import COMPRESS_DIR
from raynas.experiment import write_json_atomic
from raynas.winner.compress import QUANTIZE_MODES

log = logging.getLogger("raynas")

#: The rows of the before/after table: (key, label).
ROWS = (("params", "parameters"), ("nonzero", "non-zero parameters"), ("size_bytes", "size on disk (bytes)"),
        ("latency_ms", "CPU latency per sample (ms)"), ("accuracy", "accuracy"))


@dataclass
class Compressed:
    """One compressed trial: what was done, the before/after measurements, where it went."""

    trial_id: str
    steps: list[str]
    before: dict
    after: dict
    split: str
    notes: list[str] = field(default_factory=list)
    artifact: Path | None = None

    def to_json(self) -> dict:
        return {"trial_id": self.trial_id, "steps": self.steps, "before": self.before, "after": self.after,
                "split": self.split, "notes": self.notes, "artifact": str(self.artifact) if self.artifact else None}

    def table(self) -> str:
        label_width = max(len(label) for _, label in ROWS) + 2
        lines = [f"trial {self.trial_id}: {', '.join(self.steps)}",
                 f"{'':<{label_width}}{'before':>14}{'after':>14}{'change':>10}"]
        for key, label in ROWS:
            if key == "accuracy":
                label = f"{self.split} accuracy"
            a, b = self.before.get(key), self.after.get(key)
            lines.append(f"{label:<{label_width}}{_fmt(key, a):>14}{_fmt(key, b):>14}{_change(a, b):>10}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.artifact:
            lines.append(f"  written: {self.artifact}")
        return "\n".join(lines)


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "accuracy":
        return f"{value:.4f}"
    if key == "latency_ms":
        return f"{value:.4f}"
    return f"{int(value):,}"


def _change(a, b) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or a == 0:
        return "-"
    return f"{(b - a) / a * 100:+.1f}%"


def paired_latency_ms(first, second, input_shape: tuple, rounds: int = 7, repeats: int = 30) -> tuple[float, float]:
    """Both models' CPU latency per sample, as trials measure it (one thread, the median of
    ``repeats``), in alternating rounds; each model's median over the rounds. Measured one
    after the other, a busy moment of the machine would fall on one model only."""
    import statistics

    from raynas.trainables.families import measure_latency_ms

    a, b = [], []
    for _ in range(rounds):
        a.append(measure_latency_ms(first, input_shape, repeats=repeats))
        b.append(measure_latency_ms(second, input_shape, repeats=repeats))
    return statistics.median(a), statistics.median(b)


def check_args(prune: float | None, structured: bool, quantize: str | None, finetune_epochs: int) -> None:
    """Raises ConfigError for options that break a rule (before anything loads)."""
    if prune is None and quantize is None:
        raise ConfigError("--prune", "nothing to do: give --prune AMOUNT and/or --quantize int8|fp16")
    if prune is not None and (isinstance(prune, bool) or not isinstance(prune, (int, float))
                              or not math.isfinite(prune) or not 0 < prune < 1):
        raise ConfigError("--prune", f"must be a share of the weights in (0, 1), got {prune!r}")
    if structured and prune is None:
        raise ConfigError("--structured", "applies to pruning: give --prune AMOUNT too")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ConfigError("--quantize", f"must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}"
                                        f"{did_you_mean(str(quantize), QUANTIZE_MODES)}")
    if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) or finetune_epochs < 0:
        raise ConfigError("--finetune-epochs", f"must be an int >= 0, got {finetune_epochs!r}")
    if finetune_epochs and prune is None:
        raise ConfigError("--finetune-epochs", "fine-tuning recovers what pruning lost: give --prune AMOUNT too "
                                               "(a quantized model does not train)")


def pick_trials(exp_dir: Path, trial: str | None, rank: int | None, top: int | None) -> list[str]:
    """The trial ids to compress: ``--trial``, ``--rank`` or the ``--top`` K (of the Pareto
    front, best first, for a multi-objective experiment; of the ranking otherwise)."""
    from raynas.winner.export import pick_trial

    if top is None:
        return [pick_trial(exp_dir, trial, rank)[1].trial_id]
    if trial is not None or rank is not None:
        raise ConfigError("--top", "give --trial, --rank or --top, not two of them")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError("--top", f"must be an int >= 1, got {top!r}")
    results, _ = pick_trial(exp_dir, None, 1)
    if len(results.metrics) > 1:
        front = results.pareto()
        ids = [f.trial.trial_id for f in front.front]
    else:
        ids = [t.trial_id for t in results.leaderboard() if t.best is not None]
    return ids[:top]


def compress(exp_dir: str | os.PathLike, *, trial: str | None = None, rank: int | None = None, top: int | None = None,
             prune: float | None = None, structured: bool = False, quantize: str | None = None,
             finetune_epochs: int = 0, fmt: str = "state_dict", output: str | os.PathLike | None = None,
             say=print) -> list[Compressed]:
    """Compresses the chosen trials' models; returns what was done to each (also written as
    ``DIR/compressed/<trial>-<steps>.json`` beside the artifact).

    Raises:
        ConfigError: Bad options, an unknown or failed trial, a format whose extra is missing,
            or a model that cannot be pruned or quantized as asked (nothing is written then).
    """
    import torch

    from raynas.winner import compress as engine
    from raynas.winner.artifact import check_format, write_artifact
    from raynas.winner.evaluate import accuracy, finetune, held_out
    from raynas.winner.export import default_output, trial_model
    from raynas.winner.folder import check_experiment, experiment_data

    check_args(prune, structured, quantize, finetune_epochs)
    check_format(fmt)  # an unknown format or a missing extra is bad input: said before any work
    exp_dir = check_experiment(exp_dir, "the search or retrain whose model to compress")
    ids = pick_trials(exp_dir, trial, rank, top)
    if output is not None and len(ids) > 1:
        raise ConfigError("-o", f"one output file for {len(ids)} trials; leave -o out to write each into {exp_dir / COMPRESS_DIR}")
    dataset = experiment_data(exp_dir)
    x_eval, y_eval, split = held_out(dataset)
    tag = "-".join(_steps_tag(prune, structured, quantize, finetune_epochs))
    done = []
    for trial_id in ids:
        net, meta = trial_model(exp_dir, trial_id)
        shape = tuple(meta["input_shape"])
        before = {**engine.model_stats(net, shape, repeats=1), "accuracy": accuracy(net, x_eval, y_eval)}
        model, steps, notes = net, [], []  # prune and quantize return new models; net stays as it is
        example = torch.as_tensor(dataset.x_train[:64])
        try:
            if prune is not None:
                result = engine.prune(model, prune, structured=structured, example_input=example)
                model = result.model
                kind = "structured (channel)" if structured else "unstructured (magnitude)"
                steps.append(f"{kind} pruning of {prune:g}")
                notes += [f"not pruned: {s}" for s in result.skipped]
                if finetune_epochs:
                    finetune(model, dataset, meta["config"].get("train"), finetune_epochs, keep_zeros=not structured)
                    steps.append(f"{finetune_epochs} fine-tuning epoch{'s' if finetune_epochs != 1 else ''}")
            if quantize is not None:
                result = engine.quantize(model, quantize, calibration=torch.as_tensor(dataset.x_train[:512]))
                model = result.model
                steps.append(result.method)
                notes += result.notes
        except engine.CompressError as err:
            raise ConfigError("--prune" if prune is not None and not steps else "--quantize",
                              f"trial {trial_id}: {err}") from None
        after = {**engine.model_stats(model, shape, repeats=1), "accuracy": accuracy(model, x_eval, y_eval)}
        before["latency_ms"], after["latency_ms"] = paired_latency_ms(net, model, shape)
        meta = {**meta, "compression": {"prune": prune, "structured": structured, "quantize": quantize,
                                        "finetune_epochs": finetune_epochs, "steps": steps},
                "metrics": {**meta["metrics"], f"{split}_acc_compressed": after["accuracy"]}}
        path = Path(output) if output else default_output(exp_dir, trial_id, fmt, f"-{tag}", COMPRESS_DIR)
        done.append((Compressed(trial_id, steps, before, after, split, notes, path), model, meta))
    # Written once every trial compressed: a model that cannot be compressed leaves no files.
    for item, model, meta in done:
        item.artifact.parent.mkdir(parents=True, exist_ok=True)
        write_artifact(item.artifact, model, meta, fmt, torch.as_tensor(dataset.x_val[:1]))
        item.after["file_bytes"] = item.artifact.stat().st_size
        write_json_atomic(item.artifact.with_name(item.artifact.name + ".json"), item.to_json())
        say(item.table())
    done = [item for item, _, _ in done]
    return done


def _steps_tag(prune, structured, quantize, finetune_epochs) -> list[str]:
    tag = []
    if prune is not None:
        tag.append(f"{'channels' if structured else 'prune'}{round(prune * 100)}")
    if finetune_epochs:
        tag.append(f"ft{finetune_epochs}")
    if quantize:
        tag.append(quantize)
    return tag
