"""The weight-sharing supernet of the ``resnet`` family (single-path one-shot, as in
:mod:`raynas.trainables.supernet` for cells and :mod:`raynas.trainables.supernet_mbconv`).

What shares weights (the space's rules: :func:`raynas.search.oneshot.resnet_layout`); the
supernet holds the family's network of the largest candidates, and a path runs slices of it:

* **width** (``stem_channels`` and each stage's ``channels``): ``c`` channels are the first
  ``c`` output channels of a conv and its batch norm, and the first ``c`` input channels of
  whatever reads them (the next block's convs and shortcut, the head's linear layer).
* **depth** (each stage's ``blocks``): a stage holds its deepest candidate's blocks; a path
  with ``n`` blocks runs the first ``n``.
* **the shortcut**: :class:`~raynas.trainables.families.BasicBlock` projects its input (1x1
  conv + batch norm) when its stride is not 1 or its input and output channels differ. Under
  sliced widths one path of a stage's first block may need the projection where another does
  not (a 16-channel stem into a stage of 16 or 32 channels), so that block holds the largest
  projection wherever some path needs one, and each path runs it (sliced) exactly where
  ``build_resnet`` of that path has one, the identity otherwise. Later blocks keep their
  stage's channels and stride 1: never a projection.
* **dropout** (the head's): no weights.

The number of stages, each stage's stride and the activation are constants of the space.
Every path computes what :func:`~raynas.trainables.families.build_resnet` of its arch
computes with the weights :meth:`ResNetSupernet.path_state_dict` copies into it
(tests/trainables/test_supernet_resnet.py).

Example:
    >>> space = {"stem_channels": {"choice": [4, 8]}, "stages": [
    ...     {"channels": {"choice": [8, 16]}, "blocks": {"choice": [1, 2]}, "stride": 2}]}
    >>> net = ResNetSupernet(space, (1, 8, 8), 10)
    >>> net.set_arch({"stem_channels": 4, "stages": [{"channels": 16, "blocks": 2, "stride": 2}]})
    >>> net.eval()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from raynas.errors import ArchError, describe
from raynas.search.oneshot import RESNET_DEFAULTS, RESNET_STAGE_DEFAULTS, ResNetStage, resnet_layout
from raynas.trainables.families import ACTIVATIONS, BasicBlock, _conv_bn, _head, build_resnet
from raynas.trainables.supernet_paths import PathSampling, check_arch, check_constants, pick
from raynas.trainables.supernet_paths import sliced_bn as _sliced_bn

__all__ = ["ResNetSupernet"]

#: build_resnet's default activation.
DEFAULT_ACTIVATION = "relu"


def _projects(stride: int, cin: int, cout: int) -> bool:
    """Whether a BasicBlock of this shape projects its shortcut (as the family decides)."""
    return stride != 1 or cin != cout


def _sliced_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor, cout: int) -> torch.Tensor:
    """``conv`` then ``bn`` on the first ``cout`` output channels, reading ``x``'s channels
    (the first of the conv's inputs)."""
    h = F.conv2d(x, conv.weight[:cout, :x.shape[1]], None, conv.stride, conv.padding)
    return _sliced_bn(bn, h, cout)


class ResNetSupernet(PathSampling, nn.Module):
    """Every path of a resnet space in one network of shared, sliced weights.

    Its modules are those of the family's network of the largest path (the widest stem and
    stages, the deepest stages; no head dropout module: dropout runs functionally), under the
    same names, plus a projection in a stage's first block where only narrower paths need
    one; :meth:`path_state_dict` slices each tensor of its own state dict.

    Args:
        arch_space: The space's ``arch`` (checked by :func:`~raynas.search.oneshot.resnet_layout`).
        input_shape, num_classes: As for a family.

    Attributes:
        layout: The :class:`~raynas.search.oneshot.ResNetLayout` it holds.

    Raises:
        ConfigError: A space a supernet cannot hold (with its key path).
        ArchError: The constants do not build for the data (too many stride-2 stages, tabular
            input, an unknown activation).
    """

    def __init__(self, arch_space: Mapping[str, Any], input_shape: tuple, num_classes: int):
        super().__init__()
        layout = resnet_layout(arch_space)
        self._init_layout(layout)
        # build_resnet checks the constants and the sizes (stride-2 stages on a small input) on
        # the largest path: its ArchError names the key, as for any trial.
        build_resnet(self.largest_path(), tuple(input_shape), num_classes)
        act = ACTIVATIONS[self.constants.get("activation", DEFAULT_ACTIVATION)]
        self.stem = nn.Sequential(*_conv_bn(input_shape[0], max(layout.stem_channels), 3), act())
        self.stages = nn.ModuleList()
        before = layout.stem_channels  # the channels a stage may receive
        for stage in layout.stages:
            blocks = nn.ModuleList()
            for j in range(max(stage.depths)):
                cin, stride = (max(before), stage.stride) if j == 0 else (max(stage.channels), 1)
                block = BasicBlock(cin, max(stage.channels), stride, act)
                if j == 0 and isinstance(block.shortcut, nn.Identity) and self._may_project(stage, before):
                    block.shortcut = nn.Sequential(*_conv_bn(cin, max(stage.channels), 1, stride))
                blocks.append(block)
            self.stages.append(blocks)
            before = stage.channels
        self.head = _head(max(before), num_classes, 0.0, act)
        # The active path: the stem's channels, the head's dropout, and per stage (input
        # channels, output channels, blocks).
        self.stem_width, self.dropout = max(layout.stem_channels), 0.0
        self.active: list[tuple[int, int, int]] = []
        self._path: dict = {}
        self.set_arch(self._first_path())

    @staticmethod
    def _may_project(stage: ResNetStage, before: tuple[int, ...]) -> bool:
        return any(_projects(stage.stride, cin, cout) for cin in before for cout in stage.channels)

    # -- paths ----------------------------------------------------------------------------------

    def _arch(self, stem: int, dropout: float, stages: list[tuple[int, int]]) -> dict:
        return {**self.constants, "stem_channels": stem, "dropout": dropout,
                "stages": [{"channels": c, "blocks": n, "stride": s.stride}
                           for s, (c, n) in zip(self.layout.stages, stages)]}

    def _first_path(self) -> dict:
        layout = self.layout
        return self._arch(layout.stem_channels[0], layout.dropouts[0],
                          [(s.channels[0], s.depths[0]) for s in layout.stages])

    def largest_path(self) -> dict:
        """The widest and deepest path, with the largest dropout (what a memory estimate traces)."""
        layout = self.layout
        return self._arch(max(layout.stem_channels), max(layout.dropouts),
                          [(max(s.channels), max(s.depths)) for s in layout.stages])

    def _draw(self, rng: random.Random) -> dict:
        """The stem's channels, the head's dropout and each stage's channels and blocks drawn
        uniformly from their candidates."""
        layout = self.layout
        stem, dropout = rng.choice(layout.stem_channels), rng.choice(layout.dropouts)
        return self._arch(stem, dropout, [(rng.choice(s.channels), rng.choice(s.depths)) for s in layout.stages])

    def set_arch(self, arch: Mapping[str, Any]) -> None:
        """Selects the path of ``arch`` (a full arch dict of the space; a key it leaves out
        takes the family's default).

        Raises:
            ArchError: A value that is not a candidate of the supernet (with its key path).
        """
        check_arch(arch, ("activation", *RESNET_DEFAULTS, "stages"))
        check_constants(arch, self.constants, {"activation": DEFAULT_ACTIVATION})
        layout = self.layout
        stem = int(pick(arch.get("stem_channels", RESNET_DEFAULTS["stem_channels"]), layout.stem_channels,
                        "arch.stem_channels", "stem channels"))
        dropout = float(pick(arch.get("dropout", RESNET_DEFAULTS["dropout"]), layout.dropouts, "arch.dropout",
                             "dropouts"))
        stages = arch.get("stages")
        if not isinstance(stages, list) or len(stages) != len(layout.stages):
            raise ArchError("arch.stages", f"this supernet holds {len(layout.stages)} stages, got {describe(stages)}")
        active, cin = [], stem
        for i, (stage, given) in enumerate(zip(layout.stages, stages)):
            path = f"arch.stages.{i}"
            if not isinstance(given, Mapping):
                raise ArchError(path, f"expected a stage mapping, got {describe(given)}")
            for key in given:
                if key not in ("channels", *RESNET_STAGE_DEFAULTS):
                    raise ArchError(f"{path}.{key}", "this supernet's stages hold no such key")
            stride = given.get("stride", RESNET_STAGE_DEFAULTS["stride"])
            if isinstance(stride, bool) or stride != stage.stride:
                raise ArchError(f"{path}.stride", f"this supernet's stage has stride {stage.stride}, got {describe(stride)}")
            cout = int(pick(given.get("channels"), stage.channels, f"{path}.channels", "stage's channels"))
            depth = int(pick(given.get("blocks", RESNET_STAGE_DEFAULTS["blocks"]), stage.depths, f"{path}.blocks",
                             "stage's blocks"))
            active.append((cin, cout, depth))
            cin = cout
        self.stem_width, self.dropout, self.active = stem, dropout, active
        self._path = self._arch(stem, dropout, [(cout, depth) for _, cout, depth in active])

    def path(self) -> dict:
        """The arch dict of the active path (every key explicit)."""
        return {**self._path, "stages": [dict(stage) for stage in self._path["stages"]]}

    # -- running and copying a path -------------------------------------------------------------

    def _block(self, block: BasicBlock, x: torch.Tensor, cout: int) -> torch.Tensor:
        """``block`` on ``x``'s channels with ``cout`` output channels, as ``BasicBlock.forward``
        of that shape computes it (projecting exactly where that block would)."""
        conv1, bn1, act, conv2, bn2 = block.body
        h = _sliced_conv_bn(conv2, bn2, act(_sliced_conv_bn(conv1, bn1, x, cout)), cout)
        if _projects(conv1.stride[0], x.shape[1], cout):
            shortcut = _sliced_conv_bn(block.shortcut[0], block.shortcut[1], x, cout)
        else:
            shortcut = x
        return block.act(h + shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._follow_sampler()
        conv, bn, act = self.stem
        h = act(_sliced_conv_bn(conv, bn, x, self.stem_width))
        for blocks, (_, cout, depth) in zip(self.stages, self.active):
            for block in blocks[:depth]:
                h = self._block(block, h, cout)
        pool, flatten, linear = self.head
        h = F.dropout(flatten(pool(h)), self.dropout, self.training)
        return F.linear(h, linear.weight[:, :h.shape[1]], linear.bias)

    def path_state_dict(self) -> dict[str, torch.Tensor]:
        """The active path's weights (sliced), named as in ``build_resnet(self.path(), ...)``'s
        state dict."""
        out: dict[str, torch.Tensor] = {}
        last = self.active[-1][1]
        for name, t in self.state_dict().items():
            part, _, rest = name.partition(".")
            if part == "stem":  # the stem conv's output channels, its batch norm
                out[f"0.{rest}"] = t[:self.stem_width] if t.dim() else t
            elif part == "stages":
                i, j, rest = rest.split(".", 2)
                cin, cout, depth = self.active[int(i)]
                cin = cin if j == "0" else cout
                if int(j) >= depth or (rest.startswith("shortcut.") and not _projects(
                        self.layout.stages[int(i)].stride if j == "0" else 1, cin, cout)):
                    continue  # a block the path does not run, or a projection it does not use
                # A conv's output and input channels (the second conv reads the first's); a
                # batch norm's channels; the number of batches tracked as it is.
                t = t[:cout, :cout if rest == "body.3.weight" else cin] if t.dim() == 4 else t[:cout] if t.dim() else t
                out[f"1.{i}.{j}.{rest}"] = t
            elif part == "head":
                # The family puts a dropout module before the linear layer when dropout > 0.
                out[f"2.{2 + int(self.dropout > 0)}.{rest.split('.', 1)[1]}"] = t[:, :last] if t.dim() == 2 else t
        return out

    def extra_repr(self) -> str:
        return f"stem_channels={self.stem_width}, stages={[(c, n) for _, c, n in self.active]}"
