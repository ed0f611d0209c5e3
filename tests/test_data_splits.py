"""Train/test splits: ml-100k's published ones and the generated ones."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recjax.data import (
    PREDEFINED_SPLITS,
    SPLIT_METHODS,
    Ratings,
    Splits,
    Vocabulary,
    carve_validation,
    holdout_split,
    kfold,
    per_user_split,
    predefined_split,
    split_ratings,
    synthetic_ratings,
    temporal_split,
)
from recjax.data.splits import check_shared_vocabulary


def pairs(data: Ratings) -> set[tuple[int, int]]:
    return set(zip(data.user.tolist(), data.item.tolist()))


def keys(data: Ratings) -> np.ndarray:
    return data.user.astype(np.int64) * data.n_items + data.item


def table(data: Ratings) -> np.ndarray:
    """[n, 3] (pair key, rating, timestamp), sorted by pair key."""
    k = keys(data)
    order = np.argsort(k, kind="stable")
    return np.column_stack([k[order], data.rating[order], data.timestamp[order]])


def assert_partition(split, data: Ratings) -> None:
    """Train and test are disjoint and together give back ``data``'s rows exactly."""
    assert len(split.train) + len(split.test) == len(data)
    assert np.intersect1d(keys(split.train), keys(split.test)).size == 0
    union = Ratings.from_raw(
        np.concatenate([split.train.user, split.test.user]),
        np.concatenate([split.train.item, split.test.item]),
        np.concatenate([split.train.rating, split.test.rating]),
        np.concatenate([split.train.timestamp, split.test.timestamp]),
    )
    whole = Ratings.from_raw(data.user, data.item, data.rating, data.timestamp)
    np.testing.assert_array_equal(table(union), table(whole))
    assert split.train.users is data.users and split.test.items is data.items


# ----------------------------------------------------------------------------- ml-100k splits


@pytest.fixture(scope="module")
def published(ml100k, movielens_dir):
    return {
        name: predefined_split(name, movielens_dir, dataset=ml100k) for name in PREDEFINED_SPLITS
    }


@pytest.mark.parametrize("name", ["ua", "ub"])
def test_ua_ub(published, ml100k, name):
    split = published[name]
    assert (len(split.train), len(split.test)) == (90_570, 9_430)
    per_user = np.bincount(split.test.user, minlength=943)
    assert (per_user == 10).all()  # exactly 10 test ratings for each of the 943 users
    assert_partition(split, ml100k)
    assert split.test.name == f"ml-100k/{name}.test"


COLD = {"ua": 2, "ub": 7, "u1": 32, "u2": 36, "u3": 36, "u4": 27, "u5": 36}


@pytest.mark.parametrize("name", PREDEFINED_SPLITS)
def test_published_cold_counts(published, name):
    split = published[name]
    train_users, train_items = set(split.train.user.tolist()), set(split.train.item.tolist())
    test_pairs = zip(split.test.user.tolist(), split.test.item.tolist())
    cold = sum(u not in train_users or i not in train_items for u, i in test_pairs)
    assert split.n_cold == cold == COLD[name]  # cold movies only: every user has >= 20 ratings
    assert len(split.test) == {"ua": 9430, "ub": 9430}.get(name, 20_000)  # cold="keep" keeps them


def test_ua_and_ub_differ(published):
    assert pairs(published["ua"].test) != pairs(published["ub"].test)


def test_u1_to_u5(published, ml100k):
    all_pairs = pairs(ml100k)
    seen: set[tuple[int, int]] = set()
    for name in ("u1", "u2", "u3", "u4", "u5"):
        split = published[name]
        assert (len(split.train), len(split.test)) == (80_000, 20_000)
        assert_partition(split, ml100k)
        test = pairs(split.test)
        assert not test & seen  # the five test sets are mutually disjoint
        seen |= test
    assert seen == all_pairs  # ... and together they are u.data


def test_predefined_split_loads_dataset_itself(movielens_dir):
    split = predefined_split("u1", movielens_dir / "ml-100k", allow_download=False)
    assert (len(split.train), len(split.test)) == (80_000, 20_000)
    assert split.train.n_users == 943 and split.train.n_items == 1682


