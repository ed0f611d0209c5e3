"""Exact top-k retrieval: the k best items for each query vector.

:func:`topk` validates and normalises its arguments, then runs one backend:

* ``"cython"`` (the CPU default): the compiled kernel ``recjax._ext.topk``, blocked,
  multi-threaded, memory ``O(threads x block + Q x k)``;
* ``"numpy"``: the float64 brute-force reference (used, with a warning, when the
  extension is not built);
* ``"jax"``: blocked scores and ``jax.lax.top_k`` under ``jit``, for embeddings that
  live on a GPU/TPU.

Semantics shared by every backend:

* ``ids`` int64 ``[Q, k]`` and ``scores`` ``[Q, k]`` best first: highest dot product
  or cosine, smallest Euclidean distance (the distance itself, not squared, not
  negated).  Ties are broken by the lower item id.
* ``k > N`` is clipped to ``N`` (the result has ``N`` columns).  Where fewer than
  ``k`` items remain after the exclusions, the tail holds id -1 and score -inf
  (+inf for L2).
* float32 and float64 inputs are accepted (a float32/float64 mix is computed as
  float64).  The CPU kernel selects candidates with float32 arithmetic, then
  re-scores the k kept ones exactly in float64 and returns scores in the input
  dtype: near-ties (within float32 rounding) may be resolved differently from an
  exact float64 search, exact ties never are.
* Cosine of a zero vector with anything is 0.
* Non-contiguous, Fortran-ordered or read-only arrays are accepted (copied when needed).

Threads: the compiled kernel shares the queries out between ``num_threads`` OpenMP
threads (default: all cores; fewer for small problems).  It calls no BLAS, so it
cannot oversubscribe the cores with a BLAS thread pool and nothing needs pinning.

Example
-------
>>> import numpy as np
>>> from recjax.retrieval import topk
>>> items = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)
>>> res = topk(np.array([[1.0, 0.2]], dtype=np.float32), items, 2)
>>> res.ids.tolist(), res.scores.astype(float).round(2).tolist()
([[0, 2]], [[1.0, 0.84]])
>>> topk(items[:1], items, 2, metric="l2", exclude_self=[0]).ids.tolist()
[[2, 1]]
"""

from __future__ import annotations

import os
import warnings
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from recjax._checks import positive_int
from recjax.retrieval import _reference
from recjax.retrieval._reference import l2_centre, topk_reference

__all__ = ["TopK", "topk", "similar_items", "recommend", "dense_topk", "kernel_available"]

METRICS = ("dot", "cosine", "l2")
BACKENDS = ("auto", "cython", "numpy", "jax")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_BLOCK_BYTES = 1 << 20  # an item block (float32 rows) that stays in a core's L2 cache
_RESERVOIR_BYTES = 256 << 20  # candidates held at once: bounds the queries per pass
_WORK_PER_THREAD = 1 << 23  # multiply-adds (~0.1 ms) below which a thread is not worth waking
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_DENSE_BYTES = 64 << 20  # temporaries of one block of rows in dense_topk
# per score: the float64 copy, the partition, masks, the int64 cumsum, the chosen ids, their order
_DENSE_BYTES_PER_SCORE = 64


class TopK(NamedTuple):
    """The k best items per query, best first (ties by lower id).

    Attributes
    ----------
    ids : np.ndarray int64, shape [Q, k] (or [k] for a single query)
        Item ids; -1 where fewer than k items were left.
    scores : np.ndarray, same shape, float32 (float64 when an input is float64)
        Dot product, cosine, or Euclidean distance; -inf (+inf for L2) where ids is -1.
    """

    ids: np.ndarray
    scores: np.ndarray


def kernel_available() -> bool:
    """True when the compiled CPU kernel ``recjax._ext.topk`` can be imported."""
    return _kernel() is not None


