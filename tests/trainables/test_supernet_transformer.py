"""The weight-sharing supernet of the transformer family (raynas.trainables.supernet_transformer), without Ray."""

import random

import pytest
import torch

from raynas.errors import ArchError, ConfigError
from raynas.spaces import Space
from raynas.spec import spec_from_dict
from raynas.trainables.supernet import build_supernet, path_state, shared_choices
from raynas.trainables.transformer import build_transformer
from tests.trainables._digits import (
    assert_memory_estimate_traces_the_largest_path,
    assert_paths_resume,
    assert_step_is_the_stand_alone_step,
    perturbed,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# Images: 2x2 patches of 8x8 digits (16 tokens and a [CLS] token), three widths (one with heads
# 1, 2 and 4 of 2 to 16 features each), depth 0 to 3, fractional MLP ratios, searched dropout
# (the head's and each block's).
IMAGES = {"patch_size": 2, "width": {"choice": [8, 12, 16]}, "dropout": {"choice": [0.0, 0.2]},
          "blocks": {"repeat": {"min": 0, "max": 3}, "block": {
              "heads": {"choice": [1, 2, 4]}, "mlp_ratio": {"choice": [1, 1.5, 3]}, "dropout": {"choice": [0.0, 0.1]}}}}
# Tabular rows: one token per feature, mean pooling, a constant list of two blocks, each with
# its own candidates (and the family's defaults where the space leaves a key out).
ROWS = {"pool": "mean", "width": {"choice": [8, 16]},
        "blocks": [{"heads": {"choice": [2, 4]}}, {"heads": 1, "mlp_ratio": {"choice": [0.5, 2]}}]}
CASES = [("images", IMAGES, (1, 8, 8)), ("rows", ROWS, (13,))]


def archs(space, n, seed=0):
    sp, rng = Space({"arch": space}), random.Random(seed)
    return [sp.sample(rng=rng)["arch"] for _ in range(n)]


def image_arch(width, *blocks, dropout=0.0):
    return {"patch_size": 2, "width": width, "dropout": dropout,
            "blocks": [{"heads": h, "mlp_ratio": r, "dropout": d} for h, r, d in blocks]}


CHOSEN = [
    image_arch(8),  # no blocks at all (the depth's minimum)
    image_arch(8, (4, 1, 0.0)),  # heads of 2 features
    image_arch(12, (1, 1.5, 0.1), (4, 3, 0.0), dropout=0.2),  # one head of the whole width; 18 of 48 hidden units
    image_arch(16, (4, 3, 0.1), (4, 3, 0.1), (4, 3, 0.1), dropout=0.2),  # the largest path
]


@pytest.mark.parametrize("name, space, shape", CASES)
def test_every_path_is_the_stand_alone_network_with_the_supernets_weights(name, space, shape):
    net, x = perturbed("transformer", space, shape).eval(), torch.randn(16, *shape)
    sampled = archs(space, 25)
    chosen = CHOSEN if name == "images" else []
    assert {a["width"] for a in sampled} == set(space["width"]["choice"])  # the sample covers every width
    if name == "images":
        assert {len(a["blocks"]) for a in sampled} == {0, 1, 2, 3}
        assert {b["heads"] for a in sampled for b in a["blocks"]} == {1, 2, 4}
    for arch in chosen + sampled:
        net.set_arch(arch)
        sub = build_transformer(arch, shape, 10).eval()
        path_state(net, sub)  # strict: every weight of the stand-alone network comes from the path
        with torch.no_grad():
            ours = net(x)
            torch.testing.assert_close(sub(x), ours, rtol=1e-4, atol=1e-5)  # torch's fused inference path
        torch.testing.assert_close(sub(x), ours, rtol=1e-4, atol=1e-5)  # and its plain one (with gradients)
        # The path it reports builds the same network.
        assert build_transformer(net.path(), shape, 10).state_dict().keys() == sub.state_dict().keys()


def test_weights_are_shared_slices_of_the_largest():
    net = perturbed("transformer", IMAGES, (1, 8, 8)).eval()
    attn = net.blocks[0].self_attn
    assert tuple(attn.in_proj_weight.shape) == (3 * 16, 16) and net.blocks[0].linear1.out_features == 48
    assert len(net.blocks) == 3 and net.head[-1].in_features == 16
    x = torch.randn(4, 1, 8, 8)
    small, large = image_arch(8, (2, 1, 0.0)), image_arch(16, (2, 1, 0.0))
    heads = image_arch(8, (4, 1, 0.0))  # the same weights as small, split into 4 heads instead of 2

    def outputs():
        with torch.no_grad():
            result = []
            for arch in (small, large, heads):
                net.set_arch(arch)
                result.append(net(x))
            return result

    before = outputs()
    assert not torch.allclose(before[0], before[2])  # heads change the output, not the weights
    with torch.no_grad():
        attn.in_proj_weight[16 + 7, 0] += 1.0  # a key weight of feature 7: inside every width
    assert all(not torch.allclose(a, b) for a, b in zip(outputs(), before))
    before = outputs()
    with torch.no_grad():
        attn.in_proj_weight[16 + 8, 0] += 1.0  # the key of feature 8: width 16 only (not a query weight of width 8)
        net.blocks[0].linear1.weight[8:, :].add_(1.0)  # hidden units 8 on: ratio 1 at width 16 only
    after = outputs()
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[2], before[2])
    assert not torch.allclose(after[1], before[1])


