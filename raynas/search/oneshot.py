"""``search.strategy: one-shot``: single-path one-shot NAS (Guo et al., 2020) as Ray Tune trials.

A one-shot search runs in two stages, each an ordinary raynas search in the experiment's folder
(so each resumes after a crash, shows in the progress table, Ray's dashboard and the report):

1. **The supernet** (``<experiment>/supernet/``): one trial trains a weight-sharing supernet of
   the space's ``arch`` (:mod:`raynas.trainables.supernet`) for ``one_shot.supernet_epochs``
   epochs, one path drawn uniformly from the space for every batch, with the experiment's
   ``space.train`` recipe, engine, precision and resources. Its weights then go to
   ``<experiment>/supernet.pt``.
2. **The subnets** (the experiment itself): the searcher (``evolution`` unless named)
   proposes ``num_trials`` architectures; each trial scores one with the weights it inherits
   (:func:`raynas.trainables.supernet.score_subnet`: batch norm recalibrated on
   ``one_shot.calibration_batches`` training batches, then the validation split), in one step,
   in parallel across the cluster. Budgets (``constraints``) reject architectures before they
   are scored, as in a standard search.

``raynas analyze`` ranks the subnets by their one-shot scores; ``raynas retrain`` then trains
the best of them from scratch as ordinary trials (the third stage of SPOS).

Example (experiment file)::

    model: cell
    space:
      arch: {edges: {0-1: {choice: [none, skip, conv1x1, conv3x3, avgpool3x3]}, ...},
             channels: 16, stages: 2, cells_per_stage: 1}
      train: {lr: 0.003, batch_size: 64, optimizer: adam}
    search: {strategy: one-shot, num_trials: 200, one_shot: {supernet_epochs: 30}}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raynas.errors import ConfigError, describe, did_you_mean
from raynas.experiment import SUPERNET_DIR, SUPERNET_STRATEGIES

__all__ = ["STRATEGIES", "SUPERNET_STRATEGIES", "SUPERNET_FAMILIES", "GRADIENT_FAMILIES", "SUPERNET_DIR",
           "CALIBRATION_BATCHES", "ARCH_LR", "MBCONV_CONSTANTS", "MBCONV_LAYER_DEFAULTS", "STAND_IN", "MBConvSlot",
           "MBConvStage", "mbconv_layout", "TRANSFORMER_CONSTANTS", "TRANSFORMER_DEFAULTS",
           "TRANSFORMER_BLOCK_DEFAULTS", "TransformerSlot", "TransformerLayout", "transformer_layout", "MLP_DEFAULTS",
           "MLP_CONSTANTS", "MLPSlot", "MLPLayout", "mlp_layout", "CNN_CONSTANTS", "CNN_STAGE_CONSTANTS", "CNNStage",
           "CNNLayout", "cnn_layout", "RESNET_DEFAULTS", "RESNET_STAGE_DEFAULTS", "ResNetStage", "ResNetLayout",
           "resnet_layout", "shared_choices", "check_one_shot", "check_gradient_mbconv", "gradient_candidates",
           "check_workers", "SUPERNET_MODEL"]

STRATEGIES = ("standalone", "one-shot", "gradient")
#: The family of a one-shot search's supernet stage (:func:`raynas.search.stages.supernet_spec`).
SUPERNET_MODEL = "raynas.trainables.supernet:supernet_family"
#: Ray's switch between Ray Train's APIs; data-parallel trials need V2 (its default).
TRAIN_V2_ENV = "RAY_TRAIN_V2_ENABLED"
#: Training batches that recalibrate batch norm before a subnet is scored.
CALIBRATION_BATCHES = 10
#: Adam's learning rate for DARTS's architecture weights. DARTS's 3e-4 suits its ~20,000 steps
#: on CIFAR-10; in 30 epochs on digits (270 steps) it moved the strongest op's weight from 0.20
#: to 0.21, and 3e-3 to 0.25-0.36 (docs/oneshot.md).
ARCH_LR = 3e-3


#: Families with a supernet, and the arch keys whose values can share weights (for ``mbconv``:
#: per stage the number of layers and per layer the op, expansion and kernel, see
#: :func:`mbconv_layout`; for ``transformer``: the width, the number of blocks and per block the
#: heads, MLP ratio and dropout, see :func:`transformer_layout`; for ``mlp``: the depth, the widths
#: and dropout, see :func:`mlp_layout`; for ``cnn``: each stage's channels and kernel and the
#: head's dropout, see :func:`cnn_layout`; for ``resnet``: the stem's and each stage's channels,
#: each stage's blocks and dropout, see :func:`resnet_layout`).
SUPERNET_FAMILIES: dict[str, tuple[str, ...]] = {"cell": ("edges", "reduction_edges"), "mbconv": ("stages",),
                                                  "transformer": ("width", "dropout", "blocks"),
                                                  "mlp": ("depth", "width", "layers", "dropout"),
                                                  "cnn": ("stages", "dropout"),
                                                  "resnet": ("stem_channels", "stages", "dropout")}
#: Families a gradient (DARTS) search can relax: its softmax mixes ops of one shape, edge by edge
#: (cell) or layer by layer (mbconv, see :func:`check_gradient_mbconv`).
GRADIENT_FAMILIES = ("cell", "mbconv")

#: Keys of a space entry that make it a searched domain rather than a constant.
_DOMAIN_KEYS = ("choice", "int", "float", "repeat", "grid", "when")


def _is_domain(value: Any) -> bool:
    return isinstance(value, Mapping) and any(k in value for k in _DOMAIN_KEYS)


def shared_choices(family: str, arch_space: Mapping[str, Any], *, where: str = "space.arch") -> dict:
    """The candidates of every weight-sharing choice of a space's ``arch``, checked.

    Returns ``{key: {sub_key: [candidates]}}`` for the family's sharing keys (for ``cell``:
    ``{"edges": {"0-1": [ops]}, ...}``; for ``mbconv``: ``{"stages": {"0.channels": [widths],
    "0.layers": [depths], "0.layers.1.kernel": [kernels], ...}}``, see :func:`mbconv_layout`; for
    ``transformer``: ``{"width": {"width": [widths]}, "blocks": {"blocks": [depths],
    "blocks.0.heads": [heads], ...}, "dropout": {...}}``, see :func:`transformer_layout`; for
    ``resnet``: ``{"stem_channels": {...}, "stages": {"stages.0.channels": [widths],
    "stages.0.blocks": [depths], ...}, "dropout": {...}}``, see :func:`resnet_layout`);
    a constant counts as a one-candidate choice.

    Raises:
        ConfigError: The family has no supernet, or a key that cannot share weights is searched,
            or a sharing key is searched in a way a supernet cannot hold (a condition, a range).

    Example:
        >>> shared_choices("cell", {"edges": {"0-1": {"choice": ["none", "skip"]}, "0-2": "skip",
        ...                                   "1-2": "skip"}, "nodes": 3})
        {'edges': {'0-1': ['none', 'skip'], '0-2': ['skip'], '1-2': ['skip']}}
    """
    if family not in SUPERNET_FAMILIES:
        raise ConfigError(
            "model",
            f"one-shot search needs a family whose choices can share weights "
            f"({', '.join(SUPERNET_FAMILIES)}); {family!r} has no supernet",
        )
    if not isinstance(arch_space, Mapping):
        raise ConfigError(where, f"one-shot search needs a mapping of the family's keys, got {describe(arch_space)}")
    if family == "mbconv":
        _, stages = mbconv_layout(arch_space, where=where)
        return {"stages": {key: list(values) for i, stage in enumerate(stages)
                           for key, values in stage.choices(i).items()}}
    layouts = {"transformer": transformer_layout, "mlp": mlp_layout, "cnn": cnn_layout, "resnet": resnet_layout}
    if family in layouts:
        choices = layouts[family](arch_space, where=where).choices()
        grouped = {key: {path: list(values) for path, values in choices.items() if path.split(".")[0] == key}
                   for key in SUPERNET_FAMILIES[family]}
        return {key: values for key, values in grouped.items() if values}
    sharing = SUPERNET_FAMILIES[family]
    out: dict[str, dict[str, list]] = {}
    for key, value in arch_space.items():
        path = f"{where}.{key}"
        if key not in sharing:
            if _is_domain(value) or isinstance(value, (Mapping, list)):
                raise ConfigError(
                    path,
                    f"is searched, but in a {family} supernet only {', '.join(f'arch.{k}' for k in sharing)} "
                    f"share weights; make it a constant (one supernet per value), got {describe(value)}",
                )
            continue
        if not isinstance(value, Mapping) or _is_domain(value):
            raise ConfigError(path, f"must map each edge to a choice of ops, got {describe(value)}")
        out[key] = {}
        for sub, domain in value.items():
            sub_path = f"{path}.{sub}"
            if isinstance(domain, str):
                out[key][str(sub)] = [domain]
            elif isinstance(domain, Mapping) and set(domain) == {"choice"} and isinstance(domain["choice"], list) \
                    and domain["choice"] and all(isinstance(o, str) for o in domain["choice"]):
                out[key][str(sub)] = list(dict.fromkeys(domain["choice"]))
            else:
                raise ConfigError(
                    sub_path,
                    f"a supernet holds one module per op, so this must be an op name or "
                    f"{{choice: [op, ...]}} without conditions, got {describe(domain)}",
                )
    return out


# ----------------------------------------------------------------------------------------------
# The mbconv supernet's space: what it holds, checked (no torch here: the spec checks it)
# ----------------------------------------------------------------------------------------------

#: mbconv's arch keys that must be constants of a one-shot space, and their defaults.
MBCONV_CONSTANTS = {"stem_channels": 16, "activation": "relu6", "dropout": 0.0, "head_channels": 0}
#: A layer's defaults in build_mbconv.
MBCONV_LAYER_DEFAULTS = {"op": "mbconv", "expansion": 6, "kernel": 3}
#: build_mbconv's stand-in for a stage's first layer that is identity but changes the shape:
#: (expansion, kernel) of the MBConv it runs instead.
STAND_IN = (1, 3)


@dataclass(frozen=True)
class MBConvSlot:
    """One layer position of an mbconv supernet stage and the candidates it may take.

    ``expansions`` and ``kernels`` are those of an ``mbconv`` layer (the defaults, 6 and 3,
    where the space leaves them out or its ``when`` excludes ``mbconv``).
    """

    ops: tuple[str, ...]
    expansions: tuple[int, ...]
    kernels: tuple[int, ...]


@dataclass(frozen=True)
class MBConvStage:
    """One stage of an mbconv supernet: its channels among ``channels`` (slices of the largest),
    a constant stride, a depth among ``depths`` (a path with n layers runs the first n of
    ``slots``)."""

    channels: tuple[int, ...]
    stride: int
    depths: tuple[int, ...]
    slots: tuple[MBConvSlot, ...]

    def choices(self, index: int) -> dict[str, tuple]:
        """The stage's candidates as flat key paths under ``arch.stages`` (``0.layers`` is the
        number of layers; ``0.layers.1.kernel`` a layer's kernels)."""
        out: dict[str, tuple] = {f"{index}.channels": self.channels, f"{index}.layers": self.depths}
        for j, slot in enumerate(self.slots):
            out[f"{index}.layers.{j}.op"] = slot.ops
            if "mbconv" in slot.ops:
                out[f"{index}.layers.{j}.expansion"] = slot.expansions
                out[f"{index}.layers.{j}.kernel"] = slot.kernels
        return out


