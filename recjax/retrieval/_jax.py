"""JAX backend of :func:`recjax.retrieval.topk`: for embeddings living on a GPU/TPU.

Queries are taken in chunks; for each chunk a jit-compiled ``lax.scan`` walks the
items block by block: block scores by one matmul, exclusions scattered in as -inf,
then ``jax.lax.top_k`` over the running top-k concatenated with the block (the
running entries, with lower ids, come first, and ``top_k`` prefers the lower index
among equal values: ties go to the lower id).  The k kept candidates are re-scored
in the arrays' precision (difference form for L2) and sorted on the host.

Shapes are padded (queries to the chunk size, items to a block multiple, exclusion
pairs to a power of two) so that repeated calls reuse the compiled functions.
Arithmetic is JAX's default precision: float32 unless ``jax_enable_x64`` is set.
This module imports JAX; :mod:`recjax.retrieval` imports it only for ``backend="jax"``.

Example
-------
>>> import numpy as np
>>> from recjax.retrieval import topk
>>> items = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)
>>> topk(items, items, 2, metric="cosine", exclude_self=True, backend="jax").ids.tolist()
[[2, 1], [2, 0], [0, 1]]
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from recjax.retrieval._reference import l2_centre, order_rows

__all__ = ["device_matrix", "max_abs", "topk_jax"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_CHUNK_QUERIES = 1024
_SCORE_BYTES = 64 << 20  # one chunk's block of scores
_LANE = 128  # block sizes are multiples of this


def device_matrix(x: Any, name: str) -> jax.Array:
    """``x`` as a 2-D float JAX array (device arrays are not copied to the host)."""
    if x is None or isinstance(x, (str, bytes)) or sp.issparse(x):
        raise TypeError(f"{name} must be a dense float array, got {type(x).__name__}")
    arr = x if isinstance(x, jax.Array) else np.asarray(x)
    if np.dtype(arr.dtype) not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, d], got shape {tuple(arr.shape)}")
    return jnp.asarray(arr)


def max_abs(a: jax.Array, name: str) -> float:
    """Largest |value| of ``a``; raises ValueError on NaN or inf."""
    if a.size == 0:
        return 0.0
    lo, hi = (float(v) for v in _min_max(a))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return max(-lo, hi)


@jax.jit
def _min_max(a):
    return jnp.min(a), jnp.max(a)


def topk_jax(
    queries: jax.Array,
    items: jax.Array,
    k: int,
    metric: str,
    *,
    block_size: int | None = None,
    exclude_indptr: np.ndarray | None = None,
    exclude_indices: np.ndarray | None = None,
    item_mask: np.ndarray | None = None,
    self_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k on the JAX default device; arguments as validated by ``topk``.

    Returns
    -------
    ids : np.ndarray int64, shape [Q, k]
    scores : np.ndarray, shape [Q, k], the arrays' dtype
    """
    n_q, n_items = queries.shape[0], items.shape[0]
    chunk = min(_CHUNK_QUERIES, _next_pow2(max(n_q, 1)))
    block = _block(block_size, chunk, n_items)
    n_pad = -(-n_items // block) * block
    mask = np.zeros(n_items, bool) if item_mask is None else item_mask
    centre = l2_centre(items) if metric == "l2" else None
    centre = jnp.asarray(np.zeros(items.shape[1]) if centre is None else centre, items.dtype)
    xt, bias = _prepare_items(items, jnp.asarray(mask), centre, metric, n_pad)
    xt, bias = xt.reshape(n_pad // block, block, -1), bias.reshape(n_pad // block, block)
    out_ids, out_scores = [], []
    for lo in range(0, n_q, chunk):
        q = queries[lo : lo + chunk]
        rows = q.shape[0]
        q = jnp.pad(q, ((0, chunk - rows), (0, 0)))
        p_row, p_col = _pairs(lo, lo + rows, exclude_indptr, exclude_indices, self_ids, chunk)
        top_s, top_i = _scan(_prepare_queries(q, centre, metric), xt, bias, p_row, p_col, k)
        top_i = jnp.where(top_s == -jnp.inf, -1, top_i)
        exact = _rescore(q, items, top_i, metric)
        out_ids.append(np.asarray(top_i[:rows], np.int64))
        out_scores.append(np.asarray(exact[:rows], np.float64))
    if n_q == 0:
        return np.empty((0, k), np.int64), np.empty((0, k), queries.dtype)
    ids = np.concatenate(out_ids)
    return order_rows(ids, np.concatenate(out_scores), metric, np.dtype(queries.dtype))


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _block(block_size: int | None, chunk: int, n_items: int) -> int:
    if block_size is not None:
        return min(block_size, n_items)
    fit = max(_LANE, _SCORE_BYTES // (4 * chunk) // _LANE * _LANE)
    return min(fit, -(-n_items // _LANE) * _LANE)


@functools.partial(jax.jit, static_argnames=("metric", "n_pad"))
def _prepare_items(x, mask, centre, metric, n_pad):
    """Items in selection space padded to n_pad rows, and the per-item bias."""
    bias = jnp.zeros(x.shape[0], x.dtype)
    if metric == "cosine":
        x = _normalise(x)
    elif metric == "l2":
        x = x - centre
        bias = -jnp.sum(x * x, axis=1)
    bias = jnp.where(mask, -jnp.inf, bias)
    pad = n_pad - x.shape[0]
    return jnp.pad(x, ((0, pad), (0, 0))), jnp.pad(bias, (0, pad), constant_values=-jnp.inf)


@functools.partial(jax.jit, static_argnames=("metric",))
def _prepare_queries(q, centre, metric):
    if metric == "cosine":
        return _normalise(q)
    if metric == "l2":
        return 2.0 * (q - centre)
    return q


def _normalise(x):
    norm = jnp.linalg.norm(x, axis=1, keepdims=True)
    return jnp.where(norm > 0, x / jnp.where(norm > 0, norm, 1), 0)


def _pairs(lo, hi, indptr, indices, self_ids, chunk):
    """Excluded (row - lo, item) pairs of query rows [lo, hi), padded to a power of two
    with row = chunk (out of range: dropped by the scatter)."""
    rows, cols = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    if indptr is not None:
        rows.append(np.repeat(np.arange(hi - lo), np.diff(indptr[lo : hi + 1])))
        cols.append(indices[indptr[lo] : indptr[hi]])
    if self_ids is not None:
        rows.append(np.arange(hi - lo))
        cols.append(self_ids[lo:hi])
    row, col = np.concatenate(rows), np.concatenate(cols)
    size = _next_pow2(max(64, row.shape[0]))
    return (jnp.asarray(np.pad(row, (0, size - row.shape[0]), constant_values=chunk), jnp.int32),
            jnp.asarray(np.pad(col, (0, size - col.shape[0])), jnp.int32))


@functools.partial(jax.jit, static_argnames=("k",))
def _scan(q, blocks, bias, p_row, p_col, k):
    """Running top-k of q [chunk, d] over item blocks [n_blocks, block, d]."""
    block = blocks.shape[1]

    def step(carry, xs):
        best_s, best_i = carry
        xb, bb, b = xs
        s = jnp.matmul(q, xb.T, precision=jax.lax.Precision.HIGHEST) + bb[None, :]
        local = p_col - b * block
        local = jnp.where((local >= 0) & (local < block), local, block)  # elsewhere: drop
        s = s.at[p_row, local].set(-jnp.inf, mode="drop")
        ids = b * block + jnp.arange(block, dtype=jnp.int32)
        cand_s = jnp.concatenate([best_s, s], axis=1)
        cand_i = jnp.concatenate([best_i, jnp.broadcast_to(ids, s.shape)], axis=1)
        top_s, pos = jax.lax.top_k(cand_s, k)
        return (top_s, jnp.take_along_axis(cand_i, pos, axis=1)), None

    init = (jnp.full((q.shape[0], k), -jnp.inf, q.dtype), jnp.full((q.shape[0], k), -1, jnp.int32))
    n_blocks = blocks.shape[0]
    (top_s, top_i), _ = jax.lax.scan(step, init, (blocks, bias, jnp.arange(n_blocks, dtype=jnp.int32)))
    return top_s, top_i


@functools.partial(jax.jit, static_argnames=("metric",))
def _rescore(q, items, ids, metric):
    """Scores of items ids [chunk, k] for q [chunk, d] (L2 from the differences)."""
    x = items[jnp.maximum(ids, 0)]
    qe = q[:, None, :]
    if metric == "l2":
        return jnp.sqrt(jnp.sum(jnp.square(qe - x), axis=-1))
    s = jnp.sum(qe * x, axis=-1)
    if metric == "cosine":
        den = jnp.linalg.norm(qe, axis=-1) * jnp.linalg.norm(x, axis=-1)
        s = jnp.where(den > 0, s / jnp.where(den > 0, den, 1), 0)
    return s
