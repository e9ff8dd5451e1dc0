"""Read experiment folders, rank their trials and find their Pareto front; works with no Ray running.

Example:
    >>> from raynas.analysis import load_results
    >>> results = load_results("raynas_results/quickstart")  # doctest: +SKIP
    >>> print(results.best().config)  # doctest: +SKIP
    >>> front = results.pareto(["val_acc", "params"], ["max", "min"])  # doctest: +SKIP
    >>> print(front.hypervolume, [f.trial.trial_id for f in front.front])  # doctest: +SKIP
"""

from typing import Any

from raynas.analysis.results import ExperimentResults, FrontTrial, ParetoResult, TrialResult, load_results

__all__ = ["load_results", "ExperimentResults", "TrialResult", "ParetoResult", "FrontTrial", "pareto_front", "hypervolume"]


def __getattr__(name: str) -> Any:
    # The numpy functions load on first use: a plain `raynas analyze` does not need numpy.
    if name in ("pareto_front", "hypervolume"):
        from raynas.analysis import pareto

        return getattr(pareto, name)
    raise AttributeError(f"module 'raynas.analysis' has no attribute {name!r}")
