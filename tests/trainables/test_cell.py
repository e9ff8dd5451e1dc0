"""Tests for the ``cell`` family (raynas.trainables.cell): real models, real passes, no Ray."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

from raynas.errors import ArchError
from raynas.trainables import cell
from raynas.trainables.cell import CELL_OPS, OPS, Cell, CellNetwork, ResBlock, edge_keys
from raynas.trainables.families import build_model, count_flops, count_params

DIGITS, MNIST, CIFAR, ODD, TABULAR = (1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 7, 9), (13,)


def arch(op: str = "conv3x3", nodes: int = 4, **keys) -> dict:
    """An arch with ``op`` on every edge; small by default so the tests stay fast."""
    keys.setdefault("channels", 4)
    keys.setdefault("cells_per_stage", 1)
    return {"edges": {edge: op for edge in edge_keys(nodes)}, "nodes": nodes, **keys}


def reduction_cell(op: str = "conv3x3", **keys) -> dict:
    return arch(op, reduction="cell", reduction_edges={e: op for e in edge_keys(keys.get("nodes", 4))}, **keys)


def forward(model: nn.Module, shape: tuple, batch: int = 3) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(batch, *shape))


# -- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [DIGITS, MNIST, CIFAR, ODD], ids=str)
@pytest.mark.parametrize("make", [arch, reduction_cell], ids=["resblock", "reduction cell"])
def test_fits_every_image_size_with_both_reductions(make, shape):
    model = build_model("cell", make("conv3x3"), shape, 10)
    assert forward(model, shape).shape == (3, 10)


def test_each_reduction_halves_the_size_and_doubles_the_channels():
    for make, kind in ((arch, ResBlock), (reduction_cell, Cell)):
        model = build_model("cell", make(channels=6, stages=3), MNIST, 10)
        seen = []
        hooks = [m.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:])))
                 for m in model.body]
        forward(model, MNIST, batch=1)
        for h in hooks:
            h.remove()
        # cell, reduction, cell, reduction, cell: 28 -> 14 -> 7 with 6 -> 12 -> 24 channels
        assert seen == [(6, 28, 28), (12, 14, 14), (12, 14, 14), (24, 7, 7), (24, 7, 7)]
        assert [type(m) for m in model.body] == [Cell, kind, Cell, kind, Cell]


@pytest.mark.parametrize("op", list(OPS))
def test_every_op_builds_runs_and_trains_in_normal_and_reduction_cells(op):
    for make in (arch, reduction_cell):
        model = build_model("cell", make(op), DIGITS, 10)
        model.train()
        out = model(torch.randn(4, *DIGITS))
        assert out.shape == (4, 10) and torch.isfinite(out).all()
        out.logsumexp(1).sum().backward()
        assert model.head[-1][-1].bias.grad.abs().sum() > 0  # the head learns even from all `none` (a constant)


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("cin, cout, stride", [(4, 4, 1), (4, 8, 2), (3, 8, 2), (4, 6, 1)])
def test_every_op_gives_the_edge_shape(op, cin, cout, stride):
    """What lets a supernet hold every op of an edge side by side: the shape depends only on
    (C_in, C_out, stride), also for odd sizes and odd channel counts."""
    for h, w in ((8, 8), (7, 5), (1, 1)):
        out = OPS[op](cin, cout, stride).eval()(torch.randn(2, cin, h, w))
        assert out.shape == (2, cout, (h - 1) // stride + 1, (w - 1) // stride + 1), (op, h, w)


def test_cell_sums_its_edges_node_by_node_and_builds_each_edge_through_the_hook():
    class Scale(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    factors = {"0-1": 2.0, "0-2": 3.0, "1-2": 5.0, "0-3": 7.0, "1-3": 11.0, "2-3": 13.0}
    calls = []

    def make_edge(key, cin, cout, stride):
        calls.append((key, cin, cout, stride))
        return Scale(factors[key])

    c = Cell(4, 5, 5, 1, make_edge)
    x = torch.randn(2, 5, 3, 3)
    n1 = 2 * x
    n2 = 3 * x + 5 * n1
    n3 = 7 * x + 11 * n1 + 13 * n2
    assert torch.allclose(c(x), n3)
    # In a reduction cell only the edges out of node 0 change the shape.
    calls.clear()
    Cell(4, 4, 8, 2, make_edge)
    assert calls == [("0-1", 4, 8, 2), ("0-2", 4, 8, 2), ("1-2", 8, 8, 1),
                     ("0-3", 4, 8, 2), ("1-3", 8, 8, 1), ("2-3", 8, 8, 1)]


def test_a_supernet_of_every_op_on_every_edge_builds_through_the_same_skeleton():
    """The one-shot path the docstring promises: CellNetwork with a hook that holds every
    candidate op of an edge (here their mean), for normal and reduction cells alike."""

    class Mixed(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.ops = nn.ModuleDict({name: OPS[name](cin, cout, stride) for name in OPS})

        def forward(self, x):
            return torch.stack([op(x) for op in self.ops.values()]).mean(0)

    def hook(key, cin, cout, stride):
        return Mixed(cin, cout, stride)

    net = CellNetwork(1, 10, nodes=4, channels=4, stages=3, cells_per_stage=1, make_edge=hook,
                      make_reduction_edge=hook)
    assert forward(net, DIGITS).shape == (3, 10)
    assert len(net.cells) == 5 and all(set(c.edges) == set(edge_keys(4)) for c in net.cells)
    assert cell.SHARED_CHOICES == ("edges", "reduction_edges")


def test_nodes_sets_the_edges():
    for nodes, count in ((2, 1), (3, 3), (5, 10)):
        model = build_model("cell", arch(nodes=nodes), DIGITS, 10)
        assert all(len(c.edges) == count for c in model.cells)
        assert forward(model, DIGITS).shape == (3, 10)


def test_stages_and_cells_per_stage_set_the_depth():
    model = build_model("cell", arch(stages=2, cells_per_stage=3), DIGITS, 10)
    assert len(model.cells) == 6 and sum(isinstance(m, ResBlock) for m in model.body) == 1


def test_digits_allow_three_reductions_and_a_fourth_is_a_misfit_at_stages():
    assert forward(build_model("cell", arch(stages=4), DIGITS, 10), DIGITS).shape == (3, 10)
    with pytest.raises(ArchError) as info:
        build_model("cell", arch(stages=5), DIGITS, 10)
    assert info.value.path == "arch.stages" and info.value.misfit
    assert "already 1x1 after 3 downsamplings" in info.value.message


def test_tabular_input_is_refused():
    with pytest.raises(ArchError, match=r"needs image input \(C, H, W\), got input_shape \(13,\)"):
        build_model("cell", arch(), TABULAR, 3)


# -- parameters and FLOPs ----------------------------------------------------------------------


def test_params_grow_with_the_ops():
    params = {op: count_params(build_model("cell", arch(op, channels=8), DIGITS, 10))
              for op in CELL_OPS}
    # none, skip and the pool have no weights in a normal cell; a 3x3 conv has 9x a 1x1's.
    assert params["none"] == params["skip"] == params["avgpool3x3"] < params["conv1x1"] < params["conv3x3"]
    one = dict(arch("skip", channels=8)["edges"], **{"1-3": "conv3x3"})
    # One 3x3 ReLU-conv-BN edge per cell: 8, 16 and 32 channels in the three stages.
    conv = sum(c * c * 9 + 2 * c for c in (8, 16, 32))
    assert count_params(build_model("cell", arch(channels=8) | {"edges": one}, DIGITS, 10)) == params["skip"] + conv


def test_nas_bench_201_network_has_its_published_parameter_and_flop_counts():
    """NAS-Bench-201 (Dong & Yang 2020) publishes, for CIFAR-10 (3x32x32, 10 classes), the
    range 0.073306 to 1.531546 MB parameters and 7.78305 to 220.11969 MFLOPs: the all-`none`
    and all-`nor_conv_3x3` cells with C=16, N=5. Its FLOPs count a multiply-add once and add
    the classifier's 10 biases; count_flops counts a multiply-add as 2 and no biases."""
    nb201 = {"channels": 16, "cells_per_stage": 5, "stages": 3, "reduction": "resblock"}
    for op, params, mflops in (("conv3x3", 1_531_546, 220.11969), ("none", 73_306, 7.78305)):
        model = cell.build_cell(arch(op, **nb201), CIFAR, 10)
        assert count_params(model) == params
        assert (count_flops(model, CIFAR) / 2 + 10) / 1e6 == pytest.approx(mflops, abs=5e-6)
    # CIFAR-100: the same cells, a classifier of 100 outputs (published: 1.537396 MB)
    assert count_params(cell.build_cell(arch("conv3x3", **nb201), CIFAR, 100)) == 1_537_396


