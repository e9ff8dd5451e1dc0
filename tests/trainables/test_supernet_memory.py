"""The supernet's memory, estimated on PyTorch's meta device before Ray starts."""

import pytest

from raynas.errors import ConfigError
from raynas.spec import spec_from_dict
from raynas.trainables import supernet_memory
from raynas.trainables.supernet import build_supernet
from raynas.trainables.supernet_memory import BYTES_PER_PARAM, check_supernet_memory, estimate_supernet_bytes

OPS = ["none", "skip", "conv1x1", "conv3x3", "avgpool3x3"]


def spec(strategy: str, channels: int = 8, batch_size: int = 32, precision: str = "32"):
    arch = {"edges": {e: {"choice": OPS} for e in ("0-1", "0-2", "1-2")}, "nodes": 3, "channels": channels,
            "stages": 1, "cells_per_stage": 1}
    return spec_from_dict({"name": "m", "model": "cell", "data": {"source": "digits"}, "search": {"strategy": strategy},
                           "trainer": {"precision": precision},
                           "space": {"arch": arch, "train": {"batch_size": batch_size}}})


def test_the_estimate_counts_the_supernets_real_parameters():
    s = spec("one-shot")
    real = build_supernet("cell", s.raw["space"]["arch"], (1, 8, 8), 10)
    estimate = estimate_supernet_bytes(s, (1, 8, 8), 10)
    assert estimate["params"] == sum(p.numel() for p in real.parameters())
    assert estimate["param_bytes"] == BYTES_PER_PARAM * estimate["params"]


def test_one_shot_counts_one_candidate_per_choice_and_gradient_all_of_them():
    one_shot = estimate_supernet_bytes(spec("one-shot"), (1, 8, 8), 10)
    gradient = estimate_supernet_bytes(spec("gradient"), (1, 8, 8), 10)
    assert one_shot["params"] == gradient["params"]
    assert 2 * one_shot["activation_bytes"] < gradient["activation_bytes"]
    # Activations grow with the batch, halve under mixed precision; a batch is at most the training split.
    assert estimate_supernet_bytes(spec("one-shot", batch_size=64), (1, 8, 8), 10)["activation_bytes"] > one_shot["activation_bytes"]
    half = estimate_supernet_bytes(spec("one-shot", precision="bf16-mixed"), (1, 8, 8), 10)
    assert half["activation_bytes"] * 2 == one_shot["activation_bytes"]
    assert estimate_supernet_bytes(spec("one-shot", batch_size=10_000), (1, 8, 8), 10, train_size=32) == one_shot


def test_data_parallel_workers_each_hold_the_weights_and_their_share_of_a_batch(monkeypatch):
    one = spec("one-shot", batch_size=64)
    raw = dict(one.raw, resources={"cpus_per_trial": 0.5, "workers_per_trial": 2})
    two = spec_from_dict(raw)
    alone, each = estimate_supernet_bytes(one, (1, 8, 8), 10), estimate_supernet_bytes(two, (1, 8, 8), 10)
    assert each["param_bytes"] == alone["param_bytes"] and each["batch_size"] == 32
    assert each["activation_bytes"] * 2 == alone["activation_bytes"]
    # Both workers of a local Ray live on this machine: each may use half of it.
    monkeypatch.setattr(supernet_memory, "_machine_memory", lambda: 2 * each["total_bytes"] - 1)
    with pytest.raises(ConfigError, match=r"per worker .* more than a worker's share of this machine's memory \(.* / 2 workers\)"):
        check_supernet_memory(two, (1, 8, 8), 10)
    monkeypatch.setattr(supernet_memory, "_machine_memory", lambda: 2 * each["total_bytes"])
    assert check_supernet_memory(two, (1, 8, 8), 10) is None


