"""MovieLens loaders: ml-100k, ml-1m, ml-latest-small and the ml-20m/ml-25m CSV layout.

Every loader returns a :class:`~recjax.data.Ratings` whose vocabularies hold the
users and movies that have at least one rating (movies listed in the metadata but
never rated are left out, so every index has data). Parsing is vectorised pandas;
a malformed row raises :class:`MalformedFileError` naming the file and line.

Duplicate (user, movie) pairs: the rating with the latest timestamp is kept (the
last one in the file among equal timestamps), and a warning gives the count;
``duplicates="error"`` raises instead.

Example
-------
>>> from recjax.data import load_movielens
>>> ml = load_movielens("ml-100k")                    # doctest: +SKIP
>>> len(ml), ml.n_users, ml.n_items                   # doctest: +SKIP
(100000, 943, 1682)
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from recjax.data.dataset import Ratings, Vocabulary, factorize
from recjax.data.download import resolve, spec

__all__ = [
    "load_movielens",
    "read_split",
    "genre_matrix",
    "MalformedFileError",
]

# (min, max) rating of each release; ml-latest* use half stars from 0.5.
_RATING_SCALES = {
    "ml-100k": (1.0, 5.0),
    "ml-1m": (1.0, 5.0),
    "ml-latest-small": (0.5, 5.0),
    "ml-20m": (0.5, 5.0),
    "ml-25m": (0.5, 5.0),
}

_RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
_YEAR = re.compile(r"\((\d{4})\)\s*$")


class MalformedFileError(ValueError):
    """A data file with a row that cannot be parsed; the message names file and line."""


# --------------------------------------------------------------------------- ratings
def _first_bad_line(
    path: Path, sep: str, n_fields: int, skip: int, scale: tuple[float, float], encoding: str
) -> str:
    """Slow diagnosis, run only after the fast parse failed: "file:line: reason"."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number <= skip:
                continue
            where = f"{path}:{number}"
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError:
                return f"{where}: not valid {encoding} text"
            line = line.rstrip("\r\n")
            if not line.strip():  # blank lines are skipped by the fast parser too
                continue
            fields = line.split(sep)
            if len(fields) != n_fields:
                return f"{where}: expected {n_fields} fields separated by {sep!r}, found {len(fields)}"
            user, item, rating = fields[0], fields[1], fields[2]
            for label, value in (("user id", user), ("item id", item), ("timestamp", fields[3])):
                text = value.strip()
                if not text.lstrip("-").isdigit() or not -(2**63) <= int(text) < 2**63:
                    return f"{where}: {label} {value!r} is not an integer"
            try:
                r = float(rating)
            except ValueError:
                return f"{where}: rating {rating!r} is not a number"
            if not scale[0] <= r <= scale[1]:  # also catches NaN
                return f"{where}: rating {rating!r} is outside the scale {scale[0]:g}..{scale[1]:g}"
    return f"{path}: could not be parsed"


# What pd.read_csv raises for a ratings file it cannot parse with the requested dtypes.
_PARSE_ERRORS = (ValueError, OverflowError, pd.errors.ParserError, pd.errors.ParserWarning,
                 UnicodeDecodeError)


def _parse_ratings(path: Path, sep: str, skip: int, encoding: str, id_dtype: type) -> pd.DataFrame:
    """The raw ``pd.read_csv`` of a ratings file: user and item ids as ``id_dtype``, rating
    float64, timestamp int64; ``"::"`` files keep their empty in-between columns 1, 3, 5."""
    # "::" is read with the fast C parser as ":" with empty columns in between.
    c_sep, columns = (":", [0, 2, 4, 6]) if sep == "::" else (sep, [0, 1, 2, 3])
    # No usecols and index_col=False: a row with too many fields is then an error
    # (ParserError, or a ParserWarning about lost data on the first row), not
    # silently cut short or turned into an index.
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        return pd.read_csv(
            path,
            sep=c_sep,
            header=None,
            skiprows=skip,
            names=list(range(7 if sep == "::" else 4)),
            index_col=False,
            dtype={columns[0]: id_dtype, columns[1]: id_dtype, columns[2]: np.float64,
                   columns[3]: np.int64},
            encoding=encoding,
            engine="c",
            on_bad_lines="error",
        )


