"""A trial's model out of an experiment folder: ``raynas export`` and ``raynas.load_model``.

A trial's newest checkpoint holds its weights; the experiment's ``data.json`` holds what a
model needs to take raw inputs (shape, classes, preprocessing). :func:`trial_model` joins
them into a ready ``nn.Module`` with its metadata; :func:`export` writes them as one artifact
(:mod:`raynas.winner.artifact`); :func:`load_model` reads an artifact or a folder back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from raynas.errors import ConfigError, did_you_mean
from raynas.winner.folder import check_experiment, data_info, search_spec_raw
from raynas.experiment import ORIGIN_KEY, Status, checkpoint_dirs, read_meta

#: Where ``raynas export`` writes by default, inside the experiment folder.
EXPORT_DIR = "exports"
_EXTENSIONS = {"state_dict": ".pt", "torchscript": ".torchscript.pt", "onnx": ".onnx"}


def pick_trial(exp_dir: Path, trial: str | None = None, rank: int | None = None):
    """The trial ``--trial ID`` or ``--rank N`` names (default: rank 1), as a TrialResult.

    Raises:
        ConfigError: Both given, an unknown id, a rank out of range, or a trial that failed
            or has no checkpoint.
    """
    from raynas.analysis import load_results

    if trial is not None and rank is not None:
        raise ConfigError("--trial", "give --trial or --rank, not both")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ConfigError("--rank", f"must be an int >= 1, got {rank!r}")
    results = load_results(exp_dir)
    board = results.leaderboard()
    if trial is not None:
        matches = [t for t in board if t.trial_id == trial] or [t for t in board if t.trial_id.startswith(trial)]
        if len(matches) != 1:
            ids = [t.trial_id for t in board]
            why = "matches several trials" if matches else "is no trial"
            raise ConfigError("--trial", f"{trial!r} {why} of {exp_dir}{did_you_mean(trial, ids)}; "
                                         f"its trials: {', '.join(ids[:12])}{' ...' if len(ids) > 12 else ''}")
        chosen = matches[0]
    else:
        rank = rank or 1
        scored = [t for t in board if t.best is not None]
        if rank > len(scored):
            raise ConfigError("--rank", f"{exp_dir} has {len(scored)} scored trial(s), so there is no rank {rank}")
        chosen = scored[rank - 1]
    if chosen.status in (Status.FAILED, Status.REJECTED, Status.ERROR) or chosen.best is None:
        raise ConfigError("--trial", f"trial {chosen.trial_id} {chosen.status.value}"
                                     f"{': ' + chosen.error.strip().splitlines()[-1] if chosen.error else ''}; "
                                     "export a trial that trained (raynas analyze lists them)")
    return results, chosen


def _checkpoint(exp_dir: Path, trial) -> Path:
    folders = checkpoint_dirs(exp_dir / trial.dir) if trial.dir else []
    if not folders:
        raise ConfigError("--trial", f"trial {trial.trial_id} has no checkpoint in {exp_dir / (trial.dir or '?')} "
                                     "(trainer.checkpoint_every: 0 keeps only the last epoch's; was it interrupted?)")
    return folders[-1]


def trial_model(exp_dir: str | os.PathLike, trial: str | None = None, rank: int | None = None):
    """The model of a trial (default: the best) with its weights, in eval mode, and its metadata.

    Returns:
        ``(net, meta)``: ``meta`` holds ``family``, ``arch``, ``base_dir``, ``input_shape``,
        ``num_classes``, ``classes``, ``preprocessing``, ``metrics`` (the result of the
        checkpoint's epoch), ``config``, ``trial_id``, ``experiment``, ``epoch``, ``compression``.

    Raises:
        ConfigError: See :func:`pick_trial`; a user trainable's checkpoint raynas cannot read.
    """
    from raynas.trainables.families import build_model
    from raynas.trainables.trainable import checkpoint_weights

    exp_dir = check_experiment(exp_dir, "the search or retrain to export from")
    _, chosen = pick_trial(exp_dir, trial, rank)
    raw = search_spec_raw(exp_dir)
    folder = _checkpoint(exp_dir, chosen)
    base_dir = read_meta(exp_dir).get("base_dir")
    config = {k: v for k, v in chosen.config.items() if k != ORIGIN_KEY}
    info = data_info(exp_dir) if raw.get("data") is not None else {}
    if raw.get("trainable") is not None:
        net, epoch = _user_checkpoint(folder, raw["trainable"], chosen.trial_id)
        family, arch = None, config.get("arch")
    else:
        family, arch = raw.get("model") or "mlp", config.get("arch", {})
        state, epoch = checkpoint_weights(folder)
        net = build_model(family, arch, tuple(info["input_shape"]), int(info["num_classes"]), base_dir=base_dir)
        net.load_state_dict(state)
    rows = [r for r in chosen.curve if r.get("epoch") == epoch] if epoch is not None else []
    meta = {
        "family": family, "arch": arch, "base_dir": base_dir,
        "input_shape": info.get("input_shape") or list(getattr(net, "input_shape", ()) or ()),
        "num_classes": info.get("num_classes"), "classes": info.get("classes"),
        "preprocessing": info.get("preprocessing"),
        "metrics": _plain(rows[-1] if rows else chosen.metrics), "config": config,
        "trial_id": chosen.trial_id, "experiment": str(exp_dir), "epoch": epoch, "compression": None,
    }
    return net.eval(), meta


def _user_checkpoint(folder: Path, trainable: str, trial_id: str):
    """A user trainable's model: a whole module saved as ``model.pt`` in its checkpoint."""
    import torch

    path = folder / "model.pt"
    files = sorted(p.name for p in folder.iterdir())
    if path.is_file():
        obj = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(obj, torch.nn.Module):
            return obj, None
    raise ConfigError(
        "--trial",
        f"trial {trial_id} ran the user trainable {trainable!r}, whose checkpoint {folder} holds "
        f"{', '.join(files) or 'nothing'}: raynas cannot tell which network that is. Save the whole model in the "
        "checkpoint as model.pt (torch.save(model, os.path.join(folder, 'model.pt'))) to make it exportable",
    )


def _plain(metrics: dict) -> dict:
    import math

    return {k: v for k, v in metrics.items()
            if isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))}


