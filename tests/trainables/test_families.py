"""Tests for raynas.trainables.families: real models, real forward passes, no mocks."""

from __future__ import annotations

import doctest
import textwrap

import pytest
import torch
from torch import nn

from raynas.errors import ArchError
from raynas.trainables import families, registry
from raynas.trainables.families import (
    BasicBlock,
    MBConv,
    build_model,
    count_flops,
    count_params,
    family_names,
    get_family,
    measure_latency_ms,
    register_family,
)

DIGITS, MNIST, CIFAR, TABULAR = (1, 8, 8), (1, 28, 28), (3, 32, 32), (13,)
IMAGE_SHAPES = [DIGITS, MNIST, CIFAR]

# One representative arch per family; each downsamples at most 3 times so it fits 8x8 digits.
ARCHS = {
    "mlp": {"depth": 2, "width": 32, "activation": "gelu", "dropout": 0.1, "batch_norm": True},
    "cnn": {
        "stages": [
            {"channels": 8, "kernel": 5},
            {"channels": 16, "stride": 2, "batch_norm": False},
            {"channels": 16, "pool": True},
        ],
        "activation": "silu",
        "dropout": 0.2,
        "head_width": 12,
    },
    "resnet": {
        "stem_channels": 8,
        "stages": [{"channels": 8, "blocks": 2}, {"channels": 16, "blocks": 1, "stride": 2}],
        "activation": "elu",
    },
    "mbconv": {
        "stem_channels": 8,
        "stages": [
            {"channels": 8, "layers": [{"op": "mbconv", "expansion": 1, "kernel": 3}]},
            {
                "channels": 16,
                "stride": 2,
                "layers": [
                    {"op": "mbconv", "expansion": 6, "kernel": 5},
                    {"op": "identity"},
                    {"op": "mbconv", "expansion": 3, "kernel": 7},
                ],
            },
        ],
        "head_channels": 32,
        "dropout": 0.1,
    },
}


def _forward(model: nn.Module, shape: tuple, batch: int = 3) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(batch, *shape))


# -- output shapes on every data source's input shape -----------------------------------------


@pytest.mark.parametrize("shape", IMAGE_SHAPES + [TABULAR], ids=str)
def test_mlp_fits_every_input(shape):
    model = build_model("mlp", ARCHS["mlp"], shape, 7)
    assert _forward(model, shape).shape == (3, 7)


@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=str)
@pytest.mark.parametrize("family", ["cnn", "resnet", "mbconv"])
def test_image_families_fit_every_image_input(family, shape):
    model = build_model(family, ARCHS[family], shape, 10)
    assert _forward(model, shape).shape == (3, 10)


@pytest.mark.parametrize("family", ["cnn", "resnet", "mbconv"])
def test_image_families_reject_tabular_input(family):
    with pytest.raises(ArchError, match=r"needs image input \(C, H, W\), got input_shape \(13,\)"):
        build_model(family, ARCHS[family], TABULAR, 3)


def test_defaults_build_from_minimal_archs():
    assert _forward(build_model("mlp", {}, TABULAR, 2), TABULAR).shape == (3, 2)
    for family in ("cnn", "resnet", "mbconv"):
        model = build_model(family, {"stages": [{"channels": 4}]}, DIGITS, 10)
        assert _forward(model, DIGITS).shape == (3, 10)


def test_mlp_depth_zero_is_a_linear_model():
    model = build_model("mlp", {"depth": 0}, DIGITS, 10)
    assert count_params(model) == 64 * 10 + 10


def test_mlp_layers_list_gives_per_layer_widths_and_dropout():
    arch = {"layers": [{"width": 32}, {"width": 16, "dropout": 0.5}], "dropout": 0.1}
    model = build_model("mlp", arch, TABULAR, 3)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [32, 16, 3]
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.1, 0.5]


def test_mlp_rejects_layers_together_with_depth():
    with pytest.raises(ArchError, match=r"^arch\.depth: give either 'layers' or 'depth'/'width'"):
        build_model("mlp", {"layers": [{"width": 8}], "depth": 2}, TABULAR, 3)


# -- rejected before training, with the key path -----------------------------------------------


def test_three_downsamplings_fit_digits_but_a_fourth_is_rejected_with_the_stage():
    three = {"stages": [{"channels": 4, "stride": 2}] * 3}
    assert _forward(build_model("cnn", three, DIGITS, 10), DIGITS).shape == (3, 10)
    four = {"stages": [{"channels": 4, "stride": 2}] * 4}
    with pytest.raises(ArchError) as info:
        build_model("cnn", four, DIGITS, 10)
    assert info.value.path == "arch.stages.3"
    assert info.value.message == (
        "stride-2 downsampling needs a spatial size >= 2, but the input 1x8x8 is already 1x1 "
        "after 3 downsamplings; use fewer stride/pool stages"
    )


