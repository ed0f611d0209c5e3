"""MovieLens loaders: real ml-100k / ml-latest-small copies, ml-1m and ml-25m layouts
built in tmp_path, malformed input, duplicates and a 2M-row load."""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recjax.data import MalformedFileError, genre_matrix, load_movielens, read_split

# ----------------------------------------------------------------------------- ml-100k


def test_ml100k_counts(ml100k):
    assert len(ml100k) == 100_000
    assert (ml100k.n_users, ml100k.n_items) == (943, 1682)
    assert ml100k.users.ids.tolist() == list(range(1, 944))
    assert ml100k.items.ids.tolist() == list(range(1, 1683))
    assert ml100k.rating_scale == (1.0, 5.0) and ml100k.name == "ml-100k"
    values, counts = np.unique(ml100k.rating, return_counts=True)
    assert values.tolist() == [1, 2, 3, 4, 5]
    assert counts.tolist() == [6110, 11370, 27145, 34174, 21201]  # MANIFEST histogram
    # first line of u.data: "196\t242\t3\t881250949"
    first = ml100k.to_frame().iloc[0]
    row = (first.user_id, first.item_id, first.rating, first.timestamp)
    assert row == (196, 242, 3.0, 881250949)


def test_ml100k_item_info(ml100k):
    info = ml100k.item_info
    assert len(info) == 1682
    assert info["item_id"].tolist() == ml100k.items.ids.tolist()  # aligned to indices
    toy = info.iloc[ml100k.items.index(1)]
    assert toy["title"] == "Toy Story (1995)"
    assert toy["genres"] == ("Animation", "Children's", "Comedy")
    assert toy["year"] == 1995
    titles = ml100k.item_titles(ml100k.items.index([1, 2]))
    assert titles == ["Toy Story (1995)", "GoldenEye (1995)"]
    # item 267 is the "unknown" placeholder: no title date, genre "unknown"
    unknown = info.iloc[ml100k.items.index(267)]
    assert unknown["title"] == "unknown" and np.isnan(unknown["year"])
    assert unknown["genres"] == ("unknown",)


def test_ml100k_latin1_titles(ml100k):
    titles = ml100k.item_info["title"]
    non_ascii = [t for t in titles if not t.isascii()]
    assert "Misérables, Les (1995)" in non_ascii  # u.item line 543, byte 0xe9
    assert titles.iloc[ml100k.items.index(543)] == "Misérables, Les (1995)"
    assert "Á köldum klaka (Cold Fever) (1994)" in non_ascii
    assert not any("\ufffd" in t or "Ã" in t for t in titles)  # no mojibake


def test_ml100k_user_info(ml100k):
    info = ml100k.user_info
    assert len(info) == 943
    user1 = info.iloc[ml100k.users.index(1)]
    fields = (user1["age"], user1["sex"], user1["occupation"], user1["zip"])
    assert fields == (24, "M", "technician", "85711")
    assert set(info["sex"]) == {"M", "F"}
    assert info["zip"].map(type).eq(str).all()  # zip codes stay strings (some are Canadian)


def test_ml100k_genre_matrix(ml100k):
    names, flags = genre_matrix(ml100k.item_info)
    assert len(names) == 19 and "unknown" in names and "Film-Noir" in names
    assert flags.shape == (1682, 19)
    assert flags[:, names.index("Drama")].sum() == 725
    row = flags[ml100k.items.index(1)]
    assert sorted(np.array(names)[row]) == ["Animation", "Children's", "Comedy"]


def test_ml100k_folder_forms(movielens_dir, monkeypatch):
    # data_dir may be the dataset folder itself or the folder holding ml-100k/
    direct = load_movielens("ml-100k", movielens_dir / "ml-100k", allow_download=False)
    parent = load_movielens("ml-100k", movielens_dir, allow_download=False)
    assert len(direct) == len(parent) == 100_000
    # no data_dir: found through RECJAX_DATA
    monkeypatch.setenv("RECJAX_DATA", str(movielens_dir))
    via_env = load_movielens("ml-100k", allow_download=False)
    np.testing.assert_array_equal(via_env.rating, direct.rating)


