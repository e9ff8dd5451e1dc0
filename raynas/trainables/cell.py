"""The ``cell`` family: NAS-Bench-201 / DARTS-style networks of one repeated, searched cell.

A cell is a small directed acyclic graph of ``nodes`` feature maps. Node 0 is the cell's
input; each later node ``j`` is the sum of ``op(node i)`` over its edges ``i -> j`` (every
``i < j``); the cell's output is its last node (as in NAS-Bench-201, Dong & Yang 2020). The
search decides the op on every edge; the arch names each edge ``"i-j"``, so a 4-node cell has
the six edges ``0-1, 0-2, 1-2, 0-3, 1-3, 2-3`` and its space is one ``choice`` per edge::

    space:
      arch:
        edges:
          0-1: {choice: [none, skip, conv1x1, conv3x3, avgpool3x3]}
          0-2: {choice: [none, skip, conv1x1, conv3x3, avgpool3x3]}
          ...                                # one line per edge, 6 for 4 nodes

The ops are the keys of :data:`OPS` (name -> ``(C_in, C_out, stride) -> nn.Module``); which
of them are searched is simply each edge's choice list. :data:`CELL_OPS` holds NAS-Bench-201's
five, the documented default.

Macro structure: a 3x3 conv + BN stem of ``channels``, then ``stages`` stages of
``cells_per_stage`` cells; between two stages a reduction halves the spatial size and doubles
the channels, either NAS-Bench-201's residual block with stride 2 (``reduction: resblock``) or
a searched reduction cell (``reduction: cell``, with its own ``reduction_edges``) whose edges
out of node 0 carry the stride and the channel change. Then BN + ReLU, global average pooling,
optional dropout and a linear layer. With 4 nodes, 16 channels, 3 stages of 5 cells and
``resblock`` reductions this is NAS-Bench-201's network, parameter for parameter
(tests/trainables/test_cell.py checks two of its architectures' counts).

Weight sharing (one-shot supernets, DARTS-style gradient search): the edge ops, i.e. the
values of ``edges`` and ``reduction_edges`` (:data:`SHARED_CHOICES`), can share weights. An op
on an edge is built by ``OPS[name](C_in, C_out, stride)`` with a shape that depends only on
the edge's place in the network, never on the other edges' ops, so a supernet holds every
candidate op of every edge side by side and each architecture uses one of them per edge. The
wiring lives in :class:`Cell`, which asks a ``make_edge`` hook for each edge's module, and
the skeleton in :class:`CellNetwork`, which passes its hooks on to every cell: a supernet
builds the same skeleton with a hook returning a mixed op over the candidates. The other keys
(``nodes``, ``channels``, ``stages``, ``cells_per_stage``, ``reduction``) change the skeleton
itself and cannot share weights within one supernet.

Example:
    >>> arch = {"edges": {"0-1": "conv3x3", "0-2": "skip", "1-2": "conv1x1",
    ...                   "0-3": "none", "1-3": "avgpool3x3", "2-3": "conv3x3"}}
    >>> model = build_cell(arch, (1, 8, 8), 10)
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import torch
from torch import nn

from raynas.errors import ArchError, describe, did_you_mean
from raynas.trainables.families import _Reader, _Spatial, _conv_bn, _head

__all__ = [
    "OPS",
    "CELL_OPS",
    "SHARED_CHOICES",
    "EdgeFactory",
    "edge_keys",
    "Cell",
    "CellNetwork",
    "ResBlock",
    "FactorizedReduce",
    "Zero",
    "build_cell",
]


# ----------------------------------------------------------------------------------------------
# Ops: every one maps (N, C_in, H, W) to (N, C_out, ceil(H / stride), ceil(W / stride)).
# ----------------------------------------------------------------------------------------------


def _relu_conv_bn(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    # NAS-Bench-201's ReLUConvBN: the ReLU first, so a sum of edges is not rectified twice.
    return nn.Sequential(nn.ReLU(), *_conv_bn(cin, cout, kernel, stride))


class Zero(nn.Module):
    """The ``none`` op: zeros of the edge's output shape (the edge is absent)."""

    def __init__(self, cout: int, stride: int):
        super().__init__()
        self.cout, self.stride = cout, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        s = self.stride
        return x.new_zeros(n, self.cout, (h - 1) // s + 1, (w - 1) // s + 1)

    def extra_repr(self) -> str:
        return f"cout={self.cout}, stride={self.stride}"


class FactorizedReduce(nn.Module):
    """``skip`` where the shape changes (NAS-Bench-201, DARTS): with stride 2, two 1x1 convs of
    stride 2 on the input and on it shifted by one pixel, concatenated (half the channels each),
    then BN; with stride 1 and a channel change, a 1x1 ReLU-conv-BN."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.relu = nn.ReLU()
        if stride == 2:
            halves = (cout // 2, cout - cout // 2)
            self.convs = nn.ModuleList(nn.Conv2d(cin, c, 1, 2, bias=False) for c in halves)
            # Pads right and bottom so the shifted half sees as many windows as the first.
            self.pad = nn.ConstantPad2d((0, 1, 0, 1), 0.0)
            self.bn = nn.BatchNorm2d(cout)
        else:
            self.conv = _relu_conv_bn(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 2:
            return self.conv(x)
        x = self.relu(x)
        shifted = self.pad(x)[:, :, 1:, 1:]
        return self.bn(torch.cat([self.convs[0](x), self.convs[1](shifted)], dim=1))


def _skip(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Identity() if stride == 1 and cin == cout else FactorizedReduce(cin, cout, stride)


def _pool(pool: nn.Module, cin: int, cout: int) -> nn.Module:
    # NAS-Bench-201's POOLING: a 1x1 ReLU-conv-BN first only where the channels change.
    return pool if cin == cout else nn.Sequential(_relu_conv_bn(cin, cout, 1, 1), pool)


def _sep_conv(cin: int, cout: int, stride: int) -> nn.Module:
    # DARTS' SepConv: (ReLU, depthwise 3x3, pointwise 1x1, BN) twice; the first carries the stride.
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        *_conv_bn(cin, cin, 1),
        nn.ReLU(),
        nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False),
        *_conv_bn(cin, cout, 1),
    )


def _dil_conv(cin: int, cout: int, stride: int) -> nn.Module:
    # DARTS' DilConv: ReLU, depthwise 3x3 with dilation 2 (a 5x5 field), pointwise 1x1, BN.
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(cin, cin, 3, stride, 2, dilation=2, groups=cin, bias=False),
        *_conv_bn(cin, cout, 1),
    )


OPS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "none": lambda cin, cout, stride: Zero(cout, stride),
    "skip": _skip,
    "conv1x1": lambda cin, cout, stride: _relu_conv_bn(cin, cout, 1, stride),
    "conv3x3": lambda cin, cout, stride: _relu_conv_bn(cin, cout, 3, stride),
    "avgpool3x3": lambda cin, cout, stride: _pool(
        nn.AvgPool2d(3, stride, 1, count_include_pad=False), cin, cout
    ),
    "maxpool3x3": lambda cin, cout, stride: _pool(nn.MaxPool2d(3, stride, 1), cin, cout),
    "sep_conv3x3": _sep_conv,
    "dil_conv3x3": _dil_conv,
}
"""Edge ops by name: ``(C_in, C_out, stride) -> nn.Module``.

``none`` (zeros), ``skip`` (identity; :class:`FactorizedReduce` where the shape changes),
``conv1x1`` and ``conv3x3`` (ReLU-conv-BN), ``avgpool3x3`` (NAS-Bench-201's ``none,
skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``), ``maxpool3x3``, and DARTS'
``sep_conv3x3`` and ``dil_conv3x3``."""

CELL_OPS: tuple[str, ...] = ("none", "skip", "conv1x1", "conv3x3", "avgpool3x3")
"""NAS-Bench-201's five ops: the documented default choice list of an edge."""

SHARED_CHOICES: tuple[str, ...] = ("edges", "reduction_edges")
"""Arch keys whose choices can share weights in a one-shot supernet (see the module docstring)."""

EdgeFactory = Callable[[str, int, int, int], nn.Module]
"""``make_edge(key, C_in, C_out, stride) -> nn.Module``: the module on edge ``key`` (``"i-j"``)."""


def edge_keys(nodes: int) -> list[str]:
    """The edges of a cell of ``nodes`` nodes, ordered by target node then source.

    Example:
        >>> edge_keys(4)
        ['0-1', '0-2', '1-2', '0-3', '1-3', '2-3']
    """
    return [f"{i}-{j}" for j in range(1, nodes) for i in range(j)]


# ----------------------------------------------------------------------------------------------
# Wiring
# ----------------------------------------------------------------------------------------------


class Cell(nn.Module):
    """A cell: node 0 is the input, node ``j`` sums its edges from every node ``i < j``, the
    last node is the output.

    Node 0 has ``cin`` channels; every other node has ``cout`` channels at ``1 / stride`` of
    node 0's size, so the edges out of node 0 are built with ``(cin, cout, stride)`` and the
    others with ``(cout, cout, 1)``: a normal cell has ``cin == cout`` and stride 1, a
    reduction cell doubles the channels with stride 2.

    Args:
        nodes: Number of nodes, input included (>= 2).
        cin: Channels of the input.
        cout: Channels of every other node and of the output.
        stride: Stride of the edges out of node 0.
        make_edge: Builds the module of one edge (:data:`EdgeFactory`); a trained architecture
            passes ``OPS[op of that edge]``, a supernet a mixture of candidate ops.

    Example:
        >>> cell = Cell(3, 4, 8, 2, lambda key, cin, cout, stride: OPS["conv3x3"](cin, cout, stride))
        >>> list(cell.edges), cell(torch.zeros(1, 4, 8, 8)).shape
        (['0-1', '0-2', '1-2'], torch.Size([1, 8, 4, 4]))
    """

    def __init__(self, nodes: int, cin: int, cout: int, stride: int, make_edge: EdgeFactory):
        super().__init__()
        self.nodes = nodes
        self.edges = nn.ModuleDict()
        for key in edge_keys(nodes):
            source = int(key.split("-")[0])
            shape = (cin, cout, stride) if source == 0 else (cout, cout, 1)
            self.edges[key] = make_edge(key, *shape)
        # (source, edge key) per target node, computed once rather than per forward pass.
        self.inputs = [[(i, f"{i}-{j}") for i in range(j)] for j in range(1, nodes)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for inputs in self.inputs:
            out = self.edges[inputs[0][1]](states[inputs[0][0]])
            for i, key in inputs[1:]:
                out = out + self.edges[key](states[i])
            states.append(out)
        return states[-1]


class ResBlock(nn.Module):
    """NAS-Bench-201's ResNetBasicblock: ReLU-conv3x3-BN (stride), ReLU-conv3x3-BN, plus a
    shortcut (2x2 average pool + 1x1 conv with stride 2; a 1x1 ReLU-conv-BN where only the
    channels change; identity otherwise).

    The pool rounds up (``ceil_mode``), so odd sizes halve like the 3x3 conv beside it.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv_a = _relu_conv_bn(cin, cout, 3, stride)
        self.conv_b = _relu_conv_bn(cout, cout, 3, 1)
        if stride == 2:
            self.shortcut: nn.Module = nn.Sequential(
                nn.AvgPool2d(2, 2, ceil_mode=True), nn.Conv2d(cin, cout, 1, bias=False)
            )
        elif cin != cout:
            self.shortcut = _relu_conv_bn(cin, cout, 1, 1)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class CellNetwork(nn.Module):
    """The macro skeleton: stem, ``stages`` stages of ``cells_per_stage`` cells with a
    reduction between two stages, BN + ReLU, global average pooling, dropout, linear.

    Args:
        in_channels: Channels of the input image.
        num_classes: Output logits.
        nodes: Nodes per cell.
        channels: Channels of the stem and the first stage (doubled by each reduction).
        stages: Stages (``stages - 1`` reductions).
        cells_per_stage: Cells per stage.
        make_edge: Builds each edge of every normal cell (:data:`EdgeFactory`).
        make_reduction_edge: Builds each edge of every reduction cell; ``None`` for
            NAS-Bench-201's residual block with stride 2 instead.
        dropout: Before the linear layer.

    Attributes:
        cells: Every cell, normal and reduction, in order (what a supernet walks).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        nodes: int,
        channels: int,
        stages: int,
        cells_per_stage: int,
        make_edge: EdgeFactory,
        make_reduction_edge: EdgeFactory | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, channels, 3))
        body: list[nn.Module] = []
        c = channels
        for stage in range(stages):
            if stage > 0:
                if make_reduction_edge is None:
                    body.append(ResBlock(c, 2 * c, 2))
                else:
                    body.append(Cell(nodes, c, 2 * c, 2, make_reduction_edge))
                c *= 2
            body += [Cell(nodes, c, c, 1, make_edge) for _ in range(cells_per_stage)]
        self.body = nn.Sequential(*body)
        self.head = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(), _head(c, num_classes, dropout, nn.ReLU)
        )

    @property
    def cells(self) -> list[Cell]:
        return [m for m in self.body if isinstance(m, Cell)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


# ----------------------------------------------------------------------------------------------
# The family
# ----------------------------------------------------------------------------------------------

_KEYS = [
    "nodes", "edges", "channels", "stages", "cells_per_stage", "reduction", "reduction_edges",
    "dropout",
]


def _read_edges(r: _Reader, key: str, nodes: int) -> dict[str, str]:
    """The op of every edge under ``arch.<key>``, checked against the cell's edges and :data:`OPS`."""
    path = f"{r.path}.{key}"
    expected = edge_keys(nodes)
    listing = ", ".join(expected)
    if not r.has(key):
        raise ArchError(path, f"required key is missing: the op of every edge of the cell ({listing})")
    value = r.value[key]
    if not isinstance(value, Mapping):
        raise ArchError(path, f"must map every edge of the cell ({listing}) to an op, got {describe(value)}")
    for edge in value:
        if edge not in expected:
            raise ArchError(
                f"{path}.{edge}",
                f"not an edge of a {nodes}-node cell; its edges are i-j for 0 <= i < j < {nodes}: "
                f"{listing}{did_you_mean(str(edge), expected)}",
            )
    missing = [edge for edge in expected if edge not in value]
    if missing:
        raise ArchError(
            f"{path}.{missing[0]}",
            f"missing: a {nodes}-node cell needs an op on every edge ({listing}); "
            f"missing {', '.join(missing)}",
        )
    ops = _Reader(value, path, expected)
    names = list(OPS)  # read now: a user may add ops to the table
    return {edge: ops.choice(edge, names) for edge in expected}


def build_cell(arch: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    """A NAS-Bench-201 / DARTS-style cell network (see the module docstring).

    Arch keys:
        edges (required): the op of every edge of the normal cell, ``{"i-j": op}`` for every
            ``0 <= i < j < nodes`` (for 4 nodes: ``0-1, 0-2, 1-2, 0-3, 1-3, 2-3``); ops are
            the names in :data:`OPS`.
        nodes (int >= 2, default 4): nodes per cell, the input included.
        channels (int, default 16): channels of the stem and the first stage.
        stages (int, default 3): stages of cells; a reduction between two stages halves the
            spatial size and doubles the channels.
        cells_per_stage (int, default 2; NAS-Bench-201 has 5): cells per stage.
        reduction (``resblock`` or ``cell``, default ``resblock``): NAS-Bench-201's residual
            block with stride 2, or a searched reduction cell.
        reduction_edges (required with ``reduction: cell``, refused otherwise): the reduction
            cell's ops, keyed like ``edges``; edges out of node 0 carry the stride.
        dropout (float in [0, 1), default 0): before the linear layer.

    Raises:
        ArchError: non-image input, a missing, surplus or unknown edge or op (the key path,
            e.g. ``arch.edges.1-3``), or more reductions than the image allows
            (``arch.stages``, misfit).
    """
    r = _Reader(arch, "arch", _KEYS)
    size = _Spatial(input_shape, "cell")
    nodes = r.integer("nodes", 4, minimum=2)
    edges = _read_edges(r, "edges", nodes)
    channels = r.integer("channels", 16)
    stages = r.integer("stages", 3)
    cells_per_stage = r.integer("cells_per_stage", 2)
    reduction = r.choice("reduction", ["resblock", "cell"], "resblock")
    reduction_edges = None
    if reduction == "cell":
        reduction_edges = _read_edges(r, "reduction_edges", nodes)
    elif r.has("reduction_edges"):
        raise ArchError(
            "arch.reduction_edges",
            "only used with reduction: cell (reduction is resblock); drop it or give it "
            "when: {reduction: cell} in the space",
        )
    dropout = r.dropout()
    for _ in range(stages - 1):
        size.conv(3, 2, "arch.stages")

    def normal(key: str, cin: int, cout: int, stride: int) -> nn.Module:
        return OPS[edges[key]](cin, cout, stride)

    def reduce(key: str, cin: int, cout: int, stride: int) -> nn.Module:
        return OPS[reduction_edges[key]](cin, cout, stride)

    return CellNetwork(
        input_shape[0],
        num_classes,
        nodes=nodes,
        channels=channels,
        stages=stages,
        cells_per_stage=cells_per_stage,
        make_edge=normal,
        make_reduction_edge=reduce if reduction_edges is not None else None,
        dropout=dropout,
    )