def test_training_mode_draws_a_seeded_path_per_batch_and_resumes_the_sequence():
    assert_paths_resume("transformer", IMAGES, (1, 8, 8), distinct=3, build=build_transformer)


def test_a_training_step_reaches_only_the_weights_of_its_path():
    net = perturbed("transformer", IMAGES, (1, 8, 8))
    net.set_arch(image_arch(8, (2, 1.5, 0.1), dropout=0.2))
    net.train()
    torch.nn.functional.cross_entropy(net(torch.randn(8, 1, 8, 8)), torch.arange(8)).backward()
    grad = net.blocks[0].self_attn.in_proj_weight.grad
    assert grad[:8, :8].abs().sum() > 0 and grad[2 * 16:2 * 16 + 8, :8].abs().sum() > 0  # query and value of width 8
    assert not grad[8:16].any() and not grad[:, 8:].any()
    assert not net.blocks[0].linear1.weight.grad[12:].any()  # 1.5 x 8 = 12 hidden units
    assert net.blocks[1].linear1.weight.grad is None  # a block the path does not run


def test_set_arch_refuses_what_the_supernet_does_not_hold_with_the_key_path():
    net = build_supernet("transformer", IMAGES, (1, 8, 8), 10)
    bad = [
        (image_arch(32, (2, 1, 0.0)), r"arch\.width: 32 is not a candidate of this supernet's widths \(8, 12, 16\)"),
        (image_arch(8, (8, 1, 0.0)), r"arch\.blocks\.0\.heads: 8 is not a candidate"),
        (image_arch(8, (2, 2, 0.0)), r"arch\.blocks\.0\.mlp_ratio: 2 is not a candidate"),
        (image_arch(8, *[(2, 1, 0.0)] * 4), r"arch\.blocks: this supernet takes 0 or 1 or 2 or 3 blocks"),
        ({**image_arch(8), "patch_size": 4}, r"arch\.patch_size: this supernet holds patch_size 2 only"),
        ({**image_arch(8), "pool": "mean"}, r"arch\.pool: this supernet holds pool 'cls' only"),
        ({**image_arch(8), "depth": 2}, r"arch\.depth: this supernet holds no such key"),
    ]
    for arch, message in bad:
        with pytest.raises(ArchError, match=message):
            net.set_arch(arch)


def test_a_patch_size_for_rows_fails_as_the_family_does():
    with pytest.raises(ArchError, match=r"arch\.patch_size: only for image input"):
        build_supernet("transformer", {**ROWS, "patch_size": 2}, (13,), 3)


