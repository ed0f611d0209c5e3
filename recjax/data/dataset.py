"""The in-memory rating dataset: ratings with contiguous indices and their vocabularies.

Example
-------
>>> import numpy as np
>>> from recjax.data import Ratings
>>> r = Ratings.from_raw(user_ids=[10, 10, 20], item_ids=["a", "b", "a"],
...                      ratings=[4.0, 3.0, 5.0])
>>> r.n_users, r.n_items, r.user.tolist(), r.item.tolist()
(2, 2, [0, 0, 1], [0, 1, 0])
>>> r.users.index([20]).tolist()
[1]
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["Vocabulary", "Ratings", "UnknownIdError"]

_DECIMAL = re.compile(r"-?[0-9]+")  # an integer id written as text (the CLI's)

# Integer ids in [0, _TABLE_SLACK * n + 2**16) are indexed through a lookup table.
_TABLE_SLACK = 4


def _fits_table(values: np.ndarray) -> bool:
    """Whether ``values`` are non-negative integers small enough to index a lookup table."""
    return bool(values.dtype.kind in "iu" and values.size and values.min() >= 0
                and values.max() < _TABLE_SLACK * values.size + 2**16)


def factorize(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and the index of each value among them.

    What ``np.unique(values, return_inverse=True)`` gives, with an int32 inverse.
    Non-negative integers below ``4 * n + 65536`` (MovieLens ids) are marked in a
    lookup table instead of sorted: linear time, and no temporaries of length ``n``.

    Parameters
    ----------
    values : array-like, shape [n]

    Returns
    -------
    uniques : np.ndarray, shape [n_unique], the dtype of ``values``
    inverse : np.ndarray int32, shape [n]
        ``uniques[inverse]`` equals ``values``.

    Example
    -------
    >>> uniques, inverse = factorize(np.array([30, 10, 30, 20]))
    >>> uniques.tolist(), inverse.tolist()
    ([10, 20, 30], [2, 0, 2, 1])
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"factorize takes a 1-d array, got shape {values.shape}")
    if not _fits_table(values):
        uniques, inverse = np.unique(values, return_inverse=True)
        return uniques, inverse.astype(np.int32)
    present = np.zeros(int(values.max()) + 1, bool)
    present[values] = True
    position = np.cumsum(present, dtype=np.int32) - 1
    return np.flatnonzero(present).astype(values.dtype), position[values]


class UnknownIdError(KeyError, ValueError):
    """A raw user or item id that is not in the vocabulary (a ``KeyError`` for lookups,
    a ``ValueError`` like every other bad input of the API).

    Attributes
    ----------
    field : str or None
        The argument or request field that held it (``"users"``, ``"new_user_items"``),
        where known.
    position : int or None
        Its place in that field (in the flattened input); ``None`` for a scalar.
    """

    def __init__(self, message: str, field: str | None = None, position: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.position = position

    @property
    def where(self) -> str | None:
        """``field[position]`` (``"users[3]"``), ``field`` for a scalar, ``None`` if unknown."""
        if self.field is None or self.position is None:
            return self.field
        return f"{self.field}[{self.position}]"

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """A two-way map between raw ids (any hashable dtype) and contiguous indices.

    Attributes
    ----------
    ids : np.ndarray, shape [n]
        ``ids[i]`` is the raw id of index ``i``; sorted ascending, unique.
    kind : str
        What the ids name ("user", "item"), used in error messages.
    """

    ids: np.ndarray
    kind: str = "id"

    @classmethod
    def from_ids(cls, raw_ids: Any, kind: str = "id") -> "Vocabulary":
        """Vocabulary of the unique values in ``raw_ids`` (sorted).

        Raises
        ------
        ValueError
            For string ids containing NUL characters, which NumPy's string arrays
            would silently truncate (merging distinct ids).
        """
        values = np.asarray(raw_ids)
        originals = raw_ids if not isinstance(raw_ids, np.ndarray) else values.ravel()
        if values.dtype.kind in "UO" and any(isinstance(v, str) and "\x00" in v for v in originals):
            raise ValueError(f"{kind} ids must not contain NUL characters")
        return cls(np.unique(values), kind)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, raw_id: Any) -> bool:
        return bool(self.contains(np.asarray([raw_id]))[0])

    def contains(self, raw_ids: Any) -> np.ndarray:
        """Boolean mask, same shape as ``raw_ids``: which raw ids are known."""
        raw = np.asarray(raw_ids)
        if len(self.ids) == 0:
            return np.zeros(raw.shape, dtype=bool)
        pos = np.clip(np.searchsorted(self.ids, raw), 0, len(self.ids) - 1)
        return self.ids[pos] == raw

    def index(self, raw_ids: Any) -> np.ndarray:
        """Indices (int32, same shape as ``raw_ids``) of raw ids.

        Raises
        ------
        UnknownIdError
            If any raw id is not in the vocabulary; the message lists the first few.
        """
        raw = np.asarray(raw_ids)
        given = raw
        exact = np.ones(raw.shape, dtype=bool)
        if raw.dtype.kind != self.ids.dtype.kind and raw.size:
            try:
                raw = raw.astype(self.ids.dtype)
            except (TypeError, ValueError, OverflowError):
                raise UnknownIdError(
                    f"{self.kind} ids of dtype {raw.dtype} cannot match this vocabulary "
                    f"(dtype {self.ids.dtype})"
                ) from None
            if given.dtype.kind in "iufb" and self.ids.dtype.kind in "iufb":
                exact = raw == given  # 1.5 must not silently become id 1
        known = self.contains(raw) & exact
        if not known.all():
            missing = np.unique(given[~known])
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise UnknownIdError(
                f"unknown {self.kind} id(s): {shown} ({len(missing)} unknown; "
                f"the dataset has {len(self)} {self.kind}s)"
            )
        return np.searchsorted(self.ids, raw).astype(np.int32)

    def resolve(self, raw_ids: Any, field: str, *, text: bool = False) -> np.ndarray:
        """Indices of the raw ids a query was given: the one resolver of every query path
        (:class:`recjax.runs.Run`'s methods, the server, Object2Vec requests, the CLI).

        Stricter than :meth:`index` (which builds datasets from columns): an id must be
        of the vocabulary's own type. On integer ids, a string is no id (``"7"`` is not
        ``7``) unless ``text`` (the CLI reads ids as text: ``"7"`` then means 7), and
        neither is a float; on string ids, an integer is no id. Bools are never ids;
        integers outside int64 are unknown.

        Parameters
        ----------
        raw_ids : raw id, or array-like of raw ids (any shape)
        field : str
            The argument or request field that holds them (``"users"``, ``"items"``,
            ``"new_user_items"``, ``"--user"``): named in the error.
        text : bool
            Ids given as text: decimal strings count as integers on integer ids.

        Returns
        -------
        np.ndarray int64, the shape of ``raw_ids``

        Raises
        ------
        UnknownIdError
            For the first id that is not known, with its ``field`` and ``position``,
            e.g. ``users[3]: unknown user id 99999 (the run has 943 users)``.

        Example
        -------
        >>> vocab = Vocabulary.from_ids([10, 20, 30], "user")
        >>> vocab.resolve([30, 10], "users").tolist(), vocab.resolve(["20"], "--user", text=True).tolist()
        ([2, 0], [1])
        >>> vocab.resolve(["20"], "users")
        Traceback (most recent call last):
        ...
        recjax.data.dataset.UnknownIdError: users[0]: unknown user id '20' (this run's user ids are integers)
        """
        values = raw_ids if isinstance(raw_ids, np.ndarray) else np.asarray(raw_ids, dtype=object)
        flat = values.ravel()
        keys, usable, typed = self._typed(flat, text)
        known = usable.copy()
        known[usable] = self.contains(keys[usable])
        if not known.all():
            n = int(np.flatnonzero(~known)[0])
            shown = keys[n] if usable[n] else flat[n]  # "7" read as text shows as 7
            shown = shown.item() if isinstance(shown, np.generic) else shown
            shown = repr(shown) if len(repr(shown)) <= 60 else repr(shown)[:57] + "..."
            reason = (f"the run has {len(self)} {self.kind}s" if typed[n] else
                      f"this run's {self.kind} ids are {'integers' if self._integer else 'strings'}")
            position = n if values.ndim else None
            where = field if position is None else f"{field}[{position}]"
            raise UnknownIdError(f"{where}: unknown {self.kind} id {shown} ({reason})", field, position)
        return np.searchsorted(self.ids, keys).astype(np.int64).reshape(values.shape)

    @property
    def _integer(self) -> bool:
        return self.ids.dtype.kind in "iu"

    def _typed(self, flat: np.ndarray, text: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Of raw ids [n]: keys comparable with ``ids`` [n], which entries can be looked up
        [n] bool, which are of the vocabulary's type [n] bool (an integer outside int64
        is of the type, yet cannot be looked up). Keys of the others are placeholders."""
        n_ids = len(flat)
        if self._integer and flat.dtype.kind in "iu":
            usable = flat <= np.iinfo(np.int64).max if flat.dtype.kind == "u" else np.ones(n_ids, bool)
            return np.where(usable, flat, 0).astype(np.int64), usable, np.ones(n_ids, bool)
        if not self._integer and flat.dtype.kind == "U":
            return flat, np.ones(n_ids, bool), np.ones(n_ids, bool)
        if flat.dtype.kind != "O" and not (flat.dtype.kind == "U" and text):
            return np.zeros(n_ids, self.ids.dtype), np.zeros(n_ids, bool), np.zeros(n_ids, bool)
        keys = np.zeros(n_ids, np.int64 if self._integer else object)
        usable, typed = np.zeros(n_ids, bool), np.zeros(n_ids, bool)
        for n, value in enumerate(flat.tolist()):
            if self._integer:
                if isinstance(value, np.integer) or (text and isinstance(value, str)
                                                     and _DECIMAL.fullmatch(value)):
                    value = int(value)
                typed[n] = isinstance(value, int) and not isinstance(value, bool)  # bools are ints
                usable[n] = typed[n] and -2**63 <= value < 2**63
            else:
                typed[n] = usable[n] = isinstance(value, str)
            if usable[n]:
                keys[n] = value
        return keys, usable, typed

    def raw(self, indices: Any) -> np.ndarray:
        """Raw ids of ``indices``."""
        idx = np.asarray(indices)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.ids)):
            raise IndexError(f"{self.kind} index out of range [0, {len(self.ids)})")
        return self.ids[idx]


