"""Vocabulary and Ratings: id round trips, CSR views, statistics, binary labels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recjax.data import Ratings, UnknownIdError, Vocabulary

# ----------------------------------------------------------------------------- Vocabulary

int_ids = st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=60)
str_ids = st.lists(
    st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=8),
    min_size=1, max_size=60,
)


def test_vocabulary_rejects_nul_in_string_ids():
    with pytest.raises(ValueError, match="NUL"):
        Vocabulary.from_ids(["a", "a\x00"], "item")


@settings(max_examples=60, deadline=None)
@given(st.one_of(int_ids, str_ids))
def test_vocabulary_round_trip(raw):
    vocab = Vocabulary.from_ids(raw, "item")
    unique = sorted(set(raw))
    assert len(vocab) == len(unique)
    assert vocab.ids.tolist() == unique  # sorted, unique
    idx = vocab.index(raw)
    assert idx.dtype == np.int32 and idx.shape == (len(raw),)
    assert vocab.raw(idx).tolist() == list(raw)  # raw -> index -> raw
    assert vocab.index(vocab.raw(np.arange(len(vocab)))).tolist() == list(range(len(vocab)))
    assert all(r in vocab for r in raw)
    assert vocab.contains(raw).all()


@settings(max_examples=40, deadline=None)
@given(int_ids, st.integers(-(2**41), 2**41))
def test_vocabulary_unknown_id_is_named(raw, probe):
    vocab = Vocabulary.from_ids(raw, "user")
    if probe in set(raw):
        assert vocab.raw(vocab.index([probe]))[0] == probe
        return
    assert probe not in vocab
    with pytest.raises(UnknownIdError) as info:
        vocab.index([raw[0], probe])
    message = str(info.value)
    assert str(probe) in message and "user" in message
    assert isinstance(info.value, KeyError)  # callers may catch KeyError
    assert not message.startswith("'")  # shown plainly, not KeyError-quoted


def test_vocabulary_examples():
    vocab = Vocabulary.from_ids([30, 10, 20, 10], "user")
    assert vocab.ids.tolist() == [10, 20, 30]
    assert vocab.index([20, 10, 30, 20]).tolist() == [1, 0, 2, 1]
    assert vocab.index(30) == 2  # scalars work
    assert vocab.raw([2, 0]).tolist() == [30, 10]
    assert vocab.index([10.0, 30.0]).tolist() == [0, 2]  # integral floats match
    assert vocab.contains([10, 11, 30]).tolist() == [True, False, True]
    assert "x" not in vocab and 10 in vocab and 10.5 not in vocab
    with pytest.raises(IndexError):
        vocab.raw([3])
    with pytest.raises(IndexError):
        vocab.raw([-1])


def test_vocabulary_unknown_ids_listed():
    vocab = Vocabulary.from_ids([1, 2, 3], "item")
    message = r"unknown item id\(s\): 7, 9 \(2 unknown; the dataset has 3 items\)"
    with pytest.raises(UnknownIdError, match=message):
        vocab.index([1, 9, 7, 9])
    # a non-integral float must not be truncated onto an existing id
    with pytest.raises(UnknownIdError, match="1.5"):
        vocab.index([1.5])
    # ids of an incompatible type
    with pytest.raises(UnknownIdError, match="cannot match"):
        vocab.index(["abc"])
    words = Vocabulary.from_ids(["b", "a"], "item")
    with pytest.raises(UnknownIdError, match="zz"):
        words.index(["a", "zz"])
    empty = Vocabulary.from_ids(np.array([], np.int64), "user")
    assert len(empty) == 0 and 1 not in empty
    with pytest.raises(UnknownIdError, match="1"):
        empty.index([1])


# ----------------------------------------------------------------------------- resolve

def _rank_or_none(vocab_ids: list, probe) -> int | None:
    """The row of a query id, computed from the ids themselves: its rank among the sorted
    ids if it is one of them *and of their type* (ints for ints, str for str, no bools)."""
    same_type = (isinstance(probe, str) if isinstance(vocab_ids[0], str)
                 else isinstance(probe, int) and not isinstance(probe, bool))
    return sorted(vocab_ids).index(probe) if same_type and probe in vocab_ids else None


@settings(max_examples=60, deadline=None)
@given(st.one_of(
    st.tuples(st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=30, unique=True),
              st.lists(st.one_of(st.integers(-(2**70), 2**70), st.booleans(), st.text(max_size=3),
                                 st.floats(allow_nan=False)), max_size=8)),
    st.tuples(st.lists(st.text(max_size=3), min_size=1, max_size=30, unique=True),
              st.lists(st.one_of(st.text(max_size=3), st.integers(-5, 5), st.booleans()), max_size=8)),
))
def test_resolve_is_the_rank_or_the_first_unknown_named(case):
    """``resolve`` of mixed probes (known ids, absent ids, ids of the other type, bools,
    floats, ints beyond int64) equals the sorted rank of each, or fails at the first
    probe that is none, naming the field and that position."""
    ids, raw = case
    probes = [ids[k % len(ids)] if k % 3 == 0 else p for k, p in enumerate(raw)]  # some known
    vocab = Vocabulary.from_ids(ids, "user")
    rows = [_rank_or_none(ids, p) for p in probes]
    if None not in rows:
        got = vocab.resolve(probes, "users")
        assert got.dtype == np.int64 and got.tolist() == rows
        return
    first = rows.index(None)
    with pytest.raises(UnknownIdError) as info:
        vocab.resolve(probes, "users")
    err = info.value
    assert (err.field, err.position, err.where) == ("users", first, f"users[{first}]")
    assert str(err).startswith(f"users[{first}]: unknown user id ")
    assert isinstance(err, ValueError)


def test_resolve_type_rules():
    ints = Vocabulary.from_ids([1, 10, 7_000_000, 10**12], "user")
    words = Vocabulary.from_ids(["1", "10", "u3"], "item")
    cases = [  # (vocabulary, query, field, text, expected rows or the error's message)
        (ints, [10**12, 1], "users", False, [3, 0]),
        (ints, np.array([10, 1], np.uint64), "users", False, [1, 0]),
        (ints, 7_000_000, "users", False, 2),
        (ints, ["10", "-3"], "--user", True, "--user[1]: unknown user id -3 (the run has 4 users)"),
        (ints, ["10", 1], "--user", True, [1, 0]),
        (ints, ["10"], "users", False,
         "users[0]: unknown user id '10' (this run's user ids are integers)"),
        (ints, [1, True], "users", False,
         "users[1]: unknown user id True (this run's user ids are integers)"),
        (ints, np.array([True]), "users", False,
         "users[0]: unknown user id True (this run's user ids are integers)"),
        (ints, [1.0], "users", False, "users[0]: unknown user id 1.0 (this run's user ids are integers)"),
        (ints, [1, 2**64 + 1], "users", False,
         "users[1]: unknown user id 18446744073709551617 (the run has 4 users)"),
        (ints, np.array([2**64 - 1], np.uint64), "users", False,
         "users[0]: unknown user id 18446744073709551615 (the run has 4 users)"),
        (ints, ["1x"], "--user", True, "--user[0]: unknown user id '1x' (this run's user ids are integers)"),
        (ints, 11, "users", False, "users: unknown user id 11 (the run has 4 users)"),
        (words, ["u3", "1"], "items", True, [2, 0]),
        (words, np.array(["10", "u3"]), "items", False, [1, 2]),
        (words, ["u3", 1], "items", False, "items[1]: unknown item id 1 (this run's item ids are strings)"),
        (words, 10, "items", False, "items: unknown item id 10 (this run's item ids are strings)"),
        (words, np.array([1, 10]), "new_user_items", False,
         "new_user_items[0]: unknown item id 1 (this run's item ids are strings)"),
    ]
    for vocab, query, field, text, expected in cases:
        if isinstance(expected, str):
            with pytest.raises(UnknownIdError) as info:
                vocab.resolve(query, field, text=text)
            assert str(info.value) == expected, (query, str(info.value))
        else:
            assert vocab.resolve(query, field, text=text).tolist() == expected, query
    assert ints.resolve([[1, 10], [10**12, 1]], "users").tolist() == [[0, 1], [3, 0]]  # shape kept
    assert ints.resolve([], "users").shape == (0,)


def test_dataset_module_examples_run():
    import doctest

    import recjax.data.dataset as module

    assert doctest.testmod(module).failed == 0


# ----------------------------------------------------------------------------- Ratings

@pytest.fixture
def tiny() -> Ratings:
    """4 ratings; user vocabulary holds an extra user (40) with no rating."""
    users = Vocabulary.from_ids([10, 20, 30, 40], "user")
    return Ratings.from_raw(
        user_ids=[10, 10, 20, 30],
        item_ids=["a", "b", "a", "c"],
        ratings=[4.0, 3.0, 5.0, 1.0],
        timestamps=[100, 200, 300, 400],
        users=users,
        name="tiny",
    )


def test_from_raw_indices_and_dtypes(tiny):
    assert (tiny.n_users, tiny.n_items, len(tiny)) == (4, 3, 4)
    assert tiny.user.tolist() == [0, 0, 1, 2]
    assert tiny.item.tolist() == [0, 1, 0, 2]
    assert tiny.user.dtype == np.int32 and tiny.item.dtype == np.int32
    assert tiny.rating.dtype == np.float32 and tiny.timestamp.dtype == np.int64
    assert tiny.items.ids.tolist() == ["a", "b", "c"]
    no_ts = Ratings.from_raw([1, 2], [1, 1], [3.0, 4.0])
    assert no_ts.timestamp.tolist() == [0, 0]
    with pytest.raises(UnknownIdError, match="99"):
        Ratings.from_raw([99], ["a"], [3.0], users=tiny.users, items=tiny.items)


def test_ratings_rejects_inconsistent_columns(tiny):
    with pytest.raises(ValueError, match="rating"):
        Ratings(tiny.user, tiny.item, tiny.rating[:2], tiny.timestamp, tiny.users, tiny.items)
    with pytest.raises(ValueError, match="user vocabulary"):
        Ratings(np.array([0, 4], np.int32), np.array([0, 0], np.int32), np.ones(2, np.float32),
                np.zeros(2, np.int64), tiny.users, tiny.items)
    with pytest.raises(ValueError, match="item vocabulary"):
        Ratings(np.array([0, 0], np.int32), np.array([0, -1], np.int32), np.ones(2, np.float32),
                np.zeros(2, np.int64), tiny.users, tiny.items)


def test_csr_view(tiny):
    mat = tiny.csr()
    assert mat.shape == (4, 3)
    assert mat.has_sorted_indices and mat.dtype == np.float32
    np.testing.assert_array_equal(
        mat.toarray(),
        [[4, 3, 0], [5, 0, 0], [0, 0, 1], [0, 0, 0]],
    )
    pattern = tiny.csr(values=None)
    np.testing.assert_array_equal(pattern.toarray(), [[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]])
    assert mat.indptr.tolist() == [0, 2, 3, 4, 4]


def test_csr_of_ml100k(ml100k):
    mat = ml100k.csr()
    assert mat.shape == (943, 1682) and mat.nnz == 100_000
    assert mat.sum() == pytest.approx(float(ml100k.rating.sum()))
    # user 1 (index 0) rated Toy Story (item 1, index 0) with 5 stars in u.data
    assert mat[0, 0] == 5.0


def test_stats_by_hand(tiny):
    s = tiny.stats()
    assert s["ratings"] == 4
    assert s["users"] == 3  # user 40 has no rating
    assert s["items"] == 3
    assert s["rating_mean"] == pytest.approx(3.25)
    assert s["rating_median"] == pytest.approx(3.5)
    assert s["rating_variance"] == pytest.approx(2.1875)  # population variance
    assert s["density"] == pytest.approx(4 / 12)  # over the whole vocabulary
    for who in ("user", "item"):
        spread = [s[f"ratings_per_{who}_{k}"] for k in ("min", "median", "max")]
        assert spread == [1, 1.0, 2]


def test_stats_of_ml100k(ml100k):
    s = ml100k.stats()
    assert (s["ratings"], s["users"], s["items"]) == (100_000, 943, 1682)
    # histogram 1:6110 2:11370 3:27145 4:34174 5:21201 (ml-100k MANIFEST)
    mean = (6110 + 2 * 11370 + 3 * 27145 + 4 * 34174 + 5 * 21201) / 100_000
    assert s["rating_mean"] == pytest.approx(mean)
    assert s["rating_median"] == 4.0
    assert s["density"] == pytest.approx(100_000 / (943 * 1682))
    assert s["ratings_per_user_min"] == 20  # every ml-100k user rated at least 20 movies


def test_counts_subset_and_frame(tiny):
    per_user, per_item = tiny.counts()
    assert per_user.tolist() == [2, 1, 1, 0] and per_item.tolist() == [2, 1, 1]
    sub = tiny.subset(np.array([False, True, True, False]))
    assert len(sub) == 2 and sub.users is tiny.users and sub.items is tiny.items
    assert sub.rating.tolist() == [3.0, 5.0] and sub.timestamp.tolist() == [200, 300]
    frame = tiny.to_frame()
    assert frame["user_id"].tolist() == [10, 10, 20, 30]
    assert frame["item_id"].tolist() == ["a", "b", "a", "c"]
    assert tiny.item_titles([2, 0]) == ["c", "a"]  # no metadata: raw ids as strings


def test_binary_labels(tiny):
    labels = tiny.binary_labels()
    assert labels.dtype == np.int32
    assert labels.tolist() == [1, 0, 1, 0]  # rating > 3: 4 yes, 3 no (strict), 5 yes, 1 no
    assert tiny.binary_labels(threshold=4.0).tolist() == [0, 0, 1, 0]


def test_binary_labels_ml100k(ml100k):
    # ratings 4 and 5 are positives: 34174 + 21201
    assert int(ml100k.binary_labels().sum()) == 55_375
