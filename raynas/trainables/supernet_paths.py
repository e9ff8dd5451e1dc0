"""What every single-path supernet shares: seeded path draws that a checkpoint resumes, the
sampler called before each training batch, batch norm run on a slice of its channels, and the
checks of a path's constants and candidates.

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

import random
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from raynas.errors import ArchError, describe

__all__ = ["PathSampling", "check_constants", "path_items", "pick", "sliced_bn"]


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
