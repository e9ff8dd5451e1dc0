"""The weight-sharing supernet of the cnn family (raynas.trainables.supernet_cnn), without Ray."""

import random

import pytest
import torch

from raynas.errors import ArchError, ConfigError
from raynas.spaces import Space
from raynas.spec import spec_from_dict
from raynas.trainables.families import build_cnn
from raynas.trainables.supernet import build_supernet, shared_choices
from tests.trainables._digits import (
    assert_paths_are_the_stand_alone_networks,
    assert_memory_estimate_traces_the_largest_path,
    assert_paths_resume,
    assert_step_is_the_stand_alone_step,
    perturbed,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# Searched channels and kernels (1, 3 and 5: centred slices of a 5x5 kernel), a stage without
# batch norm (a sliced conv bias), stride and pooling, a hidden head layer, searched dropout.
SPACE = {"stages": [{"channels": {"choice": [4, 8]}, "kernel": {"choice": [1, 3, 5]}},
                    {"channels": {"choice": [6, 8]}, "kernel": {"choice": [3, 5]}, "stride": 2, "batch_norm": False},
                    {"channels": {"choice": [4, 12]}, "pool": True}],
         "dropout": {"choice": [0.0, 0.2]}, "head_width": 12, "activation": "silu"}
# No head layer: the linear output layer reads the last stage's channels; a constant even kernel.
PLAIN = {"stages": [{"channels": {"choice": [4, 8]}, "kernel": 4}, {"channels": {"choice": [2, 6]}}]}
SHAPE = (1, 8, 8)
CASES = [("space", SPACE), ("plain", PLAIN)]


def archs(space, n, seed=0):
    sp, rng = Space({"arch": space}), random.Random(seed)
    return [sp.sample(rng=rng)["arch"] for _ in range(n)]


def arch_of(*stages, dropout=0.0):
    """An arch of SPACE with each stage's (channels, kernel)."""
    return {**{k: SPACE[k] for k in ("head_width", "activation")}, "dropout": dropout, "stages": [
        {**{k: v for k, v in stage.items() if k not in ("channels", "kernel")}, "channels": c, "kernel": k}
        for stage, (c, k) in zip(SPACE["stages"], stages)]}


@pytest.mark.parametrize("name, space", CASES)
def test_every_path_is_the_stand_alone_network_with_the_supernets_weights(name, space):
    net, x = perturbed("cnn", space, SHAPE), torch.randn(32, *SHAPE)
    sampled = archs(space, 20)
    if name == "space":
        assert {a["stages"][0]["kernel"] for a in sampled} == {1, 3, 5} and {a["dropout"] for a in sampled} == {0.0, 0.2}
    assert_paths_are_the_stand_alone_networks(net, build_cnn, sampled, x)


def test_weights_are_shared_slices_of_the_largest():
    net = perturbed("cnn", SPACE, SHAPE).eval()
    assert [tuple(c.weight.shape) for c in net.convs] == [(8, 1, 5, 5), (8, 8, 5, 5), (12, 8, 3, 3)]
    assert net.convs[1].bias is not None and net.convs[0].bias is None and net.hidden.in_features == 12
    x = torch.randn(4, *SHAPE)
    paths = [arch_of((4, 3), (6, 3), (4, 3)), arch_of((4, 5), (6, 3), (4, 3)), arch_of((8, 3), (6, 3), (4, 3))]

    def outputs():
        with torch.no_grad():
            result = []
            for arch in paths:
                net.set_arch(arch)
                result.append(net(x))
            return result

    before = outputs()
    with torch.no_grad():
        net.convs[0].weight[:, :, 0, :].add_(1.0)  # the 5x5 kernel's border row: kernel 5 only
        net.convs[0].weight[4:].add_(1.0)  # output channels 4 on: 8 channels only
    after = outputs()
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1]) and not torch.allclose(after[2], before[2])


def test_training_mode_draws_a_seeded_path_per_batch_and_resumes_the_sequence():
    assert_paths_resume("cnn", SPACE, SHAPE, build=build_cnn)


@pytest.mark.parametrize("name, space", CASES)
def test_a_training_step_of_a_path_is_the_stand_alone_networks_step(name, space):
    """Without dropout the path trains as the stand-alone network does: the same loss, and each
    weight's gradient is the slice of the supernet's gradient that path_state copies."""
    net = perturbed("cnn", space, SHAPE).train()
    arch = arch_of((4, 3), (8, 5), (4, 3)) if name == "space" else archs(space, 1, seed=3)[0]
    net.set_arch(arch)
    sub = build_cnn(arch, SHAPE, 10).train()
    assert_step_is_the_stand_alone_step(net, sub, SHAPE)


