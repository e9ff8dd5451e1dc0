"""Weight-sharing supernets for one-shot NAS (single-path one-shot, Guo et al., 2020).

A supernet holds every candidate of each choice that can share weights, side by side, and
runs one architecture (a *path*) at a time. Trained with a new path drawn from the search space
for every batch, its weights serve every architecture of the space at once: an architecture
is then scored with the weights it inherits, after its batch-norm statistics are recomputed
for that path (:func:`recalibrate_bn`), instead of being trained on its own.

Families and what shares weights:

* ``cell`` (:mod:`raynas.trainables.cell`): the op of every edge (``arch.edges.*``,
  ``arch.reduction_edges.*``). Each edge holds one module per candidate op of its choice;
  everything else about the network (nodes, channels, stages, cells per stage, the kind of
  reduction, dropout) must be a constant of the space.
* ``mbconv`` (:mod:`raynas.trainables.supernet_mbconv`): each stage's number of layers (a
  prefix of the deepest), each layer's op (identity or mbconv), expansion (a slice of the
  hidden channels of the largest) and kernel (the centred slice of the largest depthwise
  kernel); stage channels and strides, stem and head are constants of the space.
* ``transformer`` (:mod:`raynas.trainables.supernet_transformer`): the width (the first
  features of the largest, in every tensor), the number of blocks (a prefix of the deepest),
  each block's heads (how the same sliced projections split into heads), MLP ratio (the first
  hidden units of the largest MLP) and dropout; patch size and pooling are constants.
* ``resnet`` (:mod:`raynas.trainables.supernet_resnet`): the stem's and each stage's channels
  (the first channels of the largest, in every conv, batch norm, shortcut projection and the
  head), each stage's number of blocks (a prefix of the deepest) and dropout; a stage's first
  block projects its shortcut exactly where the family's network of the path does; the
  number of stages, strides and the activation are constants.
* ``mlp`` (:mod:`raynas.trainables.supernet_mlp`): the depth (a prefix of the deepest), each
  hidden layer's width (the first units of the largest: its linear layer's outputs and batch
  norm, the next layer's inputs) and dropout; activation and batch norm are constants.
* ``cnn`` (:mod:`raynas.trainables.supernet_cnn`): each stage's channels (slices of the largest
  conv's outputs and of the next conv's or the head's inputs) and kernel (the centred slice of
  the largest) and the head's dropout; the list of stages, strides, pooling, batch norm,
  activation and head width are constants.

:func:`shared_choices` reads which keys of a space's ``arch`` may vary and refuses anything
else with a :class:`~raynas.errors.ConfigError` naming the key path, before anything trains.

The supernet is an ordinary ``nn.Module``. In training mode each forward pass first draws a
path with its ``sampler`` (a callable returning an arch dict), so any training loop that calls
``model(x)`` once per batch trains it as single-path one-shot prescribes; in eval mode it runs
the path last set with :meth:`CellSupernet.set_arch`.

Example:
    >>> space = {"edges": {"0-1": {"choice": ["skip", "conv3x3"]}, "0-2": "conv1x1", "1-2": "skip"},
    ...          "nodes": 3, "channels": 4, "stages": 1, "cells_per_stage": 1}
    >>> net = build_supernet("cell", space, (1, 8, 8), 10)
    >>> net.set_arch({"edges": {"0-1": "conv3x3", "0-2": "conv1x1", "1-2": "skip"}})
    >>> net.eval()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import json
import random
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from raynas.errors import ArchError, describe
from raynas.search.oneshot import SUPERNET_FAMILIES, shared_choices
from raynas.trainables.supernet_paths import ArchSteps, MixedOp, keep_at_most
from raynas.trainables.supernet_paths import PathSampling

__all__ = [
    "SUPERNET_FAMILIES",
    "MixedOp",
    "CellSupernet",
    "shared_choices",
    "build_supernet",
    "recalibrate_bn",
    "path_state",
    "supernet_family",
    "score_subnet",
    "ArchSteps",
    "DartsSupernet",
    "darts_family",
    "build_darts_supernet",
]

class CellSupernet(PathSampling, nn.Module):
    """Every candidate op of every edge of a ``cell`` network; one path runs at a time.

    Args:
        constants: The space's constant arch keys (``nodes``, ``channels``, ...).
        choices: :func:`shared_choices` of the space.
        input_shape, num_classes: As for a family.

    Attributes:
        sampler: Called before every forward pass in training mode for the path to run (an
            arch dict); ``None`` runs the path last set.
    """

    def __init__(self, constants: Mapping[str, Any], choices: Mapping[str, Mapping[str, list]],
                 input_shape: tuple, num_classes: int):
        super().__init__()
        from raynas.trainables.cell import OPS, CellNetwork, build_cell

        self.choices = {k: {e: list(v) for e, v in d.items()} for k, d in choices.items()}
        self._init_paths()
        self.mixed: dict[str, dict[str, MixedOp]] = {k: {} for k in self.choices}

        def hook(key: str):
            def make_edge(edge: str, cin: int, cout: int, stride: int) -> nn.Module:
                op = MixedOp({name: OPS[name](cin, cout, stride) for name in self.choices[key][edge]})
                self.mixed[key].setdefault(edge, [])
                self.mixed[key][edge].append(op)
                return op
            return make_edge

        # The family checks the constants and the sizes on a first path; the skeleton is the
        # family's own, built with edge hooks that return mixed ops in place of single ones.
        first = self._first_path(constants)
        build_cell(first, tuple(input_shape), num_classes)
        self.net = CellNetwork(
            tuple(input_shape)[0],
            num_classes,
            nodes=int(constants.get("nodes", 4)),
            channels=int(constants.get("channels", 16)),
            stages=int(constants.get("stages", 3)),
            cells_per_stage=int(constants.get("cells_per_stage", 2)),
            make_edge=hook("edges"),
            make_reduction_edge=hook("reduction_edges") if constants.get("reduction", "resblock") == "cell" else None,
            dropout=float(constants.get("dropout", 0.0)),
        )
        self.constants = dict(constants)
        self.set_arch(first)

    def _first_path(self, constants: Mapping[str, Any]) -> dict:
        arch = dict(constants)
        for key, edges in self.choices.items():
            arch[key] = {edge: ops[0] for edge, ops in edges.items()}
        return arch

    def set_arch(self, arch: Mapping[str, Any]) -> None:
        """Selects the path of ``arch`` (a full arch dict of the space).

        Raises:
            ArchError: An edge's op is not one of its candidates (the key path).
        """
        for key, edges in self.mixed.items():
            chosen = arch.get(key) if isinstance(arch, Mapping) else None
            if not isinstance(chosen, Mapping):
                raise ArchError(f"arch.{key}", f"the supernet needs the op of every edge, got {describe(chosen)}")
            for edge, ops in edges.items():
                name = chosen.get(edge)
                if name not in self.choices[key][edge]:
                    raise ArchError(
                        f"arch.{key}.{edge}",
                        f"{name!r} is not a candidate of this supernet's edge ({', '.join(self.choices[key][edge])})",
                    )
                for op in ops:
                    op.active = name

    def _draw(self, rng: random.Random) -> dict:
        """A path with every edge's op drawn from its candidates (:meth:`draw_uniform`)."""
        arch = dict(self.constants)
        for key, edges in self.choices.items():
            arch[key] = {edge: rng.choice(ops) for edge, ops in edges.items()}
        return arch

    def path(self) -> dict:
        """The arch dict of the active path."""
        arch = dict(self.constants)
        for key, edges in self.mixed.items():
            arch[key] = {edge: ops[0].active for edge, ops in edges.items()}
        return arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._follow_sampler()
        return self.net(x)


