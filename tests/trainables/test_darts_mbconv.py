"""Gradient (DARTS) search of mbconv spaces: the mixed layer positions, the architecture steps,
the derived network and its guard (no Ray)."""

import doctest
import json

import pytest
import torch
from torch import nn

from raynas.search.oneshot import gradient_candidates, mbconv_layout
from raynas.spec import spec_from_dict
from raynas.trainables import darts_mbconv
from raynas.trainables.darts_mbconv import DartsMBConvSupernet
from raynas.trainables.families import MBConv, build_mbconv
from raynas.trainables.supernet import darts_family

from tests.trainables._digits import assert_arch_steps_learn_and_resume

BLOCK = {"expansion": {"choice": [1, 3]}, "kernel": {"choice": [3, 5]}}
SPACE = {"stem_channels": 8, "stages": [
    {"channels": 8, "layers": {"repeat": {"min": 1, "max": 3}, "block": BLOCK}},
    {"channels": 16, "stride": 2, "layers": [
        {"op": {"choice": ["identity", "mbconv"]}, "expansion": {"choice": [1, 3], "when": {"op": "mbconv"}}},
        {"op": {"choice": ["identity", "mbconv"]}, "kernel": 3, "expansion": 1}]},
], "head_channels": 16}


def net(**kw) -> DartsMBConvSupernet:
    torch.manual_seed(0)
    return darts_family({"family": "mbconv", "space": json.dumps(SPACE), "seed": 1, **kw}, (1, 8, 8), 10)


def test_the_module_examples_hold():
    assert doctest.testmod(darts_mbconv, extraglobs={"torch": torch}).failed == 0


def test_each_position_holds_its_candidates_and_a_shape_changing_parameter_free_one_runs_the_stand_in():
    model = net()
    names = [[list(op.candidates) for op in stage] for stage in model.positions]
    assert names == [
        [["e1_k3", "e1_k5", "e3_k3", "e3_k5"], ["e1_k3", "e1_k5", "e3_k3", "e3_k5", "skip"],
         ["e1_k3", "e1_k5", "e3_k3", "e3_k5", "skip"]],
        # Identity is a candidate already: no separate skip.
        [["identity", "e1_k3", "e3_k3"], ["identity", "e1_k3"]],
    ]
    _, stages = mbconv_layout(SPACE)
    assert [gradient_candidates(stages[1], j) for j in (0, 1)] == names[1]
    first, second = model.positions[1]
    # The first layer of stage 2 changes channels and stride: identity runs build_mbconv's stand-in.
    stand_in = first.candidates["identity"]
    assert isinstance(stand_in, MBConv) and stand_in.body[0].kernel_size == (3, 3) and stand_in.body[0].stride == (2, 2)
    assert isinstance(second.candidates["identity"], nn.Identity)
    # Every mixed op's candidates share their output shape, and the network runs them all.
    model.eval()
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert all(op.weights is not None for stage in model.positions for op in stage)


def test_architecture_steps_learn_the_logits_on_held_out_data_only_and_resume_exactly():
    assert_arch_steps_learn_and_resume(lambda: net(arch_lr=0.05), torch.randn(96, 1, 8, 8), torch.randint(0, 10, (96,)))


def test_the_derived_network_takes_each_strongest_candidate_guards_parameter_free_ones_and_is_in_the_space():
    model = net(max_skip=1)
    prefer = ["e3_k5", "skip", "skip", "identity", "identity"]
    with torch.no_grad():
        for alpha, op, name, weight in zip(model.alphas(), [op for s in model.positions for op in s], prefer,
                                           [1, 3, 2, 3, 2]):
            alpha.zero_()
            alpha[list(op.candidates).index(name)] = float(weight)
            alpha[list(op.candidates).index("e1_k3")] = 0.5  # each position's second best
    arch, raw = model.derive()
    assert raw == 4
    # Stage 1: the stronger skip (position 2) stays, position 3 takes its best MBConv.
    assert arch["stages"][0]["layers"] == [{"expansion": 3, "kernel": 5}, {"expansion": 1, "kernel": 3}]
    # Stage 2: one identity kept (the stronger, the first), the other its best MBConv.
    assert arch["stages"][1]["layers"] == [{"op": "identity"}, {"op": "mbconv", "expansion": 1, "kernel": 3}]
    unguarded, _ = model.derive(max_skip=None)
    assert unguarded["stages"][0]["layers"] == [{"expansion": 3, "kernel": 5}]
    metrics = model.epoch_metrics()
    assert metrics["skip_edges"] == 4 and metrics["skip_edges_kept"] == 2
    assert json.loads(metrics["derived_arch"]) == arch
    # The network it derives builds, and is a point of the search space.
    assert build_mbconv(arch, (1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    spec_from_dict({"name": "p", "data": {"source": "digits"}, "model": "mbconv", "space": {"arch": SPACE},
                    "search": {"num_trials": 1, "points": [{"arch": arch}]}})


@pytest.mark.parametrize("stages, message", [
    ([{"channels": {"choice": [8, 16]}, "layers": [{"kernel": {"choice": [3, 5]}}]}],
     r"space\.arch\.stages\.0\.channels: gradient search mixes the candidates of each layer"),
    ([{"channels": 8, "layers": [{"kernel": 3}, {"op": "identity"}]}],
     r"space\.arch\.stages: gradient search relaxes the choices of each layer .* there is nothing to search"),
])
def test_what_a_gradient_search_of_mbconv_cannot_relax_is_refused(stages, message):
    from raynas.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        spec_from_dict({"name": "g", "data": {"source": "digits"}, "model": "mbconv", "space": {"arch": {"stages": stages}},
                        "search": {"strategy": "gradient"}})


def test_the_memory_estimate_counts_every_candidate_of_a_gradient_search():
    from raynas.trainables.supernet_memory import estimate_supernet_bytes

    raw = {"name": "g", "data": {"source": "digits"}, "model": "mbconv", "space": {"arch": SPACE}}
    gradient = estimate_supernet_bytes(spec_from_dict({**raw, "search": {"strategy": "gradient"}}), (1, 8, 8), 10)
    one_shot = estimate_supernet_bytes(spec_from_dict({**raw, "search": {"strategy": "one-shot"}}), (1, 8, 8), 10)
    assert gradient["params"] == sum(p.numel() for p in net().parameters())
    # Side by side, every candidate's activations: more than the largest path's.
    assert gradient["activation_bytes"] > one_shot["activation_bytes"] > 0


def test_a_stage_the_space_gives_no_layers_derives_without_them():
    space = {"stages": [{"channels": 8, "layers": [{"kernel": {"choice": [3, 5]}}]}, {"channels": 16, "stride": 2}]}
    torch.manual_seed(0)
    model = DartsMBConvSupernet(space, (1, 8, 8), 10)
    metrics = model.epoch_metrics()
    arch = json.loads(metrics["derived_arch"])
    assert arch == {"stages": [{"channels": 8, "layers": [{"kernel": 3}]}, {"channels": 16, "stride": 2}]}
    assert metrics["skip_edges"] == 0 and metrics["skip_edges_kept"] == 0
    spec_from_dict({"name": "p", "data": {"source": "digits"}, "model": "mbconv", "space": {"arch": space},
                    "search": {"num_trials": 1, "points": [{"arch": arch}]}})
