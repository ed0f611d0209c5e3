"""The ml-25m-layout generator of ``benchmarks/load_scale.py``, read back by the loader at a
tiny size; the compact arrays and the linear-time factorize the loader relies on at scale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recjax.data.dataset import factorize
from recjax.data.movielens import load_movielens

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SIZES = dict(n_ratings=20_000, n_users=300, n_movies=500)


def _load_scale():
    spec = importlib.util.spec_from_file_location("load_scale", BENCHMARKS / "load_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


load_scale = _load_scale()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return load_scale.write_ml25m_layout(tmp_path_factory.mktemp("ml-25m"), **SIZES, seed=3)


def test_files_have_the_ml25m_layout(folder):
    ratings = pd.read_csv(folder / "ratings.csv")
    movies = pd.read_csv(folder / "movies.csv")
    assert list(ratings.columns) == ["userId", "movieId", "rating", "timestamp"]
    assert list(movies.columns) == ["movieId", "title", "genres"]
    assert len(ratings) == SIZES["n_ratings"]
    assert ratings["userId"].nunique() == SIZES["n_users"]
    assert ratings["movieId"].nunique() == SIZES["n_movies"]
    key = ratings["userId"].to_numpy() * 10**7 + ratings["movieId"].to_numpy()
    assert np.all(np.diff(key) > 0)  # sorted by user then movie, no repeated pair
    assert set(ratings["rating"]) <= set(np.arange(1, 11) / 2)
    assert ratings["userId"].groupby(ratings["userId"]).size().min() >= 20
    assert ratings["movieId"].isin(movies["movieId"]).all() and len(movies) > SIZES["n_movies"]
    assert movies["title"].str.match(r"^Movie \d+(, The)? \(\d{4}\)$").all()
    assert movies["genres"].str.contains("|", regex=False).any()


def test_loader_reads_the_generated_folder(folder):
    data = load_movielens("ml-25m", folder, allow_download=False)
    raw = pd.read_csv(folder / "ratings.csv")
    assert (len(data), data.n_users, data.n_items) == tuple(SIZES.values())
    assert data.users.ids.tolist() == list(range(1, SIZES["n_users"] + 1))
    np.testing.assert_array_equal(data.items.ids, np.unique(raw["movieId"]))
    assert data.items.ids.max() > 2 * data.n_items  # sparse ids, not 0..n-1
    assert (data.user.dtype, data.item.dtype, data.rating.dtype, data.timestamp.dtype) == (
        np.int32, np.int32, np.float32, np.int64)
    assert data.users.ids.dtype == data.items.ids.dtype == np.int64
    np.testing.assert_array_equal(data.users.ids[data.user], raw["userId"])
    np.testing.assert_array_equal(data.items.ids[data.item], raw["movieId"])
    np.testing.assert_array_equal(data.rating, raw["rating"].astype(np.float32))
    np.testing.assert_array_equal(data.timestamp, raw["timestamp"])
    info = data.item_info
    assert len(info) == data.n_items and not info["year"].isna().any()
    assert all(isinstance(g, tuple) for g in info["genres"])


def test_generator_is_seeded_and_checks_sizes(tmp_path):
    small = dict(n_ratings=2_000, n_users=50, n_movies=80)
    a = load_scale.write_ml25m_layout(tmp_path / "a", **small, seed=1)
    b = load_scale.write_ml25m_layout(tmp_path / "b", **small, seed=1)
    for name in ("ratings.csv", "movies.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    with pytest.raises(ValueError, match="n_ratings=5000 cannot give each of 50 users"):
        load_scale.write_ml25m_layout(tmp_path / "c", 5_000, 50, 80)


def test_ids_beyond_int32_still_load(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,3000000000,4.0,5\n2,7,3.5,6\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n7,Foo (1995),Drama\n")
    data = load_movielens("ml-25m", tmp_path, allow_download=False)
    assert data.items.ids.tolist() == [7, 3_000_000_000] and data.item.tolist() == [1, 0]


@pytest.mark.parametrize("values", [
    np.array([30, 10, 30, 20, 0], np.int32),          # lookup table
    np.array([5, 10**9, 5], np.int64),                # range too wide: sorted
    np.array([-2, 3, -2]),                            # negative: sorted
    np.array(["b", "a", "b"]),
    np.array([], np.int64),
])
def test_factorize_matches_np_unique(values):
    uniques, inverse = factorize(values)
    expected, expected_inverse = np.unique(values, return_inverse=True)
    assert uniques.dtype == values.dtype and inverse.dtype == np.int32
    np.testing.assert_array_equal(uniques, expected)
    np.testing.assert_array_equal(inverse, expected_inverse)


def test_factorize_rejects_2d():
    with pytest.raises(ValueError, match="1-d array"):
        factorize(np.zeros((2, 2), np.int64))


def test_table_reports_each_stage():
    rows = [("load", 2.0, 3.5, 2**30, 3 * 2**30, 2 * 2**30)]
    assert "| load | 2.00 | 3.50 | 3.00 | 1073741824.0 | 2.00 |" in load_scale.table(rows, 2)
