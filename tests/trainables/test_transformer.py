"""Tests for the ``transformer`` family (raynas.trainables.transformer): real models, no Ray."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

from raynas.errors import ArchError
from raynas.trainables import transformer
from raynas.trainables.families import build_model, count_flops, count_params, measure_latency_ms
from raynas.trainables.transformer import FeatureTokenizer, PatchEmbedding

DIGITS, MNIST, CIFAR, TABULAR = (1, 8, 8), (1, 28, 28), (3, 32, 32), (13,)


def arch(**keys) -> dict:
    return {"width": 16, "blocks": [{"heads": 2}, {"heads": 4, "mlp_ratio": 1.5}], **keys}


def forward(model: nn.Module, shape: tuple, batch: int = 3) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(batch, *shape))


# -- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("shape, patch", [(DIGITS, 2), (DIGITS, 4), (MNIST, 7), (CIFAR, 4), (TABULAR, None)],
                         ids=str)
def test_fits_images_and_tables(shape, patch, pool):
    a = arch(pool=pool) | ({"patch_size": patch} if patch else {})
    model = build_model("transformer", a, shape, 5)
    assert forward(model, shape).shape == (3, 5)


def test_tokens_are_patches_or_features_plus_the_cls_token():
    seen = []
    for shape, keys, tokens in ((DIGITS, {"patch_size": 2}, 1 + 16), (DIGITS, {"patch_size": 4, "pool": "mean"}, 4),
                                (TABULAR, {}, 1 + 13), (TABULAR, {"pool": "mean"}, 13)):
        model = build_model("transformer", arch(**keys), shape, 3)
        hook = model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
        forward(model, shape, batch=1)
        hook.remove()
        assert seen[-1] == tokens
        assert isinstance(model.tokenizer, PatchEmbedding if len(shape) == 3 else FeatureTokenizer)
        assert (model.position is None) == (len(shape) == 1)  # per-feature tokens need no position


def test_feature_tokenizer_is_x_times_w_plus_b_per_feature():
    tok = FeatureTokenizer(3, 4)
    x = torch.tensor([[1.0, -2.0, 0.5]])
    out = tok(x)
    assert out.shape == (1, 3, 4)
    for f in range(3):
        assert torch.allclose(out[0, f], x[0, f] * tok.weight[f] + tok.bias[f])


def test_blocks_are_torch_encoder_layers_with_the_arch_settings():
    a = {"width": 24, "blocks": [{"heads": 3, "mlp_ratio": 2, "dropout": 0.1}, {"heads": 8, "mlp_ratio": 0.5}]}
    model = build_model("transformer", a, DIGITS, 10)
    layers = list(model.blocks)
    assert all(isinstance(b, nn.TransformerEncoderLayer) and b.norm_first for b in layers)  # torch's own
    assert [b.self_attn.num_heads for b in layers] == [3, 8]
    assert [b.linear1.out_features for b in layers] == [48, 12]
    assert [b.dropout.p for b in layers] == [0.1, 0.0]
    assert all(b.self_attn.embed_dim == 24 for b in layers)  # one width for every block


def test_no_blocks_is_a_linear_model_on_pooled_tokens():
    model = build_model("transformer", {"width": 8, "blocks": [], "pool": "mean"}, TABULAR, 3)
    assert forward(model, TABULAR).shape == (3, 3)
    assert count_params(model) == 2 * 13 * 8 + 2 * 8 + 8 * 3 + 3  # tokenizer, LayerNorm, linear


# -- parameters and FLOPs ----------------------------------------------------------------------


def test_params_follow_the_arch():
    def params(**keys):
        return count_params(build_model("transformer", arch(**keys), DIGITS, 10))

    w = 16
    base = params(patch_size=4, pool="mean")
    assert params(patch_size=4) == base + w + w  # the [CLS] token and its position
    # 2x2 patches: 4 instead of 16 weights per unit, 16 instead of 4 positions
    assert params(patch_size=2, pool="mean") == base + (4 - 16) * w + (16 - 4) * w

    def mlp(ratio):
        a = arch(patch_size=4) | {"blocks": [{"heads": 2, "mlp_ratio": ratio}]}
        return count_params(build_model("transformer", a, DIGITS, 10))

    hidden = 3 * w  # ratio 4 vs 1
    assert mlp(4) - mlp(1) == 2 * w * hidden + hidden  # the MLP's two weight matrices and first bias
    assert params(patch_size=4, width=32) > base


def test_flops_count_the_attention_matmuls_in_eval_mode():
    """nn.TransformerEncoderLayer's fused inference path used to count 0 FLOPs; count_flops
    now counts every linear layer and the two attention matmuls exactly."""
    w, t, patch = 32, 16 + 1, 2
    model = build_model("transformer", {"width": w, "patch_size": patch, "blocks": [{"heads": 4, "mlp_ratio": 2}]},
                        DIGITS, 10)
    embed = 16 * (patch * patch * 1) * w
    block = t * (3 * w * w + w * w + 2 * w * 2 * w)  # qkv, out projection, MLP (hidden 2w)
    attention = 2 * t * t * w  # scores q k^T and weights @ v, over all heads
    assert count_flops(model, DIGITS) == 2 * (embed + block + attention + w * 10)
    assert torch.backends.mha.get_fastpath_enabled()  # restored after counting
    # Odd heads never took the fused path; they count the same.
    odd = build_model("transformer", {"width": 33, "patch_size": 2, "blocks": [{"heads": 3}]}, DIGITS, 10)
    assert count_flops(odd, DIGITS) > 2 * 2 * t * t * 33


def test_fused_and_unfused_inference_agree_and_latency_is_measured():
    model = build_model("transformer", arch(patch_size=2), DIGITS, 10).eval()
    x = torch.randn(4, *DIGITS)
    with torch.no_grad():
        fused = model(x)
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            plain = model(x)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    assert torch.allclose(fused, plain, atol=1e-5)
    assert measure_latency_ms(model, DIGITS, repeats=2, warmup=1) > 0


@pytest.mark.parametrize("shape", [DIGITS, TABULAR], ids=str)
def test_int8_quantized_model_runs_and_agrees(shape):
    """raynas compress --quantize int8: dynamic int8 swaps the MLPs' linear layers for
    quantized ones, on which torch's own layer failed its fused-path check (reading .device of
    a method); with a calibration batch, images get static int8 (FX) of the whole model."""
    from raynas.winner.compress import quantize

    torch.manual_seed(0)
    model = build_model("transformer", arch(patch_size=2) if len(shape) == 3 else arch(), shape, 4).eval()
    x = torch.randn(5, *shape)
    for calibration, method, tolerance in ((None, "dynamic int8 (Linear)", 0.1),
                                           (torch.randn(8, *shape), None, 0.5)):
        result = quantize(model, "int8", calibration=calibration)
        assert method is None or result.method == method
        with torch.inference_mode():
            out, expected = result.model(x), model(x)
        assert out.shape == (5, 4) and torch.allclose(out, expected, atol=tolerance), (result.method, out - expected)
        assert measure_latency_ms(result.model, shape, repeats=2, warmup=1) > 0
    assert torch.backends.mha.get_fastpath_enabled()


def test_torchscript_trace_works_for_any_batch_size():
    """What raynas export --format torchscript does: trace in eval mode on one sample."""
    import warnings

    model = build_model("transformer", arch(patch_size=2), DIGITS, 10).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates torch.jit
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # from inside torch's attention
        traced = torch.jit.trace(model, torch.zeros(1, *DIGITS))
        x = torch.randn(3, *DIGITS)
        assert torch.allclose(traced(x), model(x), atol=1e-5)


@pytest.mark.parametrize("shape", [DIGITS, TABULAR], ids=str)
def test_gradients_reach_every_parameter(shape):
    model = build_model("transformer", arch(dropout=0.1), shape, 4)
    model.train()
    x = torch.randn(8, *shape)
    nn.functional.cross_entropy(model(x), torch.arange(8) % 4).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


# -- errors with key paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, shape, path, text, misfit",
    [
        (arch(width=30), DIGITS, "arch.blocks.1.heads", "must divide the width (arch.width = 30), got 4", False),
        (arch(patch_size=3), DIGITS, "arch.patch_size", "must divide the image's height and width (8x8), got 3",
         True),
        (arch(patch_size=5), MNIST, "arch.patch_size", "(28x28), got 5", True),
        (arch(patch_size=2), TABULAR, "arch.patch_size", "only for image input", True),
        (arch(pool="max"), DIGITS, "arch.pool", "must be one of cls, mean", False),
        (arch(blocks=[{"heads": 2, "mlp_ratio": 0}]), DIGITS, "arch.blocks.0.mlp_ratio", "must be a positive number",
         False),
        (arch(blocks=[{"head": 2}]), DIGITS, "arch.blocks.0.head", "(did you mean 'heads'?)", False),
        ({"width": 16}, DIGITS, "arch.blocks", "required key is missing", False),
        (arch(blocks={"heads": 2}), DIGITS, "arch.blocks", "must be a list", False),
        (arch(), (3, 8), "arch", "needs image input (C, H, W) or tabular rows (F,), got input_shape (3, 8)", False),
    ],
)
def test_bad_archs_name_the_key_path(a, shape, path, text, misfit):
    with pytest.raises(ArchError) as info:
        build_model("transformer", a, shape, 10)
    assert info.value.path == path and text in info.value.message and info.value.misfit == misfit


def test_docstring_examples_run():
    result = doctest.testmod(transformer, extraglobs={"torch": torch})
    assert result.failed == 0 and result.attempted >= 2
