"""Build a few sampled architectures of a built-in family against the data, before Ray starts.

A space that yields arch dicts the family does not accept (an unknown key such as ``widht``,
a wrong type) would fail every trial; that is a configuration error, reported with the key
path before anything runs. An architecture that is well formed but does not fit the data
(a fourth stride-2 stage on 8x8 images) fails only its own trial, so some of those are
reported as a warning, and a space where every sample is such a misfit is refused.
"""

from __future__ import annotations

import random

from raynas.errors import ArchError, ConfigError, describe
from raynas.trainables.registry import BUILTIN

__all__ = ["check_architectures"]

#: Architectures sampled (with the search's seed); each is built with a batch of 2 on the CPU.
SAMPLES = 8


def check_architectures(spec, input_shape: tuple, num_classes: int, samples: int = SAMPLES) -> list[str]:
    """Builds ``samples`` architectures of the space; returns warnings for those that do not fit.

    Raises:
        ConfigError: A sampled arch dict is not accepted by the family (its key path under
            ``space.arch``), or none of the samples fits the data.
    """
    if spec.trainable or spec.model not in BUILTIN:
        return []  # a user's family is only built in its trials: its cost and rules are its own
    from raynas.trainables.families import build_model

    rng = random.Random(spec.search.seed or 0)
    archs = [spec.space.sample(rng=rng).get("arch", {}) for _ in range(samples)]
    misfits: list[ArchError] = []
    for arch in archs:
        try:
            build_model(spec.model, arch, input_shape, num_classes)
        except ArchError as err:
            if not err.misfit:
                raise ConfigError(
                    f"space.{err.path}",
                    f"{err.message} (model {spec.model!r}, in the sampled architecture {describe(arch)})",
                    spec.source_file,
                ) from None
            misfits.append(err)
    shape = "x".join(map(str, input_shape))
    if misfits and len(misfits) == len(archs):
        raise ConfigError(
            "space.arch",
            f"none of {len(archs)} sampled architectures of model {spec.model!r} fits the data "
            f"(input {shape}, {num_classes} classes); the first: {misfits[0]}",
            spec.source_file,
        )
    if misfits:
        return [
            f"{len(misfits)} of {len(archs)} sampled architectures do not fit the input {shape} "
            f"(e.g. {misfits[0]}); such trials fail before training and the search goes on"
        ]
    return []
