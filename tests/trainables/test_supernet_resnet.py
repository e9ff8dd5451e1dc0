"""The weight-sharing supernet of the resnet family (raynas.trainables.supernet_resnet), without Ray."""

import random

import pytest
import torch

from raynas.errors import ArchError, ConfigError
from raynas.spaces import Space
from raynas.spec import spec_from_dict
from raynas.trainables.families import build_resnet
from raynas.trainables.supernet import build_supernet, shared_choices
from raynas.trainables.supernet_memory import estimate_supernet_bytes
from tests.trainables._digits import (
    assert_paths_are_the_stand_alone_networks,
    assert_paths_resume,
    assert_step_is_the_stand_alone_step,
    perturbed,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# Searched stem and stage widths, depths and dropout. Stage 0 keeps stride 1 and its widest
# input equals its widest output: its first block projects in some paths only (stem 4 into 8
# channels), as does stage 2's (8 channels from stage 1 into 12); stage 1 always projects (stride 2).
SPACE = {"stem_channels": {"choice": [4, 8]}, "dropout": {"choice": [0.0, 0.2]}, "stages": [
    {"channels": {"choice": [4, 8]}, "blocks": {"choice": [1, 2]}},
    {"channels": {"choice": [8, 12]}, "blocks": {"choice": [1, 2, 3]}, "stride": 2},
    {"channels": 12, "stride": 1},
]}
SHAPE = (1, 8, 8)


def archs(n, seed=0, space=SPACE):
    sp, rng = Space({"arch": space}), random.Random(seed)
    return [sp.sample(rng=rng)["arch"] for _ in range(n)]


def arch(stem, *stages, dropout=0.0):
    """An arch of SPACE: each stage as (channels, blocks)."""
    strides = [s.get("stride", 1) for s in SPACE["stages"]]
    return {"stem_channels": stem, "dropout": dropout,
            "stages": [{"channels": c, "blocks": n, "stride": s} for (c, n), s in zip(stages, strides)]}


CHOSEN = [
    arch(8, (8, 1), (12, 1), (12, 1)),  # no projection in stages 0 and 2 (same widths, stride 1)
    arch(4, (8, 2), (8, 3), (12, 1), dropout=0.2),  # stage 0 and 2 project; 8 of stage 1's 12 channels
    arch(8, (4, 2), (8, 1), (12, 1)),  # a stage narrower than the stem
    arch(8, (8, 2), (12, 3), (12, 1), dropout=0.2),  # the largest path
]


def test_every_path_is_the_stand_alone_network_with_the_supernets_weights():
    net, x = perturbed("resnet", SPACE, SHAPE), torch.randn(32, *SHAPE)
    sampled = archs(30)
    # The sample covers a first block with and without its projection.
    assert {a["stem_channels"] == a["stages"][0]["channels"] for a in sampled} == {True, False}
    assert_paths_are_the_stand_alone_networks(net, build_resnet, CHOSEN + sampled, x)


def test_the_largest_projection_serves_exactly_the_paths_that_project():
    net = perturbed("resnet", SPACE, SHAPE).eval()
    first = net.stages[0][0]
    # build_resnet of the widest path (8 into 8, stride 1) has no projection; the supernet holds one.
    assert tuple(first.shortcut[0].weight.shape) == (8, 8, 1, 1)
    assert not any(k.startswith("1.0.0.shortcut") for k in build_resnet(CHOSEN[3], SHAPE, 10).state_dict())
    assert len(net.stages[1]) == 3 and not hasattr(net.stages[1][1].shortcut, "weight")  # later blocks never project
    x = torch.randn(4, *SHAPE)
    identity, projects = CHOSEN[0], arch(4, (8, 1), (12, 1), (12, 1))

    def outputs():
        with torch.no_grad():
            out = []
            for a in (identity, projects):
                net.set_arch(a)
                out.append(net(x))
            return out

    before = outputs()
    with torch.no_grad():
        first.shortcut[0].weight[0, 0] += 1.0  # read from the first input channel: inside every width
    after = outputs()
    torch.testing.assert_close(after[0], before[0])  # the identity shortcut
    assert not torch.allclose(after[1], before[1])
    before = after
    with torch.no_grad():
        first.body[0].weight[7, 5] += 1.0  # output channel 7 from input channel 5: width 8 from stem 8 only
    after = outputs()
    assert not torch.allclose(after[0], before[0])
    torch.testing.assert_close(after[1], before[1])


@pytest.mark.parametrize("a", [{**CHOSEN[1], "dropout": 0.0}, CHOSEN[2]])
def test_a_training_step_of_a_path_is_the_stand_alone_networks_step(a):
    """Batch statistics in training mode: the same loss, and each weight's gradient is the
    slice of the supernet's gradient that path_state copies."""
    net = perturbed("resnet", SPACE, SHAPE).train()
    net.set_arch(a)
    assert_step_is_the_stand_alone_step(net, build_resnet(a, SHAPE, 10).train(), SHAPE)
    # What the path does not run gets no gradient: stage 1's third block, channels past its width.
    assert net.stages[1][2].body[0].weight.grad is None or a["stages"][1]["blocks"] == 3
    assert not net.stages[1][0].body[0].weight.grad[a["stages"][1]["channels"]:].any()


def test_training_mode_draws_a_seeded_path_per_batch_and_resumes_the_sequence():
    assert_paths_resume("resnet", SPACE, SHAPE, distinct=3, build=build_resnet)


def test_set_arch_refuses_what_the_supernet_does_not_hold_with_the_key_path():
    net = build_supernet("resnet", SPACE, SHAPE, 10)
    good = CHOSEN[0]

    def stage(i, **change):
        return {**good, "stages": [{**s, **change} if j == i else s for j, s in enumerate(good["stages"])]}

    bad = [
        ({**good, "stem_channels": 16}, r"arch\.stem_channels: 16 is not a candidate of this supernet's stem channels \(4, 8\)"),
        (stage(1, channels=16), r"arch\.stages\.1\.channels: 16 is not a candidate of this supernet's stage's channels \(8, 12\)"),
        (stage(1, blocks=4), r"arch\.stages\.1\.blocks: 4 is not a candidate of this supernet's stage's blocks \(1, 2, 3\)"),
        (stage(2, blocks=2), r"arch\.stages\.2\.blocks: 2 is not a candidate .* \(1\)"),
        (stage(0, stride=2), r"arch\.stages\.0\.stride: this supernet's stage has stride 1, got 2"),
        (stage(0, width=3), r"arch\.stages\.0\.width: this supernet's stages hold no such key"),
        ({**good, "dropout": 0.5}, r"arch\.dropout: 0\.5 is not a candidate of this supernet's dropouts \(0\.0, 0\.2\)"),
        ({**good, "activation": "gelu"}, r"arch\.activation: this supernet holds activation 'relu' only, got 'gelu'"),
        ({**good, "stages": good["stages"][:2]}, r"arch\.stages: this supernet holds 3 stages"),
        ({**good, "depth": 2}, r"arch\.depth: this supernet holds no such key"),
    ]
    for a, message in bad:
        with pytest.raises(ArchError, match=message):
            net.set_arch(a)


@pytest.mark.parametrize("change, message", [
    ({"stages": [{"channels": 8, "stride": {"choice": [1, 2]}}]},
     r"space\.arch\.stages\.0\.stride: must be 1 or 2, a constant: a searched stride changes every later feature map"),
    ({"activation": {"choice": ["relu", "gelu"]}},
     r"space\.arch\.activation: is searched, but a resnet supernet shares weights across the stem's and each "
     r"stage's channels, the number of blocks and dropout only"),
    ({"stages": {"repeat": {"min": 1, "max": 3}, "block": {"channels": 8}}},
     r"space\.arch\.stages: a resnet supernet holds a constant list of stages"),
    ({"stages": {"choice": [[{"channels": 8}], [{"channels": 8}, {"channels": 16}]]}},
     r"space\.arch\.stages: a resnet supernet holds a constant list of stages"),
    ({"stages": [{"channels": {"int": [8, 16]}}]},
     r"space\.arch\.stages\.0\.channels: a supernet holds channels as slices of its largest, so this must be an int"),
    ({"stem_channels": {"choice": [8, 16.0]}},
     r"space\.arch\.stem_channels: channels must be positive ints, got 16\.0 \(a float"),
    ({"stages": [{"channels": 8, "blocks": {"choice": [0, 2]}}]}, r"space\.arch\.stages\.0\.blocks: blocks must be positive ints, got 0"),
    ({"stages": [{"channels": {"choice": [8, 16]}, "blocks": {"choice": [1, 2], "when": {"channels": 16}}}]},
     r"space\.arch\.stages\.0\.blocks: a supernet holds blocks as slices of its largest, so this must be an int or "
     r"\{choice: \[ints\]\} without conditions"),
    ({"dropout": {"choice": [0.0, 1.0]}}, r"space\.arch\.dropout: dropouts must be numbers in \[0, 1\)"),
    ({"stages": [{"channel": 8}]}, r"space\.arch\.stages\.0\.channel: unknown key.*did you mean 'channels'"),
    ({"stages": [{"blocks": 2}]}, r"space\.arch\.stages\.0\.channels: required key is missing"),
    ({"stem": 8}, r"space\.arch\.stem: unknown key.*did you mean 'stem_channels'"),
])
def test_what_a_resnet_supernet_cannot_hold_stops_the_spec(change, message):
    raw = {"name": "rn", "data": {"source": "digits"}, "model": "resnet",
           "space": {"arch": {"stages": [{"channels": 8}], **change}}, "search": {"strategy": "one-shot", "num_trials": 4}}
    with pytest.raises(ConfigError, match=message):
        spec_from_dict(raw)


def test_a_gradient_search_of_a_resnet_space_is_refused():
    raw = {"name": "rn", "data": {"source": "digits"}, "model": "resnet", "space": {"arch": SPACE},
           "search": {"strategy": "gradient"}}
    with pytest.raises(ConfigError, match=r"model: gradient search .* 'resnet' has a single-path supernet only"):
        spec_from_dict(raw)


def test_shared_choices_lists_the_widths_depths_and_dropout():
    choices = shared_choices("resnet", SPACE)
    assert choices["stem_channels"] == {"stem_channels": [4, 8]} and choices["dropout"] == {"dropout": [0.0, 0.2]}
    assert choices["stages"] == {"stages.0.channels": [4, 8], "stages.0.blocks": [1, 2], "stages.1.channels": [8, 12],
                                 "stages.1.blocks": [1, 2, 3], "stages.2.channels": [12], "stages.2.blocks": [1]}
    # The family's defaults where the space leaves a key out.
    assert shared_choices("resnet", {"stages": [{"channels": 8}]})["stem_channels"] == {"stem_channels": [16]}


def test_too_many_stride_2_stages_fail_as_the_family_does():
    stages = [{"channels": 4, "stride": 2}] * 5
    with pytest.raises(ArchError, match=r"arch\.stages\.3: stride-2 downsampling needs a spatial size >= 2"):
        build_supernet("resnet", {"stages": stages}, SHAPE, 10)


def test_the_memory_estimate_traces_the_largest_path():
    raw = {"name": "rn", "data": {"source": "digits"}, "model": "resnet",
           "space": {"arch": SPACE, "train": {"batch_size": 16}}, "search": {"strategy": "one-shot"}}
    estimate = estimate_supernet_bytes(spec_from_dict(raw), SHAPE, 10)
    real = build_supernet("resnet", SPACE, SHAPE, 10)
    assert estimate["params"] == sum(p.numel() for p in real.parameters())
    assert real.largest_path() == CHOSEN[3]
    leaves = []
    net = build_resnet(CHOSEN[3], SHAPE, 10)
    for m in net.modules():
        if not list(m.children()):
            m.register_forward_hook(lambda m, i, o: leaves.append(o.numel()))
    with torch.no_grad():
        net.train()(torch.zeros(16, *SHAPE))
    assert estimate["activation_bytes"] == 2 * 4 * sum(leaves)
