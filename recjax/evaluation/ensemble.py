"""Ensembles: rankers blended by their per-user standardised scores, rating models averaged.

Different models put their scores on different scales (a Mult-DAE's logits, an MF
dot product, EASE's sums of item-item weights), so :class:`BlendScorer` first
standardises each model's scores for a user over that user's *candidate* items (all
items not excluded, i.e. not in the user's train set) to mean 0 and variance 1,
then ranks by ``sum_j w_j z_j``. A model whose scores are constant for a user
contributes 0 for that user. Excluded items enter neither the statistics nor the
list. It is a :class:`recjax.evaluation.protocol.Scorer`, so :class:`recjax.evaluation.protocol.RankingTask`
and :func:`recjax.evaluation.protocol.evaluate_ranking` take it like any model.

Rating models are combined by :func:`average_predictions`: the mean predicted rating,
or for the binary task the mean probability (returned as a logit).

Example
-------
>>> import numpy as np
>>> import scipy.sparse as sp
>>> from recjax.evaluation.ensemble import blend
>>> users = np.eye(2)                                   # two users, 2-d vectors
>>> a = (users, np.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0]]))   # model a: item 0 first
>>> b = (users, np.array([[0.0, 0.0], [9.0, 0.0], [0.0, 5.0]]))   # model b: item 1 first
>>> blend([a, b], [0.5, 0.5]).topk(np.array([0]), 3, None).ids.tolist()
[[1, 0, 2]]
>>> rated = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 0]]))   # user 0 rated item 1
>>> blend([a, b]).topk(np.array([0]), 3, rated).ids.tolist()
[[0, 2, -1]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from recjax.retrieval import TopK
from recjax.scoring import as_scorer, batched_topk

__all__ = ["BlendScorer", "blend", "average_predictions", "mixture_weights"]


def _standardise_rows(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Each row's scores minus the mean over its candidates, over their standard deviation.

    Parameters
    ----------
    scores : float array [B, N]
    candidates : bool array [B, N]
        True where the item is ranked for that row; statistics use only these.

    Returns
    -------
    np.ndarray float64 [B, N]
        Standardised scores; 0 on rows whose candidates all score alike (or that have
        none), and 0 on non-candidates (which the caller excludes).
    """
    s = np.asarray(scores, np.float64)
    n = np.maximum(candidates.sum(1, keepdims=True), 1)
    mean = np.where(candidates, s, 0.0).sum(1, keepdims=True) / n
    centred = np.where(candidates, s - mean, 0.0)
    std = np.sqrt((centred ** 2).sum(1, keepdims=True) / n)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)