def build_supernet(family: str, arch_space: Mapping[str, Any], input_shape: tuple, num_classes: int) -> nn.Module:
    """The supernet of a space's ``arch`` for a family with one (:data:`SUPERNET_FAMILIES`).

    Raises:
        ConfigError: See :func:`shared_choices`.
        ArchError: The constants do not build for the data (e.g. too many reductions).
    """
    choices = shared_choices(family, arch_space)
    if family == "mbconv":
        from raynas.trainables.supernet_mbconv import MBConvSupernet

        return MBConvSupernet(arch_space, input_shape, num_classes)
    if family == "transformer":
        from raynas.trainables.supernet_transformer import TransformerSupernet

        return TransformerSupernet(arch_space, input_shape, num_classes)
    if family == "resnet":
        from raynas.trainables.supernet_resnet import ResNetSupernet

        return ResNetSupernet(arch_space, input_shape, num_classes)
    if family == "mlp":
        from raynas.trainables.supernet_mlp import MLPSupernet

        return MLPSupernet(arch_space, input_shape, num_classes)
    if family == "cnn":
        from raynas.trainables.supernet_cnn import CNNSupernet

        return CNNSupernet(arch_space, input_shape, num_classes)
    constants = {k: v for k, v in arch_space.items() if k not in choices}
    return CellSupernet(constants, choices, input_shape, num_classes)


