"""Train/test splits of :class:`~recjax.data.Ratings`, all sharing the dataset's vocabularies.

Every split keeps the full dataset's user and item vocabularies, so an index means
the same user or item in train and test. A test rating whose user or item has no
rating in train is *cold*; each split counts them and applies an explicit policy:

``cold="keep"``  keep them (models fall back to coarser predictions; the default,
                 so published splits such as ml-100k's ``ua.test`` stay whole);
``cold="drop"``  remove them from the test part;
``cold="error"`` raise :class:`ValueError`.

Example
-------
>>> from recjax.data.synthetic import synthetic_ratings
>>> from recjax.data.splits import holdout_split
>>> data, _ = synthetic_ratings(n_users=50, n_items=40, n_ratings=800, seed=0)
>>> split = holdout_split(data, test_fraction=0.1, seed=0)
>>> len(split.train) + len(split.test)
800
"""

from __future__ import annotations

import os
from typing import Iterator, NamedTuple

import numpy as np

from recjax.data.dataset import Ratings
from recjax.data.download import resolve
from recjax.data.movielens import load_movielens, read_split

__all__ = [
    "Split",
    "PREDEFINED_SPLITS",
    "predefined_split",
    "holdout_split",
    "per_user_split",
    "temporal_split",
    "kfold",
    "apply_cold_policy",
]

PREDEFINED_SPLITS = ("ua", "ub", "u1", "u2", "u3", "u4", "u5")
COLD_POLICIES = ("keep", "drop", "error")


class Split(NamedTuple):
    """A train/test pair.

    Attributes
    ----------
    train, test : Ratings
    n_cold : int
        Test ratings whose user or item has no train rating, counted before the
        cold policy was applied.
    """

    train: Ratings
    test: Ratings
    n_cold: int


def cold_mask(train: Ratings, test: Ratings) -> np.ndarray:
    """Boolean [len(test)]: test rows whose user or item is absent from ``train``."""
    seen_users = np.zeros(train.n_users, bool)
    seen_items = np.zeros(train.n_items, bool)
    seen_users[train.user] = True
    seen_items[train.item] = True
    return ~(seen_users[test.user] & seen_items[test.item])


def apply_cold_policy(train: Ratings, test: Ratings, cold: str = "keep") -> Split:
    """Count cold test rows and apply ``cold`` ("keep", "drop" or "error")."""
    if cold not in COLD_POLICIES:
        raise ValueError(f"cold must be one of {COLD_POLICIES}, not {cold!r}")
    mask = cold_mask(train, test)
    n_cold = int(mask.sum())
    if n_cold and cold == "error":
        raise ValueError(
            f"{n_cold} test rating(s) have a user or item with no train rating; "
            f"use cold='drop' or cold='keep'"
        )
    if n_cold and cold == "drop":
        test = test.subset(~mask)
    return Split(train, test, n_cold)


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {fraction}")


def predefined_split(
    name: str = "ua",
    data_dir: str | os.PathLike | None = None,
    *,
    dataset: Ratings | None = None,
    cold: str = "keep",
    allow_download: bool = True,
) -> Split:
    """One of ml-100k's published splits: ``ua``/``ub`` (10 test ratings per user) or ``u1``..``u5``.

    Parameters
    ----------
    name : str
        One of :data:`PREDEFINED_SPLITS`.
    data_dir : path, optional
        Where ml-100k lives (see :func:`recjax.data.resolve`).
    dataset : Ratings, optional
        The already loaded full ml-100k, whose vocabularies index the split.
    """
    if name not in PREDEFINED_SPLITS:
        raise ValueError(f"unknown ml-100k split {name!r}; known: {', '.join(PREDEFINED_SPLITS)}")
    folder = resolve("ml-100k", data_dir, allow_download=allow_download)
    full = dataset if dataset is not None else load_movielens("ml-100k", folder)
    train = read_split(full, folder / f"{name}.base")
    test = read_split(full, folder / f"{name}.test")
    return apply_cold_policy(train, test, cold)


def holdout_split(
    data: Ratings, test_fraction: float = 0.1, *, seed: int = 0, cold: str = "keep"
) -> Split:
    """A uniformly random ``test_fraction`` of all ratings goes to test."""
    _check_fraction(test_fraction)
    test_rows = _random_rows(len(data), test_fraction, seed)
    return apply_cold_policy(data.subset(~test_rows), data.subset(test_rows), cold)


def _random_rows(n: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean [n]: the first ``round(fraction * n)`` rows of a seeded permutation.

    A function of its own so the int64 permutation is freed before the caller copies
    the rows out.
    """
    order = np.random.default_rng(seed).permutation(n)
    rows = np.zeros(n, bool)
    rows[order[: int(round(fraction * n))]] = True
    return rows


def _rank_within_user(user: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its 0-based rank among its user's rows ordered by ``keys`` (first key
    primary), and the user's rating count."""
    order = np.lexsort((*reversed(keys), user))
    counts = np.bincount(user)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(user), np.int64)
    rank[order] = np.arange(len(user)) - starts[user[order]]
    return rank, counts[user]


def per_user_split(
    data: Ratings, test_fraction: float = 0.2, *, seed: int = 0, cold: str = "keep"
) -> Split:
    """Each user's ratings are divided at random: ``round(test_fraction * n_u)`` go to test,
    but at most ``n_u - 1``, so every user keeps at least one rating in train.

    Users with a single rating keep it in train.
    """
    _check_fraction(test_fraction)
    key = np.random.default_rng(seed).random(len(data))
    rank, count = _rank_within_user(data.user, key)
    n_test = np.minimum(np.rint(test_fraction * count), count - 1).astype(np.int64)
    test_rows = rank < n_test
    return apply_cold_policy(data.subset(~test_rows), data.subset(test_rows), cold)


def temporal_split(data: Ratings, k: int = 1, *, cold: str = "keep") -> Split:
    """Leave-last-``k``-out: each user's ``k`` latest ratings go to test.

    Users with ``k`` or fewer ratings keep them all in train. Equal timestamps are
    ordered by position in ``data``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rank, count = _rank_within_user(data.user, -data.timestamp, -np.arange(len(data)))  # 0 = latest
    test_rows = (rank < k) & (count > k)
    return apply_cold_policy(data.subset(~test_rows), data.subset(test_rows), cold)


def kfold(
    data: Ratings, n_splits: int = 5, *, seed: int = 0, cold: str = "keep"
) -> Iterator[Split]:
    """``n_splits`` random folds; fold ``f`` is the test part of split ``f``.

    The test parts partition the ratings.
    """
    if not 2 <= n_splits <= len(data):
        raise ValueError(f"n_splits must be in [2, {len(data)}], got {n_splits}")
    fold = np.empty(len(data), np.int64)
    fold[np.random.default_rng(seed).permutation(len(data))] = np.arange(len(data)) % n_splits
    for f in range(n_splits):
        yield apply_cold_policy(data.subset(fold != f), data.subset(fold == f), cold)