@dataclass(frozen=True, eq=False)
class BlendScorer:
    """Ranks by ``sum_j weights[j] * z_j``, ``z_j`` model ``j``'s standardised scores.

    Parameters
    ----------
    scorers : sequence of EmbeddingScorer / FunctionScorer
        The models (anything with ``scores(users) -> [B, n_items]``), all over the
        same catalogue.
    weights : sequence of float
        One finite weight per scorer, not all zero (negative weights are allowed:
        they reverse a model's preference).
    batch_size : int, optional
        Users per step; default keeps each dense score matrix near 2**22 entries.
    """

    scorers: Sequence[Any]
    weights: Sequence[float]
    batch_size: int | None = None

    def __post_init__(self) -> None:
        scorers, weights = tuple(self.scorers), tuple(float(w) for w in self.weights)
        if not scorers:
            raise ValueError("a blend needs at least one scorer")
        if len(weights) != len(scorers):
            raise ValueError(f"{len(scorers)} scorers but {len(weights)} weights")
        if not all(math.isfinite(w) for w in weights) or not any(weights):
            raise ValueError(f"weights must be finite and not all zero, got {list(weights)}")
        for s in scorers:
            if not hasattr(s, "scores"):
                raise TypeError(f"cannot blend a {type(s).__name__}: it gives no dense scores "
                                f"(blend EmbeddingScorer, FunctionScorer or BlendScorer models)")
        sizes = {s.n_items for s in scorers}
        if len(sizes) > 1:
            raise ValueError(f"the scorers rank catalogues of different sizes: {sorted(sizes)}")
        object.__setattr__(self, "scorers", scorers)
        object.__setattr__(self, "weights", weights)

    @property
    def n_items(self) -> int:
        return int(self.scorers[0].n_items)

    def scores(self, users: np.ndarray, exclude_rows: sp.csr_matrix | None = None) -> np.ndarray:
        """The blended scores float64 [B, n_items]; ``exclude_rows`` [B, n_items] marks
        the items that are not candidates (their blended score is 0)."""
        users = np.asarray(users, np.int64)
        candidates = np.ones((len(users), self.n_items), bool)
        if exclude_rows is not None and exclude_rows.nnz:
            ex = sp.csr_matrix(exclude_rows)
            candidates[np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr)), ex.indices] = False
        total = np.zeros(candidates.shape)
        for scorer, weight in zip(self.scorers, self.weights):
            if weight:
                raw = scorer.scores(users)
                if not np.isfinite(raw).all():
                    raise ValueError(f"a {type(scorer).__name__} in the blend gave NaN or infinite "
                                     f"scores")
                total += weight * _standardise_rows(raw, candidates)
        return total

    def topk(self, users: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> TopK:
        return batched_topk(self.scores, self.n_items, users, k, exclude, self.batch_size)


def blend(models: Sequence[Any], weights: Sequence[float] | None = None, *,
          metric: str = "dot") -> BlendScorer:
    """A :class:`BlendScorer` of ``models`` (anything :func:`recjax.evaluation.protocol.as_scorer`
    accepts: runs' scorers, ``(users, items)`` vector pairs, EASE, MF modules, ...).

    ``weights`` default to equal; ``metric`` applies to models given as vectors.
    """
    scorers = [as_scorer(m, metric) for m in models]
    if weights is None:
        weights = [1.0 / max(len(scorers), 1)] * len(scorers)
    return BlendScorer(scorers, weights)


def average_predictions(predictions: Sequence[np.ndarray], task: str = "regression",
                        weights: Sequence[float] | None = None) -> np.ndarray:
    """The ensemble prediction of several rating models for the same examples.

    Parameters
    ----------
    predictions : sequence of float arrays [n]
        One per model: predicted ratings (``regression``) or positive-class logits
        (``binary``).
    task : {"regression", "binary"}
        Regression averages the ratings; binary averages the probabilities
        ``sigmoid(logit)`` and returns the logit of that mean.
    weights : sequence of float, optional
        One non-negative weight per model, not all zero, normalised to sum to 1
        (default: equal).

    Returns
    -------
    np.ndarray float64 [n]
    """
    if task not in ("regression", "binary"):
        raise ValueError(f"task must be 'regression' or 'binary', got {task!r}")
    if not len(predictions):
        raise ValueError("no predictions to average")
    arrays = [np.asarray(p, np.float64) for p in predictions]
    if len({a.shape for a in arrays}) > 1 or arrays[0].ndim != 1:
        raise ValueError(f"predictions must be 1-D arrays of one length, got shapes "
                         f"{sorted({a.shape for a in arrays})}")
    stacked = np.stack(arrays)
    if not np.isfinite(stacked).all():
        raise ValueError("predictions hold NaN or infinite values")
    share = mixture_weights(weights, len(arrays))
    if task == "regression":
        return share @ stacked
    # mean probability, back to a logit: log(mean sigmoid) - log(mean (1 - sigmoid)), stably
    with np.errstate(divide="ignore"):  # a zero weight: log 0 = -inf, which logaddexp ignores
        log_share = np.log(share)[:, None]
    log_p = np.logaddexp.reduce(log_share - np.logaddexp(0.0, -stacked), axis=0)
    log_q = np.logaddexp.reduce(log_share - np.logaddexp(0.0, stacked), axis=0)
    return log_p - log_q


def mixture_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """``n`` non-negative weights normalised to sum to 1, float64 [n] (None: equal).

    Raises
    ------
    ValueError
        Not ``n`` of them, or one negative or not finite, or all zero.
    """
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, np.float64).reshape(-1)
    if len(w) != n:
        raise ValueError(f"{n} models but {len(w)} weights")
    if not np.isfinite(w).all() or (w < 0).any() or not w.any():
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return w / w.sum()
