"""Train/test splits of :class:`~recjax.data.Ratings`, all sharing the dataset's vocabularies.

Every split keeps the full dataset's user and item vocabularies, so an index means
the same user or item in train and test. A test rating whose user or item has no
rating in train is *cold*; each split counts them and applies an explicit policy:

``cold="keep"``  keep them (models fall back to coarser predictions; the default,
                 so published splits such as ml-100k's ``ua.test`` stay whole);
``cold="drop"``  remove them from the test part;
``cold="error"`` raise :class:`ValueError`.

:func:`split_ratings` gives the three parts a training run needs, :class:`Splits`
(train, val, test), with validation carved from the training part by
:func:`carve_validation`.

Example
-------
>>> from recjax.data.synthetic import synthetic_ratings
>>> from recjax.data.splits import holdout_split, split_ratings
>>> data, _ = synthetic_ratings(n_users=50, n_items=40, n_ratings=800, seed=0)
>>> split = holdout_split(data, test_fraction=0.1, seed=0)
>>> len(split.train) + len(split.test)
800
>>> parts = split_ratings(data, "random", test_fraction=0.1, val_fraction=0.05, seed=0)
>>> len(parts.train), len(parts.val), len(parts.test)
(684, 36, 80)
>>> parts.check()  # every part indexed by the same vocabularies
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import NamedTuple

import numpy as np

from recjax.data.dataset import Ratings
from recjax.data.download import resolve
from recjax.data.movielens import load_movielens, read_split

__all__ = [
    "Split",
    "Splits",
    "PREDEFINED_SPLITS",
    "SPLIT_METHODS",
    "split_ratings",
    "carve_validation",
    "predefined_split",
    "holdout_split",
    "per_user_split",
    "temporal_split",
    "kfold",
    "PROTOCOL_SPLITS",
    "DRAWN_SPLITS",
    "RUN_SPLITS",
    "PARTS",
    "PROTOCOLS",
    "protocol_of_split",
    "user_split",
    "last_one_split",
]

PREDEFINED_SPLITS = ("ua", "ub", "u1", "u2", "u3", "u4", "u5")
COLD_POLICIES = ("keep", "drop", "error")
SPLIT_METHODS = ("random", "per_user", "temporal", "kfold")
#: The splits of the literature's ranking protocols (:mod:`recjax.evaluation.strong`):
#: held-out users (strong generalisation) and leave-last-one-out with its validation.
PROTOCOL_SPLITS = ("users", "last_one")
#: The splits a run is trained on (``RunConfig.split``, ``--split``): those drawn from any
#: dataset, one train / validation / test split each (k-fold's folds are not one), and
#: ml-100k's published ones.
DRAWN_SPLITS = tuple(m for m in SPLIT_METHODS if m != "kfold") + PROTOCOL_SPLITS
RUN_SPLITS = PREDEFINED_SPLITS + DRAWN_SPLITS
#: The ranking protocols (``evaluate --protocol``, ``tune --protocol``) and the split
#: each needs: ``ua`` any split of further ratings of training users (ua, random,
#: per_user, ...), ``strong`` held-out users, ``loo`` each user's latest rating.
PROTOCOLS = {"ua": None, "strong": "users", "loo": "last_one"}


def protocol_of_split(split: str) -> str:
    """The protocol a split implies: ``"strong"`` for ``users``, ``"loo"`` for
    ``last_one``, ``"ua"`` for any other."""
    return {need: name for name, need in PROTOCOLS.items() if need}.get(split, "ua")


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


def _cold_mask(train: Ratings, test: Ratings) -> np.ndarray:
    """Boolean [len(test)]: test rows whose user or item is absent from ``train``."""
    seen_users = np.zeros(train.n_users, bool)
    seen_items = np.zeros(train.n_items, bool)
    seen_users[train.user] = True
    seen_items[train.item] = True
    return ~(seen_users[test.user] & seen_items[test.item])


def _apply_cold_policy(train: Ratings, test: Ratings, cold: str = "keep") -> Split:
    """Count cold test rows and apply ``cold`` ("keep", "drop" or "error")."""
    if cold not in COLD_POLICIES:
        raise ValueError(f"cold must be one of {COLD_POLICIES}, not {cold!r}")
    mask = _cold_mask(train, test)
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
    return _apply_cold_policy(train, test, cold)


def holdout_split(
    data: Ratings, test_fraction: float = 0.1, *, seed: int = 0, cold: str = "keep"
) -> Split:
    """A uniformly random ``test_fraction`` of all ratings goes to test."""
    _check_fraction(test_fraction)
    test_rows = _random_rows(len(data), test_fraction, seed)
    return _apply_cold_policy(data.subset(~test_rows), data.subset(test_rows), cold)


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
    return _apply_cold_policy(data.subset(~test_rows), data.subset(test_rows), cold)


def temporal_split(data: Ratings, k: int = 1, *, cold: str = "keep") -> Split:
    """Leave-last-``k``-out: each user's ``k`` latest ratings go to test.

    Users with ``k`` or fewer ratings keep them all in train. Equal timestamps are
    ordered by position in ``data``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rank, count = _rank_within_user(data.user, -data.timestamp, -np.arange(len(data)))  # 0 = latest
    test_rows = (rank < k) & (count > k)
    return _apply_cold_policy(data.subset(~test_rows), data.subset(test_rows), cold)


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
        yield _apply_cold_policy(data.subset(fold != f), data.subset(fold == f), cold)