def test_read_split_indexes_in_dataset_vocabulary(ml100k, movielens_dir):
    test = read_split(ml100k, movielens_dir / "ml-100k" / "ua.test")
    assert len(test) == 9430
    assert test.users is ml100k.users and test.items is ml100k.items
    assert test.name == "ml-100k/ua.test"


def test_read_split_unknown_id_names_line(ml100k, tmp_path):
    path = tmp_path / "u9.test"
    path.write_text("1\t1\t5\t874965758\n1\t99999\t3\t876893171\n")
    with pytest.raises(MalformedFileError, match=rf"{path}:2: user or item id not in dataset"):
        read_split(ml100k, path)


# ----------------------------------------------------------------------------- ml-latest-small


@pytest.fixture(scope="module")
def latest_small(movielens_dir):
    return load_movielens("ml-latest-small", movielens_dir, allow_download=False)


def test_latest_small_counts(latest_small, movielens_dir):
    raw = (movielens_dir / "ml-latest-small" / "ratings.csv").read_bytes()
    assert raw.count(b"\r\n") == 100_837  # the copy really is CRLF, so this tests tolerance
    assert len(latest_small) == 100_836
    assert latest_small.n_users == 610
    assert latest_small.n_items == 9724  # rated movies only (movies.csv lists 9742)
    assert latest_small.rating_scale == (0.5, 5.0)
    assert np.unique(latest_small.rating).tolist() == [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5]
    assert latest_small.timestamp.min() > 800_000_000  # no '\r' garbage in the last column
    first = latest_small.to_frame().iloc[0]  # "1,1,4.0,964982703"
    assert (first.user_id, first.item_id, first.rating, first.timestamp) == (1, 1, 4.0, 964982703)


def test_latest_small_movies(latest_small):
    info = latest_small.item_info
    assert len(info) == 9724
    row = lambda movie: info.iloc[latest_small.items.index(movie)]  # noqa: E731
    assert row(1)["title"] == "Toy Story (1995)"
    assert row(1)["genres"] == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert row(1)["year"] == 1995
    # quoted title with a comma
    assert row(11)["title"] == "American President, The (1995)"
    assert row(11)["genres"] == ("Comedy", "Drama", "Romance")
    # no title ends with '\r' (CRLF) and no genre carries it
    assert not info["title"].str.contains("\r").any()
    assert not any(g.endswith("\r") for gs in info["genres"] for g in gs)
    if 7789 in latest_small.items:  # quoted title with escaped quotes
        assert row(7789)["title"] == "11'09\"01 - September 11 (2002)"


# ----------------------------------------------------------------------------- ml-1m layout

ML1M_RATINGS = [  # user, movie, rating, timestamp
    (1, 1, 5, 978300760),
    (1, 12, 3, 978302109),     # "Dracula: Dead and Loving It (1995)"
    (2, 73, 4, 978298413),     # "Misérables, Les (1995)"
    (2, 1873, 2, 978299000),   # "Misérables, Les (1998)"
    (6040, 3952, 1, 956703932),
    (6040, 66, 4, 956704000),  # "Lawnmower Man 2: Beyond Cyberspace (1996)"
]


@pytest.fixture
def ml1m_dir(movielens_dir, tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    for name in ("movies.dat", "users.dat"):
        shutil.copy(movielens_dir / "ml-1m" / name, folder / name)
    text = "".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in ML1M_RATINGS)
    (folder / "ratings.dat").write_text(text)
    return folder


