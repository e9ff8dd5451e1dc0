"""Error types shared across raynas.

Two levels, as the design says: a :class:`ConfigError` stops a run before Ray starts;
an :class:`ArchError` (or a non-finite loss) fails one trial and the search goes on.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable


class RaynasError(Exception):
    """Base class of every error raynas raises on purpose."""


class ResumeError(RaynasError):
    """An experiment folder whose saved state Ray Tune could not restore: nothing was run."""


class SearchFailedError(RaynasError):
    """A search that ended without any trial scoring the objective (every trial failed, errored
    or was rejected, or none reported the objective metric); the message summarises why."""


class ConfigError(RaynasError):
    """An experiment file (or Python spec) breaks a rule.

    The message names the file, the key path, the rule and the value, e.g.
    ``experiments/x.yaml: space.arch.depth: int range needs low <= high, got low=4, high=2``.

    Args:
        path: Dotted key path inside the file (``""`` for the whole file).
        message: The rule that was broken and the offending value, ideally with a fix.
        file: The file the value came from, if any.
    """

    def __init__(self, path: str, message: str, file: str | None = None):
        self.path = path
        self.message = message
        self.file = file
        super().__init__(self._format())

    def _format(self) -> str:
        parts = [p for p in (self.file, self.path) if p]
        return ": ".join(parts + [self.message])

    def with_file(self, file: str | None) -> "ConfigError":
        """Returns the same error attributed to ``file`` (keeps a file already set)."""
        if self.file or not file:
            return self
        return ConfigError(self.path, self.message, file)

    def under(self, prefix: str) -> "ConfigError":
        """Returns the same error with its key path placed under ``prefix``."""
        path = f"{prefix}.{self.path}" if self.path else prefix
        return ConfigError(path, self.message, self.file)

    def __reduce__(self):
        return (ConfigError, (self.path, self.message, self.file))


class ArchError(RaynasError):
    """An architecture dict cannot be built for the data (a trial error, not a config error).

    Args:
        path: Key path inside the arch dict, e.g. ``arch.stages.3``.
        message: What does not fit and why, with the numbers.
        misfit: The dict is well formed but does not fit this data (too many downsamplings
            for the image size); False for a dict the family does not accept (an unknown
            key, a wrong type), which no data would fix.
    """

    def __init__(self, path: str, message: str, misfit: bool = False):
        self.path = path
        self.message = message
        self.misfit = misfit
        super().__init__(f"{path}: {message}" if path else message)

    def __reduce__(self):
        return (ArchError, (self.path, self.message, self.misfit))


def describe(value: Any) -> str:
    """Short, readable rendering of a user value for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def did_you_mean(word: Any, options: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or ``""`` (case-insensitive).

    A shortened key (``grace`` for ``grace_period``) is matched by prefix first; difflib's
    similarity alone prefers an unrelated word of the same length.
    """
    lowered = str(word).lower()
    names = {str(o).lower(): str(o) for o in options}
    prefixed = [n for low, n in names.items() if len(lowered) >= 3 and (low.startswith(lowered) or lowered.startswith(low))]
    if len(prefixed) == 1:
        return f" (did you mean {prefixed[0]!r}?)"
    close = difflib.get_close_matches(lowered, list(names), n=1, cutoff=0.6)
    return f" (did you mean {names[close[0]]!r}?)" if close else ""


def first_line(err: BaseException, root: bool = False) -> str:
    """``Type: first line`` of an exception, without terminal colours; with ``root``, of the
    exception that caused it (torch wraps a cause in pages of advice and graph dumps)."""
    import re

    while root and err.__cause__ is not None:
        err = err.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
