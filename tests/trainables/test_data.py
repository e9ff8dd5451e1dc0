"""Tests for raynas.trainables.data: real files in the published formats, no mocks, no network."""

from __future__ import annotations

import doctest
import gzip
import hashlib
import logging
import os
import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from raynas.errors import ConfigError
from raynas.trainables import data as data_mod
from raynas.trainables.data import dataset, download, readers, sources
from raynas.trainables.data import Dataset, check_data_args, load_dataset, source_names


def _rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rows of (features..., label) in a canonical order, to compare multisets of samples."""
    table = np.column_stack([x.reshape(len(x), -1).astype(np.float64), y])
    return table[np.lexsort(table.T[::-1])]


# -- digits ------------------------------------------------------------------------------------


def test_digits_matches_sklearn_load_digits_up_to_the_split():
    from sklearn.datasets import load_digits

    reference = load_digits()
    data = load_dataset("digits", seed=3)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10 and data.name == "digits"
    assert data.classes == tuple(range(10))
    assert len(data.x_train) + len(data.x_val) == len(reference.data) == 1797
    x = np.concatenate([data.x_train, data.x_val])
    y = np.concatenate([data.y_train, data.y_val])
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(_rows(x * 16, y), _rows(reference.data, reference.target))


def test_digits_loads_without_importing_sklearn_or_torch():
    code = textwrap.dedent("""
        import sys
        from raynas.trainables.data import load_dataset
        load_dataset("digits")
        loaded = [m for m in ("sklearn", "torch", "pandas") if m in sys.modules]
        assert not loaded, loaded
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_arrays_are_plain_contiguous_numpy():
    data = load_dataset("digits")
    for a in (data.x_train, data.x_val):
        assert type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous
    for a in (data.y_train, data.y_val):
        assert type(a) is np.ndarray and a.dtype == np.int64 and a.flags.c_contiguous
    arrays = (data.x_train, data.y_train, data.x_val, data.y_val)
    assert data.nbytes == sum(a.nbytes for a in arrays)
    assert "train=1438, val=359" in repr(data) and len(repr(data)) < 200
    # Ray's object store pickles with protocol 5: the four arrays must travel out of band
    # (zero-copy reads in every trial), leaving only a small in-band header.
    buffers: list = []
    header = pickle.dumps(data, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 4 and len(header) < 1000
    clone = pickle.loads(header, buffers=buffers)
    np.testing.assert_array_equal(clone.x_val, data.x_val)


# -- the split ---------------------------------------------------------------------------------


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = (load_dataset("digits", seed=s) for s in (7, 7, 8))
    for name in ("x_train", "y_train", "x_val", "y_val"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.x_val, c.x_val)


def test_split_is_stratified():
    data = load_dataset("digits", val_fraction=0.25, seed=1)
    pool = np.bincount(np.concatenate([data.y_train, data.y_val]))
    val = np.bincount(data.y_val, minlength=10)
    assert val.sum() == round(1797 * 0.25)
    assert np.all(np.abs(val - pool * 0.25) <= 1)


def test_max_samples_subsamples_with_stratification_and_a_seed():
    a = load_dataset("digits", max_samples=200, val_fraction=0.2, seed=5)
    b = load_dataset("digits", max_samples=200, val_fraction=0.2, seed=5)
    assert (len(a.x_train), len(a.x_val)) == (160, 40)
    assert a.num_classes == 10 and np.all(np.bincount(a.y_val, minlength=10) == 4)
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_split_falls_back_to_random_when_a_class_is_too_small():
    rng = np.random.default_rng(0)
    y = np.array([0] * 10 + [1] * 9 + [2])  # class 2 has one sample: cannot be stratified
    picked, rest = dataset._pick(y, 5, rng)
    assert len(picked) == 5 and len(rest) == 15
    assert sorted(np.concatenate([picked, rest]).tolist()) == list(range(20))


def test_stratified_pick_keeps_every_class_on_both_sides():
    y = np.repeat(np.arange(5), [2, 3, 50, 7, 2])
    for seed in range(20):
        picked, rest = dataset._pick(y, 10, np.random.default_rng(seed))
        assert len(picked) == 10 and set(y[picked]) == set(y[rest]) == set(range(5))


# -- MNIST / Fashion-MNIST IDX -----------------------------------------------------------------


def _write_idx(path: str, array: np.ndarray, gz: bool) -> None:
    magic = bytes([0, 0, 0x08, array.ndim])  # unsigned byte, then the number of dims
    dims = struct.pack(f">{array.ndim}I", *array.shape)  # big-endian uint32 sizes
    payload = magic + dims + array.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)


