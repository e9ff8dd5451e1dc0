"""The weight-sharing supernet of the mbconv family (raynas.trainables.supernet_mbconv), without Ray."""

import copy
import json
import random

import pytest
import torch

from raynas.errors import ArchError, ConfigError
from raynas.spaces import Space
from raynas.trainables.families import build_mbconv
from raynas.trainables.supernet import (
    build_supernet,
    path_state,
    recalibrate_bn,
    shared_choices,
    supernet_family,
)
from tests.trainables._digits import assert_paths_are_the_stand_alone_networks, assert_paths_resume


def block(expansions=(1, 3), kernels=(3, 5), when=True):
    cond = {"when": {"op": "mbconv"}} if when else {}
    return {"op": {"choice": ["identity", "mbconv"]}, "expansion": {"choice": list(expansions), **cond},
            "kernel": {"choice": list(kernels), **cond}}


# Depth prefixes (0 layers too), a shape-changing stage whose first layer may be identity (the
# stand-in), kernel 3 in a kernel-7 layer, expansion 1 beside larger ones, a constant list with
# an identity first layer, an empty stage, head channels and dropout.
SPACE = {"stem_channels": 4, "dropout": 0.1, "head_channels": 12, "stages": [
    {"channels": 4, "stride": 1, "layers": {"repeat": {"min": 0, "max": 2}, "block": block()}},
    {"channels": 8, "stride": 2, "layers": {"repeat": {"min": 0, "max": 3}, "block": block((1, 2, 4), (3, 5, 7))}},
    {"channels": 8, "layers": [{"op": "identity"}, {"expansion": {"choice": [1, 6]}, "kernel": 5}]},
    {"channels": 6, "layers": []},
]}
SHAPE = (1, 8, 8)


def archs(n, seed=0, space=SPACE):
    sp, rng = Space({"arch": space}), random.Random(seed)
    return [sp.sample(rng=rng)["arch"] for _ in range(n)]


def arch_of(*stage_layers):
    """An arch of SPACE with the given layers per stage."""
    return {"stem_channels": 4, "dropout": 0.1, "head_channels": 12, "stages": [
        {**{k: v for k, v in stage.items() if k != "layers"}, "layers": layers}
        for stage, layers in zip(SPACE["stages"], stage_layers)]}


def mb(e, k):
    return {"op": "mbconv", "expansion": e, "kernel": k}


IDENTITY = {"op": "identity"}
CHOSEN = [
    arch_of([], [], [IDENTITY, mb(1, 5)], []),  # both shape-changing stages run the stand-in only
    arch_of([mb(3, 5), mb(1, 3)], [IDENTITY, mb(4, 7), mb(1, 3)], [IDENTITY, mb(6, 5)], []),  # stand-in, then layers
    arch_of([IDENTITY], [mb(1, 3)], [IDENTITY, mb(1, 5)], []),  # kernel 3 of a kernel-7 layer, expansion 1
    arch_of([mb(3, 3), mb(3, 5)], [mb(4, 7), mb(4, 7), mb(4, 7)], [IDENTITY, mb(6, 5)], []),  # the largest path
]


# Searched widths: a stage that keeps its shape in some paths only (residual or stand-in by path),
# with and without the head's conv.
WIDTHS = {"stem_channels": 4, "dropout": 0.1, "stages": [
    {"channels": {"choice": [4, 6]}, "layers": {"repeat": {"min": 0, "max": 2}, "block": block()}},
    {"channels": {"choice": [6, 8]}, "layers": {"repeat": {"min": 1, "max": 2}, "block": block()}},
    {"channels": {"choice": [8, 10]}, "stride": 2, "layers": [block(), block((1, 2), (3,), when=False)]},
]}


@pytest.fixture(scope="module")
def trained_like():
    """A supernet whose weights and batch-norm affine parameters are far from their initial values."""
    torch.manual_seed(0)
    net = build_supernet("mbconv", SPACE, SHAPE, 10)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return net


def test_every_path_is_the_stand_alone_network_with_the_supernets_weights(trained_like):
    net, x = trained_like, torch.randn(32, *SHAPE)
    sampled = archs(30)
    assert any(not a["stages"][1]["layers"] for a in sampled)  # the sample covers depth 0 of a changing stage
    assert_paths_are_the_stand_alone_networks(net, build_mbconv, CHOSEN + sampled, x)


@pytest.mark.parametrize("head_channels", [0, 12])
def test_every_path_of_searched_widths_is_the_stand_alone_network(head_channels):
    torch.manual_seed(0)
    space = {**WIDTHS, "head_channels": head_channels}
    net = build_supernet("mbconv", space, SHAPE, 10)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    x = torch.randn(32, *SHAPE)
    sampled = archs(25, seed=1, space=space)
    assert {a["stages"][0]["channels"] for a in sampled} == {4, 6}
    for arch in sampled:
        net.set_arch(arch)
        recalibrate_bn(net, [x[:16], x[16:]])
        sub = build_mbconv(arch, SHAPE, 10)
        path_state(net, sub)
        torch.testing.assert_close(sub.eval()(x), net(x), rtol=1e-4, atol=1e-5)
    # The largest width holds the others: the last stage's projection has 10 output channels.
    assert net.layers[2][1].project[0].weight.shape[:2] == (10, 10 * 2)