def test_predefined_split_cold_policy(published, ml100k, movielens_dir):
    # u1.test holds movies that never appear in u1.base (ml-100k has movies rated once)
    n_cold = published["u1"].n_cold
    assert n_cold > 0
    dropped = predefined_split("u1", movielens_dir, dataset=ml100k, cold="drop")
    assert dropped.n_cold == n_cold and len(dropped.test) == 20_000 - n_cold
    with pytest.raises(ValueError, match=rf"{n_cold} test rating\(s\)"):
        predefined_split("u1", movielens_dir, dataset=ml100k, cold="error")


def test_unknown_predefined_split():
    with pytest.raises(ValueError, match="ua, ub, u1, u2, u3, u4, u5"):
        predefined_split("u6")


# ----------------------------------------------------------------------------- generated splits


@pytest.fixture(scope="module")
def data():
    ratings, _ = synthetic_ratings(120, 80, 2_400, rank=3, seed=3)
    return ratings


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_holdout(data, fraction):
    split = holdout_split(data, fraction, seed=1)
    assert len(split.test) == round(fraction * len(data))
    assert_partition(split, data)


def test_per_user(data):
    split = per_user_split(data, 0.2, seed=1)
    assert_partition(split, data)
    n = np.bincount(data.user, minlength=data.n_users)
    n_test = np.bincount(split.test.user, minlength=data.n_users)
    expected = np.where(n > 1, np.minimum(np.rint(0.2 * n), n - 1), 0)
    np.testing.assert_array_equal(n_test, expected)


def test_per_user_keeps_a_train_rating_for_every_user():
    # user 1 has 2 ratings, user 2 has 3, user 3 has 1; 0.9 * 2 rounds to 2, capped at 1
    data = Ratings.from_raw([1, 1, 2, 2, 2, 3], [1, 2, 1, 2, 3, 1], [4, 3, 2, 5, 1, 3])
    split = per_user_split(data, 0.9, seed=0)
    assert np.bincount(split.test.user, minlength=3).tolist() == [1, 2, 0]
    assert np.bincount(split.train.user, minlength=3).tolist() == [1, 1, 1]
    assert split.n_cold == 0 or set(split.test.user.tolist()) <= set(split.train.user.tolist())


def test_temporal(data):
    split = temporal_split(data, k=2)
    assert_partition(split, data)
    n = np.bincount(data.user, minlength=data.n_users)
    n_test = np.bincount(split.test.user, minlength=data.n_users)
    np.testing.assert_array_equal(n_test, np.where(n > 2, 2, 0))
    # each test rating is later than every train rating of its user
    last_train = np.full(data.n_users, -1, np.int64)
    np.maximum.at(last_train, split.train.user, split.train.timestamp)
    assert (split.test.timestamp >= last_train[split.test.user]).all()


def test_temporal_ties_and_small_users():
    # user 1: four ratings, two sharing the latest time; user 2: a single rating
    data = Ratings.from_raw([1, 1, 1, 1, 2], [10, 11, 12, 13, 10], [1, 2, 3, 4, 5], [5, 9, 9, 1, 3])
    split = temporal_split(data, k=1)
    assert split.test.items.raw(split.test.item).tolist() == [12]  # later in the data wins the tie
    assert len(split.train) == 4  # user 2 keeps its only rating in train
    split2 = temporal_split(data, k=2)
    assert sorted(split2.test.items.raw(split2.test.item).tolist()) == [11, 12]
    with pytest.raises(ValueError, match="k must be"):
        temporal_split(data, k=0)


def test_kfold(data):
    folds = list(kfold(data, 4, seed=2))
    assert len(folds) == 4
    tests = [pairs(f.test) for f in folds]
    for f, split in enumerate(folds):
        assert_partition(split, data)
        assert len(split.test) == len(data) // 4  # 2400 / 4
        for g in range(f):
            assert not tests[f] & tests[g]
    assert set().union(*tests) == pairs(data)


