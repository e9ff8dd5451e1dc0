"""Warms a Ray worker process for raynas's built-in training before it takes a trial.

A local Ray that raynas starts imports this module in each Python worker as the worker
starts (Ray's ``preload_python_modules``), so the imports a trial would otherwise pay
before its first epoch (torch, Tune's function trainable, raynas's training code, and
``torch._dynamo``, which torch's ``Optimizer.step`` imports on first use) happen while the
driver is still importing Tune and building the Tuner. Together with trial actors that take
the workers Ray prestarts (see ``raynas._tune.workers.trial_actors_on_prestarted_workers``), this
takes seconds off the time to the first epoch.

It only imports and takes one optimizer step on a CPU tensor; it never touches CUDA (a GPU
trial's worker learns its ``CUDA_VISIBLE_DEVICES`` only when Ray assigns it the trial).
Anything that fails here is left for the trial itself to report.
"""

from __future__ import annotations

import threading


def warm() -> None:
    # In the order a trial needs them: Tune's function trainable and raynas's entry point to
    # create the trial's actor, then torch and the training code for its first epoch.
    from ray.tune.trainable import function_trainable  # noqa: F401

    from raynas.trainables import trainable  # noqa: F401

    import torch

    from raynas.trainables import families, hparams, module  # noqa: F401

    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=1e-3)
    (weight * 2).sum().backward()
    optimizer.step()  # the first step imports torch._dynamo


def _warm_quietly() -> None:
    try:
        warm()
    except Exception:  # noqa: BLE001 - a warm-up must never stop a worker from working
        pass


# In the background: Ray counts a worker as starting until its preloads return, and starts
# other processes for actors that arrive meanwhile. A trial that imports torch while this
# thread still does waits for that import (Python's per-module import lock), no longer.
threading.Thread(target=_warm_quietly, name="raynas-warm", daemon=True).start()
