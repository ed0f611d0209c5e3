"""The comparison table: rating and ranking metrics of trained runs and their baselines.

Runs are compared on their own split, read from the run folders (no dataset is
re-derived): each run's test rating metrics and its ranking metrics under
:func:`recjax.evaluation.protocol.evaluate_ranking`, the ensemble of the runs
(:func:`recjax.evaluation.ensemble.blend`, optionally with EASE), and the baselines
(global and user mean for ratings; most popular and EASE for ranking), all fitted
here, on the split's train part, when evaluating.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from recjax._checks import positive_int
from recjax.data.dataset import Ratings
from recjax.evaluation.ensemble import average_predictions, blend, mixture_weights
from recjax.evaluation.protocol import RankingTask, evaluate_ranking
from recjax.metrics import rating_metrics, task_metrics
from recjax.families import MODELS
from recjax.models.baselines import EASE, GlobalMean, MostPopular, UserMean
from recjax.runs import Run

__all__ = ["compare_models", "evaluate_run", "evaluate_runs", "rating_baselines", "EASE_MAX_ITEMS",
           "row_names", "bootstrap_runs"]


EASE_MAX_ITEMS = 20_000  # EASE inverts an n_items x n_items matrix


def evaluate_run(run: Run, k: int = 10, *, test: Ratings | None = None, baselines: bool = True,
                 ease_lambda: float = 250.0) -> dict[str, dict[str, float]]:
    """Rating and ranking metrics of a run and of its baselines, on the run's own split
    (or on ``test``).

    Parameters
    ----------
    run : Run
    k : int
        Cut-off of the ranking metrics.
    test : Ratings, optional
        Another test part, in raw ids the run knows (:meth:`Run.with_test`), ranked
        against everything not in the run's train + validation parts.
    baselines : bool
        Add the rating baselines global and user mean (regression runs) and the
        ranking baselines most-popular and EASE (``ease_lambda``; skipped above
        :data:`EASE_MAX_ITEMS` items), fitted here on the split's train part
        (validation included).

    Returns
    -------
    dict
        ``{name: metrics}``, the run first (named :attr:`Run.name`). Rating metrics are
        those of its model's test predictions (``mse``, ``rmse``, ``mae``, or
        ``accuracy``, ``auc``, ``log_loss``) for a family that scores pairs; ranking ones
        follow :func:`recjax.evaluation.protocol.evaluate_ranking`, with diversity
        measured in the run's item embedding space for every row.
    """
    if test is not None:
        run = run.with_test(test)
    return evaluate_runs([run], k, baselines=baselines, ease_lambda=ease_lambda)


def evaluate_runs(runs: Sequence[Run], k: int = 10, *, baselines: bool = True,
                  ease_lambda: float = 250.0, ensemble: float | None = None,
                  weights: Sequence[float] | None = None) -> dict[str, dict[str, float]]:
    """:func:`evaluate_run` of several runs of one split, in one table.

    The baselines are fitted once; diversity is measured in the first run's item
    embedding space for every row, so that the rows compare. Rows are named by
    :attr:`Run.name`, with the folder name added where two runs share one.

    ``ensemble`` adds a row for the runs' ensemble: it ranks with a blend
    (:func:`recjax.evaluation.ensemble.blend`) of all the runs and EASE at weight
    ``ensemble`` in [0, 1) (the runs share ``1 - ensemble``; 0: the runs alone), the
    runs' share divided by ``weights`` (one non-negative weight per run, normalised;
    default equal); when all are rating models of one task, its rating metrics are
    those of their test predictions averaged with the same weights
    (:func:`recjax.evaluation.ensemble.average_predictions`).

    Raises
    ------
    ValueError
        No runs, a bad ``k``, runs whose train/test parts differ (another dataset,
        split, or random-split seed), or ``weights`` without ``ensemble`` or not one
        valid weight per run (:func:`recjax.evaluation.ensemble.mixture_weights`).
    """
    if not runs:
        raise ValueError("no runs to evaluate")
    k = positive_int(k, "k")
    if ensemble is not None and not 0.0 <= ensemble < 1.0:
        raise ValueError(f"the ensemble's EASE weight must be in [0, 1), got {ensemble!r}")
    if weights is not None and ensemble is None:
        raise ValueError("weights are the ensemble's: pass ensemble (0 for the runs alone)")
    shares = mixture_weights(weights, len(runs))
    first = runs[0]
    task = RankingTask.from_run(first)
    space = first.item_embeddings if first.item_embeddings.size else None  # none saved: no diversity
    for other in runs[1:]:
        t = RankingTask.from_run(other)
        if t.train.shape != task.train.shape or (t.train != task.train).nnz or (t.test != task.test).nnz:
            raise ValueError(f"{other.path} and {first.path} were trained on different splits "
                             f"({other.dataset} {other.split!r} vs "
                             f"{first.dataset} {first.split!r}); evaluate them "
                             f"separately")
    out: dict[str, dict[str, float]] = {}
    for run, name in zip(runs, row_names(runs)):
        out[name] = {**_rating_metrics(run), **evaluate_ranking(run.scorer("dot"), task, k,
                                                               item_embeddings=space)}
    fit_on = first.splits["train"].concat(first.splits["val"])
    ease = None
    if (baselines or ensemble) and task.n_items <= EASE_MAX_ITEMS:
        ease = EASE(ease_lambda).fit(fit_on)
    if ensemble is not None:
        if ensemble and ease is None:
            raise ValueError(f"EASE is not fitted above {EASE_MAX_ITEMS} items; use an ensemble "
                             f"weight of 0 (the runs alone)")
        mix = blend([r.scorer("dot") for r in runs] + ([ease] if ensemble else []),
                    list((1.0 - ensemble) * shares) + ([ensemble] if ensemble else []))
        name = (f"ensemble of {len(runs)} runs" + ("" if weights is None else " (weighted)")
                + (f" + EASE ({ensemble:g})" if ensemble else ""))
        out[name] = {**_ensemble_rating_metrics(runs, shares),
                     **evaluate_ranking(mix, task, k, item_embeddings=space)}
    if baselines:
        models = {"most popular": MostPopular().fit(fit_on)}
        if ease is not None:
            models[f"EASE (lambda {ease_lambda:g})"] = ease
        for name, model in models.items():
            out[name] = evaluate_ranking(model, task, k, item_embeddings=space)
        if any(r.train_config.task == "regression" for r in runs):
            out.update(rating_baselines(fit_on, first.splits["test"]))
    return out


def row_names(runs: Sequence[Run]) -> list[str]:
    """The comparison table's row name of each run: :attr:`Run.name`, with the folder
    name added where two runs share one."""
    names = [r.name for r in runs]
    out: list[str] = []
    for run, name in zip(runs, names):
        if names.count(name) > 1:
            name = f"{name} ({run.path.name})"
            if name in out:
                name = f"{name[:-1]}, {len(out) + 1})"
        out.append(name)
    return out


def bootstrap_runs(runs: Sequence[Run], task: Any, k: int, *, metric: str = "ndcg",
                   n_resamples: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Paired bootstrap over users (:func:`recjax.evaluation.significance.paired_bootstrap`)
    of ``metric@k`` of each run after the first minus the first, on ``task`` (a
    :class:`RankingTask`, the ua and leave-last-one-out protocols, or a
    :class:`recjax.evaluation.strong.StrongTask`): ``{row name: result}``."""
    from recjax.evaluation.significance import paired_bootstrap, per_user_metric
    from recjax.evaluation.strong import StrongTask

    if len(runs) < 2:
        raise ValueError("a paired comparison needs at least two runs")
    values = [per_user_metric(run if isinstance(task, StrongTask) else run.scorer("dot"), task, metric, k)
              for run in runs]
    names = row_names(runs)
    return {name: paired_bootstrap(v, values[0], n_resamples=n_resamples, seed=seed)
            for name, v in zip(names[1:], values[1:])}


