"""Users' own rating data: a pandas DataFrame, a CSV or a Parquet file in, validated :class:`Ratings` out.

Every check runs on the way in, so a problem surfaces as one line that names the
column, the first offending row (its DataFrame index label; for a CSV file the line
number, the header being line 1) and what to do about it, never as a NaN loss or a
silently merged id three layers further down.

Ids
    Integer ids stay integers (int64); string ids stay Python ``str`` (object
    arrays). A column mixing the two, float ids (``1.0``, what pandas makes of an
    integer column with a missing cell), booleans or other types are refused: one
    id must never silently become another.
Ratings
    Finite numbers, stored as float32, within ``rating_scale`` when given; otherwise
    the scale is inferred as their (min, max).
Timestamps
    Optional: integers (Unix seconds) or datetimes (converted to Unix seconds,
    naive ones taken as UTC); 0 everywhere without a timestamp column.
Duplicate (user, item) pairs
    ``duplicates="error"`` (the default) refuses them, naming the first repeated pair
    and its rows. ``"last"`` keeps, for each pair, the row with the latest timestamp,
    ties going to the row further down the frame (without timestamps: the last row).
    ``"mean"`` keeps that same row with its rating replaced by the mean of the
    pair's ratings (so its timestamp is the latest). The kept rows stay in frame
    order.

Example
-------
>>> import pandas as pd
>>> from recjax.data import ratings_from_pandas
>>> df = pd.DataFrame({"user": ["ann", "bob", "ann"], "item": ["x", "x", "y"],
...                    "rating": [7, 10, 3]})
>>> r = ratings_from_pandas(df, rating_scale=(1, 10))
>>> r.n_users, r.n_items, r.rating_scale, r.users.ids.tolist()
(2, 2, (1.0, 10.0), ['ann', 'bob'])
>>> ratings_from_pandas(df.assign(rating=[7, 11, 3]), rating_scale=(1, 10))
Traceback (most recent call last):
...
ValueError: column 'rating', row 1: rating 11 is outside rating_scale (1, 10); fix the rating or widen rating_scale
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import numbers
import os
import warnings
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recjax.data.dataset import Ratings, Vocabulary
from recjax.data.movielens import MalformedFileError

__all__ = ["DUPLICATE_RULES", "ratings_from_pandas", "read_ratings"]

DUPLICATE_RULES = ("error", "last", "mean")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_COMPRESSION = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# Cells read as missing in a CSV's rating and timestamp columns (ids: only empty cells,
# so an item called "NA" stays an item).
_NA_STRINGS = ["", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "null", "NULL", "None", "#N/A"]
_INT64_MAX = np.iinfo(np.int64).max
_SHOWN_COLUMNS = 20
_ROLES = ("user id", "item id", "rating", "timestamp")


# --------------------------------------------------------------------------- error reporting
def _show(value: Any) -> str:
    """``repr`` of a cell, numpy scalars as plain Python ones (``3``, not ``np.int64(3)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return repr(int(value)) if abs(value) < 2**53 else repr(value)
    return repr(value)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class _Where:
    """How error messages locate rows: DataFrame index labels, or a file's lines/rows.

    ``source`` (a file) prefixes every message and makes every error a
    :class:`MalformedFileError`; ``line_offset`` turns row positions into line numbers;
    ``flags``: the advice names the command line's flags, not the keywords (:meth:`setting`).
    """

    def __init__(self, index: pd.Index, source: Path | None = None, line_offset: int | None = None,
                 hint: str | None = None, flags: bool = False):
        self.index = index
        self.source = source
        self.line_offset = line_offset
        self.hint = hint  # how to name the right columns; None: the keyword of each
        self.flags = flags

    def setting(self, keyword: str, flag: str) -> str:
        """A setting as the advice names it: the keyword (``duplicates='last'``) or the
        command line's flag (``--duplicates last``)."""
        return flag if self.flags else keyword

    def row(self, pos: int) -> str:
        if self.line_offset is not None:
            return f"line {pos + self.line_offset}"
        return f"row {_show(self.index[pos])}"

    def rows(self, positions: Sequence[int], total: int) -> str:
        shown = list(positions[:5])
        if self.line_offset is not None:
            text = ", ".join(str(p + self.line_offset) for p in shown)
            word = "lines"
        else:
            text = ", ".join(_show(self.index[p]) for p in shown)
            word = "rows"
        more = f" and {total - len(shown)} more" if total > len(shown) else ""
        return f"{word} {text}{more}"

    def error(self, kind: type[Exception], message: str) -> Exception:
        if self.source is not None:
            return MalformedFileError(f"{self.source}: {message}")
        return kind(message)

    def cell(self, kind: type[Exception], column: Hashable, pos: int, problem: str,
             advice: str) -> Exception:
        """The error for one bad cell: ``column 'c', row r: problem; advice``."""
        return self.error(kind, f"column {_show(column)}, {self.row(pos)}: {problem}; {advice}")


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeio" else "a ") + noun  # "a user id", "an int"


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


# --------------------------------------------------------------------------- columns
def _column(df: pd.DataFrame | pd.Index, column: Hashable, role: str, keyword: str,
            where: _Where) -> pd.Series | None:
    """``df[column]``; ``df`` may be just the column labels (a file's header), then None."""
    labels = df if isinstance(df, pd.Index) else df.columns
    if column not in labels:
        names = [_show(c) for c in labels[:_SHOWN_COLUMNS]]
        more = f" ... ({len(labels)} in all)" if len(labels) > _SHOWN_COLUMNS else ""
        available = ", ".join(names) + more if names else "none"
        hint = where.hint or f"name the right column with {keyword}=..."
        raise where.error(
            ValueError, f"no column {_show(column)} (the {role}s); available columns: {available}; {hint}"
        )
    count = int((labels == column).sum()) if not isinstance(labels, pd.MultiIndex) else 1
    if count > 1:
        raise where.error(
            ValueError, f"column {_show(column)} appears {count} times; give the columns unique names"
        )
    return None if isinstance(df, pd.Index) else df[column]


def _check_missing(series: pd.Series, column: Hashable, what: str, where: _Where) -> None:
    missing = series.isna().to_numpy()
    if missing.any():
        pos = _first(missing)
        raise where.cell(
            ValueError, column, pos, f"missing {what} ({_show(series.iloc[pos])})",
            f"drop or fill the rows without {_a(what)}",
        )


def _id_kind(value: Any) -> str:
    """"str", "int" or the type's name (bools are not ints here)."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return "int"
    return type(value).__name__


def _int64(series: pd.Series, column: Hashable, what: str, advice: str, where: _Where) -> np.ndarray:
    """An integer column as int64 [n]; unsigned values beyond int64 are an error naming the row."""
    if pd.api.types.is_unsigned_integer_dtype(series.dtype):
        too_big = series.to_numpy() > _INT64_MAX
        if too_big.any():
            pos = _first(too_big)
            raise where.cell(ValueError, column, pos,
                             f"{what} {_show(series.iloc[pos])} does not fit int64", advice)
    return series.to_numpy(dtype=np.int64)


def _ids(series: pd.Series, column: Hashable, role: str, where: _Where) -> np.ndarray:
    """Validated ids of one column: int64, or an object array of str, shape [n]."""
    _check_missing(series, column, f"{role} id", where)
    dtype = series.dtype
    as_str = f"convert the column to str: df[{_show(column)}] = df[{_show(column)}].astype(str)"
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(object)
        dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise where.cell(TypeError, column, 0, f"boolean {role} id {_show(series.iloc[0])}; "
                         "ids must be integers or strings", as_str)
    if pd.api.types.is_integer_dtype(dtype):
        return _int64(series, column, f"{role} id", as_str, where)
    if pd.api.types.is_float_dtype(dtype):
        values = series.to_numpy(dtype=np.float64)
        whole = np.isfinite(values) & (values == np.round(values))
        if whole.all():
            advice = (f"ids must be integers or strings; if these are integers read as floats "
                      f"(a file with missing cells), drop those rows and convert with "
                      f"df[{_show(column)}].astype('int64'), else {as_str}")
        else:
            advice = f"ids must be integers or strings; {as_str}"
        pos = 0 if whole.all() else _first(~whole)
        raise where.cell(TypeError, column, pos, f"float {role} id {_show(series.iloc[pos])}", advice)
    if pd.api.types.is_string_dtype(dtype) or dtype == object:
        values = series.to_numpy(dtype=object)
        inferred = pd.api.types.infer_dtype(values, skipna=False)
        if inferred == "string":
            nul = series.astype(object).str.contains("\x00", regex=False).to_numpy(dtype=bool)
            if nul.any():
                pos = _first(nul)
                raise where.cell(ValueError, column, pos,
                                 f"{role} id {_show(values[pos])} contains a NUL character",
                                 "remove the NUL characters from the ids")
            return values
        if inferred == "integer":
            try:
                return np.asarray(values, dtype=np.int64)
            except OverflowError:
                big = np.array([abs(int(v)) > _INT64_MAX for v in values])
                pos = _first(big)
                raise where.cell(ValueError, column, pos,
                                 f"{role} id {_show(values[pos])} does not fit int64",
                                 as_str) from None
        kinds = [_id_kind(v) for v in values]
        bad = [i for i, k in enumerate(kinds) if k not in ("str", "int")]
        if bad:
            pos = bad[0]
            advice = (f"decode them: df[{_show(column)}].str.decode('utf-8')"
                      if kinds[pos] == "bytes" else as_str)
            raise where.cell(TypeError, column, pos,
                             f"{role} id {_show(values[pos])} is {_a(kinds[pos])}; "
                             "ids must be integers or strings", advice)
        other = next(i for i, k in enumerate(kinds) if k != kinds[0])
        raise where.cell(
            TypeError, column, other,
            f"{role} id {_show(values[other])} is {_a(kinds[other])} but the id at "
            f"{where.row(0)} is {_a(kinds[0])} (mixed id types)", as_str,
        )
    raise where.cell(TypeError, column, 0,
                     f"{role} ids of dtype {dtype} ({_show(series.iloc[0])}); "
                     "ids must be integers or strings", as_str)


def _ratings(series: pd.Series, column: Hashable, where: _Where) -> np.ndarray:
    """Validated ratings, float64 [n] (finite, and finite in float32)."""
    _check_missing(series, column, "rating", where)
    dtype = series.dtype
    advice = f"ratings must be numbers: convert with pd.to_numeric(df[{_show(column)}])"
    if pd.api.types.is_bool_dtype(dtype):
        raise where.cell(TypeError, column, 0, f"boolean rating {_show(series.iloc[0])}",
                         f"ratings must be numbers: convert with df[{_show(column)}].astype(float)")
    real = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)
    if real or (dtype == object and pd.api.types.infer_dtype(series, skipna=False) in (
        "integer", "floating", "mixed-integer-float", "decimal"
    )):
        values = series.to_numpy(dtype=np.float64)
    else:
        cells = series.to_numpy(dtype=object)
        not_number = np.array([not isinstance(v, numbers.Real) or isinstance(v, (bool, np.bool_))
                               for v in cells])
        numeric = pd.to_numeric(series.astype(object), errors="coerce").notna().to_numpy()
        unparsable = not_number & ~numeric
        pos = _first(unparsable) if unparsable.any() else _first(not_number) if not_number.any() else 0
        kind = "non-numeric" if unparsable.any() else f"{type(cells[pos]).__name__}-typed"
        raise where.cell(TypeError, column, pos, f"{kind} rating {_show(cells[pos])}", advice)
    with np.errstate(over="ignore"):
        as_float32 = values.astype(np.float32)
    bad = ~np.isfinite(as_float32)
    if bad.any():
        pos = _first(bad)
        value = values[pos]
        problem = (f"infinite rating ({_show(value)})" if np.isinf(value)
                   else f"rating {_show(value)} is too large for float32")
        raise where.cell(ValueError, column, pos, problem, "drop or fix that rating")
    return values


def _timestamps(series: pd.Series, column: Hashable, where: _Where) -> np.ndarray:
    """Validated timestamps as int64 Unix seconds [n]."""
    _check_missing(series, column, "timestamp", where)
    dtype = series.dtype
    advice = (f"timestamps must be integers (Unix seconds) or datetimes: convert with "
              f"pd.to_datetime(df[{_show(column)}])")
    if dtype == object or pd.api.types.is_string_dtype(dtype):
        inferred = pd.api.types.infer_dtype(series, skipna=False)
        if inferred == "integer":
            try:
                series = series.astype(np.int64)
            except OverflowError:
                raise where.cell(ValueError, column, 0, "timestamps that do not fit int64",
                                 "fix the timestamps") from None
        elif inferred in ("datetime", "datetime64", "date"):
            try:
                series = pd.to_datetime(series, utc=True)
            except (TypeError, ValueError) as e:
                raise where.cell(TypeError, column, 0, f"datetimes that cannot be combined "
                                 f"({_one_line(e)})", advice) from None
        else:
            cells = series.to_numpy(dtype=object)
            ok = np.array([_id_kind(v) == "int" for v in cells])
            pos = _first(~ok) if not ok.all() else 0
            raise where.cell(TypeError, column, pos,
                             f"timestamp {_show(cells[pos])} is {_a(type(cells[pos]).__name__)}",
                             advice)
        dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        dtype = series.dtype
    if pd.api.types.is_datetime64_dtype(dtype):
        # datetime64[s] floors sub-second times (also before 1970)
        return series.to_numpy().astype("datetime64[s]").astype(np.int64)
    if pd.api.types.is_bool_dtype(dtype):
        raise where.cell(TypeError, column, 0, f"boolean timestamp {_show(series.iloc[0])}", advice)
    if pd.api.types.is_integer_dtype(dtype):
        return _int64(series, column, "timestamp", "fix the timestamp", where)
    if pd.api.types.is_float_dtype(dtype):
        values = series.to_numpy(dtype=np.float64)
        whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0**63)
        if not whole.all():
            pos = _first(~whole)
            raise where.cell(TypeError, column, pos,
                             f"timestamp {_show(values[pos])} is not a whole number of seconds",
                             advice)
        return values.astype(np.int64)
    raise where.cell(TypeError, column, 0,
                     f"timestamps of dtype {dtype} ({_show(series.iloc[0])})", advice)


# --------------------------------------------------------------------------- scale, duplicates
def _check_rating_scale(rating_scale: Any, flags: bool = False) -> tuple[float, float]:
    try:
        low, high = rating_scale
        if any(isinstance(v, (bool, np.bool_, str, bytes)) for v in (low, high)):
            raise TypeError
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        raise ValueError(
            f"rating_scale must be a pair (low, high) of numbers, e.g. (1, 10); got {rating_scale!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        if flags:
            raise ValueError(f"--rating-scale must be LOW,HIGH, finite with LOW < HIGH, e.g. 1,10; "
                             f"got {_show(low)},{_show(high)}")
        raise ValueError(
            f"rating_scale must be finite with low < high, e.g. (1, 10); got ({_show(low)}, "
            f"{_show(high)})"
        )
    return low, high


def _scale(values: np.ndarray, rating_scale: Any, column: Hashable,
           where: _Where) -> tuple[float, float]:
    if rating_scale is not None:
        low, high = _check_rating_scale(rating_scale, where.flags)
        outside = (values < low) | (values > high)
        if outside.any():
            pos = _first(outside)
            scale = where.setting(f"rating_scale ({_show(low)}, {_show(high)})",
                                  f"--rating-scale {_show(low)},{_show(high)}")
            raise where.cell(
                ValueError, column, pos, f"rating {_show(values[pos])} is outside {scale}",
                f"fix the rating or widen {where.setting('rating_scale', '--rating-scale')}",
            )
        return low, high
    stored = values.astype(np.float32)
    low, high = float(stored.min()), float(stored.max())
    if low == high:
        raise where.error(
            ValueError,
            f"column {_show(column)}: every rating is {_show(low)}, so no rating scale can be "
            f"inferred; {where.setting('pass rating_scale=(low, high)', 'give --rating-scale LOW,HIGH')}",
        )
    return low, high


def _deduplicate(
    user: np.ndarray, item: np.ndarray, n_items: int, rating: np.ndarray, timestamp: np.ndarray,
    rule: str, user_ids: np.ndarray, item_ids: np.ndarray, columns: tuple[Hashable, Hashable],
    where: _Where,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows to keep [m] (ascending positions) and their ratings [m] float64."""
    key = user.astype(np.int64) * n_items + item
    repeated = pd.Series(key).duplicated(keep=False).to_numpy()
    if not repeated.any():
        return np.arange(len(key)), rating
    if rule == "error":
        first = _first(repeated)
        rows = np.flatnonzero(key == key[first])
        n_pairs = len(np.unique(key[repeated]))
        last = where.setting("duplicates='last'", "--duplicates last")
        mean = where.setting("duplicates='mean'", "--duplicates mean")
        raise where.error(
            ValueError,
            f"columns ({_show(columns[0])}, {_show(columns[1])}), {where.rows(rows, len(rows))}: "
            f"duplicate (user, item) pair ({_show(user_ids[first])}, {_show(item_ids[first])}) "
            f"({n_pairs} repeated pair(s) in all); {where.setting('pass', 'give')} {last} to keep "
            f"the latest rating of each pair or {mean} to average them, or drop the repeats first",
        )
    # Sorted by pair, then timestamp, then position: each pair's last row is its keeper.
    order = np.lexsort((np.arange(len(key)), timestamp, key))
    sorted_key = key[order]
    last = np.append(sorted_key[1:] != sorted_key[:-1], True)
    keep = order[last]
    kept_rating = rating[keep]
    if rule == "mean":
        starts = np.flatnonzero(np.insert(sorted_key[1:] != sorted_key[:-1], 0, True))
        sums = np.add.reduceat(rating[order], starts)
        kept_rating = sums / np.diff(np.append(starts, len(key)))
    by_position = np.argsort(keep, kind="stable")
    return keep[by_position], kept_rating[by_position]


# --------------------------------------------------------------------------- frames
def _vocabulary(ids: np.ndarray, kind: str) -> tuple[Vocabulary, np.ndarray]:
    """``Vocabulary.from_ids(ids, kind)`` and the int32 index of each id [n].

    The indices come from a hash-based ``pd.factorize`` (a binary search over
    millions of Python strings is slow); ``Vocabulary.index`` is the fallback should
    its order ever differ from the vocabulary's.
    """
    codes, uniques = pd.factorize(ids, sort=True)
    vocabulary = Vocabulary.from_ids(uniques, kind)
    if len(vocabulary) == len(uniques) and np.array_equal(vocabulary.ids, uniques):
        return vocabulary, codes.astype(np.int32)
    return vocabulary, vocabulary.index(ids)  # pragma: no cover - same sort order


def _from_frame(
    df: pd.DataFrame,
    *,
    user: Hashable,
    item: Hashable,
    rating: Hashable,
    timestamp: Hashable | None,
    rating_scale: Any,
    duplicates: str,
    name: str,
    where: _Where,
) -> Ratings:
    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_RULES}, not {duplicates!r}")
    if rating_scale is not None:
        _check_rating_scale(rating_scale, where.flags)
    user_col = _column(df, user, "user id", "user", where)
    item_col = _column(df, item, "item id", "item", where)
    rating_col = _column(df, rating, "rating", "rating", where)
    ts_col = None if timestamp is None else _column(df, timestamp, "timestamp", "timestamp", where)
    if len(df) == 0:
        empty = "the frame has no rows" if where.source is None else "the file has no rating rows"
        raise where.error(ValueError, f"no ratings: {empty}")
    user_ids = _ids(user_col, user, "user", where)
    item_ids = _ids(item_col, item, "item", where)
    values = _ratings(rating_col, rating, where)
    ts = np.zeros(len(df), np.int64) if ts_col is None else _timestamps(ts_col, timestamp, where)
    scale = _scale(values, rating_scale, rating, where)

    users, user_index = _vocabulary(user_ids, "user")
    items, item_index = _vocabulary(item_ids, "item")
    keep, kept_values = _deduplicate(user_index, item_index, len(items), values, ts, duplicates,
                                     user_ids, item_ids, (user, item), where)
    return Ratings(
        user_index[keep],
        item_index[keep],
        kept_values.astype(np.float32),
        ts[keep],
        users,
        items,
        rating_scale=scale,
        name=name,
    )


