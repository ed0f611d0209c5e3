"""Argument checks shared by every layer (a leaf module: NumPy only).

Example
-------
>>> from recjax._checks import positive_int
>>> positive_int(3, "k")
3
>>> positive_int(0, "k")
Traceback (most recent call last):
...
ValueError: k must be >= 1, got 0
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["positive_int"]


def positive_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (Python or NumPy; not a bool).

    Raises
    ------
    TypeError
        ``value`` is not an integer (a float, a bool, None, ...), naming ``name``.
    ValueError
        ``value`` is below 1, naming ``name``.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_" or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)