def test_ml1m_layout(ml1m_dir):
    data = load_movielens("ml-1m", ml1m_dir, allow_download=False)
    assert len(data) == 6 and data.rating_scale == (1.0, 5.0)
    assert data.users.ids.tolist() == [1, 2, 6040]
    assert data.items.ids.tolist() == [1, 12, 66, 73, 1873, 3952]
    frame = data.to_frame()
    assert list(zip(frame.user_id, frame.item_id, frame.rating, frame.timestamp)) == ML1M_RATINGS
    titles = dict(zip(data.items.ids.tolist(), data.item_info["title"]))
    assert titles[12] == "Dracula: Dead and Loving It (1995)"
    assert titles[66] == "Lawnmower Man 2: Beyond Cyberspace (1996)"
    assert titles[73] == "Misérables, Les (1995)"
    assert titles[1873] == "Misérables, Les (1998)"
    info = data.item_info.set_index("item_id")
    assert info.loc[1, "genres"] == ("Animation", "Children's", "Comedy")
    assert info.loc[73, "genres"] == ("Drama", "Musical")
    assert info.loc[1873, "year"] == 1998
    users = data.user_info.set_index("user_id")
    assert len(users) == 3
    first = users.loc[1]
    assert (first["sex"], first["age"], first["occupation"], first["zip"]) == ("F", 1, 10, "48067")
    assert users.loc[2, "sex"] == "M" and users.loc[2, "age"] == 56


def test_ml1m_malformed_ratings(ml1m_dir):
    path = ml1m_dir / "ratings.dat"
    path.write_text("1::1::5::978300760\n1::12::3\n")
    with pytest.raises(MalformedFileError, match=rf"{path}:2: expected 4 fields"):
        load_movielens("ml-1m", ml1m_dir, allow_download=False)
    path.write_text("1::1::5::978300760\n1:12::3::978302109\n")  # one colon short
    with pytest.raises(MalformedFileError, match=rf"{path}:2:"):
        load_movielens("ml-1m", ml1m_dir, allow_download=False)


# ----------------------------------------------------------------------------- ml-20m/25m layout

MOVIES_CSV = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
    '11,"American President, The (1995)",Comedy|Drama|Romance\n'
    '7789,"11\'09""01 - September 11 (2002)",Drama\n'
    "114335,La cravate (1957),(no genres listed)\n"
    "200,\"Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)\",Comedy|Romance\n"
    "300,Unrated Movie (1990),Drama\n"
)


def write_csv_layout(folder: Path, ratings: str, movies: str = MOVIES_CSV) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings, encoding="utf-8")
    (folder / "movies.csv").write_text(movies, encoding="utf-8")
    return folder


@pytest.mark.parametrize("name", ["ml-25m", "ml-20m"])
def test_csv_layout(tmp_path, name):
    ratings = (
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,1147880044\n"
        "1,11,3.5,1147868817\n"
        "2,7789,0.5,1147868828\n"
        "3,114335,5.0,1147878820\n"
        "3,200,4.5,1147868510\n"
    )
    folder = write_csv_layout(tmp_path / name, ratings)
    data = load_movielens(name, tmp_path, allow_download=False)  # parent folder works too
    assert len(data) == 5 and (data.n_users, data.n_items) == (3, 5)
    assert data.rating_scale == (0.5, 5.0)
    assert data.rating.tolist() == [4.0, 3.5, 0.5, 5.0, 4.5]
    assert data.timestamp.tolist()[0] == 1147880044
    info = data.item_info.set_index("item_id")
    assert 300 not in info.index  # listed but never rated
    assert info.loc[11, "title"] == "American President, The (1995)"
    assert info.loc[7789, "title"] == "11'09\"01 - September 11 (2002)"
    assert info.loc[114335, "genres"] == ()  # "(no genres listed)"
    assert info.loc[200, "title"] == "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
    assert info.loc[200, "genres"] == ("Comedy", "Romance") and info.loc[200, "year"] == 2001
    assert data.user_info is None
    again = load_movielens(name, folder, allow_download=False)
    np.testing.assert_array_equal(again.rating, data.rating)


def test_unknown_dataset_name_lists_known():
    with pytest.raises(ValueError) as info:
        load_movielens("ml-10k", allow_download=False)
    message = str(info.value)
    assert "'ml-10k'" in message
    for known in ("ml-100k", "ml-1m", "ml-latest-small", "ml-20m", "ml-25m"):
        assert known in message


# ----------------------------------------------------------------------------- bad input

GOOD_TAB = "1\t1\t5\t881250949\n2\t3\t4\t881250950\n"
GOOD_CSV = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"  # header is line 1

