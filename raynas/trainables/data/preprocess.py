"""How raw inputs become the float32 features a model trains on, saved with the model.

A data source's reader knows how its raw data is encoded (images of 0..16 or 0..255, CSV
columns with numbers and categories); the statistics (a channel's mean, a column's standard
deviation) come from the training split only. :class:`Preprocessing` holds both, as plain
JSON-able data (:meth:`Preprocessing.to_dict`), so that an exported model takes the same raw
inputs the data source read: ``raynas.load_model(path).predict(rows)``.

The same code path encodes the training data and a user's raw inputs, so they cannot drift
apart. This module imports numpy only (pandas where a table is encoded).

Example:
    >>> prep = Preprocessing.scale((1, 8, 8), 16.0)
    >>> prep(np.full((2, 8, 8), 16, np.uint8)).max()
    np.float32(1.0)
    >>> Preprocessing.from_dict(prep.to_dict()) == prep
    True
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["Preprocessing"]

_KINDS = ("identity", "scale", "channels", "table")
_CHUNK = 4096  # images per step: no full-size float64 temporary for a large set


@dataclass(frozen=True)
class Preprocessing:
    """The encoding of raw inputs into features.

    Attributes:
        kind: ``identity`` (arrays used as given), ``scale`` (divide by ``divisor``),
            ``channels`` (per-channel ``(x - mean) / std`` of images) or ``table`` (CSV
            columns: numeric ones standardised, categorical ones one-hot encoded).
        input_shape: One sample's feature shape.
        divisor: ``scale``: what raw values are divided by.
        mean, std: ``channels``: per channel; ``table``: per numeric column (train split).
        numeric: ``table``: the numeric columns, in feature order.
        levels: ``table``: each categorical column and its levels, in feature order.
        target: ``table``: the label column (dropped from inputs that still hold it).
    """

    kind: str
    input_shape: tuple
    divisor: float = 1.0
    mean: tuple = ()
    std: tuple = ()
    numeric: tuple = ()
    levels: tuple = field(default=())  # ((column, (level, ...)), ...)
    target: str | None = None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def identity(cls, input_shape: Sequence[int]) -> Preprocessing:
        return cls("identity", tuple(int(d) for d in input_shape))

    @classmethod
    def scale(cls, input_shape: Sequence[int], divisor: float) -> Preprocessing:
        return cls("scale", tuple(int(d) for d in input_shape), divisor=float(divisor))

    @classmethod
    def channels(cls, input_shape: Sequence[int]) -> Preprocessing:
        """Per-channel standardisation; :meth:`fit` computes the statistics."""
        return cls("channels", tuple(int(d) for d in input_shape))

    @classmethod
    def table(cls, numeric: Sequence[str], levels: Mapping[str, Sequence[Any]], target: str | None) -> Preprocessing:
        n = len(numeric) + sum(len(v) for v in levels.values())
        return cls("table", (n,), numeric=tuple(numeric),
                   levels=tuple((c, tuple(_plain(v) for v in lv)) for c, lv in levels.items()), target=target)

    def fit(self, x_train: np.ndarray) -> Preprocessing:
        """A copy with the statistics of ``x_train`` (encoded, not yet transformed)."""
        if self.kind == "channels":
            mean, std = _channel_stats(x_train)
            return replace(self, mean=tuple(mean.tolist()), std=tuple(std.tolist()))
        if self.kind == "table" and self.numeric:
            part = x_train[:, : len(self.numeric)]
            std = part.std(axis=0, dtype=np.float64)
            std[std == 0] = 1.0  # a constant column stays constant (0) instead of NaN
            return replace(self, mean=tuple(part.mean(axis=0, dtype=np.float64).tolist()), std=tuple(std.tolist()))
        return self

    # -- applying ---------------------------------------------------------------------------

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Encoded inputs (what :meth:`encode` returns) to float32 features."""
        if self.kind == "scale":
            return np.divide(x, np.float32(self.divisor), dtype=np.float32)
        if self.kind == "channels":
            shift = np.asarray(self.mean, np.float32)[None, :, None, None]
            scale = (1.0 / np.asarray(self.std, np.float64)).astype(np.float32)[None, :, None, None]
            out = np.empty(x.shape, np.float32)
            for start in range(0, len(x), _CHUNK):
                view = out[start:start + _CHUNK]
                np.subtract(x[start:start + _CHUNK], shift, out=view, dtype=np.float32)
                view *= scale
            return out
        if self.kind == "table":
            out = np.array(x, dtype=np.float32)  # a copy: the caller's array stays as it is
            n = len(self.numeric)
            if n and self.mean:
                out[:, :n] = (out[:, :n] - np.asarray(self.mean)) / np.asarray(self.std)
            return out
        return np.ascontiguousarray(x, dtype=np.float32)

    def encode(self, raw: Any) -> np.ndarray:
        """Raw inputs as the source read them to the encoded form :meth:`transform` takes.

        Images: an array of one sample ``(H, W)`` / ``(C, H, W)`` or a batch ``(N, H, W)``,
        ``(N, C, H, W)``, channels-last ``(N, H, W, C)`` or flat ``(N, C*H*W)``, in the raw
        value range (0..16 for digits, 0..255 for MNIST and CIFAR-10). Tables: a pandas
        DataFrame, a dict of one row, a list of row dicts, or the path of a CSV file; the
        target column, if present, is ignored.

        Raises:
            ValueError: The inputs do not fit (a wrong shape, a missing column, a
                non-numeric value in a numeric column), naming what was expected.
        """
        if self.kind == "table":
            return self._encode_table(raw)
        return _as_batch(np.asarray(raw), self.input_shape)

    def __call__(self, raw: Any) -> np.ndarray:
        """Raw inputs to float32 features: ``transform(encode(raw))``."""
        return self.transform(self.encode(raw))

    def encode_frame(self, frame: Any) -> np.ndarray:
        """A pandas DataFrame's feature columns to the encoded matrix (numeric, then one-hot)."""
        missing = [c for c in (*self.numeric, *(c for c, _ in self.levels)) if c not in frame.columns]
        if missing:
            raise ValueError(f"the inputs lack the column(s) {', '.join(map(str, missing))}; "
                             f"the model reads {', '.join(map(str, (*self.numeric, *(c for c, _ in self.levels))))}")
        parts = []
        if self.numeric:
            import pandas as pd

            numbers = frame[list(self.numeric)].apply(pd.to_numeric, errors="coerce")
            bad = numbers.isna() & frame[list(self.numeric)].notna()
            if bad.to_numpy().any():
                column = bad.any(axis=0).idxmax()
                value = frame.loc[bad[column], column].iloc[0]
                raise ValueError(f"column {column!r} holds numbers, got {value!r}")
            if numbers.isna().to_numpy().any():
                column = numbers.isna().any(axis=0).idxmax()
                raise ValueError(f"column {column!r} has missing values; the model needs every input")
            parts.append(numbers.to_numpy(np.float32))
        unknown = 0
        for column, levels in self.levels:
            import pandas as pd

            codes = pd.Categorical(frame[column], categories=_categories(levels, frame[column])).codes
            unknown += int((codes < 0).sum())
            onehot = np.zeros((len(frame), len(levels)), np.float32)
            rows = np.flatnonzero(codes >= 0)
            onehot[rows, codes[rows]] = 1.0
            parts.append(onehot)
        if unknown:
            logger.warning("raynas: %d input value(s) of categorical columns were not seen in training; "
                           "they are encoded as all-zero one-hot vectors", unknown)
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0), np.float32)

    def _encode_table(self, raw: Any) -> np.ndarray:
        import pandas as pd

        if isinstance(raw, (str, os.PathLike)):
            frame = pd.read_csv(raw)
        elif isinstance(raw, pd.DataFrame):
            frame = raw
        elif isinstance(raw, Mapping):
            frame = pd.DataFrame([raw]) if all(np.ndim(v) == 0 for v in raw.values()) else pd.DataFrame(raw)
        elif isinstance(raw, Sequence) and all(isinstance(r, Mapping) for r in raw):
            frame = pd.DataFrame(list(raw))
        else:
            raise ValueError("table inputs are a pandas DataFrame, a dict of one row, a list of row dicts "
                             f"or a CSV file's path, got {type(raw).__name__}")
        return self.encode_frame(frame)

    # -- storage ----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON-able data; :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {"kind": self.kind, "input_shape": list(self.input_shape)}
        if self.kind == "scale":
            out["divisor"] = self.divisor
        if self.kind in ("channels", "table"):
            out["mean"], out["std"] = list(self.mean), list(self.std)
        if self.kind == "table":
            out["numeric"] = list(self.numeric)
            out["levels"] = [[c, list(lv)] for c, lv in self.levels]
            out["target"] = self.target
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        kind = data.get("kind")
        if kind not in _KINDS:
            raise ValueError(f"unknown preprocessing kind {kind!r}; known: {', '.join(_KINDS)}")
        return cls(
            kind, tuple(int(d) for d in data["input_shape"]), divisor=float(data.get("divisor", 1.0)),
            mean=tuple(data.get("mean", ())), std=tuple(data.get("std", ())), numeric=tuple(data.get("numeric", ())),
            levels=tuple((c, tuple(lv)) for c, lv in data.get("levels", ())), target=data.get("target"),
        )


