"""Evaluation: one package for every measurement recjax makes of a trained model.

=====================  =================================================================
module                 what it holds
=====================  =================================================================
``protocol``           the ranking protocol: :class:`RankingTask` and
                       :func:`evaluate_ranking` (models ranked through
                       :func:`recjax.scoring.as_scorer`, by the model contract)
``strong``             strong generalisation (Liang et al. 2018): :class:`StrongTask`
                       (held-out users, 80% folded in) and :func:`strong_generalization`
``significance``       :func:`paired_bootstrap` over users of two models on one task
``ensemble``           :func:`blend` (score-standardised rank blending) and
                       :func:`average_predictions`
``experiment``         :class:`Experiment` ``(protocol, models, metrics).run()``: the
                       table of models under one protocol, and their paired bootstrap
``compare``            :func:`experiment_of_runs`: the experiment of run folders of one
                       split with their ensemble and baselines (fitted here, when
                       evaluating); :func:`evaluate_run`
=====================  =================================================================

Imports point one way: ``compare`` -> ``experiment`` -> ``protocol``, ``strong``,
``significance``, ``ensemble`` (these four import none of each other) -> the metrics,
a leaf below this package (:mod:`recjax.metrics`, NumPy and SciPy only, also used to
validate during training). Each name here is imported from its module on first use.

Example
-------
>>> import numpy as np
>>> from recjax.evaluation import paired_bootstrap
>>> paired_bootstrap(np.array([1.0, 0.5]), np.array([0.0, 0.5]), n_resamples=10)["difference"]
0.5
"""

from recjax._lazy import lazy_getattr as _lazy_getattr

_MODULES: dict[str, tuple[str, ...]] = {
    "recjax.evaluation.protocol": (
        "RankingTask", "evaluate_ranking",
    ),
    "recjax.evaluation.strong": ("StrongTask", "strong_generalization", "STRONG_KS"),
    "recjax.evaluation.significance": ("paired_bootstrap", "per_user_metric", "compare_pair"),
    "recjax.evaluation.ensemble": ("BlendScorer", "blend", "average_predictions"),
    "recjax.evaluation.experiment": ("Experiment", "ExperimentResult", "Rated"),
    "recjax.evaluation.compare": (
        "evaluate_run", "experiment_of_runs", "rating_baselines", "EASE_MAX_ITEMS", "row_names",
    ),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "RankingTask", "evaluate_ranking", "BlendScorer", "blend", "average_predictions",
    "Experiment", "ExperimentResult", "Rated", "evaluate_run", "experiment_of_runs",
    "rating_baselines", "EASE_MAX_ITEMS", "row_names", "StrongTask", "strong_generalization",
    "STRONG_KS", "paired_bootstrap", "per_user_metric", "compare_pair",
]


#: Import a public name from its module on first use (PEP 562), then keep it here.
__getattr__ = _lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
