"""Tests for raynas.winner.artifact: real models trained on real data, written in every format,
loaded back and compared with the in-memory model on the held-out test split and on raw inputs."""

from __future__ import annotations

import gzip
import json
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import raynas
from raynas.errors import ConfigError
from raynas.trainables.data import load_dataset
from raynas.trainables.data.readers import _digits_file
from raynas.trainables.families import build_model
from raynas.winner.artifact import (
    FORMATS,
    ExportedModel,
    OnnxModel,
    check_format,
    load_artifact,
    write_artifact,
)

ARCHS = {
    "mlp": {"depth": 2, "width": 64, "batch_norm": True, "dropout": 0.1},
    "cnn": {"stages": [{"channels": 16, "kernel": 3, "pool": True}, {"channels": 32, "kernel": 3}],
            "activation": "gelu", "dropout": 0.1, "head_width": 32},
}
EXTENSIONS = {"state_dict": "pt", "torchscript": "ts", "onnx": "onnx"}


def _build(family: str, arch: dict, data) -> nn.Module:
    torch.manual_seed(0)  # the initial weights: the accuracy checks below do not depend on luck
    return build_model(family, arch, data.input_shape, data.num_classes)


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> nn.Module:
    """A few epochs of Adam on minibatches of 64 (about a second on 2 cores)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            optimizer.step()
    return model.eval()


def _meta(family: str, arch: dict, data, **extra) -> dict:
    info = data.info()
    return {"family": family, "arch": arch, "base_dir": None, "input_shape": info["input_shape"],
            "num_classes": info["num_classes"], "classes": info["classes"],
            "preprocessing": info["preprocessing"], "metrics": {"val_acc": 0.9, "epoch": 3},
            "config": {"arch": arch, "train": {"lr": 3e-3}}, "trial_id": "abc_00001",
            "experiment": "artifact_test", "compression": None, **extra}


def _logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _loaded_logits(loaded, x: np.ndarray) -> np.ndarray:
    if isinstance(loaded, OnnxModel):
        return loaded(x)
    with torch.no_grad():
        return loaded(torch.from_numpy(x)).numpy()


# ----------------------------------------------------------------------------------------------
# digits: an mlp and a cnn, every format
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, test_fraction=0.2)


@pytest.fixture(scope="module")
def raw_test_images(digits):
    """The raw images (0..16, shape (N, 8, 8)) of the test split, read from sklearn's CSV and
    matched to the split's features by value (features are the raw pixels / 16)."""
    with gzip.open(_digits_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    raw = table[:, :-1].reshape(-1, 8, 8)
    by_pixels = {image.tobytes(): image for image in raw}
    keys = [np.rint(x * 16).astype(np.uint8).reshape(8, 8).tobytes() for x in digits.x_test]
    assert all(k in by_pixels for k in keys)
    return np.stack([by_pixels[k] for k in keys])


@pytest.fixture(scope="module", params=sorted(ARCHS))
def digits_artifacts(request, digits, tmp_path_factory):
    """A trained model of one family, its metadata, and one file per format."""
    family = request.param
    model = _build(family, ARCHS[family], digits)
    _train(model, digits.x_train, digits.y_train, epochs=6)
    meta = _meta(family, ARCHS[family], digits)
    folder = tmp_path_factory.mktemp(family)
    example = torch.from_numpy(digits.x_train[:8])
    paths = {fmt: write_artifact(folder / f"model.{EXTENSIONS[fmt]}", model, meta, fmt, example) for fmt in FORMATS}
    return model, meta, paths


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_back_with_the_same_predictions(digits_artifacts, digits, fmt):
    model, meta, paths = digits_artifacts
    loaded = load_artifact(paths[fmt])
    assert isinstance(loaded, OnnxModel if fmt == "onnx" else ExportedModel)
    assert isinstance(loaded, nn.Module) == (fmt != "onnx")
    expected = _logits(model, digits.x_test)
    assert (expected.argmax(1) == digits.y_test).mean() > 0.8  # the model learned something to compare
    got = _loaded_logits(loaded, digits.x_test)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()
    # The metadata comes back as written, plus the versions and the format.
    assert loaded.meta == {**meta, "raynas_version": raynas.__version__, "format": fmt, "torch": torch.__version__}
    assert loaded.arch == meta["arch"] and loaded.classes == tuple(range(10))
    assert loaded.input_shape == (1, 8, 8) and loaded.metrics == {"val_acc": 0.9, "epoch": 3}


@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_on_raw_images_matches_the_dataset_features(digits_artifacts, digits, raw_test_images, fmt):
    model, _, paths = digits_artifacts
    loaded = load_artifact(paths[fmt])
    expected = _logits(model, digits.x_test).argmax(1)
    np.testing.assert_array_equal(loaded.predict(raw_test_images), expected)
    proba = loaded.predict_proba(raw_test_images)
    assert proba.shape == (len(expected), 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    # One raw image, channels first, and flat rows are accepted too.
    assert loaded.predict(raw_test_images[0]).tolist() == [expected[0]]
    np.testing.assert_array_equal(loaded.predict(raw_test_images[:5, None]), expected[:5])
    np.testing.assert_array_equal(loaded.predict(raw_test_images[:5].reshape(5, 64)), expected[:5])
    features = loaded.preprocess(raw_test_images)
    np.testing.assert_array_equal(np.asarray(features), digits.x_test)
    with pytest.raises(ValueError, match=r"shape \(5, 7, 7\)"):
        loaded.predict(np.zeros((5, 7, 7)))


def test_torch_artifacts_are_eval_modules_and_the_source_model_keeps_its_mode(digits, tmp_path):
    model = _build("mlp", ARCHS["mlp"], digits).train()
    example = torch.from_numpy(digits.x_train[:4])
    for fmt in ("state_dict", "torchscript"):
        loaded = load_artifact(write_artifact(tmp_path / fmt, model, _meta("mlp", ARCHS["mlp"], digits), fmt, example))
        assert not loaded.training and not loaded.net.training
        # Dropout and batch norm in eval mode: the same input gives the same output twice.
        x = loaded.preprocess(np.full((3, 8, 8), 8))
        torch.testing.assert_close(loaded(x), loaded(x))
    assert model.training


# ----------------------------------------------------------------------------------------------
# A CSV table: numeric and categorical columns, a string target
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 320
    frame = pd.DataFrame({"age": rng.normal(40, 10, n).round(1), "income": rng.uniform(0, 10, n).round(2),
                          "color": rng.choice(["red", "green", "blue"], n)})
    score = (frame["age"] - 40) / 10 + 2.0 * (frame["color"] == "red") - (frame["income"] - 5) / 3
    frame["buy"] = np.where(score > 0.5, "yes", "no")
    path = tmp_path_factory.mktemp("csv") / "shop.csv"
    frame.to_csv(path, index=False)
    data = load_dataset("csv", path=path, target="buy", test_fraction=0.25)
    model = _build("mlp", {"depth": 1, "width": 32}, data)
    _train(model, data.x_train, data.y_train, epochs=40)
    meta = _meta("mlp", {"depth": 1, "width": 32}, data)
    folder = tmp_path_factory.mktemp("csv_models")
    example = torch.from_numpy(data.x_train[:8])
    paths = {fmt: write_artifact(folder / fmt, model, meta, fmt, example) for fmt in FORMATS}
    return frame, data, model, paths


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_model_predicts_string_labels_from_raw_rows(table, fmt):
    frame, data, model, paths = table
    loaded = load_artifact(paths[fmt])
    assert loaded.classes == ("no", "yes")
    # The raw rows of the test split: the rows whose encoding is a test feature row.
    encoded = loaded.preprocess(frame)
    encoded = np.asarray(encoded)
    distance = ((data.x_test[:, None, :] - encoded[None, :, :]) ** 2).sum(-1)
    rows = frame.iloc[distance.argmin(1)].reset_index(drop=True)
    assert distance.min(1).max() < 1e-8
    expected = np.array(["no", "yes"])[_logits(model, data.x_test).argmax(1)]
    assert (expected == np.array(["no", "yes"])[data.y_test]).mean() > 0.8
    got = loaded.predict(rows)  # the target column is still there: it is ignored
    assert got.tolist() == expected.tolist()
    assert loaded.predict(rows.drop(columns=["buy"]).to_dict("records")).tolist() == expected.tolist()
    assert loaded.predict(rows.iloc[0].to_dict()).tolist() == expected[:1].tolist()
    with pytest.raises(ValueError, match="color"):
        loaded.predict(rows.drop(columns=["color"]))


# ----------------------------------------------------------------------------------------------
# Compressed models, failures, and files that are no artifacts
# ----------------------------------------------------------------------------------------------


def test_a_pruned_model_is_stored_as_torchscript_and_predicts_as_before(digits, tmp_path):
    model = _train(_build("mlp", ARCHS["mlp"], digits), digits.x_train, digits.y_train, epochs=2)
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            prune.l1_unstructured(layer, "weight", amount=0.5)
    meta = _meta("mlp", ARCHS["mlp"], digits, compression={"pruning": {"method": "l1_unstructured", "amount": 0.5}})
    path = write_artifact(tmp_path / "pruned.pt", model, meta, "state_dict", torch.from_numpy(digits.x_train[:4]))
    payload = torch.load(path, weights_only=True)  # plain data: no pickle of the module
    assert isinstance(payload["torchscript"], bytes) and "state_dict" not in payload and "module" not in payload
    loaded = load_artifact(path)
    assert loaded.meta["compression"] == meta["compression"]
    np.testing.assert_allclose(_loaded_logits(loaded, digits.x_test), _logits(model, digits.x_test), rtol=1e-5, atol=1e-5)
    # Half of each layer's weights are zero in the loaded copy too.
    first = next(p for name, p in loaded.net.named_parameters() if name.endswith("weight_orig"))
    mask = next(b for name, b in loaded.net.named_buffers() if name.endswith("weight_mask"))
    assert first.shape == mask.shape and mask.float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_an_int8_model_round_trips_in_every_torch_format(digits, tmp_path):
    """raynas compress's static int8 (an FX GraphModule): pickled whole it would not load back."""
    from raynas.winner.compress import quantize

    model = _train(_build("cnn", ARCHS["cnn"], digits), digits.x_train, digits.y_train, epochs=2)
    int8 = quantize(model, "int8", calibration=torch.from_numpy(digits.x_train[:256])).model
    meta = _meta("cnn", ARCHS["cnn"], digits, compression={"quantize": "int8"})
    expected = _logits(int8, digits.x_test)
    for fmt in ("state_dict", "torchscript"):
        loaded = load_artifact(write_artifact(tmp_path / fmt, int8, meta, fmt, torch.from_numpy(digits.x_train[:1])))
        np.testing.assert_allclose(_loaded_logits(loaded, digits.x_test), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match=r"--format: this model cannot be exported to ONNX \(.*\); the torchscript"):
        write_artifact(tmp_path / "int8.onnx", int8, meta, "onnx", torch.from_numpy(digits.x_train[:1]))
    assert not (tmp_path / "int8.onnx").exists()


class _UserNet(nn.Module):
    """A user trainable's own network: no family builds it."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_a_user_trainables_model_is_stored_whole(digits, tmp_path):
    model = _train(_UserNet(), digits.x_train, digits.y_train, epochs=2)
    path = write_artifact(tmp_path / "user.pt", model, _meta(None, None, digits), "state_dict",
                          torch.from_numpy(digits.x_train[:4]))
    loaded = load_artifact(path)
    assert isinstance(loaded.net, _UserNet) and loaded.meta["family"] is None
    np.testing.assert_array_equal(loaded.predict(np.rint(digits.x_test[:, 0] * 16)), _logits(model, digits.x_test).argmax(1))


class _Branchy(nn.Module):
    """A model whose control flow depends on the data: torch.export cannot export it."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


def test_a_failed_export_names_the_format_and_leaves_the_old_file(digits, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(ConfigError, match=r"--format: this model cannot be exported to ONNX \(.+\); the torchscript or state_dict"):
        write_artifact(path, _Branchy(), _meta("pkg.mod:branchy", {}, digits), "onnx", torch.ones(4, 1, 8, 8))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_bad_formats_and_a_missing_extra_are_config_errors(digits, tmp_path, monkeypatch):
    model = _build("mlp", {"depth": 1, "width": 8}, digits)
    meta, example = _meta("mlp", {"depth": 1, "width": 8}, digits), torch.zeros(2, 1, 8, 8)
    with pytest.raises(ConfigError, match=r"--format: must be one of state_dict, torchscript, onnx, got 'onxx' \(did you mean 'onnx'\?\)") as err:
        write_artifact(tmp_path / "m", model, meta, "onxx", example)
    assert err.value.path == "--format"
    check_format("onnx")  # the extra is installed here
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the export extra were not installed
    with pytest.raises(ConfigError, match=r"raynas\[export\].*missing: onnxscript"):
        write_artifact(tmp_path / "m", model, meta, "onnx", example)
    with pytest.raises(ConfigError, match="export extra"):
        check_format("onnx")
    check_format("torchscript")  # the other formats need no extra
    with pytest.raises(ValueError, match="lacks 'num_classes'"):
        write_artifact(tmp_path / "m", model, {k: v for k, v in meta.items() if k != "num_classes"}, "state_dict", example)
    with pytest.raises(ValueError, match="JSON-able"):
        write_artifact(tmp_path / "m", model, {**meta, "metrics": {"x": object()}}, "state_dict", example)
    assert list(tmp_path.iterdir()) == []


def test_a_state_dict_whose_family_is_gone_says_so(digits, tmp_path):
    model = _build("mlp", {"depth": 1, "width": 8}, digits)
    meta = _meta("no_such_module_xyz:build", {"depth": 1, "width": 8}, digits)
    path = write_artifact(tmp_path / "m.pt", model, meta, "state_dict", torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="cannot rebuild the model of family 'no_such_module_xyz:build'.*torchscript"):
        load_artifact(path)


def test_files_that_are_no_artifacts_give_clear_errors(tmp_path):
    noise = tmp_path / "noise.bin"
    noise.write_bytes(b"\x01" + np.random.default_rng(0).bytes(4095))  # no zip, and not 0x08 as ONNX starts
    with pytest.raises(ValueError, match=rf"{noise}: not a raynas artifact \(neither a torch file nor an ONNX model"):
        load_artifact(noise)
    weights = tmp_path / "weights.pt"
    torch.save(nn.Linear(2, 2).state_dict(), weights)
    with pytest.raises(ValueError, match=rf"{weights}: not a raynas artifact \(a torch file holding a dict with keys \['bias', 'weight'\]"):
        load_artifact(weights)
    pickled = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), pickled)  # never unpickled: it carries no raynas marker
    with pytest.raises(ValueError, match="objects other than tensors"):
        load_artifact(pickled)
    archive = tmp_path / "some.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.txt", "hello")
    with pytest.raises(ValueError, match=r"not a raynas artifact \(a zip archive\)"):
        load_artifact(archive)
    fake_onnx = tmp_path / "fake.onnx"
    fake_onnx.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        load_artifact(fake_onnx)
    with pytest.raises(FileNotFoundError):
        load_artifact(tmp_path / "missing.pt")


def test_an_onnx_model_without_raynas_metadata_is_refused(digits, tmp_path):
    import onnx

    model = _build("mlp", {"depth": 1, "width": 8}, digits)
    path = write_artifact(tmp_path / "m.onnx", model, _meta("mlp", {"depth": 1, "width": 8}, digits), "onnx",
                          torch.zeros(2, 1, 8, 8))
    proto = onnx.load(path)
    assert json.loads(proto.metadata_props[-1].value)["format"] == "onnx"
    del proto.metadata_props[:]
    onnx.save(proto, path)
    with pytest.raises(ValueError, match="an ONNX model without the 'raynas' metadata"):
        load_artifact(path)
