"""Strong generalisation (Liang et al. 2018, the Mult-VAE / EASE / RecVAE tables).

Whole users are held out of training (:func:`recjax.data.user_split`, ``--split
users``). For every held-out user:

1. the ratings are binarised: a rating ``>= threshold`` is a positive (4 on
   MovieLens' 0.5-5 scale: Liang's ``rating > 3.5``), the others are dropped from
   the user's positives; so are items with no positive rating in the training part
   (Liang ranks over the items of the training users only: ``unique_sid``), and
   those items are never ranked;
2. users left with fewer than ``min_positives`` (5, Liang's ``min_uc``) positives
   are not evaluated;
3. the positives are divided at random (seeded): ``floor(0.2 n)`` held out (Liang's
   ``int(test_prop * n)``), the rest (80%) folded into the model through the model
   contract (the ``fold_in`` capability of :mod:`recjax.models.base`: a bag model's
   user tower over the bag, a factor model's solve against its frozen items), without
   retraining;
4. every catalogue item not folded in is ranked, and the held-out 20% are the
   relevant items: Recall@20 and Recall@50 normalised by ``min(k, held out)``
   (Liang's ``Recall_at_k_batch``: ``capped_recall`` of
   :func:`recjax.metrics.per_user_ranking_metrics`) and binary NDCG@100
   (``NDCG_binary_at_k_batch``, ideal DCG over ``min(k, held out)`` hits).

EASE (:class:`recjax.models.baselines.EASE`, fitted on the training users) folds a
user in by its definition, ``scores = x B`` with ``x`` the user's folded-in row. Run
folders are measured under this protocol by :class:`recjax.evaluation.experiment.Experiment`.

Example
-------
>>> import numpy as np
>>> from recjax.data import Ratings
>>> from recjax.evaluation.strong import StrongTask, strong_generalization
>>> from recjax.models.baselines import EASE
>>> data = Ratings.from_raw([1, 1, 1, 2, 2, 2, 2, 3, 3, 9, 9, 9, 9, 9, 9],
...                         [10, 20, 30, 20, 30, 40, 50, 10, 40, 10, 20, 30, 40, 50, 60],
...                         [5.0, 5, 5, 4, 4, 5, 5, 5, 2, 5, 5, 5, 4, 4, 5])
>>> train, held = data.subset(slice(0, 9)), data.subset(slice(9, 15))  # user 9 held out
>>> task = StrongTask.from_ratings(train, held, seed=0)
>>> task.users.tolist(), task.catalogue.tolist()   # item 60: no training rating, never ranked
([3], [True, True, True, True, True, False])
>>> task.fold.toarray()[0].tolist(), task.test.toarray()[0].tolist()  # floor(0.2 * 5) = 1 held out
([1.0, 1.0, 1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
>>> m = strong_generalization(EASE(1.0).fit(train), task, ks=(1,), ndcg_k=2)
>>> m["recall@1"], m["ndcg@2"], m["users"]
(1.0, 1.0, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import scipy.sparse as sp

from recjax._checks import positive_int
from recjax.data.dataset import Ratings
from recjax.metrics import per_user_ranking_metrics
from recjax.retrieval import TopK
from recjax.scoring import EmbeddingScorer

__all__ = ["StrongTask", "strong_generalization", "STRONG_KS"]

#: The cut-offs Liang et al. report: Recall@20, Recall@50 (``ks``) and NDCG@100.
STRONG_KS = ((20, 50), 100)


@dataclass(frozen=True, eq=False)
class StrongTask:
    """The held-out users of a strong-generalisation split, divided into the part
    folded in and the part ranked against.

    Attributes
    ----------
    users : int64 [U]
        The evaluated users (indices of the vocabulary), ascending; row ``r`` of
        ``fold`` and ``test`` is user ``users[r]``.
    fold : CSR float32 [U, n_items]
        The folded-in positives (pattern, 1.0), sorted indices.
    fold_ratings : float64 [fold.nnz]
        Their ratings, aligned with ``fold.indices`` (rating models fold in with them).
    test : CSR float32 [U, n_items]
        The held-out positives: the relevant items.
    catalogue : bool [n_items]
        Items with a positive training rating: the only ones ranked.
    """

    #: Metric names of this protocol that mean another per-user metric: Liang's recall
    #: is ``capped_recall`` (normalised by ``min(k, held out)``).
    ALIASES: ClassVar[dict[str, str]] = {"recall": "capped_recall"}

    users: np.ndarray
    fold: sp.csr_matrix
    fold_ratings: np.ndarray
    test: sp.csr_matrix
    catalogue: np.ndarray

    @classmethod
    def from_ratings(cls, train: Ratings | Sequence[Ratings], heldout: Ratings, *,
                     threshold: float = 4.0, fold_fraction: float = 0.8, min_positives: int = 5,
                     seed: int = 0) -> "StrongTask":
        """The task of held-out users' ratings ``heldout``, against a model trained on
        ``train`` (one part, or several: all count as the training users' data).

        Raises
        ------
        ValueError
            Vocabularies that differ, a user in both, a fraction outside (0, 1), or no
            held-out user with ``min_positives`` positives.
        """
        parts = [train] if isinstance(train, Ratings) else list(train)
        if not parts:
            raise ValueError("train must hold at least one Ratings part")
        for p in parts:
            if p.n_users != heldout.n_users or p.n_items != heldout.n_items:
                raise ValueError(f"train ({p.n_users} users x {p.n_items} items) and the held-out "
                                 f"users ({heldout.n_users} x {heldout.n_items}) use different "
                                 f"vocabularies")
        if not 0.0 < fold_fraction < 1.0:
            raise ValueError(f"fold_fraction must be in (0, 1), got {fold_fraction}")
        min_positives = positive_int(min_positives, "min_positives")
        train_users = np.concatenate([p.user for p in parts])
        if np.intersect1d(train_users, heldout.user).size:
            raise ValueError("some held-out users also have training ratings: strong generalisation "
                             "needs whole users held out (a 'users' split)")
        catalogue = np.zeros(heldout.n_items, bool)
        for p in parts:
            catalogue[p.item[p.rating >= threshold]] = True
        keep = (heldout.rating >= threshold) & catalogue[heldout.item]
        user, item = heldout.user[keep].astype(np.int64), heldout.item[keep].astype(np.int64)
        rating = heldout.rating[keep].astype(np.float64)
        count = np.bincount(user, minlength=heldout.n_users)
        users = np.flatnonzero(count >= min_positives).astype(np.int64)
        if not len(users):
            raise ValueError(f"no held-out user has {min_positives} positive ratings (>= {threshold:g}) "
                             f"of training items: nothing to evaluate")
        evaluated = np.isin(user, users)
        user, item, rating = user[evaluated], item[evaluated], rating[evaluated]
        # per user: a seeded random order of its positives; the first floor((1 - f) n) are held out
        order = np.lexsort((np.random.default_rng(seed).random(len(user)), user))
        user, item, rating = user[order], item[order], rating[order]
        n = count[user]
        rank = np.arange(len(user)) - np.searchsorted(user, user)
        n_test = np.floor(np.round((1.0 - fold_fraction) * n, 9)).astype(np.int64)
        row = np.searchsorted(users, user)
        held = rank < n_test
        fold, fold_order = _pattern(row[~held], item[~held], (len(users), heldout.n_items))
        test, _ = _pattern(row[held], item[held], (len(users), heldout.n_items))
        return cls(users, fold, rating[~held][fold_order], test, catalogue)

    @classmethod
    def from_run(cls, run: Any, part: str = "test", **options: Any) -> "StrongTask":
        """The task of a run trained on a ``users`` split: its ``part`` users (``test``
        or ``val``) held out, against its training users (``options``: those of
        :meth:`from_ratings`)."""
        run._need_vocabulary("strong generalisation")
        if part not in ("test", "val"):
            raise ValueError(f"part must be 'test' or 'val', got {part!r}")
        return cls.from_ratings(run.splits["train"], run.splits[part], **options)

    @property
    def n_items(self) -> int:
        return int(self.fold.shape[1])

    @property
    def exclude(self) -> sp.csr_matrix:
        """CSR [U, n_items]: what is never ranked, the folded-in items and the items
        outside the catalogue."""
        cold = np.flatnonzero(~self.catalogue)
        rows = np.repeat(np.arange(len(self.users)), len(cold))
        outside = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, np.tile(cold, len(self.users)))),
                                shape=self.fold.shape)
        return (self.fold + outside).tocsr()

    def rank(self, model: Any, k: int, *, binary_threshold: float | None = None) -> TopK:
        """Top ``k`` of every evaluated user, folded into ``model``: ids [U, min(k,
        catalogue)] (rows as :attr:`users`).

        ``model``: a model that declares the ``fold_in`` capability
        (:mod:`recjax.models.base`: a trained module of a family that folds users in,
        ``Run.model()``, or a fitted :class:`recjax.models.baselines.EASE`).
        ``binary_threshold``: the positives of a binary MF fold-in (a run's
        ``train_config.binary_threshold``; default: every folded-in rating, the task's
        ratings being all positives).

        Raises
        ------
        ValueError
            A model that cannot fold in a user, naming the families that can.
        """
        k = min(positive_int(k, "k"), int(self.catalogue.sum()))
        scorer = _fold_in_scorer(model, self, binary_threshold)
        if scorer.n_items != self.n_items:
            raise ValueError(f"the model scores {scorer.n_items} items, the split has {self.n_items}")
        return scorer.topk(np.arange(len(self.users)), k, self.exclude)

    def per_user_values(self, model: Any, ks: Sequence[int], *,
                        binary_threshold: float | None = None) -> dict[str, np.ndarray]:
        """Per evaluated user (float64 [U], rows as :attr:`users`), every metric of
        :func:`recjax.metrics.per_user_ranking_metrics` at each cut-off of ``ks``, keyed
        ``name@k``, from one ranking of the top ``max(ks)`` (``model`` and
        ``binary_threshold`` as :meth:`rank`)."""
        ks = [positive_int(k, "k") for k in ks]
        top = self.rank(model, max(ks), binary_threshold=binary_threshold)
        return {f"{name}@{k}": value for k in ks
                for name, value in per_user_ranking_metrics(top, self.test, k).items()}


def strong_generalization(model: Any, task: StrongTask, *, ks: Sequence[int] = STRONG_KS[0],
                          ndcg_k: int = STRONG_KS[1], prefix: str = "",
                          binary_threshold: float | None = None) -> dict[str, float]:
    """Liang et al.'s strong-generalisation metrics of ``model`` on ``task``.

    Parameters
    ----------
    model : what :meth:`StrongTask.rank` accepts
    task : StrongTask
    ks : ints
        Recall cut-offs (default 20, 50), recall normalised by ``min(k, held out)``.
    ndcg_k : int
        NDCG cut-off (default 100), binary gain.
    binary_threshold : float, optional
        As :meth:`StrongTask.rank`.

    Returns
    -------
    dict
        ``recall@k`` for each of ``ks``, ``ndcg@{ndcg_k}`` and ``users`` (evaluated).
    """
    values = task.per_user_values(model, (*ks, ndcg_k), binary_threshold=binary_threshold)
    out = {f"{prefix}recall@{k}": float(values[f"capped_recall@{k}"].mean()) for k in ks}
    out[f"{prefix}ndcg@{ndcg_k}"] = float(values[f"ndcg@{ndcg_k}"].mean())
    out[f"{prefix}users"] = len(task.users)
    return out


def _pattern(row: np.ndarray, col: np.ndarray, shape: tuple[int, int]) -> tuple[sp.csr_matrix, np.ndarray]:
    """CSR float32 pattern of (row, col) pairs, sorted indices, and the order that sorts
    the pairs into its ``indices``."""
    order = np.lexsort((col, row))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=shape[0]))])
    return sp.csr_matrix((np.ones(len(row), np.float32), col[order], indptr), shape=shape), order


def _fold_in_scorer(model: Any, task: StrongTask, binary_threshold: float | None) -> Any:
    """A scorer whose user ``r`` is ``task.users[r]`` folded into ``model``: every held-out
    user folded in by one batched call of the model's ``fold_in``, scored against the
    item side of its ranking vectors (the model contract, :mod:`recjax.models.base`)."""
    from recjax.models.base import capabilities_of, fold_in_items  # imports JAX: only when ranking

    if not capabilities_of(model).fold_in:
        raise ValueError(f"a {type(model).__name__} cannot fold in held-out users: strong "
                         f"generalisation needs one of {', '.join(_folding_families())} (or EASE)")
    threshold = -np.inf if binary_threshold is None else binary_threshold
    users = model.fold_in(task.fold, task.fold_ratings, binary_threshold=threshold)
    return EmbeddingScorer(users, fold_in_items(model))


def _folding_families() -> list[str]:
    """The families that declare the ``fold_in`` capability."""
    from recjax.families import MODELS  # the registry imports the model modules: only on error

    return [name for name, spec in MODELS.items() if spec.capabilities.fold_in]