def _mnist_like(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)  # pixel (0, 0) tells which image a row came from
    return images, (np.arange(n) % 10).astype(np.uint8)


@pytest.mark.parametrize(
    "source, gz, subdir",
    [("mnist", False, ""), ("mnist", True, ""), ("fashion_mnist", True, "FashionMNIST/raw"),
     ("fashion_mnist", False, "raw")],
)
def test_idx_files_are_read(tmp_path, source, gz, subdir):
    images, labels = _mnist_like()
    folder = tmp_path / subdir
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    _write_idx(str(folder / f"train-images-idx3-ubyte{ext}"), images, gz)
    _write_idx(str(folder / f"train-labels-idx1-ubyte{ext}"), labels, gz)
    data = load_dataset(source, path=str(tmp_path), val_fraction=0.5, seed=0)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and data.name == source
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val)):
        index = np.rint(x[:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_array_equal(x[:, 0] * 255, images[index].astype(np.float32))
        np.testing.assert_array_equal(y, labels[index])
    assert np.all(np.bincount(data.y_val) == 3)


def test_idx_relative_path_resolves_against_base_dir(tmp_path):
    images, labels = _mnist_like(20)
    (tmp_path / "mnist").mkdir()
    _write_idx(str(tmp_path / "mnist" / "train-images-idx3-ubyte"), images, False)
    _write_idx(str(tmp_path / "mnist" / "train-labels-idx1-ubyte"), labels, False)
    data = load_dataset("mnist", path="mnist", base_dir=str(tmp_path))
    assert len(data.x_train) + len(data.x_val) == 20


def test_missing_idx_files_say_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", path=str(tmp_path))
    message = str(info.value)
    assert "train-images-idx3-ubyte[.gz]" in message and "train-labels-idx1-ubyte[.gz]" in message
    assert str(tmp_path) in message and "download: true" in message


def test_malformed_idx_files_are_rejected(tmp_path):
    images, labels = _mnist_like(10)
    _write_idx(str(tmp_path / "train-labels-idx1-ubyte"), labels, False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x07\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match="is not an IDX file"):
        load_dataset("mnist", path=str(tmp_path))
    _write_idx(str(tmp_path / "train-images-idx3-ubyte"), images, False)
    with open(tmp_path / "train-images-idx3-ubyte", "ab") as f:
        f.write(b"extra")
    with pytest.raises(ValueError, match=r"dims \(10, 28, 28\) need 7856 bytes, the file has 7861"):
        load_dataset("mnist", path=str(tmp_path))


# -- CIFAR-10 pickle batches -------------------------------------------------------------------


def _write_cifar(folder, n: int = 8, legacy_from: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Five batches as published (dict with bytes keys); batches >= legacy_from name numpy's
    pre-2.0 module in the pickle, as the original Python 2 files do."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    all_data, all_labels = [], []
    for b in range(1, 6):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        data[:, 0] = np.arange(n) + (b - 1) * n  # red pixel (0, 0) identifies the image
        labels = [int(v) for v in rng.integers(0, 4, size=n)]
        batch = {
            b"batch_label": f"training batch {b} of 5".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{b}_{i}.png".encode() for i in range(n)],
        }
        raw = pickle.dumps(batch, protocol=2)
        if b >= legacy_from:
            legacy = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            assert legacy != raw
            raw = legacy
        with open(os.path.join(folder, f"data_batch_{b}"), "wb") as f:
            f.write(raw)
        all_data.append(data)
        all_labels += labels
    return np.concatenate(all_data).reshape(-1, 3, 32, 32), np.array(all_labels)


@pytest.mark.parametrize("inner", [True, False], ids=["parent-folder", "batches-folder"])
def test_cifar10_batches_are_read_and_standardized_with_train_statistics(tmp_path, inner):
    folder = tmp_path / "cifar-10-batches-py"
    raw, labels = _write_cifar(folder)
    data = load_dataset("cifar10", path=str(tmp_path if inner else folder), val_fraction=0.25)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 4
    assert (len(data.x_train), len(data.x_val)) == (30, 10)
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=(0, 2, 3)), 1, atol=1e-5)
    # Standardizing is increasing, so the rank of the red (0, 0) pixel recovers each image.
    marker = np.concatenate([data.x_train, data.x_val])[:, 0, 0, 0]
    index = np.empty(40, int)
    index[np.argsort(marker)] = np.arange(40)
    train_idx, val_idx = index[:30], index[30:]
    np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_val]), labels[index])
    mean = raw[train_idx].mean(axis=(0, 2, 3), dtype=np.float64)[None, :, None, None]
    std = raw[train_idx].std(axis=(0, 2, 3), dtype=np.float64)[None, :, None, None]
    np.testing.assert_allclose(data.x_val, (raw[val_idx] - mean) / std, atol=1e-5)


