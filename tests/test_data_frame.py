"""Users' own rating data: DataFrames, CSV and Parquet files in, validated Ratings out."""

from __future__ import annotations

import datetime as dt
import doctest
import gzip
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recjax.data.frame as frame_module
from recjax.data import MalformedFileError, Ratings, ratings_from_pandas, read_ratings


def raises(kind, *fragments):
    """pytest.raises whose message must be one line holding every fragment (literally)."""
    pattern = "".join(f"(?=.*{re.escape(f)})" for f in fragments)
    return pytest.raises(kind, match=pattern)


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def triples(r: Ratings) -> Counter:
    """The (raw user, raw item, rating) multiset of ``r``."""
    f = r.to_frame()
    return Counter(zip(f["user_id"].tolist(), f["item_id"].tolist(), f["rating"].tolist()))


def frame(**columns) -> pd.DataFrame:
    base = {"user": ["ann", "bob", "ann"], "item": ["x", "x", "y"], "rating": [7.0, 10.0, 3.0]}
    base.update(columns)
    return pd.DataFrame(base)


def test_module_examples():
    assert doctest.testmod(frame_module).failed == 0


# ----------------------------------------------------------------------------- round trips


def test_string_ids_round_trip():
    df = pd.DataFrame({
        "who": ["u9", "u1", "u9", "u10"],
        "what": ["b", "a", "a", "b"],
        "stars": [8, 1, 10, 5],
        "when": [40, 10, 30, 20],
    })
    r = ratings_from_pandas(df, user="who", item="what", rating="stars", timestamp="when",
                            rating_scale=(1, 10), name="mine")
    assert r.name == "mine" and r.rating_scale == (1.0, 10.0)
    assert r.users.ids.dtype == object and r.users.ids.tolist() == ["u1", "u10", "u9"]
    assert all(type(v) is str for v in r.users.ids) and all(type(v) is str for v in r.items.ids)
    assert r.rating.dtype == np.float32 and r.timestamp.dtype == np.int64
    assert r.user.dtype == np.int32 and r.item.dtype == np.int32
    back = r.to_frame()
    assert back["user_id"].tolist() == ["u9", "u1", "u9", "u10"]  # frame order kept
    assert back["item_id"].tolist() == ["b", "a", "a", "b"]
    assert back["rating"].tolist() == [8.0, 1.0, 10.0, 5.0]
    assert back["timestamp"].tolist() == [40, 10, 30, 20]


def test_integer_ids_stay_int64():
    df = pd.DataFrame({"user": np.array([3, 1, 2], np.int16), "item": pd.array([7, 7, 9], "Int64"),
                       "rating": np.array([1, 2, 3], np.uint8)})
    r = ratings_from_pandas(df)
    assert r.users.ids.dtype == np.int64 and r.items.ids.dtype == np.int64
    assert r.users.ids.tolist() == [1, 2, 3] and r.items.ids.tolist() == [7, 9]
    assert (r.timestamp == 0).all() and r.timestamp.dtype == np.int64


def test_object_and_categorical_columns():
    df = pd.DataFrame({
        "user": pd.Series([1, 2, 3], dtype=object),  # Python ints in an object column
        "item": pd.Series(["a", "b", "a"], dtype="category"),
        "rating": pd.Series([1, 2.5, 4], dtype=object),
    })
    r = ratings_from_pandas(df)
    assert r.users.ids.dtype == np.int64 and r.items.ids.tolist() == ["a", "b"]
    assert r.rating.tolist() == [1.0, 2.5, 4.0]


def test_classmethod_is_the_function():
    df = frame(t=[5, 6, 7])
    a = Ratings.from_pandas(df, timestamp="t", rating_scale=(1, 10), name="n")
    b = ratings_from_pandas(df, timestamp="t", rating_scale=(1, 10), name="n")
    assert triples(a) == triples(b) and a.name == b.name == "n"
    np.testing.assert_array_equal(a.timestamp, b.timestamp)
    with raises(ValueError, "column 'rating', row 1", "rating 10 is outside rating_scale (1, 9)"):
        Ratings.from_pandas(df, rating_scale=(1, 9))


