"""The stages of a one-shot or gradient search as raynas experiments (see
:mod:`raynas.search.oneshot`; :func:`raynas.runner` runs them): the supernet stage's spec, its
result (a checkpoint, or the cell it derived), and the spec of the stage after it."""

from __future__ import annotations

import dataclasses
import json

from raynas.errors import ConfigError
from raynas.experiment import SUPERNET_DIR
from raynas.search.oneshot import SUPERNET_MODEL

__all__ = ["supernet_spec", "supernet_checkpoint", "scoring_spec", "derived_cell", "derived_spec"]


def supernet_spec(spec):
    """The spec of the supernet stage: one trial of the supernet family (the gradient search's
    for ``strategy: gradient``), FIFO, the same data, recipe, trainer and resources,
    ``supernet_epochs`` epochs."""
    from raynas.spec import spec_from_dict

    raw = {k: v for k, v in spec.raw.items()
           if k in ("data", "trainer", "resources")}
    space = spec.raw["space"]
    arch = {"family": spec.model, "space": json.dumps(space["arch"], sort_keys=True), "seed": spec.search.seed or 0}
    if spec.search.strategy == "gradient":
        settings, model = spec.search.gradient, "raynas.trainables.supernet:darts_family"
        arch.update(arch_lr=settings["arch_lr"], max_skip=settings["max_skip"])
    else:
        settings, model = spec.search.one_shot, SUPERNET_MODEL
    raw.update(
        name=SUPERNET_DIR,
        model=model,
        space={"arch": arch, "train": dict(space.get("train") or {})},
        search={"searcher": "random", "num_trials": 1, "seed": spec.search.seed or 0},
        objective={"metric": "val_acc", "mode": "max"},
        max_epochs=settings["supernet_epochs"],
    )
    return spec_from_dict(raw, file=spec.source_file, base_dir=spec.base_dir)


def derived_cell(folder) -> tuple[dict, dict]:
    """The cell a gradient search derived at its supernet's last epoch (``folder``: the
    supernet stage's experiment), and that epoch's row.

    Raises:
        ConfigError: The supernet trial reported no derived cell (it failed before an epoch).
    """
    from raynas.analysis import load_results

    rows = [r for t in load_results(folder).trials for r in t.curve if r.get("derived_arch")]
    if not rows:
        raise ConfigError("search.strategy", f"the gradient search's supernet in {folder} derived no cell "
                                             "(its trial reported no epoch; see raynas analyze there)")
    last = max(rows, key=lambda r: int(r.get("epoch") or 0))
    return json.loads(last["derived_arch"]), last


def derived_spec(spec, arch: dict, epoch: int):
    """The spec that trains the derived cell (or network) from scratch: one trial, the given
    configuration (its origin: derived after ``epoch`` supernet epochs)."""
    from raynas.experiment import ORIGIN_KEY

    train = spec.raw["space"].get("train") or {}
    what = "cell" if spec.model == "cell" else "network"
    origin = {"searcher": "gradient", "how": f"{what} derived after {epoch} supernet epochs"}
    point = {"arch": arch, "train": dict(train), ORIGIN_KEY: origin}
    search = dataclasses.replace(spec.search, searcher="random", num_trials=1, points=[point])
    return dataclasses.replace(spec, search=search)


def supernet_checkpoint(folder) -> str:
    """The last checkpoint of the supernet stage's trial (``folder``: its experiment folder).

    Raises:
        ConfigError: The supernet trial failed or left no checkpoint.
    """
    from pathlib import Path

    from raynas.analysis import load_results
    from raynas.experiment import checkpoint_dirs

    trained = [t for t in load_results(folder).trials if t.best is not None and t.dir]
    found = checkpoint_dirs(Path(folder) / trained[0].dir) if trained else []
    if not found:
        raise ConfigError("search.strategy", f"the supernet in {folder} left no trained checkpoint "
                                             "(see raynas analyze there)")
    return str(found[-1])


def scoring_spec(spec, weights: str):
    """The spec the subnet stage runs: the experiment's search, with each trial scoring its
    architecture on the supernet checkpoint ``weights`` (a folder) in one step."""
    from raynas.trainables.registry import resolve_family

    train = spec.raw["space"].get("train") or {}
    params = {
        "weights": str(weights),
        "family": spec.model,
        "build": resolve_family(spec.model),  # what a worker imports to build the stand-alone subnet
        "space": json.dumps(spec.raw["space"]["arch"], sort_keys=True),
        "calibration_batches": spec.search.one_shot["calibration_batches"],
        "batch_size": int(train.get("batch_size", 64)),
        "constraints": dataclasses.asdict(spec.constraints) if spec.constraints else {},
        "num_threads": spec.trainer.num_threads or max(1, int(spec.resources.cpus_per_trial)),
        "gpus": spec.resources.gpus_per_trial,
    }
    # A subnet is scored in one step on one worker: workers_per_trial is the supernet's.
    return dataclasses.replace(spec, trainable="raynas.trainables.supernet:score_subnet", trainable_params=params,
                               max_epochs=1, resources=dataclasses.replace(spec.resources, workers_per_trial=1))
