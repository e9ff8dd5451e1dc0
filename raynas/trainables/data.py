"""Data sources: a name (or ``package.module:function``) in, train/validation arrays out.

Built-in sources:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images), the offline default.
- ``mnist``, ``fashion_mnist``: the published IDX files in a local folder (``download: true``
  fetches them).
- ``cifar10``: the published python-pickle batches (``cifar-10-batches-py``).
- ``csv``: a CSV file with a ``target`` column.

A user source ``package.module:function`` is called as ``function(**params)`` and returns a
:class:`Dataset`, a tuple ``(x, y)`` or a dict ``{x_train, y_train, x_val, y_val}``.

Every source's training data is split into train and validation sets with a seeded, stratified
(where the class counts allow it) split; the test sets of the published data sets are left alone
for a final evaluation. The result holds plain contiguous numpy arrays: it is put into Ray's
object store once per experiment and read zero-copy by every trial.

This module imports neither torch nor scikit-learn, and pandas only for the csv source, so that
the command line starts fast.

Example:
    >>> data = load_dataset("digits", seed=0)
    >>> data.x_train.shape, data.x_val.shape, data.num_classes
    ((1438, 1, 8, 8), (359, 1, 8, 8), 10)
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import logging
import math
import numbers
import os
import pickle
import shutil
import struct
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raynas._imports import is_reference, load_reference
from raynas.errors import ConfigError, describe, did_you_mean
from raynas.experiment import atomic_file

__all__ = ["Dataset", "load_dataset", "check_data_args", "register_source", "source_names"]

logger = logging.getLogger(__name__)


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
# Source registry
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    load: Callable[..., Any]
    needs_path: bool = False
    needs_target: bool = False
    takes_params: bool = True
    path_kind: str | None = None  # "file" or "dir": what data.path must be
    path_hint: str = "a file or folder"
    downloadable: bool = False


_SOURCES: dict[str, _Source] = {}


def register_source(
    name: str, fn: Callable[..., Any], *, needs_path: bool = False, needs_target: bool = False
) -> Callable[..., Any]:
    """Registers a data source under ``name`` (a later registration replaces an earlier one).

    Args:
        name: The name used as ``data.source``; must not contain ``:``.
        fn: Called as ``fn(path=..., target=..., download=..., params=...)`` (``path`` already
            resolved to an absolute path, ``params`` a dict). Returns a :class:`Dataset`, a tuple
            ``(x, y)`` or a dict ``{x_train, y_train, x_val, y_val}``, like a user function.
        needs_path: ``data.path`` is required.
        needs_target: ``data.target`` is required.

    Returns:
        ``fn``.

    Example:
        >>> def blobs(path, target, download, params):
        ...     rng = np.random.default_rng(params.get("seed", 0))
        ...     return rng.normal(size=(100, 2)), np.arange(100) % 2
        >>> _ = register_source("blobs", blobs)
        >>> load_dataset("blobs").input_shape
        (2,)
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"a source name must be a non-empty string without ':', got {name!r}")
    if not callable(fn):
        raise TypeError(f"source {name!r} must be callable, got {describe(fn)}")
    _SOURCES[name] = _Source(fn, needs_path=needs_path, needs_target=needs_target)
    return fn


def source_names() -> list[str]:
    """Names of the registered data sources, sorted.

    Example:
        >>> {"digits", "mnist", "fashion_mnist", "cifar10", "csv"} <= set(source_names())
        True
    """
    return sorted(_SOURCES)




def _resolve(path: str | os.PathLike, base_dir: str | os.PathLike | None) -> str:
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isabs(path) and base_dir is not None:
        path = os.path.join(os.fspath(base_dir), path)
    return os.path.abspath(path)


# ----------------------------------------------------------------------------------------------
# Config-time checks
# ----------------------------------------------------------------------------------------------


