"""Metrics: rating (MSE, RMSE, MAE), binary (accuracy, AUC, log loss), ranking
(precision, recall, NDCG, MAP, MRR and hit rate at k, catalogue coverage), beyond
accuracy (diversity, novelty) and embedding diagnostics (norm vs popularity).

All functions take NumPy arrays, compute in float64 and are vectorised over users
(no Python loop per user). The ranking metrics read a top-k list
(:class:`recjax.retrieval.TopK`, ids ``[U, K]`` best first, -1 padding) and a
held-out user x item CSR matrix whose non-zero entries are the relevant items.

Memory: the ranking and beyond-accuracy metrics work through the users in blocks
sized so that their temporaries stay near :data:`WORKING_MEMORY` bytes whatever
``k`` (diversity also splits long lists), so the only arrays that grow with
``U x k`` are the input list itself and :func:`hits`' boolean answer; a block size
may be forced with ``block_size=`` (users per block; the answer does not depend
on it beyond float rounding).

``k`` above the catalogue: a list cannot hold more than ``n_items`` items, so a
metric at ``k > n_items`` (the columns of ``relevant``, the ``n_items`` of
coverage, the rows of the embedding table, the length of ``item_counts``) is that
metric at ``k = n_items``: precision divides by ``n_items``, NDCG and MAP cut at
``n_items``. :func:`ranking_metrics` still names its keys with the ``k`` asked for
(``precision@5000``), so tables keyed by the user's ``k`` keep working.

Example
-------
>>> import numpy as np
>>> import scipy.sparse as sp
>>> from recjax.metrics import rmse, accuracy, ranking_metrics
>>> rmse(np.array([1.0, 3.0]), np.array([2.0, 3.0]))
0.7071067811865476
>>> accuracy(np.array([2.0, -1.0, 0.5]), np.array([1, 0, 0]))
0.6666666666666666
>>> recommended = np.array([[3, 1, 2], [0, 1, 2]])         # 2 users, top-3 each
>>> relevant = sp.csr_array(([1, 1, 1], ([0, 0, 1], [1, 4, 3])), shape=(2, 5))
>>> m = ranking_metrics(recommended, relevant, k=3)
>>> round(m["precision@3"], 4), round(m["recall@3"], 4), m["hit_rate@3"]
(0.1667, 0.25, 0.5)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recjax._blocks import WORKING_MEMORY, block_rows, blocks
from recjax._checks import positive_int

__all__ = [
    "mse", "rmse", "mae", "accuracy", "auc", "log_loss", "rating_metrics", "binary_metrics",
    "task_metrics", "RATING_NAMES",
    "RANKING_METRICS", "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "mrr",
    "hit_rate", "ranking_metrics", "per_user_ranking_metrics", "catalogue_coverage", "diversity", "novelty",
    "norm_popularity_correlation", "PER_USER_METRICS",
]


def _pair(predictions, targets) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predictions, np.float64).ravel()
    t = np.asarray(targets, np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"predictions ({p.size}) and targets ({t.size}) differ in length")
    if p.size == 0:
        raise ValueError("no predictions to score")
    return p, t


def mse(predictions, targets) -> float:
    """Mean squared error."""
    p, t = _pair(predictions, targets)
    return float(np.mean((p - t) ** 2))


def rmse(predictions, targets) -> float:
    """Root mean squared error."""
    return float(np.sqrt(mse(predictions, targets)))


def mae(predictions, targets) -> float:
    """Mean absolute error."""
    p, t = _pair(predictions, targets)
    return float(np.mean(np.abs(p - t)))


def accuracy(logits, labels) -> float:
    """Share of examples whose logit sign (> 0 means class 1) matches the {0, 1} label."""
    p, t = _pair(logits, labels)
    return float(np.mean((p > 0) == (t > 0.5)))


def auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count half); NaN with one class."""
    s, t = _pair(scores, labels)
    positive = t > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # scipy.stats costs ~1 s to import: only where used

    ranks = rankdata(s)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(logits, labels) -> float:
    """Mean binary cross-entropy of logits against {0, 1} labels (nats)."""
    z, t = _pair(logits, labels)
    # log(1 + e^z) - t z, computed stably
    return float(np.mean(np.logaddexp(0.0, z) - t * z))


