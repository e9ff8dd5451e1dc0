"""Compress a model: prune its weights or channels, quantize it, and measure what that gained.

Pure functions on ``nn.Module``s, on the CPU; none changes the model it is given.

- :func:`prune` zeroes the smallest weights (unstructured) or removes whole channels
  (structured), so parameters and latency really fall.
- :func:`quantize` gives an int8 model (static FX quantization for conv nets with calibration
  data, dynamic for Linear layers) or an fp16 one that still takes and returns float32.
- :func:`model_stats` counts parameters, non-zeros, the saved size and the latency.

Example:
    >>> from raynas.trainables.families import build_model
    >>> model = build_model("mlp", {"depth": 2, "width": 32}, (1, 8, 8), 10)
    >>> result = prune(model, 0.5, structured=True, example_input=torch.zeros(2, 1, 8, 8))
    >>> result.pruned[0]
    '1: 32 -> 16 channels (into 3)'
    >>> smaller = model_stats(result.model, (1, 8, 8), repeats=3)
    >>> smaller["params"] < model_stats(model, (1, 8, 8), repeats=3)["params"]
    True
"""

from __future__ import annotations

import contextlib
import copy
import io
import numbers
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F
from torch.nn.utils import prune as torch_prune

from raynas.errors import RaynasError, first_line
from raynas.trainables.families import measure_latency_ms

__all__ = [
    "QUANTIZE_MODES",
    "CompressError",
    "HalfPrecision",
    "PruneResult",
    "QuantizeResult",
    "model_stats",
    "prune",
    "quantize",
]

QUANTIZE_MODES = ("int8", "fp16")


class CompressError(RaynasError, ValueError):
    """A model that cannot be compressed as asked; the message names the model class and why."""


@dataclass
class PruneResult:
    """A pruned copy of a model, what was pruned (channel counts) and what was not (why)."""

    model: nn.Module
    pruned: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass
class QuantizeResult:
    """A quantized copy of a model; ``method`` says how, ``notes`` what could not be done."""

    model: nn.Module
    mode: str
    method: str
    notes: list[str] = field(default_factory=list)