def test_the_refusal_names_what_dominates(monkeypatch):
    monkeypatch.setattr(supernet_memory, "_machine_memory", lambda: 2**20)  # a 1 MiB machine
    with pytest.raises(ConfigError) as err:
        check_supernet_memory(spec("gradient", batch_size=512), (1, 8, 8), 10)
    assert err.value.path == "space.train.batch_size" and "lower the batch size (512)" in err.value.message
    with pytest.raises(ConfigError) as err:
        check_supernet_memory(spec("one-shot", channels=256, batch_size=1), (1, 8, 8), 10)
    assert err.value.path == "space.arch.channels" and "more than this machine's memory (1.0 MiB)" in err.value.message
    monkeypatch.setattr(supernet_memory, "_machine_memory", lambda: 2**40)
    assert check_supernet_memory(spec("gradient", batch_size=512), (1, 8, 8), 10) is None


def test_a_gpu_this_machine_cannot_see_is_said_not_checked(monkeypatch):
    s = spec("one-shot")
    s.resources.gpus_per_trial = 0.5
    monkeypatch.setattr(supernet_memory.torch.cuda, "is_available", lambda: False)
    note = check_supernet_memory(s, (1, 8, 8), 10)
    assert "was not checked against the trial's memory" in note


def test_an_mbconv_supernet_is_estimated_on_its_largest_path():
    import torch
    import yaml

    from raynas.trainables.families import build_mbconv
    from tests.helpers import EXPERIMENTS

    raw = yaml.safe_load((EXPERIMENTS / "oneshot_mbconv_digits.yaml").read_text())
    s = spec_from_dict(raw)
    estimate = estimate_supernet_bytes(s, (1, 8, 8), 10)
    real = build_supernet("mbconv", raw["space"]["arch"], (1, 8, 8), 10)
    assert estimate["params"] == sum(p.numel() for p in real.parameters())

    def activations(arch) -> int:
        """What the stand-alone network of ``arch`` outputs, leaf module by leaf module, for a batch of 64."""
        net, outputs = build_mbconv(arch, (1, 8, 8), 10), []
        for m in net.modules():
            if not list(m.children()):
                m.register_forward_hook(lambda m, i, o: outputs.append(o.numel()))
        with torch.no_grad():
            net.train()(torch.zeros(64, 1, 8, 8))
        return sum(outputs)

    largest = real.largest_path()
    assert all(layer["op"] == "mbconv" and layer["expansion"] == 6 and layer["kernel"] == 5
               for stage in largest["stages"] for layer in stage["layers"])
    assert [stage["channels"] for stage in largest["stages"]] == [24, 32, 48]
    assert estimate["activation_bytes"] == 2 * 4 * activations(largest)
    assert activations(largest) > 2 * activations(real._first_path())


def test_a_transformer_counts_what_its_attention_computes_as_functions():
    import torch
    from torch import nn

    from raynas.trainables.families import build_model

    arch = {"patch_size": 2, "width": {"choice": [8, 16]}, "blocks": {"repeat": {"min": 1, "max": 2},
                                                                      "block": {"heads": {"choice": [1, 2]}}}}
    s = spec_from_dict({"name": "t", "model": "transformer", "data": {"source": "digits"}, "search": {"strategy": "one-shot"},
                        "space": {"arch": arch, "train": {"batch_size": 8}}})
    largest = build_supernet("transformer", arch, (1, 8, 8), 10).largest_path()
    leaves = []
    with torch.device("meta"):
        net = build_model("transformer", largest, (1, 8, 8), 10)
        hooks = [m.register_forward_hook(lambda m, i, o: leaves.append(o.numel()))
                 for m in net.modules() if not list(m.children())]
        net.train()(torch.zeros(8, 1, 8, 8))
    for h in hooks:
        h.remove()
    attention = sum(isinstance(m, nn.MultiheadAttention) for m in net.modules())
    # Each block's query, key, value, context and output: 5 x (batch 8, 16 patches + [CLS], width 16).
    assert attention == 2
    expected = 2 * 4 * (sum(leaves) + attention * 5 * 8 * 17 * 16)
    assert estimate_supernet_bytes(s, (1, 8, 8), 10)["activation_bytes"] == expected
