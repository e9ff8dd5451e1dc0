"""Resolve ``package.module:function`` references from experiment files."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def is_reference(name: str) -> bool:
    """True for ``package.module:attr`` strings (as opposed to registry names)."""
    return isinstance(name, str) and ":" in name


# Folders (os.pathsep-separated) whose modules the workers of a local Ray that raynas started
# import as they start: set by the runner, read by raynas._worker_path.
WORKER_PATH_ENV = "RAYNAS_WORKER_PATH"


def add_search_path(directory: str | os.PathLike | None) -> None:
    """Makes modules in ``directory`` importable (the folder of the experiment file)."""
    if directory is None:
        return
    directory = os.path.abspath(os.fspath(directory))
    if directory not in sys.path:
        sys.path.insert(0, directory)


def load_reference(ref: str, base_dir: str | os.PathLike | None = None) -> Any:
    """Imports ``module:attr`` (``attr`` may be dotted) and returns the attribute.

    Args:
        ref: The reference, e.g. ``my_models:tiny_cnn``.
        base_dir: A folder searched first, normally the experiment file's folder.

    Raises:
        ImportError: The module cannot be imported (message says which and why).
        AttributeError: The module has no such attribute.
        ValueError: ``ref`` is not of the form ``module:attr``.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'package.module:function', got {ref!r}")
    add_search_path(base_dir)
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def module_file(ref: str, base_dir: str | os.PathLike | None) -> str | None:
    """The local file or package folder a reference's top-level module lives in, if it is
    next to the experiment file (so it can be shipped to cluster workers), else None."""
    if base_dir is None or not is_reference(ref):
        return None
    top = ref.partition(":")[0].split(".")[0]
    base = os.path.abspath(os.fspath(base_dir))
    for candidate in (os.path.join(base, top + ".py"), os.path.join(base, top)):
        if os.path.isfile(candidate) or os.path.isfile(os.path.join(candidate, "__init__.py")):
            return candidate
    return None
