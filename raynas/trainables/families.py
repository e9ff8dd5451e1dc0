"""Model families: an architecture dict in, a PyTorch module out.

A family is a function ``build(arch: dict, input_shape: tuple, num_classes: int) -> nn.Module``
registered under a name. ``input_shape`` excludes the batch dimension: ``(C, H, W)`` for images,
``(F,)`` for tables. The module maps a batch ``(N, *input_shape)`` to logits ``(N, num_classes)``.

Built-in families: ``mlp``, ``cnn``, ``resnet`` and ``mbconv`` (MobileNetV2-style) here;
``cell`` (NAS-Bench-201 / DARTS-style cells, :mod:`raynas.trainables.cell`) and ``transformer``
(ViT on images, FT-Transformer on tables, :mod:`raynas.trainables.transformer`) in their own
modules, built from the helpers here. Users add their own with :func:`register_family` or name
``package.module:function`` in the experiment file.

An arch that cannot be built for the data (a bad value, too many downsamplings for the image
size) raises :class:`~raynas.errors.ArchError` naming the key path, e.g. ``arch.stages.3``.
:func:`build_model` turns any failure of a family into an ``ArchError`` after a dry forward pass,
so a bad architecture fails its trial before training and the search goes on.

Example:
    >>> model = build_model("mlp", {"depth": 2, "width": 64}, (1, 8, 8), 10)
    >>> count_params(model)
    8970
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import numbers
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from raynas._imports import is_reference, load_reference
from raynas.errors import ArchError, describe, did_you_mean

__all__ = [
    "Family",
    "register_family",
    "get_family",
    "family_names",
    "build_model",
    "count_params",
    "count_flops",
    "measure_latency_ms",
    "build_mlp",
    "build_cnn",
    "build_resnet",
    "build_mbconv",
    "BasicBlock",
    "MBConv",
    "ACTIVATIONS",
]

Family = Callable[[dict, tuple, int], nn.Module]
"""The family interface: ``build(arch, input_shape, num_classes) -> nn.Module``."""



# The registry lives in raynas.trainables.registry (no torch import there, so the driver and
# `raynas validate` stay light); it is re-exported here for convenience.
from raynas.trainables.registry import (  # noqa: E402
    UnknownFamilyError,
    family_names,
    get_family,
    register_family,
)


def build_model(
    family: str | Family,
    arch: Mapping[str, Any],
    input_shape: Sequence[int],
    num_classes: int,
    *,
    base_dir: str | os.PathLike | None = None,
) -> nn.Module:
    """Builds a model and proves it fits the input with a dry forward pass.

    The pass runs a batch of two zeros in eval mode under ``torch.no_grad()`` on one torch
    thread (so batch norm statistics are untouched) and checks the output is
    ``(2, num_classes)``; the modules' train or eval modes and the thread count are restored.

    Args:
        family: A registered name, a ``package.module:function`` reference, or a builder.
        arch: The architecture dict (one sample of the search space).
        input_shape: One sample's shape without the batch dim, e.g. ``(1, 8, 8)`` or ``(13,)``.
        num_classes: Number of output logits.
        base_dir: Folder searched first when importing a reference.

    Raises:
        ArchError: The family rejected the arch, or the model fails the dry pass; this is the
            trial error for "this architecture does not fit the data".
        KeyError: ``family`` is not a registered name.
        ValueError: ``input_shape`` or ``num_classes`` is not positive (a caller bug).

    Example:
        >>> model = build_model("cnn", {"stages": [{"channels": 8}]}, (1, 8, 8), 10)
        >>> model(torch.zeros(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """
    fn = get_family(family, base_dir) if isinstance(family, str) else family
    label = family if isinstance(family, str) else getattr(family, "__name__", repr(family))
    input_shape = _check_input_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    num_classes = int(num_classes)
    try:
        model = fn(dict(arch or {}), input_shape, num_classes)
        if not isinstance(model, nn.Module):
            raise TypeError(f"the family returned {type(model).__name__}, not a torch.nn.Module")
        with _eval_mode(model), torch.no_grad(), _one_thread():
            out = model(torch.zeros((2, *input_shape), **_tensor_kwargs(model)))
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"a batch of 2 gives output {got}, expected (2, {num_classes})")
    except ArchError:
        raise
    except Exception as err:
        raise ArchError(
            "arch", f"family {label!r} cannot be built for input {input_shape}: {err}", misfit=True
        ) from err
    return model


# ----------------------------------------------------------------------------------------------
# Cost helpers
# ----------------------------------------------------------------------------------------------


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (shared tensors counted once).

    Example:
        >>> count_params(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Floating-point operations of one forward pass on one sample.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions, a
    multiply-add counts 2; element-wise ops are not counted), in eval mode under ``no_grad`` on
    the model's own device, with one torch thread. Attention counts its two matmuls (scores and
    weighted values): the count runs with torch's fused inference path of
    ``nn.TransformerEncoderLayer``/``nn.MultiheadAttention`` turned off (that one kernel is
    invisible to the counter, so a transformer counted 0 in its attention and MLP alike) and
    gives torch's fused CPU attention kernel the formula the counter lacks. The first call in a process imports
    ``torch._dynamo`` (about 2 s on a slow CPU); constructing a torch optimizer imports it too,
    so a trial pays that once either way.

    Example:
        >>> count_flops(nn.Linear(3, 2), (3,))
        12
    """
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros((1, *_check_input_shape(input_shape)), **_tensor_kwargs(model))
    counter = FlopCounterMode(display=False, custom_mapping=_attention_flop_formulas())
    with _eval_mode(model), torch.no_grad(), _one_thread(), _unfused_attention(), counter:
        model(x)
    return int(counter.get_total_flops())


def _sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    # (batch, heads, tokens, dim): scores q @ k^T, then weights @ v; a multiply-add counts 2.
    *lead, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * math.prod(lead) * s_q * s_k * (d_q + d_v)


def _attention_flop_formulas() -> dict:
    """Formulas for attention kernels FlopCounterMode does not know (torch 2.13 counts the
    CUDA flash/efficient kernels but not the CPU one that ``scaled_dot_product_attention`` runs)."""
    from torch.utils import flop_counter

    formulas = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(torch.ops.aten, name, None)
        if op is not None and op not in flop_counter.flop_registry:
            formulas[op] = _sdpa_flops
    return formulas


@contextlib.contextmanager
def _unfused_attention():
    """Turns off torch's fused transformer inference path for a pass, restoring it after.

    In eval mode under ``no_grad`` a ``nn.TransformerEncoderLayer`` runs as one native op that
    ``FlopCounterMode`` cannot see into (it counted 0 FLOPs); unfused, its matmuls are counted.
    """
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def measure_latency_ms(
    model: nn.Module, input_shape: Sequence[int], repeats: int = 20, warmup: int = 3
) -> float:
    """Median CPU inference latency of one sample, in milliseconds.

    Runs a batch of one in eval mode under ``torch.inference_mode()`` with one torch thread, so
    numbers are comparable between trials however many run side by side on a node; the thread
    count is restored afterwards. A model that lives on an accelerator is measured on a CPU copy
    (the caller's model stays where it is).

    Args:
        model: The model.
        input_shape: One sample's shape without the batch dim.
        repeats: Timed forward passes; the median is returned.
        warmup: Untimed passes first (allocator and kernel selection warm-up).

    Example:
        >>> measure_latency_ms(nn.Linear(8, 2), (8,), repeats=5) > 0
        True
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    tensors = itertools.chain(model.parameters(), model.buffers())
    target = model if all(t.device.type == "cpu" for t in tensors) else _cpu_copy(model)
    kwargs = _tensor_kwargs(target)
    # A private generator: measuring must not shift the global RNG that seeds the trial.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, *_check_input_shape(input_shape)), generator=gen).to(**kwargs)
    times = []
    with _eval_mode(target), torch.inference_mode(), _one_thread():
        for _ in range(warmup):
            target(x)
        for _ in range(repeats):
            start = time.perf_counter()
            target(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def _cpu_copy(model: nn.Module) -> nn.Module:
    # Seeding deepcopy's memo with CPU clones avoids a second copy of the weights on the GPU.
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        clone = t.detach().to("cpu", copy=True)
        memo[id(t)] = nn.Parameter(clone, t.requires_grad) if isinstance(t, nn.Parameter) else clone
    return copy.deepcopy(model, memo)


def _tensor_kwargs(model: nn.Module) -> dict[str, Any]:
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return {"device": t.device, "dtype": t.dtype}
    return {"device": torch.device("cpu"), "dtype": torch.get_default_dtype()}


@contextlib.contextmanager
def _one_thread():
    """Runs a one- or two-sample pass on one torch thread, restoring the count after.

    Such passes gain nothing from intra-op threads, and on a node shared by several trials
    OpenMP threads contending for the cores can make them 10-50x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _eval_mode:
    """Puts every submodule in eval mode and restores each one's own mode on exit."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        for module, training in self.modes:
            module.training = training


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
        ok = len(shape) >= 1 and all(d >= 1 and d == e for d, e in zip(shape, input_shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"input_shape must be a tuple of positive ints, got {input_shape!r}")
    return shape


# ----------------------------------------------------------------------------------------------
# Reading arch dicts: every value is checked where it is read, with its key path.
# ----------------------------------------------------------------------------------------------

_REQUIRED = object()

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}
"""Activation names accepted by the built-in families."""


class _Reader:
    """Typed access to one dict of an arch, raising ArchError with the key path."""

    def __init__(self, value: Any, path: str, allowed: Sequence[str]):
        if not isinstance(value, Mapping):
            raise ArchError(
                path, f"expected a mapping of {', '.join(allowed)}, got {describe(value)}"
            )
        for key in value:
            if key not in allowed:
                # Unknown keys are rejected: a typo would otherwise silently search a default.
                raise ArchError(
                    f"{path}.{key}",
                    f"unknown key; allowed keys: {', '.join(allowed)}"
                    f"{did_you_mean(str(key), allowed)}",
                )
        self.value = value
        self.path = path

    def has(self, key: str) -> bool:
        return key in self.value

    def _get(self, key: str, default: Any) -> Any:
        if key in self.value:
            return self.value[key]
        if default is _REQUIRED:
            raise ArchError(f"{self.path}.{key}", "required key is missing")
        return default

    def integer(self, key: str, default: Any = _REQUIRED, minimum: int = 1) -> int:
        value = self._get(key, default)
        # Integral floats pass: quantized float domains (e.g. quniform) yield 64.0.
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not float(value).is_integer()
            or value < minimum
        ):
            kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
            raise ArchError(f"{self.path}.{key}", f"must be {kind}, got {describe(value)}")
        return int(value)

    def choice(self, key: str, options: Sequence[Any], default: Any = _REQUIRED) -> Any:
        value = self._get(key, default)
        if isinstance(value, bool) or value not in options:
            raise ArchError(
                f"{self.path}.{key}",
                f"must be one of {', '.join(map(str, options))}, got {describe(value)}"
                f"{did_you_mean(str(value), [str(o) for o in options])}",
            )
        return options[list(options).index(value)]  # the canonical value, not e.g. numpy.int64

    def dropout(self, key: str = "dropout", default: float = 0.0) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            raise ArchError(
                f"{self.path}.{key}", f"must be a float in [0, 1), got {describe(value)}"
            )
        return float(value)

    def number(self, key: str, default: Any = _REQUIRED) -> float:
        """A positive real number (int or float)."""
        value = self._get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ArchError(f"{self.path}.{key}", f"must be a positive number, got {describe(value)}")
        return float(value)

    def flag(self, key: str, default: Any = _REQUIRED) -> bool:
        value = self._get(key, default)
        is_numpy_bool = getattr(value, "dtype", None) is not None and value.dtype.kind == "b"
        if not isinstance(value, bool) and not (is_numpy_bool and value.ndim == 0):
            raise ArchError(f"{self.path}.{key}", f"must be true or false, got {describe(value)}")
        return bool(value)

    def activation(self, default: str = "relu") -> Callable[[], nn.Module]:
        return ACTIVATIONS[self.choice("activation", list(ACTIVATIONS), default)]

    def items(self, key: str, default: Any = _REQUIRED) -> list[tuple[str, Any]]:
        """A list value as ``(key path, item)`` pairs."""
        value = self._get(key, default)
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise ArchError(f"{self.path}.{key}", f"must be a list, got {describe(value)}")
        return [(f"{self.path}.{key}.{i}", item) for i, item in enumerate(value)]


class _Spatial:
    """Tracks the spatial size through the network so downsampling past 1x1 is caught early."""

    def __init__(self, input_shape: tuple[int, ...], family: str):
        if len(input_shape) != 3:
            raise ArchError(
                "arch",
                f"family {family!r} needs image input (C, H, W), got input_shape {input_shape}; "
                "use 'mlp' or 'transformer' for tabular data",
            )
        self.input = "x".join(map(str, input_shape))
        self.h, self.w = input_shape[1], input_shape[2]
        self.downsamplings = 0

    def _downsample(self, path: str) -> None:
        if min(self.h, self.w) < 2:
            n = self.downsamplings
            raise ArchError(
                path,
                f"stride-2 downsampling needs a spatial size >= 2, but the input {self.input} is "
                f"already {self.h}x{self.w} after {n} downsampling{'s' if n != 1 else ''}; "
                "use fewer stride/pool stages",
                misfit=True,
            )
        self.downsamplings += 1

    def conv(self, kernel: int, stride: int, path: str) -> None:
        if stride > 1:
            self._downsample(path)
        pad = kernel // 2
        self.h = (self.h + 2 * pad - kernel) // stride + 1
        self.w = (self.w + 2 * pad - kernel) // stride + 1

    def pool(self, path: str) -> None:
        self._downsample(path)
        self.h, self.w = self.h // 2, self.w // 2


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    # No conv bias: the following batch norm has its own shift.
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


def _head(channels: int, num_classes: int, dropout: float, act, hidden: int = 0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    if hidden:
        layers += [nn.Linear(channels, hidden), act()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        channels = hidden
    layers.append(nn.Linear(channels, num_classes))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------
# Families
# ----------------------------------------------------------------------------------------------


def build_mlp(arch: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    """Multi-layer perceptron; flattens any input.

    Arch keys (all optional):
        depth (int >= 0, default 2) and width (int, default 128): ``depth`` hidden layers of
            ``width`` units. Or, instead of both, ``layers``: a list of ``{width, dropout?}``
            dicts, one per hidden layer (what a searched repeat block yields).
        activation: one of ``ACTIVATIONS`` (default ``relu``).
        dropout (float in [0, 1), default 0): after each hidden layer (a layer's own
            ``dropout`` wins).
        batch_norm (bool, default false): batch norm after each hidden linear layer.

    Each hidden layer is linear -> [batch norm] -> activation -> [dropout].

    Example:
        >>> build_mlp({"layers": [{"width": 32}, {"width": 16, "dropout": 0.1}]}, (13,), 3)(
        ...     torch.zeros(2, 13)).shape
        torch.Size([2, 3])
    """
    r = _Reader(arch, "arch", ["depth", "width", "layers", "activation", "dropout", "batch_norm"])
    act = r.activation()
    dropout = r.dropout()
    batch_norm = r.flag("batch_norm", False)
    if r.has("layers"):
        clash = [k for k in ("depth", "width") if r.has(k)]
        if clash:
            raise ArchError(
                f"arch.{clash[0]}", "give either 'layers' or 'depth'/'width', not both"
            )
        specs = []
        for path, item in r.items("layers"):
            layer = _Reader(item, path, ["width", "dropout"])
            specs.append((layer.integer("width"), layer.dropout(default=dropout)))
    else:
        specs = [(r.integer("width", 128), dropout)] * r.integer("depth", 2, minimum=0)

    features = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for width, p in specs:
        layers.append(nn.Linear(features, width, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(act())
        if p > 0:
            layers.append(nn.Dropout(p))
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def build_cnn(arch: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    """Plain convolutional network: conv stages, global average pooling, a linear head.

    Arch keys:
        stages (required): list of ``{channels, kernel (default 3), stride (1 or 2, default 1),
            pool (bool, default false: 2x2 max-pool after the block), batch_norm (bool,
            default true)}``. Each stage is conv (padding ``kernel // 2``) -> [batch norm] ->
            activation -> [max-pool].
        activation: one of ``ACTIVATIONS`` (default ``relu``).
        dropout (float in [0, 1), default 0): before the head's linear layer(s).
        head_width (int >= 0, default 0): a hidden fully connected layer in the head.

    Raises:
        ArchError: non-image input, a bad value, or more downsampling than the image allows.

    Example:
        >>> arch = {"stages": [{"channels": 8, "pool": True}, {"channels": 16, "stride": 2}]}
        >>> build_cnn(arch, (1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    r = _Reader(arch, "arch", ["stages", "activation", "dropout", "head_width"])
    size = _Spatial(input_shape, "cnn")
    act = r.activation()
    dropout = r.dropout()
    head_width = r.integer("head_width", 0, minimum=0)
    channels = input_shape[0]
    layers: list[nn.Module] = []
    for path, item in r.items("stages"):
        s = _Reader(item, path, ["channels", "kernel", "stride", "pool", "batch_norm"])
        out, kernel = s.integer("channels"), s.integer("kernel", 3)
        stride = s.choice("stride", [1, 2], 1)
        pool, batch_norm = s.flag("pool", False), s.flag("batch_norm", True)
        size.conv(kernel, stride, path)
        if pool:
            size.pool(path)
        block: list[nn.Module] = [
            nn.Conv2d(channels, out, kernel, stride, kernel // 2, bias=not batch_norm)
        ]
        if batch_norm:
            block.append(nn.BatchNorm2d(out))
        block.append(act())
        if pool:
            block.append(nn.MaxPool2d(2))
        layers.append(nn.Sequential(*block))
        channels = out
    return nn.Sequential(
        nn.Sequential(*layers), _head(channels, num_classes, dropout, act, head_width)
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + BN, plus a shortcut (1x1 conv + BN when the shape
    changes, identity otherwise)."""

    def __init__(self, cin: int, cout: int, stride: int, act: Callable[[], nn.Module]):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, cout, 3, stride), act(), *_conv_bn(cout, cout, 3)
        )
        projection = stride != 1 or cin != cout
        self.shortcut = (
            nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if projection else nn.Identity()
        )
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def build_resnet(arch: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    """ResNet of basic blocks for small images (3x3 stem, no max-pool).

    Arch keys:
        stem_channels (int, default 16): channels of the 3x3 stem conv.
        stages (required): list of ``{channels, blocks (int >= 1, default 1), stride (1 or 2,
            default 1)}``; the first block of a stage applies the stride.
        activation: one of ``ACTIVATIONS`` (default ``relu``).
        dropout (float in [0, 1), default 0): before the linear head.

    Example:
        >>> arch = {"stages": [{"channels": 16, "blocks": 2}, {"channels": 32, "stride": 2}]}
        >>> build_resnet(arch, (3, 32, 32), 10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    r = _Reader(arch, "arch", ["stem_channels", "stages", "activation", "dropout"])
    size = _Spatial(input_shape, "resnet")
    act = r.activation()
    dropout = r.dropout()
    channels = r.integer("stem_channels", 16)
    stem = nn.Sequential(*_conv_bn(input_shape[0], channels, 3), act())
    stages: list[nn.Module] = []
    for path, item in r.items("stages"):
        s = _Reader(item, path, ["channels", "blocks", "stride"])
        out, blocks = s.integer("channels"), s.integer("blocks", 1)
        stride = s.choice("stride", [1, 2], 1)
        size.conv(3, stride, path)
        stage = [BasicBlock(channels, out, stride, act)]
        stage += [BasicBlock(out, out, 1, act) for _ in range(blocks - 1)]
        stages.append(nn.Sequential(*stage))
        channels = out
    return nn.Sequential(stem, nn.Sequential(*stages), _head(channels, num_classes, dropout, act))


class MBConv(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand (skipped at expansion 1) -> depthwise kxk
    (stride) -> 1x1 linear projection, each with BN; residual when stride 1 and same channels."""

    def __init__(
        self,
        cin: int,
        cout: int,
        expansion: int,
        kernel: int,
        stride: int,
        act: Callable[[], nn.Module],
    ):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [*_conv_bn(cin, hidden, 1), act()]
        layers += [*_conv_bn(hidden, hidden, kernel, stride, groups=hidden), act()]
        layers += _conv_bn(hidden, cout, 1)  # linear bottleneck: no activation
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


def build_mbconv(arch: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    """MobileNetV2-style network of per-layer searchable inverted-residual blocks.

    Arch keys:
        stem_channels (int, default 16): channels of the 3x3 stem conv (stride 1).
        stages (required): list of ``{channels, stride (1 or 2, default 1), layers}`` where
            ``layers`` (default one ``mbconv`` layer) is a list of ``{op: identity | mbconv
            (default mbconv), expansion (int, default 6; typically 1, 3, 4 or 6), kernel (odd
            int, default 3; typically 3, 5 or 7)}``. ``expansion`` and ``kernel`` may be absent
            for ``identity`` layers.
        activation: one of ``ACTIVATIONS`` (default ``relu6``).
        dropout (float in [0, 1), default 0): before the linear head.
        head_channels (int >= 0, default 0): a 1x1 conv + BN + activation before pooling.

    The first layer of a stage carries the stage's stride and channel change. If that layer is
    ``identity`` (or the stage has no layers) and the stage changes the channels or the stride,
    an MBConv with expansion 1 and kernel 3 is used in its place, so every sample of a search
    space yields a valid network. Other ``identity`` layers are skipped.

    Example:
        >>> arch = {"stages": [{"channels": 16, "stride": 2, "layers": [
        ...     {"op": "identity"}, {"op": "mbconv", "expansion": 6, "kernel": 5}]}]}
        >>> build_mbconv(arch, (3, 32, 32), 10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    r = _Reader(arch, "arch", ["stem_channels", "stages", "activation", "dropout", "head_channels"])
    size = _Spatial(input_shape, "mbconv")
    act = r.activation("relu6")
    dropout = r.dropout()
    head_channels = r.integer("head_channels", 0, minimum=0)
    channels = r.integer("stem_channels", 16)
    stem = nn.Sequential(*_conv_bn(input_shape[0], channels, 3), act())
    stages: list[nn.Module] = []
    for path, item in r.items("stages"):
        s = _Reader(item, path, ["channels", "stride", "layers"])
        out, stride = s.integer("channels"), s.choice("stride", [1, 2], 1)
        layer_items = s.items("layers", [{"op": "mbconv"}])
        if not layer_items:
            layer_items = [(f"{path}.layers", {"op": "identity"})]
        blocks: list[nn.Module] = []
        for i, (lpath, litem) in enumerate(layer_items):
            layer = _Reader(litem, lpath, ["op", "expansion", "kernel"])
            op = layer.choice("op", ["identity", "mbconv"], "mbconv")
            first_changes = i == 0 and (stride != 1 or channels != out)
            if op == "identity" and not first_changes:
                continue
            if op == "identity":
                expansion, kernel = 1, 3  # the documented stand-in for a shape-changing identity
            else:
                expansion, kernel = layer.integer("expansion", 6), layer.integer("kernel", 3)
                if kernel % 2 == 0:
                    raise ArchError(
                        f"{lpath}.kernel", f"must be odd (keeps the spatial size), got {kernel}"
                    )
            layer_stride = stride if i == 0 else 1
            size.conv(kernel, layer_stride, path)
            blocks.append(MBConv(channels, out, expansion, kernel, layer_stride, act))
            channels = out
        stages.append(nn.Sequential(*blocks))
    layers: list[nn.Module] = [stem, nn.Sequential(*stages)]
    if head_channels:
        layers.append(nn.Sequential(*_conv_bn(channels, head_channels, 1), act()))
        channels = head_channels
    layers.append(_head(channels, num_classes, dropout, act))
    return nn.Sequential(*layers)