@pytest.mark.parametrize(
    "family, arch, path",
    [
        # pool and stride both downsample: 8 -> 4 -> 2 (stage 0), 1 (stage 1), then stage 2 fails
        ("cnn", {"stages": [{"channels": 4, "stride": 2, "pool": True},
                            {"channels": 4, "pool": True},
                            {"channels": 4, "stride": 2}]}, "arch.stages.2"),
        ("resnet", {"stages": [{"channels": 4, "stride": 2}] * 3 + [{"channels": 8},
                                                                   {"channels": 8, "stride": 2}]},
         "arch.stages.4"),
        ("mbconv", {"stages": [{"channels": 4, "stride": 2, "layers": [{"op": "identity"}]}] * 4},
         "arch.stages.3"),
    ],
)
def test_too_many_downsamplings_name_the_stage(family, arch, path):
    with pytest.raises(ArchError, match="spatial size >= 2") as info:
        build_model(family, arch, DIGITS, 10)
    assert info.value.path == path


def test_28x28_allows_more_downsamplings_than_digits():
    arch = {"stages": [{"channels": 4, "stride": 2}] * 5}  # 28 -> 14 -> 7 -> 4 -> 2 -> 1
    assert _forward(build_model("cnn", arch, MNIST, 10), MNIST).shape == (3, 10)
    with pytest.raises(ArchError, match=r"1x28x28 is already 1x1 after 5 downsamplings"):
        build_model("cnn", {"stages": [{"channels": 4, "stride": 2}] * 6}, MNIST, 10)


@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet", "mbconv"])
def test_bad_activation_names_the_key_and_the_allowed_values(family):
    arch = dict(ARCHS[family], activation="foo")
    with pytest.raises(ArchError) as info:
        build_model(family, arch, DIGITS, 10)
    assert info.value.path == "arch.activation"
    assert "got 'foo'" in info.value.message
    assert "relu, relu6, gelu, silu, tanh, elu, leaky_relu" in info.value.message


@pytest.mark.parametrize(
    "family, arch, path, shown",
    [
        ("mlp", {"width": 0}, "arch.width", "0"),
        ("mlp", {"depth": -1}, "arch.depth", "-1"),
        ("mlp", {"depth": "3"}, "arch.depth", "'3'"),
        ("mlp", {"layers": [{"width": 8}, {"width": 2.5}]}, "arch.layers.1.width", "2.5"),
        ("mlp", {"dropout": 1.0}, "arch.dropout", "1.0"),
        ("mlp", {"batch_norm": "yes"}, "arch.batch_norm", "'yes'"),
        ("cnn", {"stages": [{"channels": 4}, {"channels": 0}]}, "arch.stages.1.channels", "0"),
        ("cnn", {"stages": [{"channels": 4, "kernel": True}]}, "arch.stages.0.kernel", "True"),
        ("cnn", {"stages": [{"channels": 4, "stride": 3}]}, "arch.stages.0.stride", "3"),
        ("cnn", {"stages": [{"kernel": 3}]}, "arch.stages.0.channels", "missing"),
        ("cnn", {"stages": {"channels": 4}}, "arch.stages", "must be a list"),
        ("resnet", {"stages": [{"channels": 8, "blocks": 0}]}, "arch.stages.0.blocks", "0"),
        ("resnet", {"stem_channels": -4, "stages": []}, "arch.stem_channels", "-4"),
        ("mbconv", {"stages": [{"channels": 8, "layers": [{"op": "conv"}]}]},
         "arch.stages.0.layers.0.op", "'conv'"),
        ("mbconv", {"stages": [{"channels": 8, "layers": [{"kernel": 4}]}]},
         "arch.stages.0.layers.0.kernel", "4"),
        ("mbconv", {"stages": [{"channels": 8, "layers": [{"expansion": 0}]}]},
         "arch.stages.0.layers.0.expansion", "0"),
    ],
)
def test_bad_values_name_the_key_path_and_the_value(family, arch, path, shown):
    with pytest.raises(ArchError) as info:
        build_model(family, arch, DIGITS, 10)
    assert info.value.path == path
    assert shown in info.value.message


def test_unknown_key_is_rejected_with_a_suggestion():
    expected = r"^arch\.stages\.0\.chanels: unknown key.*did you mean 'channels'"
    with pytest.raises(ArchError, match=expected):
        build_model("cnn", {"stages": [{"chanels": 8}]}, DIGITS, 10)


