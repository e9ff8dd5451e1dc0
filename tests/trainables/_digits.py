"""Digits as tensors and the fast engine's loop around a network: what supernet tests train with."""

import torch


def digits_loop(net, lr: float, epochs: int):
    """``(loop, x_train)``: a FastLoop training ``net`` on digits (batch 64, seeded), validating
    on its validation split."""
    from raynas.trainables.data import load_dataset
    from raynas.trainables.hparams import TrainParams
    from raynas.trainables.module import FastLoop, FastModule, TensorBatches

    data = load_dataset("digits", val_fraction=0.2, seed=0)
    x, y = torch.as_tensor(data.x_train, dtype=torch.float32), torch.as_tensor(data.y_train, dtype=torch.long)
    xv, yv = torch.as_tensor(data.x_val, dtype=torch.float32), torch.as_tensor(data.y_val, dtype=torch.long)
    hp = TrainParams.from_config({"lr": lr, "batch_size": 64})
    batches = TensorBatches(x, y, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    loop = FastLoop(FastModule(net, hp, max_epochs=epochs, steps_per_epoch=len(batches)), batches,
                    TensorBatches(xv, yv, 1024, shuffle=False), torch.device("cpu"))
    return loop, x