def _plain(value: Any) -> Any:
    """A level as a JSON value (numpy scalars to Python; anything else to its string)."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _categories(levels: tuple, column: Any) -> list:
    """The levels in the column's own type where it is not text (a JSON round trip made them text)."""
    if column.dtype == object or str(column.dtype) in ("string", "str", "category"):
        return list(levels)
    return [type(column.iloc[0])(v) if len(column) else v for v in levels]


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of images ``(N, C, H, W)``, in chunks; exact sums for uint8."""
    axes = (0, 2, 3)
    exact = x.dtype == np.uint8
    acc = np.uint64 if exact else np.float64
    total = np.zeros(x.shape[1], acc)
    squares = np.zeros(x.shape[1], acc)
    for start in range(0, len(x), _CHUNK):
        part = x[start:start + _CHUNK]
        total += part.sum(axis=axes, dtype=acc)
        # Integer sums are exact (255**2 fits uint16), so the variance has no rounding drift.
        squares += (np.square(part, dtype=np.uint16) if exact else np.square(part, dtype=np.float64)).sum(axis=axes, dtype=acc)
    count = x.size // x.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std[std == 0] = 1.0  # a constant channel stays constant (0) instead of NaN
    return mean, std


def _as_batch(x: np.ndarray, shape: tuple) -> np.ndarray:
    """``x`` as a batch ``(N, *shape)``: one sample, channels-last, or flat rows are accepted."""
    if x.dtype.kind not in "biuf":
        raise ValueError(f"inputs must be numeric arrays, got dtype {x.dtype}")
    size = int(np.prod(shape))
    if x.shape == shape:
        return x[None]
    if x.shape[1:] == shape:
        return x
    if len(shape) == 3:
        channels, height, width = shape
        if channels == 1 and x.shape == (height, width):
            return x[None, None]
        if channels == 1 and x.shape[1:] == (height, width):
            return x[:, None]
        if x.shape[1:] == (height, width, channels):  # channels-last, as image files decode
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if x.shape == (height, width, channels):
            return np.ascontiguousarray(x.transpose(2, 0, 1))[None]
    if x.ndim == 2 and x.shape[1] == size:
        return x.reshape(len(x), *shape)
    if x.ndim == 1 and x.size == size:
        return x.reshape(1, *shape)
    raise ValueError(f"inputs of shape {x.shape} do not fit the model's samples of shape {shape} "
                     "(give one sample or a batch (N, *shape); images may be (N, H, W) or channels-last)")