def test_datetime_timestamps():
    times = pd.to_datetime(["1970-01-01 00:00:01.9", "2024-01-01", "1969-12-31 23:59:59.5"],
                           format="ISO8601")
    r = ratings_from_pandas(frame(t=times), timestamp="t")
    assert r.timestamp.tolist() == [1, 1704067200, -1]  # floored to whole seconds
    paris = pd.Series(pd.to_datetime(["2024-01-01 01:00"] * 3)).dt.tz_localize("Europe/Paris")
    assert ratings_from_pandas(frame(t=paris), timestamp="t").timestamp.tolist() == [1704067200] * 3
    objects = pd.Series([dt.datetime(2024, 1, 1), dt.datetime(1970, 1, 2), dt.date(1970, 1, 1)],
                        dtype=object)
    assert ratings_from_pandas(frame(t=objects), timestamp="t").timestamp.tolist() == [
        1704067200, 86400, 0]
    whole_floats = ratings_from_pandas(frame(t=[1.0, 2.0, 3e9]), timestamp="t")
    assert whole_floats.timestamp.tolist() == [1, 2, 3_000_000_000]


def test_scales():
    assert ratings_from_pandas(frame()).rating_scale == (3.0, 10.0)  # inferred: min, max
    assert ratings_from_pandas(frame(), rating_scale=(0, 10)).rating_scale == (0.0, 10.0)
    assert ratings_from_pandas(frame(), rating_scale=(3, 10)).rating_scale == (3.0, 10.0)  # inclusive
    # inferred from the float32 values stored, so every stored rating lies within it
    r = ratings_from_pandas(frame(rating=[0.1, 0.7, 0.3]))
    assert r.rating_scale == (float(np.float32(0.1)), float(np.float32(0.7)))
    assert r.rating.min() >= r.rating_scale[0] and r.rating.max() <= r.rating_scale[1]


# ----------------------------------------------------------------------------- duplicates

DUPLICATED = pd.DataFrame({
    "user": ["u1", "u1", "u1", "u2", "u1", "u2"],
    "item": ["i1", "i2", "i1", "i1", "i1", "i1"],
    "rating": [2.0, 4.0, 4.0, 5.0, 3.0, 1.0],
    "t": [10, 5, 30, 7, 30, 3],
})


def rows(r: Ratings) -> list[tuple]:
    f = r.to_frame()
    return list(zip(f["user_id"], f["item_id"], f["rating"], f["timestamp"]))


def test_duplicates_error_names_pair_and_rows():
    with raises(ValueError, "columns ('user', 'item'), rows 0, 2, 4", "pair ('u1', 'i1')",
                "2 repeated pair(s)", "duplicates='last'", "duplicates='mean'") as e:
        ratings_from_pandas(DUPLICATED, timestamp="t")
    one_line(e)
    labelled = DUPLICATED.set_axis(["a", "b", "c", "d", "e", "f"])
    with raises(ValueError, "rows 'a', 'c', 'e'"):
        ratings_from_pandas(labelled, timestamp="t")


def test_duplicates_last():
    # (u1, i1): rows 0 (t10), 2 (t30), 4 (t30): the tie at t30 goes to the later row 4.
    # (u2, i1): rows 3 (t7), 5 (t3): row 3. (u1, i2): row 1 alone. Kept rows 1, 3, 4.
    r = ratings_from_pandas(DUPLICATED, timestamp="t", duplicates="last")
    assert rows(r) == [("u1", "i2", 4.0, 5), ("u2", "i1", 5.0, 7), ("u1", "i1", 3.0, 30)]
    assert r.rating_scale == (1.0, 5.0)  # inferred from every rating, before merging
    # without timestamps, the last row of each pair: rows 1, 4, 5
    r = ratings_from_pandas(DUPLICATED, duplicates="last")
    assert rows(r) == [("u1", "i2", 4.0, 0), ("u1", "i1", 3.0, 0), ("u2", "i1", 1.0, 0)]


