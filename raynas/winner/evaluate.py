"""A model's score on the experiment's held-out data, and fine-tuning it on the train split.

The data is the experiment's own, loaded again from its ``experiment.yaml`` with the same
seed, so the splits are the ones the search and the retrain used.
"""

from __future__ import annotations

import logging

import numpy as np


log = logging.getLogger("raynas")


def held_out(dataset) -> tuple[np.ndarray, np.ndarray, str]:
    """The test split, or (said once, loudly) the validation split where there is none."""
    if dataset.has_test:
        return dataset.x_test, dataset.y_test, "test"
    log.warning("raynas: warning: the experiment holds out no test split (data.test_fraction is 0), so accuracies "
                "are on the validation split that chose the architecture: they are optimistic")
    return dataset.x_val, dataset.y_val, "val"


def accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> float:
    """Share of ``x`` that ``model`` (eval mode, CPU) classifies as ``y``."""
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(torch.as_tensor(x[start:start + batch_size]))
            correct += int((logits.argmax(dim=1).numpy() == y[start:start + batch_size]).sum())
    return correct / max(1, len(x))


def finetune(net, dataset, train: dict | None, epochs: int, seed: int = 0, keep_zeros: bool = False) -> list[float]:
    """Trains ``net`` in place for ``epochs`` more epochs on the train split with the trial's
    hyperparameters (a fresh schedule over those epochs); returns each epoch's loss.

    ``keep_zeros``: weights of conv and linear layers that are zero stay zero (after magnitude
    pruning), through torch's pruning masks while training, made permanent after.
    """
    import torch
    from torch.nn.utils import prune

    from raynas.trainables.hparams import TrainParams
    from raynas.trainables.module import FastLoop, FastModule, TensorBatches

    torch.manual_seed(seed)
    hp = TrainParams.from_config(train)
    x, y = torch.as_tensor(dataset.x_train), torch.as_tensor(dataset.y_train)
    batches = TensorBatches(x, y, hp.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    val = TensorBatches(torch.as_tensor(dataset.x_val), torch.as_tensor(dataset.y_val), 1024, shuffle=False)
    masked = []
    if keep_zeros:
        for layer in net.modules():
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)) and bool((layer.weight == 0).any()):
                prune.custom_from_mask(layer, "weight", mask=layer.weight != 0)
                masked.append(layer)
    module = FastModule(net, hp, max_epochs=epochs, steps_per_epoch=len(batches))
    loop = FastLoop(module, batches, val, torch.device("cpu"))
    losses = [loop.train_epoch() for _ in range(epochs)]
    for layer in masked:
        prune.remove(layer, "weight")
    net.eval()
    return losses