def topk(
    queries: Any,
    items: Any,
    k: int,
    *,
    metric: str = "dot",
    exclude: Any = None,
    exclude_items: Any = None,
    exclude_self: Any = None,
    backend: str = "auto",
    num_threads: int | None = None,
    block_size: int | None = None,
) -> TopK:
    """The ``k`` best items for each query.

    Parameters
    ----------
    queries : array, shape [Q, d] or [d] (a single query), float32 or float64
    items : array, shape [N, d], float32 or float64
    k : int
        Results per query, >= 1; values above N are clipped to N.
    metric : {"dot", "cosine", "l2"}
    exclude : scipy.sparse matrix [Q, N] or (indptr, indices) pair, optional
        Per-query items that must not be returned (e.g. already rated).  Indices may
        be unsorted or repeated.
    exclude_items : bool array, shape [N], optional
        True: the item is never returned, for any query.
    exclude_self : True or int array [Q], optional
        Item id of each query itself, never returned (item-item neighbours).  True
        means query ``i`` is item ``i`` (needs Q == N).
    backend : {"auto", "cython", "numpy", "jax"}
        "auto": the compiled kernel, or the NumPy reference (with a warning) when the
        extension is not built.
    num_threads : int, optional
        Most kernel threads to use (default: all cores available to this process);
        small problems use fewer, one per ~8M multiply-adds.  The answer does not
        depend on it.
    block_size : int, optional
        Items scored per block (default: as many as fit in 1 MiB of float32).  The
        answer does not depend on it.

    Returns
    -------
    TopK
        ``ids`` int64 and ``scores`` (queries' float dtype), shape [Q, min(k, N)],
        or [min(k, N)] for a single 1-D query.

    Raises
    ------
    TypeError
        Non-float vectors, non-integer k / ids, a non-bool mask, unknown types.
    ValueError
        Bad shapes, d mismatch, k < 1, NaN/inf values, values so large that scores
        overflow float32, malformed exclusions, unknown metric/backend.
    """
    single = np.ndim(queries) == 1
    if single:
        queries = (queries if hasattr(queries, "ndim") else np.asarray(queries))[None, :]
    res = _search(queries, items, k, metric, exclude, exclude_items, exclude_self, backend,
                  num_threads, block_size)
    return TopK(res.ids[0], res.scores[0]) if single else res


def similar_items(
    item_vectors: Any,
    item_ids: Any,
    k: int,
    *,
    metric: str = "cosine",
    exclude_items: Any = None,
    backend: str = "auto",
    num_threads: int | None = None,
    block_size: int | None = None,
) -> TopK:
    """The ``k`` nearest items to each given item, the item itself excluded.

    Parameters
    ----------
    item_vectors : array, shape [N, d], float32 or float64
    item_ids : int or int array [n]
        Item indices (rows of ``item_vectors``).
    k : int
    metric : {"cosine", "dot", "l2"}
    exclude_items, backend, num_threads, block_size
        As in :func:`topk`.

    Returns
    -------
    TopK
        Shape [k] for a scalar id, [n, k] for an array (k clipped to N; the last
        column is -1 when k >= N, the item itself being excluded).
    """
    items = _vectors(item_vectors, "item_vectors", backend)
    ids, scalar = _ids(item_ids, items.shape[0], "item_ids")
    res = _search(items[ids], items, k, metric, None, exclude_items, ids, backend,
                  num_threads, block_size)
    return TopK(res.ids[0], res.scores[0]) if scalar else res


def recommend(
    user_vectors: Any,
    item_vectors: Any,
    user_ids: Any,
    k: int,
    *,
    exclude: Any = None,
    metric: str = "dot",
    exclude_items: Any = None,
    backend: str = "auto",
    num_threads: int | None = None,
    block_size: int | None = None,
) -> TopK:
    """The ``k`` best items for each given user.

    Parameters
    ----------
    user_vectors : array, shape [U, d], float32 or float64
    item_vectors : array, shape [N, d]
    user_ids : int or int array [n]
        User indices (rows of ``user_vectors``).
    k : int
    exclude : scipy.sparse matrix [U, N] or (indptr, indices) pair, optional
        Items never to recommend to a user (e.g. the ratings matrix: already rated);
        the rows of ``user_ids`` are used.
    metric, exclude_items, backend, num_threads, block_size
        As in :func:`topk`.

    Returns
    -------
    TopK
        Shape [k] for a scalar id, [n, k] for an array.
    """
    users = _vectors(user_vectors, "user_vectors", backend)
    ids, scalar = _ids(user_ids, users.shape[0], "user_ids")
    n_items = np.shape(item_vectors)[0] if np.ndim(item_vectors) == 2 else -1
    if exclude is not None and n_items >= 0:
        indptr, indices = _csr(exclude, users.shape[0], n_items, "exclude")
        exclude = _take_rows(indptr, indices, ids)
    res = _search(users[ids], item_vectors, k, metric, exclude, exclude_items, None, backend,
                  num_threads, block_size)
    return TopK(res.ids[0], res.scores[0]) if scalar else res


