"""Row-sharding metadata of embedding tables, shared by every model family.

A model marks its embedding tables with :func:`table` (an ``nnx.Param`` with
``row_sharded=True`` metadata); :mod:`recjax.train.sharding` splits those by rows
over a device mesh. The marking lives here, below the models, so that models never
import the training package.

Example
-------
>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from recjax.models.base import is_table, table
>>> is_table(None, table(jnp.zeros((3, 2)))), is_table(None, nnx.Param(jnp.zeros(2)))
(True, False)
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

__all__ = ["TABLE", "table", "is_table"]

TABLE = {"row_sharded": True}  # nnx.Param metadata marking an embedding table


def table(value: jax.Array) -> nnx.Param:
    """An embedding table ``[rows, ...]``: a parameter row-sharded over the model axis."""
    return nnx.Param(value, **TABLE)


def is_table(path: Any, variable: Any) -> bool:
    """An ``nnx`` filter selecting the parameters made by :func:`table`."""
    return isinstance(variable, nnx.Param) and bool(variable.get_metadata().get("row_sharded"))
