"""Rating baselines in NumPy: global mean, per-user mean, per-item mean, regularised biases.

Each has ``fit(train) -> self`` and ``predict(user, item) -> float64 [n]`` over
index arrays. Cold users or items (no training rating) fall back to the next
coarser estimate: user/item mean -> global mean; in the bias model a cold user
or item simply gets bias 0.

The bias model ``mu + b_u + b_i`` minimises
``sum (r - mu - b_u - b_i)^2 + reg_user * sum b_u^2 + reg_item * sum b_i^2``
by alternating closed-form least squares (each half-step is exact).

Example
-------
>>> import numpy as np
>>> from recjax.data import Ratings
>>> from recjax.models.baselines import UserMean
>>> train = Ratings.from_raw([1, 1, 2], [1, 2, 1], [4.0, 2.0, 5.0])
>>> UserMean().fit(train).predict(np.array([0, 1]), np.array([0, 0])).tolist()
[3.0, 5.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recjax.data.bags import check_user_items, user_item_pattern
from recjax.data.dataset import Ratings
from recjax.models.capabilities import Capabilities

__all__ = ["GlobalMean", "UserMean", "ItemMean", "BiasModel", "MostPopular", "EASE", "interaction_rows", "ease_weights"]


def _group_mean(index: np.ndarray, values: np.ndarray, size: int, fallback: float) -> np.ndarray:
    """Mean of ``values`` per index in [0, size); ``fallback`` where a group is empty."""
    counts = np.bincount(index, minlength=size)
    sums = np.bincount(index, weights=values, minlength=size)
    return np.where(counts > 0, sums / np.maximum(counts, 1), fallback)


class GlobalMean:
    """Predicts the training mean rating for every pair."""

    def fit(self, train: Ratings) -> "GlobalMean":
        self.mean_ = float(np.mean(train.rating, dtype=np.float64))
        return self

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        return np.full(np.shape(user), self.mean_)


class UserMean(GlobalMean):
    """Each user's mean training rating; cold users get the global mean."""

    def fit(self, train: Ratings) -> "UserMean":
        super().fit(train)
        self.user_mean_ = _group_mean(train.user, train.rating.astype(np.float64), train.n_users, self.mean_)
        return self

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        return self.user_mean_[user]


class ItemMean(GlobalMean):
    """Each item's mean training rating; cold items get the global mean."""

    def fit(self, train: Ratings) -> "ItemMean":
        super().fit(train)
        self.item_mean_ = _group_mean(train.item, train.rating.astype(np.float64), train.n_items, self.mean_)
        return self

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        return self.item_mean_[item]


class BiasModel(GlobalMean):
    """``mu + b_u + b_i`` with L2-regularised biases, fitted by alternating least squares.

    Parameters
    ----------
    reg_user, reg_item : float
        L2 weights (in rating units: the number of "virtual" zero-residual ratings).
    n_iter : int
        Alternations; 10 is plenty (the objective is convex and each step exact).
    """

    def __init__(self, reg_user: float = 15.0, reg_item: float = 10.0, n_iter: int = 10) -> None:
        if reg_user < 0 or reg_item < 0 or n_iter < 1:
            raise ValueError("reg_user and reg_item must be >= 0 and n_iter >= 1")
        self.reg_user, self.reg_item, self.n_iter = reg_user, reg_item, n_iter

    def fit(self, train: Ratings) -> "BiasModel":
        super().fit(train)
        residual = train.rating.astype(np.float64) - self.mean_
        user_count = np.bincount(train.user, minlength=train.n_users)
        item_count = np.bincount(train.item, minlength=train.n_items)
        b_user, b_item = np.zeros(train.n_users), np.zeros(train.n_items)
        for _ in range(self.n_iter):
            b_item = np.bincount(train.item, residual - b_user[train.user], train.n_items) / (
                item_count + self.reg_item)
            b_user = np.bincount(train.user, residual - b_item[train.item], train.n_users) / (
                user_count + self.reg_user)
        self.user_bias_, self.item_bias_ = b_user, b_item
        return self

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        return self.mean_ + self.user_bias_[user] + self.item_bias_[item]


BASELINES = {"global_mean": GlobalMean, "user_mean": UserMean, "item_mean": ItemMean, "bias": BiasModel}