def test_fraction_and_fold_validation(data):
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="test_fraction"):
            holdout_split(data, bad)
        with pytest.raises(ValueError, match="test_fraction"):
            per_user_split(data, bad)
    with pytest.raises(ValueError, match="n_splits"):
        next(kfold(data, 1))
    with pytest.raises(ValueError, match="cold must be one of"):
        holdout_split(data, 0.1, cold="ignore")


def test_seeds(data):
    for make in (holdout_split, per_user_split):
        a, b, c = make(data, 0.2, seed=5), make(data, 0.2, seed=5), make(data, 0.2, seed=6)
        np.testing.assert_array_equal(keys(a.test), keys(b.test))
        np.testing.assert_array_equal(keys(a.train), keys(b.train))
        assert set(keys(a.test).tolist()) != set(keys(c.test).tolist())
    f5 = [keys(s.test) for s in kfold(data, 3, seed=5)]
    f5b = [keys(s.test) for s in kfold(data, 3, seed=5)]
    f6 = [keys(s.test) for s in kfold(data, 3, seed=6)]
    assert all(np.array_equal(x, y) for x, y in zip(f5, f5b))
    assert not all(np.array_equal(x, y) for x, y in zip(f5, f6))


def test_cold_policy():
    # users 1-3 rate items 10 and 11; items 20 and 21 are rated once each
    data = Ratings.from_raw(
        [1, 1, 2, 2, 3, 3, 1, 2], [10, 11, 10, 11, 10, 11, 20, 21], [3, 4, 5, 1, 2, 3, 4, 5],
    )
    folds = list(kfold(data, 8, seed=0))  # leave one out
    cold = {int(f.test.items.raw(f.test.item)[0]): f.n_cold for f in folds}
    assert sorted(f.n_cold for f in folds) == [0, 0, 0, 0, 0, 0, 1, 1]
    assert cold[20] == cold[21] == 1 and cold[10] == cold[11] == 0
    cold_fold = [i for i, f in enumerate(folds) if f.n_cold][0]
    dropped = list(kfold(data, 8, seed=0, cold="drop"))[cold_fold]
    assert dropped.n_cold == 1 and len(dropped.test) == 0 and len(dropped.train) == 7
    message = r"1 test rating\(s\) have a user or item with no train rating"
    with pytest.raises(ValueError, match=message):
        list(kfold(data, 8, seed=0, cold="error"))
    # "drop" keeps every warm test rating
    held = holdout_split(data, 0.5, seed=0)
    held_drop = holdout_split(data, 0.5, seed=0, cold="drop")
    assert held_drop.n_cold == held.n_cold
    assert len(held_drop.test) == len(held.test) - held.n_cold
    assert len(held_drop.train) == len(held.train)
    seen_u, seen_i = set(held_drop.train.user.tolist()), set(held_drop.train.item.tolist())
    test_pairs = zip(held_drop.test.user.tolist(), held_drop.test.item.tolist())
    assert all(u in seen_u and i in seen_i for u, i in test_pairs)


def test_cold_counts_on_synthetic(data):
    split = holdout_split(data, 0.3, seed=0)
    seen_u = np.zeros(data.n_users, bool)
    seen_i = np.zeros(data.n_items, bool)
    seen_u[split.train.user] = True
    seen_i[split.train.item] = True
    expected = int((~(seen_u[split.test.user] & seen_i[split.test.item])).sum())
    assert split.n_cold == expected
    assert holdout_split(data, 0.3, seed=0, cold="drop").n_cold == expected


# ----------------------------------------------------------------------------- properties


@st.composite
def small_ratings(draw):
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(2, 12))
    cells = draw(st.sets(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1)),
                         min_size=2, max_size=n_users * n_items))
    cells = sorted(cells)
    times = draw(st.lists(st.integers(0, 5), min_size=len(cells), max_size=len(cells)))
    return Ratings.from_raw([u for u, _ in cells], [i for _, i in cells],
                            [1.0 + (u + i) % 5 for u, i in cells], times)