def dense_topk(scores: Any, k: int, *, exclude: Any = None, block_size: int | None = None) -> TopK:
    """The ``k`` best columns of each row of a dense score matrix (higher is better).

    For scores computed elsewhere (a network's outputs for every item, a blend of
    models): the reference's exact float64 selection (:mod:`recjax.retrieval._reference`,
    the oracle of the kernel's tests), with the semantics of :func:`topk`.

    Parameters
    ----------
    scores : float array [Q, N]
    k : int
        Clipped to N.
    exclude : scipy.sparse matrix [Q, N] or (indptr, indices) pair, optional
        Entries never returned.
    block_size : int, optional
        Rows ranked at a time (default: as many as keep the temporaries near 64 MiB);
        the answer does not depend on it.

    Returns
    -------
    TopK
        ids int64 [Q, min(k, N)], scores float64, best first, ties by the lower id;
        where fewer than ``k`` entries are left (excluded, or scored -inf), the tail
        is id -1 with score -inf.

    Raises
    ------
    ValueError
        ``scores`` not 2-D or holding NaN, ``k < 1``, ``exclude`` of another shape.

    Example
    -------
    >>> import numpy as np, scipy.sparse as sp
    >>> scores = np.array([[0.5, 2.0, 2.0, -1.0]])
    >>> top = dense_topk(scores, 3, exclude=sp.csr_matrix(np.array([[1, 0, 0, 1]])))
    >>> top.ids.tolist(), top.scores.tolist()
    ([[1, 2, -1]], [[2.0, 2.0, -inf]])
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be [queries, items], got shape {s.shape}")
    n_q, n_items = s.shape
    k = _check_k(k, n_items)
    indptr = indices = None
    if exclude is not None:
        indptr, indices = _csr(exclude, n_q, n_items, "exclude")
    rows = (None if block_size is None else positive_int(block_size, "block_size")) or max(
        1, _DENSE_BYTES // (_DENSE_BYTES_PER_SCORE * max(n_items, 1)))
    ids = np.empty((n_q, k), np.int64)
    values = np.empty((n_q, k), np.float64)
    for lo in range(0, n_q, rows):
        block = np.array(s[lo:lo + rows], dtype=np.float64)  # a copy: exclusions overwrite it
        if np.isnan(block).any():
            raise ValueError("scores hold NaN")
        if indptr is not None:
            _reference._mask(block, lo, indptr, indices, None, None)
        best = _reference._best(block, k)
        got = np.take_along_axis(block, np.maximum(best, 0), 1)
        ids[lo:lo + rows], values[lo:lo + rows] = _reference.order_rows(best, got, "dot", np.float64)
    return TopK(ids, values)


# ---------------------------------------------------------------------- dispatch


def _search(queries, items, k, metric, exclude, exclude_items, exclude_self, backend,
            num_threads, block_size) -> TopK:
    """Validate everything, then run the chosen backend on 2-D queries."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    q, x = _vectors(queries, "queries", backend), _vectors(items, "items", backend)
    n_q, n_items, d = _check_shapes(q, x)
    k = _check_k(k, n_items)
    _check_magnitude(q, x, backend)
    indptr, indices = _csr(exclude, n_q, n_items, "exclude") if exclude is not None else (None, None)
    mask = _item_mask(exclude_items, n_items)
    self_ids = _self_ids(exclude_self, n_q, n_items)
    threads = _cpu_count() if num_threads is None else positive_int(num_threads, "num_threads")
    block = None if block_size is None else positive_int(block_size, "block_size")
    out_dtype = np.result_type(q.dtype, x.dtype)
    excl = dict(exclude_indptr=indptr, exclude_indices=indices, item_mask=mask,
                self_ids=self_ids)
    if backend == "jax":
        from recjax.retrieval import _jax

        ids, scores = _jax.topk_jax(q, x, k, metric, block_size=block, **excl)
    elif backend == "numpy" or (backend == "auto" and _kernel() is None):
        if backend == "auto":
            warnings.warn("recjax._ext.topk is not built: using the slow NumPy reference "
                          "(build it with `python setup.py build_ext --inplace`)",
                          RuntimeWarning, stacklevel=3)
        ids, scores = topk_reference(q, x, k, metric, out_dtype=out_dtype, **excl)
    else:
        ids, scores = _run_kernel(q, x, k, metric, out_dtype, threads, block, excl)
    return TopK(ids, scores.astype(out_dtype, copy=False))


