"""Exact top-k against an item table sharded by rows over a JAX device mesh.

For catalogues too large for one device (10M items x 64 dims is 2.56 GB of
float32): :func:`shard_items` places the table row-sharded over one mesh axis, and
:func:`sharded_topk` answers queries without ever gathering it.  Inside one
``jax.shard_map`` program each device

1. walks its own rows block by block (a ``lax.scan``: one matmul per block, the
   block's top-k merged into a running top-k, as in the single-device
   ``backend="jax"``), so memory stays bounded by one block of scores however many
   rows a shard holds;
2. re-scores its k local candidates exactly from its own rows, and turns their
   local row numbers into global item ids (shard offset added; the zero rows that
   pad the table to a multiple of the shard count are masked to -inf);
3. all-gathers the k x S candidates of the S shards (``lax.all_gather``, a few
   kilobytes) and keeps the k best: shards are concatenated in id order and
   ``lax.top_k`` prefers the lower index among equal values, so ties still go to
   the lower id.

Items are split over ``axis`` and replicated over the mesh's other axes; the
queries are replicated over ``axis`` and split over the other axes (a 2 x 4
"data" x "model" mesh holds two copies of the table, each over 4 devices, and
each copy answers half of the queries).  Queries go in chunks of a fixed padded
shape, so repeated calls reuse the compiled program.

The answer follows :func:`recjax.retrieval.topk` (ordering, ties, ``k`` clipped to
N, -1 / -inf padding, exclusions) with the arithmetic of ``backend="jax"``:
float32 unless ``jax_enable_x64`` is set, so float64 inputs give float32 scores
without it.  Near-ties (within float32 rounding) may be resolved differently from
the float64 reference; exact ties never are.

Example
-------
>>> import jax
>>> import numpy as np
>>> from recjax.retrieval.sharded import shard_items, sharded_topk
>>> mesh = jax.make_mesh((1,), ("model",), axis_types=(jax.sharding.AxisType.Auto,))
>>> items = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)
>>> table = shard_items(items, mesh, axis="model")
>>> res = sharded_topk(np.array([[1.0, 0.2]], dtype=np.float32), table, 2)
>>> res.ids.tolist(), res.scores.astype(float).round(2).tolist()
([[0, 2]], [[1.0, 0.84]])
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from recjax._checks import positive_int
from recjax.retrieval import _jax
from recjax.retrieval._reference import l2_centre, order_rows
from recjax.retrieval.topk import (
    METRICS,
    TopK,
    _check_k,
    _check_shapes,
    _csr,
    _item_mask,
    _matrix,
    _self_ids,
)

__all__ = ["ShardedItems", "shard_items", "sharded_topk"]

_CHUNK_QUERIES = 1024  # queries per device per pass
_SCORE_BYTES = 64 << 20  # one device's block of float32 scores
_LANE = 128  # block sizes are multiples of this
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_MAX_ITEMS = int(np.iinfo(np.int32).max)


@dataclasses.dataclass(frozen=True, eq=False)
class ShardedItems:
    """An item table placed row-sharded over one axis of a device mesh.

    Built by :func:`shard_items`; pass it to :func:`sharded_topk`.

    Attributes
    ----------
    table : jax.Array, shape [n_padded, d], float32 (float64 under jax_enable_x64)
        The items, then zero rows up to a multiple of the shard count, sharded with
        ``NamedSharding(mesh, P(axis, None))``: each device holds ``n_padded / S``
        consecutive rows.
    n_items : int
        N, the true number of items (rows past it are never returned).
    axis : str
        The mesh axis the rows are split over.
    max_abs : float
        Largest |value| in the table (checked against the queries for overflow).
    centre : np.ndarray float64 [d] or None
        The shift that keeps L2 scores precise (see ``_reference.l2_centre``).
    """

    table: jax.Array = dataclasses.field(repr=False)
    n_items: int
    axis: str
    max_abs: float = dataclasses.field(repr=False)
    centre: np.ndarray | None = dataclasses.field(repr=False)

    @property
    def mesh(self) -> Mesh:
        """The device mesh holding the table."""
        return self.table.sharding.mesh

    @property
    def n_shards(self) -> int:
        """S, the number of row blocks (the size of ``axis``)."""
        return self.mesh.shape[self.axis]


def shard_items(items: Any, mesh: Mesh, axis: str = "model") -> ShardedItems:
    """Place an item table on ``mesh``, its rows split over ``axis``.

    A NumPy table is copied to the devices one shard at a time (never whole onto
    one device); a JAX array, sharded or not, is resharded (no copy when it is
    already row-sharded over ``axis`` with N a multiple of S).

    Parameters
    ----------
    items : array, shape [N, d], float32 or float64 (NumPy or JAX)
    mesh : jax.sharding.Mesh
        Any shape; the table is replicated over the axes other than ``axis``.
    axis : str
        Name of the mesh axis to split the rows over (S devices).

    Returns
    -------
    ShardedItems
        ``table`` has ``ceil(N / S) * S`` rows, the padding rows zero.

    Raises
    ------
    TypeError
        ``mesh`` is not a Mesh; non-float or non-array items.
    ValueError
        ``axis`` not in the mesh; items not 2-D, empty (N = 0 or d = 0), holding
        NaN / inf, or more than 2**31 - 1 rows.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh {tuple(mesh.axis_names)}")
    if isinstance(items, jax.Array):
        x = _jax.device_matrix(items, "items")  # stays where it is
    else:
        x = _matrix(items, "items")
    n_items, d = x.shape
    if n_items < 1:
        raise ValueError("items is empty (N = 0)")
    if d < 1:
        raise ValueError("vectors must have at least one dimension (d >= 1)")
    n_shards = mesh.shape[axis]
    n_padded = -(-n_items // n_shards) * n_shards
    if n_padded > _MAX_ITEMS:
        raise ValueError(f"at most {_MAX_ITEMS} items (ids are int32 on the devices), "
                         f"got {n_items}")
    table = _place(x, n_padded, NamedSharding(mesh, P(axis, None)))
    big = _jax.max_abs(table, "items")
    return ShardedItems(table, n_items, axis, big, l2_centre(x))


def _place(x: np.ndarray | jax.Array, n_padded: int, sharding: NamedSharding) -> jax.Array:
    """``x`` zero-padded to n_padded rows, laid out with ``sharding``."""
    if isinstance(x, jax.Array):
        if n_padded > x.shape[0]:
            x = jnp.pad(x, ((0, n_padded - x.shape[0]), (0, 0)))
        return jax.device_put(x, sharding)
    n_items, dtype = x.shape[0], jax.dtypes.canonicalize_dtype(x.dtype)

    def rows(index: tuple[slice, slice]) -> np.ndarray:  # one device's rows
        lo, hi, _ = index[0].indices(n_padded)
        if hi <= n_items:
            return x[lo:hi].astype(dtype, copy=False)  # a view when no cast is needed
        block = np.zeros((hi - lo, x.shape[1]), dtype)
        block[: max(0, min(hi, n_items) - lo)] = x[lo:hi]
        return block

    return jax.make_array_from_callback((n_padded, x.shape[1]), sharding, rows)


def sharded_topk(
    queries: Any,
    items: ShardedItems,
    k: int,
    *,
    metric: str = "dot",
    exclude: Any = None,
    exclude_items: Any = None,
    exclude_self: Any = None,
    block_size: int | None = None,
) -> TopK:
    """The ``k`` best items of a sharded table for each query.

    Parameters
    ----------
    queries : array, shape [Q, d] or [d] (a single query), float32 or float64
        NumPy or JAX.
    items : ShardedItems
        From :func:`shard_items`.
    k : int
        Results per query, >= 1; values above N are clipped to N.
    metric : {"dot", "cosine", "l2"}
    exclude, exclude_items, exclude_self
        As in :func:`recjax.retrieval.topk` (item ids are global row numbers).
    block_size : int, optional
        Rows each device scores at once (default: one 64 MiB block of scores per
        device; at most the rows of one shard).  The answer does not depend on it.

    Returns
    -------
    TopK
        NumPy ``ids`` int64 and ``scores`` (the JAX dtype of queries and table),
        shape [Q, min(k, N)], or [min(k, N)] for a single 1-D query.

    Raises
    ------
    TypeError
        ``items`` not a ShardedItems; non-float queries; non-integer k or ids.
    ValueError
        Bad shapes, d mismatch, k < 1, NaN/inf queries, values so large that scores
        overflow float32, malformed exclusions, unknown metric.
    """
    if not isinstance(items, ShardedItems):
        raise TypeError(f"items must be a ShardedItems from shard_items(), "
                        f"got {type(items).__name__}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    single = np.ndim(queries) == 1
    if single:
        queries = (queries if hasattr(queries, "ndim") else np.asarray(queries))[None, :]
    q = _jax.device_matrix(queries, "queries")
    n_q = _check_shapes(q, items.table)[0]
    k = _check_k(k, items.n_items)
    _check_magnitude(max(_jax.max_abs(q, "queries"), items.max_abs), q.shape[1])
    indptr, indices = (_csr(exclude, n_q, items.n_items, "exclude") if exclude is not None
                       else (None, None))
    mask = _item_mask(exclude_items, items.n_items)
    self_ids = _self_ids(exclude_self, n_q, items.n_items)
    block = None if block_size is None else positive_int(block_size, "block_size")
    ids, scores = _search(q, items, k, metric, block, indptr, indices, mask, self_ids)
    return TopK(ids[0], scores[0]) if single else TopK(ids, scores)


def _check_magnitude(big: float, d: int) -> None:
    """The overflow bound of ``topk``: |2(q-c).(x-c)| + |x-c|^2 must fit float32."""
    if 8.0 * d * big * big >= _FLOAT32_MAX:
        raise ValueError(f"vector values up to {big:.3g} are too large: scores would "
                         f"overflow float32 (keep |values| below "
                         f"{np.sqrt(_FLOAT32_MAX / (8.0 * d)):.3g})")


def _search(q, items, k, metric, block, indptr, indices, mask, self_ids):
    """Validated queries, chunk by chunk -> (ids int64 [Q, k], scores [Q, k]) on the host."""
    mesh, axis, table = items.mesh, items.axis, items.table
    rest = tuple(name for name in mesh.axis_names if name != axis)
    n_rest = math.prod(mesh.shape[name] for name in rest)
    n_q, out_dtype = q.shape[0], np.result_type(q.dtype, table.dtype)
    if n_q == 0:
        return np.empty((0, k), np.int64), np.empty((0, k), out_dtype)
    per_device = min(_CHUNK_QUERIES, _jax._next_pow2(-(-n_q // n_rest)))
    chunk = per_device * n_rest
    rows = table.shape[0] // items.n_shards
    fit = max(_LANE, _SCORE_BYTES // (4 * per_device) // _LANE * _LANE)
    block = min(block or fit, rows)
    centre = np.zeros(q.shape[1]) if items.centre is None else items.centre
    centre = jnp.asarray(centre, table.dtype)
    padded_mask = np.ones(table.shape[0], bool)  # padding rows are never returned
    padded_mask[: items.n_items] = False if mask is None else mask
    mask_dev = jax.device_put(padded_mask, NamedSharding(mesh, P(axis)))
    q_sharding = NamedSharding(mesh, P(rest or None, None))
    found = []
    for lo in range(0, n_q, chunk):
        hi = min(n_q, lo + chunk)
        qc = jax.device_put(jnp.pad(q[lo:hi], ((0, chunk - (hi - lo)), (0, 0))), q_sharding)
        p_row, p_col = _jax._pairs(lo, hi, indptr, indices, self_ids, chunk)
        found.append((hi - lo, _chunk_topk(qc, table, mask_dev, centre, p_row, p_col, mesh=mesh,
                                           axis=axis, metric=metric, k=k, block=block)))
    ids = np.concatenate([np.asarray(i, np.int64)[:n] for n, (i, _) in found])
    scores = np.concatenate([np.asarray(s, np.float64)[:n] for n, (_, s) in found])
    return order_rows(ids, scores, metric, out_dtype)


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "metric", "k", "block"))
def _chunk_topk(q, table, mask, centre, p_row, p_col, *, mesh, axis, metric, k, block):
    """Global top-k ids [chunk, k] and exact scores of one chunk of queries."""
    rest = tuple(name for name in mesh.axis_names if name != axis)
    q_spec = P(rest or None, None)
    local = functools.partial(_shard_topk, axis=axis, rest=rest, metric=metric, k=k, block=block)
    return jax.shard_map(local, mesh=mesh, in_specs=(q_spec, P(axis, None), P(axis), P(), P(), P()),
                         out_specs=(q_spec, q_spec))(q, table, mask, centre, p_row, p_col)


def _shard_topk(q, rows, mask, centre, p_row, p_col, *, axis, rest, metric, k, block):
    """On one device: the top-k of its rows, then the merge of every shard's top-k."""
    offset = jax.lax.axis_index(axis) * rows.shape[0]
    first_query = jax.lax.axis_index(rest) * q.shape[0] if rest else 0
    p_row = p_row - first_query
    p_row = jnp.where((p_row >= 0) & (p_row < q.shape[0]), p_row, q.shape[0])  # elsewhere: drop
    sel, local = _scan_rows(_jax._prepare_queries(q, centre, metric), rows, mask, centre,
                            p_row, p_col - offset, metric, k, block, (axis, *rest))
    exact = _jax._rescore(q, rows, local, metric)
    ids = jnp.where(local >= 0, local + offset, -1)
    gather = functools.partial(jax.lax.all_gather, axis_name=axis, axis=1, tiled=True,
                               to="invarying")  # [chunk, S k], shards in id order
    sel, pos = jax.lax.top_k(gather(sel), k)
    ids = jnp.take_along_axis(gather(ids), pos, axis=1)
    return jnp.where(sel == -jnp.inf, -1, ids), jnp.take_along_axis(gather(exact), pos, axis=1)


def _scan_rows(q, rows, mask, centre, p_row, p_col, metric, k, block, mesh_axes):
    """Running top-k (selection scores, local row numbers) of q [c, d] over rows [R, d].

    Blocks start at multiples of ``block``; the last one is moved back to end at R
    (no padding needed) and its rows already seen are masked.  The carry varies over
    ``mesh_axes`` (every axis: rows differ along one, queries along the others).
    """
    n_rows = rows.shape[0]

    def step(carry, b):
        best_s, best_i = carry
        start = jnp.minimum(b * block, n_rows - block)
        seen = start + jnp.arange(block, dtype=jnp.int32) < b * block  # the last block's overlap
        drop = jax.lax.dynamic_slice_in_dim(mask, start, block) | seen
        xb, bias = _jax._prepare_items(jax.lax.dynamic_slice_in_dim(rows, start, block), drop,
                                       centre, metric, block)
        s = jnp.matmul(q, xb.T, precision=jax.lax.Precision.HIGHEST) + bias[None, :]
        col = p_col - start
        col = jnp.where((col >= 0) & (col < block), col, block)  # elsewhere: drop
        s = s.at[p_row, col].set(-jnp.inf, mode="drop")
        block_s, pos = jax.lax.top_k(s, min(k, block))  # then merge k + k, not k + block
        cand_s = jnp.concatenate([best_s, block_s], axis=1)
        cand_i = jnp.concatenate([best_i, start + pos.astype(jnp.int32)], axis=1)
        top_s, pos = jax.lax.top_k(cand_s, k)
        return (top_s, jnp.take_along_axis(cand_i, pos, axis=1)), None

    dtype = jnp.result_type(q.dtype, rows.dtype)
    init = (jnp.full((q.shape[0], k), -jnp.inf, dtype), jnp.full((q.shape[0], k), -1, jnp.int32))
    init = jax.lax.pcast(init, mesh_axes, to="varying")
    n_blocks = -(-n_rows // block)
    (top_s, top_i), _ = jax.lax.scan(step, init, jnp.arange(n_blocks, dtype=jnp.int32))
    return top_s, top_i