def test_weights_are_shared_slices_of_the_largest():
    torch.manual_seed(0)
    net = build_supernet("mbconv", SPACE, SHAPE, 10).eval()
    layer = net.layers[1][0]  # stage 1's first layer: expansions 1, 2, 4 (and the stand-in), kernels 3, 5, 7
    assert tuple(layer.depthwise[0].weight.shape) == (4 * 4, 1, 7, 7) and layer.expand[0].weight.shape[0] == 16
    x = torch.randn(4, *SHAPE)
    small, large = CHOSEN[2], CHOSEN[3]  # that layer runs expansion 1, kernel 3; then expansion 4, kernel 7
    outputs = []
    for arch in (small, large):
        net.set_arch(arch)
        outputs.append(net(x))
    with torch.no_grad():
        layer.depthwise[0].weight[0, 0, 3, 3] += 1.0  # the centre of the first channel: in every path
    for arch, before in zip((small, large), outputs):
        net.set_arch(arch)
        assert not torch.allclose(net(x), before)
    # A corner of the 7x7 kernel is outside the 3x3 path only.
    net.set_arch(small)
    before_small = net(x)
    net.set_arch(large)
    before_large = net(x)
    with torch.no_grad():
        layer.depthwise[0].weight[0, 0, 0, 0] += 1.0
    net.set_arch(small)
    torch.testing.assert_close(net(x), before_small)
    net.set_arch(large)
    assert not torch.allclose(net(x), before_large)


def test_training_mode_draws_a_seeded_path_per_batch_and_resumes_the_sequence():
    assert_paths_resume("mbconv", SPACE, SHAPE, build=build_mbconv)


def test_set_arch_refuses_what_the_supernet_does_not_hold_with_the_key_path():
    net = build_supernet("mbconv", SPACE, SHAPE, 10)
    bad = [
        (arch_of([mb(3, 7)], [], [IDENTITY, mb(1, 5)], []),
         r"arch\.stages\.0\.layers\.0\.kernel: 7 is not a candidate of this supernet's layer \(3, 5\)"),
        (arch_of([mb(6, 3)], [], [IDENTITY, mb(1, 5)], []),
         r"arch\.stages\.0\.layers\.0\.expansion: 6 is not a candidate"),
        (arch_of([mb(1, 3)] * 3, [], [IDENTITY, mb(1, 5)], []),
         r"arch\.stages\.0\.layers: this supernet's stage takes 0 or 1 or 2 layers"),
        (arch_of([], [], [mb(1, 5), mb(1, 5)], []), r"arch\.stages\.2\.layers\.0\.op: 'mbconv' is not a candidate"),
        ({**CHOSEN[0], "head_channels": 0}, r"arch\.head_channels: this supernet holds head_channels 12 only"),
        ({**CHOSEN[0], "stages": [{**s, "channels": 16} for s in CHOSEN[0]["stages"]]},
         r"arch\.stages\.0\.channels: 16 is not a candidate of this supernet's stage \(4\)"),
        ({**CHOSEN[0], "stages": CHOSEN[0]["stages"][:2]}, r"arch\.stages: this supernet holds 4 stages"),
    ]
    for arch, message in bad:
        with pytest.raises(ArchError, match=message):
            net.set_arch(arch)


