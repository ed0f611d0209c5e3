"""The ranking protocol: one definition of "top-k accuracy" used everywhere in recjax.

Train on a split's train part. For every test user, rank **all** items the user has
not rated in the train part (validation included: it is part of the split's train
set), keep the top ``k``, and count as relevant the user's test items, whatever
their rating. On ml-100k's ``ua`` split (the reference protocol) every user has 10
test items. Models are ranked through :func:`recjax.scoring.as_scorer` (any trained
module of any family by what it declares, EASE and most-popular, an object with
``ranking_vectors()``, or a ``(users, items)`` pair of vector tables), with the train
set as each user's ``exclude`` list.

``k`` above the catalogue: a list holds at most ``n_items`` items, so
:meth:`RankingTask.rank` returns ``min(k, n_items)`` columns and
:func:`evaluate_ranking` reports the metrics at ``n_items`` under keys that carry the
``k`` asked for (``precision@5000`` on ml-100k is precision@1682). Memory: dense
scores are computed a batch of users at a time, the batch sized from
:data:`recjax._blocks.WORKING_MEMORY`, and ranked by
:func:`recjax.retrieval.dense_topk` (the top-k reference's selection, in row blocks),
so the temporaries stay bounded for any ``k``; only the answer (``[users, min(k,
n_items)]``) grows with ``k``.

Example
-------
>>> import numpy as np
>>> from recjax.data import Ratings
>>> from recjax.evaluation.protocol import RankingTask, evaluate_ranking
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

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import scipy.sparse as sp

from recjax._checks import positive_int
from recjax.data.bags import user_item_pattern
from recjax.data.dataset import Ratings
from recjax.metrics import (
    catalogue_coverage,
    diversity,
    novelty,
    per_user_ranking_metrics,
    ranking_metrics,
)
from recjax.retrieval import TopK
from recjax.scoring import EmbeddingScorer, as_scorer

__all__ = ["RankingTask", "evaluate_ranking"]


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

    #: Metric names of this protocol that mean another per-user metric: none.
    ALIASES: ClassVar[dict[str, str]] = {}

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

    @classmethod
    def from_run(cls, run: Any) -> "RankingTask":
        """The task of a run folder's own split (a :class:`recjax.runs.Run`): train =
        its fit and validation parts, test = its test part."""
        run._need_vocabulary("ranking")
        return cls.from_ratings([run.splits["train"], run.splits["val"]], run.splits["test"])

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

        ``model``: anything :func:`recjax.scoring.as_scorer` accepts; a bag model's users are the bags
        of their train items (this task's ``train``)."""
        k = min(positive_int(k, "k"), self.n_items)
        scorer = as_scorer(model, metric, bags=self.train)
        if scorer.n_items != self.n_items:
            raise ValueError(f"the model scores {scorer.n_items} items, the split has {self.n_items}")
        users = self.users if users is None else np.asarray(users, np.int64)
        top = scorer.topk(users, k, self.train if exclude_train else None)
        if np.shape(top.ids) != (len(users), k):
            raise ValueError(f"{type(scorer).__name__}.topk returned ids of shape {np.shape(top.ids)}, "
                             f"expected ({len(users)}, {k})")
        return top

    def per_user_values(self, model: Any, ks: Sequence[int]) -> dict[str, np.ndarray]:
        """Per test user (float64 [n_test_users], rows as :attr:`users`), every metric of
        :func:`recjax.metrics.per_user_ranking_metrics` at each cut-off of ``ks``, keyed
        ``name@k``, from one ranking of the top ``max(ks)`` (``model`` as :meth:`rank`)."""
        ks = [positive_int(k, "k") for k in ks]
        top = self.rank(model, max(ks))
        return {f"{name}@{k}": value for k in ks
                for name, value in per_user_ranking_metrics(top, self.test, k,
                                                            users=self.users).items()}


def evaluate_ranking(model: Any, task: RankingTask, k: int = 10, *, metric: str = "dot",
                     item_embeddings: np.ndarray | None = None, prefix: str = "") -> dict[str, float]:
    """Rank for every test user and score the lists.

    Parameters
    ----------
    model : anything :func:`recjax.scoring.as_scorer` accepts
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
    k = positive_int(k, "k")
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