def test_set_arch_refuses_what_the_supernet_does_not_hold_with_the_key_path():
    net = build_supernet("cnn", SPACE, SHAPE, 10)
    ok = arch_of((4, 3), (6, 3), (4, 3))
    bad = [
        (arch_of((4, 7), (6, 3), (4, 3)), r"arch\.stages\.0\.kernel: 7 is not a candidate of this supernet's stage's "
                                          r"kernels \(1, 3, 5\)"),
        (arch_of((16, 3), (6, 3), (4, 3)), r"arch\.stages\.0\.channels: 16 is not a candidate"),
        ({**ok, "dropout": 0.5}, r"arch\.dropout: 0\.5 is not a candidate of this supernet's dropouts \(0\.0, 0\.2\)"),
        ({**ok, "stages": ok["stages"][:2]}, r"arch\.stages: this supernet takes 3 stages"),
        ({**ok, "stages": [{**ok["stages"][0], "stride": 2}, *ok["stages"][1:]]},
         r"arch\.stages\.0\.stride: this supernet holds stride 1 only, got 2"),
        ({**ok, "head_width": 0}, r"arch\.head_width: this supernet holds head_width 12 only"),
        ({**ok, "stages": [{**ok["stages"][0], "channel": 4}, *ok["stages"][1:]]},
         r"arch\.stages\.0\.channel: this supernet's stages hold no such key"),
    ]
    for arch, message in bad:
        with pytest.raises(ArchError, match=message):
            net.set_arch(arch)


def test_shared_choices_lists_each_stages_channels_and_kernels():
    choices = shared_choices("cnn", SPACE)
    assert choices["dropout"] == {"dropout": [0.0, 0.2]}
    assert choices["stages"]["stages.0.kernel"] == [1, 3, 5] and choices["stages"]["stages.2.channels"] == [4, 12]
    assert shared_choices("cnn", PLAIN)["stages"]["stages.1.kernel"] == [3]  # build_cnn's default


def test_too_much_downsampling_fails_as_the_family_does():
    stages = [{"channels": {"choice": [4, 8]}, "stride": 2}] * 4
    with pytest.raises(ArchError, match=r"arch\.stages\.3: stride-2 downsampling needs a spatial size >= 2"):
        build_supernet("cnn", {"stages": stages}, SHAPE, 10)


@pytest.mark.parametrize("arch, message", [
    ({"stages": [{"channels": 8, "stride": {"choice": [1, 2]}}]},
     (r"space\.arch\.stages\.0\.stride: is searched, but a cnn supernet shares weights across each stage's channels "
      r"and kernel, and dropout only; stride changes the spatial size")),
    ({"stages": [{"channels": 8, "pool": {"choice": [True, False]}}]}, r"space\.arch\.stages\.0\.pool: is searched"),
    ({"stages": [{"channels": 8, "batch_norm": {"choice": [True, False]}}]},
     r"space\.arch\.stages\.0\.batch_norm: is searched, .* whether the stage's conv has a bias"),
    ({"stages": [{"channels": 8}], "head_width": {"choice": [0, 32]}}, r"space\.arch\.head_width: is searched"),
    ({"stages": [{"channels": 8}], "activation": {"choice": ["relu", "gelu"]}}, r"space\.arch\.activation: is searched"),
    ({"stages": {"repeat": {"min": 1, "max": 3}, "block": {"channels": 8}}},
     r"space\.arch\.stages: a cnn supernet holds a constant list of stages"),
    ({"stages": [{"channels": 8, "kernel": {"choice": [3, 4]}}]},
     r"space\.arch\.stages\.0\.kernel: a searched kernel is the centred slice of the largest, so its candidates must "
     r"be odd, got 4"),
    ({"stages": [{"channels": {"int": [8, 16]}}]}, r"space\.arch\.stages\.0\.channels: a supernet holds channels as slices"),
    ({"stages": [{"channels": 8, "kernal": 3}]}, r"space\.arch\.stages\.0\.kernal: unknown key.*did you mean 'kernel'"),
    ({"stages": [{"kernel": 3}]}, r"space\.arch\.stages\.0\.channels: required key is missing"),
    ({"dropout": 0.1}, r"space\.arch\.stages: required key is missing"),
])
def test_what_a_cnn_supernet_cannot_hold_stops_the_spec(arch, message):
    raw = {"name": "cnn", "data": {"source": "digits"}, "model": "cnn", "space": {"arch": arch},
           "search": {"strategy": "one-shot", "num_trials": 4}}
    with pytest.raises(ConfigError, match=message):
        spec_from_dict(raw)


def test_the_memory_estimate_traces_the_largest_path():
    smaller = {**SPACE, "stages": [{**SPACE["stages"][0], "channels": 4}, *SPACE["stages"][1:]]}
    assert_memory_estimate_traces_the_largest_path("cnn", SPACE, smaller, SHAPE)
