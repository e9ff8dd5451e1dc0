"""Model-family names, without importing torch: built-in, installed plugins, registered here.

Three ways to name a family in an experiment file:

* a built-in name: ``mlp``, ``cnn``, ``resnet``, ``mbconv``, ``cell`` (NAS-Bench-201 / DARTS
  cells), ``transformer`` (images and tables);
* the name of a family another installed package declares under the ``raynas.families``
  entry-point group (``[project.entry-points."raynas.families"] tiny = "mypkg.models:tiny"``),
  available on every node where that package is installed;
* ``package.module:function`` (a file next to the experiment is shipped to the workers).

:func:`register_family` adds a name in the current process (Python API use). The driver
resolves every name to something a worker can load (:func:`resolve_family`), so a family
registered in the driver's process works on workers that never ran the registration.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any, Callable

from raynas._imports import is_reference, load_reference
from raynas.errors import describe, did_you_mean

ENTRY_POINT_GROUP = "raynas.families"

BUILTIN: dict[str, str] = {
    "mlp": "raynas.trainables.families:build_mlp",
    "cnn": "raynas.trainables.families:build_cnn",
    "resnet": "raynas.trainables.families:build_resnet",
    "mbconv": "raynas.trainables.families:build_mbconv",
    "cell": "raynas.trainables.cell:build_cell",
    "transformer": "raynas.trainables.transformer:build_transformer",
}

_REGISTERED: dict[str, Callable] = {}


class UnknownFamilyError(KeyError):
    """A KeyError whose message prints as written (KeyError would show its repr)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def register_family(name: str, fn: Callable | None = None):
    """Registers a model family under ``name`` in this process; usable as a decorator.

    Args:
        name: The name used in experiment files (``model: tiny``); no ``:`` in it.
        fn: ``fn(arch, input_shape, num_classes) -> nn.Module``; omit it for a decorator.

    Example:
        >>> @register_family("tiny")
        ... def tiny(arch, input_shape, num_classes):
        ...     import torch
        ...     return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))
        >>> "tiny" in family_names()
        True
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"a family name must be a non-empty string without ':', got {name!r}")

    def register(func: Callable) -> Callable:
        if not callable(func):
            raise TypeError(f"family {name!r} must be callable, got {describe(func)}")
        _REGISTERED[name] = func
        return func

    return register if fn is None else register(fn)


def _plugins() -> dict[str, str]:
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken installed distribution must not break raynas
        return {}
    return {ep.name: ep.value for ep in eps}


def family_names() -> list[str]:
    """Every family name usable here, sorted."""
    return sorted({**BUILTIN, **_plugins(), **_REGISTERED})


def resolve_family(name_or_ref: str | Callable) -> str | Callable:
    """What a worker needs to load the family: a ``module:function`` string or the function.

    Raises:
        UnknownFamilyError: An unknown name (the message lists the known ones).
    """
    if callable(name_or_ref) or is_reference(name_or_ref):
        return name_or_ref
    if name_or_ref in _REGISTERED:
        return _REGISTERED[name_or_ref]
    ref = BUILTIN.get(name_or_ref) or _plugins().get(name_or_ref)
    if ref is None:
        known = family_names()
        raise UnknownFamilyError(
            f"unknown model family {name_or_ref!r}{did_you_mean(name_or_ref, known)}; known: {', '.join(known)}, "
            "or name your own as package.module:function"
        )
    return ref


def get_family(name_or_ref: str | Callable, base_dir: str | os.PathLike | None = None) -> Callable:
    """The builder for a name, a reference or a function (imports it).

    Raises:
        UnknownFamilyError: Unknown name.
        ImportError, AttributeError: The reference cannot be imported.
        TypeError: The reference does not name a callable.
    """
    target: Any = resolve_family(name_or_ref)
    if isinstance(target, str):
        target = load_reference(target, base_dir)
    if not callable(target):
        raise TypeError(f"model family {name_or_ref!r} is not callable: {describe(target)}")
    return target