def _unwrap(value: Any) -> Any:
    """``{value: X}`` (the DSL's explicit constant) is ``X``."""
    return value["value"] if isinstance(value, Mapping) and set(value) == {"value"} else value


def _mapping_section(value: Any, path: str, what: str, keys: list[str] | tuple[str, ...]) -> Mapping:
    """``value`` (unwrapped) checked to be a constant mapping of ``keys`` only: a stage, layer or
    block of a supernet's space. ``what`` opens the message when it is not a mapping."""
    value = _unwrap(value)
    if not isinstance(value, Mapping) or any(k in value for k in _DOMAIN_KEYS):
        raise ConfigError(path, f"{what}, got {describe(value)}")
    for key in value:
        if key not in keys:
            raise ConfigError(f"{path}.{key}", f"unknown key; allowed keys: {', '.join(keys)}"
                                               f"{did_you_mean(str(key), list(keys))}")
    return value


def _int_candidates(value: Any, path: str, what: str, *, odd: bool = False,
                    conditional: bool = False, minimum: int = 1) -> tuple[int, ...]:
    """A constant int or ``{choice: [ints]}`` (with ``when``, which the caller reads, if
    ``conditional``), each at least ``minimum``."""
    value = _unwrap(value)
    if isinstance(value, Mapping):
        allowed = {"choice", "when"} if conditional else {"choice"}
        if set(value) - allowed or not isinstance(value.get("choice"), list) or not value["choice"]:
            rule = "{choice: [ints]}" + ("" if conditional else " without conditions")
            raise ConfigError(path, f"a supernet holds {what} as slices of its largest, so this must be an int or "
                                    f"{rule}, got {describe(value)}")
        options = value["choice"]
    else:
        if isinstance(value, list):
            raise ConfigError(path, f"must be an int or {{choice: [ints]}}, got {describe(value)}")
        options = [value]
    for option in options:
        if isinstance(option, bool) or not isinstance(option, int) or option < minimum or (odd and option % 2 == 0):
            kind = ("odd " if odd else "") + ("positive ints" if minimum == 1 else f"ints >= {minimum}")
            why = " (a float is not a slice of the largest tensor)" if isinstance(option, float) else ""
            raise ConfigError(path, f"{what} must be {kind}, got {describe(option)}{why}")
    return tuple(dict.fromkeys(options))


