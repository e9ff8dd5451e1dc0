"""Experiment spec: load a YAML file, apply ``--set`` overrides, validate into typed dataclasses.

Everything a run needs is checked here, before Ray starts: unknown keys (with a
did-you-mean), types, ranges, the space, strategy names and parameters, the objective
metric, the model family and the data source. A broken rule raises
:class:`~raynas.errors.ConfigError` naming the file, the key path, the rule and the value.

Example:
    >>> spec = spec_from_dict({"name": "demo", "space": {"arch": {"depth": {"int": [1, 3]}}},
    ...                        "search": {"num_trials": 2}})
    >>> spec.objective.metric, spec.search.searcher
    ('val_acc', 'random')
"""

from raynas.spec.checks import check_value, unknown_keys
from raynas.spec.loading import apply_overrides, load_spec, parse_yaml
from raynas.spec.types import (
    BUILTIN_METRICS,
    DEFAULT_NUM_TRIALS,
    POPULATION_SCHEDULERS,
    Constraints,
    DataSpec,
    Engine,
    ExperimentSpec,
    Mode,
    Objective,
    RETRAIN_KEY,
    Resources,
    RetrainSpec,
    SchedulerSpec,
    SearchSpec,
    TrainerSpec,
)
from raynas.spec.validate import spec_from_dict

__all__ = [
    "BUILTIN_METRICS", "DEFAULT_NUM_TRIALS", "POPULATION_SCHEDULERS", "Constraints", "DataSpec", "Engine",
    "ExperimentSpec", "Mode", "Objective", "RETRAIN_KEY", "Resources", "RetrainSpec", "SchedulerSpec", "SearchSpec", "TrainerSpec",
    "apply_overrides", "check_value", "load_spec", "parse_yaml", "spec_from_dict", "unknown_keys",
]
