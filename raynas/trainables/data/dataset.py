"""The result type of every data source, and the seeded, stratified train/validation split."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raynas.errors import describe

# ----------------------------------------------------------------------------------------------
# The result type
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class Dataset:
    """Train and validation arrays, ready for the object store.

    On construction the arrays are converted (without a copy where they already fit) to
    C-contiguous ``float32`` features and ``int64`` labels, and checked: matching lengths,
    ``x.shape[1:] == input_shape``, labels in ``0 .. num_classes - 1``, both splits non-empty.

    Attributes:
        x_train: Features ``(N_train, *input_shape)``, float32.
        y_train: Class ids ``(N_train,)``, int64.
        x_val: Features ``(N_val, *input_shape)``, float32.
        y_val: Class ids ``(N_val,)``, int64.
        input_shape: One sample's shape: ``(C, H, W)`` for images, ``(F,)`` for tables.
        num_classes: Number of classes.
        name: The source's name.
        classes: The original label of each class id, where known.

    Example:
        >>> x = np.zeros((4, 3), np.float32); y = np.array([0, 1, 0, 1])
        >>> Dataset(x, y, x, y, (3,), 2, "toy").nbytes
        160
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    input_shape: tuple
    num_classes: int
    name: str = "data"
    classes: tuple | None = field(default=None)

    def __post_init__(self) -> None:
        self.x_train = _features(self.x_train, "x_train")
        self.x_val = _features(self.x_val, "x_val")
        self.y_train = _class_ids(self.y_train, "y_train")
        self.y_val = _class_ids(self.y_val, "y_val")
        try:
            self.input_shape = tuple(int(d) for d in self.input_shape)
        except (TypeError, ValueError):
            shape = describe(self.input_shape)
            raise ValueError(f"input_shape must be a tuple of ints, got {shape}") from None
        if not _is_int(self.num_classes, minimum=1):
            got = describe(self.num_classes)
            raise ValueError(f"num_classes must be a positive int, got {got}")
        self.num_classes = int(self.num_classes)
        if self.classes is not None:
            self.classes = tuple(self.classes)
            if len(self.classes) != self.num_classes:
                raise ValueError(
                    f"classes has {len(self.classes)} entries for {self.num_classes} classes"
                )
        for split in ("train", "val"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) == 0:
                raise ValueError(f"the {split} split is empty")
            if len(x) != len(y):
                raise ValueError(f"x_{split} has {len(x)} rows but y_{split} has {len(y)} labels")
            if x.shape[1:] != self.input_shape:
                raise ValueError(
                    f"x_{split} has samples of shape {x.shape[1:]}, but input_shape is "
                    f"{self.input_shape}; reshape x to (N, *input_shape)"
                )
            if y.min() < 0 or y.max() >= self.num_classes:
                raise ValueError(
                    f"y_{split} must hold class ids 0..{self.num_classes - 1}, "
                    f"found {y.min()}..{y.max()}"
                )

    @property
    def nbytes(self) -> int:
        """Bytes held by the four arrays (what the object store keeps once)."""
        return sum(a.nbytes for a in (self.x_train, self.y_train, self.x_val, self.y_val))

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.x_train)}, val={len(self.x_val)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"nbytes={self.nbytes})"
        )