def test_integral_floats_and_numpy_values_are_accepted():
    import numpy as np
    arch = {"stages": [{"channels": 8.0, "stride": np.int64(2), "pool": np.bool_(False)}]}
    model = build_model("cnn", arch, DIGITS, 10)
    assert model[0][0][0].stride == (2, 2) and model[0][0][0].out_channels == 8


# -- the mbconv identity rule and residual paths -----------------------------------------------


def _mbconvs(model: nn.Module) -> list[MBConv]:
    return [m for m in model.modules() if isinstance(m, MBConv)]


def test_mbconv_identity_layers_are_skipped_when_the_shape_is_kept():
    arch = {"stem_channels": 8, "stages": [
        {"channels": 8, "layers": [{"op": "identity"}, {"op": "identity"}]},
        {"channels": 8,
         "layers": [{"op": "identity"}, {"op": "mbconv", "expansion": 4, "kernel": 5}]},
    ]}
    blocks = _mbconvs(build_model("mbconv", arch, DIGITS, 10))
    assert len(blocks) == 1 and blocks[0].use_residual
    assert blocks[0].body[0].kernel_size == (1, 1) and blocks[0].body[0].out_channels == 32


@pytest.mark.parametrize(
    "stage",
    [
        {"channels": 16, "layers": [{"op": "identity"}, {"op": "identity"}]},  # channels change
        {"channels": 8, "stride": 2, "layers": [{"op": "identity", "expansion": 6, "kernel": 7}]},
        {"channels": 16, "stride": 2, "layers": []},
    ],
)
def test_mbconv_shape_changing_identity_becomes_expansion_1_kernel_3(stage):
    model = build_model("mbconv", {"stem_channels": 8, "stages": [stage]}, DIGITS, 10)
    (block,) = _mbconvs(model)
    convs = [m for m in block.body if isinstance(m, nn.Conv2d)]
    # expansion 1: no expand conv, so depthwise 3x3 then 1x1 projection
    assert [c.kernel_size for c in convs] == [(3, 3), (1, 1)]
    assert convs[0].groups == 8 and convs[0].stride == (stage.get("stride", 1),) * 2
    assert convs[1].out_channels == stage["channels"] and not block.use_residual


def test_mbconv_residual_is_used():
    block = MBConv(8, 8, expansion=4, kernel=3, stride=1, act=nn.ReLU6).eval()
    x = torch.randn(2, 8, 5, 5)
    nn.init.zeros_(block.body[-1].weight)  # zero the projection's BN: the body outputs 0
    nn.init.zeros_(block.body[-1].bias)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    assert not MBConv(8, 16, 4, 3, 1, nn.ReLU6).use_residual
    assert not MBConv(8, 8, 4, 3, 2, nn.ReLU6).use_residual


def test_resnet_projection_shortcut_only_when_the_shape_changes():
    plain = build_model("resnet", {"stem_channels": 16, "stages": [{"channels": 16}]}, CIFAR, 10)
    strided_arch = {"stem_channels": 16, "stages": [{"channels": 16, "stride": 2}]}
    strided = build_model("resnet", strided_arch, CIFAR, 10)
    # Same convs; the strided block adds a 1x1 conv (16*16 weights) and its BN (2*16).
    assert count_params(strided) - count_params(plain) == 16 * 16 + 2 * 16
    (plain_block,) = [m for m in plain.modules() if isinstance(m, BasicBlock)]
    assert isinstance(plain_block.shortcut, nn.Identity)


def test_resnet_identity_shortcut_carries_the_input():
    block = BasicBlock(8, 8, stride=1, act=nn.ReLU).eval()
    nn.init.zeros_(block.body[-1].weight)
    nn.init.zeros_(block.body[-1].bias)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))


def test_resnet_blocks_per_stage():
    arch = {"stages": [{"channels": 8, "blocks": 3}, {"channels": 16, "blocks": 2, "stride": 2}]}
    model = build_model("resnet", arch, DIGITS, 10)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 5


# -- registry and user families ----------------------------------------------------------------


def test_builtin_names_and_unknown_name_suggestion():
    assert {"mlp", "cnn", "resnet", "mbconv"} <= set(family_names())
    assert get_family("resnet") is families.build_resnet
    with pytest.raises(KeyError) as info:
        get_family("resnt")
    assert "unknown model family 'resnt'" in str(info.value)
    assert "cnn, mbconv, mlp, resnet" in str(info.value)
    assert "did you mean 'resnet'?" in str(info.value)