def _layer_slot(value: Any, path: str) -> MBConvSlot:
    value = _mapping_section(value, path, "a layer of an mbconv supernet must be a mapping of op, expansion and "
                                          "kernel", list(MBCONV_LAYER_DEFAULTS))
    op = _unwrap(value.get("op", "mbconv"))
    if isinstance(op, Mapping):
        if set(op) != {"choice"} or not isinstance(op["choice"], list) or not op["choice"]:
            raise ConfigError(f"{path}.op", f"must be an op or {{choice: [identity, mbconv]}} without conditions, "
                                            f"got {describe(op)}")
        ops = op["choice"]
    else:
        ops = [op]
    for name in ops:
        if name not in ("identity", "mbconv"):
            raise ConfigError(f"{path}.op", "an mbconv supernet holds the ops identity and mbconv, got "
                                            f"{describe(name)}{did_you_mean(str(name), ['identity', 'mbconv'])}")
    found = {}
    for key, odd in (("expansion", False), ("kernel", True)):
        raw = _unwrap(value.get(key, MBCONV_LAYER_DEFAULTS[key]))
        applies = True
        if isinstance(raw, Mapping) and "when" in raw:
            when = raw["when"]
            if not isinstance(when, Mapping) or set(when) != {"op"}:
                raise ConfigError(f"{path}.{key}.when", f"an mbconv supernet takes conditions on the layer's op only, "
                                                        f"got {describe(when)}")
            wanted = when["op"] if isinstance(when["op"], list) else [when["op"]]
            applies = "mbconv" in wanted
        # Where the condition leaves the key out of an mbconv layer, build_mbconv's default holds.
        found[key] = (_int_candidates(raw, f"{path}.{key}", key + "s", odd=odd, conditional=True) if applies
                      else (MBCONV_LAYER_DEFAULTS[key],))
    return MBConvSlot(tuple(dict.fromkeys(ops)), found["expansion"], found["kernel"])


def _repeat_depths(value: Mapping, path: str, what: str) -> tuple[int, ...]:
    """The depths of ``{repeat: {min, max} or N, block}``: every count from min to max (a path
    with n runs the first n of the supernet's max)."""
    for key in value:
        if key not in ("repeat", "block"):
            raise ConfigError(f"{path}.{key}", f"{what} take {{repeat: {{min, max}}, block}} "
                                               f"without conditions, got the key {key!r}")
    count = value["repeat"]
    if isinstance(count, Mapping):
        low, high = count.get("min"), count.get("max")
    else:
        low = high = count
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (low, high)) or not 0 <= low <= high:
        raise ConfigError(f"{path}.repeat", f"needs {{min: N, max: M}} with 0 <= N <= M, got {describe(count)}")
    return tuple(range(low, high + 1))


def _stage(value: Any, path: str) -> MBConvStage:
    value = _mapping_section(value, path, "a stage of an mbconv supernet must be a mapping of channels, stride and "
                                          "layers (not a searched one)", ["channels", "stride", "layers"])
    if "channels" not in value:
        raise ConfigError(f"{path}.channels", "required key is missing")
    channels = _int_candidates(value["channels"], f"{path}.channels", "channels")
    stride = _unwrap(value.get("stride", 1))
    if isinstance(stride, (Mapping, bool)) or not isinstance(stride, int) or stride not in (1, 2):
        raise ConfigError(f"{path}.stride", "must be 1 or 2, a constant: a supernet stage has one stride, "
                                            f"got {describe(stride)}")
    layers = _unwrap(value.get("layers", [{"op": "mbconv"}]))
    if isinstance(layers, list):
        depths = (len(layers),)
        slots = tuple(_layer_slot(item, f"{path}.layers.{j}") for j, item in enumerate(layers))
    elif isinstance(layers, Mapping) and "repeat" in layers:
        lpath = f"{path}.layers"
        depths = _repeat_depths(layers, lpath, "a supernet stage's layers")
        # Depth is a prefix: the supernet holds max layers, each with the block's candidates.
        slot = _layer_slot(layers.get("block"), f"{lpath}.block")
        slots = (slot,) * max(depths)
    else:
        raise ConfigError(f"{path}.layers", "must be a list of layers or {repeat: {min, max}, block: {...}} "
                                            f"(depth as a prefix of the supernet's layers), got {describe(layers)}")
    return MBConvStage(channels, stride, depths, slots)


def _constant(value: Any, path: str, family: str, why: str, sharing: str) -> Any:
    """A key a supernet holds one value of: refused if searched, with what it changes."""
    value = _unwrap(value)
    if isinstance(value, (Mapping, list)):
        raise ConfigError(path, f"is searched, but {family} supernet shares weights across {sharing} only; "
                                f"{path.rsplit('.', 1)[1]} changes {why}, so make it a constant (one supernet per "
                                f"value), got {describe(value)}")
    return value


def _arch_constants(arch_space: Mapping[str, Any], where: str, allowed: list[str], whys: Mapping[str, str],
                    family: str, sharing: str) -> dict:
    """The constants of a space's ``arch`` (the keys of ``whys``: each refused if searched, with
    why), every key checked to be one of ``allowed``."""
    constants = {}
    for key, value in arch_space.items():
        path = f"{where}.{key}"
        if key not in allowed:
            raise ConfigError(path, f"unknown key; allowed keys: {', '.join(allowed)}{did_you_mean(str(key), allowed)}")
        if key in whys:
            constants[key] = _constant(value, path, family, whys[key], sharing)
    return constants


def _stage_list(arch_space: Mapping[str, Any], where: str, why: str) -> list:
    """The space's ``stages``: required, a non-empty constant list (``why`` says what a
    supernet holds, when it is not)."""
    if "stages" not in arch_space:
        raise ConfigError(f"{where}.stages", "required key is missing")
    stages = _unwrap(arch_space["stages"])
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{where}.stages", f"{why}; write the stages as a list, got {describe(stages)}")
    return stages