def _is_int(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum


def _features(x: Any, what: str) -> np.ndarray:
    try:
        arr = np.ascontiguousarray(x, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be a numeric array: {err}") from None
    if arr.ndim < 2:
        raise ValueError(f"{what} must have shape (N, *input_shape), got {arr.shape}")
    return arr


def _class_ids(y: Any, what: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of class ids, got shape {arr.shape}")
    if arr.dtype.kind == "f" and arr.size and not np.all(np.mod(arr, 1) == 0):
        raise ValueError(f"{what} must hold class ids, got non-integral values")
    if arr.dtype.kind not in "iufb":
        raise ValueError(f"{what} must hold integer class ids, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)

# ----------------------------------------------------------------------------------------------
# Loading and splitting
# ----------------------------------------------------------------------------------------------


_Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Pool:
    """All labelled training samples of a source, before the split.

    ``x`` may stay in its compact stored dtype (uint8 images); ``transform`` turns the train
    and validation parts into float32 after the split, so statistics come from train only.
    ``classes`` set means ``y`` already holds class ids.
    """

    x: np.ndarray
    y: np.ndarray
    transform: _Transform | None = None
    classes: tuple | None = None

def _to_dataset(result: Any, name: str, val_fraction: float, rng: np.random.Generator,
                max_samples: int | None) -> Dataset:
    if isinstance(result, Dataset):
        Dataset.__post_init__(result)  # a user may have changed it since construction
        return result
    if isinstance(result, _Pool):
        return _split_pool(result, name, val_fraction, rng, max_samples)
    if isinstance(result, tuple) and len(result) == 2:
        x, y = (np.asarray(a) for a in result)
        if x.ndim < 2:
            raise ValueError(
                f"data source {name!r}: x must have shape (N, *input_shape), got {x.shape}"
            )
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(
                f"data source {name!r}: y must have shape ({len(x)},) to match x, got {y.shape}"
            )
        _check_finite(x, name, "x")
        return _split_pool(_Pool(x, y), name, val_fraction, rng, max_samples)
    if isinstance(result, Mapping):
        return _presplit(result, name, rng, max_samples)
    raise TypeError(
        f"data source {name!r} returned {type(result).__name__}; expected a raynas Dataset, a "
        "tuple (x, y) of arrays, or a dict with keys x_train, y_train, x_val, y_val"
    )


def _check_finite(x: np.ndarray, name: str, what: str) -> None:
    if x.dtype.kind in "fc":
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise ValueError(f"data source {name!r}: {what} has {bad} NaN or infinite values")


def _labels(y: np.ndarray, name: str) -> tuple[np.ndarray, tuple]:
    """Class ids 0..K-1 and the original label of each id."""
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        example = y[np.flatnonzero(np.mod(y, 1) != 0)[0]]
        raise ValueError(
            f"data source {name!r}: labels must be class ids or names, got non-integral values "
            f"such as {example!r} (raynas trains classifiers)"
        )
    try:
        classes, ids = np.unique(y, return_inverse=True)
    except TypeError as err:
        raise ValueError(f"data source {name!r}: labels cannot be sorted: {err}") from None
    return ids.reshape(-1).astype(np.int64), tuple(classes.tolist())


def _pick(y: np.ndarray, n_pick: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``range(len(y))`` into ``n_pick`` indices and the rest, both shuffled.

    Stratified where every class has >= 2 samples and both parts can hold every class: each
    class then gets its proportional share (largest remainders, random ties), at least one
    sample on each side. Otherwise a plain random split.
    """
    n = len(y)
    _, ids, counts = np.unique(y, return_inverse=True, return_counts=True)
    ids = ids.reshape(-1)
    k = len(counts)
    if counts.min() < 2 or not k <= n_pick <= n - k:
        perm = rng.permutation(n)
        return perm[:n_pick], perm[n_pick:]
    share = counts * (n_pick / n)
    quota = np.clip(np.floor(share).astype(np.int64), 1, counts - 1)
    tie_break = rng.random(k)
    # At most k units off (flooring loses < 1 per class, clipping adds < 1), so this is cheap.
    while (diff := n_pick - int(quota.sum())) != 0:
        room = quota < counts - 1 if diff > 0 else quota > 1
        gap = (share - quota) if diff > 0 else (quota - share)
        order = np.lexsort((tie_break, -gap))
        chosen = order[room[order]][: abs(diff)]
        quota[chosen] += 1 if diff > 0 else -1
    # Random order within each class, classes contiguous; take each class's first `quota`.
    perm = np.lexsort((rng.random(n), ids))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    take = (np.arange(n) - starts) < np.repeat(quota, counts)
    picked, rest = perm[take], perm[~take]
    return rng.permutation(picked), rng.permutation(rest)


def _split_pool(pool: _Pool, name: str, val_fraction: float, rng: np.random.Generator,
                max_samples: int | None) -> Dataset:
    if pool.classes is None:
        y, classes = _labels(pool.y, name)
    else:
        y, classes = np.asarray(pool.y, dtype=np.int64), pool.classes
    x = pool.x
    if len(y) < 2:
        raise ValueError(f"data source {name!r} has {len(y)} samples; a train/val split needs >= 2")
    if max_samples is not None and max_samples < len(y):
        keep, _ = _pick(y, max_samples, rng)
        x, y = x[keep], y[keep]  # fancy indexing copies, so the full pool can be freed
    n_val = min(max(round(len(y) * val_fraction), 1), len(y) - 1)
    val, train = _pick(y, n_val, rng)
    x_train, x_val = x[train], x[val]
    if pool.transform is not None:
        x_train, x_val = pool.transform(x_train, x_val)
    shape = tuple(x.shape[1:])
    return Dataset(x_train, y[train], x_val, y[val], shape, len(classes), name, classes)


_DICT_KEYS = ("x_train", "y_train", "x_val", "y_val")


def _presplit(result: Mapping[str, Any], name: str, rng: np.random.Generator,
              max_samples: int | None) -> Dataset:
    missing = [k for k in _DICT_KEYS if k not in result]
    unknown = [k for k in result if k not in (*_DICT_KEYS, "input_shape", "num_classes")]
    if missing or unknown:
        problem = (f"lacks {', '.join(missing)}" if missing
                   else f"has unknown keys {', '.join(map(str, unknown))}")
        raise ValueError(
            f"data source {name!r} returned a dict that {problem}; expected x_train, y_train, "
            "x_val, y_val and optionally input_shape, num_classes"
        )
    arrays = {k: np.asarray(result[k]) for k in _DICT_KEYS}
    for split in ("train", "val"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 1 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"data source {name!r}: x_{split} {x.shape} and y_{split} {y.shape} must have "
                "the same number of rows, y one-dimensional"
            )
        _check_finite(x, name, f"x_{split}")
    input_shape = result.get("input_shape")
    if input_shape is not None:
        try:
            input_shape = tuple(int(d) for d in input_shape)
            for split in ("train", "val"):
                x = arrays[f"x_{split}"]
                arrays[f"x_{split}"] = x.reshape(len(x), *input_shape)
        except (TypeError, ValueError) as err:
            raise ValueError(f"data source {name!r}: input_shape {describe(result['input_shape'])} "
                             f"does not fit the arrays: {err}") from None
    n_train, n_val = len(arrays["y_train"]), len(arrays["y_val"])
    if max_samples is not None and max_samples < n_train + n_val:
        # Keep the user's train/val proportion within the budget.
        keep_train = min(max(round(max_samples * n_train / (n_train + n_val)), 1), max_samples - 1)
        for split, n_keep in (("train", keep_train), ("val", max_samples - keep_train)):
            y = arrays[f"y_{split}"]
            if n_keep < len(y):
                keep, _ = _pick(y, n_keep, rng)
                arrays[f"x_{split}"], arrays[f"y_{split}"] = arrays[f"x_{split}"][keep], y[keep]
    num_classes = result.get("num_classes")
    classes = None
    if num_classes is None:
        y_all, classes = _labels(np.concatenate([arrays["y_train"], arrays["y_val"]]), name)
        n_train = len(arrays["y_train"])
        arrays["y_train"], arrays["y_val"] = y_all[:n_train], y_all[n_train:]
        num_classes = len(classes)
    x_train = arrays["x_train"]
    shape = input_shape if input_shape is not None else tuple(x_train.shape[1:])
    return Dataset(x_train, arrays["y_train"], arrays["x_val"], arrays["y_val"], shape,
                   num_classes, name, classes)