BAD_ROWS = [  # (id, ml-100k row, csv row, expected reason)
    ("too few columns", "3\t4\t5\n", "3,4,5\n", "expected 4 fields"),
    ("too many columns", "3\t4\t5\t881250951\t9\n", "3,4,5,964982703,9\n", "expected 4 fields"),
    ("user id", "x\t4\t5\t881250951\n", "x,4,5,964982703\n", "user id 'x' is not an integer"),
    ("item id", "3\tabc\t5\t881250951\n", "3,abc,5,964982703\n", "item id 'abc' is not an integer"),
    ("float item id", "3\t4.5\t5\t881250951\n", "3,4.5,5,964982703\n",
     "item id '4.5' is not an integer"),
    ("rating", "3\t4\tgood\t881250951\n", "3,4,good,964982703\n", "rating 'good' is not a number"),
    ("NaN rating", "3\t4\tNaN\t881250951\n", "3,4,NaN,964982703\n", "rating 'NaN'"),
    ("empty rating", "3\t4\t\t881250951\n", "3,4,,964982703\n", "rating '' is not a number"),
    ("timestamp", "3\t4\t5\tnoon\n", "3,4,5,noon\n", "timestamp 'noon' is not an integer"),
]


@pytest.mark.parametrize("case,tab_row,csv_row,reason", BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_bad_row_names_file_and_line(tmp_path, case, tab_row, csv_row, reason):
    tab = tmp_path / "ml-100k" / "u.data"
    tab.parent.mkdir()
    tab.write_text(GOOD_TAB + tab_row + GOOD_TAB)  # bad row is line 3
    with pytest.raises(MalformedFileError) as info:
        load_movielens("ml-100k", tab.parent, allow_download=False)
    assert f"{tab}:3: " in str(info.value) and reason in str(info.value)

    text = GOOD_CSV + "1,2,3.0,964982704\n" + csv_row
    csv = write_csv_layout(tmp_path / "ml-latest-small", text) / "ratings.csv"
    with pytest.raises(MalformedFileError) as info:  # header line 1, bad row is line 4
        load_movielens("ml-latest-small", csv.parent, allow_download=False)
    assert f"{csv}:4: " in str(info.value) and reason in str(info.value)


@pytest.mark.parametrize(
    "name,row,reason",
    [
        ("ml-100k", "3\t4\t7\t881250951\n", "rating '7' is outside the scale 1..5"),
        ("ml-100k", "3\t4\t0\t881250951\n", "rating '0' is outside the scale 1..5"),
        ("ml-100k", "3\t4\t0.5\t881250951\n", "rating '0.5' is outside the scale 1..5"),
        ("ml-25m", "3,4,5.5,964982703\n", "rating '5.5' is outside the scale 0.5..5"),
        ("ml-25m", "3,4,0,964982703\n", "rating '0' is outside the scale 0.5..5"),
        ("ml-25m", "3,4,-1,964982703\n", "rating '-1' is outside the scale 0.5..5"),
    ],
)
def test_rating_outside_scale(tmp_path, name, row, reason):
    folder = tmp_path / name
    if name == "ml-100k":
        folder.mkdir()
        path = folder / "u.data"
        path.write_text(GOOD_TAB + row)
        line = 3
    else:
        path = write_csv_layout(folder, GOOD_CSV + row) / "ratings.csv"
        line = 3
    with pytest.raises(MalformedFileError, match=rf"{path}:{line}: {reason}"):
        load_movielens(name, folder, allow_download=False)


def test_bad_row_deep_in_a_large_file_and_after_blank_lines(tmp_path):
    rng = np.random.default_rng(0)
    n = 100_000
    frame = pd.DataFrame({
        "u": rng.integers(1, 1000, n), "i": np.arange(n) + 1,
        "r": rng.integers(1, 6, n), "t": rng.integers(8 * 10**8, 9 * 10**8, n),
    })
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    path = folder / "u.data"
    frame.to_csv(path, sep="\t", header=False, index=False)
    lines = path.read_text().splitlines(keepends=True)
    user, item, _, stamp = lines[77_776].split("\t")
    lines[77_776] = f"{user}\t{item}\t6\t{stamp}"  # line 77777: rating 6
    path.write_text("".join(lines))
    with pytest.raises(MalformedFileError, match=rf"{path}:77777: rating '6'"):
        load_movielens("ml-100k", folder, allow_download=False)
    # a blank line earlier in the file does not shift the reported line
    lines.insert(10, "\n")
    path.write_text("".join(lines))
    with pytest.raises(MalformedFileError, match=rf"{path}:77778: rating '6'"):
        load_movielens("ml-100k", folder, allow_download=False)


def test_invalid_utf8_names_line(tmp_path):
    folder = tmp_path / "ml-25m"
    write_csv_layout(folder, "")
    path = folder / "ratings.csv"
    path.write_bytes(GOOD_CSV.encode() + b"1,2,3.0,964982704\n2,\xff\xfe,3.0,964982704\n")
    with pytest.raises(MalformedFileError, match=rf"{path}:4: not valid utf-8"):
        load_movielens("ml-25m", folder, allow_download=False)


def test_header_only_csv_holds_no_ratings(tmp_path):
    """An empty dataset is refused where it is read (it used to load as 0 ratings and fail
    later as a JAX gather traceback)."""
    folder = write_csv_layout(tmp_path / "ml-25m", "userId,movieId,rating,timestamp\n")
    with pytest.raises(MalformedFileError, match=rf"{folder / 'ratings.csv'}: holds no ratings"):
        load_movielens("ml-25m", folder, allow_download=False)


# ----------------------------------------------------------------------------- duplicates

DUPLICATED = (
    "userId,movieId,rating,timestamp\n"
    "1,1,3.0,100\n"   # line 2
    "1,1,5.0,50\n"    # line 3: older than line 2
    "2,1,4.0,10\n"    # line 4
    "1,1,2.0,100\n"   # line 5: same time as line 2, later in the file -> kept
    "2,11,1.0,7\n"    # line 6
    "2,11,4.5,8\n"    # line 7: newer -> kept
)


def test_duplicates_keep_latest_with_warning(tmp_path):
    folder = write_csv_layout(tmp_path / "ml-25m", DUPLICATED)
    message = r"3 duplicate \(user, item\) rating\(s\); kept the latest"
    with pytest.warns(UserWarning, match=message):
        data = load_movielens("ml-25m", folder, allow_download=False)
    frame = data.to_frame()
    assert len(data) == 3
    columns = zip(frame.user_id, frame.item_id, frame.rating, frame.timestamp)
    kept = {(u, i): (r, t) for u, i, r, t in columns}
    assert kept == {(1, 1): (2.0, 100), (2, 1): (4.0, 10), (2, 11): (4.5, 8)}
    assert frame.user_id.tolist() == [2, 1, 2]  # file order of the kept rows (lines 4, 5, 7)


def test_duplicates_error(tmp_path):
    folder = write_csv_layout(tmp_path / "ml-25m", DUPLICATED)
    path = folder / "ratings.csv"
    with pytest.raises(MalformedFileError) as info:
        load_movielens("ml-25m", folder, allow_download=False, duplicates="error")
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert "user 1, item 1" in message and "line 2" in message and "3 duplicate" in message
    with pytest.raises(ValueError, match="duplicates must be"):
        load_movielens("ml-25m", folder, allow_download=False, duplicates="first")


def test_no_duplicate_warning_on_clean_data(movielens_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_movielens("ml-100k", movielens_dir, allow_download=False, duplicates="error")
    assert len(data) == 100_000


# ----------------------------------------------------------------------------- a large file


def write_synthetic_csv_layout(folder: Path, n_ratings: int, *, n_users: int = 160_000,
                               n_items: int = 60_000, seed: int = 0) -> None:
    """A ratings.csv + movies.csv in the ml-25m layout, written vectorised, no duplicate pairs."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    keys.sort()  # grouped by user, as in the real files
    frame = pd.DataFrame({
        "userId": keys // n_items + 1,
        "movieId": keys % n_items + 1,
        "rating": rng.integers(1, 11, n_ratings) / 2.0,
        "timestamp": rng.integers(789_652_009, 1_574_327_703, n_ratings),
    })
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "ratings.csv", index=False, float_format="%.1f")
    movies = pd.DataFrame({
        "movieId": np.arange(1, n_items + 1),
        "title": [f"Movie {i}, The ({1950 + i % 70})" for i in range(1, n_items + 1)],
        "genres": np.where(np.arange(n_items) % 2, "Drama|Comedy", "(no genres listed)"),
    })
    movies.to_csv(folder / "movies.csv", index=False)


def test_load_two_million_rows(tmp_path):
    folder = tmp_path / "ml-25m"
    start = time.perf_counter()
    write_synthetic_csv_layout(folder, 2_000_000)
    written = time.perf_counter()
    data = load_movielens("ml-25m", folder, allow_download=False)
    loaded = time.perf_counter()
    print(f"\n2M-row ml-25m layout: wrote in {written - start:.2f} s, "
          f"loaded in {loaded - written:.2f} s")
    assert len(data) == 2_000_000
    assert data.rating.min() == 0.5 and data.rating.max() == 5.0
    assert len(data.item_info) == data.n_items
    assert data.item_info["title"].iloc[0].startswith("Movie ")
    assert data.timestamp.dtype == np.int64 and data.timestamp.min() >= 789_652_009


def test_malformed_metadata_names_file_and_line(tmp_path):
    title = "American President, The (1995)"
    movies = MOVIES_CSV.replace(f'"{title}"', title)  # unquoted comma: 4 fields on line 3
    folder = write_csv_layout(tmp_path / "ml-25m", GOOD_CSV, movies)
    where = folder / "movies.csv"
    with pytest.raises(MalformedFileError, match=rf"{where}:3: .*Expected 3 fields"):
        load_movielens("ml-25m", folder, allow_download=False)


def test_malformed_ml1m_movies_dat(ml1m_dir):
    path = ml1m_dir / "movies.dat"
    lines = path.read_bytes().split(b"\n")
    lines[4] = b"5::Father of the Bride Part II (1995)"  # genres field missing on line 5
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(MalformedFileError, match=rf"{path}:5: expected 3 '::'-separated fields"):
        load_movielens("ml-1m", ml1m_dir, allow_download=False)
    lines.insert(2, b"")  # a blank line before it: the bad row is now line 6
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(MalformedFileError, match=rf"{path}:6: expected 3"):
        load_movielens("ml-1m", ml1m_dir, allow_download=False)


@pytest.mark.parametrize("name,text", [
    ("ml-100k", "1\t1\t5\t881250949\r\n2\t3\t4\t881250950\r\n"),
    ("ml-1m", "1::1::5::978300760\r\n2::3::4::978300761\r\n"),
])
def test_crlf_ratings_tolerated(tmp_path, name, text):
    from recjax.data.movielens import _read_ratings

    path = tmp_path / "ratings"
    path.write_bytes(text.encode())
    frame = _read_ratings(path, sep="\t" if name == "ml-100k" else "::", header=False)
    assert frame["timestamp"].tolist()[1] in (881250950, 978300761)
    assert frame["rating"].tolist() == [5.0, 4.0] and frame["item_id"].tolist() == [1, 3]
    path.write_bytes(text.encode() + text.split("\r\n")[0].replace("5", "9", 1).encode() + b"\r\n")
    with pytest.raises(MalformedFileError, match=rf"{path}:3: "):
        _read_ratings(path, sep="\t" if name == "ml-100k" else "::", header=False)


# ----------------------------------------------------------------------------- empty files
@pytest.mark.parametrize("text", ["", "\n\n"], ids=["zero bytes", "blank lines"])
def test_empty_ratings_file_names_the_file(tmp_path, text):
    data = tmp_path / "ml-100k" / "u.data"
    data.parent.mkdir()
    data.write_text(text)
    with pytest.raises(MalformedFileError, match=rf"^{data}: holds no ratings") as info:
        load_movielens("ml-100k", data.parent, allow_download=False)
    assert "\n" not in str(info.value)


def test_empty_split_file_names_the_file(ml100k, tmp_path):
    split = tmp_path / "ua.test"
    split.write_text("")
    with pytest.raises(MalformedFileError, match=rf"^{split}: holds no ratings"):
        read_split(ml100k, split)
