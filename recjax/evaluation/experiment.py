"""An evaluation experiment: a protocol, the models, the metrics (Cornac's
``Experiment(eval_method, models, metrics).run()``), three independent objects, so any
model meets any protocol and any metric.

* **protocol**: a :class:`recjax.evaluation.protocol.RankingTask` (the ua and
  leave-last-one-out protocols: rank every unrated item for the test users) or a
  :class:`recjax.evaluation.strong.StrongTask` (strong generalisation: held-out users
  folded in), built from a run (``from_run``) or from ratings (``from_ratings``);
* **models**: ``{name: model}``, each a :class:`recjax.runs.Run` (ranked through its
  scorer, with its own test rating metrics when its family predicts ratings; folded
  in through its model under the strong protocol), a fitted model or anything
  :func:`recjax.scoring.as_scorer` accepts (a model that declares ``fold_in`` under
  the strong protocol), or a :class:`Rated` entry (rating metrics measured
  elsewhere, with or without a model to rank; ua and loo only);
* **metrics**: the metric names kept in the table (``ndcg``, ``recall``, ``rmse``,
  ...; all by default), at cut-off ``k``.

:meth:`Experiment.run` returns the table, one row per model, and optionally the
paired bootstrap over users (:func:`recjax.evaluation.significance.paired_bootstrap`)
of each model against the first. Run folders of one split, with their ensemble and
baselines, are put together by :func:`recjax.evaluation.compare.experiment_of_runs`.

Example
-------
>>> from recjax.data import Ratings
>>> from recjax.evaluation.experiment import Experiment
>>> from recjax.evaluation.protocol import RankingTask
>>> from recjax.models.baselines import MostPopular
>>> data = Ratings.from_raw([1, 1, 2, 3, 2, 3], [10, 20, 10, 10, 20, 30],
...                         [5.0, 4.0, 3.0, 4.0, 4.0, 2.0])
>>> train, test = data.subset(slice(0, 4)), data.subset(slice(4, 6))
>>> table = Experiment(RankingTask.from_ratings(train, test), {"pop": MostPopular().fit(train)},
...                    ["hit_rate"], k=1).run().table
>>> table["pop"]
{'hit_rate@1': 0.5, 'users': 2}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from recjax._checks import positive_int
from recjax.evaluation.protocol import RankingTask, evaluate_ranking
from recjax.evaluation.significance import paired_bootstrap, per_user_metric
from recjax.evaluation.strong import STRONG_KS, StrongTask, strong_generalization
from recjax.families import MODELS
from recjax.metrics import task_metrics
from recjax.runs import Run

__all__ = ["Experiment", "ExperimentResult", "Rated"]


@dataclass(frozen=True)
class Rated:
    """A model entry whose rating metrics were measured outside the experiment (a rating
    baseline's, an ensemble's averaged predictions'): ``rating`` goes into its row first,
    then the protocol's metrics of ``model`` (none when ``model`` is None)."""

    model: Any
    rating: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentResult:
    """What :meth:`Experiment.run` measured.

    Attributes
    ----------
    table : dict
        ``{model name: {metric key: value}}`` in the models' order (ranking keys
        ``name@k``, ``users`` the users evaluated).
    bootstrap : dict or None
        ``{model name: paired bootstrap result}`` of each compared model minus the first
        (:func:`recjax.evaluation.significance.paired_bootstrap`), when asked for.
    """

    table: dict[str, dict[str, float]]
    bootstrap: dict[str, dict[str, float]] | None = None


@dataclass(frozen=True, eq=False)
class Experiment:
    """Models measured under one protocol.

    Attributes
    ----------
    protocol : RankingTask or StrongTask
    models : dict
        ``{name: model}`` (module docstring); the first is the reference of the bootstrap.
    metrics : sequence of str, optional
        The metric names kept (``"ndcg"`` keeps ``ndcg@k``; ``users`` is always kept);
        default all: :func:`recjax.evaluation.protocol.evaluate_ranking`'s with rating
        metrics, or :func:`recjax.evaluation.strong.strong_generalization`'s.
    k : int, optional
        Cut-off: of every ranking metric (RankingTask, default 10), or of NDCG with
        recall at Liang's 20 and 50 (StrongTask, default 100).
    item_embeddings : float array [n_items, d], optional
        One space for every row's diversity (RankingTask; default each model's own).
    """

    protocol: RankingTask | StrongTask
    models: Mapping[str, Any]
    metrics: Sequence[str] | None = None
    k: int | None = None
    item_embeddings: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.protocol, (RankingTask, StrongTask)):
            raise TypeError(f"protocol must be a RankingTask or a StrongTask, got "
                            f"{type(self.protocol).__name__}")
        if not self.models:
            raise ValueError("no models to evaluate")
        if self.k is not None:
            positive_int(self.k, "k")

    @property
    def cutoff(self) -> int:
        """The cut-off in use: ``k``, or the protocol's default (10; strong: 100)."""
        if self.k is not None:
            return self.k
        return STRONG_KS[1] if isinstance(self.protocol, StrongTask) else 10

    def run(self, bootstrap: int = 0, *, metric: str = "ndcg", seed: int = 0,
            compared: Sequence[str] | None = None) -> ExperimentResult:
        """The table of every model, and with ``bootstrap`` resamples (> 0) the paired
        bootstrap of :meth:`paired` (``metric``, ``seed``, ``compared``)."""
        table = {name: self._row(model) for name, model in self.models.items()}
        if self.metrics is not None:
            keep = set(self.metrics) | {"users"}
            table = {name: {key: v for key, v in row.items() if key.split("@")[0] in keep}
                     for name, row in table.items()}
        return ExperimentResult(table, self.paired(bootstrap, metric=metric, seed=seed,
                                                   compared=compared) if bootstrap else None)

    def paired(self, n_resamples: int = 1000, *, metric: str = "ndcg", seed: int = 0,
               compared: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """Paired bootstrap over users of ``metric@k`` of each model in ``compared``
        (default: every model after the first) minus the first model:
        ``{name: result}`` (:func:`recjax.evaluation.significance.paired_bootstrap`).

        Raises
        ------
        ValueError
            Fewer than two models, an unknown name or metric, or a model the protocol
            cannot rank.
        """
        names = list(self.models)
        compared = names[1:] if compared is None else list(compared)
        if len(names) < 2 or not compared:
            raise ValueError("a paired comparison needs at least two models")
        unknown = [n for n in compared if n not in self.models]
        if unknown:
            raise ValueError(f"no model named {unknown[0]!r}; the models are {', '.join(names)}")
        reference = self._per_user(names[0], metric)
        return {name: paired_bootstrap(self._per_user(name, metric), reference,
                                       n_resamples=n_resamples, seed=seed)
                for name in compared}

    def _ranked(self, model: Any) -> tuple[Any, float | None]:
        """What the protocol ranks for ``model``, and the binary threshold of a run's
        fold-in: a run's scorer (RankingTask) or its trained module (StrongTask)."""
        if isinstance(model, Rated):
            model = model.model
        if not isinstance(model, Run):
            return model, None
        if isinstance(self.protocol, StrongTask):
            return model.model(), model.train_config.binary_threshold
        return model.scorer("dot"), None

    def _row(self, model: Any) -> dict[str, float]:
        """One model's metrics: its rating metrics, then the protocol's (strong: the
        protocol's only, the held-out users being unknown to the models' rating
        predictions)."""
        ranked, threshold = self._ranked(model)
        if isinstance(self.protocol, StrongTask):
            return strong_generalization(ranked, self.protocol, ks=STRONG_KS[0], ndcg_k=self.cutoff,
                                         binary_threshold=threshold)
        out = dict(model.rating) if isinstance(model, Rated) else _run_rating_metrics(model)
        if ranked is None:
            return out
        return {**out, **evaluate_ranking(ranked, self.protocol, self.cutoff,
                                          item_embeddings=self.item_embeddings)}

    def _per_user(self, name: str, metric: str) -> np.ndarray:
        """``metric@k`` of model ``name`` for every evaluated user, in ``protocol.users`` order."""
        ranked, threshold = self._ranked(self.models[name])
        if ranked is None:
            raise ValueError(f"{name!r} has no model to rank: it cannot be compared under the "
                             f"protocol")
        options = {"binary_threshold": threshold} if isinstance(self.protocol, StrongTask) else {}
        return per_user_metric(ranked, self.protocol, metric, self.cutoff, **options)


def _run_rating_metrics(model: Any) -> dict[str, float]:
    """A run's test rating metrics, from its model's predictions (``mse``, ``rmse``,
    ``mae``, or ``accuracy``, ``auc``, ``log_loss``); empty for anything but a run of a
    family that predicts ratings (:attr:`recjax.families.ModelSpec.predicts_ratings`:
    a rating metric of iALS's or EASE's ranking scores would be meaningless)."""
    if not isinstance(model, Run) or not MODELS[model.train_config.model].predicts_ratings:
        return {}
    return task_metrics(model.train_config.task, *model.rating_predictions("test"))
