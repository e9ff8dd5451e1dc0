"""What every single-path supernet shares: seeded path draws that a checkpoint resumes, the
sampler called before each training batch, batch norm run on a slice of its channels, and the
checks of a path's constants and candidates; and what the supernets of candidates side by side
share: :class:`MixedOp` (one module per candidate) and :class:`ArchSteps` (a gradient search's
architecture logits, for the cell and mbconv DARTS supernets).

A supernet (an ``nn.Module``) mixes in :class:`PathSampling`, calls :meth:`PathSampling._init_paths`
in its ``__init__`` and :meth:`PathSampling._follow_sampler` first in its ``forward``, and defines
``set_arch`` and ``_draw`` (one path from a ``random.Random``).

Example:
    >>> from raynas.trainables.supernet import build_supernet
    >>> space = {"edges": {"0-1": {"choice": ["skip", "conv3x3"]}}, "nodes": 2, "stages": 1}
    >>> net = build_supernet("cell", space, (1, 8, 8), 2)
    >>> first = [net.draw_uniform()["edges"]["0-1"] for _ in range(8)]
    >>> net.draws.zero_()  # doctest: +ELLIPSIS
    tensor(0)
    >>> first == [net.draw_uniform()["edges"]["0-1"] for _ in range(8)]
    True
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from raynas.errors import ArchError, describe

__all__ = ["ArchSteps", "MixedOp", "PathSampling", "check_arch", "check_constants", "keep_at_most", "path_items", "pick",
           "sliced_bn"]


class PathSampling:
    """The path-drawing part of a supernet (a mixin of ``nn.Module`` subclasses).

    Attributes:
        sampler: Called before every forward pass in training mode for the path to run (an
            arch dict); ``None`` runs the path last set.
        seed: Fixes the sequence of paths :meth:`draw_uniform` draws.
        draws: A buffer (so in the state dict): the paths drawn so far, so a checkpoint resumes
            the same sequence of paths.
    """

    sampler: Callable[[], Mapping[str, Any]] | None
    seed: int

    def _init_paths(self) -> None:
        self.sampler = None
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self.seed = 0

    def _init_layout(self, layout: Any) -> None:
        """Holds a layout of the space (``layout``) and its ``constants``, which a path's arch
        holds as the space does, and starts drawing paths."""
        self.layout = layout
        self.constants = dict(layout.constants)
        self._init_paths()

    def draw_uniform(self) -> dict:
        """A path with every choice drawn uniformly from its candidates, the ``draws``-th of the
        sequence that ``seed`` fixes (use it as the ``sampler``)."""
        rng = random.Random(self.seed * 1_000_003 + int(self.draws))
        self.draws += 1
        return self._draw(rng)

    def _draw(self, rng: random.Random) -> dict:
        raise NotImplementedError

    def _follow_sampler(self) -> None:
        """In training mode, switches to the sampler's next path (call first in ``forward``)."""
        if self.training and self.sampler is not None:
            self.set_arch(self.sampler())


def sliced_bn(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, n: int) -> torch.Tensor:
    """``bn`` on its first ``n`` channels: as its ``forward``, with every tensor sliced (the
    running statistics of the slice are updated in place)."""
    if bn.training:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    else:
        factor = 0.0
    return F.batch_norm(x, bn.running_mean[:n], bn.running_var[:n], bn.weight[:n], bn.bias[:n], bn.training, factor,
                        bn.eps)


def check_arch(arch: Any, keys: tuple) -> None:
    """Refuses anything but an arch dict whose keys are all among ``keys``.

    Raises:
        ArchError: With the key path, e.g. ``arch.depht: this supernet holds no such key``.
    """
    if not isinstance(arch, Mapping):
        raise ArchError("arch", f"the supernet needs an arch dict, got {describe(arch)}")
    for key in arch:
        if key not in keys:
            raise ArchError(f"arch.{key}", "this supernet holds no such key")


