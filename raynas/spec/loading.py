"""Reading an experiment file: YAML with line numbers in errors, and ``--set`` overrides."""

from __future__ import annotations

import copy
import os
import re
from typing import Any, Sequence

import yaml

from raynas.errors import ConfigError, describe
from raynas.spec.types import ExperimentSpec
from raynas.spec.validate import spec_from_dict


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.2), as users expect."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, file: str | None = None) -> Any:
    """Parses YAML text; syntax errors become a ConfigError with the line and column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(where, f"not valid YAML: {problem}", file) from None


def load_spec(
    file: str | os.PathLike, overrides: Sequence[str] = (), *, check_imports: bool = True
) -> ExperimentSpec:
    """Reads, overrides and validates an experiment file.

    Args:
        file: Path to the YAML file.
        overrides: ``key.path=value`` strings (values are YAML), applied before validation.
        check_imports: Import ``module:function`` references to check them (the driver will
            need them anyway).

    Raises:
        ConfigError: The file is missing, not YAML, or breaks a rule.

    Example:
        >>> spec = load_spec("experiments/quickstart.yaml", ["search.num_trials=4"])  # doctest: +SKIP
    """
    file = os.fspath(file)
    if not os.path.isfile(file):
        raise ConfigError("", f"no such experiment file (looked at {os.path.abspath(file)})", file)
    with open(file, encoding="utf-8") as f:
        raw = parse_yaml(f.read(), file)
    if raw is None:
        raise ConfigError("", "the experiment file is empty", file)
    if not isinstance(raw, dict):
        raise ConfigError("", f"an experiment file is a mapping of keys, got {type(raw).__name__}", file)
    raw = apply_overrides(raw, overrides, file)
    name = raw.get("name")
    if name is None:
        raw["name"] = os.path.splitext(os.path.basename(file))[0]
    return spec_from_dict(raw, file=file, base_dir=os.path.dirname(os.path.abspath(file)), check_imports=check_imports)


def apply_overrides(raw: dict, overrides: Sequence[str], file: str | None = None) -> dict:
    """Applies ``a.b.c=value`` strings to a copy of ``raw`` (values parsed as YAML).

    Example:
        >>> apply_overrides({"search": {"num_trials": 24}}, ["search.num_trials=4"])
        {'search': {'num_trials': 4}}
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError("--set", f"expected key.path=value, got {item!r}", file)
        value = parse_yaml(text, file) if text.strip() else None
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {key}", f"{where} holds {describe(child)}, not a mapping", file)
            node = child
        node[parts[-1]] = value
    return out
