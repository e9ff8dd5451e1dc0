"""Readers of the built-in sources' files: scikit-learn's digits, IDX (MNIST), CIFAR-10 batches, CSV."""

from __future__ import annotations

import gzip
import importlib.util
import logging
import math
import os
import pickle
import shutil
import struct
import tarfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from raynas.errors import ConfigError, did_you_mean
from raynas.experiment import atomic_file
from raynas.trainables.data.dataset import _Pool
from raynas.trainables.data.download import _download, _md5
from raynas.trainables.data.preprocess import Preprocessing

logger = logging.getLogger(__name__)


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
    return _Pool(x, table[:, -1], Preprocessing.scale((1, 8, 8), 16.0))

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
        pool = _Pool(images[:, None, :, :], labels, Preprocessing.scale((1, *images.shape[1:]), 255.0))
        test = [_find_idx(path, source, s) for s in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
        if None in test:
            logger.warning("%s: no t10k-images/t10k-labels files in %s, so no test split (retrain and "
                           "compress score on the validation split instead)", source, path)
        else:
            pool.x_test, pool.y_test = _read_idx(test[0])[:, None, :, :], _read_idx(test[1])
            if pool.x_test.shape[1:] != pool.x.shape[1:] or len(pool.x_test) != len(pool.y_test):
                raise ValueError(f"{source}: the test images {pool.x_test.shape} in {test[0]} and labels "
                                 f"{pool.y_test.shape} do not match the training images {pool.x.shape}")
        return pool

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
    pool = _Pool(x, y, Preprocessing.channels((3, 32, 32)))
    test_file = os.path.join(folder, "test_batch")
    if os.path.isfile(test_file):
        pool.x_test, pool.y_test = _read_cifar_batch(test_file)
    else:
        logger.warning("cifar10: no test_batch in %s, so no test split (retrain and compress score on "
                       "the validation split instead)", folder)
    return pool


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
    # The levels in the order pandas.get_dummies gives them; the same encoder turns a user's
    # raw rows into features when an exported model predicts (raynas.winner).
    levels = {column: pd.Categorical(categorical[column]).categories.tolist() for column in categorical.columns}
    prep = Preprocessing.table(list(numeric.columns), levels, target)
    x = prep.encode_frame(features)
    bad = ~np.isfinite(x[:, : numeric.shape[1]]).all(axis=0)
    if bad.any():
        raise ValueError(f"csv {path}: infinite values in {', '.join(numeric.columns[bad])}")
    return _Pool(x, ids.astype(np.int64), prep, tuple(classes.tolist()))


def _missing_column(target: str, columns: Sequence[str], path: str) -> str:
    shown = ", ".join(map(str, columns[:30])) + (", ..." if len(columns) > 30 else "")
    return (
        f"column {target!r} is not in {path}; columns: {shown}"
        f"{did_you_mean(target, [str(c) for c in columns])}"
    )