class HalfPrecision(nn.Module):
    """Runs a half-precision model on float32 input and returns float32 output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


# ----------------------------------------------------------------------------------------------
# Pruning
# ----------------------------------------------------------------------------------------------

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# Modules and functions that act on each channel (or element) alone, so dropping a channel
# before them drops the same channel after them.
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Mish, nn.CELU, nn.SELU, nn.Softplus, nn.Hardtanh,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity,
)
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu, F.relu, F.relu6, F.gelu, F.silu, torch.tanh, torch.sigmoid, F.elu, F.leaky_relu,
    F.hardswish, F.mish, F.dropout,
}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh"}
_POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}


@dataclass
class _Pair:
    """A producer whose output channels can be dropped, and the modules that follow suit."""

    producer: str
    consumer: str
    followers: list[tuple[str, int]]  # (per-channel module, features per channel there)
    spatial: int  # consumer input features per producer channel (> 1 after a flatten)


def prune(
    model: nn.Module, amount: float, *, structured: bool, example_input: torch.Tensor
) -> PruneResult:
    """Prunes a copy of ``model``; the model given is left as it is.

    Unstructured: global L1 magnitude pruning over all Conv and Linear weights; the zeros are
    made permanent (no masks or hooks left, same state_dict keys), so the parameter count stays
    and the non-zeros fall by ``amount``.

    Structured: drops the ``amount`` share of output channels (smallest L1 norm) of every Conv2d
    or Linear whose output flows, through per-channel modules only (batch norm, activations,
    dropout, pooling, flatten, depthwise convs), into exactly one Conv2d or Linear, and rebuilds
    the smaller modules. Layers on a residual stream, a concatenation or the model's output are
    left whole and listed in ``skipped`` with the reason. At least one channel is kept.

    Args:
        model: The model (any ``nn.Module`` mapping a tensor to a tensor).
        amount: Share of weights or channels to prune, in (0, 1).
        structured: Channels (True) or single weights (False).
        example_input: A batch the model accepts; used to trace shapes and check the result.

    Raises:
        ValueError: ``amount`` is not in (0, 1).
        CompressError: Nothing could be pruned (the message says why for each layer), or the
            model cannot be traced by ``torch.fx`` for structured pruning.
    """
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not 0 < amount < 1:
        raise ValueError(f"amount must be a number in (0, 1), got {amount!r}")
    model = copy.deepcopy(model)
    with _eval(model), torch.no_grad():
        expected = _output_shape(model(example_input))
    if structured:
        result = _prune_channels(model, float(amount), example_input)
    else:
        result = _prune_weights(model, float(amount))
    with _eval(result.model), torch.no_grad():
        got = _output_shape(result.model(example_input))
    if got != expected:  # a bug in the rebuilding, not in the user's input
        raise CompressError(f"pruning changed the output of {type(model).__name__} from "
                            f"{expected} to {got}")
    return result


def _prune_weights(model: nn.Module, amount: float) -> PruneResult:
    layers = [(name, m) for name, m in model.named_modules()
              if isinstance(m, _WEIGHTED) and isinstance(m.weight, nn.Parameter)]
    if not layers:
        raise CompressError(f"{type(model).__name__} has no Conv or Linear weights to prune")
    torch_prune.global_unstructured(
        [(m, "weight") for _, m in layers], pruning_method=torch_prune.L1Unstructured,
        amount=amount,
    )
    pruned = []
    for name, m in layers:
        torch_prune.remove(m, "weight")
        zeros = int((m.weight == 0).sum())
        pruned.append(f"{name}: {zeros}/{m.weight.numel()} weights zero")
    return PruneResult(model, pruned, [])


def _prune_channels(model: nn.Module, amount: float, example_input: torch.Tensor) -> PruneResult:
    label = type(model).__name__
    try:
        graph = fx.symbolic_trace(model)
    except Exception as err:
        raise CompressError(
            f"structured pruning needs to trace {label} with torch.fx, which failed "
            f"({first_line(err)}); unstructured pruning still works"
        ) from err
    # The traced graph shares its leaf modules with `model`: shapes are recorded on its nodes.
    with _eval(model), torch.no_grad():
        ShapeProp(graph).propagate(example_input)
    # Uses of each module: calls, and reads of its tensors (``self.fc.weight``) in forward.
    calls = Counter(n.target for n in graph.graph.nodes if n.op == "call_module")
    calls.update(n.target.rpartition(".")[0] for n in graph.graph.nodes if n.op == "get_attr")
    pairs, skipped = [], []
    for node in graph.graph.nodes:
        if node.op != "call_module":
            continue
        module = model.get_submodule(node.target)
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            if module.groups != module.in_channels or module.out_channels != module.in_channels:
                skipped.append(f"{node.target}: grouped conv (groups={module.groups})")
            continue  # a depthwise conv shrinks with the layer before it
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        found = _follow(model, node, calls)
        if isinstance(found, _Pair):
            pairs.append(found)
        else:
            skipped.append(f"{node.target}: {found}")

    # Choose every producer's channels from the original weights before rebuilding anything.
    keep: dict[str, torch.Tensor] = {}
    pruned = []
    for pair in pairs:
        module = model.get_submodule(pair.producer)
        channels = module.weight.shape[0]
        count = min(round(amount * channels), channels - 1)
        if count == 0:
            skipped.append(f"{pair.producer}: amount {amount} of {channels} channels rounds to 0")
            continue
        torch_prune.ln_structured(module, "weight", amount=count, n=1, dim=0)
        keep[pair.producer] = module.weight_mask.flatten(1).any(dim=1).nonzero().flatten()
        torch_prune.remove(module, "weight")
        pruned.append(f"{pair.producer}: {channels} -> {len(keep[pair.producer])} channels "
                      f"(into {pair.consumer})")
    if not keep:
        reasons = "; ".join(skipped) or "it has no Conv2d or Linear layer"
        raise CompressError(f"structured pruning found no channels to remove in {label}: {reasons}")

    out_keep: dict[str, torch.Tensor] = {}
    in_keep: dict[str, torch.Tensor] = {}
    for pair in pairs:
        if pair.producer not in keep:
            continue
        index = keep[pair.producer]
        out_keep[pair.producer] = index
        for name, spatial in pair.followers:
            out_keep[name] = _expand(index, spatial)
        in_keep[pair.consumer] = _expand(index, pair.spatial)
    for name in {*out_keep, *in_keep}:
        old = model.get_submodule(name)
        new = _slice(old, out_keep.get(name), in_keep.get(name))
        new.train(old.training)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, new)
    return PruneResult(model, pruned, skipped)


def _follow(model: nn.Module, node: fx.Node, calls: Counter) -> _Pair | str:
    """The pair that starts at ``node``, or why its output channels cannot be dropped."""
    if calls[node.target] > 1:
        return f"used {calls[node.target]} times in forward (shared weights)"
    producer = model.get_submodule(node.target)
    channels, shape = producer.weight.shape[0], _shape(node)
    if shape is None or len(shape) != (4 if isinstance(producer, nn.Conv2d) else 2):
        return f"its output of shape {shape} does not hold its channels in dim 1"
    followers: list[tuple[str, int]] = []
    spatial = 1  # features per channel, > 1 after a flatten of an unpooled map
    current = node
    while True:
        users = list(current.users)
        if len(users) != 1:
            names = ", ".join(map(_describe, users)) or "nothing"
            return f"its output ({_describe(current)}) feeds {len(users)} nodes: {names} " \
                   "(a residual add or a branch)"
        user, ndim = users[0], len(shape)
        if user.op == "output":
            return "its output is the model's output"
        if user.op != "call_module":
            if not _passes_channels(user, current, ndim):
                return f"its output reaches {_describe(user)}, which does not act per channel"
            if _is_flatten(user):
                spatial = shape[2] * shape[3]
        else:
            if calls[user.target] > 1:
                return f"its output reaches {user.target}, used {calls[user.target]} times"
            module = model.get_submodule(user.target)
            if isinstance(module, nn.Linear) and ndim == 2:
                if module.in_features != channels * spatial:
                    return f"{user.target} takes {module.in_features} features, not " \
                           f"{channels} channels x {spatial}"
                return _Pair(node.target, user.target, followers, spatial)
            if isinstance(module, nn.Conv2d) and ndim == 4 and module.groups == 1:
                return _Pair(node.target, user.target, followers, spatial)
            if isinstance(module, nn.Conv2d) and ndim == 4 \
                    and module.groups == module.in_channels == module.out_channels:
                followers.append((user.target, 1))  # depthwise: shrinks with its input
            elif isinstance(module, _BATCH_NORMS) and module.num_features == shape[1]:
                followers.append((user.target, spatial))
            elif isinstance(module, nn.Flatten) and ndim == 4 and module.start_dim == 1 \
                    and module.end_dim == -1:
                spatial = shape[2] * shape[3]
            elif not (isinstance(module, _ELEMENTWISE_MODULES)
                      or isinstance(module, _POOL_MODULES) and ndim == 4):
                return f"its output reaches {user.target} ({type(module).__name__}), " \
                       "which does not act per channel"
        current, shape = user, _shape(user)
        if shape is None:
            return f"{_describe(user)} does not return one tensor"


def _passes_channels(user: fx.Node, source: fx.Node, ndim: int) -> bool:
    """Whether a function or method node maps channel c of ``source`` to channel c."""
    if user.op not in ("call_function", "call_method") or not user.args \
            or user.args[0] is not source:
        return False
    others = [*user.args[1:], *user.kwargs.values()]
    if any(isinstance(a, fx.Node) for a in others):
        return False  # another tensor joins in (add, mul, cat)
    if user.op == "call_method":
        return user.target in _ELEMENTWISE_METHODS or _is_flatten(user) and ndim == 4
    return user.target in _ELEMENTWISE_FUNCTIONS or (
        ndim == 4 and (user.target in _POOL_FUNCTIONS or _is_flatten(user)))


def _is_flatten(node: fx.Node) -> bool:
    if not (node.op == "call_function" and node.target is torch.flatten
            or node.op == "call_method" and node.target == "flatten"):
        return False
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return node.target
    if node.op == "call_method":
        return f".{node.target}()"
    return f"{getattr(node.target, '__name__', node.target)}()"


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def _expand(index: torch.Tensor, spatial: int) -> torch.Tensor:
    """Channel indices -> feature indices of a channel-major flatten, ``spatial`` per channel."""
    if spatial == 1:
        return index
    return (index[:, None] * spatial + torch.arange(spatial)).flatten()


def _slice(module: nn.Module, out_index: torch.Tensor | None,
           in_index: torch.Tensor | None) -> nn.Module:
    """A new module like ``module`` keeping only the given output and input channels."""
    if isinstance(module, _BATCH_NORMS):
        new = type(module)(len(out_index), module.eps, module.momentum, module.affine,
                           module.track_running_stats)
        state = {k: v[out_index] if v.ndim else v for k, v in module.state_dict().items()}
    else:
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1
        weight = module.weight.detach()
        out_index = torch.arange(len(weight)) if out_index is None else out_index
        weight = weight[out_index] if depthwise or in_index is None \
            else weight[out_index][:, in_index]
        out, bias = len(weight), module.bias is not None
        if isinstance(module, nn.Linear):
            new = nn.Linear(weight.shape[1], out, bias=bias)
        else:
            new = nn.Conv2d(out if depthwise else weight.shape[1], out, module.kernel_size,
                            module.stride, module.padding, module.dilation,
                            groups=out if depthwise else 1, bias=bias,
                            padding_mode=module.padding_mode)
        state = {"weight": weight}
        if bias:
            state["bias"] = module.bias.detach()[out_index]
    like = next(iter(state.values()), None)  # the old module's device and float dtype
    if like is not None:
        new = new.to(device=like.device, dtype=like.dtype)
    new.load_state_dict(state)
    return new


# ----------------------------------------------------------------------------------------------
# Quantization
# ----------------------------------------------------------------------------------------------


def quantize(
    model: nn.Module, mode: str, *, calibration: torch.Tensor | None = None
) -> QuantizeResult:
    """Quantizes a copy of ``model`` (in eval mode) for CPU inference.

    ``"int8"``: static int8 with FX graph mode (x86 backend: convs, linears and their
    activations; batch norm folded) when the model has Conv2d layers and a ``calibration``
    batch is given; otherwise, or if static fails, dynamic int8 of the Linear layers (the
    reason goes to ``notes``). ``"fp16"``: half-precision weights in :class:`HalfPrecision`,
    checked on ``calibration`` when given. Either way the result takes a float32 batch and
    returns float32 logits.

    Raises:
        ValueError: ``mode`` is not one of ``QUANTIZE_MODES``.
        CompressError: Nothing can be quantized, or an fp16 layer fails on the CPU.

    Example:
        >>> result = quantize(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)), "int8")
        >>> result.method, result.model(torch.zeros(3, 8)).shape
        ('dynamic int8 (Linear)', torch.Size([3, 2]))
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize mode must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}")
    label = type(model).__name__
    model = copy.deepcopy(model).float().eval()
    expected = None
    if calibration is not None:
        with torch.no_grad():
            expected = _output_shape(model(calibration))
    if mode == "fp16":
        half = HalfPrecision(model).eval()
        if calibration is not None:
            _check_fp16(half, calibration, label)
        notes = [] if calibration is not None else ["fp16 not checked: no calibration batch"]
        return QuantizeResult(half, mode, "fp16", notes)

    notes: list[str] = []
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    has_linear = any(isinstance(m, nn.Linear) for m in model.modules())
    static_failed = None
    if has_conv and calibration is None:
        notes.append("static int8 of the convolutions needs a calibration batch: they stay float32")
    elif has_conv:
        try:
            quantized = _static_int8(copy.deepcopy(model), calibration)
            if _output_shape(_run_by_node(quantized, calibration)) != expected:
                raise RuntimeError("the quantized model's output shape differs")
            return QuantizeResult(quantized, mode, "static int8 (FX)", notes)
        except Exception as err:  # noqa: BLE001 - any unsupported op: fall back, say which
            static_failed = f"static int8 (FX) failed: {first_line(err)}"
    if not has_linear:
        why = (static_failed or notes[0]) if has_conv else "it has no Conv2d or Linear layer"
        raise CompressError(f"nothing to quantize in {label}: no Linear layer for dynamic int8, "
                            f"and {why}")
    if static_failed:
        notes.append(f"{static_failed}; fell back to dynamic int8 of the Linear layers, "
                     "convolutions stay float32")
    with _quiet_quantization():
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return QuantizeResult(quantized, mode, "dynamic int8 (Linear)", notes)


