"""Paired significance of a ranking difference: a bootstrap over users.

Two models are ranked on one task (the same users, the same relevant items), each
user's metric value is computed for both, and the users are resampled with
replacement (seeded; :func:`scipy.stats.bootstrap`, percentile interval) to give
the distribution of the mean difference ``A - B``: its 95% interval and the share
of resamples in which A beats B. Pairing by user removes the between-user variance
that unpaired intervals of two means would carry.

Example
-------
>>> import numpy as np
>>> from recjax.evaluation.significance import paired_bootstrap
>>> a = np.array([1.0, 0.5, 0.0, 1.0])
>>> r = paired_bootstrap(a, a, n_resamples=200, seed=0)
>>> r["difference"], r["low"], r["high"], r["share_a_better"]
(0.0, 0.0, 0.0, 0.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import bootstrap

from recjax._checks import positive_int

__all__ = ["paired_bootstrap", "per_user_metric", "compare_pair"]


def paired_bootstrap(a: Any, b: Any, *, n_resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """Bootstrap over users of the mean paired difference ``a - b``.

    Parameters
    ----------
    a, b : float arrays [U]
        One metric value per user, the same users in the same order.
    n_resamples : int
    confidence : float
        In (0, 1): the interval's coverage (0.95: the 2.5% and 97.5% percentiles).
    seed : int

    Returns
    -------
    dict
        ``difference`` (mean of ``a - b``), ``low`` and ``high`` (percentile
        interval), ``share_a_better`` (share of resamples whose mean difference is
        above 0), ``users`` and ``resamples``.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length ({a.size} vs {b.size}): rank both "
                         f"models on the same task")
    if a.size < 2:
        raise ValueError(f"a bootstrap over users needs at least 2 users, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-user values hold NaN or infinite values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n_resamples = positive_int(n_resamples, "n_resamples")
    difference = a - b
    if not difference.any():  # every resample is exactly 0 (scipy warns of a degenerate sample)
        means = np.zeros(n_resamples)
        low = high = 0.0
    else:
        res = bootstrap((difference,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                        method="percentile", vectorized=True, rng=np.random.default_rng(seed))
        means = res.bootstrap_distribution
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"difference": float(difference.mean()), "low": low, "high": high,
            "share_a_better": float(np.mean(means > 0)), "users": int(a.size),
            "resamples": n_resamples}


def per_user_metric(model: Any, task: Any, metric: str = "ndcg", k: int = 10, **options: Any) -> np.ndarray:
    """One metric at ``k`` for every evaluated user of ``task``: a
    :class:`recjax.evaluation.RankingTask` (the ua and leave-last-one-out protocols) or
    a :class:`recjax.evaluation.strong.StrongTask` (``recall`` there is Liang's,
    ``capped_recall``: the task's ``ALIASES``). float64 [users evaluated], in
    ``task.users`` order, from the task's ``per_user_values`` (given ``options``:
    a StrongTask's ``binary_threshold``)."""
    values = task.per_user_values(model, (k,), **options)
    key = f"{task.ALIASES.get(metric, metric)}@{k}"
    if key not in values:
        raise ValueError(f"unknown metric {metric!r}; use one of "
                         f"{', '.join(dict.fromkeys(n.split('@')[0] for n in values))}")
    return values[key]


def compare_pair(model_a: Any, model_b: Any, task: Any, metric: str = "ndcg", k: int = 10, *,
                 n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """:func:`paired_bootstrap` of ``metric@k`` of two models on one task (A minus B)."""
    return paired_bootstrap(per_user_metric(model_a, task, metric, k),
                            per_user_metric(model_b, task, metric, k),
                            n_resamples=n_resamples, seed=seed)