def check_constants(arch: Mapping[str, Any], constants: Mapping[str, Any], defaults: Mapping[str, Any],
                    where: str = "arch") -> None:
    """Refuses an arch whose constant keys (``defaults``: the family's default where a key is
    left out) differ from the supernet's ``constants`` (the space's).

    Raises:
        ArchError: With the key path, e.g. ``arch.activation: this supernet holds activation 'relu' only``.
    """
    for key, default in defaults.items():
        given, value = arch.get(key, default), constants.get(key, default)
        if given != value or isinstance(given, bool) != isinstance(value, bool):
            raise ArchError(f"{where}.{key}", f"this supernet holds {key} {value!r} only, got {describe(given)}")


def pick(value: Any, options: tuple, path: str, what: str) -> Any:
    """``value`` if it is one of ``options`` (numbers: a bool is none of them).

    Raises:
        ArchError: ``path: 32 is not a candidate of this supernet's widths (8, 16)``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in options:
        raise ArchError(path, f"{value!r} is not a candidate of this supernet's {what} "
                              f"({', '.join(map(str, options))})")
    return value


def path_items(value: Any, depths: tuple[int, ...], path: str, what: str, keys) -> list[tuple[str, Mapping]]:
    """The items of a path's list of ``what`` (layers, blocks, stages) with their key paths:
    a list of a length among ``depths``, each item a mapping of ``keys`` only.

    Raises:
        ArchError: ``arch.blocks: this supernet takes 1 or 2 blocks, got ...``, ``arch.blocks.0:
            expected a block mapping, ...``, ``arch.blocks.0.x: this supernet's blocks hold no such key``.
    """
    if not isinstance(value, list) or len(value) not in depths:
        raise ArchError(path, f"this supernet takes {' or '.join(map(str, depths))} {what}s, got {describe(value)}")
    out = []
    for j, item in enumerate(value):
        where = f"{path}.{j}"
        if not isinstance(item, Mapping):
            raise ArchError(where, f"expected a {what} mapping, got {describe(item)}")
        for key in item:
            if key not in keys:
                raise ArchError(f"{where}.{key}", f"this supernet's {what}s hold no such key")
        out.append((where, item))
    return out


class MixedOp(nn.Module):
    """One module per candidate; the forward pass runs the active one only.

    Example:
        >>> op = MixedOp({"a": nn.Identity(), "b": nn.Linear(2, 2)})
        >>> op.active = "a"
        >>> op(torch.ones(1, 2)).tolist()
        [[1.0, 1.0]]
    """

    def __init__(self, candidates: Mapping[str, nn.Module]):
        super().__init__()
        self.candidates = nn.ModuleDict(candidates)
        self.active = next(iter(candidates))
        #: Softmax weights of the candidates (gradient search): the output is their weighted
        #: sum instead of the active candidate's.
        self.weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            return self.candidates[self.active](x)
        out = None
        for w, (name, op) in zip(self.weights, self.candidates.items()):
            if name == "none":
                continue  # zeros: nothing to add
            term = w * op(x)
            out = term if out is None else out + term
        return out if out is not None else self.candidates["none"](x)

    def extra_repr(self) -> str:
        return f"active={self.active!r}"


class ArchSteps:
    """DARTS's architecture side (Liu et al., 2019, first order), for a supernet whose choices
    are :class:`MixedOp` s: one logit per candidate of each choice, learnt by Adam on held-out
    training batches, alternating with the network's own steps.

    The architecture parameters and their Adam moments are buffers, so the network's optimizer
    never touches them and a checkpoint of the module holds them. In training mode, once
    :meth:`set_arch_data` has handed it a held-out part of the training split, every forward
    pass first takes one architecture step on the next held-out batch (the gradient of its loss
    with respect to the architecture parameters only), then computes the batch's output with
    the updated weights for the network's own step. The class sets ``alpha_ops`` (the mixed ops
    each logit vector weighs) in :meth:`_init_arch`; it needs ``self.net`` and ``self.seed``.
    """

    BETAS = (0.5, 0.999)
    WEIGHT_DECAY = 1e-3

    def _init_arch(self, alpha_ops: list[list[MixedOp]], arch_lr: float) -> None:
        self.arch_lr = float(arch_lr)
        self.alpha_ops = alpha_ops
        for i, ops in enumerate(alpha_ops):
            n = len(ops[0].candidates)
            self.register_buffer(f"alpha_{i}", torch.zeros(n))
            self.register_buffer(f"alpha_m_{i}", torch.zeros(n))
            self.register_buffer(f"alpha_v_{i}", torch.zeros(n))
        self.register_buffer("arch_steps", torch.zeros((), dtype=torch.long))
        self.arch_data: tuple[torch.Tensor, torch.Tensor] | None = None
        self.arch_batch_size = 64

    def alphas(self) -> list[torch.Tensor]:
        return [getattr(self, f"alpha_{i}") for i in range(len(self.alpha_ops))]

    def set_arch_data(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> None:
        """The held-out training data the architecture steps learn from."""
        self.arch_data, self.arch_batch_size = (x, y), int(batch_size)

    def _weigh(self, alphas: list[torch.Tensor]) -> None:
        for ops, alpha in zip(self.alpha_ops, alphas):
            weights = torch.softmax(alpha, dim=0)
            for op in ops:
                op.weights = weights

    def _arch_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.arch_data
        n, size = len(y), self.arch_batch_size
        per_pass = max(1, n // size)
        step = int(self.arch_steps)
        # A seeded permutation per pass over the held-out data: the sequence resumes from
        # the step count in a checkpoint.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + step // per_pass))
        index = order[(step % per_pass) * size:(step % per_pass + 1) * size]
        return x[index.to(x.device)], y[index.to(y.device)]

    def arch_step(self) -> torch.Tensor:
        """One Adam step of the architecture on the next held-out batch; returns its loss
        (a detached tensor: no host sync per batch)."""
        x, y = self._arch_batch()
        alphas = [a.detach().requires_grad_(True) for a in self.alphas()]
        self._weigh(alphas)
        loss = nn.functional.cross_entropy(self.net(x), y)
        grads = torch.autograd.grad(loss, alphas)
        self.arch_steps += 1
        t = int(self.arch_steps)
        b1, b2 = self.BETAS
        with torch.no_grad():
            for i, (alpha, grad) in enumerate(zip(self.alphas(), grads)):
                grad = grad + self.WEIGHT_DECAY * alpha
                m, v = getattr(self, f"alpha_m_{i}"), getattr(self, f"alpha_v_{i}")
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                step = self.arch_lr * math.sqrt(1 - b2**t) / (1 - b1**t)
                alpha.sub_(step * m / (v.sqrt() + 1e-8))
        return loss.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.arch_data is not None:
            self.arch_step()
        self._weigh(self.alphas())
        return self.net(x)


def keep_at_most(ranked: Mapping[Any, list[str]], weights: Mapping[Any, float], free: tuple[str, ...],
                 limit: int | None) -> tuple[dict, int]:
    """A derived architecture's guard against DARTS's collapse to parameter-free choices.

    ``ranked`` holds each choice's candidates, strongest first, and ``weights`` the softmax
    weight of its strongest. Each choice takes its strongest candidate, except that at most
    ``limit`` (None: no limit) may take one in ``free``: the others, weakest first, take their
    best candidate outside ``free`` where they have one. Returns the chosen candidate per choice,
    and how many choices' strongest was in ``free`` before the limit.

    Example:
        >>> keep_at_most({"a": ["skip", "conv"], "b": ["skip", "conv"]}, {"a": 0.9, "b": 0.6}, ("skip",), 1)
        ({'a': 'skip', 'b': 'conv'}, 2)
    """
    chosen = {key: names[0] for key, names in ranked.items()}
    picked_free = sorted(((weights[key], key) for key, names in ranked.items() if names[0] in free), reverse=True)
    if limit is not None:
        for _, key in picked_free[limit:]:
            others = [name for name in ranked[key] if name not in free]
            if others:
                chosen[key] = others[0]
    return chosen, len(picked_free)
