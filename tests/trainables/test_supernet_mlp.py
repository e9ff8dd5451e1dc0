"""The weight-sharing supernet of the mlp family (raynas.trainables.supernet_mlp), without Ray."""

import random

import pytest
import torch

from raynas.errors import ArchError, ConfigError
from raynas.spaces import Space
from raynas.spec import spec_from_dict
from raynas.trainables.families import build_mlp
from raynas.trainables.supernet import build_supernet, shared_choices
from tests.trainables._digits import (
    assert_paths_are_the_stand_alone_networks,
    assert_memory_estimate_traces_the_largest_path,
    assert_paths_resume,
    assert_step_is_the_stand_alone_step,
    perturbed,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# depth (0 too: the output layer reads the input) and one width for every layer, with batch norm.
DEPTH = {"depth": {"choice": [0, 1, 3]}, "width": {"choice": [8, 16]}, "dropout": {"choice": [0.0, 0.2]},
         "batch_norm": True, "activation": "tanh"}
# A repeat block: each layer its own width and dropout, depth 1 to 3.
REPEAT = {"layers": {"repeat": {"min": 1, "max": 3}, "block": {"width": {"choice": [4, 12]},
                                                               "dropout": {"choice": [0.0, 0.1]}}}}
# A constant list of layers with searched widths; the layers take arch.dropout.
LIST = {"layers": [{"width": {"choice": [4, 8]}}, {"width": 6}], "dropout": {"choice": [0.0, 0.3]}, "batch_norm": True}
CASES = [("depth", DEPTH, (13,)), ("repeat", REPEAT, (1, 8, 8)), ("list", LIST, (13,))]


def archs(space, n, seed=0):
    sp, rng = Space({"arch": space}), random.Random(seed)
    return [sp.sample(rng=rng)["arch"] for _ in range(n)]


@pytest.mark.parametrize("name, space, shape", CASES)
def test_every_path_is_the_stand_alone_network_with_the_supernets_weights(name, space, shape):
    net, x = perturbed("mlp", space, shape), torch.randn(32, *shape)
    sampled = archs(space, 20)
    if name == "depth":
        assert {a["depth"] for a in sampled} == {0, 1, 3} and {a["width"] for a in sampled} == {8, 16}
    assert_paths_are_the_stand_alone_networks(net, build_mlp, sampled, x)


def test_weights_are_shared_slices_of_the_largest():
    net = perturbed("mlp", DEPTH, (13,)).eval()
    assert [tuple(lin.weight.shape) for lin in net.linears] == [(16, 13), (16, 16), (16, 16)]
    assert net.head.in_features == 16 and net.linears[0].bias is None  # batch norm: no bias
    x = torch.randn(4, 13)

    def outputs():
        with torch.no_grad():
            result = []
            for depth, width in ((1, 8), (1, 16), (3, 8)):
                net.set_arch({**DEPTH, "depth": depth, "width": width, "dropout": 0.0})
                result.append(net(x))
            return result

    before = outputs()
    with torch.no_grad():
        net.linears[0].weight[8:].add_(1.0)  # units 8 on of the first layer: width 16 only
        net.linears[2].weight.add_(1.0)  # the third layer: depth 3 only
    after = outputs()
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1]) and not torch.allclose(after[2], before[2])


def test_training_mode_draws_a_seeded_path_per_batch_and_resumes_the_sequence():
    for space, shape in ((DEPTH, (13,)), (REPEAT, (1, 8, 8))):
        assert_paths_resume("mlp", space, shape, distinct=3, build=build_mlp)


@pytest.mark.parametrize("name, space, shape", CASES)
def test_a_training_step_of_a_path_is_the_stand_alone_networks_step(name, space, shape):
    """Without dropout the path trains as the stand-alone network does: the same loss, and each
    weight's gradient is the slice of the supernet's gradient that path_state copies."""
    net = perturbed("mlp", space, shape).train()
    arch = next(a for a in archs(space, 30, seed=3)
                if a.get("dropout", 0) == 0 and all(layer.get("dropout", 0) == 0 for layer in a.get("layers", []))
                and len(a.get("layers", [0])) and a.get("depth", 1))
    net.set_arch(arch)
    sub = build_mlp(arch, shape, 10).train()
    assert_step_is_the_stand_alone_step(net, sub, shape)


