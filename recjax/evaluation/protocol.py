"""The ranking protocol: one definition of "top-k accuracy" used everywhere in recjax.

Train on a split's train part. For every test user, rank **all** items the user has
not rated in the train part (validation included: it is part of the split's train
set), keep the top ``k``, and count as relevant the user's test items, whatever
their rating. On ml-100k's ``ua`` split (the reference protocol) every user has 10
test items. Scores come from a :class:`Scorer`:

* :class:`EmbeddingScorer`: user and item vectors, scored by the compiled top-k
  kernel (:func:`recjax.retrieval.topk`, dot / cosine / L2) with the train set as
  its per-user ``exclude`` CSR, batched over users;
* :class:`FunctionScorer`: any function from a batch of user indices to a dense
  ``[B, n_items]`` score matrix (a pair model's full comparator, EASE, ...);
* :func:`as_scorer` turns models into scorers through the model contract
  (:mod:`recjax.models.base`): any trained module of any family (its ranking
  vectors, its user tower over each user's train items for a bag model, or its dense
  scores), EASE and most-popular, an object with ``ranking_vectors() -> (users [U, d],
  items [N, d])``, or a ``(users, items)`` pair of arrays.

``k`` above the catalogue: a list holds at most ``n_items`` items, so
:meth:`RankingTask.rank` returns ``min(k, n_items)`` columns and
:func:`evaluate_ranking` reports the metrics at ``n_items`` under keys that carry the
``k`` asked for (``precision@5000`` on ml-100k is precision@1682). Memory: dense
scores are computed a batch of users at a time, the batch sized from
:data:`recjax.evaluation.WORKING_MEMORY`, and ranked by
:func:`recjax.retrieval.dense_topk` (the top-k reference's selection, in row blocks),
so the temporaries stay bounded for any ``k``; only the answer (``[users, min(k,
n_items)]``) grows with ``k``.

Example
-------
>>> import numpy as np
>>> from recjax.data import Ratings
>>> from recjax.ranking import RankingTask, evaluate_ranking
>>> from recjax.models.baselines import MostPopular
>>> data = Ratings.from_raw([1, 1, 2, 3, 2, 3], [10, 20, 10, 10, 20, 30],
...                         [5.0, 4.0, 3.0, 4.0, 4.0, 2.0])
>>> train, test = data.subset(slice(0, 4)), data.subset(slice(4, 6))
>>> task = RankingTask.from_ratings(train, test)
>>> pop = MostPopular().fit(train)
>>> task.rank(pop, k=1).ids.tolist()    # both rated item 10 (index 0); next best is 20
[[1], [1]]
>>> evaluate_ranking(pop, task, k=1)["hit_rate@1"]
0.5
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import scipy.sparse as sp

from recjax import evaluation as _evaluation
from recjax.data.bags import bags_from_csr, user_item_pattern
from recjax.data.dataset import Ratings
from recjax.evaluation import catalogue_coverage, diversity, novelty, ranking_metrics
from recjax.retrieval import TopK, dense_topk, recommend

__all__ = ["RankingTask", "Scorer", "EmbeddingScorer", "FunctionScorer", "as_scorer", "evaluate_ranking",
           "compare"]


@runtime_checkable
class Scorer(Protocol):
    """Anything that ranks items for users: ``topk(users, k, exclude) -> TopK``.

    ``users`` int64 [B] user indices; ``exclude`` a CSR matrix [n_users, n_items] of
    items never to return (or None). Returns ids [B, k] best first, -1 padded.
    """

    n_items: int

    def topk(self, users: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> TopK: ...


@dataclass(frozen=True, eq=False)
class EmbeddingScorer:
    """Scores ``user_vectors[u] . item_vectors[i]`` (or cosine / L2) with the top-k kernel.

    Parameters
    ----------
    user_vectors : float array [n_users, d]
    item_vectors : float array [n_items, d]
    metric : {"dot", "cosine", "l2"}
    batch_size : int
        Users per kernel call (the kernel itself is multi-threaded over users).
    """

    user_vectors: np.ndarray
    item_vectors: np.ndarray
    metric: str = "dot"
    batch_size: int = 65536

    def __post_init__(self) -> None:
        for name in ("user_vectors", "item_vectors"):
            value = np.asarray(getattr(self, name))
            if value.dtype not in (np.float32, np.float64):
                value = value.astype(np.float32)
            if value.ndim != 2:
                raise ValueError(f"{name} must be 2-D [rows, d], got shape {value.shape}")
            object.__setattr__(self, name, value)
        if self.user_vectors.shape[1] != self.item_vectors.shape[1]:
            raise ValueError(f"user_vectors have d={self.user_vectors.shape[1]} but item_vectors "
                             f"have d={self.item_vectors.shape[1]}")

    @property
    def n_items(self) -> int:
        return int(self.item_vectors.shape[0])

    @functools.cached_property
    def _dense_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(item vectors float64 [N, d], unit-normalised for cosine; squared norms [N]),
        made once for :meth:`scores`."""
        v = np.asarray(self.item_vectors, np.float64)
        if self.metric == "cosine":
            v = _unit_rows(v)
        return v, np.einsum("ij,ij->i", v, v)

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Dense scores float64 [B, n_items] of ``users`` [B], higher is better: dot
        product, cosine, or minus the squared Euclidean distance."""
        u = np.asarray(self.user_vectors[np.asarray(users, np.int64)], np.float64)
        v, v_sq = self._dense_items
        if self.metric == "cosine":
            u = _unit_rows(u)
        dot = u @ v.T
        if self.metric == "l2":
            return 2.0 * dot - np.einsum("ij,ij->i", u, u)[:, None] - v_sq[None]
        return dot

    def topk(self, users: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> TopK:
        users = np.asarray(users, np.int64)
        parts = [recommend(self.user_vectors, self.item_vectors, users[s:s + self.batch_size], k,
                           exclude=exclude, metric=self.metric)
                 for s in range(0, max(len(users), 1), self.batch_size)]
        return TopK(np.concatenate([p.ids for p in parts]), np.concatenate([p.scores for p in parts]))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


# bytes of temporaries per score of recjax.retrieval.dense_topk (a batch of dense scores
# is sized to keep them, and the scores themselves, within WORKING_MEMORY)
_TOPK_BYTES = 64


@dataclass(frozen=True, eq=False)
class FunctionScorer:
    """Scores from ``score_fn(users [B]) -> [B, n_items]``, ranked in NumPy per user batch.

    Parameters
    ----------
    score_fn : callable
        Dense scores of every item for a batch of user indices (higher is better).
    n_items : int
    batch_size : int, optional
        Users per call; default keeps a batch's scores and ranking temporaries near
        :data:`recjax.evaluation.WORKING_MEMORY` bytes.
    """

    score_fn: Callable[[np.ndarray], Any]
    n_items: int
    batch_size: int | None = None

    def scores(self, users: np.ndarray) -> np.ndarray:
        """``score_fn(users)`` as float64 [B, n_items], its shape checked."""
        users = np.asarray(users, np.int64)
        dense = np.asarray(self.score_fn(users), np.float64)
        if dense.shape != (len(users), self.n_items):
            raise ValueError(f"score_fn returned shape {dense.shape}, expected "
                             f"({len(users)}, {self.n_items})")
        return dense

    def topk(self, users: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> TopK:
        return batched_topk(lambda batch, _: self.scores(batch), self.n_items, users, k, exclude,
                            self.batch_size)


def batched_topk(score_rows: Callable[[np.ndarray, sp.csr_matrix | None], np.ndarray], n_items: int,
                 users: np.ndarray, k: int, exclude: sp.csr_matrix | None,
                 batch_size: int | None = None) -> TopK:
    """Top ``k`` of dense scores computed a batch of users at a time.

    ``score_rows(batch [B], exclude_rows [B, n_items] or None) -> [B, n_items]``;
    ``batch_size`` defaults to as many users as keep a batch's scores (as returned
    and as float64) and its ranking temporaries within
    :data:`recjax.evaluation.WORKING_MEMORY`. The answer is ``[len(users), min(k,
    n_items)]``, filled in place.
    """
    users = np.asarray(users, np.int64)
    width = min(_check_k(k), n_items)
    step = batch_size or _evaluation._block_rows((16 + _TOPK_BYTES) * max(n_items, 1))
    ids = np.empty((len(users), width), np.int64)
    scores = np.empty((len(users), width), np.float64)
    for s in range(0, len(users), step):
        batch = users[s:s + step]
        rows = None if exclude is None else exclude[batch]
        dense = score_rows(batch, rows)
        if np.shape(dense) != (len(batch), n_items):
            raise ValueError(f"score_rows returned shape {np.shape(dense)}, expected ({len(batch)}, {n_items})")
        res = dense_topk(dense, width, exclude=rows)
        ids[s:s + step], scores[s:s + step] = res.ids, res.scores
    return TopK(ids, scores)


def as_scorer(model: Any, metric: str = "dot", *, bags: Any = None) -> Scorer:
    """A :class:`Scorer` for ``model``.

    Accepted: a :class:`Scorer` (as is); a ``(user_vectors, item_vectors)`` pair of
    arrays; any model of the contract of :mod:`recjax.models.base`, by what it
    declares: a bag model (softmax, Mult-DAE) by ``ranking_vectors(bags)``, a model that
    ``ranks`` by ``ranking_vectors()`` (MF, a linear pair model, EASE, most popular), a
    model of ``pairs`` without ranking vectors (DNN, a non-linear pair model) by its
    dense scores of every item (:class:`FunctionScorer`); and any object with a
    ``ranking_vectors()`` method (:class:`recjax.models.base.Ranker`).

    Parameters
    ----------
    model
    metric : {"dot", "cosine", "l2"}
        For vectors; a model ranked by its dense scores takes ``"dot"`` only.
    bags : int array [n_users, L] or sparse matrix [n_users, n_items], optional
        Each user's items, for a bag model: PAD-padded rows of item indices, or a user
        x item pattern (:meth:`RankingTask.rank` passes its train part).

    Raises
    ------
    TypeError
        ``model`` is none of the accepted kinds, or a bag model without ``bags``.
    """
    if isinstance(model, (EmbeddingScorer, FunctionScorer)):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        return EmbeddingScorer(model[0], model[1], metric)
    if getattr(model, "capabilities", None) is None and not hasattr(model, "ranking_vectors"):
        if isinstance(model, Scorer):
            return model
        raise _unrankable(model)
    # a model: ask what it declares (recjax.models is imported only here, so that ranking
    # vectors and scorers need no JAX)
    from recjax.models.base import Ranker, capabilities_of

    caps = capabilities_of(model)
    if caps.bag:
        if bags is None:
            raise TypeError(f"a {type(model).__name__} ranks users from their bags of items: pass "
                            f"bags= (RankingTask.rank and evaluate_ranking pass the task's train items)")
        if sp.issparse(bags):
            bags = bags_from_csr(bags)
        return EmbeddingScorer(*model.ranking_vectors(np.asarray(bags)), metric)
    if caps.ranks or (not caps.names() and isinstance(model, Ranker)):
        vectors = model.ranking_vectors()
        if vectors is not None:
            return EmbeddingScorer(*vectors, metric)
    if caps.pairs:
        if metric != "dot":
            raise ValueError(f"a {type(model).__name__} is ranked by its own scores; metric={metric!r} "
                             f"needs user and item vectors")
        return _pair_scorer(model)
    if isinstance(model, Scorer):
        return model
    raise _unrankable(model)


def _unrankable(model: Any) -> TypeError:
    return TypeError(f"cannot rank with a {type(model).__name__}: pass a Scorer, a model of "
                     f"recjax.models (or any object with ranking_vectors()) or a "
                     f"(user_vectors, item_vectors) pair")


def _pair_scorer(module: Any) -> FunctionScorer:
    """A model of (user, item) pairs ranked by its predictions of every item for a batch
    of users (its jitted forward pass)."""
    from recjax.runs import module_predictions

    n_items = module.n_items
    if not n_items:
        raise TypeError(f"this {type(module).__name__} has no catalogue of items to rank (a model of "
                        f"Object2Vec tokens)")

    def score(users: np.ndarray) -> np.ndarray:
        u = np.repeat(users.astype(np.int32), n_items)
        i = np.tile(np.arange(n_items, dtype=np.int32), len(users))
        batch = {"user": u, "item": i, "label": np.zeros(len(u), np.float32)}
        return module_predictions(module, batch).reshape(len(users), n_items)

    return FunctionScorer(score, n_items, batch_size=max(1, 262144 // max(n_items, 1)))


@dataclass(frozen=True, eq=False)
class RankingTask:
    """What the protocol needs from a split.

    Attributes
    ----------
    train : CSR [n_users, n_items]
        The split's train part (pattern, 1.0): never recommended to its user.
    test : CSR [n_users, n_items]
        The held-out part: the relevant items.
    users : int64 [n_test_users]
        Users with at least one test item (the ones evaluated), ascending.
    item_counts : int64 [n_items]
        Train ratings per item (popularity, for novelty and the most-popular baseline).
    """

    train: sp.csr_matrix
    test: sp.csr_matrix
    users: np.ndarray
    item_counts: np.ndarray

    @classmethod
    def from_ratings(cls, train: Ratings | Sequence[Ratings], test: Ratings) -> "RankingTask":
        """The task of a split; ``train`` may be several parts (e.g. fit and validation),
        all of which count as the user's train set.

        Raises
        ------
        ValueError
            The parts use different vocabularies, or the test part is empty.
        """
        parts = [train] if isinstance(train, Ratings) else list(train)
        if not parts:
            raise ValueError("train must hold at least one Ratings part")
        for p in parts:
            if p.n_users != test.n_users or p.n_items != test.n_items:
                raise ValueError(f"train ({p.n_users} users x {p.n_items} items) and test "
                                 f"({test.n_users} x {test.n_items}) use different vocabularies")
        if len(test) == 0:
            raise ValueError("the test part is empty: nothing to rank against")
        train_csr = user_item_pattern(parts)
        test_csr = user_item_pattern(test)
        users = np.flatnonzero(np.diff(test_csr.indptr) > 0).astype(np.int64)
        counts = np.diff(train_csr.tocsc().indptr).astype(np.int64)
        return cls(train_csr, test_csr, users, counts)

    @property
    def n_users(self) -> int:
        return int(self.train.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])

    def rank(self, model: Any, k: int = 10, *, metric: str = "dot",
             users: np.ndarray | None = None, exclude_train: bool = True) -> TopK:
        """Top ``k`` of every test user (or of ``users``), train items excluded: ids
        [users, min(k, n_items)] (a list cannot be longer than the catalogue).

        ``model``: anything :func:`as_scorer` accepts; a bag model's users are the bags
        of their train items (this task's ``train``)."""
        k = min(_check_k(k), self.n_items)
        scorer = as_scorer(model, metric, bags=self.train)
        if scorer.n_items != self.n_items:
            raise ValueError(f"the model scores {scorer.n_items} items, the split has {self.n_items}")
        users = self.users if users is None else np.asarray(users, np.int64)
        top = scorer.topk(users, k, self.train if exclude_train else None)
        if np.shape(top.ids) != (len(users), k):
            raise ValueError(f"{type(scorer).__name__}.topk returned ids of shape {np.shape(top.ids)}, "
                             f"expected ({len(users)}, {k})")
        return top


def evaluate_ranking(model: Any, task: RankingTask, k: int = 10, *, metric: str = "dot",
                     item_embeddings: np.ndarray | None = None, prefix: str = "") -> dict[str, float]:
    """Rank for every test user and score the lists.

    Parameters
    ----------
    model : Scorer or anything :func:`as_scorer` accepts
    task : RankingTask
    k : int
        List length. Above ``task.n_items`` the lists hold the whole catalogue and
        the metrics are those at ``n_items``, reported under ``@k`` (module docstring).
    metric : {"dot", "cosine", "l2"}
        For embedding models.
    item_embeddings : float array [n_items, d], optional
        The space for diversity (default: the model's own item vectors when it has
        any; pass one shared table to compare models on the same footing).
    prefix : str

    Returns
    -------
    dict
        ``precision@k``, ``recall@k``, ``ndcg@k``, ``map@k``, ``mrr@k``, ``hit_rate@k``,
        ``users``, ``coverage@k``, ``popularity@k``, ``self_information@k`` and, with
        embeddings, ``diversity@k``.
    """
    k = _check_k(k)
    scorer = as_scorer(model, metric, bags=task.train)
    top = task.rank(scorer, k)  # [users, min(k, n_items)]
    out = ranking_metrics(top, task.test, k, users=task.users, prefix=prefix)
    out[f"{prefix}coverage@{k}"] = catalogue_coverage(top, task.n_items, k)
    nov = novelty(top, task.item_counts, task.n_users, k)
    out[f"{prefix}popularity@{k}"] = nov["popularity"]
    out[f"{prefix}self_information@{k}"] = nov["self_information"]
    if item_embeddings is None and isinstance(scorer, EmbeddingScorer):
        item_embeddings = scorer.item_vectors
    if item_embeddings is not None and top.ids.shape[1] >= 2:
        out[f"{prefix}diversity@{k}"] = diversity(top, item_embeddings, k)
    return out


def compare(models: dict[str, Any], task: RankingTask, k: int = 10, *,
            item_embeddings: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """:func:`evaluate_ranking` of each named model on one task (same diversity space)."""
    return {name: evaluate_ranking(m, task, k, item_embeddings=item_embeddings)
            for name, m in models.items()}