def mbconv_layout(arch_space: Mapping[str, Any], *, where: str = "space.arch") -> tuple[dict, tuple[MBConvStage, ...]]:
    """The constants and stages of an mbconv space's ``arch`` that a supernet can hold, checked.

    A one-shot mbconv space has constant ``stem_channels``, ``activation``, ``dropout`` and
    ``head_channels``, and a constant list of stages, each with ``channels`` (an int or a
    choice of ints: slices of the largest) and a constant ``stride``; a stage's ``layers`` are
    a list of layers or ``{repeat: {min, max}, block}`` (the depth, as a prefix of ``max``
    layers); a layer's ``op`` (identity, mbconv), ``expansion`` and ``kernel`` (odd) are
    constants or choices, ``expansion`` and ``kernel`` possibly with ``when: {op: mbconv}``.

    Raises:
        ConfigError: Anything else, with its key path (a searched number of stages, a searched
            stride, a float expansion, an int range, an unknown op or key).

    Example:
        >>> constants, stages = mbconv_layout({"stem_channels": 8, "stages": [{"channels": 16, "layers": {
        ...     "repeat": {"min": 1, "max": 2}, "block": {"expansion": {"choice": [1, 3]}, "kernel": 3}}}]})
        >>> constants, stages[0].depths, stages[0].slots[1].expansions
        ({'stem_channels': 8}, (1, 2), (1, 3))
    """
    constants = {}
    for key, value in arch_space.items():
        path = f"{where}.{key}"
        if key == "stages":
            continue
        if key not in MBCONV_CONSTANTS:
            raise ConfigError(path, f"unknown key; allowed keys: {', '.join([*MBCONV_CONSTANTS, 'stages'])}"
                                    f"{did_you_mean(str(key), [*MBCONV_CONSTANTS, 'stages'])}")
        value = _unwrap(value)
        if isinstance(value, (Mapping, list)):
            raise ConfigError(path, "is searched, but in an mbconv supernet only each stage's channels and layers "
                                    "(their number, op, expansion and kernel) share weights; make it a constant "
                                    f"(one supernet per value), got {describe(value)}")
        constants[key] = value
    stages = _stage_list(arch_space, where, "an mbconv supernet holds a constant list of stages (a searched number of "
                                            "stages or a choice between lists cannot share weights)")
    return constants, tuple(_stage(item, f"{where}.stages.{i}") for i, item in enumerate(stages))


# ----------------------------------------------------------------------------------------------
# The transformer supernet's space (no torch here either)
# ----------------------------------------------------------------------------------------------

#: transformer's arch keys that must be constants of a one-shot space, and their defaults (a
#: searched patch size changes the tokens and the patch embedding's shape; a searched pool
#: whether a [CLS] token exists and what the head reads).
TRANSFORMER_CONSTANTS = {"patch_size": 4, "pool": "cls"}
#: build_transformer's defaults of the keys a transformer supernet may search.
TRANSFORMER_DEFAULTS = {"width": 64, "dropout": 0.0}
#: A block's defaults in build_transformer.
TRANSFORMER_BLOCK_DEFAULTS = {"heads": 4, "mlp_ratio": 2, "dropout": 0.0}


@dataclass(frozen=True)
class TransformerSlot:
    """One block position of a transformer supernet and the candidates it may take."""

    heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    dropouts: tuple[float, ...]


@dataclass(frozen=True)
class TransformerLayout:
    """What a transformer supernet holds: ``constants`` (the space's ``patch_size`` and
    ``pool``, as it gives them), the candidates of ``width`` (slices of the largest) and of the
    head's ``dropout``, the ``depths`` (a path with n blocks runs the first n of ``slots``)."""

    constants: dict
    widths: tuple[int, ...]
    dropouts: tuple[float, ...]
    depths: tuple[int, ...]
    slots: tuple[TransformerSlot, ...]

    def choices(self) -> dict[str, tuple]:
        """The candidates as flat key paths under ``arch`` (``blocks`` is the number of blocks;
        ``blocks.1.heads`` a block's heads)."""
        out: dict[str, tuple] = {"width": self.widths, "dropout": self.dropouts, "blocks": self.depths}
        for j, slot in enumerate(self.slots):
            out.update({f"blocks.{j}.heads": slot.heads, f"blocks.{j}.mlp_ratio": slot.mlp_ratios,
                        f"blocks.{j}.dropout": slot.dropouts})
        return out


def _number_candidates(value: Any, path: str, what: str, *, below_one: bool = False) -> tuple[float, ...]:
    """A constant number or ``{choice: [numbers]}``: positive (``below_one``: in [0, 1))."""
    value = _unwrap(value)
    if isinstance(value, Mapping):
        if set(value) != {"choice"} or not isinstance(value["choice"], list) or not value["choice"]:
            raise ConfigError(path, f"a supernet draws {what} from a list, so this must be a number or "
                                    f"{{choice: [numbers]}} without conditions, got {describe(value)}")
        options = value["choice"]
    elif isinstance(value, list):
        raise ConfigError(path, f"must be a number or {{choice: [numbers]}}, got {describe(value)}")
    else:
        options = [value]
    for option in options:
        number = not isinstance(option, bool) and isinstance(option, (int, float))
        if not number or (not 0 <= option < 1 if below_one else not option > 0):
            rule = "numbers in [0, 1)" if below_one else "positive numbers"
            raise ConfigError(path, f"{what} must be {rule}, got {describe(option)}")
    return tuple(dict.fromkeys(options))


def _transformer_slot(value: Any, path: str) -> TransformerSlot:
    value = _mapping_section(value, path, "a block of a transformer supernet must be a mapping of heads, mlp_ratio "
                                          "and dropout (not a searched one)", list(TRANSFORMER_BLOCK_DEFAULTS))
    given = {**TRANSFORMER_BLOCK_DEFAULTS, **value}
    return TransformerSlot(_int_candidates(given["heads"], f"{path}.heads", "heads"),
                           _number_candidates(given["mlp_ratio"], f"{path}.mlp_ratio", "MLP ratios"),
                           _number_candidates(given["dropout"], f"{path}.dropout", "dropouts", below_one=True))


