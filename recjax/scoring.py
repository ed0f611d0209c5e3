"""How a trained model scores and ranks: predictions of pairs, and scorers of users.

Below the run folders and the evaluation package, above the models and the training
core: a module of any registered family (or EASE, most-popular, a pair of vector
tables) becomes a :class:`Scorer`, asked only through the model contract
(:mod:`recjax.models.base`), never by its type:

* :class:`EmbeddingScorer`: user and item vectors, ranked by the compiled top-k
  kernel (:func:`recjax.retrieval.topk`, dot / cosine / L2) with a per-user
  ``exclude`` CSR;
* :class:`FunctionScorer`: any function from a batch of user indices to dense
  ``[B, n_items]`` scores, ranked by :func:`recjax.retrieval.dense_topk` a batch at a
  time (:func:`batched_topk`), its temporaries bounded by
  :data:`recjax._blocks.WORKING_MEMORY`;
* :func:`as_scorer` picks one from what the model declares;
* :func:`module_predictions` runs a module's jitted forward pass over pairs, compiled
  once per module and power-of-two size.

Example
-------
>>> import numpy as np
>>> from recjax.scoring import as_scorer
>>> users = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
>>> items = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], np.float32)
>>> as_scorer((users, items)).topk(np.array([0, 1]), 2, None).ids.tolist()
[[0, 2], [1, 2]]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from recjax._blocks import block_rows
from recjax._checks import positive_int
from recjax.data.bags import bags_from_csr
from recjax.retrieval import TopK, dense_topk, recommend

__all__ = ["Scorer", "EmbeddingScorer", "FunctionScorer", "as_scorer", "batched_topk", "module_predictions"]


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
        :data:`recjax._blocks.WORKING_MEMORY` bytes.
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
    :data:`recjax._blocks.WORKING_MEMORY`. The answer is ``[len(users), min(k,
    n_items)]``, filled in place.
    """
    users = np.asarray(users, np.int64)
    width = min(positive_int(k, "k"), n_items)
    step = batch_size or block_rows((16 + _TOPK_BYTES) * max(n_items, 1))
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
        x item pattern (:meth:`recjax.evaluation.RankingTask.rank` passes its train part).

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
    from recjax.models.base import Ranker
    from recjax.models.capabilities import capabilities_of

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


_MAX_CHUNK = 8192  # examples per compiled prediction call


@functools.lru_cache(maxsize=64)
def _predictor(module: Any, chunk: int) -> tuple[Any, Any]:
    """(split model, jitted predict in chunks of ``chunk``) of a module, made once per
    module and chunk size."""
    from recjax.train.step import Model, make_predict

    model = Model.split(module)
    return model, make_predict(model, chunk=chunk)


def module_predictions(module: Any, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The module's predictions float64 [n] for a model family's ``inputs`` arrays.

    Inputs are padded to the next power of two (at most 8192 per compiled call), so a
    few pairs cost a small call and a served model compiles at most 14 sizes."""
    import jax.numpy as jnp

    n = len(next(iter(inputs.values())))
    chunk = min(_MAX_CHUNK, 1 << max(n - 1, 0).bit_length())
    model, predict = _predictor(module, chunk)
    arrays = {k: jnp.asarray(v) for k, v in inputs.items()}
    return np.asarray(predict(model.params, arrays), np.float64)
