"""Model artifacts: one file per trained model, loaded back ready to predict on raw inputs.

:func:`write_artifact` writes a model and its metadata (the family and arch, the data's input
shape, classes and preprocessing, the trial's metrics and config) in one of three formats;
:func:`load_artifact` tells the format from the file's content and returns a model whose
``predict`` takes the raw inputs the data source read (images in their raw value range, table
rows with their original columns) and returns the original class labels.

Formats (:data:`FORMATS`):

``state_dict``
    ``torch.save({"raynas_artifact": 1, "meta": meta, "state_dict": ...})``. Loading rebuilds
    the module from its family and arch, so the family's code must be importable; the file
    itself holds plain data and loads with ``torch.load(weights_only=True)``. A compressed
    model (``meta["compression"]`` set: pruned or quantized, its structure no longer follows
    the arch) is stored as the bytes of its TorchScript archive under ``"torchscript"``
    (still plain data: torch's FX int8 models do not survive a pickle round trip). A user
    trainable's model (``meta["family"]`` None: no builder), or a compressed one that cannot
    be traced, is stored whole under ``"module"``: that file is a pickle, like any torch model
    file, so load only files you trust.
``torchscript``
    ``torch.jit.trace`` of the model in eval mode, saved with the metadata as the extra file
    ``raynas.json``. Loads without the family's code (torch only).
``onnx``
    torch's ``torch.export``-based ONNX exporter, input ``input`` and output ``logits`` with a
    dynamic batch dimension; the metadata is the JSON of the model's ``metadata_props`` key
    ``raynas``. Writing needs the ``export`` extra (onnx, onnxscript); loading runs the model
    in onnxruntime (:class:`OnnxModel`).

Example:
    >>> path = write_artifact("m.pt", model, meta, "torchscript", x[:2])  # doctest: +SKIP
    >>> load_artifact(path).predict(raw_images)  # doctest: +SKIP
    array([3, 1, 7])
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raynas.errors import ConfigError, did_you_mean, first_line
from raynas.experiment import atomic_file
from raynas.trainables.data.preprocess import Preprocessing

__all__ = ["FORMATS", "ExportedModel", "OnnxModel", "check_format", "load_artifact", "write_artifact"]

FORMATS = ("state_dict", "torchscript", "onnx")
ARTIFACT_VERSION = 1
META_FILE = "raynas.json"  # torchscript's extra file, and the ONNX metadata key's stem
ONNX_META_KEY = "raynas"
EXPORT_HINT = "pip install 'raynas[export]'"
_CHUNK = 4096  # raw inputs per forward pass: bounded memory for a large batch
_REQUIRED = ("family", "arch", "input_shape", "num_classes")


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def write_artifact(path: str | os.PathLike, model: nn.Module, meta: dict, fmt: str,
                   example_input: torch.Tensor) -> Path:
    """Writes ``model`` with ``meta`` to ``path`` in format ``fmt``, atomically.

    Args:
        path: The file to write (its folder is created); replaced only once complete.
        model: The trained module; it is exported in eval mode and its mode is restored.
        meta: JSON-able metadata: ``family`` (None for a user trainable's model), ``arch``, ``base_dir``, ``input_shape``,
            ``num_classes``, ``classes``, ``preprocessing``, ``metrics``, ``config``,
            ``trial_id``, ``experiment``, ``compression`` (None or a dict describing pruning
            or quantization). ``raynas_version``, ``format`` and ``torch`` are added.
        fmt: One of :data:`FORMATS`.
        example_input: A batch of features ``(N, *input_shape)`` on the model's device,
            traced by the torchscript and onnx formats.

    Returns:
        The path written.

    Raises:
        ConfigError: An unknown format, ``onnx`` without the export extra installed
            (:func:`check_format`), or a model that cannot be written in this format (the
            message says why and suggests another format); nothing is written then.
        ValueError: ``meta`` lacks a required key or is not JSON-able.
    """
    check_format(fmt)
    meta = _complete_meta(meta, fmt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with atomic_file(path, "wb") as f:
            if fmt == "state_dict":
                _write_state_dict(f, model, meta, example_input)
            elif fmt == "torchscript":
                _write_torchscript(f, model, meta, example_input)
            else:
                f.write(_onnx_bytes(model, meta, example_input))
    finally:
        model.train(was_training)
    return path


def _complete_meta(meta: dict, fmt: str) -> dict:
    """``meta`` plus the versions and format, as plain JSON data (tuples become lists, numpy
    scalars Python numbers): every format stores, and loads back, the same dict."""
    from raynas import __version__

    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"the artifact metadata lacks {', '.join(map(repr, missing))}")
    full = {**meta, "raynas_version": __version__, "format": fmt, "torch": torch.__version__}
    try:
        return json.loads(json.dumps(full, default=_plain_json, allow_nan=True))
    except (TypeError, ValueError) as err:
        raise ValueError(f"the artifact metadata must be JSON-able: {err}") from None


def _plain_json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable: {value!r:.60}")


def _write_state_dict(f, model: nn.Module, meta: dict, example_input: torch.Tensor) -> None:
    payload: dict[str, Any] = {"raynas_artifact": ARTIFACT_VERSION, "meta": meta}
    if meta.get("compression"):
        # A pruned or quantized module no longer matches what its arch builds. Pickled whole,
        # an FX-quantized GraphModule fails to load (its fused modules are rebuilt out of
        # order: "'ConvReLU2d' object has no attribute '_modules'"); TorchScript keeps it.
        archive = io.BytesIO()
        try:
            _write_torchscript(archive, model, meta, example_input)
            payload["torchscript"] = archive.getvalue()
        except ConfigError:
            payload["module"] = model  # a model torch.jit.trace cannot take: pickled whole
    elif meta.get("family") is None:
        payload["module"] = model  # a user trainable's model: no builder, so the module itself
    else:
        payload["state_dict"] = model.state_dict()
    try:
        torch.save(payload, f)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise ConfigError("--format", f"this model cannot be pickled ({err}); the torchscript format keeps it") from err


def _write_torchscript(f, model: nn.Module, meta: dict, example_input: torch.Tensor) -> None:
    with _quiet_jit():
        try:
            traced = torch.jit.trace(model, example_input)
        except Exception as err:
            raise ConfigError("--format", f"this model cannot be traced to TorchScript ({first_line(err, root=True)}); "
                                          "the state_dict format keeps it") from err
        torch.jit.save(traced, f, _extra_files={META_FILE: json.dumps(meta)})


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch 2.13 deprecates torch.jit (trace, save, load) with a DeprecationWarning on every
    call; TorchScript is still the one format that loads without the family's code, so the
    warning is silenced here only, not for the user's own uses of torch.jit."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        yield


def check_format(fmt: str) -> None:
    """Raises ConfigError (key ``--format``) for an unknown format, or for ``onnx`` without
    the export extra (onnx, onnxscript): bad input, reported before any work is done."""
    if fmt not in FORMATS:
        raise ConfigError("--format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}{did_you_mean(fmt, FORMATS)}")
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if fmt == "onnx" and missing:
        raise ConfigError("--format", f"onnx needs the export extra: {EXPORT_HINT} (missing: {', '.join(missing)})")


def _onnx_bytes(model: nn.Module, meta: dict, example_input: torch.Tensor) -> bytes:
    """The ONNX model with ``meta`` in its metadata_props, serialized.

    The torch.export-based exporter (torch's default since 2.9) is used alone: the
    TorchScript-based one is deprecated, and it fails too on what torch.export rejects
    here in practice (dynamic int8 quantized layers).
    """
    if len(example_input) < 2:
        # torch.export specializes a dimension of size 1 on some torch versions: keep the batch dynamic.
        example_input = example_input.expand(2, *example_input.shape[1:])
    batch = torch.export.Dim("batch")
    try:
        with warnings.catch_warnings(), _without_torchvision_notes():
            # torch's exporter warns about its own internals (pytree's LeafSpec), nothing a user can act on.
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            program = torch.onnx.export(model, (example_input,), None, dynamo=True, verbose=False,
                                        input_names=["input"], output_names=["logits"],
                                        dynamic_shapes=({0: batch},), external_data=False)
    except Exception as err:
        raise ConfigError("--format", f"this model cannot be exported to ONNX ({first_line(err, root=True)}); "
                                      "the torchscript or state_dict format keeps it") from err
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
    return proto.SerializeToString()


@contextlib.contextmanager
def _without_torchvision_notes() -> Iterator[None]:
    """Drops the exporter's log lines that torchvision's ops (nms, roi_align, ...) cannot be
    registered without torchvision: raynas's models use none of them. A renamed logger in a
    later torch only brings the lines back."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    def note(record: logging.LogRecord) -> bool:
        return "torchvision" not in record.getMessage()

    registration.addFilter(note)
    try:
        yield
    finally:
        registration.removeFilter(note)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_artifact(path: str | os.PathLike) -> ExportedModel | OnnxModel:
    """Loads a file :func:`write_artifact` wrote; the format comes from the file's content.

    A zip archive with the extra file ``raynas.json`` is TorchScript; another zip archive is
    ``torch.save``'s (a raynas artifact when it holds ``raynas_artifact``); a protobuf with the
    ``raynas`` metadata key is ONNX.

    Returns:
        An :class:`ExportedModel` (state_dict, torchscript: an ``nn.Module`` on the CPU, in
        eval mode) or an :class:`OnnxModel` (onnx).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is no raynas artifact (the message says what it is), or its model
            cannot be rebuilt.
        ImportError: An ONNX artifact without onnxruntime installed.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickled = [n for n in names if n.endswith("/data.pkl")]
            marked = bool(pickled) and b"raynas_artifact" in archive.read(pickled[0])
        if any(n.endswith(f"/extra/{META_FILE}") for n in names):
            return _load_torchscript(path)
        if pickled and not any("/code/" in n for n in names):
            return _load_torch_save(path, marked)
        what = "a TorchScript module without raynas metadata" if pickled else "a zip archive"
        raise ValueError(f"{path}: not a raynas artifact ({what})")
    # A serialized ONNX ModelProto starts with field 1 (ir_version, a varint): byte 0x08.
    if head[:1] == b"\x08":
        return _load_onnx(path)
    raise ValueError(f"{path}: not a raynas artifact (neither a torch file nor an ONNX model; "
                     f"it starts with {head!r}); raynas export writes: {', '.join(FORMATS)}")


def _load_torch_save(path: Path, marked: bool) -> ExportedModel:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not marked:
            raise ValueError(f"{path}: not a raynas artifact (a torch file holding objects other "
                             "than tensors and plain data)") from None
        # A user trainable's model stored whole: a pickle (see the module docstring: trusted files only).
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"{path}: the model stored whole cannot be loaded ({err}); "
                             "its class must be importable as it was when it was written") from err
    if not isinstance(payload, dict) or "raynas_artifact" not in payload:
        what = f"a dict with keys {sorted(map(str, payload))[:6]}" if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a raynas artifact (a torch file holding {what}, "
                         "e.g. a plain state_dict or a checkpoint); export the model with raynas export")
    if payload["raynas_artifact"] > ARTIFACT_VERSION:
        raise ValueError(f"{path}: artifact version {payload['raynas_artifact']} is newer than this "
                         f"raynas reads ({ARTIFACT_VERSION}); upgrade raynas")
    meta = payload["meta"]
    if "torchscript" in payload:
        with _quiet_jit():
            return ExportedModel(torch.jit.load(io.BytesIO(payload["torchscript"]), map_location="cpu"), meta)
    if "module" in payload:
        return ExportedModel(payload["module"], meta)
    from raynas.trainables.families import build_model

    try:
        net = build_model(meta["family"], meta["arch"], tuple(meta["input_shape"]), meta["num_classes"],
                          base_dir=meta.get("base_dir"))
        net.load_state_dict(payload["state_dict"])
    except Exception as err:
        raise ValueError(f"{path}: cannot rebuild the model of family {meta['family']!r} ({err}); "
                         "a torchscript or onnx artifact needs no family code") from err
    return ExportedModel(net, meta)


def _load_torchscript(path: Path) -> ExportedModel:
    extra = {META_FILE: ""}
    with _quiet_jit():
        net = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return ExportedModel(net, json.loads(extra[META_FILE]))


def _load_onnx(path: Path) -> OnnxModel:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(f"{path}: an ONNX model runs in onnxruntime ({err}); install it with: {EXPORT_HINT}") from err
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ValueError(f"{path}: not a raynas artifact (not a valid ONNX model: {str(err)[:200]})") from err
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
    if text is None:
        raise ValueError(f"{path}: not a raynas artifact (an ONNX model without the {ONNX_META_KEY!r} metadata)")
    return OnnxModel(session, json.loads(text))


# ----------------------------------------------------------------------------------------------
# Loaded models
# ----------------------------------------------------------------------------------------------


class _Predictor:
    """What both loaded models share: the metadata, raw inputs to features, labels."""

    _meta: dict
    _prep: Preprocessing

    @property
    def meta(self) -> dict:
        """The artifact's metadata (see :func:`write_artifact`)."""
        return self._meta

    @property
    def arch(self) -> dict:
        return self._meta["arch"]

    @property
    def classes(self) -> tuple | None:
        """The original label of each class id, or None (the labels are the ids)."""
        classes = self._meta.get("classes")
        return tuple(classes) if classes is not None else None

    @property
    def input_shape(self) -> tuple:
        return tuple(self._meta["input_shape"])

    @property
    def metrics(self) -> dict:
        return self._meta.get("metrics") or {}

    def _features(self, raw: Any) -> np.ndarray:
        return self._prep(raw)

    def _logits(self, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _batched_logits(self, features: np.ndarray) -> np.ndarray:
        if not len(features):
            return np.zeros((0, int(self._meta["num_classes"])), np.float32)
        return np.concatenate([self._logits(features[i:i + _CHUNK]) for i in range(0, len(features), _CHUNK)])

    def predict_proba(self, raw: Any) -> np.ndarray:
        """Class probabilities ``(N, num_classes)`` (softmax of the logits) of raw inputs."""
        logits = self._batched_logits(self._features(raw))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def predict(self, raw: Any) -> np.ndarray:
        """The original class label of each raw input (the class id where none is known).

        Raw inputs are what the data source read: images ``(N, H, W)``, ``(N, C, H, W)`` or
        channels-last in their raw value range; table rows as a DataFrame, a list of dicts, a
        dict of one row or a CSV path. Raises ValueError for inputs that do not fit.
        """
        ids = self.predict_proba(raw).argmax(axis=1)
        return np.asarray(self.classes)[ids] if self.classes is not None else ids


def _preprocessing(meta: dict) -> Preprocessing:
    prep = meta.get("preprocessing")
    return Preprocessing.from_dict(prep) if prep else Preprocessing.identity(meta["input_shape"])


class ExportedModel(_Predictor, nn.Module):
    """A loaded state_dict or torchscript artifact: an ``nn.Module`` whose ``forward`` takes
    features and returns logits, plus ``predict``/``predict_proba`` on raw inputs.

    Example:
        >>> model = load_artifact("winner.pt")  # doctest: +SKIP
        >>> model.predict(raw_images), model.classes, model.metrics["val_acc"]  # doctest: +SKIP
    """

    def __init__(self, net: nn.Module, meta: dict):
        super().__init__()
        self.net = net
        self._meta = meta
        self._prep = _preprocessing(meta)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def preprocess(self, raw: Any) -> torch.Tensor:
        """Raw inputs to the float32 features ``(N, *input_shape)`` that ``forward`` takes."""
        return torch.from_numpy(self._features(raw))

    def _logits(self, features: np.ndarray) -> np.ndarray:
        param = next(self.net.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return self.net(torch.from_numpy(features).to(device)).float().cpu().numpy()
        finally:
            self.train(was_training)


class OnnxModel(_Predictor):
    """A loaded ONNX artifact run by onnxruntime on the CPU. Not an ``nn.Module``: calling it
    maps a float32 feature array ``(N, *input_shape)`` to logits, both numpy arrays.

    Example:
        >>> model = load_artifact("winner.onnx")  # doctest: +SKIP
        >>> model(model.preprocess(raw_images)).shape  # doctest: +SKIP
        (3, 10)
    """

    def __init__(self, session: Any, meta: dict):
        self.session = session
        self._meta = meta
        self._prep = _preprocessing(meta)
        self._input = session.get_inputs()[0].name

    def preprocess(self, raw: Any) -> np.ndarray:
        """Raw inputs to the float32 features ``(N, *input_shape)`` the model takes."""
        return self._features(raw)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(N, num_classes)`` of features ``x``."""
        return self._batched_logits(np.ascontiguousarray(x, dtype=np.float32))

    def _logits(self, features: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: features})[0]

    def __repr__(self) -> str:
        return f"OnnxModel(family={self._meta.get('family')!r}, input_shape={self.input_shape})"