def transformer_layout(arch_space: Mapping[str, Any], *, where: str = "space.arch") -> TransformerLayout:
    """What a transformer supernet can hold of a transformer space's ``arch``, checked.

    ``width`` is an int or a choice of ints (the first w features of the largest, one width
    for all blocks); ``dropout`` a number or a choice of numbers; ``blocks`` a list of blocks
    or ``{repeat: {min, max}, block}`` (the depth, as a prefix of ``max`` blocks), a block's
    ``heads``, ``mlp_ratio`` and ``dropout`` each a constant or a choice. ``patch_size`` and
    ``pool`` are constants. Every heads candidate must divide every width candidate: the
    supernet draws each independently (head dim = width / heads).

    Raises:
        ConfigError: Anything else, with its key path (a searched patch size or pool, a range,
            a condition, heads that do not divide a width, an unknown key).

    Example:
        >>> layout = transformer_layout({"width": {"choice": [16, 32]}, "patch_size": 2, "blocks": {
        ...     "repeat": {"min": 1, "max": 3}, "block": {"heads": {"choice": [1, 2, 4]}}}})
        >>> layout.constants, layout.widths, layout.depths, layout.slots[2].heads
        ({'patch_size': 2}, (16, 32), (1, 2, 3), (1, 2, 4))
    """
    constants = _arch_constants(arch_space, where, [*TRANSFORMER_CONSTANTS, *TRANSFORMER_DEFAULTS, "blocks"],
                                {"patch_size": "the number of tokens and the patch embedding's shape",
                                 "pool": "whether a [CLS] token exists and what the head reads"},
                                "a transformer", "width, depth, heads, mlp_ratio and dropout")
    widths = _int_candidates(arch_space.get("width", TRANSFORMER_DEFAULTS["width"]), f"{where}.width", "widths")
    dropouts = _number_candidates(arch_space.get("dropout", TRANSFORMER_DEFAULTS["dropout"]), f"{where}.dropout",
                                  "dropouts", below_one=True)
    if "blocks" not in arch_space:
        raise ConfigError(f"{where}.blocks", "required key is missing")
    blocks, bpath = _unwrap(arch_space["blocks"]), f"{where}.blocks"
    if isinstance(blocks, list):
        depths = (len(blocks),)
        slots = tuple(_transformer_slot(item, f"{bpath}.{j}") for j, item in enumerate(blocks))
        paths = [f"{bpath}.{j}" for j in range(len(blocks))]
    elif isinstance(blocks, Mapping) and "repeat" in blocks:
        depths = _repeat_depths(blocks, bpath, "a transformer supernet's blocks")
        slot = _transformer_slot(blocks.get("block"), f"{bpath}.block")
        slots, paths = (slot,) * max(depths), [f"{bpath}.block"] * max(depths)
    else:
        raise ConfigError(bpath, "must be a list of blocks or {repeat: {min, max}, block: {...}} (depth as a "
                                 f"prefix of the supernet's blocks), got {describe(blocks)}")
    for slot, path in zip(slots, paths):
        for heads in slot.heads:
            misfits = [w for w in widths if w % heads]
            if misfits:
                raise ConfigError(f"{path}.heads", f"{heads} does not divide the width {misfits[0]}: each head attends "
                                                   f"over width / heads features, and a supernet runs every heads "
                                                   f"candidate with every width ({', '.join(map(str, widths))}), so "
                                                   f"each must divide them all")
    return TransformerLayout(constants, widths, dropouts, depths, slots)


# ----------------------------------------------------------------------------------------------
# The mlp and cnn supernets' spaces (no torch here either)
# ----------------------------------------------------------------------------------------------

#: build_mlp's defaults of the keys an mlp supernet may search.
MLP_DEFAULTS = {"depth": 2, "width": 128, "dropout": 0.0}
#: build_mlp's keys that must be constants of a one-shot space, and why.
MLP_CONSTANTS = {"activation": "the function every path applies (there is one module per activation)",
                 "batch_norm": "whether the linear layers have biases and batch norms at all"}
#: build_cnn's keys that must be constants of a one-shot space, and why.
CNN_CONSTANTS = {"activation": "the function every path applies (there is one module per activation)",
                 "head_width": "the shape of the head's hidden layer"}
#: A cnn stage's keys that must be constants of a one-shot space, and why.
CNN_STAGE_CONSTANTS = {"stride": "the spatial size every later stage and the head see",
                       "pool": "the spatial size every later stage and the head see",
                       "batch_norm": "whether the stage's conv has a bias and a batch norm at all"}


@dataclass(frozen=True)
class MLPSlot:
    """One hidden layer position of an mlp supernet: its widths (slices of the largest) and
    its own dropouts (``()`` where the space gives the layer none: it takes ``arch.dropout``)."""

    widths: tuple[int, ...]
    dropouts: tuple[float, ...]


@dataclass(frozen=True)
class MLPLayout:
    """What an mlp supernet holds. ``layers`` is true where the space lists ``layers`` (each
    position with its own widths, ``slots``) and false where it gives ``depth`` and one
    ``width`` for every layer (its candidates ``widths``; ``slots`` repeats them). A path with
    n hidden layers runs the first n of ``slots``."""

    constants: dict
    layers: bool
    depths: tuple[int, ...]
    dropouts: tuple[float, ...]
    slots: tuple[MLPSlot, ...]
    widths: tuple[int, ...] = ()

    def choices(self) -> dict[str, tuple]:
        """The candidates as flat key paths under ``arch`` (``layers`` is the number of layers;
        ``layers.1.width`` a layer's widths)."""
        if not self.layers:
            return {"depth": self.depths, "width": self.widths, "dropout": self.dropouts}
        out: dict[str, tuple] = {"layers": self.depths, "dropout": self.dropouts}
        for j, slot in enumerate(self.slots):
            out[f"layers.{j}.width"] = slot.widths
            if slot.dropouts:
                out[f"layers.{j}.dropout"] = slot.dropouts
        return out


def _depth_candidates(value: Any, path: str) -> tuple[int, ...]:
    """An mlp's ``depth``: an int, a choice of ints or an int range (``{int: [low, high]}``,
    maybe with ``step`` or ``log``): every count it holds (a path runs a prefix of the deepest;
    the searcher still samples the space's distribution)."""
    value = _unwrap(value)
    if not (isinstance(value, Mapping) and "int" in value):
        return _int_candidates(value, path, "depths", minimum=0)
    for key in value:
        if key not in ("int", "step", "log"):
            raise ConfigError(f"{path}.{key}", "a supernet holds every depth of the range at once, so a depth takes no "
                                               f"conditions; remove {key}")
    bounds, step = value["int"], value.get("step", 1)
    whole = all(isinstance(n, int) and not isinstance(n, bool) for n in (*(bounds if isinstance(bounds, list) else []),
                                                                           step))
    if not whole or len(bounds) != 2 or not 0 <= bounds[0] <= bounds[1] or step < 1:
        raise ConfigError(path, f"needs {{int: [low, high]}} with 0 <= low <= high (and a positive step), "
                                f"got {describe(value)}")
    return tuple(range(bounds[0], bounds[1] + 1, step))


def _mlp_slot(value: Any, path: str) -> MLPSlot:
    value = _mapping_section(value, path, "a hidden layer of an mlp supernet must be a mapping of width and dropout "
                                          "(not a searched one)", ["width", "dropout"])
    if "width" not in value:
        raise ConfigError(f"{path}.width", "required key is missing")
    dropouts = (_number_candidates(value["dropout"], f"{path}.dropout", "dropouts", below_one=True)
                if "dropout" in value else ())
    return MLPSlot(_int_candidates(value["width"], f"{path}.width", "widths"), dropouts)


