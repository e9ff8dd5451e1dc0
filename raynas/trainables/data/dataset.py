"""The result type of every data source, and the seeded, stratified train/validation split."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raynas.errors import describe
from raynas.trainables.data.preprocess import Preprocessing

# ----------------------------------------------------------------------------------------------
# The result type
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class Dataset:
    """Train, validation and (optionally) test arrays, ready for the object store.

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
        x_test: Held-out test features, or None. Search trials never see them: the runner
            puts :meth:`without_test` into the object store.
        y_test: Held-out test class ids, or None.
        preprocessing: How raw inputs become these features (``Preprocessing.to_dict()``),
            or None where the source returned finished features.

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
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    preprocessing: dict | None = None

    def __post_init__(self) -> None:
        if (self.x_test is None) != (self.y_test is None):
            raise ValueError("x_test and y_test go together: give both or neither")
        splits = ("train", "val", "test") if self.x_test is not None else ("train", "val")
        for split in splits:
            setattr(self, f"x_{split}", _features(getattr(self, f"x_{split}"), f"x_{split}"))
            setattr(self, f"y_{split}", _class_ids(getattr(self, f"y_{split}"), f"y_{split}"))
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
        for split in splits:
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
        """Bytes held by the arrays (what the object store keeps once)."""
        arrays = (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test)
        return sum(a.nbytes for a in arrays if a is not None)

    @property
    def has_test(self) -> bool:
        return self.x_test is not None

    def without_test(self) -> Dataset:
        """The same dataset without its test split (shares the arrays): what search trials get."""
        if self.x_test is None:
            return self
        lean = copy.copy(self)
        lean.x_test = lean.y_test = None
        return lean

    def info(self) -> dict:
        """What a model trained on this data needs to take raw inputs (JSON-able): the shape,
        the classes, the preprocessing, and the split sizes."""
        classes = [c.item() if isinstance(c, np.generic) else c for c in self.classes] if self.classes else None
        return {
            "name": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "classes": classes, "preprocessing": self.preprocessing,
            "sizes": {"train": len(self.y_train), "val": len(self.y_val),
                      "test": len(self.y_test) if self.y_test is not None else 0},
        }

    def __repr__(self) -> str:
        test = f", test={len(self.x_test)}" if self.x_test is not None else ""
        return (
            f"Dataset(name={self.name!r}, train={len(self.x_train)}, val={len(self.x_val)}{test}, "
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


@dataclass
class _Pool:
    """All labelled samples of a source, before the split.

    ``x`` may stay in its compact stored dtype (uint8 images); ``prep`` (fitted on the train
    part after the split) turns every part into float32 features. ``classes`` set means ``y``
    (and ``y_test``) already hold class ids. ``x_test``/``y_test``: a published test set.
    """

    x: np.ndarray
    y: np.ndarray
    prep: Preprocessing | None = None
    classes: tuple | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def _to_dataset(result: Any, name: str, val_fraction: float, rng: np.random.Generator,
                max_samples: int | None, test_fraction: float = 0.0,
                test_rng: np.random.Generator | None = None) -> Dataset:
    if isinstance(result, Dataset):
        Dataset.__post_init__(result)  # a user may have changed it since construction
        if test_fraction and not result.has_test:
            raise ValueError(f"data source {name!r} returned a finished Dataset; hold out its test split "
                             "there (x_test, y_test) instead of setting data.test_fraction")
        return result
    if isinstance(result, _Pool):
        return _split_pool(result, name, val_fraction, rng, max_samples, test_fraction, test_rng)
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
        return _split_pool(_Pool(x, y), name, val_fraction, rng, max_samples, test_fraction, test_rng)
    if isinstance(result, Mapping):
        if test_fraction and "x_test" not in result:
            raise ValueError(f"data source {name!r} returned its own train/val split; return x_test and "
                             "y_test with it instead of setting data.test_fraction")
        return _presplit(result, name, rng, max_samples)
    raise TypeError(
        f"data source {name!r} returned {type(result).__name__}; expected a raynas Dataset, a "
        "tuple (x, y) of arrays, or a dict with keys x_train, y_train, x_val, y_val (and "
        "optionally x_test, y_test)"
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
                max_samples: int | None, test_fraction: float = 0.0,
                test_rng: np.random.Generator | None = None) -> Dataset:
    if pool.classes is None:
        y, classes = _labels(pool.y, name)
    else:
        y, classes = np.asarray(pool.y, dtype=np.int64), pool.classes
    x = pool.x
    x_test = y_test = None
    if pool.x_test is not None:
        x_test, y_test = pool.x_test, _class_ids_of(pool.y_test, classes, pool.classes is not None, name)
    elif test_fraction:
        # Before the subsample: the test set depends only on the seed and the fraction.
        n_test = min(max(round(len(y) * test_fraction), 1), len(y) - 2)
        test, rest = _pick(y, n_test, test_rng if test_rng is not None else rng)
        x_test, y_test, x, y = x[test], y[test], x[rest], y[rest]
    if len(y) < 2:
        raise ValueError(f"data source {name!r} has {len(y)} samples; a train/val split needs >= 2")
    if max_samples is not None and max_samples < len(y):
        keep, _ = _pick(y, max_samples, rng)
        x, y = x[keep], y[keep]  # fancy indexing copies, so the full pool can be freed
    n_val = min(max(round(len(y) * val_fraction), 1), len(y) - 1)
    val, train = _pick(y, n_val, rng)
    x_train, x_val = x[train], x[val]
    shape = tuple(x.shape[1:])
    prep = pool.prep.fit(x_train) if pool.prep is not None else Preprocessing.identity(shape)
    x_train, x_val = prep.transform(x_train), prep.transform(x_val)
    if x_test is not None:
        x_test = prep.transform(x_test)
    return Dataset(x_train, y[train], x_val, y[val], shape, len(classes), name, classes,
                   x_test=x_test, y_test=y_test, preprocessing=prep.to_dict())


def _class_ids_of(labels: np.ndarray, classes: tuple, ids: bool, name: str) -> np.ndarray:
    """A published test set's labels as the train split's class ids."""
    labels = np.asarray(labels)
    if ids:
        return labels.astype(np.int64)
    known = np.asarray(classes)
    pos = np.clip(np.searchsorted(known, labels), 0, len(known) - 1)
    unknown = known[pos] != labels
    if unknown.any():
        raise ValueError(f"data source {name!r}: the test set has label {labels[unknown][0]!r}, "
                         "which the training data lacks")
    return pos.astype(np.int64)


_DICT_KEYS = ("x_train", "y_train", "x_val", "y_val")
_TEST_KEYS = ("x_test", "y_test")


def _presplit(result: Mapping[str, Any], name: str, rng: np.random.Generator,
              max_samples: int | None) -> Dataset:
    missing = [k for k in _DICT_KEYS if k not in result]
    missing += [k for k in _TEST_KEYS if (_TEST_KEYS[0] in result or _TEST_KEYS[1] in result) and k not in result]
    unknown = [k for k in result if k not in (*_DICT_KEYS, *_TEST_KEYS, "input_shape", "num_classes")]
    if missing or unknown:
        problem = (f"lacks {', '.join(missing)}" if missing
                   else f"has unknown keys {', '.join(map(str, unknown))}")
        raise ValueError(
            f"data source {name!r} returned a dict that {problem}; expected x_train, y_train, "
            "x_val, y_val and optionally x_test, y_test, input_shape, num_classes"
        )
    splits = ("train", "val", "test") if "x_test" in result else ("train", "val")
    arrays = {k: np.asarray(result[k]) for k in (*_DICT_KEYS, *_TEST_KEYS) if k in result}
    for split in splits:
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
            for split in splits:
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
        ys = [arrays[f"y_{split}"] for split in splits]
        y_all, classes = _labels(np.concatenate(ys), name)
        ends = np.cumsum([len(y) for y in ys])[:-1]
        for split, part in zip(splits, np.split(y_all, ends)):
            arrays[f"y_{split}"] = part
        num_classes = len(classes)
    x_train = arrays["x_train"]
    shape = input_shape if input_shape is not None else tuple(x_train.shape[1:])
    return Dataset(x_train, arrays["y_train"], arrays["x_val"], arrays["y_val"], shape,
                   num_classes, name, classes, x_test=arrays.get("x_test"), y_test=arrays.get("y_test"),
                   preprocessing=Preprocessing.identity(shape).to_dict())
