"""Tests for raynas.winner.compress: real models, real pruning and quantization, no mocks."""

from __future__ import annotations

import copy
import doctest
import io

import pytest
import torch
from torch import nn

from raynas.trainables.families import build_model, count_flops
from raynas.winner import compress
from raynas.winner.compress import CompressError, model_stats, prune, quantize

DIGITS, TABLE = (1, 8, 8), (20,)
ARCHS = {
    "mlp": {"depth": 2, "width": 32, "batch_norm": True, "dropout": 0.1},
    "cnn": {
        "stages": [{"channels": 8, "kernel": 5}, {"channels": 16, "stride": 2, "batch_norm": False},
                   {"channels": 16, "pool": True}],
        "activation": "silu", "dropout": 0.2, "head_width": 12,
    },
    "resnet": {"stem_channels": 8, "activation": "elu",
               "stages": [{"channels": 8, "blocks": 2}, {"channels": 16, "stride": 2}]},
    "mbconv": {
        "stem_channels": 8, "head_channels": 32,
        "stages": [{"channels": 8, "layers": [{"expansion": 1}]},
                   {"channels": 16, "stride": 2, "layers": [{"expansion": 6, "kernel": 5},
                                                            {"expansion": 3}]}],
    },
}
CASES = [(name, DIGITS) for name in ARCHS] + [("mlp", TABLE)]
IDS = [f"{name}-{'x'.join(map(str, shape))}" for name, shape in CASES]


def _model(name: str, shape: tuple) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, ARCHS[name], shape, 10)
    # Non-trivial batch norm statistics, so a wrongly sliced one changes the output.
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _batch(shape: tuple, n: int = 32) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(1))


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


# -- structured pruning ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape"), CASES, ids=IDS)
def test_structured_pruning_shrinks_every_family(name, shape):
    model = _model(name, shape)
    before = copy.deepcopy(model.state_dict())
    x = _batch(shape)
    result = prune(model, 0.5, structured=True, example_input=x)
    pruned = result.model
    assert type(pruned) is type(model)
    assert _logits(pruned, x).shape == (32, 10)
    params = [model_stats(m, shape, repeats=2)["params"] for m in (pruned, model)]
    assert params[0] < params[1]
    assert count_flops(pruned, shape) < count_flops(model, shape)
    assert result.pruned and all("->" in line for line in result.pruned)
    # The model given is left as it was.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # The classifier's classes are never pruned.
    assert any("model's output" in line for line in result.skipped)


def test_structured_pruning_shrinks_the_expected_layers_of_each_family():
    def names(name):
        result = prune(_model(name, DIGITS), 0.5, structured=True, example_input=_batch(DIGITS))
        return ({line.split(":")[0] for line in result.pruned},
                {line.split(":")[0]: line for line in result.skipped})

    pruned, skipped = names("mlp")
    assert pruned == {"1", "5"} and "9" in skipped  # both hidden layers, not the classifier
    pruned, skipped = names("cnn")
    assert pruned == {"0.0.0", "0.1.0", "0.2.0", "1.3"}  # every conv and the head's hidden layer
    pruned, skipped = names("resnet")
    # The inner conv of each BasicBlock; the stem and the block outputs feed the residual stream.
    assert pruned == {"1.0.0.body.0", "1.0.1.body.0", "1.1.0.body.0"}
    assert "residual add" in skipped["0.0"] and "add()" in skipped["1.0.0.body.3"]
    pruned, skipped = names("mbconv")
    # Expansion convs and the head conv; the projections write to the residual stream.
    assert pruned == {"1.1.0.body.0", "1.1.1.body.0", "2.0"}
    assert "add()" in skipped["1.1.1.body.6"]


