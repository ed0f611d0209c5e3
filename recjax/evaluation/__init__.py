"""Evaluation: one package for every measurement recjax makes of a trained model.

=====================  =================================================================
module                 what it holds
=====================  =================================================================
``metrics``            rating (MSE, RMSE, MAE), binary (accuracy, AUC, log loss), ranking
                       (precision, recall, NDCG, MAP, MRR, hit rate at k, coverage) and
                       beyond-accuracy metrics (diversity, novelty) of NumPy arrays: a
                       leaf (NumPy and SciPy only), also used to validate during training
``protocol``           the ranking protocol: :class:`RankingTask` and
                       :func:`evaluate_ranking` (models ranked through
                       :func:`recjax.scoring.as_scorer`, by the model contract)
``strong``             strong generalisation (Liang et al. 2018): :class:`StrongTask`
                       (held-out users, 80% folded in) and :func:`strong_generalization`
``significance``       :func:`paired_bootstrap` over users of two models on one task
``ensemble``           :func:`blend` (score-standardised rank blending) and
                       :func:`average_predictions`
``compare``            the comparison table: :func:`evaluate_runs` of run folders with
                       their ensemble and baselines (fitted here, when evaluating), and
                       :func:`compare_models` of in-memory models
=====================  =================================================================

Each name is imported from its module on first use, so ``recjax.evaluation.metrics``
(imported by the training layer) pulls in nothing above it.

Example
-------
>>> import numpy as np
>>> from recjax.evaluation import rmse, ranking_metrics
>>> rmse(np.array([1.0, 3.0]), np.array([2.0, 3.0]))
0.7071067811865476
>>> ranking_metrics(np.array([[2, 0]]), np.array([[0, 0, 1]]), k=1)["precision@1"]
1.0
"""

from recjax._lazy import lazy_getattr as _lazy_getattr

_MODULES: dict[str, tuple[str, ...]] = {
    "recjax.evaluation.metrics": (
        "mse", "rmse", "mae", "accuracy", "auc", "log_loss", "rating_metrics", "binary_metrics",
        "task_metrics", "RATING_NAMES", "RANKING_METRICS", "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k",
        "mrr", "hit_rate", "ranking_metrics", "catalogue_coverage", "diversity", "novelty",
        "norm_popularity_correlation", "per_user_ranking_metrics", "PER_USER_METRICS",
    ),
    "recjax.evaluation.protocol": (
        "RankingTask", "evaluate_ranking",
    ),
    "recjax.evaluation.strong": ("StrongTask", "strong_generalization", "per_user_values",
                                 "evaluate_runs_strong", "STRONG_KS"),
    "recjax.evaluation.significance": ("paired_bootstrap", "per_user_metric", "compare_pair"),
    "recjax.evaluation.ensemble": ("BlendScorer", "blend", "average_predictions"),
    "recjax.evaluation.compare": (
        "compare_models", "evaluate_run", "evaluate_runs", "rating_baselines", "EASE_MAX_ITEMS",
        "row_names", "bootstrap_runs",
    ),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "mse", "rmse", "mae", "accuracy", "auc", "log_loss", "rating_metrics", "binary_metrics",
    "task_metrics", "RATING_NAMES", "RANKING_METRICS", "precision_at_k", "recall_at_k",
    "ndcg_at_k", "map_at_k", "mrr", "hit_rate", "ranking_metrics", "catalogue_coverage",
    "diversity", "novelty", "norm_popularity_correlation", "per_user_ranking_metrics",
    "PER_USER_METRICS", "RankingTask", "evaluate_ranking", "BlendScorer", "blend",
    "average_predictions", "compare_models", "evaluate_run", "evaluate_runs", "rating_baselines",
    "EASE_MAX_ITEMS", "row_names", "bootstrap_runs", "StrongTask", "strong_generalization",
    "per_user_values", "evaluate_runs_strong", "STRONG_KS", "paired_bootstrap",
    "per_user_metric", "compare_pair",
]


#: Import a public name from its module on first use (PEP 562), then keep it here.
__getattr__ = _lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