def test_duplicates_mean():
    # the rows "last" keeps, with the pair's mean rating: (2+4+3)/3 = 3, (5+1)/2 = 3
    r = ratings_from_pandas(DUPLICATED, timestamp="t", duplicates="mean")
    assert rows(r) == [("u1", "i2", 4.0, 5), ("u2", "i1", 3.0, 7), ("u1", "i1", 3.0, 30)]
    odd = pd.DataFrame({"user": [1, 1, 2], "item": [1, 1, 1], "rating": [1.0, 2.0, 5.0]})
    assert rows(ratings_from_pandas(odd, duplicates="mean")) == [(1, 1, 1.5, 0), (2, 1, 5.0, 0)]


def test_no_duplicates_keeps_every_row():
    df = frame(t=[3, 2, 1])
    for rule in ("error", "last", "mean"):
        assert rows(ratings_from_pandas(df, timestamp="t", duplicates=rule)) == [
            ("ann", "x", 7.0, 3), ("bob", "x", 10.0, 2), ("ann", "y", 3.0, 1)]
    with raises(ValueError, "duplicates must be one of", "'first'"):
        ratings_from_pandas(df, duplicates="first")


# ----------------------------------------------------------------------------- validation


def test_not_a_dataframe():
    with raises(TypeError, "takes a pandas DataFrame, not dict"):
        ratings_from_pandas({"user": [1], "item": [1], "rating": [1]})


def test_missing_column_lists_available():
    with raises(ValueError, "no column 'rating'", "available columns: 'user', 'item', 'score'",
                "rating=...") as e:
        ratings_from_pandas(frame().rename(columns={"rating": "score"}))
    one_line(e)
    with raises(ValueError, "no column 'ts'", "timestamp=..."):
        ratings_from_pandas(frame(), timestamp="ts")
    doubled = pd.concat([frame(), frame()[["user"]]], axis=1)
    with raises(ValueError, "column 'user' appears 2 times"):
        ratings_from_pandas(doubled)


def test_empty_frame():
    with raises(ValueError, "no ratings"):
        ratings_from_pandas(frame().iloc[:0])


@pytest.mark.parametrize("missing", [None, np.nan])
def test_missing_ids(missing):
    df = pd.DataFrame({"user": ["a", missing, "c"], "item": [1, 2, 3], "rating": [1, 2, 3]},
                      index=[10, 20, 30])
    with raises(ValueError, "column 'user', row 20: missing user id", "drop or fill") as e:
        ratings_from_pandas(df)
    one_line(e)
    df = pd.DataFrame({"user": [1, 2, 3], "item": [1, 2, missing], "rating": [1, 2, 3]})
    with raises(ValueError, "column 'item', row 2: missing item id"):
        ratings_from_pandas(df)


def test_bad_ratings():
    with raises(ValueError, "column 'rating', row 1: missing rating (nan)"):
        ratings_from_pandas(frame(rating=[1.0, np.nan, 2.0]))
    with raises(ValueError, "column 'rating', row 2: infinite rating (-inf)", "drop or fix"):
        ratings_from_pandas(frame(rating=[1.0, 2.0, -np.inf]))
    with raises(ValueError, "column 'rating', row 0", "too large for float32"):
        ratings_from_pandas(frame(rating=[1e300, 2.0, 3.0]))
    with raises(ValueError, "column 'rating', row 2: rating 0.5 is outside rating_scale (1, 10)",
                "widen rating_scale"):
        ratings_from_pandas(frame(rating=[1.0, 10.0, 0.5]), rating_scale=(1, 10))
    with raises(ValueError, "column 'rating': every rating is 4", "rating_scale=(low, high)"):
        ratings_from_pandas(frame(rating=[4, 4, 4]))
    assert len(ratings_from_pandas(frame(rating=[4, 4, 4]), rating_scale=(1, 5))) == 3


def test_non_numeric_ratings():
    with raises(TypeError, "column 'rating', row 1: non-numeric rating 'good'",
                "pd.to_numeric(df['rating'])") as e:
        ratings_from_pandas(frame(rating=pd.Series([3, "good", 4], dtype=object)))
    one_line(e)
    with raises(TypeError, "column 'rating', row 0: str-typed rating '3'"):
        ratings_from_pandas(frame(rating=["3", "4", "5"]))
    with raises(TypeError, "column 'rating', row 0: boolean rating True"):
        ratings_from_pandas(frame(rating=[True, False, True]))