def rating_baselines(train: Ratings, test: Ratings) -> dict[str, dict[str, float]]:
    """Test rating metrics (``mse``, ``rmse``, ``mae``) of the global-mean and user-mean
    baselines fitted on ``train``: ``{"global mean": {...}, "user mean": {...}}``."""
    return {name: rating_metrics(baseline().fit(train).predict(test.user, test.item), test.rating)
            for name, baseline in (("global mean", GlobalMean), ("user mean", UserMean))}


def _predicts_ratings(run: Run) -> bool:
    """Whether the run's model predicts ratings (:attr:`ModelSpec.predicts_ratings`): a
    rating metric of iALS's or EASE's ranking scores would be meaningless."""
    return MODELS[run.train_config.model].predicts_ratings


def _rating_metrics(run: Run) -> dict[str, float]:
    """The run's test rating metrics, from its model's predictions; empty for a family
    that predicts no ratings (softmax, Mult-DAE, iALS, EASE)."""
    if not _predicts_ratings(run):
        return {}
    return task_metrics(run.train_config.task, *run.rating_predictions("test"))


def _ensemble_rating_metrics(runs: Sequence[Run], weights: np.ndarray) -> dict[str, float]:
    """Test metrics of the runs' predictions averaged with ``weights``
    (:func:`average_predictions`); empty unless every run is a rating model of one task."""
    tasks = {r.train_config.task for r in runs}
    if len(tasks) > 1 or not all(_predicts_ratings(r) for r in runs):
        return {}
    task = tasks.pop()
    predicted = [r.rating_predictions("test") for r in runs]
    labels = predicted[0][1]
    if any(not np.array_equal(other, labels) for _, other in predicted[1:]):
        raise ValueError("the runs label the test part differently (another --binary-threshold?); "
                         "their predictions cannot be averaged")
    mean = average_predictions([p for p, _ in predicted], task, weights)
    return task_metrics(task, mean, labels)


def compare_models(models: dict[str, Any], task: RankingTask, k: int = 10, *,
                   item_embeddings: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """:func:`evaluate_ranking` of each named in-memory model on one task, in one table
    (diversity in one embedding space): ``{name: metrics}``."""
    return {name: evaluate_ranking(m, task, k, item_embeddings=item_embeddings)
            for name, m in models.items()}
