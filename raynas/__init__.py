"""raynas: neural architecture search at scale on Ray Tune and PyTorch Lightning.

A user describes an experiment in one YAML file (data, a search space of architecture dicts
plus training hyperparameters, a searcher, a scheduler, resources) and runs it::

    raynas run experiments/quickstart.yaml

The same from Python:

Example:
    >>> import raynas
    >>> spec = raynas.load_spec("experiments/quickstart.yaml", ["search.num_trials=4"])  # doctest: +SKIP
    >>> folder = raynas.run(spec)  # doctest: +SKIP
    >>> raynas.load_results(folder).best().config  # doctest: +SKIP

Names are imported on first use, so ``import raynas`` stays fast (no torch, no Ray).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # experiment files
    "load_spec": "raynas.spec",
    "spec_from_dict": "raynas.spec",
    "ExperimentSpec": "raynas.spec",
    # running
    "run": "raynas.runner",
    "resume": "raynas.runner",
    "RunOptions": "raynas.runner",
    # results and the winner
    "load_results": "raynas.analysis",
    "load_model": "raynas.winner.export",
    "export": "raynas.winner.export",
    "retrain": "raynas.winner.retrain",
    "compress": "raynas.winner.compress_trials",
    # search spaces
    "Space": "raynas.spaces",
    "Int": "raynas.spaces",
    "Float": "raynas.spaces",
    "Choice": "raynas.spaces",
    "Fixed": "raynas.spaces",
    "Repeat": "raynas.spaces",
    # extension points
    "register_family": "raynas.trainables.registry",
    "Dataset": "raynas.trainables.data",
    "register_source": "raynas.trainables.data",
    # errors
    "ConfigError": "raynas.errors",
    "ArchError": "raynas.errors",
    "ResumeError": "raynas.errors",
    "SearchFailedError": "raynas.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'raynas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