def ratings_from_pandas(
    df: pd.DataFrame,
    *,
    user: Hashable = "user",
    item: Hashable = "item",
    rating: Hashable = "rating",
    timestamp: Hashable | None = None,
    rating_scale: tuple[float, float] | None = None,
    duplicates: str = "error",
    name: str = "ratings",
) -> Ratings:
    """Validated :class:`Ratings` from a DataFrame with one rating per row.

    Parameters
    ----------
    df : pd.DataFrame, n rows
        Other columns are ignored.
    user, item : column labels
        Raw ids: integers (any integer dtype; kept as int64) or strings (kept as Python
        ``str``). Missing ids, float ids, mixed ints and strings, booleans and strings
        containing NUL are refused.
    rating : column label
        Finite real numbers (stored float32).
    timestamp : column label, optional
        Integers (Unix seconds), whole-number floats, or datetimes (``datetime64``,
        timezone-aware ones too; naive ones are taken as UTC), converted to int64
        Unix seconds (sub-seconds floored). Without it every timestamp is 0.
    rating_scale : (low, high), optional
        Finite ``low < high``; every rating must lie in ``[low, high]``. Default:
        the (min, max) of the frame's ratings (before duplicates are merged); a frame
        with one distinct rating needs it given.
    duplicates : {"error", "last", "mean"}
        Repeated (user, item) pairs: ``"error"`` refuses them, naming the first
        repeated pair and its rows; ``"last"`` keeps each pair's row with the latest
        timestamp, ties (and frames without timestamps) going to the row further
        down; ``"mean"`` keeps that same row (so the latest timestamp) with the mean
        of the pair's ratings. Kept rows stay in frame order.
    name : str

    Returns
    -------
    Ratings
        ``user``/``item`` int32 [m] indices into vocabularies built by
        :meth:`Vocabulary.from_ids` (sorted raw ids), ``rating`` float32 [m],
        ``timestamp`` int64 [m]; m = n unless duplicates were merged.

    Raises
    ------
    TypeError
        ``df`` is not a DataFrame, or a column has the wrong type of values (float,
        boolean or mixed ids; non-numeric ratings; timestamps that are neither
        integers nor datetimes).
    ValueError
        A missing column (the message lists the available ones), an empty frame,
        a missing id, a NaN or infinite rating, a rating outside ``rating_scale``, an
        invalid ``rating_scale``, a single distinct rating without ``rating_scale``,
        a NUL in a string id, a duplicate pair under ``duplicates="error"``. Every
        message is one line: ``column 'rating', row 7: infinite rating (inf); drop or
        fix that rating``, the row being the DataFrame's index label.

    Example
    -------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"u": [1, 1, 2], "i": ["a", "a", "b"], "r": [2.0, 4.0, 5.0],
    ...                    "t": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-01"])})
    >>> r = ratings_from_pandas(df, user="u", item="i", rating="r", timestamp="t",
    ...                         duplicates="mean")
    >>> r.to_frame()[["user_id", "item_id", "rating", "timestamp"]].values.tolist()
    [[1, 'a', 3.0, 1704153600], [2, 'b', 5.0, 1704067200]]
    >>> r.rating_scale
    (2.0, 5.0)
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"ratings_from_pandas takes a pandas DataFrame, not {type(df).__name__}")
    return _from_frame(df, user=user, item=item, rating=rating, timestamp=timestamp,
                       rating_scale=rating_scale, duplicates=duplicates, name=name,
                       where=_Where(df.index))


# --------------------------------------------------------------------------- files
def _parse_columns(columns: Sequence[str] | str, flags: bool) -> tuple[str, str, str, str | None]:
    names = columns.split(",") if isinstance(columns, str) else list(columns)
    names = [n.strip() if isinstance(n, str) else n for n in names]
    if len(names) not in (3, 4) or any(not isinstance(n, str) or not n for n in names):
        if flags:
            raise ValueError("--columns must name the file's user, item, rating and optionally "
                             f"timestamp columns, e.g. userId,movieId,rating,timestamp; got {columns!r}")
        raise ValueError(
            "columns must name the file's user, item, rating and optionally timestamp columns, "
            f"e.g. ('user', 'item', 'rating') or 'userId,movieId,rating,timestamp'; got {columns!r}"
        )
    return names[0], names[1], names[2], names[3] if len(names) == 4 else None


def _file_name(path: Path) -> str:
    """The file's stem, compression suffixes removed: ``ratings.csv.gz`` -> ``ratings``."""
    name = path.name
    suffix = Path(name).suffix.lower()
    if suffix in _COMPRESSION or suffix in (".zip", ".zst"):
        name = name[: -len(suffix)]
    return Path(name).stem