@settings(max_examples=40, deadline=None)
@given(small_ratings(), st.floats(0.05, 0.95), st.integers(0, 2**16))
def test_split_properties(data, fraction, seed):
    holdout = holdout_split(data, fraction, seed=seed)
    assert_partition(holdout, data)
    assert len(holdout.test) == round(fraction * len(data))

    per_user = per_user_split(data, fraction, seed=seed)
    assert_partition(per_user, data)
    n = np.bincount(data.user, minlength=data.n_users)
    n_test = np.bincount(per_user.test.user, minlength=data.n_users)
    expected = np.where(n > 1, np.minimum(np.rint(fraction * n), n - 1), 0)
    np.testing.assert_array_equal(n_test, expected)
    # every user with a rating keeps one in train, so no test rating has a cold user
    train_users = set(per_user.train.user.tolist())
    assert set(np.flatnonzero(n).tolist()) <= train_users

    temporal = temporal_split(data, k=1)
    assert_partition(temporal, data)
    for u, t in zip(temporal.test.user, temporal.test.timestamp):
        assert t >= data.timestamp[data.user == u].max()

    k = min(3, len(data))
    folds = list(kfold(data, k, seed=seed))
    sizes = sorted(len(f.test) for f in folds)
    assert sum(sizes) == len(data) and sizes[-1] - sizes[0] <= 1
    tests = [set(keys(f.test).tolist()) for f in folds]
    assert sum(len(t) for t in tests) == len(set().union(*tests)) == len(data)
    for f in folds:
        assert_partition(f, data)
    dropped = holdout_split(data, fraction, seed=seed, cold="drop")
    assert dropped.n_cold == holdout.n_cold
    assert len(dropped.test) == len(holdout.test) - holdout.n_cold


# ----------------------------------------------------------------------------- train/val/test


def assert_three_way(parts: Splits, data: Ratings) -> None:
    """Disjoint parts, together ``data``'s rows, every part on ``data``'s vocabularies."""
    union = Ratings.from_raw(
        np.concatenate([p.user for p in parts]), np.concatenate([p.item for p in parts]),
        np.concatenate([p.rating for p in parts]), np.concatenate([p.timestamp for p in parts]),
    )
    whole = Ratings.from_raw(data.user, data.item, data.rating, data.timestamp)
    np.testing.assert_array_equal(table(union), table(whole))
    assert sum(len(p) for p in parts) == len(data)
    for part in parts:
        assert part.users is data.users and part.items is data.items
    parts.check()