def _read_ratings(
    path: str | os.PathLike,
    *,
    sep: str,
    header: bool,
    scale: tuple[float, float] = (1.0, 5.0),
    encoding: str = "utf-8",
    compact_ids: bool = False,
) -> pd.DataFrame:
    """Read a ratings file (user, item, rating, timestamp) into a DataFrame.

    Parameters
    ----------
    path : path
        File with four columns: user id, item id, rating, timestamp.
    sep : str
        Field separator: ``"\\t"`` (ml-100k), ``"::"`` (ml-1m), ``","`` (CSV releases).
    header : bool
        Whether the first line is a header.
    scale : (float, float)
        Allowed rating range; a rating outside it (or NaN) is an error.
    compact_ids : bool
        Read user and item ids as int32 when every id fits (half the memory, and a
        faster parse), as int64 otherwise.

    Returns
    -------
    pd.DataFrame
        Columns ``user_id`` int64 (or int32), ``item_id`` int64 (or int32),
        ``rating`` float32, ``timestamp`` int64, in file order.

    Raises
    ------
    MalformedFileError
        Naming the file and the first bad line, or the file when it holds no rating.
    """
    path = Path(path)
    skip = 1 if header else 0

    def diagnose() -> MalformedFileError:
        return MalformedFileError(_first_bad_line(path, sep, 4, skip, scale, encoding))

    for id_dtype in (np.int32, np.int64) if compact_ids else (np.int64,):
        try:
            frame = _parse_ratings(path, sep, skip, encoding, id_dtype)
            break
        except _PARSE_ERRORS:
            continue  # an id beyond int32, or a malformed row: the int64 parse tells them apart
    else:
        raise diagnose()
    if sep == "::" and frame[[1, 3, 5]].notna().to_numpy().any():
        raise diagnose()  # a single ':' where "::" belongs
    if sep == "::":
        frame = frame.drop(columns=[1, 3, 5])
    if len(frame) == 0:  # an empty file, blank lines or a header alone
        raise MalformedFileError(f"{path}: holds no ratings (an empty file or a header alone); "
                                 f"check the download or the file named")
    frame.columns = _RATING_COLUMNS
    rating = frame["rating"].to_numpy()
    bad = ~((rating >= scale[0]) & (rating <= scale[1]))
    if bad.any():
        raise diagnose()
    frame["rating"] = rating.astype(np.float32)
    return frame


def _line_numbers(path: Path, rows: list[int], skip: int) -> list[int]:
    """File line numbers (1-based) of data rows (0-based, blank lines not counted)."""
    wanted = sorted(set(rows))
    found: dict[int, int] = {}
    row = -1
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number <= skip or not raw.strip():
                continue
            row += 1
            if row == wanted[len(found)]:
                found[row] = number
                if len(found) == len(wanted):
                    break
    return [found[r] for r in rows]


def _drop_duplicates(frame: pd.DataFrame, source: Path, rule: str, skip: int = 0) -> pd.DataFrame:
    """Apply the duplicate (user, item) rule: keep the latest, or raise. The returned
    frame keeps the original row labels (positions in the file)."""
    repeat = frame.duplicated(["user_id", "item_id"]).to_numpy()
    if not repeat.any():
        return frame
    n = int(repeat.sum())
    if rule == "error":
        second = int(np.flatnonzero(repeat)[0])
        user, item = frame["user_id"].iat[second], frame["item_id"].iat[second]
        same = (frame["user_id"].to_numpy() == user) & (frame["item_id"].to_numpy() == item)
        first = int(np.flatnonzero(same)[0])
        line_first, line_second = _line_numbers(source, [first, second], skip)
        raise MalformedFileError(
            f"{source}:{line_second}: duplicate rating of (user {user}, item {item}), first at "
            f"line {line_first}; {n} duplicate (user, item) rating(s) in all "
            f"(duplicates='last' keeps the latest of each)"
        )
    warnings.warn(f"{source}: {n} duplicate (user, item) rating(s); kept the latest of each", stacklevel=3)
    order = np.lexsort((np.arange(len(frame)), frame["timestamp"].to_numpy()))
    latest = frame.iloc[order].drop_duplicates(["user_id", "item_id"], keep="last")
    return latest.sort_index()


# --------------------------------------------------------------------------- metadata
def _year_from_title(titles: pd.Series) -> np.ndarray:
    return titles.str.extract(_YEAR, expand=False).astype(float).to_numpy()


def _split_genres(genres: pd.Series) -> list[tuple[str, ...]]:
    return [
        tuple(g for g in s.split("|") if g and g != "(no genres listed)") if isinstance(s, str) else ()
        for s in genres
    ]


