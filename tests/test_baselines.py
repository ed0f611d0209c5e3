"""Rating baselines by hand (with cold fallbacks) and the bias model against a direct
regularised least-squares solve."""

from __future__ import annotations

import numpy as np
import pytest

from recjax.data import Ratings, Vocabulary
from recjax.models.baselines import BASELINES, BiasModel, GlobalMean, ItemMean, UserMean

# users 10, 20, 30 rate; user 40 is in the vocabulary but cold. Items "a", "b", "c" are
# rated; "z" is cold.
USERS = Vocabulary(np.array([10, 20, 30, 40]), "user")
ITEMS = Vocabulary(np.array(["a", "b", "c", "z"]), "item")


@pytest.fixture(scope="module")
def tiny() -> Ratings:
    return Ratings.from_raw(
        [10, 10, 10, 20, 20, 30, 30, 30],
        ["a", "b", "c", "a", "b", "a", "b", "c"],
        [5.0, 3.0, 4.0, 2.0, 1.0, 4.0, 5.0, 3.0],
        users=USERS, items=ITEMS,
    )


ALL_USERS = np.array([0, 1, 2, 3, 0, 3])
ALL_ITEMS = np.array([0, 1, 2, 3, 3, 0])


def test_global_mean_by_hand(tiny):
    model = GlobalMean().fit(tiny)
    assert model.mean_ == pytest.approx(27.0 / 8)
    got = model.predict(ALL_USERS, ALL_ITEMS)
    assert got.dtype == np.float64 and got.shape == (6,)
    np.testing.assert_allclose(got, np.full(6, 27.0 / 8))


def test_user_mean_by_hand_with_cold_fallback(tiny):
    model = UserMean().fit(tiny)
    mu = 27.0 / 8
    # user 10: (5+3+4)/3 = 4, user 20: (2+1)/2 = 1.5, user 30: (4+5+3)/3 = 4, user 40: cold
    np.testing.assert_allclose(model.user_mean_, [4.0, 1.5, 4.0, mu])
    np.testing.assert_allclose(model.predict(ALL_USERS, ALL_ITEMS), [4.0, 1.5, 4.0, mu, 4.0, mu])


def test_item_mean_by_hand_with_cold_fallback(tiny):
    model = ItemMean().fit(tiny)
    mu = 27.0 / 8
    # item a: (5+2+4)/3, b: (3+1+5)/3 = 3, c: (4+3)/2 = 3.5, z: cold
    np.testing.assert_allclose(model.item_mean_, [11.0 / 3, 3.0, 3.5, mu])
    np.testing.assert_allclose(model.predict(ALL_USERS, ALL_ITEMS), [11.0 / 3, 3.0, 3.5, mu, mu, 11.0 / 3])


def test_means_accumulate_in_float64():
    # float32 summation of many equal ratings drifts; the baselines sum in float64
    n = 300_000
    data = Ratings.from_raw(np.arange(n) % 7, np.arange(n) % 5, np.full(n, 3.3, np.float32))
    want = float(np.float32(3.3))
    assert GlobalMean().fit(data).mean_ == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(UserMean().fit(data).user_mean_, want, rtol=1e-12)


def _lstsq_biases(data: Ratings, reg_user: float, reg_item: float) -> tuple[float, np.ndarray, np.ndarray]:
    """argmin sum (r - mu - b_u - b_i)^2 + reg_user |b_u|^2 + reg_item |b_i|^2 (mu = mean),
    solved directly: lstsq of the normal equations (A^T A + R) b = A^T (r - mu)."""
    n_u, n_i = data.n_users, data.n_items
    a = np.zeros((len(data), n_u + n_i))
    a[np.arange(len(data)), data.user] = 1.0
    a[np.arange(len(data)), n_u + data.item] = 1.0
    mu = float(np.mean(data.rating, dtype=np.float64))
    reg = np.diag(np.r_[np.full(n_u, reg_user), np.full(n_i, reg_item)])
    b, *_ = np.linalg.lstsq(a.T @ a + reg, a.T @ (data.rating.astype(np.float64) - mu), rcond=None)
    return mu, b[:n_u], b[n_u:]


@pytest.mark.parametrize("reg_user, reg_item", [(1.0, 2.0), (0.5, 0.5), (15.0, 10.0)])
def test_bias_model_matches_direct_least_squares(tiny, reg_user, reg_item):
    mu, b_user, b_item = _lstsq_biases(tiny, reg_user, reg_item)
    model = BiasModel(reg_user, reg_item, n_iter=500).fit(tiny)
    assert model.mean_ == pytest.approx(mu)
    np.testing.assert_allclose(model.user_bias_, b_user, atol=1e-10)
    np.testing.assert_allclose(model.item_bias_, b_item, atol=1e-10)
    # cold user and item: bias exactly 0, so the prediction falls back
    assert model.user_bias_[3] == 0.0 and model.item_bias_[3] == 0.0
    got = model.predict(ALL_USERS, ALL_ITEMS)
    np.testing.assert_allclose(got, mu + b_user[ALL_USERS] + b_item[ALL_ITEMS], atol=1e-10)
    assert got[3] == pytest.approx(mu)  # cold user x cold item: the global mean


def test_bias_model_default_iterations_are_plenty(small_synthetic):
    data, _ = small_synthetic
    mu, b_user, b_item = _lstsq_biases(data, 15.0, 10.0)
    model = BiasModel().fit(data)  # 10 alternations
    np.testing.assert_allclose(model.user_bias_, b_user, atol=1e-3)
    np.testing.assert_allclose(model.item_bias_, b_item, atol=1e-3)


def test_bias_model_beats_the_means_on_held_out_ratings(small_synthetic):
    from recjax.data import holdout_split
    from recjax.metrics import rmse

    data, _ = small_synthetic
    train, test, _ = holdout_split(data, 0.2, seed=3)
    scores = {name: rmse(cls().fit(train).predict(test.user, test.item), test.rating)
              for name, cls in BASELINES.items()}
    assert scores["bias"] < min(scores["user_mean"], scores["item_mean"]) < scores["global_mean"]


def test_bias_model_rejects_bad_settings():
    with pytest.raises(ValueError, match="reg_user and reg_item must be >= 0"):
        BiasModel(reg_user=-1.0)
    with pytest.raises(ValueError, match="n_iter >= 1"):
        BiasModel(n_iter=0)


def test_baseline_registry():
    assert {"global_mean": GlobalMean, "user_mean": UserMean, "item_mean": ItemMean,
            "bias": BiasModel}.items() <= BASELINES.items()