def _static_int8(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with _quiet_quantization(), torch.no_grad():
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"),
                              example_inputs=(calibration[:1],))
        _run_by_node(prepared, calibration)
        return convert_fx(prepared)


@contextlib.contextmanager
def _quiet_quantization():
    # torch.ao.quantization warns on every call (deprecated, observer ranges) with nothing a
    # raynas user can act on; the warnings are kept out of the CLI's output.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quant_min and quant_max.*")
        warnings.filterwarnings("ignore", message=".*torch.quantize_per_tensor.*")
        yield


class _NodeNamer(fx.Interpreter):
    """Runs a GraphModule node by node so that an error names the node that failed."""

    def run_node(self, n: fx.Node):
        try:
            return super().run_node(n)
        except Exception as err:
            target = getattr(n.target, "__name__", n.target)
            if n.op == "call_module":
                target = f"{n.target} ({type(self.module.get_submodule(n.target)).__name__})"
            raise RuntimeError(f"{n.op} {target}: {first_line(err)}") from err


def _run_by_node(graph: fx.GraphModule, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), _quiet_quantization():
        return _NodeNamer(graph).run(x)


def _check_fp16(half: HalfPrecision, x: torch.Tensor, label: str) -> None:
    current: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda _m, _a, name=name: current.append(name))
             for name, m in half.model.named_modules() if not list(m.children())]
    try:
        with torch.no_grad():
            half(x)
    except Exception as err:
        where = current[-1] if current else "the forward pass"
        kind = type(half.model.get_submodule(current[-1])).__name__ if current else label
        raise CompressError(f"fp16 does not run on this CPU for {label}: layer {where} ({kind}) "
                            f"failed: {first_line(err)}") from err
    finally:
        for hook in hooks:
            hook.remove()


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------