def rating_metrics(predictions, targets, prefix: str = "") -> dict[str, float]:
    """``{prefix}mse``, ``rmse`` and ``mae``."""
    return {f"{prefix}mse": mse(predictions, targets), f"{prefix}rmse": rmse(predictions, targets),
            f"{prefix}mae": mae(predictions, targets)}


def binary_metrics(logits, labels, prefix: str = "") -> dict[str, float]:
    """``{prefix}accuracy``, ``auc`` and ``log_loss`` of logits."""
    return {f"{prefix}accuracy": accuracy(logits, labels), f"{prefix}auc": auc(logits, labels),
            f"{prefix}log_loss": log_loss(logits, labels)}


def task_metrics(task: str, predictions, labels, prefix: str = "") -> dict[str, float]:
    """The metrics of a rating model's task: :func:`rating_metrics` of ratings
    (``"regression"``) or :func:`binary_metrics` of logits (``"binary"``)."""
    if task not in RATING_NAMES:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(RATING_NAMES)}")
    score = rating_metrics if task == "regression" else binary_metrics
    return score(predictions, labels, prefix)


#: The metric names of :func:`task_metrics`, per task.
RATING_NAMES = {"regression": ("mse", "rmse", "mae"), "binary": ("accuracy", "auc", "log_loss")}


# ----------------------------------------------------------------------------- ranking
RANKING_METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")
#: The per-user values of :func:`per_user_ranking_metrics`: :data:`RANKING_METRICS` and
#: ``capped_recall``, the recall of Liang et al. (2018): hits / min(k, |relevant|).
PER_USER_METRICS = RANKING_METRICS + ("capped_recall",)

def _recommended(recommended: Any, k: int | None, n_items: int | None = None) -> np.ndarray:
    """The ids [U, k] of a TopK or an int array [U, K], cut to the first ``k`` columns (a
    view, in the caller's integer dtype); ``k`` above ``n_items`` counts as ``n_items``."""
    ids = getattr(recommended, "ids", recommended)
    ids = np.asarray(ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2:
        raise ValueError(f"recommended ids must be [users, k], got shape {ids.shape}")
    if ids.size and ids.dtype.kind not in "iu":
        raise ValueError(f"recommended ids must be integers, got dtype {ids.dtype}")
    if k is None:
        k = ids.shape[1]
    k = positive_int(k, "k")
    used = k if n_items is None else min(k, max(int(n_items), 1))
    if used > ids.shape[1]:
        raise ValueError(f"k={k} exceeds the {ids.shape[1]} recommendations per user")
    return ids[:, :used]


class _Relevance:
    """``relevant`` prepared once for block-wise hit lookups: the sorted keys
    ``row * n_items + item`` of its non-zero entries."""

    def __init__(self, relevant: Any, n_recommended: int, users: Any) -> None:
        if not sp.issparse(relevant):
            raise ValueError(f"relevant must be a scipy.sparse user x item matrix, "
                             f"got {type(relevant).__name__}")
        rel = sp.csr_matrix(relevant, copy=True)
        rel.eliminate_zeros()
        rel.sort_indices()
        n_rows, self.n_items = rel.shape
        if users is None:
            if n_recommended != n_rows:
                raise ValueError(f"recommended has {n_recommended} rows but relevant has {n_rows} "
                                 f"users; pass users= to map rows to users")
            self.rows = np.arange(n_rows, dtype=np.int64)
        else:
            self.rows = np.asarray(users, dtype=np.int64).reshape(-1)
            if self.rows.shape[0] != n_recommended:
                raise ValueError(f"users has {self.rows.shape[0]} entries, recommended has "
                                 f"{n_recommended} rows")
            if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= n_rows):
                raise ValueError(f"users must be rows of relevant, in [0, {n_rows})")
        row_of_entry = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(rel.indptr))
        self.keys = row_of_entry * self.n_items + rel.indices  # sorted: rows in order, indices sorted
        self.n_relevant = np.diff(rel.indptr)[self.rows].astype(np.int64)

    def check(self, ids: np.ndarray) -> None:
        if ids.size and ids.max() >= self.n_items:
            raise ValueError(f"recommended ids must be item ids below {self.n_items} (relevant's columns)")

    def hits(self, ids: np.ndarray, block: slice) -> np.ndarray:
        """bool [b, k]: which of ``ids[block]`` are relevant to their user."""
        ids = ids[block].astype(np.int64, copy=False)
        if not len(self.keys):
            return np.zeros(ids.shape, bool)
        wanted = self.rows[block, None] * self.n_items + ids
        pos = np.searchsorted(self.keys, wanted)
        np.minimum(pos, len(self.keys) - 1, out=pos)
        return (ids >= 0) & (self.keys[pos] == wanted)