def check_data_args(
    source: str,
    path: str | os.PathLike | None,
    target: str | None,
    base_dir: str | os.PathLike | None,
    *,
    download: bool = False,
    params: Mapping[str, Any] | None = None,
) -> None:
    """Cheap checks of the ``data`` section, before Ray starts; loads no data.

    Checks that the source exists (a ``package.module:function`` is imported), that ``path`` is
    given where needed and exists (relative paths resolve against ``base_dir``; a missing path
    is fine with ``download``), that ``target`` is given for csv and names a column of the file's
    header, and that no key is given that the source would ignore.

    Args:
        source: ``data.source``.
        path: ``data.path``.
        target: ``data.target``.
        base_dir: The experiment file's folder.
        download: ``data.download``.
        params: ``data.params``.

    Raises:
        ConfigError: With key path ``data.source``, ``data.path``, ``data.target`` or
            ``data.params``, the rule and the value.

    Example:
        >>> check_data_args("digits", None, None, None)
        >>> check_data_args("csv", None, "label", None)
        Traceback (most recent call last):
        ...
        raynas.errors.ConfigError: data.path: source 'csv' needs a path: the CSV file
    """
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(
            "data.source",
            f"must be a source name or 'package.module:function', got {describe(source)}",
        )
    if is_reference(source):
        _check_reference(source, base_dir)
        for key, value in (("path", path), ("target", target)):
            if value is not None:
                raise ConfigError(
                    f"data.{key}",
                    "a user source gets its inputs only from data.params, "
                    f"got {key}={describe(value)}",
                )
        if params is not None and not isinstance(params, Mapping):
            raise ConfigError("data.params", f"must be a mapping, got {describe(params)}")
        return
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ConfigError("data.path", f"must be a string, got {describe(path)}")
    spec = _SOURCES.get(source)
    if spec is None:
        known = source_names()
        raise ConfigError(
            "data.source",
            f"unknown data source {source!r}; known sources: {', '.join(known)}"
            f"{did_you_mean(source, known)} (or name your own as 'package.module:function')",
        )
    if params is not None and not isinstance(params, Mapping):
        raise ConfigError("data.params", f"must be a mapping, got {describe(params)}")
    if params and not spec.takes_params:
        raise ConfigError(
            "data.params", f"source {source!r} takes no params, got {describe(dict(params))}"
        )

    resolved = None
    if spec.needs_path:
        if path is None or (isinstance(path, str) and not path.strip()):
            raise ConfigError("data.path", f"source {source!r} needs a path: {spec.path_hint}")
        resolved = _resolve(path, base_dir)
        if not os.path.exists(resolved):
            if not (download and spec.downloadable):
                fix = "; set download: true to fetch it there" if spec.downloadable else ""
                raise ConfigError(
                    "data.path", f"{os.fspath(path)!r} does not exist (resolved to {resolved}){fix}"
                )
        elif spec.path_kind == "file" and not os.path.isfile(resolved):
            raise ConfigError("data.path", f"expected {spec.path_hint}, but {resolved} is a folder")
        elif spec.path_kind == "dir" and not os.path.isdir(resolved):
            raise ConfigError("data.path", f"expected {spec.path_hint}, but {resolved} is a file")
    elif path is not None:
        raise ConfigError(
            "data.path",
            f"source {source!r} reads no path, got {describe(os.fspath(path))}; remove data.path "
            "or pick the source that reads it (e.g. csv, mnist)",
        )

    if spec.needs_target:
        if not isinstance(target, str) or not target:
            raise ConfigError(
                "data.target",
                f"source {source!r} needs target: the name of the label column, "
                f"got {describe(target)}",
            )
        if source == "csv" and resolved is not None and os.path.isfile(resolved):
            columns = _csv_header(resolved, params or {})
            if columns is not None and target not in columns:
                raise ConfigError("data.target", _missing_column(target, columns, resolved))
    elif target is not None:
        raise ConfigError(
            "data.target", f"source {source!r} uses no target column, got {describe(target)}"
        )