def test_recalibration_recomputes_the_sliced_statistics_of_the_path():
    torch.manual_seed(1)
    net = build_supernet("mbconv", SPACE, SHAPE, 10)
    batches = [torch.randn(16, *SHAPE) for _ in range(3)]
    net.set_arch(CHOSEN[2])  # stage 0 skipped; stage 1's first layer: expansion 1 (4 of 16 channels), kernel 3 of 7
    assert recalibrate_bn(net, batches) == 3
    layer = net.layers[1][0]
    bn = layer.depthwise[1]
    stem = copy.deepcopy(net.stem).train()  # as during recalibration: each batch normalised by its own statistics
    with torch.no_grad():
        stem_out = torch.cat([stem(x) for x in batches])
    pre = torch.nn.functional.conv2d(stem_out, layer.depthwise[0].weight[:4, :, 2:5, 2:5], None, 2, 1, groups=4)
    # A cumulative average over the batches, of the path's channels; the others keep their reset values.
    torch.testing.assert_close(bn.running_mean[:4], pre.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert bn.num_features == 16 and not bn.running_mean[4:].any() and bool((bn.running_var[4:] == 1).all())
    assert bn.momentum == 0.1 and not net.training


def test_supernet_training_reduces_the_loss_of_its_paths_on_digits():
    from tests.trainables._digits import digits_loop

    torch.manual_seed(0)
    net = supernet_family({"family": "mbconv", "space": json.dumps(SPACE), "seed": 0}, (1, 8, 8), 10)
    loop, x = digits_loop(net, lr=0.01, epochs=8)

    def scores():
        out = []
        for arch in CHOSEN:
            net.set_arch(arch)
            recalibrate_bn(net, [x[i:i + 64] for i in range(0, 320, 64)])
            out.append(loop.validate())
        return out

    before = scores()
    for _ in range(8):
        loop.train_epoch()
    after = scores()
    assert all(a[0] < b[0] for a, b in zip(after, before)), (before, after)  # every path's validation loss
    assert min(a[1] for a in after) > 0.5  # 10 classes: chance is 0.1 (measured: 0.70 to 0.84)


@pytest.mark.parametrize("change, message", [
    ({"stages": {"repeat": {"min": 1, "max": 3}, "block": {"channels": 8}}},
     r"space\.arch\.stages: an mbconv supernet holds a constant list of stages"),
    ({"stages": [{"channels": {"int": [8, 16]}}]},
     (r"space\.arch\.stages\.0\.channels: a supernet holds channels as slices of its largest, so this must be an int "
      r"or \{choice: \[ints\]\} without conditions")),
    ({"stages": [{"channels": {"choice": [8, 16], "when": {"stride": 2}}}]}, r"space\.arch\.stages\.0\.channels: "),
    ({"stages": [{"channels": {"choice": [8, 16.0]}}]},
     r"space\.arch\.stages\.0\.channels: channels must be positive ints, got 16\.0 \(a float"),
    ({"stages": [{"channels": 8, "stride": {"choice": [1, 2]}}]},
     r"space\.arch\.stages\.0\.stride: must be 1 or 2, a constant"),
    ({"stages": [{"channels": 8, "layers": [{"expansion": {"choice": [1.5, 3]}}]}]},
     r"space\.arch\.stages\.0\.layers\.0\.expansion: expansions must be positive ints, got 1\.5 \(a float"),
    ({"stages": [{"channels": 8, "layers": {"repeat": {"min": 1, "max": 2}, "block": {"kernel": {"choice": [3, 4]}}}}]},
     r"space\.arch\.stages\.0\.layers\.block\.kernel: kernels must be odd positive ints, got 4"),
    ({"stages": [{"channels": 8, "layers": [{"op": {"choice": ["identity", "conv"]}}]}]},
     r"space\.arch\.stages\.0\.layers\.0\.op: an mbconv supernet holds the ops identity and mbconv, got 'conv'"),
    ({"head_channels": {"choice": [0, 64]}, "stages": [{"channels": 8}]},
     r"space\.arch\.head_channels: is searched, but in an mbconv supernet only each stage's channels and layers"),
    ({"stages": [{"channels": 8, "layers": [{"kernel": {"choice": [3, 5], "when": {"expansion": 6}}}]}]},
     r"space\.arch\.stages\.0\.layers\.0\.kernel\.when: an mbconv supernet takes conditions on the layer's op only"),
    ({"stages": [{"channels": 8, "layers": {"choice": [[], [{"op": "mbconv"}]]}}]},
     r"space\.arch\.stages\.0\.layers: must be a list of layers or \{repeat"),
    ({"stages": [{"channels": 8, "width": 3}]}, r"space\.arch\.stages\.0\.width: unknown key"),
    ({"stages": [{"channels": 8}], "stem": 8}, r"space\.arch\.stem: unknown key.*did you mean 'stem_channels'"),
])
def test_what_an_mbconv_supernet_cannot_hold_is_refused_with_its_key_path(change, message):
    with pytest.raises(ConfigError, match=message):
        shared_choices("mbconv", {"stem_channels": 8, **change})


def test_shared_choices_lists_each_stage_depth_and_layer_candidate():
    choices = shared_choices("mbconv", SPACE)["stages"]
    assert choices["0.layers"] == [0, 1, 2] and choices["1.layers.2.kernel"] == [3, 5, 7]
    assert choices["0.channels"] == [4] and shared_choices("mbconv", WIDTHS)["stages"]["1.channels"] == [6, 8]
    assert choices["2.layers.0.op"] == ["identity"] and "2.layers.0.kernel" not in choices
    assert choices["2.layers.1.expansion"] == [1, 6] and choices["2.layers.1.kernel"] == [5]
    # A condition that leaves expansion out of mbconv layers: build_mbconv's default holds.
    layer = {"op": {"choice": ["identity", "mbconv"]}, "expansion": {"choice": [3], "when": {"op": "identity"}}}
    only_identity = {"stages": [{"channels": 8, "layers": [layer]}]}
    assert shared_choices("mbconv", only_identity)["stages"]["0.layers.0.expansion"] == [6]
