"""Token sequences for the pair model: MovieLens users and movies, Object2Vec JSON Lines parts.

:func:`movielens_tokens` turns a ratings dataset's users and items into token
sequences (the id, plus side-feature tokens); :func:`read_pair_parts` reads an
Object2Vec train / validation / test set of JSON Lines files, checked against the
vocabulary sizes (:func:`pair_vocab`).

Example
-------
>>> from recjax.data import Ratings
>>> from recjax.data.tokens import movielens_tokens
>>> data = Ratings.from_raw([1, 1, 2], [10, 20, 10], [5.0, 3.0, 4.0])
>>> in0, in1, vocab0, vocab1 = movielens_tokens(data)
>>> in0.tolist(), in1.tolist(), vocab0, vocab1
([[0], [1]], [[0], [1]], 2, 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recjax.data.dataset import Ratings
from recjax.data.jsonlines import PAD, PairData, read_jsonlines
from recjax.data.splits import _validation_order

__all__ = ["movielens_tokens", "read_pair_parts", "pair_vocab", "check_class_labels"]

# ml-1m's age groups, applied to ml-100k's ages too
_AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])


# ----------------------------------------------------------------------------- MovieLens
def _side_tokens(values: list[np.ndarray], sizes: list[int], offset: int, n: int) -> np.ndarray:
    """Columns of category codes (-1 = missing) -> tokens [n, k] offset past ``offset`` and each other."""
    columns = []
    for codes, size in zip(values, sizes):
        columns.append(np.where(codes >= 0, codes + offset, PAD))
        offset += size
    return np.stack(columns, axis=1) if columns else np.zeros((n, 0), np.int64)


def _codes(column: Any) -> tuple[np.ndarray, int]:
    """Category codes (-1 for missing) and the number of categories of a column."""
    import pandas as pd

    cat = pd.Categorical(column)
    return np.asarray(cat.codes, np.int64), len(cat.categories)


def movielens_tokens(data: Ratings, side_features: bool = False) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Token sequences of every user and item of ``data``'s vocabularies.

    Token ``u`` is user index ``u`` and token ``i`` item index ``i``. With
    ``side_features``, in0 adds the user's age group, sex and occupation and
    in1 the movie's genres and release year, each a token after the ids (where
    the dataset has that metadata; missing values are ``PAD``).

    Returns
    -------
    (in0 [n_users, L0], in1 [n_items, L1], vocab0, vocab1)
    """
    users = np.arange(data.n_users, dtype=np.int64)[:, None]
    items = np.arange(data.n_items, dtype=np.int64)[:, None]
    vocab0, vocab1 = data.n_users, data.n_items
    if not side_features:
        return users.astype(np.int32), items.astype(np.int32), vocab0, vocab1
    if data.user_info is not None:
        info = data.user_info
        codes, sizes = [], []
        if "age" in info:
            age = info["age"].to_numpy(dtype=float)
            codes.append(np.where(np.isnan(age), -1, np.digitize(np.nan_to_num(age), _AGE_EDGES)))
            sizes.append(len(_AGE_EDGES) + 1)
        for name in ("sex", "occupation"):
            if name in info:
                c, n = _codes(info[name])
                codes.append(c)
                sizes.append(n)
        users = np.concatenate([users, _side_tokens(codes, sizes, vocab0, data.n_users)], axis=1)
        vocab0 += sum(sizes)
    if data.item_info is not None:
        from recjax.data.movielens import genre_matrix

        info = data.item_info
        parts = [items]
        if "genres" in info:
            names, flags = genre_matrix(info)
            width = max(int(flags.sum(1).max()) if len(names) else 0, 1)
            genre_tokens = np.full((data.n_items, width), PAD, np.int64)
            for i, row in enumerate(flags):
                ids = np.flatnonzero(row)
                genre_tokens[i, : len(ids)] = ids + vocab1
            parts.append(genre_tokens)
            vocab1 += len(names)
        if "year" in info:
            year, n_years = _codes(info["year"])
            parts.append(np.where(year >= 0, year + vocab1, PAD)[:, None])
            vocab1 += n_years
        items = np.concatenate(parts, axis=1)
    return users.astype(np.int32), items.astype(np.int32), vocab0, vocab1


# ----------------------------------------------------------------------------- JSON Lines
def check_class_labels(label: np.ndarray, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless every label is a class 0 or 1."""
    bad = ~np.isin(label, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"{where}: labels must be classes in [0, 2) for the softmax output layer "
                         f"(found {label[bad][0]!r}); num_classes > 2 is not supported yet")


def read_pair_parts(train_path: str, val_path: str = "", test_path: str = "", *, task: str,
                    val_fraction: float, seed: int,
                    vocab_sizes: tuple[int, int] = (0, 0)) -> dict[str, PairData]:
    """``{"train", "val", "test"}`` pairs from Object2Vec JSON Lines files.

    Without ``val_path`` a random ``val_fraction`` of the training file is held out
    (seeded); without ``test_path`` the validation part doubles as test.
    ``vocab_sizes`` are the in0 / in1 token table sizes (0 = the training file's
    largest id + 1).

    Raises
    ------
    ValueError
        Class labels outside ``[0, num_classes)`` for the softmax output layer
        (``task="binary"``), or a token id beyond a vocabulary size.
    """
    train = read_jsonlines(train_path)
    if val_path:
        val = read_jsonlines(val_path)
    else:
        order = _validation_order(len(train), seed)  # carve_validation's draw
        n_val = max(1, int(round(val_fraction * len(train))))
        if n_val >= len(train):
            raise ValueError(f"{train_path}: too few pairs ({len(train)}) to carve a validation part")
        val = PairData(*(a[order[:n_val]] for a in train))
        train = PairData(*(a[order[n_val:]] for a in train))
    test = read_jsonlines(test_path) if test_path else val
    parts = {"train": train, "val": val, "test": test}
    names = {"train": train_path, "val": val_path or train_path,
             "test": test_path or val_path or train_path}
    if task == "binary":
        for name, part in parts.items():
            check_class_labels(part.label, names[name])
    vocab = pair_vocab(train, vocab_sizes)
    for name, part in parts.items():
        for side in (0, 1):
            top = int(getattr(part, f"in{side}").max(initial=-1))
            if top >= vocab[side]:
                given = vocab_sizes[side]
                hint = (f"enc{side}_vocab_size={given}" if given
                        else f"the training data's vocabulary ({vocab[side]} tokens)")
                raise ValueError(f"{names[name]}: in{side} token id {top} is outside {hint}; "
                                 f"set --enc{side}-vocab-size to at least {top + 1}")
    return parts


def pair_vocab(train: PairData, vocab_sizes: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """Vocabulary sizes: the given ones (``enc0_vocab_size``, ``enc1_vocab_size``; 0 =
    unset), or the training data's largest id + 1."""
    sizes = []
    for side in (0, 1):
        top = int(getattr(train, f"in{side}").max(initial=-1))
        given = vocab_sizes[side]
        if given and given <= top:
            raise ValueError(f"enc{side}_vocab_size={given} is smaller than the largest in{side} token id "
                             f"seen ({top}); it must be at least {top + 1}")
        sizes.append(given or top + 1)
    return sizes[0], sizes[1]