class _Chain(nn.Module):
    """conv -> BN -> ReLU -> depthwise conv -> BN -> ReLU -> 1x1 conv -> ReLU -> flatten (4x4
    per channel) -> Linear -> ReLU -> Linear: every kind of link structured pruning follows."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.dw_bn = nn.BatchNorm2d(8)
        self.point = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6 * 16, 10)
        self.out = nn.Linear(10, 4)

    def forward(self, x):
        x = torch.relu(self.dw_bn(self.dw(torch.relu(self.bn(self.conv(x))))))
        x = torch.flatten(torch.relu(self.point(x)), 1)
        return self.out(torch.relu(self.fc(x)))


def test_structured_pruning_removes_exactly_the_weakest_channels():
    # Weak channels (smallest L1 norm) that the next layer ignores: removing them must not change
    # the logits at all, which holds only if every slice (BN, depthwise, flatten blocks) is right.
    torch.manual_seed(0)
    model = _Chain().eval()
    for bn in (model.bn, model.dw_bn):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    weak = {"conv": [1, 4, 5, 7], "point": [0, 3, 4], "fc": [2, 3, 6, 8, 9]}
    with torch.no_grad():
        model.conv.weight[weak["conv"]] *= 1e-3
        model.point.weight[:, weak["conv"]] = 0
        model.point.weight[weak["point"]] *= 1e-3
        for c in weak["point"]:
            model.fc.weight[:, c * 16:(c + 1) * 16] = 0
        model.fc.weight[weak["fc"]] *= 1e-3
        model.out.weight[:, weak["fc"]] = 0
    x = _batch((3, 4, 4))
    result = prune(model, 0.5, structured=True, example_input=x)
    assert result.pruned == ["conv: 8 -> 4 channels (into point)",
                             "point: 6 -> 3 channels (into fc)", "fc: 10 -> 5 channels (into out)"]
    assert result.model.dw.groups == 4 and result.model.dw_bn.num_features == 4
    assert result.model.fc.in_features == 3 * 16
    torch.testing.assert_close(_logits(result.model, x), _logits(model, x))


class _ResidualOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        x = x + torch.relu(self.a(x))
        x = x + torch.relu(self.b(x))
        return self.head(x)


def test_structured_pruning_of_a_residual_only_model_says_why():
    with pytest.raises(CompressError, match=r"_ResidualOnly.*a: its output reaches add\(\)"):
        prune(_ResidualOnly(), 0.5, structured=True, example_input=torch.randn(4, 16))


def test_structured_pruning_skips_shared_and_untraceable_modules():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.twice = nn.Linear(8, 8), nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.twice(self.twice(self.first(x))))

    assert prune(Shared(), 0.5, structured=False, example_input=torch.randn(2, 8)).pruned
    with pytest.raises(CompressError, match="first: its output reaches twice, used 2 times"):
        prune(Shared(), 0.5, structured=True, example_input=torch.randn(2, 8))

    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(CompressError, match="trace DataDependent with torch.fx"):
        prune(DataDependent(), 0.5, structured=True, example_input=torch.randn(2, 8))


def test_structured_pruning_keeps_train_mode_and_one_channel():
    model = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2), nn.ReLU(), nn.Linear(2, 3)).train()
    result = prune(model, 0.9, structured=True, example_input=torch.randn(5, 4))
    assert result.pruned == ["0: 2 -> 1 channels (into 3)"]
    assert all(m.training for m in result.model.modules())
    assert result.model(torch.randn(5, 4)).shape == (5, 3)
    with pytest.raises(CompressError, match="0: amount 0.1 of 2 channels rounds to 0"):
        prune(model, 0.1, structured=True, example_input=torch.randn(5, 4))


@pytest.mark.parametrize("amount", [0, 1, -0.1, 1.5, True, "0.5", float("nan")])
def test_amount_outside_the_open_unit_interval_is_rejected(amount):
    with pytest.raises(ValueError, match="amount must be a number in \\(0, 1\\)"):
        prune(nn.Linear(3, 2), amount, structured=False, example_input=torch.randn(2, 3))


# -- unstructured pruning ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape"), CASES, ids=IDS)
def test_unstructured_pruning_zeroes_the_share_asked_for(name, shape):
    model = _model(name, shape)
    result = prune(model, 0.3, structured=False, example_input=_batch(shape))
    weights = [m.weight for m in result.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.3 * total)
    before = model_stats(model, shape, repeats=2)
    after = model_stats(result.model, shape, repeats=2)
    assert after["params"] == before["params"]
    assert before["nonzero"] - after["nonzero"] == pytest.approx(0.3 * total, abs=total * 0.01)
    # Permanent zeros: no masks, no hooks, the same state_dict keys.
    assert result.model.state_dict().keys() == model.state_dict().keys()
    assert not any(m._forward_pre_hooks for m in result.model.modules())


def _trained_mlp() -> tuple[nn.Module, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 20, generator=gen) * 3
    labels = torch.randint(0, 3, (300,), generator=gen)
    x = centers[labels] + torch.randn(300, 20, generator=gen)
    torch.manual_seed(0)
    model = build_model("mlp", {"depth": 2, "width": 64}, TABLE, 3)
    return _fit(model, x, labels, steps=60), x


def _fit(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, steps: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        opt.step()
    return model.eval()


def _trained_cnn() -> tuple[nn.Module, torch.Tensor]:
    # Four classes: which quadrant of the 8x8 image is bright.
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (256,), generator=gen)
    x = torch.randn(256, 1, 8, 8, generator=gen) * 0.5
    for i, c in enumerate(labels.tolist()):
        x[i, 0, 4 * (c // 2):4 * (c // 2) + 4, 4 * (c % 2):4 * (c % 2) + 4] += 2
    torch.manual_seed(0)
    model = build_model("cnn", {"stages": [{"channels": 8}, {"channels": 16, "pool": True}]},
                        DIGITS, 4)
    return _fit(model, x, labels, steps=40), x


def _agreement(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    return (_logits(a, x).argmax(1) == _logits(b, x).argmax(1)).float().mean().item()


def test_light_compression_keeps_a_trained_models_predictions():
    mlp, x = _trained_mlp()
    assert _agreement(mlp, prune(mlp, 0.1, structured=False, example_input=x).model, x) >= 0.97
    assert _agreement(mlp, prune(mlp, 0.1, structured=True, example_input=x).model, x) >= 0.9
    assert _agreement(mlp, quantize(mlp, "int8").model, x) >= 0.97
    assert _agreement(mlp, quantize(mlp, "fp16", calibration=x).model, x) >= 0.99
    cnn, images = _trained_cnn()
    static = quantize(cnn, "int8", calibration=images[:64])
    assert static.method == "static int8 (FX)"
    assert _agreement(cnn, static.model, images) >= 0.95
    assert _agreement(cnn, prune(cnn, 0.1, structured=False, example_input=images).model,
                      images) >= 0.95


# -- quantization ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape"), CASES, ids=IDS)
def test_int8_runs_on_float_input_and_is_smaller(name, shape):
    model = _model(name, shape)
    x = _batch(shape)
    result = quantize(model, "int8", calibration=x)
    assert result.method == ("dynamic int8 (Linear)" if name == "mlp" else "static int8 (FX)")
    assert result.notes == []
    out = result.model(x)
    assert out.shape == (32, 10) and out.dtype == torch.float32
    assert model_stats(result.model, shape, repeats=2)["size_bytes"] < \
        model_stats(model, shape, repeats=2)["size_bytes"]


def test_int8_dynamic_keeps_the_parameter_count():
    model = build_model("mlp", {"depth": 2, "width": 64}, TABLE, 3)
    stats = model_stats(quantize(model, "int8").model, TABLE, repeats=2)
    expected = (20 * 64 + 64) + (64 * 64 + 64) + (64 * 3 + 3)
    assert stats["params"] == model_stats(model, TABLE, repeats=2)["params"] == expected


def test_int8_without_calibration_quantizes_only_the_linear_layers():
    model = _model("cnn", DIGITS)
    result = quantize(model, "int8")
    assert result.method == "dynamic int8 (Linear)"
    assert "needs a calibration batch" in result.notes[0]
    assert isinstance(result.model.get_submodule("0.0.0"), nn.Conv2d)


def test_int8_falls_back_to_dynamic_when_static_fails_and_says_why():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            x = torch.flatten(self.conv(x), 1)
            return self.fc(x) if x.mean() > 0 else self.fc(-x)  # not traceable by torch.fx

    result = quantize(Branchy(), "int8", calibration=_batch(DIGITS))
    assert result.method == "dynamic int8 (Linear)"
    assert "static int8 (FX) failed: TraceError" in result.notes[0]
    assert result.model(_batch(DIGITS)).shape == (32, 3)


def test_int8_with_nothing_to_quantize_raises():
    convs = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(CompressError, match="nothing to quantize in Sequential.*calibration"):
        quantize(convs, "int8")
    assert quantize(convs, "int8", calibration=_batch(DIGITS)).method == "static int8 (FX)"
    with pytest.raises(CompressError, match="no Conv2d or Linear"):
        quantize(nn.Sequential(nn.Flatten(), nn.ReLU()), "int8")
    with pytest.raises(ValueError, match="int8, fp16, got 'int4'"):
        quantize(convs, "int4")


@pytest.mark.parametrize(("name", "shape"), CASES, ids=IDS)
def test_fp16_takes_and_returns_float32(name, shape):
    model = _model(name, shape)
    x = _batch(shape)
    result = quantize(model, "fp16", calibration=x)
    out = result.model(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _logits(model, x), atol=0.05, rtol=0.05)
    assert next(model.parameters()).dtype == torch.float32  # the model given is untouched


def test_fp16_halves_the_saved_size():
    model = build_model("mlp", {"depth": 2, "width": 256}, TABLE, 10)
    result = quantize(model, "fp16")
    assert result.notes == ["fp16 not checked: no calibration batch"]
    sizes = [model_stats(m, TABLE, repeats=2)["size_bytes"] for m in (result.model, model)]
    assert 0.45 < sizes[0] / sizes[1] < 0.55


def test_fp16_names_the_layer_the_cpu_cannot_run():
    class Prototypes(nn.Module):
        def __init__(self):
            super().__init__()
            self.centers = nn.Parameter(torch.randn(3, 5))

        def forward(self, x):
            return -torch.cdist(x, self.centers)

    model = nn.Sequential(nn.Linear(4, 5), Prototypes())
    with pytest.raises(CompressError, match=r"layer 1 \(Prototypes\).*cdist"):
        quantize(model, "fp16", calibration=torch.randn(2, 4))


# -- export: the lead exports with TorchScript ---------------------------------------------------


def _roundtrip(model: nn.Module, x: torch.Tensor) -> None:
    traced = torch.jit.trace(model.eval(), x)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.jit.load(buffer)(x), _logits(model, x))


@pytest.mark.parametrize(("name", "shape"), CASES, ids=IDS)
def test_compressed_models_trace_save_and_load(name, shape):
    model = _model(name, shape)
    x = _batch(shape, 4)
    pruned = prune(model, 0.5, structured=True, example_input=x).model
    _roundtrip(pruned, x)
    _roundtrip(quantize(model, "int8", calibration=x).model, x)
    _roundtrip(quantize(pruned, "int8", calibration=x).model, x)  # pruned, then quantized
    _roundtrip(quantize(model, "fp16", calibration=x).model, x)


# -- stats -------------------------------------------------------------------------------------


def test_model_stats_counts_quantized_weights_and_zeros():
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.25)
        model[0].weight[:5] = 0
    stats = model_stats(quantize(model, "int8").model, (10,), repeats=2)
    assert stats["params"] == 110 + 22
    assert stats["nonzero"] == 132 - 50
    assert stats["latency_ms"] > 0


def test_doctests():
    failed, attempted = doctest.testmod(compress, optionflags=doctest.ELLIPSIS)
    assert failed == 0 and attempted >= 8
