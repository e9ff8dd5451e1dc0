"""Zero-cost proxies: scores of an untrained network, computed on one batch of training data.

Each proxy estimates, without training, how well an architecture will train, so that a search
can rank or screen architectures before paying for their epochs. The definitions follow the
references (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021, whose
code NASLib reuses; Mellor et al., "Neural Architecture Search without Training", ICML 2021):

``synflow``
    Sum over the weights of every conv and linear layer of ``|w * dR/dw|``, where ``R`` is
    the sum of the outputs of the network with every parameter replaced by its absolute
    value, batch norm removed and dropout off, fed one all-ones input in float64 (Tanaka et
    al. 2020). Data-independent: only the input's shape is used. Larger is better.
``naswot``
    ``log |det K|`` of the Hamming kernel of the binary activation codes of the batch
    (Mellor et al. 2021, v2): for every activation module, each sample's code is which of
    the activation's inputs are positive; ``K[i, j]`` counts, over all units, where samples
    ``i`` and ``j`` agree. Larger is better (the network tells the samples apart). The
    reference reads ReLUs; here every activation module of the built-in families counts
    (ReLU, ReLU6, LeakyReLU, GELU, SiLU, ELU, Tanh), by the sign of its input.
``grad_norm``
    Sum over conv and linear layers of the L2 norm of the gradient of the cross-entropy loss
    of the batch with respect to the layer's weight.
``snip``
    Sum over conv and linear weights of ``|w * dL/dw|`` (the connection sensitivity of Lee
    et al. 2019; the reference's gradient of a weight mask of ones is the same quantity).
``jacob_cov``
    NASWOT v1 (Mellor et al. 2020): the Jacobian of the summed outputs with respect to each
    input of the batch, the correlation matrix of these per-sample Jacobians, and
    ``-sum(log(v + k) + 1 / (v + k))`` over its eigenvalues ``v`` (``k = 1e-5``). Larger is better.

Like the references, every proxy works on a deep copy of the network in train mode (batch
norm uses the batch's statistics), so the caller's weights, gradients, buffers and modes are
untouched, and the global torch RNG is restored afterwards (dropout draws from a forked RNG
seeded by :func:`compute`): computing proxies before training leaves the training exactly
as it would have been (tests/trainables/test_proxies.py checks both). Only ``nn.Linear`` and
convolution layers count in the per-weight sums, as in the references.

Example:
    >>> import torch
    >>> from raynas.trainables.families import build_model
    >>> net = build_model("mlp", {"depth": 1, "width": 16}, (1, 8, 8), 10)
    >>> x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 10
    >>> sorted(compute(net, x, y, ["naswot", "synflow"]))
    ['naswot', 'synflow']
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raynas.errors import did_you_mean

__all__ = ["PROXIES", "BATCH_SIZE", "names", "compute", "batch", "synflow", "naswot", "grad_norm",
           "snip", "jacob_cov"]

log = logging.getLogger(__name__)

#: Samples in the batch the proxies are computed on (the references use one batch of 64 to 128).
BATCH_SIZE = 64

Proxy = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]

# Activation modules whose inputs give NASWOT's binary codes (the reference reads nn.ReLU).
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh)


def _weighted_layers(net: nn.Module) -> list[nn.Module]:
    """The layers the per-weight proxies sum over: linear and convolution layers, as the references."""
    return [m for m in net.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


def _on_copy(train: bool = True) -> Callable[[Proxy], Proxy]:
    """Runs a proxy on a deep copy of the net (on the batch's device, in train or eval mode),
    with gradients enabled and the caller's global RNG restored afterwards."""

    def wrap(fn: Proxy) -> Proxy:
        @functools.wraps(fn)
        def proxy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
            devices = [x.device.index or 0] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                twin = copy.deepcopy(net).to(x.device)
                twin.train(train)
                for p in twin.parameters():
                    p.requires_grad_(True)
                    p.grad = None
                return float(fn(twin, x, y))

        return proxy

    return wrap


def _remove_batch_norm(net: nn.Module) -> None:
    """Replaces every batch norm by an identity (synflow's ``bn=False`` in the reference)."""
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, name, nn.Identity())


@_on_copy(train=False)
def synflow(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Synaptic flow of the network at initialisation (see the module docstring)."""
    _remove_batch_norm(net)
    net.double()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    net(ones).sum().backward()
    total = 0.0
    for layer in _weighted_layers(net):
        if layer.weight.grad is not None:
            total += float((layer.weight.detach() * layer.weight.grad).abs().sum())
    return total


@_on_copy(train=True)
def naswot(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Log-determinant of the batch's activation-code Hamming kernel (see the module docstring)."""
    n = x.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64, device=x.device)

    def count(module, inputs, output) -> None:
        codes = (inputs[0].detach().reshape(n, -1) > 0).to(torch.float64)
        kernel.add_(codes @ codes.t()).add_((1.0 - codes) @ (1.0 - codes).t())

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, _ACTIVATIONS)]
    if not hooks:
        raise ValueError("the network has no activation module (ReLU, GELU, ...) to read binary codes from")
    try:
        with torch.no_grad():
            net(x)
    finally:
        for hook in hooks:
            hook.remove()
    sign, logdet = np.linalg.slogdet(kernel.cpu().numpy())
    if sign <= 0:
        # Two samples with the same code in every unit make K singular: no finite score.
        raise ValueError(f"the activation-code kernel is singular (sign {sign:g}): some samples are not told apart")
    return float(logdet)