def mlp_layout(arch_space: Mapping[str, Any], *, where: str = "space.arch") -> MLPLayout:
    """What an mlp supernet can hold of an mlp space's ``arch``, checked.

    Depth is a prefix of the deepest: ``depth`` (an int, a choice or a range of ints >= 0) hidden layers
    of one ``width`` (an int or a choice: the first w units of the largest), or ``layers``, a
    list of ``{width, dropout}`` (each a constant or a choice) or ``{repeat: {min, max}, block}``.
    ``dropout`` is a number or a choice (no weights); ``activation`` and ``batch_norm`` are
    constants.

    Raises:
        ConfigError: Anything else, with its key path (a searched activation or batch norm, a
            range, a condition, both ``layers`` and ``depth``, an unknown key).

    Example:
        >>> layout = mlp_layout({"depth": {"choice": [1, 3]}, "width": {"choice": [32, 64]}})
        >>> layout.depths, len(layout.slots), layout.slots[2].widths
        ((1, 3), 3, (32, 64))
    """
    constants = _arch_constants(arch_space, where, [*MLP_DEFAULTS, "layers", *MLP_CONSTANTS], MLP_CONSTANTS, "an mlp",
                                "the depth, the widths and dropout")
    dropouts = _number_candidates(arch_space.get("dropout", MLP_DEFAULTS["dropout"]), f"{where}.dropout", "dropouts",
                                  below_one=True)
    if "layers" not in arch_space:
        depths = _depth_candidates(arch_space.get("depth", MLP_DEFAULTS["depth"]), f"{where}.depth")
        widths = _int_candidates(arch_space.get("width", MLP_DEFAULTS["width"]), f"{where}.width", "widths")
        return MLPLayout(constants, False, depths, dropouts, (MLPSlot(widths, ()),) * max(depths), widths)
    clash = [k for k in ("depth", "width") if k in arch_space]
    if clash:
        raise ConfigError(f"{where}.{clash[0]}", "give either 'layers' or 'depth'/'width', not both")
    layers, lpath = _unwrap(arch_space["layers"]), f"{where}.layers"
    if isinstance(layers, list):
        return MLPLayout(constants, True, (len(layers),), dropouts,
                         tuple(_mlp_slot(item, f"{lpath}.{j}") for j, item in enumerate(layers)))
    if isinstance(layers, Mapping) and "repeat" in layers:
        depths = _repeat_depths(layers, lpath, "an mlp supernet's layers")
        return MLPLayout(constants, True, depths, dropouts, (_mlp_slot(layers.get("block"), f"{lpath}.block"),) * max(depths))
    raise ConfigError(lpath, "must be a list of layers or {repeat: {min, max}, block: {width, dropout}} (depth as a "
                             f"prefix of the supernet's layers), got {describe(layers)}")


@dataclass(frozen=True)
class CNNStage:
    """One stage of a cnn supernet: its channels (slices of the largest), its kernels (centred
    slices of the largest) and its constants (``stride``, ``pool``, ``batch_norm`` as the space
    gives them)."""

    channels: tuple[int, ...]
    kernels: tuple[int, ...]
    constants: dict


@dataclass(frozen=True)
class CNNLayout:
    """What a cnn supernet holds: ``constants`` (the space's ``activation`` and ``head_width``),
    the head's ``dropouts`` and every stage (a constant list)."""

    constants: dict
    dropouts: tuple[float, ...]
    stages: tuple[CNNStage, ...]

    def choices(self) -> dict[str, tuple]:
        """The candidates as flat key paths under ``arch`` (``stages.1.kernel`` a stage's kernels)."""
        out: dict[str, tuple] = {"dropout": self.dropouts}
        for i, stage in enumerate(self.stages):
            out.update({f"stages.{i}.channels": stage.channels, f"stages.{i}.kernel": stage.kernels})
        return out


def _cnn_stage(value: Any, path: str) -> CNNStage:
    value = _mapping_section(value, path, "a stage of a cnn supernet must be a mapping of channels, kernel, stride, "
                                          "pool and batch_norm (not a searched one)",
                             ["channels", "kernel", *CNN_STAGE_CONSTANTS])
    if "channels" not in value:
        raise ConfigError(f"{path}.channels", "required key is missing")
    constants = {key: _constant(value[key], f"{path}.{key}", "a cnn", why, "each stage's channels and kernel, and dropout")
                 for key, why in CNN_STAGE_CONSTANTS.items() if key in value}
    kernels = _int_candidates(value.get("kernel", 3), f"{path}.kernel", "kernels")
    if len(kernels) > 1 and any(k % 2 == 0 for k in kernels):
        raise ConfigError(f"{path}.kernel", f"a searched kernel is the centred slice of the largest, so its candidates "
                                            f"must be odd, got {next(k for k in kernels if k % 2 == 0)}")
    return CNNStage(_int_candidates(value["channels"], f"{path}.channels", "channels"), kernels, constants)


def cnn_layout(arch_space: Mapping[str, Any], *, where: str = "space.arch") -> CNNLayout:
    """What a cnn supernet can hold of a cnn space's ``arch``, checked.

    ``stages`` is a constant list (no depth search: see docs/oneshot.md); each stage's
    ``channels`` is an int or a choice (the first c output channels of the largest conv, and the
    first c input channels of whatever reads them) and its ``kernel`` an int or a choice of odd
    ints (the centred slice of the largest); ``stride``, ``pool`` and ``batch_norm`` are
    constants. ``dropout`` (the head's) is a number or a choice; ``activation`` and
    ``head_width`` are constants.

    Raises:
        ConfigError: Anything else, with its key path.

    Example:
        >>> layout = cnn_layout({"stages": [{"channels": {"choice": [8, 16]}, "kernel": {"choice": [3, 5]}},
        ...                                 {"channels": 16, "stride": 2}], "dropout": {"choice": [0.0, 0.2]}})
        >>> layout.stages[0].kernels, layout.stages[1].constants, layout.dropouts
        ((3, 5), {'stride': 2}, (0.0, 0.2))
    """
    constants = _arch_constants(arch_space, where, ["stages", "dropout", *CNN_CONSTANTS], CNN_CONSTANTS, "a cnn",
                                "each stage's channels and kernel, and dropout")
    dropouts = _number_candidates(arch_space.get("dropout", 0.0), f"{where}.dropout", "dropouts", below_one=True)
    stages = _stage_list(arch_space, where, "a cnn supernet holds a constant list of stages (a searched number of "
                                            "stages is not shared: each stage has its own stride and pool)")
    return CNNLayout(constants, dropouts, tuple(_cnn_stage(item, f"{where}.stages.{i}") for i, item in enumerate(stages)))