@pytest.mark.parametrize("scale", [(5, 1), (3, 3), (0, np.inf), (np.nan, 5), (1, 2, 3), "1-5",
                                   (True, 5), None])
def test_invalid_rating_scale(scale):
    if scale is None:
        return
    with raises(ValueError, "rating_scale must be"):
        ratings_from_pandas(frame(), rating_scale=scale)


def test_mixed_id_types():
    df = frame(item=pd.Series([1, "x", 2], dtype=object))
    with raises(TypeError, "column 'item', row 1: item id 'x' is a str but the id at row 0 is an int",
                "convert the column to str") as e:
        ratings_from_pandas(df)
    one_line(e)


def test_float_ids_refused_with_advice():
    # what a CSV integer column with an empty cell becomes: never silently merged with 1
    with raises(TypeError, "column 'user', row 0: float user id 1", "astype('int64')"):
        ratings_from_pandas(frame(user=[1.0, 2.0, 1.0]))
    with raises(TypeError, "column 'user', row 1: float user id 2.5", "convert the column to str"):
        ratings_from_pandas(frame(user=[1.0, 2.5, 1.0]))


def test_other_bad_ids():
    with raises(TypeError, "column 'user', row 0: boolean user id True"):
        ratings_from_pandas(frame(user=[True, False, True]))
    with raises(TypeError, "column 'item', row 2: item id b'z' is a bytes", "decode"):
        ratings_from_pandas(frame(item=pd.Series(["x", "y", b"z"], dtype=object)))
    with raises(ValueError, "column 'user', row 1: user id 'b\\x00c' contains a NUL character") as e:
        ratings_from_pandas(frame(user=["a", "b\x00c", "a"]))
    one_line(e)
    with raises(ValueError, "column 'user', row 0: user id 18446744073709551615 does not fit int64"):
        ratings_from_pandas(frame(user=np.array([2**64 - 1, 1, 2], np.uint64)))


def test_bad_timestamps():
    with raises(TypeError, "column 't', row 1: timestamp 'noon' is a str", "pd.to_datetime") as e:
        ratings_from_pandas(frame(t=pd.Series([1, "noon", 3], dtype=object)), timestamp="t")
    one_line(e)
    with raises(TypeError, "column 't', row 0: timestamp '2024-01-01' is a str"):
        ratings_from_pandas(frame(t=["2024-01-01"] * 3), timestamp="t")
    with raises(TypeError, "column 't', row 2: timestamp 2.5 is not a whole number of seconds"):
        ratings_from_pandas(frame(t=[1.0, 2.0, 2.5]), timestamp="t")
    with raises(ValueError, "column 't', row 1: missing timestamp"):
        ratings_from_pandas(frame(t=pd.to_datetime(["2024-01-01", None, "2024-01-02"])),
                            timestamp="t")
    with raises(TypeError, "column 't', row 0: timestamps of dtype timedelta64"):
        ratings_from_pandas(frame(t=pd.to_timedelta([1, 2, 3], unit="s")), timestamp="t")


# ----------------------------------------------------------------------------- files


def written(tmp_path, df: pd.DataFrame, sep: str, name: str = "ratings.csv"):
    path = tmp_path / name
    if sep == "::":
        lines = ["::".join(map(str, df.columns))]
        lines += ["::".join(map(str, row)) for row in df.itertuples(index=False)]
        path.write_text("\n".join(lines) + "\n")
    else:
        df.to_csv(path, sep=sep, index=False)
    return path


OWN = pd.DataFrame({
    "userId": ["anna", "ben", "anna", "cleo"],
    "movieId": [10, 20, 20, 10],
    "score": [7.5, 10.0, 1.0, 4.0],
    "ts": [300, 100, 200, 400],
})


