"""Gradient (DARTS) search of the ``mbconv`` family: every layer position of every stage holds
one module per candidate (identity, or an MBConv of each expansion and kernel), and outputs
their softmax-weighted sum (:class:`~raynas.trainables.supernet_paths.ArchSteps`), one logit vector
per position.

What the positions hold (the space's rules: :func:`raynas.search.oneshot.mbconv_layout`, plus
:func:`raynas.search.oneshot.check_gradient_mbconv`):

* a layer's candidates (:func:`~raynas.search.oneshot.gradient_candidates`): ``identity`` where
  its ``op`` may be identity, and ``e{E}_k{K}`` (an MBConv of expansion E and kernel K,
  :class:`~raynas.trainables.families.MBConv`) for each of its expansions and kernels where it
  may be mbconv;
* depth: a stage of ``layers: {repeat: {min: a, max: b}, block}`` holds ``b`` positions; those
  from ``a`` on (never the first, which carries the stage's stride and channel change) also
  hold ``skip`` (the layer is left out) unless identity is already a candidate, so a derived
  stage has between ``max(a, 1)`` and ``b`` layers;
* a first position that may be identity or skip and changes the shape runs
  ``build_mbconv``'s stand-in (an MBConv of expansion 1 and kernel 3) for it.

Stage channels are constants (a choice of widths is not an op: use one-shot search), as are the
stem, strides and head, which are the family's own modules. The derived network
(:meth:`DartsMBConvSupernet.derive`) takes each position's strongest candidate, with at most
``max_skip`` parameter-free ones (identity or skip) per stage, the others taking their best
MBConv (the guard of :class:`~raynas.trainables.supernet.DartsSupernet` against the collapse
to parameter-free choices, per stage instead of per cell kind).

Example:
    >>> space = {"stem_channels": 8, "stages": [{"channels": 8, "layers": {"repeat": {"min": 1, "max": 2},
    ...     "block": {"expansion": {"choice": [1, 3]}, "kernel": 3}}}]}
    >>> net = DartsMBConvSupernet(space, (1, 8, 8), 10)
    >>> [list(op.candidates) for op in net.positions[0]]
    [['e1_k3', 'e3_k3'], ['e1_k3', 'e3_k3', 'skip']]
    >>> with torch.no_grad():
    ...     _ = net.alphas()[1][2].fill_(1.0)  # the second position prefers to be left out
    >>> net.derive()[0]["stages"][0]["layers"]  # the keys the space gives a layer
    [{'expansion': 1, 'kernel': 3}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from raynas.search.oneshot import STAND_IN, _unwrap, gradient_candidates, mbconv_layout
from raynas.trainables.families import ACTIVATIONS, MBConv, build_mbconv
from raynas.trainables.supernet_paths import ArchSteps, MixedOp, keep_at_most

__all__ = ["DartsMBConvSupernet", "PARAMETER_FREE"]

#: The candidates without weights of their own (the collapse DARTS is prone to).
PARAMETER_FREE = ("identity", "skip")


def _layer(name: str) -> dict:
    """The arch dict of a layer candidate (``skip``: none)."""
    if name == "identity":
        return {"op": "identity"}
    expansion, kernel = (int(part[1:]) for part in name.split("_"))
    return {"op": "mbconv", "expansion": expansion, "kernel": kernel}


class DartsMBConvSupernet(ArchSteps, nn.Module):
    """Every candidate of every layer position of an mbconv space, side by side, mixed by
    softmax weights (see the module's docstring).

    Args:
        arch_space: The space's ``arch`` (checked by :func:`~raynas.search.oneshot.mbconv_layout`).
        input_shape, num_classes: As for a family.
        arch_lr, max_skip: As for :class:`~raynas.trainables.supernet.DartsSupernet`
            (``max_skip``: parameter-free choices kept per stage).
    """

    def __init__(self, arch_space: Mapping[str, Any], input_shape: tuple, num_classes: int, *,
                 arch_lr: float = 3e-3, max_skip: int | None = 2):
        super().__init__()
        self.constants, self.layout = mbconv_layout(arch_space)
        self.max_skip = max_skip
        self.seed = 0
        # The family builds the stem and head (and checks the constants and sizes) from a path
        # of the largest kernels; the stages are replaced by mixed positions.
        skeleton = build_mbconv(self._largest_kernels(), tuple(input_shape), num_classes)
        act = ACTIVATIONS[self.constants.get("activation", "relu6")]
        channels = int(self.constants.get("stem_channels", 16))
        self.positions: list[list[MixedOp]] = []
        stages = []
        for stage in self.layout:
            out, mixed = stage.channels[0], []
            for j, slot in enumerate(stage.slots):
                cin, stride = (channels, stage.stride) if j == 0 else (out, 1)
                changes = cin != out or stride != 1
                candidates: dict[str, nn.Module] = {}
                for name in gradient_candidates(stage, j):
                    if name in PARAMETER_FREE:  # build_mbconv's stand-in where the layer changes the shape
                        candidates[name] = MBConv(cin, out, *STAND_IN, stride, act) if changes else nn.Identity()
                    else:
                        layer = _layer(name)
                        candidates[name] = MBConv(cin, out, layer["expansion"], layer["kernel"], stride, act)
                mixed.append(MixedOp(candidates))
            if not stage.slots:  # no layers: build_mbconv's stand-in, or nothing
                changes = channels != out or stage.stride != 1
                stages.append(MBConv(channels, out, *STAND_IN, stage.stride, act) if changes else nn.Identity())
            else:
                stages.append(nn.Sequential(*mixed))
            self.positions.append(mixed)
            channels = out
        skeleton[1] = nn.Sequential(*stages)
        self.net = skeleton
        spaces = [_unwrap(stage) for stage in _unwrap(arch_space["stages"])]
        self._stage_keys = [set(stage) for stage in spaces]
        self._keys = [self._layer_keys(stage, len(ops)) for stage, ops in zip(spaces, self.positions)]
        self._init_arch([[op] for ops in self.positions for op in ops], arch_lr)

    @staticmethod
    def _layer_keys(stage: Mapping[str, Any], n: int) -> list[set]:
        """The keys the space gives each of a stage's ``n`` layers: a derived layer names only
        those (the rest are build_mbconv's defaults), so it is a point of the space."""
        layers = _unwrap(stage.get("layers", [{}]))
        items = [_unwrap(layers.get("block")) or {}] * n if isinstance(layers, Mapping) else list(layers)
        return [set(_unwrap(item)) for item in items]

    def _largest_kernels(self) -> dict:
        arch = dict(self.constants)
        arch["stages"] = [{"channels": stage.channels[0], "stride": stage.stride,
                           "layers": [{"op": "mbconv", "expansion": max(s.expansions), "kernel": max(s.kernels)}
                                      for s in stage.slots]} for stage in self.layout]
        return arch

    def _choose(self, limit: int | None) -> tuple[list[list[str]], int]:
        """Each stage's chosen candidate per position (at most ``limit`` parameter-free ones per
        stage), and how many positions chose a parameter-free candidate before that limit."""
        alphas = iter(self.alphas())
        chosen, raw_free = [], 0
        for ops in self.positions:
            picks, weights = {}, {}
            for j, op in enumerate(ops):
                alpha, names = next(alphas), list(op.candidates)
                picks[j] = [names[i] for i in sorted(range(len(names)), key=lambda i: -float(alpha[i]))]
                weights[j] = float(torch.softmax(alpha, 0)[names.index(picks[j][0])])
            names, free = keep_at_most(picks, weights, PARAMETER_FREE, limit)
            raw_free += free
            chosen.append([names[j] for j in range(len(ops))])
        return chosen, raw_free

    def _arch(self, chosen: list[list[str]]) -> dict:
        """The arch dict of the chosen candidates, with only the keys the space gives."""
        arch = dict(self.constants)
        arch["stages"] = []
        for stage, names, keys, stage_keys in zip(self.layout, chosen, self._keys, self._stage_keys):
            layers = [{k: v for k, v in _layer(name).items() if k in layer_keys}
                      for name, layer_keys in zip(names, keys) if name != "skip"]
            given = {"channels": stage.channels[0], "stride": stage.stride, "layers": layers}
            arch["stages"].append({k: v for k, v in given.items() if k in stage_keys})
        return arch

    def derive(self, max_skip: int | None = "default") -> tuple[dict, int]:
        """The discrete network: each position's strongest candidate (``skip`` leaves the layer
        out), with at most ``max_skip`` parameter-free choices per stage (the others, weakest
        first, take their best MBConv where they have one); and how many positions chose a
        parameter-free candidate before that limit."""
        chosen, raw_free = self._choose(self.max_skip if max_skip == "default" else max_skip)
        return self._arch(chosen), raw_free

    def epoch_metrics(self) -> dict:
        """Reported with each epoch: the network derived so far (JSON) and its parameter-free
        layers (``skip_edges``: chosen before the guard; ``skip_edges_kept``: after it, as for
        a cell)."""
        chosen, raw_free = self._choose(self.max_skip)
        kept = sum(name in PARAMETER_FREE for names in chosen for name in names)
        return {"derived_arch": json.dumps(self._arch(chosen), sort_keys=True), "skip_edges": raw_free,
                "skip_edges_kept": kept}