@dataclass(frozen=True, eq=False)
class Ratings:
    """Explicit ratings with contiguous indices, vocabularies and side information.

    Attributes
    ----------
    user, item : np.ndarray int32, shape [n]
        Indices into ``users`` / ``items``.
    rating : np.ndarray float32, shape [n]
    timestamp : np.ndarray int64, shape [n]
        Unix seconds (0 where the source has none).
    users, items : Vocabulary
        Shared by every subset and split of one dataset, so indices never shift.
    item_info : pd.DataFrame or None
        One row per item index (``len(items)`` rows): ``title``, ``genres`` (tuple of
        str), ``year`` (float, NaN unknown), and more columns where the dataset has them.
    user_info : pd.DataFrame or None
        One row per user index: e.g. ``age``, ``sex``, ``occupation``, ``zip``.
    rating_scale : (float, float)
        Smallest and largest rating the dataset allows.
    name : str
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    users: Vocabulary
    items: Vocabulary
    item_info: pd.DataFrame | None = None
    user_info: pd.DataFrame | None = None
    rating_scale: tuple[float, float] = (1.0, 5.0)
    name: str = "ratings"

    def __post_init__(self) -> None:
        n = len(self.user)
        for field in ("item", "rating", "timestamp"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"Ratings.{field} has {len(getattr(self, field))} rows, user has {n}")
        if n and (self.user.min() < 0 or self.user.max() >= len(self.users)):
            raise ValueError("Ratings.user holds indices outside the user vocabulary")
        if n and (self.item.min() < 0 or self.item.max() >= len(self.items)):
            raise ValueError("Ratings.item holds indices outside the item vocabulary")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_raw(
        cls,
        user_ids: Any,
        item_ids: Any,
        ratings: Any,
        timestamps: Any | None = None,
        *,
        users: Vocabulary | None = None,
        items: Vocabulary | None = None,
        **kwargs: Any,
    ) -> "Ratings":
        """Ratings from raw-id columns; vocabularies are built unless given."""
        user_ids, item_ids = np.asarray(user_ids), np.asarray(item_ids)
        users = users or Vocabulary.from_ids(user_ids, "user")
        items = items or Vocabulary.from_ids(item_ids, "item")
        n = len(user_ids)
        ts = np.zeros(n, np.int64) if timestamps is None else np.asarray(timestamps, np.int64)
        return cls(
            users.index(user_ids),
            items.index(item_ids),
            np.asarray(ratings, np.float32),
            ts,
            users,
            items,
            **kwargs,
        )

    @classmethod
    def from_pandas(
        cls,
        df: pd.DataFrame,
        *,
        user: Any = "user",
        item: Any = "item",
        rating: Any = "rating",
        timestamp: Any | None = None,
        rating_scale: tuple[float, float] | None = None,
        duplicates: str = "error",
        name: str = "ratings",
    ) -> "Ratings":
        """Validated ratings from a DataFrame; see :func:`recjax.data.ratings_from_pandas`."""
        from recjax.data.frame import ratings_from_pandas

        return ratings_from_pandas(
            df, user=user, item=item, rating=rating, timestamp=timestamp,
            rating_scale=rating_scale, duplicates=duplicates, name=name,
        )

    def subset(self, rows: Any) -> "Ratings":
        """The ratings selected by a boolean mask or an index array; vocabularies kept."""
        return dataclasses.replace(
            self,
            user=self.user[rows],
            item=self.item[rows],
            rating=self.rating[rows],
            timestamp=self.timestamp[rows],
        )

    def concat(self, other: "Ratings") -> "Ratings":
        """These ratings followed by ``other``'s (same vocabularies required)."""
        if other.users is not self.users or other.items is not self.items:
            raise ValueError("concat needs ratings indexed by the same vocabularies (parts of one dataset)")
        return dataclasses.replace(
            self,
            user=np.concatenate([self.user, other.user]),
            item=np.concatenate([self.item, other.item]),
            rating=np.concatenate([self.rating, other.rating]),
            timestamp=np.concatenate([self.timestamp, other.timestamp]),
        )

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def csr(self, values: str | None = "rating") -> sp.csr_matrix:
        """User x item CSR matrix [n_users, n_items], sorted indices.

        ``values="rating"`` stores ratings; ``values=None`` stores 1.0 (the pattern).
        """
        data = self.rating if values == "rating" else np.ones(len(self), np.float32)
        mat = sp.csr_matrix(
            (data, (self.user, self.item)), shape=(self.n_users, self.n_items), dtype=np.float32
        )
        mat.sort_indices()
        return mat

    def to_frame(self) -> pd.DataFrame:
        """The ratings as a DataFrame with raw ids and indices."""
        return pd.DataFrame(
            {
                "user_id": self.users.ids[self.user],
                "item_id": self.items.ids[self.item],
                "user": self.user,
                "item": self.item,
                "rating": self.rating,
                "timestamp": self.timestamp,
            }
        )

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Ratings per user [n_users] and per item [n_items] (int64)."""
        return (
            np.bincount(self.user, minlength=self.n_users),
            np.bincount(self.item, minlength=self.n_items),
        )

    def binary_labels(self, threshold: float = 3.0) -> np.ndarray:
        """The "recommend / don't" labels: ``rating > threshold`` as int32 [n]."""
        return (self.rating > threshold).astype(np.int32)

    def stats(self) -> dict[str, float]:
        """Summary statistics (the Object2Vec notebook's), as a flat dict.

        Per-user and per-item figures count only users/items with at least one rating.
        """
        per_user, per_item = self.counts()
        per_user, per_item = per_user[per_user > 0], per_item[per_item > 0]
        r = self.rating.astype(np.float64)
        stats: dict[str, float] = {
            "ratings": len(self),
            "users": int(len(per_user)),
            "items": int(len(per_item)),
            "rating_mean": float(r.mean()) if len(r) else float("nan"),
            "rating_median": float(np.median(r)) if len(r) else float("nan"),
            "rating_variance": float(r.var()) if len(r) else float("nan"),
            "density": len(self) / max(self.n_users * self.n_items, 1),
        }
        for who, counts in (("user", per_user), ("item", per_item)):
            if len(counts):
                stats[f"ratings_per_{who}_min"] = int(counts.min())
                stats[f"ratings_per_{who}_median"] = float(np.median(counts))
                stats[f"ratings_per_{who}_max"] = int(counts.max())
        return stats

    def item_titles(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """Titles of item indices, or their raw ids as strings without metadata."""
        idx = np.asarray(indices)
        if self.item_info is not None and "title" in self.item_info:
            return self.item_info["title"].to_numpy()[idx].tolist()
        return [str(x) for x in self.items.raw(idx)]

    def __repr__(self) -> str:
        return (
            f"Ratings(name={self.name!r}, ratings={len(self)}, users={self.n_users}, "
            f"items={self.n_items}, scale={self.rating_scale})"
        )
