"""The weight-sharing supernet of the ``mlp`` family (single-path one-shot, sliced weights as
in :mod:`raynas.trainables.supernet_mbconv`).

What shares weights (the space's rules: :func:`raynas.search.oneshot.mlp_layout`):

* **width**: each hidden layer position holds its largest width; width ``w`` is the first ``w``
  outputs of its linear layer (and the first ``w`` entries of its batch norm), and the first
  ``w`` inputs of whatever reads it (the next hidden layer or the output layer).
* **depth** (``depth: {choice}`` or ``layers: {repeat: {min, max}, block}``): the supernet holds
  the deepest; a path with ``n`` hidden layers runs the first ``n``, and the output layer reads
  the first features of its largest input.
* **dropout** (``arch.dropout`` and a layer's own): no weights.

``activation`` and ``batch_norm`` are constants. Every path, in eval mode, computes what
:func:`~raynas.trainables.families.build_mlp` of its arch computes with the weights
:meth:`MLPSupernet.path_state_dict` copies into it (tests/trainables/test_supernet_mlp.py).

Example:
    >>> net = MLPSupernet({"depth": {"choice": [1, 2]}, "width": {"choice": [8, 16]}}, (13,), 3)
    >>> net.set_arch({"depth": 1, "width": 8})
    >>> net.eval()(torch.zeros(2, 13)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from raynas.search.oneshot import MLP_DEFAULTS, mlp_layout
from raynas.trainables.families import ACTIVATIONS, build_mlp
from raynas.trainables.supernet_paths import PathSampling, check_arch, check_constants, path_items, pick, sliced_bn

__all__ = ["MLPSupernet"]

#: build_mlp's defaults of the keys an mlp supernet holds as constants.
_CONSTANT_DEFAULTS = {"activation": "relu", "batch_norm": False}


class MLPSupernet(PathSampling, nn.Module):
    """Every path of an mlp space in one network of shared, sliced weights.

    Args:
        arch_space: The space's ``arch`` (checked by :func:`~raynas.search.oneshot.mlp_layout`).
        input_shape, num_classes: As for a family.

    Attributes:
        layout: The :class:`~raynas.search.oneshot.MLPLayout` it holds.

    Raises:
        ConfigError: A space a supernet cannot hold (with its key path).
        ArchError: The constants do not build (an unknown activation, a batch norm that is not a bool).
    """

    def __init__(self, arch_space: Mapping[str, Any], input_shape: tuple, num_classes: int):
        super().__init__()
        self._init_layout(mlp_layout(arch_space))
        # The family checks the constants (its ArchError names the key, as for any trial).
        build_mlp(self.largest_path(), tuple(input_shape), num_classes)
        self.batch_norm = bool(self.constants.get("batch_norm", False))
        self.act = ACTIVATIONS[self.constants.get("activation", "relu")]()
        self.in_features = math.prod(input_shape)
        self.linears, self.norms = nn.ModuleList(), nn.ModuleList()
        features = self.in_features
        for slot in self.layout.slots:
            self.linears.append(nn.Linear(features, max(slot.widths), bias=not self.batch_norm))
            if self.batch_norm:
                self.norms.append(nn.BatchNorm1d(max(slot.widths)))
            features = max(slot.widths)
        # The output layer reads the last hidden layer of any depth (the input itself at depth 0).
        reads = [max(self.layout.slots[d - 1].widths) if d else self.in_features for d in self.layout.depths]
        self.head = nn.Linear(max(reads), num_classes)
        self.active: list[tuple[int, float]] = []  # per hidden layer: (width, dropout)
        self._path: dict = {}
        self.set_arch(self.largest_path())

    # -- paths ----------------------------------------------------------------------------------

    def largest_path(self) -> dict:
        """The path of the most activations: the deepest, every layer its widest, the largest
        dropouts (what a memory estimate traces)."""
        layout = self.layout
        if not layout.layers:
            return {**self.constants, "depth": max(layout.depths), "width": max(layout.widths),
                    "dropout": max(layout.dropouts)}
        layers = [{"width": max(s.widths), **({"dropout": max(s.dropouts)} if s.dropouts else {})}
                  for s in layout.slots[:max(layout.depths)]]
        return {**self.constants, "dropout": max(layout.dropouts), "layers": layers}

    def set_arch(self, arch: Mapping[str, Any]) -> None:
        """Selects the path of ``arch`` (an arch dict of the space; a key it leaves out takes
        the family's default).

        Raises:
            ArchError: A value that is not a candidate of the supernet (with its key path).
        """
        layout = self.layout
        keys = ("layers",) if layout.layers else ("depth", "width")
        check_arch(arch, (*keys, "dropout", *_CONSTANT_DEFAULTS))
        check_constants(arch, self.constants, _CONSTANT_DEFAULTS)
        p = float(pick(arch.get("dropout", MLP_DEFAULTS["dropout"]), layout.dropouts, "arch.dropout", "dropouts"))
        if not layout.layers:
            depth = int(pick(arch.get("depth", MLP_DEFAULTS["depth"]), layout.depths, "arch.depth", "depths"))
            width = int(pick(arch.get("width", MLP_DEFAULTS["width"]), layout.widths, "arch.width",
                             "widths"))
            self.active = [(width, p)] * depth
            self._path = {**self.constants, "depth": depth, "width": width, "dropout": p}
            return
        layers = path_items(arch.get("layers"), layout.depths, "arch.layers", "layer", ("width", "dropout"))
        active, normal = [], []
        for slot, (path, layer) in zip(layout.slots, layers):
            width = int(pick(layer.get("width"), slot.widths, f"{path}.width", "layer's widths"))
            # A layer without dropouts of its own in the space takes arch.dropout.
            own = slot.dropouts or (p,)
            drop = float(pick(layer.get("dropout", p), own, f"{path}.dropout", "layer's dropouts"))
            active.append((width, drop))
            normal.append({"width": width, **({"dropout": drop} if slot.dropouts else {})})
        self.active = active
        self._path = {**self.constants, "dropout": p, "layers": normal}

    def _draw(self, rng: random.Random) -> dict:
        """A path with the depth, the width(s) and the dropout(s) drawn from their candidates
        (:meth:`draw_uniform`)."""
        layout = self.layout
        if not layout.layers:
            return {**self.constants, "depth": rng.choice(layout.depths), "width": rng.choice(layout.widths),
                    "dropout": rng.choice(layout.dropouts)}
        dropout = rng.choice(layout.dropouts)
        layers = [{"width": rng.choice(s.widths), **({"dropout": rng.choice(s.dropouts)} if s.dropouts else {})}
                  for s in layout.slots[:rng.choice(layout.depths)]]
        return {**self.constants, "dropout": dropout, "layers": layers}

    def path(self) -> dict:
        """The arch dict of the active path."""
        out = dict(self._path)
        if "layers" in out:
            out["layers"] = [dict(layer) for layer in out["layers"]]
        return out

    # -- running and copying a path -------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._follow_sampler()
        h = x.flatten(1)
        for j, (width, p) in enumerate(self.active):
            linear = self.linears[j]
            bias = None if linear.bias is None else linear.bias[:width]
            h = F.linear(h, linear.weight[:width, :h.shape[1]], bias)
            if self.batch_norm:
                h = sliced_bn(self.norms[j], h, width)
            h = F.dropout(self.act(h), p, self.training)
        return F.linear(h, self.head.weight[:, :h.shape[1]], self.head.bias)

    def path_state_dict(self) -> dict[str, torch.Tensor]:
        """The active path's weights (sliced), named as in ``build_mlp(self.path(), ...)``'s
        state dict (flatten, then per hidden layer linear, [batch norm], activation, [dropout])."""
        out: dict[str, torch.Tensor] = {}
        index, features = 1, self.in_features
        for j, (width, p) in enumerate(self.active):
            linear = self.linears[j]
            out[f"{index}.weight"] = linear.weight[:width, :features]
            if linear.bias is not None:
                out[f"{index}.bias"] = linear.bias[:width]
            index += 1
            if self.batch_norm:
                bn = self.norms[j]
                for name in ("weight", "bias", "running_mean", "running_var"):
                    out[f"{index}.{name}"] = getattr(bn, name)[:width]
                out[f"{index}.num_batches_tracked"] = bn.num_batches_tracked
                index += 1
            index += 2 if p > 0 else 1  # the activation, and the family's dropout module where p > 0
            features = width
        out[f"{index}.weight"] = self.head.weight[:, :features]
        out[f"{index}.bias"] = self.head.bias
        return out

    def extra_repr(self) -> str:
        return f"active={self.active}"