@pytest.mark.parametrize("sep", [",", "\t", ";", "::"])
def test_csv_round_trip_each_separator(tmp_path, sep):
    path = written(tmp_path, OWN, sep)
    r = read_ratings(path, columns=("userId", "movieId", "score", "ts"), rating_scale=(1, 10))
    assert r.name == "ratings" and r.rating_scale == (1.0, 10.0)
    assert r.users.ids.tolist() == ["anna", "ben", "cleo"]
    assert r.items.ids.dtype == np.int64 and r.items.ids.tolist() == [10, 20]
    assert rows(r) == list(OWN.itertuples(index=False, name=None))
    same = read_ratings(path, columns="userId, movieId, score", sep=sep)  # explicit sep, no ts
    assert triples(same) == triples(r) and (same.timestamp == 0).all()


def test_csv_ids_and_dates(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("u,i,r,when\n007,NA,4,2024-01-01T00:00:01\n7,N/A,5,2024-01-01\n")
    r = read_ratings(path, columns="u,i,r,when")
    assert r.users.ids.tolist() == ["007", "7"]  # not canonical integers: kept apart, as str
    assert r.items.ids.tolist() == ["N/A", "NA"]  # ids are missing only when empty
    assert r.timestamp.tolist() == [1704067201, 1704067200]
    gz = tmp_path / "packed.csv.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("user\titem\trating\n1\t2\t3\n2\t2\t4\n")
    packed = read_ratings(gz)
    assert packed.name == "packed" and triples(packed) == Counter({(1, 2, 3.0): 1, (2, 2, 4.0): 1})


def test_csv_errors_name_file_and_line(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("user,item,rating\n1,10,4\n2,20,inf\n3,30,5\n")
    with raises(ValueError, f"{path}: column 'rating', line 3: infinite rating (inf)") as e:
        read_ratings(path)
    assert isinstance(e.value, MalformedFileError)
    one_line(e)
    path.write_text("user,item,rating\n1,10,4\n2,,5\n")
    with raises(ValueError, f"{path}: column 'item', line 3: missing item id"):
        read_ratings(path)
    path.write_text("user,item,rating\n1,10,4\n2,20,lots\n")
    with raises(MalformedFileError, "mine.csv: column 'rating', line 3: non-numeric rating 'lots'"):
        read_ratings(path)
    path.write_text("user,item,rating\n1,10,4\n2,20,12\n")
    with raises(ValueError, "mine.csv: column 'rating', line 3: rating 12 is outside"):
        read_ratings(path, rating_scale=(1, 5))
    path.write_text("user,item,rating\n1,10,4\n1,10,5\n")
    with raises(ValueError, "mine.csv: columns ('user', 'item'), lines 2, 3: duplicate"):
        read_ratings(path)
    assert read_ratings(path, duplicates="last").rating.tolist() == [5.0]
    path.write_text("user,item,rating\n1,10,4\n2,20,5\n3,30,1,9\n")
    with raises(ValueError, "mine.csv", "Expected 3 fields in line 4, saw 4"):
        read_ratings(path)
    path.write_text("user,item,rating,t\n1,10,4,5\n2,20,5,later\n")
    with raises(ValueError, "mine.csv: column 't', line 3: timestamp 'later' is neither"):
        read_ratings(path, columns="user,item,rating,t")
    path.write_text("user,item,rating,t\n1,10,4,5\n2,20,5,2024-01-01\n")
    with raises(ValueError, "mine.csv: column 't', line 2: timestamp '5' is an integer",
                "line 3 holds a date"):
        read_ratings(path, columns="user,item,rating,t")


def test_csv_file_problems(tmp_path):
    with raises(ValueError, "nowhere.csv: no such file"):
        read_ratings(tmp_path / "nowhere.csv")
    with raises(ValueError, "is a folder"):
        read_ratings(tmp_path)
    headless = tmp_path / "headless.csv"
    headless.write_text("1,10,4\n2,20,5\n")
    with raises(ValueError, "headless.csv: no column 'user'", "available columns: '1', '10', '4'",
                "header", "columns=") as e:
        read_ratings(headless)
    one_line(e)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with raises(ValueError, "empty.csv: the file is empty"):
        read_ratings(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("user,item,rating\n")
    with raises(ValueError, "header.csv: no ratings"):
        read_ratings(header_only)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"user,item,rating\n1,caf\xe9,4\n")
    with raises(ValueError, "latin.csv: line 2 is not valid UTF-8"):
        read_ratings(latin)
    with raises(ValueError, "columns must name"):
        read_ratings(header_only, columns="user,item")


def test_parquet_round_trip(tmp_path):
    df = OWN.assign(ts=pd.to_datetime(OWN["ts"], unit="s"))
    for suffix in (".parquet", ".pq"):
        path = tmp_path / f"own{suffix}"
        df.to_parquet(path)
        r = read_ratings(path, columns=("userId", "movieId", "score", "ts"))
        assert r.name == "own" and r.rating_scale == (1.0, 10.0)
        assert rows(r) == list(OWN.itertuples(index=False, name=None))
        assert r.users.ids.dtype == object and r.items.ids.dtype == np.int64


def test_parquet_errors(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not really parquet " * 8)
    with raises(ValueError, f"{broken}: not a readable Parquet file") as e:
        read_ratings(broken)
    assert isinstance(e.value, MalformedFileError)
    one_line(e)
    whole = tmp_path / "whole.parquet"
    OWN.to_parquet(whole)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with raises(ValueError, "cut.parquet: not a readable Parquet file"):
        read_ratings(cut, columns="userId,movieId,score")
    with raises(ValueError, "whole.parquet: no column 'user'",
                "available columns: 'userId', 'movieId', 'score', 'ts'"):
        read_ratings(whole)
    OWN.assign(score=[1.0, np.nan, 2.0, 3.0]).to_parquet(whole)
    with raises(ValueError, "whole.parquet: column 'score', row 1: missing rating"):
        read_ratings(whole, columns="userId,movieId,score")


# ----------------------------------------------------------------------------- properties


@st.composite
def valid_frames(draw):
    """(DataFrame, its (user, item, rating) multiset): unique pairs, int or str ids,
    ratings on a half-star grid (exact in float32), index labels shuffled."""
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 8))
    cells = draw(st.lists(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1)),
                          min_size=2, max_size=40, unique=True))
    halves = draw(st.lists(st.integers(2, 20), min_size=len(cells), max_size=len(cells)))
    ratings = [h / 2 for h in halves]
    if len(set(ratings)) == 1:
        ratings[0] = 0.5 if ratings[0] != 0.5 else 1.0
    str_users, str_items = draw(st.booleans()), draw(st.booleans())
    users = [f"user {u}" if str_users else u * 7 - 3 for u, _ in cells]
    items = [f"item-{i}" if str_items else 1000 + i for _, i in cells]
    labels = draw(st.permutations(list(range(100, 100 + len(cells)))))
    df = pd.DataFrame({"user": users, "item": items, "rating": ratings}, index=labels)
    return df, Counter(zip(users, items, ratings))


@settings(max_examples=50, deadline=None)
@given(valid_frames())
def test_valid_frames_round_trip(case):
    df, expected = case
    r = ratings_from_pandas(df, rating_scale=(0.5, 10))
    assert triples(r) == expected and len(r) == len(df)
    inferred = ratings_from_pandas(df)
    assert inferred.rating_scale == (min(df["rating"]), max(df["rating"]))


@settings(max_examples=50, deadline=None)
@given(valid_frames(), st.sampled_from(["nan", "inf", "-inf", "high", "low", "user", "item"]),
       st.data())
def test_one_bad_cell_is_named(case, bad, data):
    df, _ = case
    pos = data.draw(st.integers(0, len(df) - 1))
    label = df.index[pos]
    columns = {c: df[c].tolist() for c in df.columns}
    column = bad if bad in ("user", "item") else "rating"
    columns[column][pos] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "high": 10.5,
                            "low": 0.0}.get(bad)  # None for the ids
    broken = pd.DataFrame(columns, index=df.index)
    with pytest.raises(ValueError) as e:
        ratings_from_pandas(broken, rating_scale=(0.5, 10))
    assert one_line(e).startswith(f"column '{column}', row {label}: ")