def check_one_shot(spec) -> None:
    """What a one-shot or gradient search needs, checked before Ray starts (with the key at fault).

    Raises:
        ConfigError: A user trainable; a family without a supernet or a searched key that
            cannot share weights; searched training hyperparameters; an early-stopping
            scheduler, a prescreen or zero-cost proxies (none apply); for a gradient search,
            the keys of a searcher (it derives one cell) or the Lightning engine.
    """
    strategy = spec.search.strategy
    if spec.trainable is not None:
        raise ConfigError("trainable", f"{strategy} search trains raynas's own supernet of a built-in family; "
                                       "a user trainable builds its own model (use model: instead)")
    family = spec.model
    if family not in SUPERNET_FAMILIES:
        raise ConfigError("model", f"{strategy} search needs a family whose choices can share weights "
                                   f"({', '.join(SUPERNET_FAMILIES)}); {family!r} has no supernet")
    if strategy == "gradient" and family not in GRADIENT_FAMILIES:
        raise ConfigError("model", f"gradient search relaxes the op choices of a cell's edges or an mbconv's layers "
                                   f"({', '.join(GRADIENT_FAMILIES)}); {family!r} has a single-path supernet only: "
                                   "use search.strategy: one-shot")
    space = spec.raw.get("space") or {}
    shared_choices(family, space.get("arch"))
    if strategy == "gradient" and family == "mbconv":
        check_gradient_mbconv(space["arch"])
    for key, value in (space.get("train") or {}).items():
        if isinstance(value, (dict, list)):
            raise ConfigError(f"space.train.{key}", "one supernet trains with one recipe, so training "
                                                    f"hyperparameters are constants under {strategy} search; got {describe(value)}")
    why = ("scores each subnet in one step" if strategy == "one-shot"
           else "trains one supernet, then the one cell it derives")
    if spec.scheduler.name != "fifo":
        raise ConfigError("scheduler", f"{strategy} search {why}, so {spec.scheduler.name} has nothing to stop "
                                       "early; remove the scheduler section")
    if spec.search.prescreen:
        raise ConfigError("search.prescreen", f"{strategy} search {why}: there are no candidates to prescreen; "
                                              "remove search.prescreen")
    if spec.proxies:
        raise ConfigError("proxies", f"{strategy} search {why} and computes no zero-cost proxies; remove proxies")
    if strategy == "gradient":
        given = spec.raw.get("search") or {}
        for key in ("searcher", "num_trials", "warm_start", "points"):
            if key in given:
                raise ConfigError(f"search.{key}", "a gradient search derives its one cell from the supernet's "
                                                   f"architecture weights and then trains it; remove search.{key}")
        if spec.trainer.engine.value != "fast":
            raise ConfigError("trainer.engine", "a gradient search reports the architecture it derives each epoch from the "
                                                "fast engine's loop; use engine: fast")


def gradient_candidates(stage: MBConvStage, j: int) -> list[str]:
    """The candidates a gradient search mixes at layer position ``j`` of an mbconv ``stage``:
    ``identity`` where the layer's op may be identity, ``e{E}_k{K}`` (an MBConv of expansion E
    and kernel K) for each of its expansions and kernels where it may be mbconv, and ``skip``
    (the layer is left out) where the stage's repeat may end before it and identity is not
    already a candidate; never at the first position, which carries the stage's stride and
    channel change.

    Example:
        >>> _, (stage,) = mbconv_layout({"stages": [{"channels": 8, "layers": {"repeat": {"min": 1, "max": 2},
        ...     "block": {"expansion": {"choice": [1, 3]}, "kernel": 3}}}]})
        >>> gradient_candidates(stage, 0), gradient_candidates(stage, 1)
        (['e1_k3', 'e3_k3'], ['e1_k3', 'e3_k3', 'skip'])
    """
    slot = stage.slots[j]
    out = ["identity"] if "identity" in slot.ops else []
    if "mbconv" in slot.ops:
        out += [f"e{e}_k{k}" for e in slot.expansions for k in slot.kernels]
    if j >= max(1, min(stage.depths)) and "identity" not in slot.ops:
        out.append("skip")
    return out


def check_gradient_mbconv(arch_space: Mapping[str, Any], *, where: str = "space.arch") -> None:
    """What a gradient search of an mbconv space needs beyond :func:`mbconv_layout`: constant
    stage channels (DARTS mixes candidates of one shape; a choice of widths is not an op), and
    at least one layer position with more than one candidate (an op, expansion, kernel or
    depth choice) to relax.

    Raises:
        ConfigError: A searched ``channels``, or nothing to relax, with the key path.

    Example:
        >>> check_gradient_mbconv({"stages": [{"channels": 8, "layers": [{"kernel": {"choice": [3, 5]}}]}]})
        >>> check_gradient_mbconv({"stages": [{"channels": {"choice": [8, 16]}}]})
        Traceback (most recent call last):
        ...
        raynas.errors.ConfigError: space.arch.stages.0.channels: gradient search mixes the candidates of each layer, which must share one shape; a choice of channels is a width, not an op: make it a constant, or use search.strategy: one-shot (it slices widths), got {'choice': [8, 16]}
    """
    _, stages = mbconv_layout(arch_space, where=where)
    for i, stage in enumerate(stages):
        if len(stage.channels) > 1:
            raw = _unwrap(_unwrap(arch_space["stages"])[i])["channels"]
            raise ConfigError(f"{where}.stages.{i}.channels",
                              "gradient search mixes the candidates of each layer, which must share one shape; a "
                              "choice of channels is a width, not an op: make it a constant, or use search.strategy: "
                              f"one-shot (it slices widths), got {describe(raw)}")
    if all(len(gradient_candidates(stage, j)) == 1 for stage in stages for j in range(len(stage.slots))):
        raise ConfigError(f"{where}.stages", "gradient search relaxes the choices of each layer (its op, expansion, "
                                             "kernel, or whether a stage's repeat keeps it), but every layer of this "
                                             "space is a constant: there is nothing to search")


def check_workers(spec) -> None:
    """``resources.workers_per_trial`` above 1 (data-parallel training through Ray Train): what it
    needs, checked before Ray starts. It trains a one-shot search's supernet (the search's one
    long training; its subnets are scored in one step each, on one worker).

    Raises:
        ConfigError: Another strategy or a user trainable; the Lightning engine; a fraction of
            a GPU per worker; ``RAY_TRAIN_V2_ENABLED`` set off (Ray Train's old API runs its own
            Tune run, which cannot nest in a Tune trial).
    """
    workers = spec.resources.workers_per_trial
    if workers <= 1:
        return
    supernet_stage = spec.trainable is None and spec.model == SUPERNET_MODEL
    if spec.search.strategy != "one-shot" and not supernet_stage:
        what = ("a gradient search's architecture steps" if spec.search.strategy == "gradient"
                else "each trial of a standard search")
        raise ConfigError("resources.workers_per_trial",
                          f"data-parallel training (Ray Train) is built for the supernet of search.strategy: one-shot; "
                          f"{what} trains on one worker, so remove the key (got {workers})")
    if spec.trainer.engine.value != "fast":
        raise ConfigError("trainer.engine", f"the supernet's {workers} data-parallel workers run the fast engine's loop; "
                                            "use engine: fast (or remove resources.workers_per_trial)")
    batch = (spec.raw.get("space") or {}).get("train", {}).get("batch_size", 64)
    if isinstance(batch, int) and batch < 2 * workers:
        raise ConfigError("space.train.batch_size", f"each batch is split between the {workers} workers, and batch norm "
                                                    f"needs 2 samples on each: a batch of {batch} is too small "
                                                    f"(at least {2 * workers})")
    v2 = os.environ.get(TRAIN_V2_ENV)
    if v2 is not None and v2.lower() not in ("1", "true"):
        raise ConfigError("resources.workers_per_trial",
                          f"data-parallel workers run on Ray Train V2 inside a Tune trial, but {TRAIN_V2_ENV}={v2} in "
                          f"this environment selects Ray Train's old API, whose trainer starts a Tune run of its own "
                          f"and which raynas does not run; unset {TRAIN_V2_ENV} (or remove the key, got {workers})")
    gpus = spec.resources.gpus_per_trial
    if 0 < gpus < 1:
        raise ConfigError("resources.gpus_per_trial",
                          f"data-parallel workers need a whole GPU each (two ranks cannot share one GPU under NCCL); "
                          f"got {gpus:g} with workers_per_trial: {workers}")