def _loss_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()


@_on_copy(train=True)
def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum of the per-layer gradient norms of the batch's cross-entropy loss (see the module docstring)."""
    _loss_gradients(net, x, y)
    return sum(float(layer.weight.grad.norm()) for layer in _weighted_layers(net) if layer.weight.grad is not None)


@_on_copy(train=True)
def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Connection sensitivity ``sum |w * dL/dw|`` over conv and linear weights (see the module docstring)."""
    _loss_gradients(net, x, y)
    return sum(float((layer.weight.detach() * layer.weight.grad).abs().sum())
               for layer in _weighted_layers(net) if layer.weight.grad is not None)


@_on_copy(train=True)
def jacob_cov(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Score of the correlations of the per-sample input Jacobians (NASWOT v1, see the module docstring)."""
    inputs = x.detach().clone().requires_grad_(True)
    out = net(inputs)
    out.backward(torch.ones_like(out))
    jacobians = inputs.grad.detach().reshape(x.shape[0], -1).to(torch.float64).cpu().numpy()
    if np.any(jacobians.std(axis=1) == 0):
        raise ValueError("a sample's input Jacobian is constant (e.g. all zero): its correlations are undefined")
    # eigvalsh: the matrix is symmetric (the reference's eig can return complex rounding noise);
    # eigenvalues of a correlation matrix are >= 0, tiny negative ones are rounding.
    eigenvalues = np.clip(np.linalg.eigvalsh(np.corrcoef(jacobians)), 0.0, None)
    k = 1e-5
    return float(-np.sum(np.log(eigenvalues + k) + 1.0 / (eigenvalues + k)))


#: Every proxy by name: ``function(net, x, y) -> float`` (larger is better for each).
PROXIES: dict[str, Proxy] = {
    "synflow": synflow,
    "naswot": naswot,
    "grad_norm": grad_norm,
    "snip": snip,
    "jacob_cov": jacob_cov,
}
# raynas.experiment.PROXY_NAMES is the torch-free copy of these names that the spec checks
# (tests/trainables/test_proxies.py keeps the two equal).


def names() -> list[str]:
    """The proxies' names, as ``proxies:`` in an experiment file takes them.

    Example:
        >>> names()
        ['synflow', 'naswot', 'grad_norm', 'snip', 'jacob_cov']
    """
    return list(PROXIES)


def compute(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str],
    *,
    seed: int = 0,
    timings: dict[str, float] | None = None,
    notes: dict[str, str] | None = None,
) -> dict[str, float]:
    """Computes the named proxies of ``net`` on the batch ``(x, y)``.

    The net itself is not changed (each proxy works on a copy) and the caller's torch RNG is
    restored; each proxy draws from an RNG seeded with ``seed``, so the same net, batch and
    seed give the same values.

    Args:
        net: The (untrained) network.
        x: A batch of inputs on the device to compute on, ``(N, *input_shape)``, N >= 2.
        y: Their class ids ``(N,)``.
        names: Proxies to compute (see :func:`names`).
        seed: Seeds the RNG of each proxy (dropout in train mode).
        timings: If given, receives each proxy's wall time in seconds.
        notes: If given, receives the reason of each proxy whose value is NaN.

    Returns:
        ``{name: value}``; a proxy that fails or whose value is not finite is NaN (the reason
        is logged and put in ``notes``): a proxy never fails the trial.

    Raises:
        ValueError: An unknown proxy name (a caller bug: experiment files are checked earlier).
    """
    for name in names:
        if name not in PROXIES:
            raise ValueError(f"unknown proxy {name!r}{did_you_mean(name, list(PROXIES))}; known: {', '.join(PROXIES)}")
    out: dict[str, float] = {}
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    for name in names:
        began = time.perf_counter()
        reason = None
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            try:
                value = PROXIES[name](net, x, y)
            except Exception as err:  # noqa: BLE001 - a proxy must not fail the trial; the reason is kept
                value, reason = math.nan, f"{type(err).__name__}: {err}"
        if reason is None and not math.isfinite(value):
            value, reason = math.nan, f"the value is {value} (not finite)"
        if reason is not None:
            log.warning("raynas: proxy %s is NaN: %s", name, reason)
            if notes is not None:
                notes[name] = reason
        if timings is not None:
            timings[name] = time.perf_counter() - began
        out[name] = value
    return out


def batch(data: Any, size: int = BATCH_SIZE, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` samples of a :class:`~raynas.trainables.data.Dataset`'s training split, drawn
    without replacement with ``seed`` (the whole split if it is smaller), as CPU tensors.

    Every trial of an experiment draws the same batch (the experiment's seed), so their
    proxies compare architectures on the same data.

    Example:
        >>> from raynas.trainables.data import load_dataset
        >>> x, y = batch(load_dataset("digits"), 32, seed=0)
        >>> tuple(x.shape), tuple(y.shape)
        ((32, 1, 8, 8), (32,))
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an int >= 2, got {size!r}")
    n = len(data.x_train)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
    x = torch.as_tensor(np.asarray(data.x_train)[rows], dtype=torch.float32)
    y = torch.as_tensor(np.asarray(data.y_train)[rows], dtype=torch.long)
    return x, y
