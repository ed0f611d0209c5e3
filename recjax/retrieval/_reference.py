"""Pure NumPy exact top-k: the test oracle, and the fallback when the kernel is not built.

Scores every query against every item in float64 (a chunk of queries at a time),
masks the exclusions with -inf, and keeps the k best with ``argpartition`` and a
sort, ties broken by the lower item id.  The kept candidates are then re-scored
exactly (difference form for L2) and sorted like the compiled kernel does, so the
two give the same answer up to float32 near-ties.

Inputs are expected already validated by :func:`recjax.retrieval.topk`.

Example
-------
>>> import numpy as np
>>> from recjax.retrieval._reference import topk_reference
>>> items = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
>>> ids, scores = topk_reference(np.array([[1.0, 0.0]]), items, 2, "dot")
>>> ids.tolist(), scores.tolist()
([[0, 2]], [[1.0, 1.0]])
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["topk_reference", "l2_centre", "exact_scores", "order_rows"]

_CHUNK_SCORES = 1 << 22  # float64 scores held at once (32 MiB)


def topk_reference(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    metric: str,
    *,
    exclude_indptr: np.ndarray | None = None,
    exclude_indices: np.ndarray | None = None,
    item_mask: np.ndarray | None = None,
    self_ids: np.ndarray | None = None,
    out_dtype: np.dtype | type = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by brute force in float64.

    Parameters
    ----------
    queries : np.ndarray float, shape [Q, d]
    items : np.ndarray float, shape [N, d]
    k : int
        1 <= k <= N.
    metric : {"dot", "cosine", "l2"}
    exclude_indptr, exclude_indices : np.ndarray int64, shapes [Q + 1] and [nnz], optional
        CSR rows: items each query must not return.
    item_mask : np.ndarray bool, shape [N], optional
        True: the item is never returned.
    self_ids : np.ndarray int64, shape [Q], optional
        Item id of each query itself, never returned.
    out_dtype : dtype
        Precision of the returned scores (they are rounded to it before sorting).

    Returns
    -------
    ids : np.ndarray int64, shape [Q, k]
        Best first, ties by lower id; -1 where fewer than k items are left.
    scores : np.ndarray out_dtype, shape [Q, k]
        Dot product, cosine or Euclidean distance; -inf (+inf for L2) where ids is -1.
    """
    q, x = _selection_space(np.asarray(queries, np.float64), np.asarray(items, np.float64), metric)
    x_sq = np.einsum("ij,ij->i", x, x) if metric == "l2" else None
    n_q, n_items = q.shape[0], x.shape[0]
    ids = np.empty((n_q, k), dtype=np.int64)
    step = max(1, _CHUNK_SCORES // n_items)
    for lo in range(0, n_q, step):
        hi = min(n_q, lo + step)
        s = q[lo:hi] @ x.T
        if x_sq is not None:
            s = 2.0 * s - x_sq  # -|q - x|^2 + |q|^2: same ranking per query
        _mask(s, lo, exclude_indptr, exclude_indices, item_mask, self_ids)
        ids[lo:hi] = _best(s, k)
    scores = exact_scores(queries, items, ids, metric)
    return order_rows(ids, scores, metric, out_dtype)


def _selection_space(q: np.ndarray, x: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows transformed so that a larger q.x is better: normalised or centred."""
    if metric == "cosine":
        return _normalise(q), _normalise(x)
    if metric == "l2":
        centre = l2_centre(x)  # distances unchanged, no cancellation on large offsets
        return (q, x) if centre is None else (q - centre, x - centre)
    return q, x


def l2_centre(items: Any) -> np.ndarray | None:
    """A point near the items, float64 [d], to subtract from both sides for L2; None
    when the items are already about centred (their mean is no farther from the
    origin than their root-mean-square spread around it).

    Distances do not change, but centred values keep their precision when all vectors
    share a large offset (1e6 + x).  The centre is the mean of up to 1024 evenly
    spaced rows rounded to a multiple of a power of two ``u`` between 1/16 and 1/8
    of their spread: centred values then carry few more bits than the data, so data
    on a grid (integers, float32 near 1e6) centre, and score, exactly.
    Accepts NumPy or JAX arrays (only the sample is read).
    """
    step = max(1, items.shape[0] // 1024)
    sample = np.asarray(items[::step], dtype=np.float64)
    mean = sample.mean(axis=0)
    dev = sample - mean
    if np.sqrt(mean @ mean) <= np.sqrt(np.einsum("ij,ij->", dev, dev) / len(sample)):
        return None
    spread = float(np.abs(dev).max())
    if spread == 0.0:
        return mean
    unit = 2.0 ** (np.floor(np.log2(spread)) - 3)
    return np.round(mean / unit) * unit


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _mask(s, lo, indptr, indices, item_mask, self_ids) -> None:
    """Set the excluded scores of query rows [lo, lo + len(s)) to -inf, in place."""
    rows = np.arange(lo, lo + s.shape[0])
    if item_mask is not None:
        s[:, np.asarray(item_mask, bool)] = -np.inf
    if self_ids is not None:
        s[rows - lo, self_ids[rows]] = -np.inf
    if indptr is not None:
        counts = np.diff(indptr[lo : lo + s.shape[0] + 1])
        cols = indices[indptr[lo] : indptr[lo + s.shape[0]]]
        s[np.repeat(rows - lo, counts), cols] = -np.inf


def _best(s: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k best scores per row (ties by lower id), unsorted; -1 for -inf."""
    if k < s.shape[1]:
        kth = -np.partition(-s, k - 1, axis=1)[:, k - 1 : k]  # k-th best score per row
        better = s > kth
        tied = s == kth
        room = k - better.sum(axis=1, keepdims=True)
        keep = better | (tied & (np.cumsum(tied, axis=1) <= room))  # lowest tied ids
    else:
        keep = np.ones(s.shape, dtype=bool)
    cols = np.nonzero(keep)[1].reshape(s.shape[0], k)
    return np.where(np.take_along_axis(s, cols, 1) == -np.inf, -1, cols)


def exact_scores(queries: np.ndarray, items: np.ndarray, ids: np.ndarray, metric: str) -> np.ndarray:
    """Float64 scores of items ``ids`` [Q, k] for each query (NaN where ids is -1).

    Dot product; cosine (0 when either vector is zero); L2: the Euclidean distance,
    computed from the differences so that large common offsets do not cancel.
    """
    q = np.asarray(queries, np.float64)
    x = np.asarray(items, np.float64)
    out = np.full(ids.shape, np.nan)
    step = max(1, _CHUNK_SCORES // max(1, ids.shape[1] * q.shape[1]))
    for lo in range(0, ids.shape[0], step):
        sel = ids[lo : lo + step]
        xi = x[np.maximum(sel, 0)]  # [rows, k, d]
        qi = q[lo : lo + step, None, :]
        if metric == "l2":
            s = np.sqrt(np.square(qi - xi).sum(axis=-1))
        else:
            s = np.einsum("qkd,qkd->qk", np.broadcast_to(qi, xi.shape), xi)
            if metric == "cosine":
                den = np.linalg.norm(qi, axis=-1) * np.linalg.norm(xi, axis=-1)
                s = np.divide(s, den, out=np.zeros_like(s), where=den > 0)
        out[lo : lo + step] = np.where(sel >= 0, s, np.nan)
    return out


def order_rows(
    ids: np.ndarray, scores: np.ndarray, metric: str, out_dtype: np.dtype | type
) -> tuple[np.ndarray, np.ndarray]:
    """Round scores to ``out_dtype`` and sort each row best first, ties by lower id.

    Entries with id -1 go last with score -inf (+inf for L2).
    """
    worst = np.inf if metric == "l2" else -np.inf
    s = np.where(ids >= 0, scores, worst).astype(out_dtype)
    key = s if metric == "l2" else -s
    order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), key), axis=-1)
    return np.take_along_axis(ids, order, 1), np.take_along_axis(s, order, 1)
