"""Exploring a trained run: recommendations, nearest neighbours, title search.

Runs are opened with :meth:`recjax.runs.Run.open` (``load_run`` here): the folder
holds its own data, vocabularies and titles, so nothing is re-derived from the
dataset.

Raw ids in, titles out: users and items are addressed by their dataset ids
(ml-100k user ``943``, movie ``95``), which may be written as text (``"943"``), as
the CLI reads them; an unknown id raises :class:`recjax.data.UnknownIdError` naming
it and its position.

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

from recjax._checks import positive_int
from recjax.data.dataset import UnknownIdError
from recjax.retrieval import TopK, similar_items
from recjax.runs import MEASURES, Run, _check_measure

__all__ = [
    "load_run", "find_titles", "TitleMatch", "recommendations", "neighbors", "Neighbors", "MEASURES",
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
    return np.atleast_1d(run.data.users.resolve(user_ids, "user_ids", text=True)).ravel()


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
        A user id the run does not have (``"alice"`` where ids are integers), named
        with its position (``user_ids[1]: unknown user id ...``).
    ValueError
        ``N < 1`` or an unknown measure.
    """
    _check_measure(measure, ("dot", "cosine"))
    N = positive_int(N, "N")
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
    k = positive_int(k, "k")
    others: list[str] = []
    if movie is not None:
        match = find_titles(run.item_titles, movie)
        if len(match.indices) == 0:
            hint = (f"; did you mean: {'; '.join(match.suggestions)}?" if match.suggestions
                    else "")
            raise UnknownIdError(f"no title contains {movie!r}{hint}")
        index, others, query = int(match.indices[0]), match.titles[1:], movie
    else:
        index, query = int(run.data.items.resolve(item_id, "item_id", text=True)), str(item_id)
    items = run.item_embeddings
    if include_self:
        from recjax.retrieval import topk

        top = topk(items[index], items, k, metric=measure)
    else:
        top = similar_items(items, index, k, metric=measure)
    frame = _frame(run, np.zeros(1, np.int64), TopK(top.ids[None, :], top.scores[None, :]))
    frame = frame.drop(columns="user_id").reset_index(drop=True)
    return Neighbors(query, run.data.items.ids[index], str(run.item_titles[index]), others, frame)
