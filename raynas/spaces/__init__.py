"""Search-space DSL: domains, repeated blocks and conditions; sampling, grid, mutation, Optuna bridge.

Example:
    >>> from raynas.spaces import Space
    >>> space = Space({"arch": {"depth": {"int": [1, 4]}, "width": {"choice": [32, 64]}}})
    >>> space.size()
    8
"""

from raynas.spaces.domains import Choice, Dict, Fixed, Float, Int, List, Node, Repeat
from raynas.spaces.mutation import mutate
from raynas.spaces.domains import parse_space
from raynas.spaces.space import Space, flatten, unflatten

__all__ = [
    "Space",
    "Node",
    "Int",
    "Float",
    "Choice",
    "Fixed",
    "Repeat",
    "Dict",
    "List",
    "parse_space",
    "flatten",
    "unflatten",
    "mutate",
]
