"""Whether a one-shot or gradient search's supernet fits in memory, checked before Ray starts.

A supernet holds every candidate op of every choice at once, so a space that trains fine one
architecture at a time can have a supernet far larger than a trial's memory; the supernet
trial would then die (killed by the OS, or a CUDA out-of-memory error) after Ray and the data
have been set up. The supernet is built on PyTorch's ``meta`` device (shapes only, no memory)
and one training batch is traced through it to estimate what training needs:

* 16 bytes per parameter: the weights, their gradients and Adam's two moments;
* twice the activations of a batch (kept for the backward pass, and their gradients), at 4
  bytes a value (2 under mixed precision). Single-path one-shot runs one candidate per choice
  at a time, so each choice counts its largest candidate; a gradient search runs them all. For
  a one-shot mbconv, transformer or resnet supernet (sliced weights) the family's network of its
  largest path is traced; a gradient search's mbconv supernet holds its candidates side by
  side, as a cell's does.

The estimate is compared with this machine's memory (CPU trials) or the memory of the GPU share
a trial gets (GPU trials, where this machine sees a GPU). It is a lower bound of what the
trial needs (the framework, the data and the allocator come on top), so a refused supernet does
not fit; one that passes may still not.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from raynas.errors import ArchError, ConfigError

__all__ = ["estimate_supernet_bytes", "check_supernet_memory"]

#: Weights, gradients and Adam's first and second moments.
BYTES_PER_PARAM = 16


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def estimate_supernet_bytes(spec, input_shape: tuple, num_classes: int, train_size: int | None = None) -> dict[str, Any]:
    """The parts of the supernet's training memory (see the module's docstring); a batch is
    at most ``train_size`` rows (the training split's).

    Returns:
        ``{"params": count, "param_bytes", "activation_bytes", "total_bytes", "batch_size"}``.
    """
    from raynas.trainables.supernet import MixedOp, build_darts_supernet, build_supernet

    space = spec.raw["space"]
    batch = int((space.get("train") or {}).get("batch_size", 64))
    if train_size:
        batch = max(1, min(batch, int(train_size)))
    workers = spec.resources.workers_per_trial
    batch = -(-batch // workers)  # data-parallel: each worker runs its share of a batch
    half = str(spec.trainer.precision).startswith(("16", "bf16"))
    with torch.device("meta"):
        build = build_darts_supernet if spec.search.strategy == "gradient" else build_supernet
        net = build(spec.model, space["arch"], tuple(input_shape), num_classes)
        net.sampler = None
        traced = net
        if hasattr(net, "largest_path"):
            # A supernet of sliced weights (mbconv, transformer, mlp, cnn) has no candidates side by side, and runs its
            # slices functionally: its largest path (the largest candidate of every choice at
            # once) computes what the family's network of that arch computes, so trace that.
            from raynas.trainables.families import build_model

            traced = build_model(spec.model, net.largest_path(), tuple(input_shape), num_classes)
        params = sum(p.numel() for p in net.parameters())
        # Which candidate of which choice each leaf module belongs to.
        owner: dict[nn.Module, tuple[int, str]] = {}
        mixed = [m for m in net.modules() if isinstance(m, MixedOp)]
        for i, op in enumerate(mixed):
            op.weights = torch.ones(len(op.candidates))  # run every candidate once, to measure each
            for name, candidate in op.candidates.items():
                for leaf in candidate.modules():
                    owner[leaf] = (i, name)
        shared = 0
        per_candidate: dict[tuple[int, str], int] = {}

        def count(module, inputs, output) -> None:
            nonlocal shared
            if isinstance(module, nn.MultiheadAttention) and inputs:
                # Its projections run as functions the leaf hooks do not see: the query, key,
                # value, the heads' context and the output (the score matrix, which fused
                # kernels need not keep, is left out of this lower bound).
                shared += 5 * inputs[0].numel()
                return
            if list(module.children()) or not isinstance(output, torch.Tensor):
                return
            key = owner.get(module)
            if key is None:
                shared += output.numel()
            else:
                per_candidate[key] = per_candidate.get(key, 0) + output.numel()

        hooks = [m.register_forward_hook(count) for m in traced.modules()]
        try:
            traced.train()
            traced(torch.zeros((batch, *input_shape)))
        finally:
            for h in hooks:
                h.remove()
    if spec.search.strategy == "gradient":
        chosen = sum(per_candidate.values())
    else:
        largest: dict[int, int] = {}
        for (i, _), n in per_candidate.items():
            largest[i] = max(largest.get(i, 0), n)
        chosen = sum(largest.values())
    activation_bytes = 2 * (shared + chosen) * (2 if half else 4)
    param_bytes = BYTES_PER_PARAM * params
    return {"params": params, "param_bytes": param_bytes, "activation_bytes": activation_bytes,
            "total_bytes": param_bytes + activation_bytes, "batch_size": batch}


def _available(spec) -> tuple[float, str] | None:
    """The memory a supernet trial can use, and what it is; None where it cannot be known here."""
    gpus = spec.resources.gpus_per_trial
    if gpus:
        if not torch.cuda.is_available():
            return None  # the trial runs on a worker's GPU this machine cannot see
        total = torch.cuda.get_device_properties(0).total_memory
        return total * min(1.0, gpus), f"{gpus:g} of this machine's GPU ({_human(total)})"
    total = _machine_memory()
    if total is None:
        return None
    workers = spec.resources.workers_per_trial
    if workers > 1:  # a local Ray's workers all live here
        return total / workers, f"a worker's share of this machine's memory ({_human(total)} / {workers} workers)"
    return total, f"this machine's memory ({_human(total)})"


def _machine_memory() -> int | None:
    """Physical memory, or the container's limit where that is lower (cgroup v2)."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def check_supernet_memory(spec, input_shape: tuple, num_classes: int, train_size: int | None = None) -> str | None:
    """Refuses a supernet whose estimated training memory exceeds what a trial can have.

    Returns:
        A note when the check cannot apply (a GPU this machine does not see), else None.

    Raises:
        ConfigError: The estimate exceeds the memory; it names the key to lower:
            ``space.train.batch_size`` when the activations dominate, else ``space.arch``
            (``space.arch.channels`` where the space sets it).
    """
    try:
        estimate = estimate_supernet_bytes(spec, input_shape, num_classes, train_size)
    except ArchError:
        return None  # the space does not build for the data: the architecture check says how
    available = _available(spec)
    if available is None:
        return (f"{spec.search.strategy} search: the supernet's memory (estimated {_human(estimate['total_bytes'])}) "
                "was not checked against the trial's memory, which this machine cannot see")
    limit, what = available
    if estimate["total_bytes"] <= limit:
        return None
    arch = spec.raw["space"]["arch"]
    if estimate["activation_bytes"] > estimate["param_bytes"]:
        key = "space.train.batch_size"
        fix = f"lower the batch size ({estimate['batch_size']})"
    else:
        key = "space.arch.channels" if isinstance(arch, dict) and "channels" in arch else "space.arch"
        fix = "make the network narrower or shallower, or offer fewer candidates per choice"
    raise ConfigError(
        key,
        f"the {spec.search.strategy} search's supernet does not fit: training it needs about "
        f"{_human(estimate['total_bytes'])}{' per worker' if spec.resources.workers_per_trial > 1 else ''} "
        f"({estimate['params']:,} parameters at {BYTES_PER_PARAM} bytes each "
        f"= {_human(estimate['param_bytes'])}, and {_human(estimate['activation_bytes'])} of activations for a "
        f"batch of {estimate['batch_size']}), more than {what}; {fix}",
        spec.source_file,
    )