# ----------------------------------------------------------------------------- ranking
class MostPopular:
    """Ranking baseline: every user gets the items with the most training ratings.

    ``ranking_vectors()`` gives ``[1] . [count_i]``, so the ranking protocol
    (:mod:`recjax.evaluation.protocol`) scores it with the same top-k kernel as any embedding model.
    """

    capabilities = Capabilities(ranks=True)

    def fit(self, train: Ratings) -> "MostPopular":
        self.n_users_ = train.n_users
        self.counts_ = np.bincount(train.item, minlength=train.n_items).astype(np.float64)
        return self

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """The item's training count (a ranking score, not a rating)."""
        return self.counts_[item]

    def ranking_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ones [n_users, 1], counts [n_items, 1]) as float32."""
        return (np.ones((self.n_users_, 1), np.float32), self.counts_[:, None].astype(np.float32))


def ease_weights(pattern: Any, lam: float) -> np.ndarray:
    """EASE's closed form (Steck, 2019), float64 [n_items, n_items]: ``B = I - P
    diag(1 / diag(P))`` with ``P = (X^T X + lam I)^-1`` for the users x items 0/1
    ``pattern`` ``X`` (scipy.sparse or dense), which makes ``diag(B) = 0``; the one place
    it is computed (the :class:`EASE` baseline and the trained family
    :mod:`recjax.models.ease`)."""
    if not lam > 0:
        raise ValueError(f"the EASE L2 weight must be > 0, got {lam}")
    gram = pattern.T @ pattern
    gram = np.asarray(gram.toarray() if hasattr(gram, "toarray") else gram, np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


class EASE:
    """EASE (Steck, 2019): a closed-form item-item linear model on the binary rating matrix.

    ``B = I - P diag(1 / diag(P))`` with ``P = (X^T X + lambda I)^-1``, ``X`` the
    users x items pattern of the training ratings; a user's scores are ``X_u B`` (the
    diagonal of ``B`` is zero). Memory and time O(n_items^2) / O(n_items^3): for
    catalogues up to a few tens of thousands of items.

    Parameters
    ----------
    l2 : float
        L2 weight lambda (250 is the tuned value on ml-100k's ub split).
    """

    capabilities = Capabilities(ranks=True, fold_in=True)

    def __init__(self, l2: float = 250.0) -> None:
        if not l2 > 0:
            raise ValueError(f"l2 must be > 0, got {l2}")
        self.l2 = float(l2)

    def fit(self, train: Ratings) -> "EASE":
        x = user_item_pattern(train)
        self.x_, self.b_ = x.astype(np.float32), ease_weights(x, self.l2).astype(np.float32)
        return self

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """Scores ``(X B)[user, item]`` (ranking scores, not ratings)."""
        user, item = np.asarray(user), np.asarray(item)
        rows = self.x_[user]
        return np.asarray(rows.multiply(self.b_[:, item].T).sum(1), np.float64).ravel()

    def ranking_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(X dense [n_users, n_items], B^T [n_items, n_items]): ``X_u . B^T_i = (X B)_ui``."""
        return self.x_.toarray(), np.ascontiguousarray(self.b_.T)

    def fold_in(self, user_items: sp.csr_matrix, ratings: np.ndarray | None = None, *,
                binary_threshold: float = 3.0) -> np.ndarray:
        """New users: their 0/1 rows [n, n_items] float32 (:func:`interaction_rows`), scored
        against ``B^T`` (:meth:`ranking_vectors`): a row times ``B``."""
        check_user_items(user_items, ratings, self.b_.shape[0])
        return interaction_rows(user_items, ratings, binary_threshold=binary_threshold)


def interaction_rows(user_items: sp.csr_matrix, ratings: np.ndarray | None, *,
                     binary_threshold: float = 3.0) -> np.ndarray:
    """Users' 0/1 rows over the catalogue, float32 [n, n_items] (EASE's input for users
    folded in): every given item, or with ``ratings`` only those rated above
    ``binary_threshold`` (a rating given at fold-in says which items the user liked)."""
    keep = np.ones(user_items.nnz, bool) if ratings is None else np.asarray(ratings) > binary_threshold
    rows = np.zeros(user_items.shape, np.float32)
    row = np.repeat(np.arange(user_items.shape[0]), np.diff(user_items.indptr))
    rows[row[keep], user_items.indices[keep]] = 1.0
    return rows


RANKING_BASELINES = {"most_popular": MostPopular, "ease": EASE}