def _user_count(share: float, n_users: int, name: str) -> int:
    """Users a share stands for: a fraction in (0, 1) of ``n_users`` (rounded), or a
    whole number of users >= 1; 0 is none."""
    share = float(share)
    if share == 0.0:
        return 0
    if 0.0 < share < 1.0:
        return int(round(share * n_users))
    if share >= 1.0 and share.is_integer():
        return int(share)
    raise ValueError(f"{name} must be a fraction in (0, 1) or a whole number of users, got {share:g}")


def user_split(data: Ratings, test_users: float = 0.1, val_users: float = 0.0, *,
               seed: int = 0) -> Splits:
    """Strong generalisation (Liang et al. 2018): whole users held out.

    The users with at least one rating are permuted (seeded); the first
    ``test_users`` go to test, the next ``val_users`` to validation, the rest to
    train. A user's ratings all go to one part; every item stays in the vocabulary.

    Parameters
    ----------
    data : Ratings
    test_users, val_users : float
        A fraction in (0, 1) of the rated users (rounded to a whole number of users),
        or a whole number of users (``10000`` for the paper's ML-20M split);
        ``val_users`` may be 0 (an empty validation part).
    seed : int

    Raises
    ------
    ValueError
        A share that is neither, or held-out users that leave no training user.
    """
    rated = np.flatnonzero(np.bincount(data.user, minlength=data.n_users) > 0)
    n_test = _user_count(test_users, len(rated), "test_users")
    n_val = _user_count(val_users, len(rated), "val_users")
    if n_test < 1:
        raise ValueError(f"test_users={test_users:g} holds out no user of {len(rated)}")
    if n_test + n_val >= len(rated):
        raise ValueError(f"{n_test} test + {n_val} validation users leave none of the {len(rated)} "
                         f"rated users to train on; hold out fewer")
    part = np.zeros(data.n_users, np.int8)  # 0 train, 1 val, 2 test
    order = np.random.default_rng(seed).permutation(rated)
    part[order[:n_test]] = 2
    part[order[n_test:n_test + n_val]] = 1
    of_row = part[data.user]
    return Splits(data.subset(of_row == 0), data.subset(of_row == 1), data.subset(of_row == 2))


def last_one_split(data: Ratings, *, validation: bool = False) -> Splits:
    """Leave-last-one-out (the NCF protocol): each user's latest rating is the test
    part and, with ``validation``, the one before it the validation part.

    Latest by timestamp; equal timestamps are ordered by position in ``data`` (the
    later row is the later rating), as in :func:`temporal_split`. A user keeps at
    least one rating in train: users with one rating have no test item, users with
    two no validation item.
    """
    rank, count = _rank_within_user(data.user, -data.timestamp, -np.arange(len(data)))  # 0 = latest
    test_rows = (rank == 0) & (count > 1)
    val_rows = (rank == 1) & (count > 2) if validation else np.zeros(len(data), bool)
    train_rows = ~(test_rows | val_rows)
    return Splits(data.subset(train_rows), data.subset(val_rows), data.subset(test_rows))


# ----------------------------------------------------------------------------- train/val/test


class Splits(NamedTuple):
    """The train, validation and test parts of one dataset.

    Attributes
    ----------
    train, val, test : Ratings
        Subsets of one :class:`Ratings`, indexed by its user and item vocabularies
        (the same objects), so an index means the same user or item in every part.
    """

    train: Ratings
    val: Ratings
    test: Ratings

    def check(self) -> None:
        """Raise ValueError if a part's vocabularies differ from train's; see
        :func:`check_shared_vocabulary`."""
        check_shared_vocabulary(self)


PARTS = Splits._fields  # the parts' names, in order: train, val, test


def check_shared_vocabulary(parts: Splits | Mapping[str, Ratings]) -> None:
    """Check that every part is indexed by the user and item vocabularies of ``train``.

    Vocabularies match when they are the same object, or hold equal raw-id arrays.

    Parameters
    ----------
    parts : Splits or mapping of part name -> Ratings
        Compared against the part named ``"train"`` (else the first one).

    Raises
    ------
    ValueError
        Naming the first part whose user or item vocabulary differs, e.g. ``part
        'test' was built with its own item vocabulary (40 items vs 38 in train);
        build every part from one Ratings, e.g. with recjax.data.split_ratings``.
    """
    named = dict(parts._asdict() if isinstance(parts, Splits) else parts)
    if not named:
        return
    reference = "train" if "train" in named else next(iter(named))
    base = named[reference]
    for part, data in named.items():
        for kind, vocab, base_vocab in (("user", data.users, base.users),
                                        ("item", data.items, base.items)):
            if vocab is base_vocab or (vocab.ids.dtype.kind == base_vocab.ids.dtype.kind
                                       and np.array_equal(vocab.ids, base_vocab.ids)):
                continue
            same_size = " with different ids" if len(vocab) == len(base_vocab) else ""
            raise ValueError(
                f"part {part!r} was built with its own {kind} vocabulary ({len(vocab)} {kind}s "
                f"vs {len(base_vocab)} in {reference}{same_size}); build every part from one "
                f"Ratings, e.g. with recjax.data.split_ratings"
            )


