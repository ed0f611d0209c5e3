"""Exact top-k retrieval: the best items for query vectors, users or items.

:func:`topk` is the general entry point (dot, cosine or L2; per-query, global and
self exclusions); :func:`similar_items` and :func:`recommend` wrap it for the two
usual questions; :func:`dense_topk` ranks a dense score matrix computed elsewhere.
The CPU default is a compiled, blocked, multi-threaded kernel (``recjax._ext.topk``);
``backend="jax"`` runs on JAX devices and ``backend="numpy"`` is the float64 reference;
:func:`sharded_topk` searches a table split by rows over a JAX device mesh
(:mod:`recjax.retrieval.sharded`).  See :mod:`recjax.retrieval.topk` for the shared
semantics (ordering, ties, padding, precision).

Example
-------
>>> import numpy as np
>>> import scipy.sparse as sp
>>> from recjax.retrieval import recommend, similar_items
>>> users = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
>>> items = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.5]], dtype=np.float32)
>>> rated = sp.csr_array(([1.0], ([0], [0])), shape=(2, 3))  # user 0 rated item 0
>>> recommend(users, items, 0, 2, exclude=rated).ids.tolist()
[2, 1]
>>> similar_items(items, [0, 1], 1).ids.tolist()
[[2], [2]]
"""

from recjax.retrieval.topk import TopK, dense_topk, kernel_available, recommend, similar_items, topk

__all__ = ["TopK", "topk", "similar_items", "recommend", "dense_topk", "kernel_available",
           "ShardedItems", "shard_items", "sharded_topk"]


def __getattr__(name: str):
    """The sharded API (:mod:`recjax.retrieval.sharded`) imports JAX only when first used."""
    if name in ("ShardedItems", "shard_items", "sharded_topk"):
        from recjax.retrieval import sharded

        return getattr(sharded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
