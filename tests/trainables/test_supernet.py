"""The weight-sharing supernet of the cell family (raynas.trainables.supernet), without Ray."""

import random

import pytest
import torch

from raynas.errors import ArchError, ConfigError
from raynas.spaces import Space
from raynas.trainables.cell import build_cell, edge_keys
from raynas.trainables.supernet import build_supernet, path_state, recalibrate_bn, shared_choices
from tests.trainables._digits import assert_arch_steps_learn_and_resume, assert_paths_resume

OPS = ["none", "skip", "conv1x1", "conv3x3", "avgpool3x3"]
SPACE = {"edges": {e: {"choice": OPS} for e in edge_keys(4)}, "channels": 8, "stages": 2, "cells_per_stage": 1}


def archs(n, seed=0):
    space, rng = Space({"arch": SPACE}), random.Random(seed)
    return [space.sample(rng=rng)["arch"] for _ in range(n)]


def test_every_path_is_the_stand_alone_network_with_the_supernets_weights():
    torch.manual_seed(0)
    net = build_supernet("cell", SPACE, (1, 8, 8), 10)
    x = torch.randn(32, 1, 8, 8)
    for arch in archs(6):
        net.set_arch(arch)
        recalibrate_bn(net, [x[:16], x[16:]])
        sub = build_cell(arch, (1, 8, 8), 10)
        path_state(net, sub)  # strict: every weight of the subnet comes from the path
        torch.testing.assert_close(sub.eval()(x), net(x))
    # Each edge of each cell holds one module per candidate op, side by side.
    first = net.mixed["edges"]["0-1"][0]
    assert sorted(first.candidates) == sorted(OPS)


def test_training_mode_draws_a_seeded_path_per_batch_and_resumes_the_sequence():
    assert_paths_resume("cell", SPACE, (1, 8, 8), seed=0)


def test_recalibration_recomputes_the_statistics_for_the_path_only():
    torch.manual_seed(1)
    net = build_supernet("cell", SPACE, (1, 8, 8), 10)
    batches = [torch.randn(16, 1, 8, 8) for _ in range(3)]
    a, b = archs(2, seed=3)
    net.set_arch(a)
    assert recalibrate_bn(net, batches) == 3
    stem_bn = net.net.stem[1]
    first = stem_bn.running_mean.clone()
    # The stem sees the same input for every path: its statistics are the batches' whatever the path.
    net.set_arch(b)
    recalibrate_bn(net, batches)
    torch.testing.assert_close(stem_bn.running_mean, first)
    # A cumulative average over the batches, not a momentum-weighted one.
    pre = torch.cat([net.net.stem[0](x) for x in batches])
    torch.testing.assert_close(stem_bn.running_mean, pre.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert stem_bn.momentum == 0.1 and not net.training


def test_recalibration_skips_a_model_without_batch_norm():
    net = build_supernet("transformer", {"patch_size": 4, "width": {"choice": [8, 16]}, "blocks": [{"heads": 2}]},
                         (1, 8, 8), 10)
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    net.train()
    assert recalibrate_bn(net, [torch.randn(4, 1, 8, 8)] * 3) == 0
    assert calls == [] and not net.training


def test_supernet_training_learns_something_every_path_shares():
    from tests.trainables._digits import digits_loop

    torch.manual_seed(0)
    net = build_supernet("cell", SPACE, (1, 8, 8), 10)
    net.sampler = net.draw_uniform
    loop, x = digits_loop(net, lr=0.003, epochs=10)
    for _ in range(10):
        loop.train_epoch()
    scores = []
    for arch in archs(4, seed=5):
        net.set_arch(arch)
        recalibrate_bn(net, [x[i:i + 64] for i in range(0, 640, 64)])
        scores.append(loop.validate()[1])
    assert min(scores) > 0.4 and max(scores) > 0.7  # 10 classes: chance is 0.1


def test_what_cannot_share_weights_is_refused_with_its_key_path():
    assert shared_choices("cell", SPACE)["edges"]["0-1"] == OPS
    with pytest.raises(ConfigError, match=r"space\.arch\.channels: is searched, but in a cell supernet only "
                                          r"arch\.edges, arch\.reduction_edges share weights"):
        shared_choices("cell", {**SPACE, "channels": {"choice": [8, 16]}})
    with pytest.raises(ConfigError, match=r"space\.arch\.edges\.1-2: a supernet holds one module per op"):
        shared_choices("cell", {**SPACE, "edges": {**SPACE["edges"], "1-2": {"choice": OPS, "when": {"x": 1}}}})
    with pytest.raises(ConfigError, match=r"model: one-shot search needs a family whose choices can share weights "
                                          r"\(cell, mbconv, transformer[a-z, ]*\); 'my_nas:tiny' has no supernet"):
        shared_choices("my_nas:tiny", {"hidden": {"choice": [4, 8]}})
    net = build_supernet("cell", {**SPACE, "edges": {**SPACE["edges"], "0-1": {"choice": ["skip", "conv3x3"]}}},
                         (1, 8, 8), 10)
    with pytest.raises(ArchError, match=r"arch\.edges\.0-1: 'none' is not a candidate of this supernet's edge "
                                        r"\(skip, conv3x3\)"):
        net.set_arch({"edges": {e: "none" for e in edge_keys(4)}})


def darts(**kw):
    from raynas.trainables.supernet import darts_family
    import json

    torch.manual_seed(0)
    return darts_family({"family": "cell", "space": json.dumps(SPACE), "seed": 1, **kw}, (1, 8, 8), 10)


def test_darts_steps_the_architecture_on_held_out_data_and_leaves_the_weights_to_their_optimizer():
    x, y = torch.randn(128, 1, 8, 8), torch.randint(0, 10, (128,))
    assert_arch_steps_learn_and_resume(lambda: darts(arch_lr=0.01), x, y)
    # Every candidate runs, weighted by the softmax of its edge's logits.
    net = darts(arch_lr=0.01)
    net.train()(x[:16])
    torch.testing.assert_close(net.mixed["edges"]["0-1"][0].weights, torch.softmax(net.alphas()[0], 0))


def test_darts_derives_the_strongest_op_never_none_and_guards_against_skip_collapse():
    net = darts(max_skip=2)
    with torch.no_grad():
        for (key, edge), alpha in zip(net.alpha_names, net.alphas()):
            ops = net.choices[key][edge]
            alpha.zero_()
            alpha[ops.index("none")] = 5.0  # none is strongest everywhere: never derived
            alpha[ops.index("skip")] = 3.0 + 0.1 * len(edge_keys(4)) - 0.1 * edge_keys(4).index(edge)
            alpha[ops.index("conv3x3")] = 1.0
    arch, raw_skips = net.derive()
    assert raw_skips == 6
    # The two edges with the strongest skip keep it; the others take their next op.
    assert arch["edges"] == {"0-1": "skip", "0-2": "skip", "1-2": "conv3x3", "0-3": "conv3x3", "1-3": "conv3x3",
                             "2-3": "conv3x3"}
    unguarded, _ = net.derive(max_skip=None)
    assert set(unguarded["edges"].values()) == {"skip"}
    metrics = net.epoch_metrics()
    assert metrics["skip_edges"] == 6 and metrics["skip_edges_kept"] == 2
    assert build_cell(arch, (1, 8, 8), 10)  # the derived cell is a cell of the space
