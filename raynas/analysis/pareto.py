"""Pareto fronts and exact hypervolumes of points with mixed ``max``/``min`` objectives.

Pure functions on numpy arrays (one row per point, one column per objective); they know
nothing of experiments. :meth:`raynas.analysis.ExperimentResults.pareto` applies them to
an experiment folder, with the normalisation and default reference point described there.

Example:
    >>> import numpy as np
    >>> points = np.array([[0.9, 300.0], [0.8, 100.0], [0.7, 200.0]])  # val_acc, params
    >>> pareto_front(points, ["max", "min"]).tolist()
    [0, 1]
    >>> round(hypervolume(points, ["max", "min"], reference=[0.5, 400.0]), 6)
    100.0
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from raynas.experiment import loss_sign

__all__ = ["pareto_front", "hypervolume", "to_minimisation", "MODES"]

MODES = ("max", "min")


def to_minimisation(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Returns ``points`` as a float array in which every objective is to be minimised.

    ``max`` columns are negated; ``min`` columns are kept.

    Example:
        >>> to_minimisation(np.array([[0.9, 300.0]]), ["max", "min"]).tolist()
        [[-0.9, 300.0]]

    Raises:
        ValueError: ``points`` is not 2-D, ``modes`` does not match its columns, a mode is
            not ``"max"`` or ``"min"``, or a value is not finite.
    """
    arr = np.asarray(points, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D array (one row per point), got shape {arr.shape}")
    modes = list(modes)
    if len(modes) != arr.shape[1]:
        raise ValueError(f"got {len(modes)} modes for {arr.shape[1]} objectives")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"a mode is 'max' or 'min', got {bad[0]!r}")
    if not np.all(np.isfinite(arr)):
        # Dominance is undefined with NaN; callers leave such points out first.
        raise ValueError("points must be finite (leave out points with NaN or infinite values)")
    signs = np.array([loss_sign(m) for m in modes])
    return arr * signs


def pareto_front(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Indices of the non-dominated rows of ``points``, in ascending order.

    A point dominates another when it is at least as good on every objective and strictly
    better on one. Equal points do not dominate each other, so duplicates of a front point
    are all kept (two trials that score the same are both on the front).

    Args:
        points: Array of shape ``(n, d)``, one row per point.
        modes: ``"max"`` or ``"min"`` for each of the ``d`` columns.

    Returns:
        Integer array of row indices (empty when ``n == 0``).

    Example:
        >>> pareto_front(np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 0.5], [0.5, 0.5]]), ["max", "max"]).tolist()
        [0, 1, 2]

    Raises:
        ValueError: See :func:`to_minimisation`.
    """
    loss = to_minimisation(points, modes)
    n = loss.shape[0]
    if n == 0:
        return np.zeros(0, dtype=int)
    # In lexicographic order no point can be dominated by a later one, so one pass that
    # compares each point with the front found so far is enough (a point dominated by a
    # dropped point is also dominated by the front point that dropped it).
    order = np.lexsort(loss.T[::-1])
    front: list[int] = []
    for i in order:
        if front:
            kept = loss[front]
            dominated = np.all(kept <= loss[i], axis=1) & np.any(kept < loss[i], axis=1)
            if dominated.any():
                continue
        front.append(int(i))
    return np.sort(np.array(front, dtype=int))


def hypervolume(points: np.ndarray, modes: Sequence[str], reference: Sequence[float]) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference``.

    The volume of the region that is worse than at least one point and better than the
    reference on every objective. Points that are not strictly better than the reference on
    every objective add nothing; dominated points may be passed (they add nothing either).
    Exact for any number of objectives: a sweep in 2-D, slices of 2-D sweeps in 3-D, and the
    WFG algorithm (While, Bradstreet and Barone, 2012) down to 3-D above that. A front of 200
    points takes milliseconds in 2-3 dimensions and about 0.3 s in 4.

    Args:
        points: Array of shape ``(n, d)`` in the objectives' own units.
        modes: ``"max"`` or ``"min"`` for each column.
        reference: ``d`` values in the same units, worse than the points that should count
            (below them for ``max``, above them for ``min``).

    Returns:
        The hypervolume, in the product of the objectives' units (0.0 for no points).

    Example:
        >>> hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), ["min", "min"], [3.0, 3.0])
        3.0

    Raises:
        ValueError: Shapes or modes do not match, or a value is not finite.
    """
    loss = to_minimisation(points, modes)
    ref = to_minimisation(np.asarray(reference, dtype=float).reshape(1, -1), modes)[0]
    loss = loss[np.all(loss < ref, axis=1)]
    if loss.shape[0] == 0:
        return 0.0
    loss = np.unique(loss, axis=0)  # duplicates add no volume; unique also sorts rows
    loss = loss[pareto_front(loss, ["min"] * loss.shape[1])]
    return float(_wfg(loss, ref))


