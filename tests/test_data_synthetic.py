"""The synthetic generator: reproducibility, exact sizes, planted structure, popularity, genres."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.stats import spearmanr

from recjax.data import genre_matrix, synthetic_ratings


def pair_keys(data) -> np.ndarray:
    return data.user.astype(np.int64) * data.n_items + data.item


@pytest.fixture(scope="module")
def default_set():
    return synthetic_ratings(seed=0)  # 1000 users x 500 items, 50k ratings, rank 8, noise 0.5


def test_shapes_and_sizes(small_synthetic):
    data, truth = small_synthetic
    assert len(data) == 12_000
    assert (data.n_users, data.n_items) == (300, 200)
    assert data.users.ids.tolist() == list(range(1, 301))
    assert data.items.ids.tolist() == list(range(1, 201))
    assert truth.user_factors.shape == (300, 4) and truth.item_factors.shape == (200, 4)
    assert truth.user_bias.shape == (300,) and truth.item_bias.shape == (200,)
    assert truth.item_popularity.shape == (200,)
    assert truth.item_popularity.sum() == pytest.approx(1.0)
    assert truth.noise_std == 0.3 and truth.rating_scale == (1.0, 5.0)
    assert data.rating.min() >= 1.0 and data.rating.max() <= 5.0
    assert data.rating.dtype == np.float32 and data.timestamp.dtype == np.int64
    assert len(data.item_info) == 200
    assert list(data.item_info.columns[:4]) == ["item_id", "title", "genres", "year"]


@pytest.mark.parametrize("n_ratings", [1, 999, 12_000, 30_000])
def test_exact_count_no_duplicate_pairs(n_ratings):
    data, _ = synthetic_ratings(300, 200, n_ratings, seed=n_ratings)
    assert len(data) == n_ratings
    assert len(np.unique(pair_keys(data))) == n_ratings


def test_reproducible_by_seed(small_synthetic):
    a, ta = small_synthetic
    b, tb = synthetic_ratings(300, 200, 12_000, rank=4, noise_std=0.3, seed=7)
    c, tc = synthetic_ratings(300, 200, 12_000, rank=4, noise_std=0.3, seed=8)
    for field in ("user", "item", "rating", "timestamp"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(ta.item_factors, tb.item_factors)
    assert a.item_info["genres"].tolist() == b.item_info["genres"].tolist()
    assert not np.array_equal(a.rating, c.rating)
    assert not np.array_equal(ta.user_factors, tc.user_factors)
    assert set(pair_keys(a).tolist()) != set(pair_keys(c).tolist())


@pytest.mark.parametrize("noise_std", [0.2, 0.5])
def test_noise_floor_is_noise_std(noise_std):
    data, truth = synthetic_ratings(1000, 500, 50_000, noise_std=noise_std, seed=1)
    rmse = truth.noise_floor_rmse(data)
    # clipping to 1..5 can only shrink the error a little
    assert noise_std * 0.9 < rmse <= noise_std * 1.02


def test_noise_floor_without_clipping():
    data, truth = synthetic_ratings(
        1000, 500, 50_000, noise_std=0.7, rating_scale=(-100, 100), seed=2
    )
    assert truth.noise_floor_rmse(data) == pytest.approx(0.7, rel=0.02)


def test_planted_low_rank_structure(default_set, small_synthetic):
    for data, truth in (default_set, small_synthetic):
        expected = truth.expected(data.user, data.item)
        assert np.corrcoef(data.rating, expected)[0, 1] > 0.7
    data, truth = default_set
    # beyond the biases, the interaction <P_u, Q_i> explains the ratings
    u, i = data.user, data.item
    residual = data.rating - truth.global_mean - truth.user_bias[u] - truth.item_bias[i]
    interaction = np.einsum("nd,nd->n", truth.user_factors[u], truth.item_factors[i])
    assert np.corrcoef(residual, interaction)[0, 1] > 0.7
    assert 0.6 < interaction.std() < 1.0  # default factor_std gives it std ~0.8
    # ... and only for the right pairs: the truth of another user explains far less
    other = truth.expected(np.roll(data.user, 1), data.item)
    assert np.corrcoef(data.rating, other)[0, 1] < 0.6


def test_zipf_popularity(default_set):
    data, truth = default_set
    _, per_item = data.counts()
    top10 = np.sort(per_item)[-10:].mean()
    assert top10 > 5 * np.median(per_item)
    assert spearmanr(per_item, truth.item_popularity).correlation > 0.9
    uniform, _ = synthetic_ratings(zipf_exponent=0.0, seed=0)
    _, flat = uniform.counts()
    assert flat.max() < 2 * np.median(flat)


def test_genres_follow_item_factors(default_set):
    data, truth = default_set
    names, flags = genre_matrix(data.item_info)
    assert names == [f"Genre{g}" for g in range(6)]
    per_item = flags.sum(axis=1)
    assert per_item.min() == 1 and per_item.max() == 3
    affinity = truth.item_factors @ truth.genre_directions.T  # [items, genres]
    np.testing.assert_allclose(np.linalg.norm(truth.genre_directions, axis=1), 1.0, rtol=1e-5)
    # every item carries the genre its factors point to most
    assert flags[np.arange(data.n_items), affinity.argmax(axis=1)].all()
    for g in range(len(names)):
        carries = flags[:, g]
        assert affinity[carries, g].mean() > affinity[~carries, g].mean() + 0.3
        assert np.corrcoef(carries.astype(float), affinity[:, g])[0, 1] > 0.4


def test_custom_scale_and_validation():
    data, truth = synthetic_ratings(
        100, 80, 1_000, rating_scale=(0.5, 5.0), global_mean=2.0, seed=3
    )
    assert data.rating_scale == truth.rating_scale == (0.5, 5.0)
    assert data.rating.min() >= 0.5 and (data.rating == 0.5).any()  # clipped at the new floor
    with pytest.raises(ValueError, match="more than half"):
        synthetic_ratings(10, 10, 51, seed=0)
    for bad in ({"n_users": 0}, {"n_items": 0}, {"n_ratings": 0}, {"rank": 0}, {"n_genres": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be >= 1"):
            synthetic_ratings(**{"n_users": 10, "n_items": 10, "n_ratings": 20, **bad})


def test_two_million_ratings():
    start = time.perf_counter()
    data, truth = synthetic_ratings(20_000, 5_000, 2_000_000, seed=1)
    print(f"\n2M synthetic ratings built in {time.perf_counter() - start:.2f} s")
    assert len(data) == 2_000_000
    assert len(np.unique(pair_keys(data))) == 2_000_000
    assert truth.noise_floor_rmse(data) == pytest.approx(0.5, abs=0.05)
