"""The comparison of run folders: the :class:`recjax.evaluation.experiment.Experiment`
of trained runs of one split, with their ensemble and their baselines.

Runs are compared on their own split, read from the run folders (no dataset is
re-derived), under the protocol the split implies or the one asked for (ua and
leave-last-one-out: :class:`recjax.evaluation.protocol.RankingTask`; strong:
:class:`recjax.evaluation.strong.StrongTask`): each run's test rating metrics and its
ranking metrics, the ensemble of the runs (:func:`recjax.evaluation.ensemble.blend`,
optionally with EASE), and the baselines (global and user mean for ratings; most
popular and EASE for ranking; EASE alone under the strong protocol), all fitted here,
on the split's train part, when evaluating.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from recjax._checks import positive_int
from recjax.data.dataset import Ratings
from recjax.evaluation.ensemble import average_predictions, blend, mixture_weights
from recjax.evaluation.experiment import Experiment, Rated
from recjax.evaluation.protocol import RankingTask
from recjax.evaluation.strong import StrongTask
from recjax.families import MODELS
from recjax.metrics import rating_metrics, task_metrics
from recjax.models.baselines import EASE, GlobalMean, MostPopular, UserMean
from recjax.runs import Run

__all__ = ["evaluate_run", "experiment_of_runs", "rating_baselines", "EASE_MAX_ITEMS", "row_names"]


EASE_MAX_ITEMS = 20_000  # EASE inverts an n_items x n_items matrix


def evaluate_run(run: Run, k: int = 10, *, test: Ratings | None = None, baselines: bool = True,
                 ease_l2: float = 250.0) -> dict[str, dict[str, float]]:
    """Rating and ranking metrics of a run and of its baselines, on the run's own split
    (or on ``test``), under the ua protocol (:func:`experiment_of_runs`).

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
        ranking baselines most-popular and EASE (``ease_l2``; skipped above
        :data:`EASE_MAX_ITEMS` items), fitted here on the split's train part
        (validation included).

    Returns
    -------
    dict
        ``{name: metrics}``, the run first (named :attr:`Run.name`). Rating metrics are
        those of its model's test predictions (``mse``, ``rmse``, ``mae``, or
        ``accuracy``, ``auc``, ``log_loss``) for a family that predicts ratings; ranking
        ones follow :func:`recjax.evaluation.protocol.evaluate_ranking`, with diversity
        measured in the run's item embedding space for every row.
    """
    if test is not None:
        run = run.with_test(test)
    return experiment_of_runs([run], k=k, baselines=baselines, ease_l2=ease_l2).run().table


def experiment_of_runs(runs: Sequence[Run], protocol: str = "ua", *, k: int | None = None,
                       baselines: bool = True, ease_l2: float = 250.0,
                       ensemble: float | None = None, weights: Sequence[float] | None = None,
                       threshold: float = 4.0, seed: int = 0) -> Experiment:
    """The :class:`Experiment` of run folders of one split, their ensemble and baselines.

    Parameters
    ----------
    runs : sequence of Run
        Rows named by :func:`row_names`, in this order; the first is the bootstrap's
        reference, and its item embeddings the space of every row's diversity.
    protocol : {"ua", "loo", "strong"}
        ua and loo: :meth:`RankingTask.from_run` of the first run; strong:
        :meth:`StrongTask.from_run` (``threshold``, and ``seed`` of the 80/20 division).
    k : int, optional
        :attr:`Experiment.k` (default 10; strong: NDCG@100).
    baselines : bool
        After the runs (and the ensemble): most popular and EASE (``ease_l2``,
        skipped above :data:`EASE_MAX_ITEMS` items) fitted on the train part
        (validation included), then the rating baselines global and user mean when a
        run is a regression run; strong: EASE fitted on the training users.
    ensemble : float, optional
        A row for the runs' ensemble (ua and loo): it ranks with a blend
        (:func:`recjax.evaluation.ensemble.blend`) of all the runs and EASE at weight
        ``ensemble`` in [0, 1) (the runs share ``1 - ensemble``; 0: the runs alone),
        the runs' share divided by ``weights`` (one non-negative weight per run,
        normalised; default equal); when all are rating models of one task, its rating
        metrics are those of their test predictions averaged with the same weights
        (:func:`recjax.evaluation.ensemble.average_predictions`).

    Raises
    ------
    ValueError
        No runs, an unknown protocol, a bad ``k``, runs whose train/test parts differ
        (another dataset, split, or random-split seed), an ensemble under the strong
        protocol, or ``weights`` without ``ensemble`` or not one valid weight per run.
    """
    if not runs:
        raise ValueError("no runs to evaluate")
    if protocol not in ("ua", "loo", "strong"):
        raise ValueError(f"protocol must be 'ua', 'loo' or 'strong', got {protocol!r}")
    if k is not None:
        k = positive_int(k, "k")
    if protocol == "strong":
        if ensemble is not None or weights is not None:
            raise ValueError("an ensemble is not available under the strong protocol")
        return _strong_experiment(runs, k, baselines, ease_l2, threshold, seed)
    if ensemble is not None and not 0.0 <= ensemble < 1.0:
        raise ValueError(f"the ensemble's EASE weight must be in [0, 1), got {ensemble!r}")
    if weights is not None and ensemble is None:
        raise ValueError("weights are the ensemble's: pass ensemble (0 for the runs alone)")
    shares = mixture_weights(weights, len(runs))
    first = runs[0]
    task = RankingTask.from_run(first)
    for other in runs[1:]:
        t = RankingTask.from_run(other)
        if t.train.shape != task.train.shape or (t.train != task.train).nnz or (t.test != task.test).nnz:
            raise ValueError(f"{other.path} and {first.path} were trained on different splits "
                             f"({other.dataset} {other.split!r} vs "
                             f"{first.dataset} {first.split!r}); evaluate them "
                             f"separately")
    models: dict[str, object] = dict(zip(row_names(runs), runs))
    fit_on = first.splits["train"].concat(first.splits["val"])
    ease = None
    if (baselines or ensemble) and task.n_items <= EASE_MAX_ITEMS:
        ease = EASE(ease_l2).fit(fit_on)
    if ensemble is not None:
        if ensemble and ease is None:
            raise ValueError(f"EASE is not fitted above {EASE_MAX_ITEMS} items; use an ensemble "
                             f"weight of 0 (the runs alone)")
        mix = blend([r.scorer("dot") for r in runs] + ([ease] if ensemble else []),
                    list((1.0 - ensemble) * shares) + ([ensemble] if ensemble else []))
        name = (f"ensemble of {len(runs)} runs" + ("" if weights is None else " (weighted)")
                + (f" + EASE ({ensemble:g})" if ensemble else ""))
        models[name] = Rated(mix, _ensemble_rating_metrics(runs, shares))
    if baselines:
        models["most popular"] = MostPopular().fit(fit_on)
        if ease is not None:
            models[f"EASE (l2 {ease_l2:g})"] = ease
        if any(r.train_config.task == "regression" for r in runs):
            models.update({name: Rated(None, m)
                           for name, m in rating_baselines(fit_on, first.splits["test"]).items()})
    space = first.item_embeddings if first.item_embeddings.size else None  # none saved: no diversity
    return Experiment(task, models, k=k, item_embeddings=space)


def _strong_experiment(runs: Sequence[Run], k: int | None, baselines: bool, ease_l2: float,
                       threshold: float, seed: int) -> Experiment:
    """:func:`experiment_of_runs` under the strong protocol."""
    first = runs[0]
    for other in runs[1:]:
        for part in ("train", "test"):
            a, b = first.splits[part], other.splits[part]
            if len(a) != len(b) or not (np.array_equal(a.user, b.user) and np.array_equal(a.item, b.item)):
                raise ValueError(f"{other.path} and {first.path} were trained on different splits; "
                                 f"evaluate them separately")
    task = StrongTask.from_run(first, threshold=threshold, seed=seed)
    models: dict[str, object] = dict(zip(row_names(runs), runs))
    if baselines and task.n_items <= EASE_MAX_ITEMS:
        models[f"EASE (l2 {ease_l2:g})"] = EASE(ease_l2).fit(first.splits["train"])
    return Experiment(task, models, k=k)


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


def rating_baselines(train: Ratings, test: Ratings) -> dict[str, dict[str, float]]:
    """Test rating metrics (``mse``, ``rmse``, ``mae``) of the global-mean and user-mean
    baselines fitted on ``train``: ``{"global mean": {...}, "user mean": {...}}``."""
    return {name: rating_metrics(baseline().fit(train).predict(test.user, test.item), test.rating)
            for name, baseline in (("global mean", GlobalMean), ("user mean", UserMean))}


def _ensemble_rating_metrics(runs: Sequence[Run], weights: np.ndarray) -> dict[str, float]:
    """Test metrics of the runs' predictions averaged with ``weights``
    (:func:`average_predictions`); empty unless every run is a rating model of one task."""
    tasks = {r.train_config.task for r in runs}
    if len(tasks) > 1 or not all(MODELS[r.train_config.model].predicts_ratings for r in runs):
        return {}
    task = tasks.pop()
    predicted = [r.rating_predictions("test") for r in runs]
    labels = predicted[0][1]
    if any(not np.array_equal(other, labels) for _, other in predicted[1:]):
        raise ValueError("the runs label the test part differently (another --binary-threshold?); "
                         "their predictions cannot be averaged")
    mean = average_predictions([p for p, _ in predicted], task, weights)
    return task_metrics(task, mean, labels)
