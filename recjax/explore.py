"""Exploring a trained run: recommendations, nearest neighbours, title search, ranking.

Runs are opened with :meth:`recjax.runs.Run.open` (``load_run`` here): the folder
holds its own data, vocabularies and titles, so nothing is re-derived from the
dataset.

Raw ids in, titles out: users and items are addressed by their dataset ids
(ml-100k user ``943``, movie ``95``); an unknown id raises
:class:`recjax.data.UnknownIdError` naming it.

Example
-------
>>> import tempfile
>>> from recjax.config import RunConfig
>>> from recjax.models.mf import MFConfig
>>> from recjax.experiment import run
>>> from recjax.explore import load_run, neighbors, recommendations
>>> out = tempfile.mkdtemp() + "/run"
>>> _ = run(RunConfig(dataset="synthetic", split="random", epochs=2, quiet=True, out=out),
...         MFConfig(embedding_dim=4))
>>> r = load_run(out)
>>> recs = recommendations(r, [1, 2], N=3)
>>> recs.columns.tolist()
['user_id', 'rank', 'item_id', 'title', 'genres', 'score']
>>> len(recs), bool(recs.groupby("user_id").size().eq(3).all())
(6, True)
>>> hits = neighbors(r, "Item 7", k=3)
>>> hits.query, len(hits.table)
('Item 7', 3)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from recjax.data.dataset import UnknownIdError
from recjax.retrieval import TopK, similar_items
from recjax.runs import MEASURES, Run, _check_measure

__all__ = [
    "load_run", "find_titles", "TitleMatch", "recommendations", "neighbors", "Neighbors", "MEASURES",
    "evaluate_run", "evaluate_runs",
]



load_run = Run.open  # the one reader of run folders: recjax.runs.Run.open


# ----------------------------------------------------------------------------- titles
@dataclass(frozen=True)
class TitleMatch:
    """Items whose title contains the query (case-insensitive), in item order.

    Attributes
    ----------
    indices : int array
        Matching item indices; ``indices[0]`` is the one used.
    titles : list of str
    suggestions : list of str
        Close titles when nothing matched (else empty).
    """

    indices: np.ndarray
    titles: list[str]
    suggestions: list[str]


def find_titles(titles: Sequence[str], query: str, n_suggestions: int = 5) -> TitleMatch:
    """Case-insensitive substring search over ``titles``; close matches when none.

    Example
    -------
    >>> m = find_titles(["Aladdin (1992)", "Lion King, The (1994)",
    ...                  "Aladdin and the King of Thieves (1996)"], "aladdin")
    >>> m.indices.tolist(), m.titles[0]
    ([0, 2], 'Aladdin (1992)')
    >>> find_titles(["Aladdin (1992)"], "Aladin").suggestions
    ['Aladdin (1992)']
    """
    if not query or not query.strip():
        raise ValueError("the title to search for is empty")
    arr = pd.Series(list(titles), dtype=object).astype(str)
    hits = np.flatnonzero(arr.str.contains(query.strip(), case=False, regex=False).to_numpy())
    suggestions: list[str] = []
    if len(hits) == 0:
        lowered = {t.lower(): t for t in arr}
        stripped = {re.sub(r"\s*\(\d{4}\)\s*$", "", t).lower(): t for t in arr}
        q = query.strip().lower()
        close = difflib.get_close_matches(q, list(stripped), n=n_suggestions, cutoff=0.6)
        suggestions = [stripped[c] for c in close]
        for c in difflib.get_close_matches(q, list(lowered), n=n_suggestions, cutoff=0.6):
            if lowered[c] not in suggestions:
                suggestions.append(lowered[c])
        if not suggestions:  # words of the query that start some titles' words
            words = [w for w in re.findall(r"\w+", q) if len(w) >= 3]
            suggestions = [t for t in arr if any(re.search(rf"\b{re.escape(w[:4])}", t.lower())
                                                 for w in words)]
        suggestions = suggestions[:n_suggestions]
    return TitleMatch(hits.astype(np.int64), arr.iloc[hits].tolist(), suggestions)


# ----------------------------------------------------------------------------- recommend
def _user_indices(run: Run, user_ids: Any) -> np.ndarray:
    raw = np.atleast_1d(np.asarray(user_ids))
    if raw.dtype.kind in "OUS" and run.data.users.ids.dtype.kind in "iu":
        try:
            raw = raw.astype(np.int64)
        except ValueError:
            raise UnknownIdError(f"unknown user id(s): {', '.join(map(str, raw[:5]))} "
                                 f"(user ids of {run.dataset} are integers)") from None
    return run.data.users.index(raw).astype(np.int64)


def _frame(run: Run, users: np.ndarray, top: TopK, score_name: str = "score") -> pd.DataFrame:
    ids = top.ids
    n, k = ids.shape
    valid = (ids >= 0).ravel()
    flat = ids.ravel()[valid]
    return pd.DataFrame({
        "user_id": np.repeat(run.data.users.ids[users], k)[valid],
        "rank": np.tile(np.arange(1, k + 1), n)[valid],
        "item_id": run.data.items.ids[flat],
        "title": run.item_titles[flat],
        "genres": run.item_genres[flat],
        score_name: top.scores.ravel()[valid].astype(np.float64),
    })


def recommendations(run: Run, user_ids: Any, N: int = 10, *, measure: str = "dot",
                    include_rated: bool = False) -> pd.DataFrame:
    """The top ``N`` items for each raw user id, as a table with titles and genres
    (:meth:`recjax.runs.Run.recommend` gives the raw ids and scores).

    Every user of the run: ``user_ids=run.data.users.ids`` (one batched kernel pass).

    Parameters
    ----------
    run : Run
    user_ids : raw id or sequence of raw ids
    N : int
        Items per user.
    measure : {"dot", "cosine"}
        ``dot``: the model's ranking (see :meth:`Run.scorer`); ``cosine``: cosine of
        the user and item embeddings (the Google lab's second measure).
    include_rated : bool
        Keep items the user has rated anywhere in the dataset (excluded by default).

    Returns
    -------
    pandas.DataFrame
        ``user_id, rank, item_id, title, genres, score``; ``N`` rows per user, best
        first (fewer when fewer items are left).

    Raises
    ------
    UnknownIdError
        A user id the dataset does not have.
    ValueError
        ``N < 1`` or an unknown measure.
    """
    _check_measure(measure, ("dot", "cosine"))
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"N must be a positive integer, got {N!r}")
    users = _user_indices(run, user_ids)
    top = run.scorer(measure).topk(users, int(N), None if include_rated else run.rated)
    return _frame(run, users, top)


# ----------------------------------------------------------------------------- neighbours
@dataclass(frozen=True)
class Neighbors:
    """The answer of :func:`neighbors`.

    Attributes
    ----------
    query : str
        The title (or id) asked for.
    item_id : raw id of the movie used
    title : str
    others : list of str
        Other titles that matched the query (not used).
    table : pandas.DataFrame
        ``rank, item_id, title, genres, score`` best first; ``score`` is the dot
        product, cosine or Euclidean distance.
    """

    query: str
    item_id: Any
    title: str
    others: list[str]
    table: pd.DataFrame


def neighbors(run: Run, movie: str | None = None, k: int = 6, *, measure: str = "cosine",
              item_id: Any = None, include_self: bool = False) -> Neighbors:
    """Nearest items of a movie in the item embedding space (the Google lab's
    ``movie_neighbors``).

    Parameters
    ----------
    run : Run
    movie : str
        Title substring (case-insensitive); the first match is used and the others
        listed.
    k : int
    measure : {"dot", "cosine", "l2"}
    item_id : raw item id, optional
        Instead of ``movie``.
    include_self : bool
        Let the movie itself appear (the lab's tables start with it); excluded by default.

    Raises
    ------
    UnknownIdError
        No title matches (the message suggests close titles), or an unknown item id.
    ValueError
        Neither or both of ``movie`` and ``item_id``, ``k < 1``, an unknown measure.
    """
    _check_measure(measure)
    if (movie is None) == (item_id is None):
        raise ValueError("give exactly one of a movie title and an item id")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    others: list[str] = []
    if movie is not None:
        match = find_titles(run.item_titles, movie)
        if len(match.indices) == 0:
            hint = (f"; did you mean: {'; '.join(match.suggestions)}?" if match.suggestions
                    else "")
            raise UnknownIdError(f"no title contains {movie!r}{hint}")
        index, others, query = int(match.indices[0]), match.titles[1:], movie
    else:
        raw = np.asarray([item_id])
        if raw.dtype.kind in "OUS" and run.data.items.ids.dtype.kind in "iu":
            try:
                raw = raw.astype(np.int64)
            except ValueError:
                raise UnknownIdError(f"unknown item id: {item_id}") from None
        index, query = int(run.data.items.index(raw)[0]), str(item_id)
    items = run.item_embeddings
    if include_self:
        from recjax.retrieval import topk

        top = topk(items[index], items, k, metric=measure)
    else:
        top = similar_items(items, index, k, metric=measure)
    frame = _frame(run, np.zeros(1, np.int64), TopK(top.ids[None, :], top.scores[None, :]))
    frame = frame.drop(columns="user_id").reset_index(drop=True)
    return Neighbors(query, run.data.items.ids[index], str(run.item_titles[index]), others, frame)


# ----------------------------------------------------------------------------- evaluate
EASE_MAX_ITEMS = 20_000  # EASE inverts an n_items x n_items matrix


def evaluate_run(run: Run, k: int = 10, *, baselines: bool = True,
                 ease_lambda: float = 250.0) -> dict[str, dict[str, float]]:
    """Rating and ranking metrics of a run and of its baselines, on the run's own split.

    Parameters
    ----------
    run : Run
    k : int
        Cut-off of the ranking metrics.
    baselines : bool
        Add the rating baselines of ``metrics.jsonl`` (global and user mean) and the
        ranking baselines most-popular and EASE (``ease_lambda``; skipped above
        :data:`EASE_MAX_ITEMS` items), fitted on the split's train part.

    Returns
    -------
    dict
        ``{name: metrics}``, the run first (named :attr:`Run.name`). Rating metrics are
        the run's test ones (``rmse``, ``mae``, or ``accuracy``, ``auc``, ``log_loss``);
        ranking ones follow :func:`recjax.ranking.evaluate_ranking`, with diversity
        measured in the run's item embedding space for every row.
    """
    return evaluate_runs([run], k, baselines=baselines, ease_lambda=ease_lambda)


def evaluate_runs(runs: Sequence[Run], k: int = 10, *, baselines: bool = True,
                  ease_lambda: float = 250.0, ensemble: float | None = None) -> dict[str, dict[str, float]]:
    """:func:`evaluate_run` of several runs of one split, in one table.

    The baselines are fitted once; diversity is measured in the first run's item
    embedding space for every row, so that the rows compare. Rows are named by
    :attr:`Run.name`, with the folder name added where two runs share one.

    ``ensemble`` adds a row for the runs' ensemble: it ranks with a blend
    (:func:`recjax.ensemble.blend`) of all the runs, equal weights, and EASE at weight
    ``ensemble`` in [0, 1) (the runs share ``1 - ensemble``; 0: the runs alone); when
    all are rating models of one task, its rating metrics are those of their averaged
    test predictions (:func:`recjax.ensemble.average_predictions`).

    Raises
    ------
    ValueError
        No runs, a bad ``k``, or runs whose train/test parts differ (another dataset,
        split, or random-split seed).
    """
    from recjax.ensemble import blend
    from recjax.models.baselines import EASE, MostPopular
    from recjax.ranking import evaluate_ranking

    if not runs:
        raise ValueError("no runs to evaluate")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if ensemble is not None and not 0.0 <= ensemble < 1.0:
        raise ValueError(f"the ensemble's EASE weight must be in [0, 1), got {ensemble!r}")
    first = runs[0]
    task = first.ranking_task()
    space = first.item_embeddings
    for other in runs[1:]:
        t = other.ranking_task()
        if t.train.shape != task.train.shape or (t.train != task.train).nnz or (t.test != task.test).nnz:
            raise ValueError(f"{other.path} and {first.path} were trained on different splits "
                             f"({other.dataset} {other.split!r} vs "
                             f"{first.dataset} {first.split!r}); evaluate them "
                             f"separately")
    names = [r.name for r in runs]
    out: dict[str, dict[str, float]] = {}
    for run, name in zip(runs, names):
        if names.count(name) > 1:
            name = f"{name} ({run.path.name})"
            if name in out:
                name = f"{name[:-1]}, {len(out) + 1})"
        final = run.final_metrics
        rating = {n: float(final[f"test_{n}"]) for n in _RATING_NAMES[run.train_config.task]
                  if f"test_{n}" in final}
        out[name] = {**rating, **evaluate_ranking(run.scorer("dot"), task, k, item_embeddings=space)}
    fit_on = first.splits["train"].concat(first.splits["val"])
    ease = None
    if (baselines or ensemble) and task.n_items <= EASE_MAX_ITEMS:
        ease = EASE(ease_lambda).fit(fit_on)
    if ensemble is not None:
        if ensemble and ease is None:
            raise ValueError(f"EASE is not fitted above {EASE_MAX_ITEMS} items; use an ensemble "
                             f"weight of 0 (the runs alone)")
        share = (1.0 - ensemble) / len(runs)
        mix = blend([r.scorer("dot") for r in runs] + ([ease] if ensemble else []),
                    [share] * len(runs) + ([ensemble] if ensemble else []))
        name = f"ensemble of {len(runs)} runs" + (f" + EASE ({ensemble:g})" if ensemble else "")
        out[name] = {**_ensemble_rating_metrics(runs), **evaluate_ranking(mix, task, k, item_embeddings=space)}
    if baselines:
        models = {"most popular": MostPopular().fit(fit_on)}
        if ease is not None:
            models[f"EASE (lambda {ease_lambda:g})"] = ease
        for name, model in models.items():
            out[name] = evaluate_ranking(model, task, k, item_embeddings=space)
        final = next((r.final_metrics for r in runs if "global_mean_test_rmse" in r.final_metrics), {})
        for prefix, label in (("global_mean_", "global mean"), ("user_mean_", "user mean")):
            rating = {n: float(final[f"{prefix}test_{n}"]) for n in _RATING_NAMES["regression"]
                      if f"{prefix}test_{n}" in final}
            if rating:
                out[label] = rating
    return out


_RATING_NAMES = {"regression": ("mse", "rmse", "mae"), "binary": ("accuracy", "auc", "log_loss")}


def _ensemble_rating_metrics(runs: Sequence[Run]) -> dict[str, float]:
    """Test metrics of the runs' averaged predictions (:func:`recjax.ensemble.average_predictions`);
    empty unless every run is a rating model of one task."""
    from recjax.ensemble import average_predictions
    from recjax.evaluation import binary_metrics, rating_metrics
    from recjax.models import MODELS

    tasks = {r.train_config.task for r in runs}
    if len(tasks) > 1 or not all(MODELS[r.train_config.model].capabilities.pairs for r in runs):
        return {}
    task = tasks.pop()
    predicted = [r.rating_predictions("test") for r in runs]
    labels = predicted[0][1]
    if any(not np.array_equal(other, labels) for _, other in predicted[1:]):
        raise ValueError("the runs label the test part differently (another --binary-threshold?); "
                         "their predictions cannot be averaged")
    mean = average_predictions([p for p, _ in predicted], task)
    return (rating_metrics if task == "regression" else binary_metrics)(mean, labels)
