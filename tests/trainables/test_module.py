"""The LightningModule and the fast loop that drives its hooks (no Ray)."""

import math

import numpy as np
import pytest
import torch

from raynas.trainables.data import load_dataset
from raynas.trainables.families import build_model
from raynas.trainables.hparams import TrainParams
from raynas.trainables.module import ClassificationModule, FastLoop, TensorBatches, lr_factor


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits", seed=0)
    t = lambda a, dt: torch.as_tensor(np.array(a), dtype=dt)  # noqa: E731
    return t(d.x_train, torch.float32), t(d.y_train, torch.long), t(d.x_val, torch.float32), t(d.y_val, torch.long)


def make_loop(digits, train=None, precision="32", seed=0, epochs=5):
    torch.manual_seed(seed)
    x, y, xv, yv = digits
    net = build_model("mlp", {"depth": 1, "width": 64}, (1, 8, 8), 10)
    hp = TrainParams.from_config(train or {"lr": 0.01, "batch_size": 64})
    gen = torch.Generator().manual_seed(seed)
    batches = TensorBatches(x, y, hp.batch_size, shuffle=True, generator=gen)
    module = ClassificationModule(net, hp, max_epochs=epochs, steps_per_epoch=len(batches))
    return FastLoop(module, batches, TensorBatches(xv, yv, 1024, shuffle=False), torch.device("cpu"), precision), gen


def test_fast_loop_learns_digits(digits):
    loop, _ = make_loop(digits)
    losses = [loop.train_epoch() for _ in range(5)]
    val_loss, val_acc = loop.validate()
    assert losses[-1] < losses[0] and val_acc > 0.93 and math.isfinite(val_loss)


def test_bf16_mixed_precision_on_cpu(digits):
    loop, _ = make_loop(digits, precision="bf16-mixed")
    loss = loop.train_epoch()
    _, acc = loop.validate()
    assert math.isfinite(loss) and acc > 0.5


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_every_optimizer_trains(digits, optimizer):
    loop, _ = make_loop(digits, {"lr": 0.01 if optimizer != "sgd" else 0.1, "optimizer": optimizer, "momentum": 0.9})
    first = loop.train_epoch()
    assert loop.train_epoch() < first


def test_resuming_from_state_continues_exactly(digits):
    # 3 epochs straight == 2 epochs, a checkpoint of the loop and its data order, 1 more epoch.
    train = {"lr": 0.01, "batch_size": 64, "lr_schedule": "cosine", "warmup_epochs": 1}
    straight, _ = make_loop(digits, train, epochs=3)
    for _ in range(3):
        straight.train_epoch()
    first, gen = make_loop(digits, train, epochs=3)
    first.train_epoch(), first.train_epoch()
    state = {"loop": first.state_dict(), "generator": gen.get_state()}
    resumed, gen2 = make_loop(digits, train, seed=123, epochs=3)  # other init: the state must win
    resumed.load_state_dict(state["loop"])
    gen2.set_state(state["generator"])
    resumed.train_epoch()
    for a, b in zip(straight.module.state_dict().values(), resumed.module.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.lr == resumed.lr


def test_lr_schedules():
    hp = lambda **kw: TrainParams(lr=1.0, **kw)  # noqa: E731
    assert lr_factor(hp(), 50, 100, 10) == 1.0
    cos = [lr_factor(hp(lr_schedule="cosine"), s, 100, 10) for s in (0, 50, 100)]
    assert cos[0] == pytest.approx(1.0) and cos[1] == pytest.approx(0.5) and cos[2] == pytest.approx(0.0)
    step = [lr_factor(hp(lr_schedule="step"), s, 100, 10) for s in (10, 60, 80)]
    assert step == pytest.approx([1.0, 0.1, 0.01])
    warm = [lr_factor(hp(warmup_epochs=1), s, 100, 10) for s in (0, 4, 9, 10)]
    assert warm == pytest.approx([0.1, 0.5, 1.0, 1.0])
    one = [lr_factor(hp(lr_schedule="onecycle"), s, 100, 10) for s in (0, 30, 100)]
    assert one[0] == pytest.approx(0.04) and one[1] == pytest.approx(1.0) and one[2] == pytest.approx(1e-4)


def test_bad_hyperparameters_are_trial_errors():
    with pytest.raises(ValueError, match=r"train\.lr: must be > 0"):
        TrainParams.from_config({"lr": 0})
    with pytest.raises(ValueError, match=r"train\.optimizer: expected one of"):
        TrainParams.from_config({"optimizer": "adagrad"})
    with pytest.raises(ValueError, match=r"train\.betas: unknown training hyperparameter"):
        TrainParams.from_config({"betas": [0.9, 0.99]})


def test_the_module_trains_under_a_lightning_trainer(digits):
    import pytorch_lightning as pl

    x, y, xv, yv = digits
    net = build_model("mlp", {"depth": 1, "width": 32}, (1, 8, 8), 10)
    module = ClassificationModule(net, {"lr": 0.01}, max_epochs=2)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, TensorBatches(x, y, 64, shuffle=True), TensorBatches(xv, yv, 1024, shuffle=False))
    assert trainer.callback_metrics["val_acc"] > 0.8


def test_the_fast_engine_never_imports_lightning():
    """A worker that trains with the fast engine skips Lightning's import (seconds per worker)."""
    import subprocess
    import sys

    code = """
import sys, torch
import raynas.trainables.trainable
from raynas.trainables.families import build_model, count_flops
from raynas.trainables.module import FastLoop, FastModule, TensorBatches
x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
net = build_model("mlp", {"depth": 1, "width": 8}, (8,), 3)
count_flops(net, (8,))
module = FastModule(net, {"lr": 0.01, "lr_schedule": "cosine"}, max_epochs=2, steps_per_epoch=4)
loop = FastLoop(module, TensorBatches(x, y, 16, shuffle=True), TensorBatches(x, y, 64, shuffle=False), torch.device("cpu"))
loop.train_epoch(); loop.validate(); loop.load_state_dict(loop.state_dict())
assert "pytorch_lightning" not in sys.modules and "lightning" not in sys.modules, "Lightning was imported"
from raynas.trainables.module import ClassificationModule  # built on first use
assert "pytorch_lightning" in sys.modules and ClassificationModule.__name__ == "ClassificationModule"
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