def test_cifar10_refuses_a_pickle_that_runs_code(tmp_path):
    _write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_dataset("cifar10", path=str(tmp_path))


def test_cifar10_missing_batches_say_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_batch_1, .*data_batch_5 .*download: true"):
        load_dataset("cifar10", path=str(tmp_path))


def test_download_is_atomic_and_checks_the_checksum(tmp_path):
    """Exercises the download helper with file:// URLs (local, no network)."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"published bytes")
    md5 = hashlib.md5(b"published bytes").hexdigest()
    dest = tmp_path / "out" / "file.gz"
    download._download(["file:///nonexistent/mirror.bin", src.as_uri()], str(dest), md5)
    assert dest.read_bytes() == b"published bytes"
    other = tmp_path / "out" / "other.gz"
    with pytest.raises(OSError, match="checksum mismatch"):
        download._download([src.as_uri()], str(other), "0" * 32)
    assert sorted(os.listdir(tmp_path / "out")) == ["file.gz"]  # no partial or temp files


# -- CSV ---------------------------------------------------------------------------------------

CSV_TEXT = """\
age,income,city,label
25,50000,paris,cat
32,,berlin,dog
47,82000,paris,dog
51,61000,rome,bird
23,48000,berlin,cat
36,70000,rome,dog
29,52000,,cat
44,90000,paris,bird
38,66000,berlin,dog
27,51000,rome,cat
41,75000,paris,bird
33,64000,berlin,dog
30,58000,rome,cat
49,88000,paris,bird
"""


def test_csv_one_hot_standardizes_and_drops_missing_rows(tmp_path, caplog):
    path = tmp_path / "people.csv"
    path.write_text(CSV_TEXT)
    with caplog.at_level(logging.WARNING, logger="raynas.trainables.data"):
        data = load_dataset("csv", path=str(path), target="label", val_fraction=0.25, seed=0)
    assert "dropped 2 of 14 rows with missing values" in caplog.text
    # age, income, then city_berlin, city_paris, city_rome
    assert data.input_shape == (5,) and data.classes == ("bird", "cat", "dog")
    assert len(data.x_train) + len(data.x_val) == 12 and len(data.x_val) == 3
    np.testing.assert_allclose(data.x_train[:, :2].mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(data.x_train[:, :2].std(axis=0), 1, atol=1e-5)
    onehot = np.concatenate([data.x_train[:, 2:], data.x_val[:, 2:]])
    assert set(np.unique(onehot)) == {0.0, 1.0} and np.all(onehot.sum(axis=1) == 1)
    # The relation between features and labels survives: every 'bird' row is in paris or rome.
    x = np.concatenate([data.x_train, data.x_val])
    y = np.concatenate([data.y_train, data.y_val])
    assert np.all(x[y == 0, 2] == 0)


def test_csv_read_options_and_a_gzipped_file(tmp_path):
    path = tmp_path / "semi.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(CSV_TEXT.replace(",", ";"))
    data = load_dataset("csv", path=str(path), target="label", params={"sep": ";"})
    assert data.input_shape == (5,)


def test_csv_unknown_target_lists_columns_and_suggests(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(CSV_TEXT)
    with pytest.raises(ConfigError) as info:
        load_dataset("csv", path=str(path), target="lable")
    assert info.value.path == "data.target"
    assert "column 'lable' is not in" in info.value.message
    assert "columns: age, income, city, label" in info.value.message
    assert "did you mean 'label'?" in info.value.message


def test_csv_regression_target_is_rejected(tmp_path):
    path = tmp_path / "reg.csv"
    path.write_text("a,y\n1,0.5\n2,1.5\n3,2.25\n4,0.5\n")
    with pytest.raises(ValueError, match="non-integral numbers"):
        load_dataset("csv", path=str(path), target="y")


# -- user functions ----------------------------------------------------------------------------

USER_MODULE = '''
import numpy as np
from raynas.trainables.data import Dataset

def as_tuple(n=40, features=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, features)), np.where(np.arange(n) % 2 == 0, 10, 20)

def as_dict(flat=False):
    rng = np.random.default_rng(1)
    x_train, x_val = rng.normal(size=(30, 2, 4, 4)), rng.normal(size=(10, 2, 4, 4))
    out = {"x_train": x_train, "y_train": np.arange(30) % 3, "x_val": x_val,
           "y_val": np.arange(10) % 3}
    if flat:
        out.update(x_train=x_train.reshape(30, -1), x_val=x_val.reshape(10, -1),
                   input_shape=(2, 4, 4))
    return out

def as_dataset():
    x = np.ones((6, 2), np.float64)
    return Dataset(x, [0, 1, 0, 1, 0, 1], x[:2], [1, 0], (2,), 2, "mine")

def as_list():
    return [1, 2]

def missing_keys():
    return {"x_train": np.zeros((2, 2)), "y_train": [0, 1]}

def with_nan():
    x = np.zeros((4, 2)); x[1, 1] = np.nan
    return x, np.array([0, 1, 0, 1])
'''


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "my_nas_data.py").write_text(USER_MODULE)
    return str(tmp_path)


def test_user_function_returning_a_tuple_is_split(user_dir):
    data = load_dataset("my_nas_data:as_tuple", params={"n": 50, "features": 4}, base_dir=user_dir)
    assert data.input_shape == (4,) and data.classes == (10, 20) and data.num_classes == 2
    assert (len(data.x_train), len(data.x_val)) == (40, 10) and data.name == "my_nas_data:as_tuple"
    assert set(data.y_train) == {0, 1} and data.x_train.dtype == np.float32


def test_user_function_returning_a_dict_is_used_presplit(user_dir):
    data = load_dataset("my_nas_data:as_dict", base_dir=user_dir)
    assert data.input_shape == (2, 4, 4) and (len(data.x_train), len(data.x_val)) == (30, 10)
    flat = load_dataset("my_nas_data:as_dict", params={"flat": True}, base_dir=user_dir)
    assert flat.input_shape == (2, 4, 4)
    np.testing.assert_array_equal(flat.x_val, data.x_val)
    small = load_dataset("my_nas_data:as_dict", max_samples=20, base_dir=user_dir)
    assert (len(small.x_train), len(small.x_val)) == (15, 5)


def test_user_function_returning_a_dataset_is_used_as_is(user_dir):
    data = load_dataset("my_nas_data:as_dataset", base_dir=user_dir, max_samples=2)
    assert data.name == "mine" and (len(data.x_train), len(data.x_val)) == (6, 2)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64


@pytest.mark.parametrize(
    "fn, error, match",
    [
        ("as_list", TypeError, "returned list; expected a raynas Dataset, a tuple"),
        ("missing_keys", ValueError, "lacks x_val, y_val"),
        ("with_nan", ValueError, "x has 1 NaN or infinite values"),
    ],
)
def test_user_function_results_are_validated(user_dir, fn, error, match):
    with pytest.raises(error, match=match):
        load_dataset(f"my_nas_data:{fn}", base_dir=user_dir)


def test_dataset_validates_its_arrays():
    x, y = np.zeros((4, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="x_train has 4 rows but y_train has 3"):
        Dataset(x, y[:3], x, y, (3,), 2)
    with pytest.raises(ValueError, match=r"samples of shape \(3,\), but input_shape is \(1, 3\)"):
        Dataset(x, y, x, y, (1, 3), 2)
    with pytest.raises(ValueError, match=r"y_val must hold class ids 0\.\.1, found 0\.\.2"):
        Dataset(x, y, x, y + y, (3,), 2)
    with pytest.raises(ValueError, match="non-integral"):
        Dataset(x, y + 0.5, x, y, (3,), 2)


# -- config-time checks ------------------------------------------------------------------------


def _config_error(*args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check_data_args(*args, **kwargs)
    return info.value


def test_check_unknown_source_lists_known_ones_and_suggests():
    err = _config_error("mnsit", None, None, None)
    assert err.path == "data.source"
    assert "unknown data source 'mnsit'" in err.message
    assert ", ".join(source_names()) in err.message and "did you mean 'mnist'?" in err.message


def test_check_reference_that_cannot_be_imported_says_why(tmp_path):
    err = _config_error("no_such_module_xyz:load", None, None, str(tmp_path))
    assert err.path == "data.source" and "No module named 'no_such_module_xyz'" in err.message
    (tmp_path / "broken_data_mod.py").write_text("raise RuntimeError('boom at import')\n")
    err = _config_error("broken_data_mod:load", None, None, str(tmp_path))
    assert "RuntimeError: boom at import" in err.message
    (tmp_path / "fine_data_mod.py").write_text("def load():\n    return None\n")
    err = _config_error("fine_data_mod:lod", None, None, str(tmp_path))
    assert "'fine_data_mod:lod'" in err.message and "has no attribute 'lod'" in err.message
    check_data_args("fine_data_mod:load", None, None, str(tmp_path))


@pytest.mark.parametrize("source", ["mnist", "fashion_mnist", "cifar10", "csv"])
def test_check_path_is_required(source):
    err = _config_error(source, None, "label", None)
    assert err.path == "data.path" and f"source {source!r} needs a path" in err.message


def test_check_missing_path_shows_where_it_resolved(tmp_path):
    err = _config_error("mnist", "data/mnist", None, str(tmp_path))
    expected = os.path.join(str(tmp_path), "data", "mnist")
    assert err.path == "data.path"
    assert f"'data/mnist' does not exist (resolved to {expected})" in err.message
    assert "download: true" in err.message
    check_data_args("mnist", "data/mnist", None, str(tmp_path), download=True)  # will be created
    err = _config_error("csv", "nope.csv", "label", str(tmp_path), download=True)
    assert f"resolved to {os.path.join(str(tmp_path), 'nope.csv')}" in err.message


def test_check_does_not_read_the_data(tmp_path):
    # An empty folder passes: the files are only looked at when the data is loaded.
    check_data_args("mnist", str(tmp_path), None, None)
    check_data_args("cifar10", str(tmp_path), None, None)


def test_check_csv_target_rules(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(CSV_TEXT)
    err = _config_error("csv", str(path), None, None)
    assert err.path == "data.target" and "needs target" in err.message
    err = _config_error("csv", "people.csv", "City", str(tmp_path))
    assert err.path == "data.target" and "'City'" in err.message
    assert "did you mean 'city'?" in err.message
    check_data_args("csv", "people.csv", "label", str(tmp_path))
    err = _config_error("csv", str(tmp_path), "label", None)
    assert err.path == "data.path" and "is a folder" in err.message


def test_check_keys_a_source_would_ignore(tmp_path):
    err = _config_error("digits", "digits.csv", None, None)
    assert err.path == "data.path" and "'digits' reads no path, got 'digits.csv'" in err.message
    err = _config_error("digits", None, "label", None)
    assert err.path == "data.target" and "'label'" in err.message
    err = _config_error("mnist", str(tmp_path), None, None, params={"sep": ";"})
    assert err.path == "data.params" and "takes no params" in err.message


def test_load_dataset_checks_split_arguments():
    for kwargs, path in (({"val_fraction": 0}, "data.val_fraction"),
                         ({"val_fraction": 1.5}, "data.val_fraction"),
                         ({"seed": -1}, "data.seed"),
                         ({"max_samples": 1}, "data.max_samples")):
        with pytest.raises(ConfigError) as info:
            load_dataset("digits", **kwargs)
        assert info.value.path == path and str(list(kwargs.values())[0]) in info.value.message


def test_docstring_examples_run():
    try:
        results = [doctest.testmod(module) for module in (data_mod, dataset, download, readers, sources)]
    finally:
        sources._SOURCES.pop("blobs", None)  # registered by register_source's example
    assert sum(r.failed for r in results) == 0 and sum(r.attempted for r in results) > 5


@pytest.mark.parametrize("loader", ["load_wine", "load_breast_cancer"])
def test_csv_with_only_numeric_features(tmp_path, loader):
    """pandas 3's get_dummies fails on an empty column list; no text column must still load."""
    import sklearn.datasets

    frame = getattr(sklearn.datasets, loader)(as_frame=True).frame
    frame.to_csv(tmp_path / "data.csv", index=False)
    data = load_dataset("csv", path=str(tmp_path / "data.csv"), target="target", val_fraction=0.2, seed=0)
    assert data.input_shape == (frame.shape[1] - 1,)
    assert data.num_classes == frame["target"].nunique()
    assert abs(float(data.x_train.mean())) < 0.1  # standardised