def test_shared_choices_lists_width_depth_and_each_blocks_candidates():
    choices = shared_choices("transformer", IMAGES)
    assert choices["width"] == {"width": [8, 12, 16]} and choices["dropout"] == {"dropout": [0.0, 0.2]}
    assert choices["blocks"]["blocks"] == [0, 1, 2, 3] and choices["blocks"]["blocks.2.mlp_ratio"] == [1, 1.5, 3]
    rows = shared_choices("transformer", ROWS)["blocks"]
    assert rows["blocks"] == [2] and rows["blocks.0.mlp_ratio"] == [2] and rows["blocks.1.heads"] == [1]


BLOCKS = {"repeat": {"min": 1, "max": 2}, "block": {"heads": {"choice": [1, 2]}}}


@pytest.mark.parametrize("arch, message", [
    ({"patch_size": {"choice": [2, 4]}, "blocks": BLOCKS},
     (r"space\.arch\.patch_size: is searched, but a transformer supernet shares weights across width, depth, heads, "
      r"mlp_ratio and dropout only; patch_size changes the number of tokens")),
    ({"pool": {"choice": ["cls", "mean"]}, "blocks": BLOCKS},
     r"space\.arch\.pool: is searched, .* pool changes whether a \[CLS\] token exists"),
    ({"width": {"choice": [12, 16]}, "blocks": {"repeat": {"min": 1, "max": 2}, "block": {"heads": {"choice": [2, 8]}}}},
     r"space\.arch\.blocks\.block\.heads: 8 does not divide the width 12: each head attends over width / heads"),
    ({"width": 12, "blocks": [{"heads": 2}, {"heads": {"choice": [3, 5]}}]},
     r"space\.arch\.blocks\.1\.heads: 5 does not divide the width 12"),
    ({"width": {"int": [8, 16]}, "blocks": BLOCKS},
     (r"space\.arch\.width: a supernet holds widths as slices of its largest, so this must be an int or "
      r"\{choice: \[ints\]\} without conditions")),
    ({"width": {"choice": [8, 16.0]}, "blocks": BLOCKS}, r"space\.arch\.width: widths must be positive ints, got 16\.0"),
    ({"blocks": {"repeat": {"min": 1, "max": 2}, "block": {"mlp_ratio": {"float": [1, 4]}}}},
     r"space\.arch\.blocks\.block\.mlp_ratio: a supernet draws MLP ratios from a list"),
    ({"blocks": [{"dropout": {"choice": [0.0, 1.0]}}]}, r"space\.arch\.blocks\.0\.dropout: dropouts must be numbers in \[0, 1\)"),
    ({"blocks": {"choice": [[{"heads": 1}], [{"heads": 2}]]}}, r"space\.arch\.blocks: must be a list of blocks or \{repeat"),
    ({"blocks": {"repeat": {"min": 1, "max": 2}, "block": {"head": 2}}},
     r"space\.arch\.blocks\.block\.head: unknown key.*did you mean 'heads'"),
    ({"width": 8}, r"space\.arch\.blocks: required key is missing"),
])
def test_what_a_transformer_supernet_cannot_hold_stops_the_spec(arch, message):
    raw = {"name": "tf", "data": {"source": "digits"}, "model": "transformer", "space": {"arch": arch},
           "search": {"strategy": "one-shot", "num_trials": 4}}
    with pytest.raises(ConfigError, match=message):
        spec_from_dict(raw)


def test_the_memory_estimate_traces_the_largest_path():
    assert_memory_estimate_traces_the_largest_path("transformer", IMAGES, dict(IMAGES, width={"choice": [8, 12]}),
                                                   (1, 8, 8))



@pytest.mark.parametrize("name, space, shape", CASES)
def test_a_training_step_of_a_path_is_the_stand_alone_networks_step(name, space, shape):
    """Without dropout the path trains as the stand-alone network does: the same loss, and each
    weight's gradient is the slice of the supernet's gradient that path_state copies."""
    net = perturbed("transformer", space, shape).train()
    arch = image_arch(12, (4, 1.5, 0.0), (1, 3, 0.0)) if name == "images" else archs(space, 1, seed=3)[0]
    net.set_arch(arch)
    sub = build_transformer(arch, shape, 10).train()
    assert_step_is_the_stand_alone_step(net, sub, shape)
