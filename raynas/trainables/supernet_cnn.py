"""The weight-sharing supernet of the ``cnn`` family (single-path one-shot, sliced weights as
in :mod:`raynas.trainables.supernet_mbconv`).

What shares weights (the space's rules: :func:`raynas.search.oneshot.cnn_layout`):

* **channels**: each stage holds the conv of its largest channels; ``c`` channels are the
  first ``c`` output channels of its conv (and bias, or batch norm), and the first ``c`` input
  channels of whatever reads them (the next stage's conv, the head's first linear layer).
* **kernel**: each stage holds a kernel of its largest size; kernel ``k`` is its centred
  ``k x k`` slice (padding ``k // 2``), as mbconv's depthwise kernels.
* **dropout** (the head's): no weights.

The list of stages, each stage's ``stride``, ``pool`` and ``batch_norm``, ``activation`` and
``head_width`` are constants of the space (no depth search: docs/oneshot.md says why). Every
path, in eval mode, computes what :func:`~raynas.trainables.families.build_cnn` of its arch
computes with the weights :meth:`CNNSupernet.path_state_dict` copies into it
(tests/trainables/test_supernet_cnn.py).

Example:
    >>> space = {"stages": [{"channels": {"choice": [4, 8]}, "kernel": {"choice": [3, 5]}},
    ...                     {"channels": 8, "stride": 2}], "dropout": {"choice": [0.0, 0.2]}}
    >>> net = CNNSupernet(space, (1, 8, 8), 10)
    >>> net.set_arch({"stages": [{"channels": 4, "kernel": 5}, {"channels": 8, "stride": 2}], "dropout": 0.2})
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

from raynas.search.oneshot import cnn_layout
from raynas.trainables.families import ACTIVATIONS, build_cnn
from raynas.trainables.supernet_paths import PathSampling, check_arch, check_constants, path_items, pick, sliced_bn

__all__ = ["CNNSupernet"]

#: build_cnn's defaults of the keys a cnn supernet holds as constants (of the arch, of a stage).
_CONSTANT_DEFAULTS = {"activation": "relu", "head_width": 0}
_STAGE_DEFAULTS = {"stride": 1, "pool": False, "batch_norm": True}


class CNNSupernet(PathSampling, nn.Module):
    """Every path of a cnn space in one network of shared, sliced weights.

    Args:
        arch_space: The space's ``arch`` (checked by :func:`~raynas.search.oneshot.cnn_layout`).
        input_shape, num_classes: As for a family.

    Attributes:
        layout: The :class:`~raynas.search.oneshot.CNNLayout` it holds.

    Raises:
        ConfigError: A space a supernet cannot hold (with its key path).
        ArchError: The constants do not build for the data (non-image input, more downsampling
            than the image allows, an unknown activation).
    """

    def __init__(self, arch_space: Mapping[str, Any], input_shape: tuple, num_classes: int):
        super().__init__()
        self._init_layout(cnn_layout(arch_space))
        # The family checks the constants and the sizes (its ArchError names the key, as for any trial).
        build_cnn(self.largest_path(), tuple(input_shape), num_classes)
        self.act = ACTIVATIONS[self.constants.get("activation", "relu")]()
        self.settings = [{**_STAGE_DEFAULTS, **stage.constants} for stage in self.layout.stages]
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        channels = input_shape[0]
        for stage, settings in zip(self.layout.stages, self.settings):
            kernel, out = max(stage.kernels), max(stage.channels)
            # The stride is applied functionally (the path's kernel sets the padding).
            self.convs.append(nn.Conv2d(channels, out, kernel, bias=not settings["batch_norm"]))
            self.norms.append(nn.BatchNorm2d(out) if settings["batch_norm"] else nn.Identity())
            channels = out
        head_width = int(self.constants.get("head_width", 0))
        self.hidden = nn.Linear(channels, head_width) if head_width else None
        self.head = nn.Linear(head_width or channels, num_classes)
        self.active: list[tuple[int, int]] = []  # per stage: (channels, kernel)
        self.dropout = 0.0
        self._path: dict = {}
        self.set_arch(self.largest_path())

    # -- paths ----------------------------------------------------------------------------------

    def largest_path(self) -> dict:
        """The path of the most activations and work: each stage's most channels and largest
        kernel, the largest dropout (what a memory estimate traces)."""
        stages = [{"channels": max(s.channels), "kernel": max(s.kernels), **s.constants} for s in self.layout.stages]
        return {**self.constants, "dropout": max(self.layout.dropouts), "stages": stages}

    def set_arch(self, arch: Mapping[str, Any]) -> None:
        """Selects the path of ``arch`` (an arch dict of the space; a key it leaves out takes
        the family's default).

        Raises:
            ArchError: A value that is not a candidate of the supernet (with its key path).
        """
        check_arch(arch, ("stages", "dropout", *_CONSTANT_DEFAULTS))
        check_constants(arch, self.constants, _CONSTANT_DEFAULTS)
        dropout = float(pick(arch.get("dropout", 0.0), self.layout.dropouts, "arch.dropout", "dropouts"))
        stages = path_items(arch.get("stages"), (len(self.layout.stages),), "arch.stages", "stage",
                            ("channels", "kernel", *_STAGE_DEFAULTS))
        active, normal = [], []
        for stage, (path, given) in zip(self.layout.stages, stages):
            check_constants(given, stage.constants, _STAGE_DEFAULTS, where=path)
            channels = int(pick(given.get("channels"), stage.channels, f"{path}.channels", "stage's channels"))
            kernel = int(pick(given.get("kernel", 3), stage.kernels, f"{path}.kernel", "stage's kernels"))
            active.append((channels, kernel))
            normal.append({"channels": channels, "kernel": kernel, **stage.constants})
        self.active, self.dropout = active, dropout
        self._path = {**self.constants, "dropout": dropout, "stages": normal}

    def _draw(self, rng: random.Random) -> dict:
        """A path with each stage's channels and kernel and the head's dropout drawn from their
        candidates (:meth:`draw_uniform`)."""
        stages = [{"channels": rng.choice(s.channels), "kernel": rng.choice(s.kernels), **s.constants}
                  for s in self.layout.stages]
        return {**self.constants, "dropout": rng.choice(self.layout.dropouts), "stages": stages}

    def path(self) -> dict:
        """The arch dict of the active path (every stage's channels and kernel explicit)."""
        return {**self._path, "stages": [dict(stage) for stage in self._path["stages"]]}

    # -- running and copying a path -------------------------------------------------------------

    def _kernel(self, conv: nn.Conv2d, channels: int, cin: int, k: int) -> torch.Tensor:
        start = (conv.kernel_size[0] - k) // 2
        return conv.weight[:channels, :cin, start:start + k, start:start + k]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._follow_sampler()
        h = x
        for conv, bn, settings, (channels, k) in zip(self.convs, self.norms, self.settings, self.active):
            bias = None if conv.bias is None else conv.bias[:channels]
            h = F.conv2d(h, self._kernel(conv, channels, h.shape[1], k), bias, settings["stride"], k // 2)
            if settings["batch_norm"]:
                h = sliced_bn(bn, h, channels)
            h = self.act(h)
            if settings["pool"]:
                h = F.max_pool2d(h, 2)
        h = F.dropout(F.adaptive_avg_pool2d(h, 1).flatten(1), self.dropout, self.training)
        if self.hidden is not None:
            h = F.linear(h, self.hidden.weight[:, :h.shape[1]], self.hidden.bias)
            h = F.dropout(self.act(h), self.dropout, self.training)
        return F.linear(h, self.head.weight[:, :h.shape[1]], self.head.bias)

    def path_state_dict(self) -> dict[str, torch.Tensor]:
        """The active path's weights (sliced), named as in ``build_cnn(self.path(), ...)``'s
        state dict (``0.<stage>.<conv, batch norm>``, then the head ``1.<index>``)."""
        out: dict[str, torch.Tensor] = {}
        cin = self.convs[0].in_channels
        for i, (conv, bn, (channels, k)) in enumerate(zip(self.convs, self.norms, self.active)):
            out[f"0.{i}.0.weight"] = self._kernel(conv, channels, cin, k)
            if conv.bias is not None:
                out[f"0.{i}.0.bias"] = conv.bias[:channels]
            if isinstance(bn, nn.BatchNorm2d):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    out[f"0.{i}.1.{name}"] = getattr(bn, name)[:channels]
                out[f"0.{i}.1.num_batches_tracked"] = bn.num_batches_tracked
            cin = channels
        # The family's head: pool, flatten, [dropout], [linear, activation, [dropout]], linear.
        index = 3 if self.dropout > 0 else 2
        if self.hidden is not None:
            out[f"1.{index}.weight"], out[f"1.{index}.bias"] = self.hidden.weight[:, :cin], self.hidden.bias
            index += 3 if self.dropout > 0 else 2
            out[f"1.{index}.weight"], out[f"1.{index}.bias"] = self.head.weight, self.head.bias
        else:
            out[f"1.{index}.weight"], out[f"1.{index}.bias"] = self.head.weight[:, :cin], self.head.bias
        return out

    def extra_repr(self) -> str:
        return f"active={self.active}, dropout={self.dropout}"