def _wfg(front: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of minimisation points, all <= ``ref`` (dominated ones only cost time)."""
    n, d = front.shape
    if n == 0:
        return 0.0
    if n == 1:
        return float(np.prod(ref - front[0]))
    if d == 1:
        return float(ref[0] - front[:, 0].min())
    if d == 2:
        return _sweep_2d(front, ref)
    if d == 3:
        return _slice_3d(front, ref)
    # WFG: hv(S) = sum over points p_i of (box of p_i) - hv(limit set of p_i), the limit set
    # being the later points clipped to p_i's box. Sorted worst-first on the last objective,
    # every later point is at least as good there, so the limit set is flat in that
    # objective and its volume is a (d-1)-dimensional one times p_i's height.
    front = front[np.argsort(-front[:, -1], kind="stable")]
    total = 0.0
    for i in range(n):
        point = front[i]
        height = ref[-1] - point[-1]
        box = float(np.prod(ref[:-1] - point[:-1]))
        limited = np.maximum(front[i + 1 :, :-1], point[:-1])
        if limited.shape[0] > 1:
            # Dominated points add nothing; dropping them keeps the recursion small.
            limited = np.unique(limited, axis=0)
            limited = limited[_non_dominated_min(limited)]
        total += height * (box - _wfg(limited, ref[:-1]))
    return total


def _sweep_2d(points: np.ndarray, ref: np.ndarray) -> float:
    """2-D hypervolume by a sweep along the first objective (points may include dominated ones)."""
    pts = points[np.lexsort((points[:, 1], points[:, 0]))]
    # Keep the staircase: points that improve on the best second objective seen so far.
    best_y = np.minimum.accumulate(pts[:, 1])
    keep = np.concatenate(([True], pts[1:, 1] < best_y[:-1]))
    stairs = pts[keep]
    widths = np.diff(np.append(stairs[:, 0], ref[0]))
    return float(np.sum(widths * (ref[1] - stairs[:, 1])))


def _slice_3d(points: np.ndarray, ref: np.ndarray) -> float:
    """3-D hypervolume: slabs between consecutive third-objective values, each a 2-D sweep."""
    pts = points[np.argsort(points[:, 2], kind="stable")]
    tops = np.append(pts[1:, 2], ref[2])
    total = 0.0
    for i in range(pts.shape[0]):
        height = tops[i] - pts[i, 2]
        if height > 0:  # points sharing a third value: only the last one's slab has height
            total += height * _sweep_2d(pts[: i + 1, :2], ref[:2])
    return total


def _non_dominated_min(loss: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Mask of the non-dominated rows of distinct minimisation points."""
    n = loss.shape[0]
    mask = np.ones(n, dtype=bool)
    for start in range(0, n, chunk):
        block = loss[start : start + chunk]
        # weakly[i, j]: row j is <= block row i everywhere; rows are distinct, so that is
        # domination unless j is the row itself.
        weakly = np.all(loss[None, :, :] <= block[:, None, :], axis=2)
        weakly[np.arange(block.shape[0]), np.arange(start, start + block.shape[0])] = False
        mask[start : start + chunk] = ~weakly.any(axis=1)
    return mask