def model_stats(model: nn.Module, input_shape: tuple, *, repeats: int = 50) -> dict:
    """What a model costs, comparable before and after compression.

    Returns a dict with:
        params: elements of all parameters (trainable or not, shared ones once), plus the
            weights and biases that quantized modules keep packed outside ``parameters()``.
        nonzero: the elements among ``params`` that are not zero (quantized ones dequantized),
            so ``1 - nonzero / params`` is the sparsity left by unstructured pruning.
        size_bytes: bytes of ``torch.save(model.state_dict())`` (buffers included).
        latency_ms: :func:`~raynas.trainables.families.measure_latency_ms` of one sample (median
            of ``repeats``, one thread), as the trials measure it.

    Example:
        >>> stats = model_stats(nn.Linear(3, 2), (3,), repeats=3)
        >>> stats["params"], stats["nonzero"] > 0, stats["size_bytes"] > 0
        (8, True, True)
    """
    params = nonzero = 0
    for tensor in _weights(model):
        params += tensor.numel()
        nonzero += int(torch.count_nonzero(tensor))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return {
        "params": params,
        "nonzero": nonzero,
        "size_bytes": len(buffer.getbuffer()),
        "latency_ms": measure_latency_ms(model, input_shape, repeats=repeats),
    }


def _weights(model: nn.Module):
    for p in model.parameters():
        yield p.detach()
    for m in model.modules():
        # Quantized modules (torch.ao.nn.*) hold packed weights, read through weight()/bias().
        if not type(m).__module__.startswith("torch.ao.nn."):
            continue
        for name in ("weight", "bias"):
            get = getattr(m, name, None)
            if callable(get) and not isinstance(get, torch.Tensor):
                tensor = get()
                if tensor is not None:
                    yield tensor.dequantize() if tensor.is_quantized else tensor.detach()


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _eval(model: nn.Module):
    """Eval mode (batch norm statistics untouched) for every submodule, each one's mode restored."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _output_shape(out) -> tuple | str:
    return tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