@pytest.mark.parametrize("method", SPLIT_METHODS)
def test_split_ratings_partitions(data, method):
    parts = split_ratings(data, method, test_fraction=0.2, val_fraction=0.1, seed=4, fold=2,
                          folds=4)
    assert isinstance(parts, Splits) and parts._fields == ("train", "val", "test")
    assert_three_way(parts, data)
    n_test = {"random": round(0.2 * len(data)), "kfold": len(data) // 4}.get(method)
    if n_test is not None:
        assert len(parts.test) == n_test
    train_size = len(data) - len(parts.test)
    assert len(parts.val) == round(0.1 * train_size)


@pytest.mark.parametrize("method", SPLIT_METHODS)
def test_split_ratings_is_determined_by_seed(data, method):
    a, b = (split_ratings(data, method, seed=9, fold=1) for _ in range(2))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(keys(x), keys(y))
    c = split_ratings(data, method, seed=10, fold=1)
    assert not np.array_equal(keys(a.val), keys(c.val))  # the carve follows the seed too
    if method != "temporal":  # the latest ratings do not depend on the seed
        assert set(keys(a.test).tolist()) != set(keys(c.test).tolist())
    else:
        np.testing.assert_array_equal(keys(a.test), keys(c.test))


def test_split_ratings_reuses_the_split_functions(data):
    random = split_ratings(data, "random", test_fraction=0.2, val_fraction=0.1, seed=3)
    held = holdout_split(data, 0.2, seed=3)
    np.testing.assert_array_equal(keys(random.test), keys(held.test))
    # validation: holdout_split(train, val_fraction, seed=seed + 1), as training runs carve it
    carved = holdout_split(held.train, 0.1, seed=4)
    np.testing.assert_array_equal(keys(random.val), keys(carved.test))
    np.testing.assert_array_equal(keys(random.train), keys(carved.train))
    fit, val = carve_validation(held.train, 0.1, seed=3)
    np.testing.assert_array_equal(keys(val), keys(carved.test))
    np.testing.assert_array_equal(keys(fit), keys(carved.train))

    per_user = split_ratings(data, "per_user", test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(keys(per_user.test), keys(per_user_split(data, 0.2, seed=3).test))
    fold = split_ratings(data, "kfold", fold=2, folds=3, seed=3)
    np.testing.assert_array_equal(keys(fold.test), keys(list(kfold(data, 3, seed=3))[2].test))


def test_split_ratings_temporal(data):
    parts = split_ratings(data, "temporal", val_fraction=0.1, seed=0)
    np.testing.assert_array_equal(keys(parts.test), keys(temporal_split(data, k=1).test))
    # each test rating is no earlier than any training (train + val) rating of its user
    last = np.full(data.n_users, np.iinfo(np.int64).min)
    for part in (parts.train, parts.val):
        np.maximum.at(last, part.user, part.timestamp)
    assert (parts.test.timestamp >= last[parts.test.user]).all()
    n = np.bincount(data.user, minlength=data.n_users)
    assert (np.bincount(parts.test.user, minlength=data.n_users) == (n > 1)).all()


def test_split_ratings_folds_cover_the_data(data):
    tests = [keys(split_ratings(data, "kfold", fold=f, folds=3, seed=1).test) for f in range(3)]
    assert sorted(np.concatenate(tests).tolist()) == sorted(keys(data).tolist())


def test_split_ratings_validation(data):
    no_val = split_ratings(data, val_fraction=0.0)
    assert len(no_val.val) == 0 and no_val.val.users is data.users
    assert len(no_val.train) + len(no_val.test) == len(data)
    with pytest.raises(ValueError, match="unknown split method 'loo'; use one of random, per_user"):
        split_ratings(data, "loo")
    with pytest.raises(ValueError, match=r"fold must be in \[0, folds\) = \[0, 5\), got 5"):
        split_ratings(data, "kfold", fold=5)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        split_ratings(data, val_fraction=1.0)
    with pytest.raises(ValueError, match="test_fraction"):
        split_ratings(data, "per_user", test_fraction=0.0)


def test_shared_vocabulary_check(data):
    parts = split_ratings(data, seed=0)
    check_shared_vocabulary(parts)
    check_shared_vocabulary(parts._asdict())
    # equal raw ids in a distinct Vocabulary pass
    copy = dataclasses.replace(parts.test, items=Vocabulary(data.items.ids.copy(), "item"))
    check_shared_vocabulary({"train": parts.train, "test": copy})
    # a part rebuilt from its own raw ids has its own (smaller) vocabulary
    f = parts.test.to_frame()
    own = Ratings.from_raw(f["user_id"], f["item_id"], f["rating"])
    n_own, n_all = own.n_items, data.n_items
    assert n_own < n_all
    message = (f"part 'test' was built with its own item vocabulary ({n_own} items vs {n_all} in "
               f"train); build every part from one Ratings, e.g. with recjax.data.split_ratings")
    own = dataclasses.replace(own, users=data.users, user=parts.test.user)
    with pytest.raises(ValueError, match=re.escape(message)):
        Splits(parts.train, parts.val, own).check()
    # user vocabularies too, same size but different ids
    shifted = Vocabulary(data.users.ids + 1000, "user")
    with pytest.raises(ValueError, match=re.escape(
            f"part 'val' was built with its own user vocabulary ({data.n_users} users vs "
            f"{data.n_users} in train with different ids)")):
        check_shared_vocabulary({"train": parts.train,
                                 "val": dataclasses.replace(parts.val, users=shifted)})