# bytes of temporaries per recommended entry of a block: ids int64, keys wanted, positions,
# gathered keys, float hits, cumsums and products (about a dozen 8-byte arrays)
_RANKING_BYTES = 112


def hits(recommended: Any, relevant: Any, k: int | None = None, *,
         users: Any = None, block_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Which recommendations are relevant, and how many relevant items each user has.

    Parameters
    ----------
    recommended : TopK or int array, shape [U, K]
        Item ids per user, best first; -1 marks padding (never a hit).
    relevant : scipy.sparse matrix, shape [n_users, n_items]
        Held-out interactions; every stored non-zero entry is a relevant item.
    k : int, optional
        Use the first ``k`` columns (default all ``K``; above ``n_items``, ``n_items``).
    users : int array, shape [U], optional
        The row of ``relevant`` of each row of ``recommended`` (default: row ``u`` is
        user ``u``, which needs ``U == n_users``).
    block_size : int, optional
        Users per block (default: from :data:`WORKING_MEMORY`).

    Returns
    -------
    hit : bool array, shape [U, k]
    n_relevant : int64 array, shape [U]
    """
    if not sp.issparse(relevant):
        raise ValueError(f"relevant must be a scipy.sparse user x item matrix, got {type(relevant).__name__}")
    ids = _recommended(recommended, k, relevant.shape[1])
    rel = _Relevance(relevant, ids.shape[0], users)
    rel.check(ids)
    hit = np.zeros(ids.shape, bool)
    for block in blocks(ids.shape[0], block_rows(_RANKING_BYTES * ids.shape[1], block_size)):
        hit[block] = rel.hits(ids, block)
    return hit, rel.n_relevant


def _per_user(recommended: Any, relevant: Any, k: int | None, users: Any,
              block_size: int | None = None) -> dict[str, np.ndarray]:
    """Every ranking metric per user with at least one relevant item, a block of users
    at a time (the temporaries are [block, k], never [U, k])."""
    if not sp.issparse(relevant):
        raise ValueError(f"relevant must be a scipy.sparse user x item matrix, got {type(relevant).__name__}")
    ids = _recommended(recommended, k, relevant.shape[1])
    rel = _Relevance(relevant, ids.shape[0], users)
    rel.check(ids)
    if not (rel.n_relevant > 0).any():
        raise ValueError("relevant holds no items for any of the recommended users")
    k = ids.shape[1]
    positions = np.arange(1, k + 1, dtype=np.float64)
    discount = 1.0 / np.log2(positions + 1.0)
    cumulative_discount = np.cumsum(discount)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in PER_USER_METRICS}
    for block in blocks(ids.shape[0], block_rows(_RANKING_BYTES * k, block_size)):
        n_rel = rel.n_relevant[block]
        keep = n_rel > 0
        if not keep.any():
            continue
        hit, n_rel = rel.hits(ids, block)[keep].astype(np.float64), n_rel[keep]
        n_hits = hit.sum(1)
        ideal = cumulative_discount[np.minimum(n_rel, k) - 1]  # IDCG over min(k, |relevant|)
        first = np.where(hit.any(1), hit.argmax(1) + 1, 0)
        precision_at_j = np.cumsum(hit, 1) / positions
        values = {
            "precision": n_hits / k,
            "recall": n_hits / n_rel,
            "ndcg": (hit * discount).sum(1) / ideal,
            "map": (precision_at_j * hit).sum(1) / np.minimum(n_rel, k),
            "mrr": np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0),
            "hit_rate": (n_hits > 0).astype(np.float64),
            "capped_recall": n_hits / np.minimum(n_rel, k),
        }
        for name, value in values.items():
            parts[name].append(value)
    return {name: np.concatenate(value) for name, value in parts.items()}


def precision_at_k(recommended, relevant, k: int | None = None, *, users=None,
                   block_size: int | None = None) -> float:
    """Mean over users of (relevant items in the top k) / k.

    Users with no relevant item are left out of every ranking mean. Arguments as
    in :func:`hits`; ``k`` above the catalogue counts as ``n_items`` (the module
    docstring).
    """
    return float(_per_user(recommended, relevant, k, users, block_size)["precision"].mean())


def recall_at_k(recommended, relevant, k: int | None = None, *, users=None,
                block_size: int | None = None) -> float:
    """Mean over users of (relevant items in the top k) / (relevant items)."""
    return float(_per_user(recommended, relevant, k, users, block_size)["recall"].mean())


def ndcg_at_k(recommended, relevant, k: int | None = None, *, users=None,
              block_size: int | None = None) -> float:
    """Mean normalised DCG with binary gain: ``sum_j hit_j / log2(j + 1)`` over positions
    ``j = 1..k``, divided by the ideal DCG of ``min(k, |relevant|)`` hits."""
    return float(_per_user(recommended, relevant, k, users, block_size)["ndcg"].mean())


def map_at_k(recommended, relevant, k: int | None = None, *, users=None,
             block_size: int | None = None) -> float:
    """Mean average precision: per user ``sum_j P@j * hit_j / min(k, |relevant|)``."""
    return float(_per_user(recommended, relevant, k, users, block_size)["map"].mean())


def mrr(recommended, relevant, k: int | None = None, *, users=None,
        block_size: int | None = None) -> float:
    """Mean reciprocal rank of the first relevant item in the top k (0 when none is)."""
    return float(_per_user(recommended, relevant, k, users, block_size)["mrr"].mean())


def hit_rate(recommended, relevant, k: int | None = None, *, users=None,
             block_size: int | None = None) -> float:
    """Share of users with at least one relevant item in their top k."""
    return float(_per_user(recommended, relevant, k, users, block_size)["hit_rate"].mean())


def ranking_metrics(recommended, relevant, k: int | None = None, *, users=None,
                    prefix: str = "", block_size: int | None = None) -> dict[str, float]:
    """All of :data:`RANKING_METRICS` at ``k`` in one pass: ``{prefix}precision@k``, ...

    Parameters
    ----------
    recommended, relevant, k, users, block_size
        As in :func:`hits`.
    prefix : str
        Prepended to every key.

    Returns
    -------
    dict
        ``precision@k``, ``recall@k``, ``ndcg@k``, ``map@k``, ``mrr@k``, ``hit_rate@k``
        and ``users`` (how many users were averaged). The keys carry the ``k`` asked
        for (default: the width of ``recommended``), also when it exceeds the
        catalogue and the metrics are those at ``n_items``.

    Raises
    ------
    ValueError
        No recommended user has a relevant item, or the shapes disagree.
    """
    per_user = _per_user(recommended, relevant, k, users, block_size)
    k = _recommended(recommended, None).shape[1] if k is None else int(k)
    out = {f"{prefix}{name}@{k}": float(per_user[name].mean()) for name in RANKING_METRICS}
    out[f"{prefix}users"] = int(len(per_user["precision"]))
    return out


def per_user_ranking_metrics(recommended, relevant, k: int | None = None, *, users=None,
                             block_size: int | None = None) -> dict[str, np.ndarray]:
    """Every ranking metric at ``k`` of every user with a relevant item, unaveraged
    (what :func:`ranking_metrics` averages; for paired comparisons such as
    :func:`recjax.evaluation.significance.paired_bootstrap`).

    Parameters
    ----------
    recommended, relevant, k, users, block_size
        As in :func:`hits`.

    Returns
    -------
    dict
        ``{name: float64 [U']}`` for each name of :data:`PER_USER_METRICS`: the rows of
        ``recommended`` whose user has at least one relevant item, in their order.
        ``capped_recall`` is Liang et al.'s recall, hits / min(k, |relevant|).

    Example
    -------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> relevant = sp.csr_array(([1, 1, 1], ([0, 0, 0], [0, 1, 2])), shape=(1, 4))
    >>> m = per_user_ranking_metrics(np.array([[0, 3]]), relevant, k=2)
    >>> m["recall"].tolist(), m["capped_recall"].tolist()
    ([0.3333333333333333], [0.5])
    """
    return _per_user(recommended, relevant, k, users, block_size)


def catalogue_coverage(recommended, n_items: int, k: int | None = None, *,
                       block_size: int | None = None) -> float:
    """Share of the ``n_items`` catalogue recommended to at least one user in a top k
    (``k`` above ``n_items`` counts as ``n_items``)."""
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    ids = _recommended(recommended, k, n_items)
    if ids.size and ids.max() >= n_items:
        raise ValueError(f"recommended ids must be below n_items={n_items}")
    seen = np.zeros(int(n_items), bool)
    for block in blocks(ids.shape[0], block_rows(16 * ids.shape[1], block_size)):
        part = ids[block]
        seen[part[part >= 0]] = True
    return float(seen.sum() / n_items)


def diversity(recommended, item_embeddings, k: int | None = None, *,
              block_size: int | None = None) -> float:
    """Mean over users of ``1 - mean pairwise cosine similarity`` within their top k
    (the Keras course notebook's diversity).

    Parameters
    ----------
    recommended : TopK or int array [U, K]
    item_embeddings : float array [n_items, d]
        Cosine with a zero vector counts as 0.
    k : int, optional
        Above ``n_items`` counts as ``n_items``.
    block_size : int, optional
        Users per block (default: from :data:`WORKING_MEMORY`; a large table is also
        normalised a block of items at a time).

    Returns
    -------
    float
        Users with fewer than two recommended items are left out. Computed from the
        sum of the normalised vectors: ``sum_{i != j} c_ij = |sum_i n_i|^2 - sum_i |n_i|^2``
        (O(U k d) time, no k x k matrix, and no [U, k, d] array: the sums are a sparse
        user x item count matrix times the unit vectors).
    """
    emb = np.asarray(item_embeddings)
    if emb.ndim != 2:
        raise ValueError(f"item_embeddings must be [n_items, d], got shape {emb.shape}")
    ids = _recommended(recommended, k, emb.shape[0])
    if ids.size and ids.max() >= emb.shape[0]:
        raise ValueError(f"recommended ids must be below the {emb.shape[0]} item embeddings")
    n_users, width = ids.shape
    n_items, d = emb.shape
    # per user: the sum of its items' unit vectors and of their squared norms (1, or 0 for
    # a zero vector), as a sparse user x item count matrix times the unit table. Blocks:
    # users (the count matrix, ~64 B per list entry as it is built, and the [users, d] sums) x items
    # (a float64 unit slice of the table, ~24 B per value)
    item_rows = max(1, WORKING_MEMORY // (24 * max(d, 1)))
    rows = block_rows(64 * width + 16 * max(d, 1), block_size)

    def unit_rows(items: slice) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.asarray(emb[items], np.float64)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        return unit, (unit**2).sum(1)

    whole = unit_rows(slice(0, n_items)) if item_rows >= n_items else None  # normalised once
    pair_sums, counts = [], []
    for block in blocks(n_users, rows):
        part = ids[block]
        valid = part >= 0
        m = valid.sum(1)
        chosen = sp.csr_matrix((np.ones(int(m.sum())), (np.nonzero(valid)[0], part[valid])),
                               shape=(part.shape[0], n_items))  # repeated items count twice
        if whole is not None:
            total, squares = chosen @ whole[0], chosen @ whole[1]
        else:
            total, squares = np.zeros((part.shape[0], d)), np.zeros(part.shape[0])
            for items in blocks(n_items, item_rows):
                unit, unit_squares = unit_rows(items)
                total += chosen[:, items] @ unit
                squares += chosen[:, items] @ unit_squares
        pair_sums.append((total**2).sum(1) - squares)
        counts.append(m)
    pair_sum = np.concatenate(pair_sums) if pair_sums else np.zeros(0)
    m = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    keep = m >= 2
    if not keep.any():
        raise ValueError("diversity needs at least two recommended items for some user")
    mean_similarity = pair_sum[keep] / (m[keep] * (m[keep] - 1))
    return float(np.mean(1.0 - mean_similarity))


def novelty(recommended, item_counts, n_users: int, k: int | None = None, *,
            block_size: int | None = None) -> dict[str, float]:
    """How popular the recommended items are (the Keras notebook's novelty).

    Parameters
    ----------
    recommended : TopK or int array [U, K]
    item_counts : int array [n_items]
        Training interactions per item.
    n_users : int
        Users in the training data: ``p(i) = count_i / n_users``, the share of users
        who rated item ``i`` (an item nobody rated counts as rated once, so that its
        self-information stays finite).
    k : int, optional
        Above ``n_items`` counts as ``n_items``.
    block_size : int, optional
        Users per block (default: from :data:`WORKING_MEMORY`).

    Returns
    -------
    dict
        ``popularity``: mean ``p(i)`` of the recommended items (lower is more novel);
        ``self_information``: mean ``-log2 p(i)`` in bits (higher is more novel);
        ``ratings``: mean training count of the recommended items. Each is the mean
        over users of the mean over their list.
    """
    counts = np.asarray(item_counts, np.float64).reshape(-1)
    ids = _recommended(recommended, k, counts.shape[0])
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    if ids.size and ids.max() >= counts.shape[0]:
        raise ValueError(f"recommended ids must be below len(item_counts)={counts.shape[0]}")
    sums: dict[str, list[np.ndarray]] = {"popularity": [], "self_information": [], "ratings": []}
    lengths = []
    for block in blocks(ids.shape[0], block_rows(64 * ids.shape[1], block_size)):
        part = ids[block].astype(np.int64, copy=False)
        valid = part >= 0
        c = counts[np.where(valid, part, 0)]
        p = np.maximum(c, 1.0) / n_users
        for name, values in (("popularity", p), ("self_information", -np.log2(p)), ("ratings", c)):
            sums[name].append((values * valid).sum(1))
        lengths.append(valid.sum(1))
    m = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    keep = m > 0
    if not keep.any():
        raise ValueError("novelty needs at least one recommended item")
    return {name: float(np.mean(np.concatenate(parts)[keep] / m[keep])) for name, parts in sums.items()}


def norm_popularity_correlation(item_embeddings, item_counts) -> dict[str, float]:
    """Correlation of the item embedding norm with the number of ratings (the Google lab's
    popularity-norm effect: in MF, popular items tend to get larger norms).

    Parameters
    ----------
    item_embeddings : float array [n_items, d]
    item_counts : int array [n_items]

    Returns
    -------
    dict
        ``spearman`` (rank correlation of norm and count), ``pearson_log`` (Pearson of
        norm and ``log(1 + count)``), over items with at least one rating.
    """
    emb = np.asarray(item_embeddings, np.float64)
    counts = np.asarray(item_counts, np.float64).reshape(-1)
    if emb.ndim != 2 or emb.shape[0] != counts.shape[0]:
        raise ValueError(f"item_embeddings {emb.shape} and item_counts {counts.shape} disagree")
    rated = counts > 0
    if rated.sum() < 3:
        raise ValueError("norm_popularity_correlation needs at least 3 rated items")
    norms = np.linalg.norm(emb, axis=1)[rated]
    counts = counts[rated]
    if np.ptp(norms) == 0 or np.ptp(counts) == 0:
        return {"spearman": float("nan"), "pearson_log": float("nan")}
    from scipy.stats import pearsonr, spearmanr

    return {"spearman": float(spearmanr(norms, counts).statistic),
            "pearson_log": float(pearsonr(norms, np.log1p(counts)).statistic)}