def _read_100k_items(folder: Path) -> pd.DataFrame:
    genre_names = [
        line.split("|")[0]
        for line in (folder / "u.genre").read_text(encoding="latin-1").splitlines()
        if line.strip()
    ]
    columns = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *genre_names]
    items = pd.read_csv(
        folder / "u.item", sep="|", header=None, names=columns, encoding="latin-1",
        dtype={"item_id": np.int64, "title": str, "release_date": str}, keep_default_na=False,
    )
    flags = items[genre_names].to_numpy(dtype=bool)
    names = np.array(genre_names, dtype=object)
    dates = pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce")
    return pd.DataFrame(
        {
            "item_id": items["item_id"],
            "title": items["title"],
            "genres": [tuple(names[row]) for row in flags],
            "year": dates.dt.year.astype(float).to_numpy(),
            "release_date": items["release_date"],
            "imdb_url": items["imdb_url"],
        }
    )


def _read_100k_users(folder: Path) -> pd.DataFrame:
    return pd.read_csv(
        folder / "u.user", sep="|", header=None, names=["user_id", "age", "sex", "occupation", "zip"],
        encoding="latin-1", dtype={"zip": str},
    )


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    """A small ``::``-separated latin-1 file (titles may contain ':')."""
    numbered = [
        (number, line.split("::"))
        for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1)
        if line
    ]
    bad = [number for number, row in numbered if len(row) != len(names)]
    if bad:
        raise MalformedFileError(f"{path}:{bad[0]}: expected {len(names)} '::'-separated fields")
    return pd.DataFrame([row for _, row in numbered], columns=names)


def _read_1m_items(folder: Path) -> pd.DataFrame:
    movies = _read_dat(folder / "movies.dat", ["item_id", "title", "genres"])
    return _csv_style_items(movies)


def _read_1m_users(folder: Path) -> pd.DataFrame:
    users = _read_dat(folder / "users.dat", ["user_id", "sex", "age", "occupation", "zip"])
    return users.astype({"user_id": np.int64, "age": np.int64, "occupation": np.int64})


def _csv_style_items(movies: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": movies["item_id"].astype(np.int64),
            "title": movies["title"].astype(str),
            "genres": _split_genres(movies["genres"]),
            "year": _year_from_title(movies["title"].astype(str)),
        }
    )


def _read_csv_items(folder: Path) -> pd.DataFrame:
    movies = pd.read_csv(folder / "movies.csv", dtype={"title": str, "genres": str})
    return _csv_style_items(movies.rename(columns={"movieId": "item_id"}))


def _read_metadata(folder: Path, reader: Callable[[Path], pd.DataFrame] | None) -> pd.DataFrame | None:
    """Run a metadata reader; parse failures become :class:`MalformedFileError` naming the file."""
    if reader is None:
        return None
    try:
        return reader(folder)
    except MalformedFileError:
        raise
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as err:
        names = {
            _read_100k_items: "u.item", _read_100k_users: "u.user", _read_1m_items: "movies.dat",
            _read_1m_users: "users.dat", _read_csv_items: "movies.csv",
        }
        path = folder / names.get(reader, "")
        line = re.search(r"\bline (\d+)", str(err))
        where = f"{path}:{line.group(1)}" if line else str(path)
        raise MalformedFileError(f"{where}: {err}") from err


# --------------------------------------------------------------------------- assembly
_Format = tuple[str, str, bool, str, Callable[[Path], pd.DataFrame] | None,
                Callable[[Path], pd.DataFrame] | None]
# name -> (ratings file, separator, header?, encoding, item reader, user reader)
_FORMATS: dict[str, _Format] = {
    "ml-100k": ("u.data", "\t", False, "latin-1", _read_100k_items, _read_100k_users),
    "ml-1m": ("ratings.dat", "::", False, "latin-1", _read_1m_items, _read_1m_users),
    "ml-latest-small": ("ratings.csv", ",", True, "utf-8", _read_csv_items, None),
    "ml-20m": ("ratings.csv", ",", True, "utf-8", _read_csv_items, None),
    "ml-25m": ("ratings.csv", ",", True, "utf-8", _read_csv_items, None),
}


def _strictly_increasing(user: np.ndarray, item: np.ndarray) -> bool:
    """Whether the (user, item) pairs are sorted with none repeated (int32 [n] each)."""
    later_user = user[1:] > user[:-1]
    later_item = (user[1:] == user[:-1]) & (item[1:] > item[:-1])
    return bool(np.all(later_user | later_item))