def example_input(meta: dict):
    import torch

    return torch.zeros((1, *meta["input_shape"]))


def default_output(exp_dir: Path, trial_id: str, fmt: str, tag: str = "", subdir: str = EXPORT_DIR) -> Path:
    """``DIR/exports/<trial><tag>.pt`` (``.torchscript.pt``, ``.onnx``)."""
    return exp_dir / subdir / f"{trial_id}{tag}{_EXTENSIONS[fmt]}"


def export(exp_dir: str | os.PathLike, trial: str | None = None, rank: int | None = None,
           fmt: str = "state_dict", output: str | os.PathLike | None = None) -> Path:
    """Writes a trial's model (default: the best) as one artifact; returns its path."""
    from raynas.winner.artifact import check_format, write_artifact

    check_format(fmt)  # an unknown format or a missing extra is bad input: said before any work
    net, meta = trial_model(exp_dir, trial, rank)
    path = Path(output) if output else default_output(Path(meta["experiment"]), meta["trial_id"], fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_artifact(path, net, meta, fmt, example_input(meta))


def load_model(path: str | os.PathLike, *, trial: str | None = None, rank: int | None = None) -> Any:
    """A model ready to predict: from an artifact ``raynas export`` or ``raynas compress``
    wrote, or straight from an experiment folder (its best trial, or ``trial``/``rank``).

    Returns an :class:`~raynas.winner.artifact.ExportedModel` (an ``nn.Module`` with
    ``predict`` and ``predict_proba`` on raw inputs), or for an ONNX file an
    :class:`~raynas.winner.artifact.OnnxModel` (the same methods, on onnxruntime).

    Example:
        >>> model = raynas.load_model("raynas_results/cnn_digits/exports/fed0f0f4.pt")  # doctest: +SKIP
        >>> model.predict(images)  # raw 8x8 digits, values 0..16  # doctest: +SKIP
    """
    from raynas.winner.artifact import ExportedModel, load_artifact

    path = Path(path).expanduser()
    if path.is_dir():
        net, meta = trial_model(path, trial, rank)
        return ExportedModel(net, meta)
    if trial is not None or rank is not None:
        raise ValueError("trial and rank choose a trial of an experiment folder; an artifact holds one model")
    if not path.is_file():
        raise FileNotFoundError(f"no such file or folder: {path}")
    return load_artifact(path)