def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Recomputes every batch norm's running statistics for the model's current path.

    The statistics a supernet collected in training mix every path it ran; a path scored with
    them is scored wrongly (SPOS recalibrates before each evaluation). The running mean and
    variance are reset and re-estimated as a cumulative average over ``batches`` in training
    mode, without gradients and without drawing new paths; the model is left in eval mode.

    Returns:
        The number of batches used: 0 for a model without batch norm (a transformer's layer
        norms keep no running statistics), which runs none of them.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        model.eval()
        return 0
    saved = [(m.momentum) for m in norms]
    sampler = getattr(model, "sampler", None)
    if sampler is not None:
        model.sampler = None
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    used = 0
    model.train()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
                used += 1
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        if sampler is not None:
            model.sampler = sampler
        model.eval()
    return used


def path_state(supernet: nn.Module, model: nn.Module) -> None:
    """Copies the active path's weights of ``supernet`` into ``model``, a stand-alone network
    of the same architecture built by the family (to fine-tune or export the subnet).

    Raises:
        RuntimeError: The two do not line up (another architecture or family).
    """
    if hasattr(supernet, "path_state_dict"):  # a supernet of sliced weights names its path's own
        model.load_state_dict(supernet.path_state_dict(), strict=True)
        return
    active = {name: m.active for name, m in supernet.net.named_modules() if isinstance(m, MixedOp)}
    mapped = {}
    for name, tensor in supernet.net.state_dict().items():
        prefix = next((p for p in active if name.startswith(p + ".candidates.")), None)
        if prefix is None:
            mapped[name] = tensor
            continue
        op, _, rest = name[len(prefix) + len(".candidates."):].partition(".")
        if op == active[prefix]:
            mapped[f"{prefix}.{rest}"] = tensor
    model.load_state_dict(mapped, strict=True)


# ----------------------------------------------------------------------------------------------
# One-shot search as trials: the supernet as a family, subnets scored as a trainable
# ----------------------------------------------------------------------------------------------