def _align(info: pd.DataFrame | None, key: str, vocab: Vocabulary) -> pd.DataFrame | None:
    """Metadata rows reordered to vocabulary index order (missing ids get NaN / empty)."""
    if info is None:
        return None
    aligned = info.drop_duplicates(key).set_index(key).reindex(vocab.ids)
    if "genres" in aligned:
        aligned["genres"] = [g if isinstance(g, tuple) else () for g in aligned["genres"]]
    if "title" in aligned:
        aligned["title"] = aligned["title"].fillna("")
    return aligned.rename_axis(key).reset_index()


def load_movielens(
    name: str = "ml-100k",
    data_dir: str | os.PathLike | None = None,
    *,
    allow_download: bool = True,
    duplicates: str = "last",
) -> Ratings:
    """Load a MovieLens release as :class:`~recjax.data.Ratings`.

    Parameters
    ----------
    name : {"ml-100k", "ml-1m", "ml-latest-small", "ml-20m", "ml-25m"}
    data_dir : path, optional
        A folder holding the files (or a ``name/`` sub-folder); see
        :func:`recjax.data.download.resolve` for the search order otherwise.
    allow_download : bool
        Download from GroupLens into the cache when no local copy is found.
    duplicates : {"last", "error"}
        What to do with repeated (user, movie) pairs.

    Returns
    -------
    Ratings
        With ``item_info`` (title, genres, year) and, for ml-100k/ml-1m, ``user_info``.
    """
    entry = spec(name)
    ratings_file, sep, header, encoding, read_items, read_users = _FORMATS[entry.name]
    folder = resolve(name, data_dir, allow_download=allow_download)
    path = folder / ratings_file
    if duplicates not in ("last", "error"):
        raise ValueError(f"duplicates must be 'last' or 'error', not {duplicates!r}")
    frame = _read_ratings(path, sep=sep, header=header, scale=_RATING_SCALES[name],
                          encoding=encoding, compact_ids=True)
    user_ids, user = factorize(frame["user_id"].to_numpy())
    item_ids, item = factorize(frame["item_id"].to_numpy())
    if not _strictly_increasing(user, item):  # MovieLens files sorted by (user, item) skip this
        frame = _drop_duplicates(frame, path, duplicates, skip=int(header))
        user, item = user[frame.index.to_numpy()], item[frame.index.to_numpy()]
    # Raw ids are int64 however compactly they were read.
    users = Vocabulary(user_ids.astype(np.int64), "user")
    items = Vocabulary(item_ids.astype(np.int64), "item")
    return Ratings(
        user,
        item,
        frame["rating"].to_numpy(),
        frame["timestamp"].to_numpy(),
        users=users,
        items=items,
        item_info=_align(_read_metadata(folder, read_items), "item_id", items),
        user_info=_align(_read_metadata(folder, read_users), "user_id", users),
        rating_scale=_RATING_SCALES[name],
        name=name,
    )


def read_split(dataset: Ratings, path: str | os.PathLike) -> Ratings:
    """Ratings from a split file (e.g. ml-100k's ``ua.test``) indexed in ``dataset``'s vocabularies.

    Raises
    ------
    MalformedFileError
        On a malformed row, or a user or movie the dataset does not know.
    """
    path = Path(path)
    frame = _read_ratings(path, sep="\t", header=False, scale=dataset.rating_scale,
                          encoding="latin-1")
    known = dataset.users.contains(frame["user_id"]) & dataset.items.contains(frame["item_id"])
    if not known.all():
        line = int(np.flatnonzero(~known)[0]) + 1
        raise MalformedFileError(f"{path}:{line}: user or item id not in dataset {dataset.name!r}")
    return Ratings.from_raw(
        frame["user_id"], frame["item_id"], frame["rating"], frame["timestamp"],
        users=dataset.users, items=dataset.items, item_info=dataset.item_info,
        user_info=dataset.user_info, rating_scale=dataset.rating_scale,
        name=f"{dataset.name}/{path.name}",
    )


def genre_matrix(item_info: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Multi-hot genres: (sorted genre names, bool array [n_items, n_genres])."""
    names = sorted({g for genres in item_info["genres"] for g in genres})
    column = {g: j for j, g in enumerate(names)}
    flags = np.zeros((len(item_info), len(names)), dtype=bool)
    for i, genres in enumerate(item_info["genres"]):
        flags[i, [column[g] for g in genres]] = True
    return names, flags