def _sniff(path: Path) -> str:
    """The separator of a CSV file from its header line: ``::``, tab, comma or semicolon."""
    opener = _COMPRESSION.get(path.suffix.lower(), open)
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
            header = fh.readline(1 << 20)
    except OSError as e:
        raise MalformedFileError(f"{path}: cannot be read ({_one_line(e)})") from None
    if "::" in header:
        return "::"
    counts = {sep: header.count(sep) for sep in ("\t", ",", ";")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _file_hint(flags: bool, csv: bool) -> str:
    """How to name a file's columns (``csv``: its first line is their header)."""
    how = "--columns user,item,rating[,timestamp]" if flags else \
        "columns=('user', 'item', 'rating'[, 'timestamp'])"
    header = "the first line must be a header naming the columns; " if csv else ""
    return f"{header}name the file's user, item, rating (and timestamp) columns with {how}"


def _integer_ids(series: pd.Series) -> pd.Series:
    """A CSV id column read as text, as int64 when every cell is a canonical integer
    (``"7"``, ``"-3"``; not ``"007"`` or ``"+7"``, which stay distinct strings)."""
    if series.isna().any():
        return series
    text = series.astype(object).astype(str)
    canonical = text.str.fullmatch(r"-?(?:0|[1-9][0-9]{0,17})")  # 18 digits always fit int64
    if canonical.all():
        return text.astype(np.int64)
    return series


def _first_undecodable_line(path: Path) -> str:
    """Slow diagnosis after a failed parse: "file: line N is not valid UTF-8 text"."""
    opener = _COMPRESSION.get(path.suffix.lower(), open)
    with opener(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"{path}: line {number} is not valid UTF-8 text ({e.reason} at column {e.start + 1})"
    return f"{path}: not valid UTF-8 text"


def _csv_dates(text: pd.Series, column: str, where: _Where) -> pd.Series:
    """A CSV timestamp column that pandas left as text: ISO 8601 dates (UTC unless they
    say otherwise), or an error at the first cell that is not one."""
    present = text.notna().to_numpy()
    integer = text.astype(object).astype(str).str.fullmatch(r"\s*-?[0-9]+\s*").to_numpy() & present
    parsed = pd.to_datetime(text.where(~integer), format="ISO8601", utc=True, errors="coerce")
    bad = present & ~integer & parsed.isna().to_numpy()
    if bad.any():
        pos = _first(bad)
        raise where.cell(
            ValueError, column, pos,
            f"timestamp {_show(text.iloc[pos])} is neither an integer (Unix seconds) nor an "
            "ISO 8601 date", "fix or remove it",
        )
    if integer.any():
        pos = _first(integer)
        if not (present & ~integer).any():  # all integers, yet left as text: too large
            pos = _first(np.array([v is not None and abs(int(v)) > _INT64_MAX
                                   for v in text.astype(object).where(present, None)]))
            raise where.cell(ValueError, column, pos,
                             f"timestamp {_show(text.iloc[pos])} does not fit int64", "fix it")
        date = _first(present & ~integer)
        raise where.cell(
            ValueError, column, pos,
            f"timestamp {_show(text.iloc[pos])} is an integer but {where.row(date)} holds a date",
            "use one kind for the whole column",
        )
    return parsed


def _read_csv(path: Path, names: tuple, sep: str | None, flags: bool) -> tuple[pd.DataFrame, _Where]:
    sep = sep or _sniff(path)
    user, item, _, timestamp = names
    wanted = [c for c in names if c is not None]
    engine = "c" if len(sep) == 1 else "python"
    try:
        header = pd.read_csv(path, sep=sep, nrows=0, engine=engine, encoding="utf-8",
                             skipinitialspace=True).columns
    except pd.errors.EmptyDataError:
        raise MalformedFileError(f"{path}: the file is empty; it needs a header row naming "
                                 "the columns, then one rating per line") from None
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise MalformedFileError(f"{path}: cannot be read as CSV ({_one_line(e)})") from None
    hint = _file_hint(flags, csv=True)
    where = _Where(pd.RangeIndex(0), source=path, line_offset=2, hint=hint, flags=flags)
    for column, role in zip(names, _ROLES):
        if column is not None:
            _column(header, column, role, "columns", where)
    # Ids: only empty cells are missing (an item may be called "NA"); other columns: the
    # usual spellings. Every column is read (no usecols) with index_col=False, so a line
    # with too many fields is an error, not silently cut short or made an index.
    na_values = {c: _NA_STRINGS for c in header}
    na_values.update({user: [""], item: [""]})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path, sep=sep, engine=engine, encoding="utf-8", skipinitialspace=True,
                index_col=False, on_bad_lines="error", dtype={user: str, item: str},
                keep_default_na=False, na_values=na_values,
            )
    except UnicodeDecodeError:
        raise MalformedFileError(_first_undecodable_line(path)) from None
    except pd.errors.ParserWarning:  # only the first data line is checked this way
        raise MalformedFileError(f"{path}: line 2 has more fields than the header "
                                 f"(line 1); is {sep!r} the separator?") from None
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise MalformedFileError(f"{path}: cannot be read as CSV ({_one_line(e)})") from None
    frame = frame[wanted]
    frame[user] = _integer_ids(frame[user])
    frame[item] = _integer_ids(frame[item])
    where = _Where(frame.index, source=path, line_offset=2, hint=hint, flags=flags)
    if timestamp is not None and pd.api.types.is_string_dtype(frame[timestamp].dtype):
        frame[timestamp] = _csv_dates(frame[timestamp], timestamp, where)
    return frame, where


def _read_parquet(path: Path, names: tuple, flags: bool) -> tuple[pd.DataFrame, _Where]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise ValueError(f"{path}: reading Parquet files needs pyarrow (pip install pyarrow)") from None
    try:
        parquet = pq.ParquetFile(path)
        available = parquet.schema_arrow.names
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... when damaged
        raise MalformedFileError(
            f"{path}: not a readable Parquet file ({_one_line(e)}); is it complete?"
        ) from None
    hint = _file_hint(flags, csv=False)
    where = _Where(pd.RangeIndex(0), source=path, hint=hint, flags=flags)
    for column, role in zip(names, _ROLES):
        if column is not None:
            _column(pd.Index(available), column, role, "columns", where)
    try:
        frame = parquet.read(columns=[c for c in names if c is not None]).to_pandas()
    except Exception as e:  # noqa: BLE001 - as above
        raise MalformedFileError(
            f"{path}: not a readable Parquet file ({_one_line(e)}); is it complete?"
        ) from None
    return frame, _Where(frame.index, source=path, hint=hint, flags=flags)


def read_ratings(
    path: str | os.PathLike,
    *,
    columns: Sequence[str] | str = ("user", "item", "rating"),
    rating_scale: tuple[float, float] | None = None,
    duplicates: str = "error",
    sep: str | None = None,
    flags: bool = False,
) -> Ratings:
    """Validated :class:`Ratings` from a CSV or Parquet file of one rating per row.

    Parameters
    ----------
    path : path
        ``*.parquet`` / ``*.pq``: Parquet (read with pyarrow). Anything else: CSV
        (``.gz``, ``.bz2``, ``.xz`` compressed too), UTF-8, whose first line is a
        header naming the columns.
    columns : tuple of 3 or 4 str, or str
        The file's user, item, rating and optional timestamp columns, in that order;
        also as a comma-separated string ``"user,item,rating[,timestamp]"``.
    rating_scale, duplicates
        As in :func:`ratings_from_pandas`.
    sep : str, optional
        The CSV separator; default: sniffed from the header line (``::``, tab,
        comma or semicolon, in that order of precedence when several appear).
    flags : bool
        Errors advise the command line's flags (``--columns``, ``--duplicates``,
        ``--rating-scale``) instead of this function's keywords (``train --data``).

    Returns
    -------
    Ratings
        Named after the file's stem. CSV ids that are all canonical integers
        (``7``, ``-3``) become int64; otherwise the ids stay strings (so ``007``
        and ``7`` remain different). CSV timestamps are integers or ISO 8601 dates.

    Raises
    ------
    ValueError
        A missing file; every problem with the file's content is a
        :class:`MalformedFileError` (a ValueError), one line naming the file and, for
        CSV, the line (the header is line 1): ``ratings.csv: column 'rating', line 5:
        infinite rating (inf); drop or fix that rating``; for Parquet the 0-based row.
        A damaged Parquet file, a missing column (the message lists the file's
        columns), bad cells as in :func:`ratings_from_pandas` (whose TypeErrors are
        MalformedFileErrors here).
    """
    names = _parse_columns(columns, flags)
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a ratings file")
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        frame, where = _read_parquet(path, names, flags)
    else:
        frame, where = _read_csv(path, names, sep, flags)
    user, item, rating, timestamp = names
    return _from_frame(frame, user=user, item=item, rating=rating, timestamp=timestamp,
                       rating_scale=rating_scale, duplicates=duplicates, name=_file_name(path),
                       where=where)