def supernet_family(arch: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    """The family of a one-shot search's supernet trial (:mod:`raynas.search.oneshot`).

    ``arch`` is ``{"family": name, "space": the space's arch as JSON, "seed": int}``. The
    supernet draws a uniform path before every training batch (:meth:`CellSupernet.draw_uniform`,
    seeded, resumed from its checkpoint), so the built-in trainable's loop trains it as
    single-path one-shot does. In eval mode it runs the last path drawn: the supernet trial's
    ``val_acc`` is that one path's accuracy with the shared batch-norm statistics, a progress
    signal rather than a score.
    """
    family, space = arch.get("family"), arch.get("space")
    if not isinstance(family, str) or not isinstance(space, str):
        raise ArchError("arch", f"a supernet trial needs arch.family and arch.space (JSON), got {describe(arch)}")
    net = build_supernet(family, json.loads(space), tuple(input_shape), num_classes)
    net.seed = int(arch.get("seed", 0))
    net.sampler = net.draw_uniform
    return net


#: The supernet a worker loaded last: (weights file, its modification time, shape) -> module.
_LOADED: dict = {}


def _load_supernet(params: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    from pathlib import Path

    from raynas.trainables.trainable import checkpoint_weights

    path = params["weights"]  # the supernet trial's checkpoint folder
    key = (path, os.stat(path).st_mtime_ns, tuple(input_shape), num_classes)
    net = _LOADED.get(key)
    if net is None:
        _LOADED.clear()  # one supernet per search: do not keep an older one
        net = build_supernet(params["family"], json.loads(params["space"]), tuple(input_shape), num_classes)
        net.load_state_dict(checkpoint_weights(Path(path))[0])
        _LOADED[key] = net
    return net


def score_subnet(config: dict, context) -> None:
    """The trainable of a one-shot search's subnet trials: one architecture scored with the
    weights it inherits from the supernet.

    Its batch norm is recalibrated on ``calibration_batches`` training batches (seeded by the
    trial), then it is evaluated on the validation split; it reports once, as epoch 1:
    ``val_acc``, ``val_loss``, and the stand-alone network's ``params``, ``flops`` and
    ``latency_ms``. An architecture over a budget (``constraints``) is rejected before it is
    scored, as in a standard search. ``context.params``: ``weights`` (the supernet trial's
    checkpoint folder), ``family``, ``space`` (JSON), ``calibration_batches``, ``batch_size``, ``constraints``,
    ``num_threads``, ``gpus`` (the trial's GPUs: it scores on the GPU then).
    """
    import time

    from ray import tune

    from raynas.trainables.families import build_model, count_flops, count_params, measure_latency_ms
    from raynas.trainables.module import TensorBatches
    from raynas.trainables.trainable import _device_tensors, over_budget, report_failure

    began = time.perf_counter()
    params, data = context.params, context.data
    threads = int(params.get("num_threads") or 1)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    shape, classes = tuple(data.input_shape), int(data.num_classes)
    arch = config.get("arch", {})
    if params.get("gpus") and not torch.cuda.is_available():
        # As the built-in trainable: a GPU trial on a torch that sees none says so.
        return report_failure(f"resources.gpus_per_trial is {params['gpus']:g} but torch {torch.__version__} on this "
                              "worker sees no CUDA device (install a CUDA build of torch, or set gpus_per_trial: 0)")
    device = torch.device("cuda" if params.get("gpus") else "cpu")
    try:
        standalone = build_model(params["build"], arch, shape, classes)
        net = _load_supernet(params, shape, classes).to(device)
        net.set_arch(arch)
    except (ArchError, ValueError, TypeError) as err:
        return report_failure(f"{type(err).__name__}: {err}")
    stats = {"params": count_params(standalone), "flops": count_flops(standalone, shape),
             "latency_ms": measure_latency_ms(standalone, shape)}
    rejected = over_budget(stats, params.get("constraints") or {})
    if rejected:
        return tune.report(rejected)
    x_train, y_train, x_val, y_val = _device_tensors(data, device)[:4]
    generator = torch.Generator().manual_seed(int(context.seed))
    batches = TensorBatches(x_train, y_train, int(params.get("batch_size", 64)), shuffle=True, generator=generator)
    wanted = int(params.get("calibration_batches", 10))
    recalibrate_bn(net, (x for i, (x, _) in zip(range(wanted), batches)))
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in TensorBatches(x_val, y_val, 1024, shuffle=False):
            out = net(x)
            loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            count += len(y)
    tune.report({"epoch": 1, "val_acc": correct / max(1, count), "val_loss": loss_sum / max(1, count),
                 "score_time_s": time.perf_counter() - began, **stats})


# ----------------------------------------------------------------------------------------------
# Gradient search (DARTS, first order)
# ----------------------------------------------------------------------------------------------


class DartsSupernet(ArchSteps, CellSupernet):
    """A cell supernet whose edges output the softmax-weighted sum of their candidates
    (:class:`ArchSteps`), one logit per candidate of each edge key, shared by every cell of
    that kind, as in DARTS.

    Args:
        arch_lr: Adam's learning rate for the architecture (DARTS: 3e-4; raynas's default for
            a gradient search is ``raynas.search.oneshot.ARCH_LR``), with betas
            (0.5, 0.999) and weight decay 1e-3 as in DARTS.
        max_skip: The derived cell keeps at most this many ``skip`` edges per cell kind; the
            others take their best op that is neither ``skip`` nor ``none`` (DARTS+'s guard
            against the collapse to parameter-free cells). None: no limit.
    """

    def __init__(self, constants, choices, input_shape, num_classes, *, arch_lr: float = 3e-3,
                 max_skip: int | None = 2):
        super().__init__(constants, choices, input_shape, num_classes)
        self.max_skip = max_skip
        self.alpha_names: list[tuple[str, str]] = [(k, e) for k, edges in self.choices.items() for e in edges]
        self._init_arch([self.mixed[k][e] for k, e in self.alpha_names], arch_lr)

    def derive(self, max_skip: int | None = "default") -> tuple[dict, int]:
        """The discrete cell: each edge's strongest op other than ``none`` (as DARTS derives),
        with at most ``max_skip`` ``skip`` edges per cell kind; and how many edges chose skip
        before that limit (the collapse it guards against)."""
        limit = self.max_skip if max_skip == "default" else max_skip
        arch = dict(self.constants)
        raw_skips = 0
        for key, edges in self.choices.items():
            picks, weights = {}, {}
            for (k, edge), alpha in zip(self.alpha_names, self.alphas()):
                if k != key:
                    continue
                ops = self.choices[key][edge]
                order = sorted(range(len(ops)), key=lambda i: -float(alpha[i]))
                picks[edge] = [ops[i] for i in order if ops[i] != "none"] or ["none"]
                weights[edge] = float(torch.softmax(alpha, 0)[ops.index(picks[edge][0])])
            chosen, skips = keep_at_most(picks, weights, ("skip",), limit)
            raw_skips += skips
            arch[key] = {edge: chosen[edge] for edge in edges}
        return arch, raw_skips

    def epoch_metrics(self) -> dict:
        """Reported with each epoch: the cell derived so far (JSON) and its skip edges."""
        arch, raw_skips = self.derive()
        return {"derived_arch": json.dumps(arch, sort_keys=True), "skip_edges": raw_skips,
                "skip_edges_kept": sum(op == "skip" for k in self.choices for op in arch[k].values())}


def darts_family(arch: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    """The family of a gradient search's supernet trial: ``arch`` as for :func:`supernet_family`
    plus ``arch_lr`` and ``max_skip``."""
    family, space = arch.get("family"), arch.get("space")
    if not isinstance(family, str) or not isinstance(space, str):
        raise ArchError("arch", f"a gradient search's supernet needs arch.family and arch.space (JSON), got {describe(arch)}")
    net = build_darts_supernet(family, json.loads(space), tuple(input_shape), num_classes,
                               arch_lr=float(arch.get("arch_lr", 3e-3)), max_skip=arch.get("max_skip", 2))
    net.seed = int(arch.get("seed", 0))
    return net


def build_darts_supernet(family: str, arch_space: Mapping[str, Any], input_shape: tuple, num_classes: int, *,
                         arch_lr: float = 3e-3, max_skip: int | None = 2) -> nn.Module:
    """The gradient search's supernet of a space's ``arch`` (a family of
    :data:`~raynas.search.oneshot.GRADIENT_FAMILIES`): :class:`DartsSupernet` for ``cell``,
    :class:`~raynas.trainables.darts_mbconv.DartsMBConvSupernet` for ``mbconv``."""
    if family == "mbconv":
        from raynas.trainables.darts_mbconv import DartsMBConvSupernet

        return DartsMBConvSupernet(arch_space, input_shape, num_classes, arch_lr=arch_lr, max_skip=max_skip)
    choices = shared_choices(family, arch_space)
    constants = {k: v for k, v in arch_space.items() if k not in choices}
    return DartsSupernet(constants, choices, input_shape, num_classes, arch_lr=arch_lr, max_skip=max_skip)
