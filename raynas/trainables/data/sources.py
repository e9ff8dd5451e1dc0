"""The data-source registry: names to loaders, the checks run before Ray starts, and load_dataset."""

from __future__ import annotations

import csv
import gzip
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from raynas._imports import is_reference, load_reference
from raynas.errors import ConfigError, describe, did_you_mean
from raynas.trainables.data.dataset import Dataset, _is_int, _to_dataset
from raynas.trainables.data.readers import _CIFAR_DIR, _idx_loader, _load_cifar10, _load_csv, _load_digits, _missing_column

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


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

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
    test_fraction: float = 0.0,
) -> Dataset:
    """Loads a data source and splits it into train, validation and (optionally) test sets.

    The split is seeded and stratified where every class has at least two samples: the same
    seed gives the identical split, another seed a different one. Labels are remapped to
    ``0 .. K-1`` (sorted original labels; see ``Dataset.classes``).

    The test split is the published test set of mnist, fashion_mnist and cifar10 (where its
    files are in ``path``), or a seeded, stratified ``test_fraction`` of the other sources'
    samples, held out before ``max_samples`` and the validation split (so it depends only on
    ``seed`` and ``test_fraction``). Feature statistics come from the train split only.

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
        test_fraction: Share of the samples held out as the test split, in [0, 1) (0: none),
            for digits, csv and user sources that return ``(x, y)``.
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
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) \
            or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ConfigError(
            "data.test_fraction",
            f"must be a number in [0, 1) with val_fraction + test_fraction < 1, got {describe(test_fraction)} "
            f"(val_fraction {val_fraction:g})",
        )
    if test_fraction and source in _PUBLISHED_TEST:
        raise ConfigError(
            "data.test_fraction",
            f"source {source!r} holds out its official test set ({_PUBLISHED_TEST[source]}); "
            f"test_fraction applies to the other sources, got {test_fraction:g}",
        )
    params = dict(params or {})
    resolved = _resolve(path, base_dir) if path is not None else None
    if is_reference(source):
        result = load_reference(source, base_dir)(**params)
    else:
        load = _SOURCES[source].load
        result = load(path=resolved, target=target, download=download, params=params)
    rng = np.random.default_rng(seed)
    # Its own stream: the train/val split of test_fraction 0 is the one it always was.
    test_rng = np.random.default_rng((seed, 0x7E57))
    return _to_dataset(result, source, float(val_fraction), rng, max_samples, float(test_fraction), test_rng)

# ----------------------------------------------------------------------------------------------
# Built-in registrations
# ----------------------------------------------------------------------------------------------

#: The sources whose published test set is the test split.
_PUBLISHED_TEST = {"mnist": "t10k files, 10,000 images", "fashion_mnist": "t10k files, 10,000 images",
                   "cifar10": "test_batch, 10,000 images"}

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