def _run_kernel(q, x, k, metric, out_dtype, threads, block, excl):
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError("backend='cython' needs the compiled extension recjax._ext.topk: "
                           "build it with `python setup.py build_ext --inplace`")
    q, x = q.astype(out_dtype, copy=False), x.astype(out_dtype, copy=False)
    centre = l2_centre(x) if metric == "l2" else None
    if block is None:  # as many whole tiles as fit the budget
        block = max(kernel.TILE, _BLOCK_BYTES // (4 * x.shape[1]) // kernel.TILE * kernel.TILE)
    chunk = max(kernel.LANES, _RESERVOIR_BYTES // (8 * (2 * k + 16)))
    threads = max(1, min(threads, q.shape[0] * x.shape[0] * x.shape[1] // _WORK_PER_THREAD))
    return kernel.search(q, x, k, metric, centre, block_size=block, num_threads=threads,
                         round_f32=out_dtype == np.float32, chunk_queries=chunk, **excl)


def _kernel():
    try:
        from recjax._ext import topk as kernel
    except ImportError:
        return None
    return kernel


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------- validation


def _vectors(x: Any, name: str, backend: str):
    """Validated 2-D float vectors: a NumPy array, or a JAX array for backend="jax"."""
    if backend == "jax":
        from recjax.retrieval import _jax

        return _jax.device_matrix(x, name)
    return _matrix(x, name)


def _matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as a C-contiguous float32/float64 array (copied only when needed)."""
    if x is None or isinstance(x, (str, bytes)) or sp.issparse(x):
        raise TypeError(f"{name} must be a dense float array, got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, d], got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _check_shapes(q, x) -> tuple[int, int, int]:
    (n_q, d), (n_items, d_items) = q.shape, x.shape
    if d != d_items:
        raise ValueError(f"queries have d={d} columns but items have d={d_items}")
    if d < 1:
        raise ValueError("vectors must have at least one dimension (d >= 1)")
    if n_items < 1:
        raise ValueError("items is empty (N = 0)")
    return n_q, n_items, d


def _check_k(k: Any, n_items: int) -> int:
    """``k`` (a positive integer) clipped to the catalogue."""
    return min(positive_int(k, "k"), n_items)


def _check_magnitude(q, x, backend: str) -> None:
    """NaN/inf are errors; so are values whose float32 scores could overflow."""
    if backend == "jax":
        from recjax.retrieval import _jax

        big = max(_jax.max_abs(q, "queries"), _jax.max_abs(x, "items"))
    else:
        big = max(_max_abs(q, "queries"), _max_abs(x, "items"))
    if 8.0 * q.shape[1] * big * big >= _FLOAT32_MAX:  # bounds |2(q-c).(x-c)| + |x-c|^2
        raise ValueError(f"vector values up to {big:.3g} are too large: scores would "
                         f"overflow float32 (keep |values| below "
                         f"{np.sqrt(_FLOAT32_MAX / (8.0 * q.shape[1])):.3g})")


def _max_abs(a: np.ndarray, name: str) -> float:
    if a.size == 0:
        return 0.0
    lo, hi = float(a.min()), float(a.max())  # NaN propagates; no temporary array
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return max(-lo, hi)


def _int_array(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.size == 0 and arr.dtype.kind == "f":  # [] is a float array to NumPy
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr


def _ids(ids: Any, n: int, name: str) -> tuple[np.ndarray, bool]:
    """Row indices as int64 [n_ids] in [0, n), and whether a scalar was given."""
    if isinstance(ids, (bool, np.bool_)):
        raise TypeError(f"{name} must be integers, got bool")
    arr = _int_array(ids, name)
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or 1-D, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{name} must be in [0, {n}), got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64).reshape(-1), arr.ndim == 0


def _csr(exclude: Any, n_rows: int, n_cols: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(indptr int64 [n_rows + 1], indices int64 sorted within rows) of a CSR matrix or pair."""
    if sp.issparse(exclude):
        if exclude.shape != (n_rows, n_cols):
            raise ValueError(f"{name} has shape {exclude.shape}, expected ({n_rows}, {n_cols})")
        m = exclude.tocsr()
        indptr, indices = m.indptr, m.indices
    elif isinstance(exclude, (tuple, list)) and len(exclude) == 2:
        indptr, indices = (_int_array(a, f"{name} {part}")
                           for a, part in zip(exclude, ("indptr", "indices")))
    else:
        raise TypeError(f"{name} must be a scipy.sparse matrix or an (indptr, indices) pair, "
                        f"got {type(exclude).__name__}")
    indptr, indices = np.asarray(indptr, np.int64), np.asarray(indices, np.int64)
    if indptr.ndim != 1 or indptr.shape[0] != n_rows + 1:
        raise ValueError(f"{name} indptr must be 1-D of length {n_rows + 1} (queries + 1), "
                         f"got shape {indptr.shape}")
    if indices.ndim != 1:
        raise ValueError(f"{name} indices must be 1-D, got shape {indices.shape}")
    if indptr[0] != 0 or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
        raise ValueError(f"{name} indptr must start at 0, never decrease and end at "
                         f"len(indices) = {indices.shape[0]}")
    if indices.size and (indices.min() < 0 or indices.max() >= n_cols):
        raise ValueError(f"{name} indices must be item ids in [0, {n_cols})")
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    if indices.size > 1 and np.any((np.diff(indices) < 0) & (np.diff(rows) == 0)):
        indices = indices[np.lexsort((indices, rows))]  # sort within rows, on a copy
    return indptr, indices


def _take_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray):
    """The CSR (indptr, indices) of the given rows, in that order."""
    starts, lens = indptr[rows], indptr[rows + 1] - indptr[rows]
    new_indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    pos = np.repeat(starts - new_indptr[:-1], lens) + np.arange(new_indptr[-1])
    return new_indptr, indices[pos]


def _item_mask(mask: Any, n_items: int) -> np.ndarray | None:
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise TypeError(f"exclude_items must be a bool mask of shape [N], got dtype {arr.dtype}")
    if arr.shape != (n_items,):
        raise ValueError(f"exclude_items must have shape ({n_items},), got {arr.shape}")
    return np.ascontiguousarray(arr)


def _self_ids(exclude_self: Any, n_q: int, n_items: int) -> np.ndarray | None:
    if exclude_self is None or exclude_self is False:
        return None
    if exclude_self is True:
        if n_q != n_items:
            raise ValueError(f"exclude_self=True needs one query per item (Q == N), got "
                             f"Q={n_q}, N={n_items}; pass the queries' item ids instead")
        return np.arange(n_q, dtype=np.int64)
    ids, _ = _ids(exclude_self, n_items, "exclude_self")
    if ids.shape[0] != n_q:
        raise ValueError(f"exclude_self must hold one item id per query ({n_q}), got {ids.shape[0]}")
    return ids
