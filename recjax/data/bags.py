"""Users as bags of items: the inputs of the bag models (softmax, Mult-DAE).

A user's bag is the set of items they rated, as a row of item indices padded with
:data:`recjax.data.jsonlines.PAD` (-1). :func:`user_bags` builds one row per user
from rating parts (latest first, optionally cut to the ``max_bag`` latest);
:func:`bag_inputs` gives the per-user examples of a split's train / val / test
parts; :func:`item_features` the genre and release-year indices the softmax model
pools alongside the movies. :func:`user_item_pattern` is the same information as a
binary user x item matrix (what the ranking protocol excludes, EASE's input), and
:func:`bags_from_csr` turns such a matrix back into bags. New users to fold into a
trained model are such a matrix too (:func:`user_rows`, checked by
:func:`check_user_items`).

Example
-------
>>> from recjax.data import Ratings
>>> from recjax.data.bags import user_bags
>>> data = Ratings.from_raw([1, 1, 2], [10, 20, 10], [5.0, 3.0, 4.0], timestamps=[1, 2, 3])
>>> user_bags([data], data.n_users, max_bag=0).tolist()   # latest first
[[1, 0], [0, -1]]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from recjax.data.dataset import Ratings
from recjax.data.jsonlines import PAD

__all__ = ["user_bags", "bag_inputs", "bags_from_csr", "user_item_pattern", "item_features", "user_rows",
           "check_user_items"]


def item_features(data: Ratings) -> tuple[np.ndarray, np.ndarray]:
    """(genre indices [n_items, G] PAD-padded, release-year indices [n_items], -1 unknown)."""
    if data.item_info is None:
        return np.zeros((data.n_items, 0), np.int32), np.full(data.n_items, -1, np.int32)
    from recjax.data.movielens import genre_matrix

    genres = np.zeros((data.n_items, 0), np.int32)
    if "genres" in data.item_info:
        _, flags = genre_matrix(data.item_info)
        width = int(flags.sum(1).max()) if flags.size else 0
        genres = np.full((data.n_items, width), PAD, np.int32)
        for i, row in enumerate(flags):
            ids = np.flatnonzero(row)
            genres[i, : len(ids)] = ids
    years = np.full(data.n_items, -1, np.int32)
    if "year" in data.item_info:
        raw = data.item_info["year"].to_numpy(dtype=float)
        known = ~np.isnan(raw)
        _, years[known] = np.unique(raw[known], return_inverse=True)
    return genres, years


def user_bags(parts: Sequence[Ratings], n_users: int, max_bag: int) -> np.ndarray:
    """Each user's movies in ``parts`` [n_users, L], latest first when cut to ``max_bag``; PAD-padded."""
    user = np.concatenate([p.user for p in parts])
    item = np.concatenate([p.item for p in parts])
    time = np.concatenate([p.timestamp for p in parts])
    order = np.lexsort((-time, user))  # by user, latest first
    user, item = user[order], item[order]
    counts = np.bincount(user, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(user)) - starts[user]
    width = int(counts.max()) if len(counts) and counts.max() > 0 else 1
    if max_bag:
        keep = rank < max_bag
        user, item, rank = user[keep], item[keep], rank[keep]
        width = min(width, max_bag)
    bags = np.full((n_users, max(width, 1)), PAD, np.int32)
    bags[user, rank] = item
    return bags