def test_register_family_as_decorator_and_call():
    try:
        @register_family("test_linear")
        def linear(arch, input_shape, num_classes):
            return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], num_classes))

        assert get_family("test_linear") is linear
        assert register_family("test_linear2", linear) is linear
        assert _forward(build_model("test_linear2", {}, TABULAR, 4), TABULAR).shape == (3, 4)
        with pytest.raises(ValueError, match="without ':'"):
            register_family("a:b", linear)
    finally:
        registry._REGISTERED.pop("test_linear", None)
        registry._REGISTERED.pop("test_linear2", None)


def test_user_family_by_reference_from_base_dir(tmp_path):
    (tmp_path / "my_nas_models.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        def tiny(arch, input_shape, num_classes):
            hidden = arch.get("hidden", 4)
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

        def wrong_width(arch, input_shape, num_classes):
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes + 1))

        NOT_CALLABLE = 3
    """))
    fn = get_family("my_nas_models:tiny", base_dir=tmp_path)
    model = build_model("my_nas_models:tiny", {"hidden": 6}, DIGITS, 10, base_dir=tmp_path)
    assert fn.__name__ == "tiny" and _forward(model, DIGITS).shape == (3, 10)
    expected = (r"'my_nas_models:wrong_width' cannot be built for input \(1, 8, 8\): "
                r"a batch of 2 gives output \(2, 11\), expected \(2, 10\)")
    with pytest.raises(ArchError, match=expected):
        build_model("my_nas_models:wrong_width", {}, DIGITS, 10, base_dir=tmp_path)
    with pytest.raises(TypeError, match="not callable"):
        get_family("my_nas_models:NOT_CALLABLE", base_dir=tmp_path)
    with pytest.raises(AttributeError):
        get_family("my_nas_models:missing", base_dir=tmp_path)


def test_build_model_wraps_any_failure_in_arch_error():
    def broken(arch, input_shape, num_classes):
        return nn.Linear(5, num_classes)  # expects 5 features, gets 13

    with pytest.raises(ArchError) as info:
        build_model(broken, {}, TABULAR, 3)
    assert info.value.path == "arch"
    assert info.value.message.startswith("family 'broken' cannot be built for input (13,): ")
    assert isinstance(info.value.__cause__, RuntimeError)

    def not_a_module(arch, input_shape, num_classes):
        return lambda x: x

    with pytest.raises(ArchError, match="not a torch.nn.Module"):
        build_model(not_a_module, {}, TABULAR, 3)


def test_build_model_dry_pass_leaves_the_model_and_threads_untouched():
    threads = torch.get_num_threads()
    model = build_model("cnn", {"stages": [{"channels": 4}]}, DIGITS, 10)
    count_flops(model, DIGITS)
    assert torch.get_num_threads() == threads
    assert model.training and all(m.training for m in model.modules())
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean, torch.zeros(4))


def test_build_model_rejects_bad_caller_arguments():
    with pytest.raises(ValueError, match="input_shape"):
        build_model("mlp", {}, (0, 8), 10)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mlp", {}, TABULAR, 0)


# -- cost helpers ------------------------------------------------------------------------------


def test_count_params_counts_trainable_only():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    assert count_params(model) == (4 * 3 + 3) + (3 * 2 + 2)
    model[0].weight.requires_grad_(False)
    assert count_params(model) == 3 + 8


def test_count_flops_is_exact_for_an_mlp_and_grows_with_width():
    model = build_model("mlp", {"depth": 1, "width": 32}, DIGITS, 10)
    assert count_flops(model, DIGITS) == 2 * (64 * 32 + 32 * 10)
    flops = [count_flops(build_model("cnn", {"stages": [{"channels": w}]}, CIFAR, 10), CIFAR)
             for w in (4, 8, 16)]
    assert 0 < flops[0] < flops[1] < flops[2]
    assert model.training  # modes restored


def test_measure_latency_is_positive_and_side_effect_free():
    model = build_model("resnet", ARCHS["resnet"], CIFAR, 10)
    threads = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    latency = measure_latency_ms(model, CIFAR, repeats=3, warmup=1)
    assert latency > 0
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert model.training and next(model.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="repeats"):
        measure_latency_ms(model, CIFAR, repeats=0)


def test_cpu_copy_keeps_weights_and_mode():
    model = build_model("mbconv", ARCHS["mbconv"], DIGITS, 10).eval()
    clone = families._cpu_copy(model)
    assert clone is not model and not clone.training
    for (name, a), (_, b) in zip(model.state_dict().items(), clone.state_dict().items()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), name


def test_docstring_examples_run():
    try:
        result = doctest.testmod(families, extraglobs={"torch": torch, "nn": nn})
        reg = doctest.testmod(registry)
    finally:
        registry._REGISTERED.pop("tiny", None)  # registered by register_family's example
    assert result.failed == 0 and result.attempted > 5
    assert reg.failed == 0 and reg.attempted >= 2
