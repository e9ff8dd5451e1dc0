"""The weight-sharing supernet of the ``mbconv`` family (single-path one-shot, as in
:mod:`raynas.trainables.supernet` for cells).

What shares weights (the space's rules: :func:`raynas.search.oneshot.mbconv_layout`):

* **width**: a stage whose ``channels`` are a choice holds the largest; ``c`` channels are the
  first ``c`` output channels of each layer's projection (and its batch norm), and the first
  ``c`` input channels of whatever reads them (the next layer's expand and depthwise convs, the
  head's conv or linear layer).
* **depth**: a stage whose ``layers`` are ``{repeat: {min: a, max: b}, block}`` holds ``b``
  layers; a path with ``n`` layers runs the first ``n``.
* **expansion**: each layer holds the hidden channels of its largest expansion; expansion ``e``
  runs the first ``cin * e`` of them (the expand conv's first output channels and its batch
  norm's first entries, the depthwise conv's and its batch norm's first channels, the projection's
  first input channels). Expansion 1 has no expand conv, as in :class:`~raynas.trainables.families.MBConv`:
  the depthwise conv then runs on the layer's input, with its first ``cin`` channels.
* **kernel**: each layer holds a depthwise kernel of its largest size; kernel ``k`` is its
  centred ``k x k`` slice (padding ``k // 2``).
* **op**: ``identity`` skips the layer, except a stage's first layer that changes the channels or
  the stride: that one runs as an MBConv with expansion 1 and kernel 3 (build_mbconv's stand-in),
  with the layer's weights.

Everything else (stem, stage strides, head) is a constant of the space. Every path
computes what :func:`~raynas.trainables.families.build_mbconv` of its arch computes with the
weights :meth:`MBConvSupernet.path_state_dict` copies into it (tests/trainables/test_supernet_mbconv.py).

Example:
    >>> space = {"stem_channels": 4, "stages": [{"channels": 8, "stride": 2, "layers": {
    ...     "repeat": {"min": 1, "max": 2}, "block": {"op": {"choice": ["identity", "mbconv"]},
    ...     "expansion": {"choice": [1, 3]}, "kernel": {"choice": [3, 5]}}}}]}
    >>> net = MBConvSupernet(space, (1, 8, 8), 10)
    >>> net.set_arch({"stem_channels": 4, "stages": [{"channels": 8, "stride": 2, "layers": [
    ...     {"op": "mbconv", "expansion": 3, "kernel": 5}]}]})
    >>> net.eval()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from raynas.errors import ArchError, describe
from raynas.search.oneshot import MBCONV_CONSTANTS, MBCONV_LAYER_DEFAULTS, STAND_IN, mbconv_layout
from raynas.trainables.families import ACTIVATIONS, _conv_bn, _head, build_mbconv
from raynas.trainables.supernet_paths import PathSampling, check_constants, sliced_bn

__all__ = ["MBConvSupernet", "SlicedMBConv"]


class SlicedMBConv(nn.Module):
    """One layer position of an mbconv supernet: an inverted residual of the largest input and
    output channels, expansion and kernel, run as any smaller one by slicing (see the module's
    docstring).

    Args:
        cin, cout, stride: The layer's largest shape (its stride is fixed by its stage).
        expansions, kernels: Every expansion and kernel the layer may run.
        act: The activation's class.

    Attributes:
        expansion, kernel, out_channels: What the layer runs; its input channels are those of
            its input.
    """

    def __init__(self, cin: int, cout: int, stride: int, expansions: tuple[int, ...], kernels: tuple[int, ...],
                 act: Callable[[], nn.Module]):
        super().__init__()
        self.stride = stride
        self.max_kernel = max(kernels)
        hidden = cin * max(expansions)
        # Only a layer that may expand holds an expand conv (expansion 1 has none).
        self.expand = nn.Sequential(*_conv_bn(cin, hidden, 1)) if max(expansions) > 1 else None
        self.depthwise = nn.Sequential(*_conv_bn(hidden, hidden, self.max_kernel, stride, groups=hidden))
        self.project = nn.Sequential(*_conv_bn(hidden, cout, 1))
        self.act = act()
        self.expansion, self.kernel, self.out_channels = max(expansions), self.max_kernel, cout

    def _kernel(self, k: int) -> torch.Tensor:
        weight, start = self.depthwise[0].weight, (self.max_kernel - k) // 2
        return weight[:, :, start:start + k, start:start + k]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e, k, cin, cout = self.expansion, self.kernel, x.shape[1], self.out_channels
        hidden = cin * e
        h = x
        if e != 1:
            h = self.act(sliced_bn(self.expand[1], F.conv2d(x, self.expand[0].weight[:hidden, :cin]), hidden))
        h = F.conv2d(h, self._kernel(k)[:hidden], None, self.stride, k // 2, groups=hidden)
        h = self.act(sliced_bn(self.depthwise[1], h, hidden))
        out = sliced_bn(self.project[1], F.conv2d(h, self.project[0].weight[:cout, :hidden]), cout)
        # As MBConv: a residual when the layer keeps the shape.
        return x + out if self.stride == 1 and cin == cout else out

    def path_state(self, cin: int, expansion: int, kernel: int) -> dict[str, torch.Tensor]:
        """This layer's weights for an ``MBConv(cin, out_channels, expansion, kernel, ...)``,
        named as in its state dict."""
        hidden, cout = cin * expansion, self.out_channels
        convs_bns: list[tuple[torch.Tensor, nn.BatchNorm2d, int]] = []
        if expansion != 1:
            convs_bns.append((self.expand[0].weight[:hidden, :cin], self.expand[1], hidden))
        convs_bns.append((self._kernel(kernel)[:hidden], self.depthwise[1], hidden))
        convs_bns.append((self.project[0].weight[:cout, :hidden], self.project[1], cout))
        out, index = {}, 0
        for weight, bn, n in convs_bns:
            out[f"body.{index}.weight"] = weight
            for name in ("weight", "bias", "running_mean", "running_var"):
                out[f"body.{index + 1}.{name}"] = getattr(bn, name)[:n]
            out[f"body.{index + 1}.num_batches_tracked"] = bn.num_batches_tracked
            index += 3  # conv, batch norm, activation (the projection's batch norm is the last)
        return out

    def extra_repr(self) -> str:
        return f"expansion={self.expansion}, kernel={self.kernel}, out_channels={self.out_channels}"


class MBConvSupernet(PathSampling, nn.Module):
    """Every path of an mbconv space in one network of shared, sliced weights.

    Args:
        arch_space: The space's ``arch`` (checked by :func:`~raynas.search.oneshot.mbconv_layout`).
        input_shape, num_classes: As for a family.

    Attributes:
        sampler: Called before every forward pass in training mode for the path to run (an
            arch dict); ``None`` runs the path last set.
        stages: The :class:`~raynas.search.oneshot.MBConvStage` layout it holds.

    Raises:
        ConfigError: A space a supernet cannot hold (with its key path).
        ArchError: The constants do not build for the data (e.g. too many stride-2 stages).
    """

    def __init__(self, arch_space: Mapping[str, Any], input_shape: tuple, num_classes: int):
        super().__init__()
        constants, self.stages = mbconv_layout(arch_space)
        self.constants = constants  # the space's (a path's arch holds them as the space does)
        settings = {**MBCONV_CONSTANTS, **constants}
        self._init_paths()
        # build_mbconv checks the constants and the sizes (stride-2 stages on a small input) on
        # the deepest first path: its ArchError names the key, as for any trial.
        first = self._first_path()
        build_mbconv(first, tuple(input_shape), num_classes)
        act = ACTIVATIONS[settings["activation"]]
        channels = int(settings["stem_channels"])
        self.stem = nn.Sequential(*_conv_bn(input_shape[0], channels, 3), act())
        self.layers = nn.ModuleList()
        before = (channels,)  # the channels a stage may receive
        for stage in self.stages:
            changes = stage.stride != 1 or any(c != b for c in stage.channels for b in before)
            slots = nn.ModuleList()
            # A stage that may change the shape runs its first layer as the stand-in when it is
            # identity or absent (depth 0): the first layer then holds expansion 1 and kernel 3 too.
            count = max(len(stage.slots), 1 if changes else 0)
            for j in range(count):
                slot = stage.slots[j] if j < len(stage.slots) else None
                expansions = list(slot.expansions) if slot is not None and "mbconv" in slot.ops else []
                kernels = list(slot.kernels) if slot is not None and "mbconv" in slot.ops else []
                if j == 0 and changes and (slot is None or "identity" in slot.ops or 0 in stage.depths):
                    expansions.append(STAND_IN[0])
                    kernels.append(STAND_IN[1])
                cin = max(before) if j == 0 else max(stage.channels)
                stride = stage.stride if j == 0 else 1
                # A layer that is always skipped holds nothing.
                slots.append(SlicedMBConv(cin, max(stage.channels), stride, tuple(expansions), tuple(kernels), act)
                             if expansions else nn.Identity())
            self.layers.append(slots)
            before = stage.channels
        channels = max(before)
        head_channels = int(settings["head_channels"])
        self.head_conv = nn.Sequential(*_conv_bn(channels, head_channels, 1), act()) if head_channels else None
        self.head = _head(head_channels or channels, num_classes, float(settings["dropout"]), act)
        # Per stage: its channels and the layers it runs, (position, input channels, expansion, kernel).
        self.active: list[tuple[int, list[tuple[int, int, int, int]]]] = []
        self.set_arch(first)

    # -- paths ----------------------------------------------------------------------------------

    def _first_path(self) -> dict:
        stages = []
        for stage in self.stages:
            layers = [{"op": slot.ops[0], "expansion": slot.expansions[0], "kernel": slot.kernels[0]}
                      for slot in stage.slots[:max(stage.depths)]]
            stages.append({"channels": stage.channels[0], "stride": stage.stride, "layers": layers})
        return {**self.constants, "stages": stages}

    def largest_path(self) -> dict:
        """The path of the most activations: each stage's widest and deepest, every layer an
        ``mbconv`` where it may be, of its largest expansion and kernel (what a memory estimate
        traces)."""
        stages = []
        for stage in self.stages:
            layers = [{"op": "mbconv", "expansion": max(slot.expansions), "kernel": max(slot.kernels)}
                      if "mbconv" in slot.ops else {"op": "identity"} for slot in stage.slots[:max(stage.depths)]]
            stages.append({"channels": max(stage.channels), "stride": stage.stride, "layers": layers})
        return {**self.constants, "stages": stages}

    def set_arch(self, arch: Mapping[str, Any]) -> None:
        """Selects the path of ``arch`` (a full arch dict of the space).

        Raises:
            ArchError: A value that is not a candidate of the supernet (with its key path).
        """
        if not isinstance(arch, Mapping):
            raise ArchError("arch", f"the supernet needs an arch dict, got {describe(arch)}")
        check_constants(arch, self.constants, MBCONV_CONSTANTS)
        stages = arch.get("stages")
        if not isinstance(stages, list) or len(stages) != len(self.stages):
            raise ArchError("arch.stages", f"this supernet holds {len(self.stages)} stages, got {describe(stages)}")
        active, normal = [], []
        channels = int(self.constants.get("stem_channels", MBCONV_CONSTANTS["stem_channels"]))
        for i, (stage, given) in enumerate(zip(self.stages, stages)):
            path = f"arch.stages.{i}"
            if not isinstance(given, Mapping):
                raise ArchError(path, f"expected a stage mapping, got {describe(given)}")
            if given.get("stride", 1) != stage.stride:
                raise ArchError(f"{path}.stride", f"this supernet's stage has stride {stage.stride}, "
                                                  f"got {describe(given.get('stride'))}")
            out = given.get("channels")
            if isinstance(out, bool) or out not in stage.channels:
                raise ArchError(f"{path}.channels", f"{out!r} is not a candidate of this supernet's stage "
                                                    f"({', '.join(map(str, stage.channels))})")
            out = int(out)
            layers = given.get("layers", [{"op": "mbconv"}])
            if not isinstance(layers, list) or len(layers) not in stage.depths:
                depths = " or ".join(map(str, stage.depths))
                raise ArchError(f"{path}.layers",
                                f"this supernet's stage takes {depths} layers, got {describe(layers)}")
            changes = stage.stride != 1 or channels != out
            run, ran = [], []
            if not layers and changes:
                run.append((0, channels, *STAND_IN))  # no layers: build_mbconv's stand-in all the same
            for j, layer in enumerate(layers):
                lpath = f"{path}.layers.{j}"
                if not isinstance(layer, Mapping):
                    raise ArchError(lpath, f"expected a layer mapping, got {describe(layer)}")
                slot = stage.slots[j]
                op = layer.get("op", "mbconv")
                if op not in slot.ops:
                    raise ArchError(f"{lpath}.op", f"{op!r} is not a candidate of this supernet's layer "
                                                   f"({', '.join(slot.ops)})")
                if op == "identity":
                    ran.append({"op": "identity"})
                    if j == 0 and changes:
                        run.append((j, channels, *STAND_IN))  # build_mbconv's stand-in for a shape-changing identity
                    continue
                values = []
                for key, options in (("expansion", slot.expansions), ("kernel", slot.kernels)):
                    value = layer.get(key, MBCONV_LAYER_DEFAULTS[key])
                    if isinstance(value, bool) or value not in options:
                        raise ArchError(f"{lpath}.{key}", f"{value!r} is not a candidate of this supernet's layer "
                                                          f"({', '.join(map(str, options))})")
                    values.append(int(value))
                run.append((j, channels if j == 0 else out, *values))
                ran.append({"op": "mbconv", "expansion": values[0], "kernel": values[1]})
            active.append((out, run))
            normal.append({"channels": out, "stride": stage.stride, "layers": ran})
            channels = out
        self.active, self._path = active, normal
        for stage_slots, (out, run) in zip(self.layers, active):
            for j, _, e, k in run:
                stage_slots[j].expansion, stage_slots[j].kernel, stage_slots[j].out_channels = e, k, out

    def _draw(self, rng: random.Random) -> dict:
        """A path with each stage's width and depth and each layer's op, expansion and kernel
        drawn from their candidates (:meth:`draw_uniform`)."""
        stages = []
        for stage in self.stages:
            layers, channels = [], rng.choice(stage.channels)
            for slot in stage.slots[:rng.choice(stage.depths)]:
                op = rng.choice(slot.ops)
                layer = {"op": op}
                if op == "mbconv":
                    layer.update(expansion=rng.choice(slot.expansions), kernel=rng.choice(slot.kernels))
                layers.append(layer)
            stages.append({"channels": channels, "stride": stage.stride, "layers": layers})
        return {**self.constants, "stages": stages}

    def path(self) -> dict:
        """The arch dict of the active path (a layer as ``{op: identity}`` or ``{op: mbconv,
        expansion, kernel}``)."""
        return {**self.constants, "stages": [{**stage, "layers": [dict(layer) for layer in stage["layers"]]}
                                             for stage in self._path]}

    # -- running and copying a path -------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._follow_sampler()
        h = self.stem(x)
        for stage_slots, (_, run) in zip(self.layers, self.active):
            for j, _, _, _ in run:
                h = stage_slots[j](h)
        if self.head_conv is not None:  # its input: the first channels of its largest
            conv, bn, act = self.head_conv
            h = act(bn(F.conv2d(h, conv.weight[:, :h.shape[1]])))
        for module in self.head:
            h = F.linear(h, module.weight[:, :h.shape[1]], module.bias) if isinstance(module, nn.Linear) else module(h)
        return h

    def path_state_dict(self) -> dict[str, torch.Tensor]:
        """The active path's weights (sliced), named as in ``build_mbconv(self.path(), ...)``'s
        state dict."""
        out = {f"0.{k}": v for k, v in self.stem.state_dict().items()}
        for s, (stage_slots, (channels, run)) in enumerate(zip(self.layers, self.active)):
            for b, (j, cin, e, k) in enumerate(run):
                out.update({f"1.{s}.{b}.{name}": t for name, t in stage_slots[j].path_state(cin, e, k).items()})
        index = 2
        if self.head_conv is not None:
            head = self.head_conv.state_dict()
            head["0.weight"] = head["0.weight"][:, :channels]
            out.update({f"2.{k}": v for k, v in head.items()})
            index = 3
        for k, v in self.head.state_dict().items():
            # The linear layer's input: the last stage's channels, the first of its largest.
            out[f"{index}.{k}"] = v[:, :channels] if k.endswith("weight") and self.head_conv is None else v
        return out