def carve_validation(train: Ratings, val_fraction: float, seed: int) -> tuple[Ratings, Ratings]:
    """Carve a random validation part out of a training part.

    The convention every training run uses: ``holdout_split(train, val_fraction,
    seed=seed + 1)``, the ``+ 1`` keeping the validation draw independent of a test
    draw made with ``seed``. Cold validation ratings are kept.

    Parameters
    ----------
    train : Ratings, n rows
    val_fraction : float
        In ``[0, 1)``; 0 gives an empty validation part.
    seed : int
        The split's seed (the same one the test part was drawn with).

    Returns
    -------
    fit, val : Ratings
        ``n - round(val_fraction * n)`` and ``round(val_fraction * n)`` rows, the
        vocabularies of ``train``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return train, train.subset(slice(0, 0))
    rows = np.zeros(len(train), bool)
    rows[_validation_order(len(train), seed)[: int(round(val_fraction * len(train)))]] = True
    return train.subset(~rows), train.subset(rows)


def _validation_order(n: int, seed: int) -> np.ndarray:
    """The seeded permutation of ``n`` training rows a validation part is carved from
    (its first rows; :func:`carve_validation`, and the Object2Vec JSON Lines parts of
    :func:`recjax.data.tokens.read_pair_parts`). ``seed + 1`` keeps the draw independent
    of a test draw made with ``seed``: it is ``holdout_split``'s draw for ``seed + 1``."""
    return np.random.default_rng(seed + 1).permutation(n)


def split_ratings(
    data: Ratings,
    method: str = "random",
    *,
    test_fraction: float = 0.1,
    val_fraction: float = 0.05,
    seed: int = 0,
    fold: int = 0,
    folds: int = 5,
) -> Splits:
    """Train, validation and test parts of ``data``, sharing its vocabularies.

    Parameters
    ----------
    data : Ratings
    method : {"random", "per_user", "temporal", "kfold", "users", "last_one"}
        How the test part is drawn: ``"random"``, a uniformly random
        ``test_fraction`` of all ratings (:func:`holdout_split`); ``"per_user"``,
        ``test_fraction`` of each user's ratings, every user keeping at least one in
        train (:func:`per_user_split`); ``"temporal"``, each user's latest rating
        (leave-last-one-out, :func:`temporal_split` with ``k=1``; ``test_fraction``
        is not used); ``"kfold"``, fold ``fold`` of ``folds`` random folds
        (:func:`kfold`; ``test_fraction`` is not used); ``"users"``, whole users
        held out (strong generalisation, :func:`user_split`: ``test_fraction`` and
        ``val_fraction`` are shares of the users, or whole numbers of users);
        ``"last_one"``, each user's latest rating to test and, when ``val_fraction >
        0``, the one before it to validation (:func:`last_one_split`).
    test_fraction : float
        In (0, 1), for "random", "per_user" and "users" (or a whole number of users).
    val_fraction : float
        In [0, 1): the share of the training part carved out, at random, as
        validation (:func:`carve_validation`), except for "users" (a share of the
        users, or a number of them) and "last_one" (above 0: the second-latest
        rating).
    seed : int
        Seeds the test draw (``seed``) and the validation carve (``seed + 1``).
    fold, folds : int
        For "kfold": which fold (``0 <= fold < folds``) is the test part.

    Returns
    -------
    Splits
        Disjoint parts that together hold every rating of ``data``; cold test and
        validation ratings (user or item unseen in train) are kept.
    """
    if method == "random":
        train, test, _ = holdout_split(data, test_fraction, seed=seed)
    elif method == "per_user":
        train, test, _ = per_user_split(data, test_fraction, seed=seed)
    elif method == "temporal":
        train, test, _ = temporal_split(data, k=1)
    elif method == "users":
        return user_split(data, test_fraction, val_fraction, seed=seed)
    elif method == "last_one":
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        return last_one_split(data, validation=val_fraction > 0)
    elif method == "kfold":
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in [0, folds) = [0, {folds}), got {fold}")
        train, test, _ = next(islice(kfold(data, folds, seed=seed), fold, None))
    else:
        raise ValueError(f"unknown split method {method!r}; use one of "
                         f"{', '.join(SPLIT_METHODS + PROTOCOL_SPLITS)}")
    fit, val = carve_validation(train, val_fraction, seed)
    return Splits(fit, val, test)