def test_set_arch_refuses_what_the_supernet_does_not_hold_with_the_key_path():
    depth, repeat = build_supernet("mlp", DEPTH, (13,), 10), build_supernet("mlp", REPEAT, (13,), 10)
    bad = [
        (depth, {**DEPTH, "depth": 2, "width": 8, "dropout": 0.0},
         r"arch\.depth: 2 is not a candidate of this supernet's depths \(0, 1, 3\)"),
        (depth, {**DEPTH, "depth": 1, "width": 32, "dropout": 0.0}, r"arch\.width: 32 is not a candidate"),
        (depth, {**DEPTH, "depth": 1, "width": 8, "dropout": 0.0, "activation": "relu"},
         r"arch\.activation: this supernet holds activation 'tanh' only"),
        (depth, {"depth": 1, "width": 8, "layers": []}, r"arch\.layers: this supernet holds no such key"),
        (repeat, {"layers": [{"width": 4, "dropout": 0.0}] * 4}, r"arch\.layers: this supernet takes 1 or 2 or 3 layers"),
        (repeat, {"layers": [{"width": 8, "dropout": 0.0}]},
         r"arch\.layers\.0\.width: 8 is not a candidate of this supernet's layer's widths \(4, 12\)"),
        (repeat, {"layers": [{"width": 4, "dropout": 0.5}]}, r"arch\.layers\.0\.dropout: 0\.5 is not a candidate"),
        (repeat, {"layers": [{"width": 4, "dropout": 0.0}], "batch_norm": True},
         r"arch\.batch_norm: this supernet holds batch_norm False only"),
    ]
    for net, arch, message in bad:
        with pytest.raises(ArchError, match=message):
            net.set_arch(arch)


def test_shared_choices_lists_depth_widths_and_dropouts():
    assert shared_choices("mlp", DEPTH) == {"depth": {"depth": [0, 1, 3]}, "width": {"width": [8, 16]},
                                            "dropout": {"dropout": [0.0, 0.2]}}
    layers = shared_choices("mlp", REPEAT)["layers"]
    assert layers["layers"] == [1, 2, 3] and layers["layers.2.width"] == [4, 12] and layers["layers.2.dropout"] == [0.0, 0.1]
    # A range of depths (the quickstart's): every count of it.
    assert shared_choices("mlp", {"depth": {"int": [1, 4]}})["depth"] == {"depth": [1, 2, 3, 4]}
    listed = shared_choices("mlp", LIST)["layers"]
    assert listed == {"layers": [2], "layers.0.width": [4, 8], "layers.1.width": [6]}  # no dropout of their own


@pytest.mark.parametrize("arch, message", [
    ({"depth": 2, "activation": {"choice": ["relu", "tanh"]}},
     (r"space\.arch\.activation: is searched, but an mlp supernet shares weights across the depth, the widths and "
      r"dropout only; activation changes the function every path applies")),
    ({"depth": 2, "batch_norm": {"choice": [True, False]}},
     r"space\.arch\.batch_norm: is searched, .* batch_norm changes whether the linear layers have biases"),
    ({"depth": {"int": [1, 3], "when": {"width": 8}}, "width": {"choice": [8, 16]}},
     r"space\.arch\.depth\.when: a supernet holds every depth of the range at once"),
    ({"depth": {"int": [-1, 2]}}, r"space\.arch\.depth: needs \{int: \[low, high\]\} with 0 <= low <= high"),
    ({"depth": {"choice": [-1, 2]}}, r"space\.arch\.depth: depths must be ints >= 0, got -1"),
    ({"width": {"choice": [16, 32.0]}}, r"space\.arch\.width: widths must be positive ints, got 32\.0"),
    ({"dropout": {"float": [0.0, 0.5]}}, r"space\.arch\.dropout: a supernet draws dropouts from a list"),
    ({"layers": [{"width": 8}], "depth": 2}, r"space\.arch\.depth: give either 'layers' or 'depth'/'width', not both"),
    ({"layers": {"choice": [[{"width": 8}], [{"width": 16}]]}}, r"space\.arch\.layers: must be a list of layers or \{repeat"),
    ({"layers": {"repeat": {"min": 1, "max": 2}, "block": {"widht": 8}}},
     r"space\.arch\.layers\.block\.widht: unknown key.*did you mean 'width'"),
    ({"layers": [{"dropout": 0.1}]}, r"space\.arch\.layers\.0\.width: required key is missing"),
    ({"depht": 2}, r"space\.arch\.depht: unknown key.*did you mean 'depth'"),
])
def test_what_an_mlp_supernet_cannot_hold_stops_the_spec(arch, message):
    raw = {"name": "mlp", "data": {"source": "digits"}, "model": "mlp", "space": {"arch": arch},
           "search": {"strategy": "one-shot", "num_trials": 4}}
    with pytest.raises(ConfigError, match=message):
        spec_from_dict(raw)


def test_the_memory_estimate_traces_the_largest_path():
    smaller = {"layers": {**REPEAT["layers"], "repeat": {"min": 1, "max": 2}}}
    assert_memory_estimate_traces_the_largest_path("mlp", REPEAT, smaller, (1, 8, 8))
