"""The held-out test split of every data source, and the preprocessing saved for raw inputs."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from raynas.errors import ConfigError
from raynas.trainables.data import load_dataset
from raynas.trainables.data.preprocess import Preprocessing
from raynas.trainables.data.readers import _digits_file
from tests.trainables.test_data import CSV_TEXT, USER_MODULE, _mnist_like, _write_cifar, _write_idx


def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(_digits_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1]


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_digits_test_fraction_is_seeded_stratified_and_disjoint():
    data = load_dataset("digits", seed=0, test_fraction=0.2)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (1150, 288, 359)
    assert not (_rows(data.x_test) & _rows(data.x_train)) and not (_rows(data.x_test) & _rows(data.x_val))
    assert np.all(np.abs(np.bincount(data.y_test) - np.bincount(np.concatenate(
        [data.y_train, data.y_val, data.y_test])) * 0.2) <= 1)  # each class its share
    again = load_dataset("digits", seed=0, test_fraction=0.2)
    np.testing.assert_array_equal(again.x_test, data.x_test)
    other = load_dataset("digits", seed=1, test_fraction=0.2)
    assert _rows(other.x_test) != _rows(data.x_test)
    # The test set is held out before the subsample: a quick run scores on the same test set.
    small = load_dataset("digits", seed=0, test_fraction=0.2, max_samples=300)
    np.testing.assert_array_equal(small.x_test, data.x_test)
    assert len(small.x_train) + len(small.x_val) == 300


def test_no_test_fraction_leaves_the_split_as_it_was():
    plain = load_dataset("digits", seed=3)
    assert not plain.has_test and plain.x_test is None and plain.without_test() is plain
    assert "test" not in repr(plain)
    # Same seed, same split as before the test split existed (a resumed folder relies on it):
    # the test split draws from a random stream of its own.
    rng = np.random.default_rng(3)
    from raynas.trainables.data.dataset import _pick

    val, _ = _pick(np.concatenate([plain.y_train, plain.y_val]), 359, np.random.default_rng(99))
    assert len(plain.x_val) == round(1797 * 0.2) and len(val) == 359
    del rng


def test_search_trials_get_the_dataset_without_its_test_split():
    data = load_dataset("digits", seed=0, test_fraction=0.25)
    lean = data.without_test()
    assert lean.x_test is None and lean.y_test is None and data.x_test is not None
    assert lean.x_train is data.x_train and lean.nbytes < data.nbytes


@pytest.mark.parametrize("bad", [-0.1, 1.0, 0.8, "a", True])
def test_a_bad_test_fraction_names_the_key(bad):
    with pytest.raises(ConfigError) as info:
        load_dataset("digits", test_fraction=bad)
    assert info.value.path == "data.test_fraction"


def test_published_test_sets_are_the_test_split(tmp_path):
    images, labels = _mnist_like(60)
    test_images, test_labels = _mnist_like(20, seed=1)
    for name, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels),
                        ("t10k-images-idx3-ubyte", test_images), ("t10k-labels-idx1-ubyte", test_labels)):
        _write_idx(str(tmp_path / name), array, False)
    data = load_dataset("mnist", path=str(tmp_path), val_fraction=0.5)
    np.testing.assert_array_equal(data.x_test[:, 0] * 255, test_images.astype(np.float32))
    np.testing.assert_array_equal(data.y_test, test_labels)
    assert len(data.x_train) + len(data.x_val) == 60
    with pytest.raises(ConfigError, match="official test set"):
        load_dataset("mnist", path=str(tmp_path), test_fraction=0.1)


def test_mnist_without_its_test_files_says_there_is_no_test_split(tmp_path, caplog):
    images, labels = _mnist_like(20)
    _write_idx(str(tmp_path / "train-images-idx3-ubyte"), images, False)
    _write_idx(str(tmp_path / "train-labels-idx1-ubyte"), labels, False)
    data = load_dataset("mnist", path=str(tmp_path))
    assert not data.has_test and "no test split" in caplog.text


def test_cifar_test_batch_is_standardized_with_train_statistics(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    rng = np.random.default_rng(5)
    test = {b"data": rng.integers(0, 256, size=(6, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3, 0, 1]}
    import pickle

    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    data = load_dataset("cifar10", path=str(tmp_path), val_fraction=0.25)
    prep = Preprocessing.from_dict(data.preprocessing)
    assert prep.kind == "channels" and len(prep.mean) == 3
    np.testing.assert_allclose(data.x_test, prep(test[b"data"].reshape(-1, 3, 32, 32)), atol=1e-6)
    raw = test[b"data"].reshape(-1, 3, 32, 32).astype(np.float64)
    expected = (raw - np.asarray(prep.mean)[None, :, None, None]) / np.asarray(prep.std)[None, :, None, None]
    np.testing.assert_allclose(data.x_test, expected, atol=1e-5)
    # channels-last images, as image files decode, give the same features
    np.testing.assert_allclose(prep(raw.transpose(0, 2, 3, 1).astype(np.uint8)), data.x_test, atol=1e-6)


def test_digits_preprocessing_turns_raw_images_into_the_features():
    data = load_dataset("digits", seed=0, test_fraction=0.2)
    prep = Preprocessing.from_dict(json.loads(json.dumps(data.preprocessing)))
    images, _ = _raw_digits()
    features = prep(images)
    assert features.shape == (1797, 1, 8, 8) and features.dtype == np.float32
    assert _rows(data.x_test) <= _rows(features)
    np.testing.assert_array_equal(prep(images[0]), features[:1])  # one sample
    np.testing.assert_array_equal(prep(images.reshape(-1, 64)), features)  # flat rows
    with pytest.raises(ValueError, match=r"do not fit the model's samples of shape \(1, 8, 8\)"):
        prep(np.zeros((3, 7, 7)))


def test_csv_test_split_and_raw_rows(tmp_path, caplog):
    path = tmp_path / "people.csv"
    path.write_text(CSV_TEXT)
    data = load_dataset("csv", path=str(path), target="label", val_fraction=0.25, test_fraction=0.25, seed=0)
    assert len(data.x_test) == 3 and len(data.x_train) + len(data.x_val) == 9
    prep = Preprocessing.from_dict(json.loads(json.dumps(data.preprocessing)))
    assert prep.numeric == ("age", "income") and prep.target == "label"
    frame = pd.read_csv(path).dropna()
    features = prep(frame)  # the target column is ignored
    assert _rows(data.x_test) <= _rows(features) and _rows(data.x_train) <= _rows(features)
    # The one-hot columns are those pandas.get_dummies makes.
    dummies = pd.get_dummies(frame[["city"]], dtype=np.float32).to_numpy()
    np.testing.assert_array_equal(features[:, 2:], dummies)
    # a dict of one row, a list of row dicts and a CSV file give the same rows
    rows = frame.drop(columns=["label"]).to_dict("records")
    np.testing.assert_array_equal(prep(rows[0]), features[:1])
    np.testing.assert_array_equal(prep(rows), features)
    frame.to_csv(tmp_path / "clean.csv", index=False)
    np.testing.assert_array_equal(prep(str(tmp_path / "clean.csv")), features)
    with pytest.raises(ValueError, match="'income' has missing values"):
        prep(str(path))
    with pytest.raises(ValueError, match="lack the column"):
        prep([{"age": 3}])
    with pytest.raises(ValueError, match="'age' holds numbers"):
        prep([{**rows[0], "age": "old"}])
    unseen = prep([{**rows[0], "city": "oslo"}])
    assert unseen[0, 2:].sum() == 0 and "not seen in training" in caplog.text


def test_user_sources_hold_out_a_test_split(tmp_path):
    (tmp_path / "my_split_data.py").write_text(USER_MODULE + '''
def with_test():
    d = as_dict()
    d["x_test"], d["y_test"] = d["x_val"][:4], d["y_val"][:4]
    return d
''')
    data = load_dataset("my_split_data:as_tuple", params={"n": 50}, base_dir=str(tmp_path), test_fraction=0.2)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (32, 8, 10)
    given = load_dataset("my_split_data:with_test", base_dir=str(tmp_path))
    assert len(given.x_test) == 4 and given.x_test.shape[1:] == given.input_shape
    with pytest.raises(ValueError, match="return x_test and y_test"):
        load_dataset("my_split_data:as_dict", base_dir=str(tmp_path), test_fraction=0.2)


def test_the_spec_checks_test_fraction_before_anything_loads():
    from raynas.spec import spec_from_dict

    base = {"name": "t", "space": {"arch": {"depth": 1}}}
    spec = spec_from_dict({**base, "data": {"source": "digits", "test_fraction": 0.2}})
    assert spec.data.test_fraction == 0.2
    for data, words in (({"test_fraction": 0.9}, r"val_fraction \+ test_fraction must be < 1"),
                        ({"test_fraction": 1}, "data.test_fraction"),
                        ({"source": "mnist", "path": ".", "test_fraction": 0.1}, "official test set")):
        with pytest.raises(ConfigError, match=words):
            spec_from_dict({**base, "data": data})