def bag_inputs(splits: dict[str, Ratings], max_bag: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Per-user examples for each part.

    ``train``: ``bag`` = the user's training movies (targets are drawn from it each
    step), ``weight`` 0 for users with fewer than 2. ``val``: ``bag`` = training
    movies, ``targets`` = validation movies. ``test``: ``bag`` = training and
    validation movies, ``targets`` = test movies. Every part has one row per
    user index and a dummy ``label``; bags keep each user's ``max_bag`` latest
    movies (0 = all).
    """
    train, val, test = splits["train"], splits["val"], splits["test"]
    n = train.n_users
    train_bag = user_bags([train], n, max_bag)
    zeros = np.zeros(n, np.float32)
    out = {"train": {"bag": train_bag, "label": zeros,
                     "weight": (np.sum(train_bag >= 0, 1) >= 2).astype(np.float32)}}
    for name, bag_parts, target_part in (("val", [train], val), ("test", [train, val], test)):
        bag = train_bag if name == "val" else user_bags(bag_parts, n, max_bag)
        out[name] = {"bag": bag, "targets": user_bags([target_part], n, 0), "label": zeros}
    return out


def bags_from_csr(pattern: sp.spmatrix) -> np.ndarray:
    """The bags of a user x item matrix: row ``u``'s stored columns (ascending) as int32
    [n_users, L], PAD-padded (``L`` = the longest row, at least 1)."""
    m = sp.csr_matrix(pattern)
    if not m.has_sorted_indices:
        m = m.sorted_indices()
    counts = np.diff(m.indptr)
    bags = np.full((m.shape[0], max(int(counts.max(initial=0)), 1)), PAD, np.int32)
    rows = np.repeat(np.arange(m.shape[0]), counts)
    bags[rows, np.arange(len(m.indices)) - m.indptr[rows]] = m.indices
    return bags


def user_item_pattern(parts: Ratings | Sequence[Ratings]) -> sp.csr_matrix:
    """Who rated what in ``parts`` (one vocabulary): float32 CSR [n_users, n_items] with
    1.0 where a user rated an item (a pair rated twice counts once), sorted indices."""
    parts = [parts] if isinstance(parts, Ratings) else list(parts)
    user = np.concatenate([p.user for p in parts])
    item = np.concatenate([p.item for p in parts])
    m = sp.csr_matrix((np.ones(len(user), np.float32), (user, item)),
                      shape=(parts[0].n_users, parts[0].n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    m.sort_indices()
    return m


def user_rows(items: Sequence[Sequence[int]], n_items: int,
              ratings: Sequence[Sequence[float]] | None = None) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """``user_items`` CSR [n, n_items] of lists of item indices (one list per user, in
    order), and their ratings float64 [nnz] in the matrix's entry order (or None).

    Raises
    ------
    ValueError
        An index outside ``[0, n_items)``, an item listed twice for one user, or a
        ratings list whose length differs from its items'.
    """
    lengths = np.array([len(row) for row in items], np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = (np.concatenate([np.asarray(row, np.int64).reshape(-1) for row in items])
               if len(items) else np.zeros(0, np.int64))
    values = None
    if ratings is not None:
        if len(ratings) != len(items) or any(len(r) != n for r, n in zip(ratings, lengths)):
            raise ValueError("give one rating per item, for every user")
        values = (np.concatenate([np.asarray(r, np.float64).reshape(-1) for r in ratings])
                  if len(ratings) else np.zeros(0))
    matrix = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(items), n_items))
    check_user_items(matrix, values, n_items)
    return matrix, values


def check_user_items(user_items: Any, ratings: np.ndarray | None, n_items: int) -> None:
    """Refuse what no family can fold in: not a CSR matrix [n, n_items], item indices
    out of range, an item twice in one row, ratings not one finite number per entry."""
    if not sp.isspmatrix_csr(user_items) and not isinstance(user_items, sp.csr_array):
        raise TypeError(f"user_items must be a scipy CSR matrix [n, {n_items}], got {type(user_items).__name__}")
    if user_items.shape[1] != n_items:
        raise ValueError(f"user_items has {user_items.shape[1]} columns; the model has {n_items} items")
    indices = user_items.indices
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        raise ValueError(f"fold_in: item indices must lie in [0, {n_items})")
    if ratings is not None:
        ratings = np.asarray(ratings)
        if ratings.shape != indices.shape:
            raise ValueError(f"fold_in: {len(indices)} items but {ratings.size} ratings")
        if not np.isfinite(ratings).all():
            raise ValueError("fold_in: ratings hold NaN or infinite values")
    if len(indices):
        row = np.repeat(np.arange(user_items.shape[0]), np.diff(user_items.indptr))
        if len(np.unique(row * np.int64(n_items) + indices)) != len(indices):
            raise ValueError("fold_in: a user lists an item twice")