def _check_reference(source: str, base_dir: str | os.PathLike | None) -> None:
    try:
        fn = load_reference(source, base_dir)
    except Exception as err:  # any failure while importing user code is a config error here
        raise ConfigError(
            "data.source", f"cannot import {source!r}: {type(err).__name__}: {err}"
        ) from err
    if not callable(fn):
        raise ConfigError("data.source", f"{source!r} is not callable: {describe(fn)}")


def _csv_header(path: str, params: Mapping[str, Any]) -> list[str] | None:
    """The column names of a plain or gzipped CSV file, or None where that is not cheap."""
    if set(params) - {"sep", "delimiter", "encoding"}:
        return None  # other read_csv options (header=None, skiprows...) change what a header is
    sep = params.get("sep", params.get("delimiter", ","))
    if not isinstance(sep, str) or len(sep) != 1:
        return None
    # utf-8-sig: a byte-order mark is no part of the first name (pandas strips it too).
    encoding = params.get("encoding", "utf-8-sig")
    opener = gzip.open if path.endswith(".gz") else open
    if path.endswith((".zip", ".bz2", ".xz", ".zst", ".tar")):
        return None
    try:
        with opener(path, "rt", encoding=encoding, newline="") as f:
            return next(csv.reader(f, delimiter=sep), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None  # let pandas report it when the data is read


def _missing_column(target: str, columns: Sequence[str], path: str) -> str:
    shown = ", ".join(map(str, columns[:30])) + (", ..." if len(columns) > 30 else "")
    return (
        f"column {target!r} is not in {path}; columns: {shown}"
        f"{did_you_mean(target, [str(c) for c in columns])}"
    )


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


def load_dataset(
    source: str,
    *,
    path: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    target: str | None = None,
    download: bool = False,
    max_samples: int | None = None,
    params: Mapping[str, Any] | None = None,
    base_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Loads a data source and splits its training data into train and validation sets.

    The split is seeded and stratified where every class has at least two samples: the same
    seed gives the identical split, another seed a different one. Labels are remapped to
    ``0 .. K-1`` (sorted original labels; see ``Dataset.classes``).

    Args:
        source: ``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``csv``, another
            registered name, or ``package.module:function``.
        path: Folder (mnist, fashion_mnist, cifar10) or file (csv); relative to ``base_dir``.
        val_fraction: Share of the samples held out for validation, in (0, 1).
        seed: Seed of the subsample and the split.
        target: The label column (csv).
        download: Fetch missing mnist/fashion_mnist/cifar10 files into ``path``.
        max_samples: Use at most this many samples in all (train + validation), a seeded
            stratified subsample, for quick runs. A user function's Dataset is used as is.
        params: Keyword arguments of a user function; for csv, extra ``pandas.read_csv``
            options (e.g. ``{"sep": ";"}``).
        base_dir: The experiment file's folder.

    Returns:
        A :class:`Dataset`.

    Raises:
        ConfigError: A ``data`` value breaks a rule (see :func:`check_data_args`).
        FileNotFoundError: Published data files are missing and ``download`` is false.
        TypeError, ValueError: A user function returned something unusable, or a file is
            malformed.

    Example:
        >>> a = load_dataset("digits", seed=1, max_samples=500)
        >>> b = load_dataset("digits", seed=1, max_samples=500)
        >>> len(a.x_train), len(a.x_val), bool((a.x_val == b.x_val).all())
        (400, 100, True)
    """
    check_data_args(source, path, target, base_dir, download=download, params=params)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) \
            or not 0 < val_fraction < 1:
        raise ConfigError(
            "data.val_fraction", f"must be a number in (0, 1), got {describe(val_fraction)}"
        )
    if not _is_int(seed, minimum=0):
        raise ConfigError("data.seed", f"must be an int >= 0, got {describe(seed)}")
    if max_samples is not None and not _is_int(max_samples, minimum=2):
        raise ConfigError(
            "data.max_samples", f"must be an int >= 2 or null, got {describe(max_samples)}"
        )
    params = dict(params or {})
    resolved = _resolve(path, base_dir) if path is not None else None
    if is_reference(source):
        result = load_reference(source, base_dir)(**params)
    else:
        load = _SOURCES[source].load
        result = load(path=resolved, target=target, download=download, params=params)
    rng = np.random.default_rng(seed)
    return _to_dataset(result, source, float(val_fraction), rng, max_samples)


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


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------


def _digits_file() -> str:
    # find_spec locates the package without importing it (sklearn.datasets costs seconds).
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        "the 'digits' source reads the copy bundled with scikit-learn "
        "(sklearn/datasets/data/digits.csv.gz), which was not found; pip install scikit-learn"
    )


def _load_digits(path: str | None, target: str | None, download: bool, params: dict) -> _Pool:
    with gzip.open(_digits_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    # Same layout as sklearn.datasets.load_digits: 64 pixel values (0..16), then the label.
    x = table[:, :-1].reshape(-1, 1, 8, 8)
    return _Pool(x, table[:, -1], _scaler(16.0))


def _scaler(top: float) -> _Transform:
    def scale(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return tuple(np.divide(x, np.float32(top), dtype=np.float32) for x in (x_train, x_val))

    return scale


# ----------------------------------------------------------------------------------------------
# Downloads (only on request; never in tests)
# ----------------------------------------------------------------------------------------------


def _md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # the published checksums are MD5
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(urls: Sequence[str], dest: str, md5: str | None) -> None:
    """Fetches the first URL that works into ``dest`` atomically, checked against ``md5``."""
    import urllib.request  # here: it costs start-up time and only downloads need it
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    errors = []
    for url in urls:
        try:
            logger.info("downloading %s to %s", url, dest)
            request = urllib.request.Request(url, headers={"User-Agent": "raynas"})
            with atomic_file(dest, "wb") as out, urllib.request.urlopen(request, timeout=60) as resp:
                digest = hashlib.md5()
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
                if md5 is not None and digest.hexdigest() != md5:  # raised inside: dest is untouched
                    raise ValueError(f"checksum mismatch: md5 {digest.hexdigest()}, expected {md5}")
            return
        except (OSError, ValueError) as err:
            errors.append(f"{url}: {err}")
    raise OSError(f"could not download {os.path.basename(dest)}: " + "; ".join(errors))


# ----------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (IDX files)
# ----------------------------------------------------------------------------------------------

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_IDX_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}
_IDX_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
_IDX_SUBDIRS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # torchvision's layout


def _read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (plain or gzip, told apart by content), as published by LeCun et al."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with (gzip.open if gzipped else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (magic number {data[:4].hex() or 'missing'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: IDX dims {dims} need {expected} bytes, the file has {len(data)}")
    return np.frombuffer(data, dtype, offset=header).reshape(dims)


def _find_idx(folder: str, source: str, stem: str) -> str | None:
    torchvision_layout = os.path.join(folder, _IDX_SUBDIRS[source], "raw")
    folders = (folder, os.path.join(folder, "raw"), torchvision_layout)
    # The Kaggle copies spell the stem with a dot: train-images.idx3-ubyte.
    names = (stem, stem.replace("-idx", ".idx"))
    for d in folders:
        for name in names:
            for ext in ("", ".gz"):
                candidate = os.path.join(d, name + ext)
                if os.path.isfile(candidate):
                    return candidate
    return None


def _idx_loader(source: str) -> Callable[..., _Pool]:
    def load(path: str, target: str | None, download: bool, params: dict) -> _Pool:
        stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
        found = [_find_idx(path, source, s) for s in stems]
        if None in found:
            if not download:
                raise FileNotFoundError(
                    f"{source}: expected {stems[0]}[.gz] and {stems[1]}[.gz] in {path}; "
                    f"set `download: true` under data to fetch them from {_IDX_MIRRORS[source][0]}"
                )
            for filename, md5 in _IDX_MD5[source].items():
                dest = os.path.join(path, filename)
                if not os.path.isfile(dest):
                    _download([m + filename for m in _IDX_MIRRORS[source]], dest, md5)
            found = [_find_idx(path, source, s) for s in stems]
        images, labels = _read_idx(found[0]), _read_idx(found[1])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{source}: images {images.shape} in {found[0]} and labels {labels.shape} in "
                f"{found[1]} do not match; expected (N, H, W) and (N,)"
            )
        if images.dtype != np.uint8:
            raise ValueError(f"{source}: expected uint8 images in {found[0]}, got {images.dtype}")
        return _Pool(images[:, None, :, :], labels, _scaler(255.0))

    return load


# ----------------------------------------------------------------------------------------------
# CIFAR-10 (python pickle batches)
# ----------------------------------------------------------------------------------------------

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch but nothing else: a pickle can run any code it names."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays "
                "and lists"
            )
        return super().find_class(module, name)


def _cifar_folder(path: str) -> str | None:
    for folder in (os.path.join(path, _CIFAR_DIR), path):
        if all(os.path.isfile(os.path.join(folder, b)) for b in _CIFAR_BATCHES):
            return folder
    return None


def _extract_cifar(archive: str, path: str) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            # Only the batch files, by a name we build ourselves: nothing outside `path`.
            if member.isfile() and len(parts) == 2 and parts[0] == _CIFAR_DIR and parts[1] \
                    and parts[1] not in (".", ".."):
                dest = os.path.join(path, _CIFAR_DIR, parts[1])
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with atomic_file(dest, "wb") as out, tar.extractfile(member) as src:
                    shutil.copyfileobj(src, out, 1 << 20)


def _read_cifar_batch(file: str) -> tuple[np.ndarray, np.ndarray]:
    with open(file, "rb") as f:
        batch = _BatchUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise ValueError(
            f"{file}: expected a dict with data and labels, got {type(batch).__name__}"
        )
    get = lambda key: batch.get(key.encode(), batch.get(key))  # noqa: E731 - bytes or str keys
    data, labels = get("data"), get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise ValueError(f"{file}: not a CIFAR-10 batch (needs 'data' and 'labels')")
    labels = np.asarray(labels)
    if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32
            or len(labels) != len(data)):
        raise ValueError(
            f"{file}: expected uint8 data (N, 3072) and N labels, got {data.dtype} {data.shape} "
            f"and {len(labels)} labels"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(path: str, target: str | None, download: bool, params: dict) -> _Pool:
    folder = _cifar_folder(path)
    if folder is None:
        if not download:
            raise FileNotFoundError(
                f"cifar10: expected {', '.join(_CIFAR_BATCHES)} in {path} or in "
                f"{os.path.join(path, _CIFAR_DIR)}; set `download: true` under data to fetch "
                f"{_CIFAR_URL}"
            )
        archive = os.path.join(path, os.path.basename(_CIFAR_URL))
        if not os.path.isfile(archive) or _md5(archive) != _CIFAR_MD5:
            _download([_CIFAR_URL], archive, _CIFAR_MD5)
        _extract_cifar(archive, path)
        folder = os.path.join(path, _CIFAR_DIR)
    parts = [_read_cifar_batch(os.path.join(folder, b)) for b in _CIFAR_BATCHES]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return _Pool(x, y, _standardize_channels)


def _standardize_channels(
    x_train: np.ndarray, x_val: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (x - mean) / std of uint8 images with the train split's statistics, into
    float32, in chunks of images so that no full-size temporary is made."""
    chunk = 4096
    axes = (0, 2, 3)
    total = np.zeros(x_train.shape[1], np.uint64)
    squares = np.zeros(x_train.shape[1], np.uint64)
    for start in range(0, len(x_train), chunk):
        part = x_train[start:start + chunk]
        # Integer sums are exact (255**2 fits uint16), so the variance has no rounding drift.
        total += part.sum(axis=axes, dtype=np.uint64)
        squares += np.square(part, dtype=np.uint16).sum(axis=axes, dtype=np.uint64)
    count = x_train.size // x_train.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std[std == 0] = 1.0  # a constant channel stays constant (0) instead of NaN
    shift = mean.astype(np.float32)[None, :, None, None]
    scale = (1.0 / std).astype(np.float32)[None, :, None, None]
    out = []
    for x in (x_train, x_val):
        result = np.empty(x.shape, np.float32)
        for start in range(0, len(x), chunk):
            view = result[start:start + chunk]
            np.subtract(x[start:start + chunk], shift, out=view, dtype=np.float32)
            view *= scale
        out.append(result)
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------


def _load_csv(path: str, target: str, download: bool, params: dict) -> _Pool:
    import pandas as pd  # here, not at module level: only csv needs it

    frame = pd.read_csv(path, **params)
    if target not in frame.columns:
        columns = list(map(str, frame.columns))
        raise ConfigError("data.target", _missing_column(target, columns, path))
    rows = len(frame)
    frame = frame.dropna()
    if len(frame) < rows:
        logger.warning(
            "csv %s: dropped %d of %d rows with missing values", path, rows - len(frame), rows
        )
    labels = frame[target]
    if labels.dtype.kind == "f" and not np.all(np.mod(labels.to_numpy(), 1) == 0):
        raise ValueError(
            f"csv {path}: target column {target!r} holds non-integral numbers; raynas trains "
            "classifiers, so the target must hold class ids or names"
        )
    ids, classes = pd.factorize(labels, sort=True)
    features = frame.drop(columns=[target])
    numeric = features.select_dtypes(include="number")
    categorical = features.drop(columns=numeric.columns)
    if features.shape[1] == 0:
        raise ValueError(f"csv {path}: no feature columns besides the target {target!r}")
    for column in categorical.columns:
        distinct = categorical[column].nunique()
        if distinct > 100:
            logger.warning(
                "csv %s: column %r has %d distinct values, one-hot encoded into as many features; "
                "drop it if it is an identifier", path, column, distinct,
            )
    parts = [numeric.to_numpy(np.float32)]
    if categorical.shape[1]:  # pandas 3's get_dummies fails on no columns
        parts.append(pd.get_dummies(categorical, columns=list(categorical.columns), dtype=np.float32).to_numpy(np.float32))
    x = np.concatenate(parts, axis=1)
    bad = ~np.isfinite(x[:, : numeric.shape[1]]).all(axis=0)
    if bad.any():
        raise ValueError(f"csv {path}: infinite values in {', '.join(numeric.columns[bad])}")
    return _Pool(x, ids.astype(np.int64), _standardize_columns(numeric.shape[1]),
                 tuple(classes.tolist()))


def _standardize_columns(n_numeric: int) -> _Transform:
    """Standardizes the first ``n_numeric`` columns with train statistics; one-hot ones stay 0/1."""

    def standardize(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x_train, x_val = x_train.astype(np.float32), x_val.astype(np.float32)  # copies
        if n_numeric:
            mean = x_train[:, :n_numeric].mean(axis=0, dtype=np.float64)
            std = x_train[:, :n_numeric].std(axis=0, dtype=np.float64)
            std[std == 0] = 1.0  # a constant column stays constant (0) instead of NaN
            for x in (x_train, x_val):
                x[:, :n_numeric] = (x[:, :n_numeric] - mean) / std
        return x_train, x_val

    return standardize


# ----------------------------------------------------------------------------------------------
# Built-in registrations
# ----------------------------------------------------------------------------------------------

_SOURCES["digits"] = _Source(_load_digits, takes_params=False)
for _name in ("mnist", "fashion_mnist"):
    _SOURCES[_name] = _Source(
        _idx_loader(_name), needs_path=True, takes_params=False, path_kind="dir",
        path_hint="the folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]",
        downloadable=True,
    )
_SOURCES["cifar10"] = _Source(
    _load_cifar10, needs_path=True, takes_params=False, path_kind="dir",
    path_hint=f"the folder with {_CIFAR_DIR} (or its data_batch_1..5)", downloadable=True,
)
_SOURCES["csv"] = _Source(
    _load_csv, needs_path=True, needs_target=True, path_kind="file", path_hint="the CSV file",
)
del _name
