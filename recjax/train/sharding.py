"""Training state on a device mesh: row-sharded embedding tables, data-parallel batches.

A mesh has two named axes: ``data`` (each batch is split across it) and ``model``
(every embedding table is split by rows across it). Dense layers and the PRNG key
are replicated. Everything runs through the same jit-compiled train step as on one
device; XLA's SPMD partitioner turns a table lookup into local lookups plus a
reduction, so no device ever holds a whole table, and the numbers equal the
single-device run's up to float summation order.

A model marks its tables with :func:`recjax.models.base.table` (an ``nnx.Param``
with ``row_sharded=True`` metadata). JAX needs evenly divided shards, so tables are
stored with their rows padded by zeros to a multiple of the model axis; the
padding never receives a gradient, :meth:`recjax.train.step.Model.bind` drops it
before the model sees its parameters, and :meth:`Layout.to_host` before anything
leaves :func:`recjax.train.fit`.

Example
-------
>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from recjax.models.mf import MF, MFConfig
>>> from recjax.train.sharding import Layout, make_mesh
>>> from recjax.train.step import Model
>>> model = Model.split(MF(MFConfig(embedding_dim=2), 3, 5, rngs=nnx.Rngs(0)))
>>> layout = Layout(make_mesh(1, 1), model)
>>> sorted(layout.rows)
[('item_bias',), ('item_embedding',), ('user_bias',), ('user_embedding',)]
>>> layout.pad(model.params)["user_embedding"].shape
(3, 2)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["DATA", "MODEL", "table_paths", "make_mesh", "Layout"]

DATA, MODEL = "data", "model"


def table_paths(tables: dict) -> frozenset:
    """Key-tuple paths of the leaves of ``tables`` (a pure dict of the table parameters)."""
    return frozenset(path for path, _ in _flat(tables))


def make_mesh(data: int, model: int) -> Mesh:
    """A ``data x model`` mesh over the first ``data * model`` devices of all processes.

    Devices come process by process, so on several hosts the data axis spans the
    hosts and each host's devices share the model axis (fast links inside a host).
    """
    devices = jax.devices()
    if data * model > len(devices):
        raise ValueError(
            f"a {data}x{model} mesh needs {data * model} devices; {len(devices)} are visible "
            f"({devices[0].platform}); on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
            f"makes N virtual devices")
    grid = np.array(devices[: data * model]).reshape(data, model)
    return Mesh(grid, (DATA, MODEL), axis_types=(AxisType.Auto, AxisType.Auto))


def _key_name(key: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return str(key)


def _flat(tree: Any) -> list[tuple[tuple, Any]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(tuple(_key_name(k) for k in path), leaf) for path, leaf in leaves]


class Layout:
    """Where a model's training state lives on ``mesh``.

    Parameters
    ----------
    mesh : Mesh
        Axes ``data`` and ``model`` (see :func:`make_mesh`).
    model : recjax.train.step.Model
        Its ``tables`` name the row-sharded parameters.

    Attributes
    ----------
    rows : dict
        Path of each table -> its real number of rows.
    row_multiple : int
        Tables are stored with rows padded to a multiple of this (the model axis size).
    """

    def __init__(self, mesh: Mesh, model: Any) -> None:
        self.mesh = mesh
        self.row_multiple = mesh.shape[MODEL]
        self.rows = {path: int(np.shape(leaf)[0]) for path, leaf in _flat(model.params)
                     if path in model.tables}

    @property
    def multi_process(self) -> bool:
        return jax.process_count() > 1

    def _padded(self, rows: int) -> int:
        return -(-rows // self.row_multiple) * self.row_multiple

    def _is_table_storage(self, path: tuple, shape: tuple) -> bool:
        """A table's (padded) storage: the parameter itself, or an optimiser moment
        whose path ends with the table's path."""
        return bool(shape) and any(path[-len(table_path):] == table_path and shape[0] == self._padded(rows)
                                   for table_path, rows in self.rows.items())

    def pad(self, params: dict) -> dict:
        """Tables padded with zero rows to a multiple of the model axis."""
        def pad(path: tuple, leaf: Any) -> Any:
            rows = self.rows.get(path)
            if rows is None or self._padded(rows) == rows:
                return leaf
            widths = [(0, self._padded(rows) - rows)] + [(0, 0)] * (np.ndim(leaf) - 1)
            return jnp.pad(leaf, widths)
        return _map_with_path(pad, params)

    def spec(self, path: tuple, leaf: Any) -> P:
        """Rows over ``model`` for table storage, replicated otherwise."""
        shape = tuple(leaf.shape)
        if self._is_table_storage(path, shape):
            return P(MODEL, *([None] * (len(shape) - 1)))
        return P()

    def shardings(self, tree: Any) -> Any:
        """A ``NamedSharding`` for every leaf of ``tree`` (arrays or ``jax.ShapeDtypeStruct``:
        params, optimiser state, a whole :class:`~recjax.train.step.TrainState`)."""
        return _map_with_path(lambda path, leaf: NamedSharding(self.mesh, self.spec(path, leaf)), tree)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def batch(self) -> NamedSharding:
        """Leading axis split over ``data``."""
        return NamedSharding(self.mesh, P(DATA))

    def place_data(self, arrays: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Training arrays (leading axis = examples) split over the data axis.

        Rows are padded to a multiple of the data axis (the padding is never drawn:
        an epoch permutes the real examples only). Each process transfers only the
        rows its own devices hold.
        """
        parts = self.mesh.shape[DATA]

        def put(values: np.ndarray) -> jax.Array:
            values = np.asarray(values)
            n = len(values)
            padded = -(-n // parts) * parts
            shape = (padded, *values.shape[1:])
            sharding = NamedSharding(self.mesh, P(DATA, *([None] * (values.ndim - 1))))
            index = sharding.addressable_devices_indices_map(shape).values()
            start = min(i[0].start or 0 for i in index)
            stop = max(padded if i[0].stop is None else i[0].stop for i in index)
            local = values[start:min(stop, n)]
            if stop > n:  # this process holds the padding
                local = np.concatenate([local, np.repeat(values[-1:], stop - max(start, n), 0)])
            return jax.make_array_from_process_local_data(sharding, local, shape)

        return {name: put(values) for name, values in arrays.items()}

    def replicate(self, arrays: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Arrays (identical on every process) copied whole to every device of the mesh."""
        return {name: jax.make_array_from_callback(np.shape(values), self.replicated,
                                                   lambda index, v=values: np.asarray(v)[index])
                for name, values in arrays.items()}

    def to_host(self, params: dict) -> dict:
        """Unpadded NumPy copies (gathered from every process when there are several)."""
        if self.multi_process:
            params = multihost_utils.process_allgather(params, tiled=True)
        return _map_with_path(lambda path, leaf: np.asarray(leaf)[: self.rows[path]]
                              if path in self.rows else np.asarray(leaf), params)

    def shard_shapes(self, params: dict) -> dict:
        """Path -> the shape each device holds (to check that tables really are split)."""
        return {"/".join(map(str, path)): tuple(leaf.sharding.shard_shape(leaf.shape))
                for path, leaf in _flat(params)}


def _map_with_path(fn: Any, tree: Any) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: fn(tuple(_key_name(k) for k in path), leaf), tree)