# ----------------------------------------------------------------------------------------------
# The resnet supernet's space (no torch here either)
# ----------------------------------------------------------------------------------------------

#: resnet's arch keys a one-shot space may search (slices of the largest; dropout has no
#: weights) and build_resnet's defaults; ``activation`` is a constant (default ``relu``).
RESNET_DEFAULTS = {"stem_channels": 16, "dropout": 0.0}
#: A stage's defaults in build_resnet (``channels`` is required).
RESNET_STAGE_DEFAULTS = {"blocks": 1, "stride": 1}


@dataclass(frozen=True)
class ResNetStage:
    """One stage of a resnet supernet: its channels among ``channels`` (slices of the largest),
    a constant stride, its number of blocks among ``depths`` (a path with n blocks runs the
    first n of the deepest)."""

    channels: tuple[int, ...]
    stride: int
    depths: tuple[int, ...]


@dataclass(frozen=True)
class ResNetLayout:
    """What a resnet supernet holds: ``constants`` (the space's ``activation``, as it gives
    it), the candidates of ``stem_channels`` and of the head's ``dropout``, and the stages."""

    constants: dict
    stem_channels: tuple[int, ...]
    dropouts: tuple[float, ...]
    stages: tuple[ResNetStage, ...]

    def choices(self) -> dict[str, tuple]:
        """The candidates as flat key paths under ``arch`` (``stages.0.blocks`` is a stage's
        number of blocks)."""
        out: dict[str, tuple] = {"stem_channels": self.stem_channels, "dropout": self.dropouts}
        for i, stage in enumerate(self.stages):
            out.update({f"stages.{i}.channels": stage.channels, f"stages.{i}.blocks": stage.depths})
        return out


def _resnet_stage(value: Any, path: str) -> ResNetStage:
    value = _unwrap(value)
    allowed = ["channels", *RESNET_STAGE_DEFAULTS]
    if not isinstance(value, Mapping) or any(k in value for k in _DOMAIN_KEYS):
        raise ConfigError(path, "a stage of a resnet supernet must be a mapping of channels, blocks and stride "
                                f"(not a searched one), got {describe(value)}")
    for key in value:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}", f"unknown key; allowed keys: {', '.join(allowed)}"
                                               f"{did_you_mean(str(key), allowed)}")
    if "channels" not in value:
        raise ConfigError(f"{path}.channels", "required key is missing")
    stride = _unwrap(value.get("stride", 1))
    if isinstance(stride, (Mapping, bool)) or not isinstance(stride, int) or stride not in (1, 2):
        raise ConfigError(f"{path}.stride", "must be 1 or 2, a constant: a searched stride changes every later "
                                            f"feature map's size, so it cannot share weights, got {describe(stride)}")
    return ResNetStage(_int_candidates(value["channels"], f"{path}.channels", "channels"), stride,
                       _int_candidates(value.get("blocks", 1), f"{path}.blocks", "blocks"))


def resnet_layout(arch_space: Mapping[str, Any], *, where: str = "space.arch") -> ResNetLayout:
    """What a resnet supernet can hold of a resnet space's ``arch``, checked.

    ``stem_channels`` and each stage's ``channels`` are an int or a choice of ints (slices of
    the largest), each stage's ``blocks`` an int or a choice of ints (the depth, a prefix of
    the deepest), ``dropout`` a number or a choice of numbers (no weights). The list of stages,
    each stage's ``stride`` and ``activation`` are constants. The shortcut needs no rule: the
    supernet holds the projection of a stage's first block wherever some path needs one.

    Raises:
        ConfigError: Anything else, with its key path (a searched number of stages, stride or
            activation, an int range, a float width, an unknown key).

    Example:
        >>> layout = resnet_layout({"stem_channels": {"choice": [8, 16]}, "stages": [
        ...     {"channels": {"choice": [16, 32]}, "blocks": {"choice": [1, 2]}, "stride": 2}]})
        >>> layout.stem_channels, layout.stages[0]
        ((8, 16), ResNetStage(channels=(16, 32), stride=2, depths=(1, 2)))
    """
    allowed = ["activation", *RESNET_DEFAULTS, "stages"]
    constants = {}
    for key, value in arch_space.items():
        path = f"{where}.{key}"
        if key not in allowed:
            raise ConfigError(path, f"unknown key; allowed keys: {', '.join(allowed)}{did_you_mean(str(key), allowed)}")
        if key == "activation":
            value = _unwrap(value)
            if isinstance(value, (Mapping, list)):
                raise ConfigError(path, "is searched, but a resnet supernet shares weights across the stem's and each "
                                        "stage's channels, the number of blocks and dropout only; every block "
                                        "trains for one activation, so make it a constant (one supernet per value), "
                                        f"got {describe(value)}")
            constants[key] = value
    stems = _int_candidates(arch_space.get("stem_channels", RESNET_DEFAULTS["stem_channels"]),
                            f"{where}.stem_channels", "channels")
    dropouts = _number_candidates(arch_space.get("dropout", RESNET_DEFAULTS["dropout"]), f"{where}.dropout",
                                  "dropouts", below_one=True)
    if "stages" not in arch_space:
        raise ConfigError(f"{where}.stages", "required key is missing")
    stages = _unwrap(arch_space["stages"])
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{where}.stages", "a resnet supernet holds a constant list of stages (a searched number "
                                             "of stages or a choice between lists cannot share weights); write the "
                                             "stages as a list and search each stage's blocks instead, got "
                                             f"{describe(stages)}")
    return ResNetLayout(constants, stems, dropouts,
                        tuple(_resnet_stage(item, f"{where}.stages.{i}") for i, item in enumerate(stages)))