def test_conv_ops_flops_scale_with_the_kernel():
    flops = {op: count_flops(build_model("cell", arch(op, channels=8), DIGITS, 10), DIGITS)
             for op in ("none", "conv1x1", "conv3x3")}
    assert flops["none"] < flops["conv1x1"] < flops["conv3x3"]
    # 6 edges per cell; cells at 8x8 (8 ch), 4x4 (16 ch), 2x2 (32 ch); a 3x3 conv has 9x the MACs.
    edge_macs = sum(64 // 4 ** s * (8 * 2 ** s) ** 2 for s in range(3)) * 6
    assert flops["conv1x1"] - flops["none"] == 2 * edge_macs
    assert flops["conv3x3"] - flops["none"] == 2 * 9 * edge_macs


def test_gradients_reach_every_parameter():
    model = build_model("cell", reduction_cell("conv3x3", dropout=0.1), DIGITS, 10)
    model.train()
    nn.functional.cross_entropy(model(torch.randn(8, *DIGITS)), torch.arange(8)).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


# -- errors with key paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, path, text",
    [
        (lambda a: a["edges"].pop("1-3"), "arch.edges.1-3", "missing: a 4-node cell needs an op on every edge"),
        (lambda a: a["edges"].update({"0-4": "skip"}), "arch.edges.0-4",
         "not an edge of a 4-node cell; its edges are i-j for 0 <= i < j < 4: 0-1, 0-2, 1-2, 0-3, 1-3, 2-3 "
         "(did you mean '0-3'?)"),
        (lambda a: a["edges"].update({"2-3": "conv3x33"}), "arch.edges.2-3", "(did you mean 'conv3x3'?)"),
        (lambda a: a["edges"].update({"2-3": "nor_conv_3x3"}), "arch.edges.2-3", "must be one of none, skip"),
        (lambda a: a.pop("edges"), "arch.edges", "required key is missing"),
        (lambda a: a.update(edges=["conv3x3"] * 6), "arch.edges", "must map every edge of the cell"),
        (lambda a: a.update(reduction_edges=a["edges"]), "arch.reduction_edges", "only used with reduction: cell"),
        (lambda a: a.update(reduction="cell"), "arch.reduction_edges", "required key is missing"),
        (lambda a: a.update(reduction="pool"), "arch.reduction", "must be one of resblock, cell"),
        (lambda a: a.update(nodes=1), "arch.nodes", "must be an int >= 2"),
        (lambda a: a.update(cells_per_stage=0), "arch.cells_per_stage", "must be a positive int"),
        (lambda a: a.update(edge={}), "arch.edge", "unknown key"),
    ],
)
def test_bad_archs_name_the_key_path(change, path, text):
    a = arch()
    change(a)
    with pytest.raises(ArchError) as info:
        build_model("cell", a, DIGITS, 10)
    assert info.value.path == path and text in info.value.message and not info.value.misfit


def test_nodes_and_edges_must_agree():
    a = arch(nodes=3)
    a["nodes"] = 4
    with pytest.raises(ArchError) as info:
        build_model("cell", a, DIGITS, 10)
    assert info.value.path == "arch.edges.0-3"
    assert "missing 0-3, 1-3, 2-3" in info.value.message


def test_docstring_examples_run():
    result = doctest.testmod(cell, extraglobs={"torch": torch})
    assert result.failed == 0 and result.attempted >= 3
