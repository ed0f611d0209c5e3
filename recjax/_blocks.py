"""Working-memory blocks: how many rows of a computation to hold at once.

Metrics and scorers work through users in blocks sized so that their temporaries
stay near :data:`WORKING_MEMORY` bytes (scikit-learn's ``working_memory``), whatever
the catalogue or the list length.

Example
-------
>>> from recjax._blocks import block_rows, blocks
>>> block_rows(bytes_per_row=1 << 20)
64
>>> [(b.start, b.stop) for b in blocks(5, 2)]
[(0, 2), (2, 4), (4, 5)]
"""

from __future__ import annotations

from recjax._checks import positive_int

__all__ = ["WORKING_MEMORY", "block_rows", "blocks"]

#: Bytes of temporaries a blocked computation aims to hold at once.
WORKING_MEMORY = 64 << 20


def block_rows(bytes_per_row: int, block_size: int | None = None) -> int:
    """Rows per block: ``block_size`` when given (a positive integer), else as many as
    fit in :data:`WORKING_MEMORY` (at least one)."""
    if block_size is not None:
        return positive_int(block_size, "block_size")
    return max(1, WORKING_MEMORY // max(int(bytes_per_row), 1))


def blocks(n: int, rows: int):
    """Slices of ``rows`` consecutive rows covering ``range(n)``."""
    return (slice(start, min(start + rows, n)) for start in range(0, n, rows))
