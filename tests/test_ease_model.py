"""EASE as a trained family (recjax.models.ease): its one sweep is Steck's closed form
(a dense NumPy float64 minimiser and the KKT condition of the zero diagonal), the same
B as the evaluation's EASE baseline, scores X B for pairs, ranking vectors and fold-in,
and a run of ``--model ease`` trains, validates by ranking and reopens."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from recjax.config import RunConfig
from recjax.data.bags import user_rows
from recjax.data.dataset import Ratings, Vocabulary
from recjax.models.baselines import EASE
from recjax.models.ease import EASEConfig, EASEModel, build_ease
from recjax.train.alternating import fit
from recjax.train.step import Model


def _ratings(seed=0, users=30, items=12, density=0.3) -> Ratings:
    rng = np.random.default_rng(seed)
    x = rng.random((users, items)) < density
    x[np.arange(users), rng.integers(0, items, users)] = True
    u, i = np.nonzero(x)
    return Ratings(u.astype(np.int32), i.astype(np.int32), rng.integers(1, 6, len(u)).astype(np.float32),
                   np.zeros(len(u), np.int64), Vocabulary(np.arange(users, dtype=np.int64), "user"),
                   Vocabulary(np.arange(items, dtype=np.int64), "item"))


def _dense_reference(x: np.ndarray, lam: float) -> np.ndarray:
    """argmin_B ||X - X B||^2 + lam ||B||^2 s.t. diag(B) = 0, column by column in float64:
    column j regresses X_j on the other columns (ridge)."""
    n = x.shape[1]
    b = np.zeros((n, n))
    for j in range(n):
        others = np.delete(np.arange(n), j)
        a = x[:, others]
        b[others, j] = np.linalg.solve(a.T @ a + lam * np.eye(n - 1), a.T @ x[:, j])
    return b


def _trained(data: Ratings, lam: float) -> EASEModel:
    model = Model.split(build_ease(EASEConfig(l2=lam), data))
    train = {"user": data.user, "item": data.item, "label": data.rating}
    result = fit(model, train, RunConfig(epochs=1, quiet=True), task="regression", validate=None, monitor=None)
    return model.bind(result.params)


def test_one_sweep_is_the_dense_minimiser_and_the_baselines_b():
    data = _ratings()
    x = np.zeros((data.n_users, data.n_items))
    x[data.user, data.item] = 1.0
    module = _trained(data, 3.0)
    b = np.asarray(module.weights[...], np.float64)
    np.testing.assert_allclose(b, _dense_reference(x, 3.0), rtol=1e-4, atol=1e-5)
    assert np.all(np.diag(b) == 0)
    np.testing.assert_array_equal(b.astype(np.float32), EASE(3.0).fit(data).b_)


def test_pairs_ranking_vectors_and_fold_in_all_score_x_times_b():
    data = _ratings(1)
    module = _trained(data, 5.0)
    x = np.zeros((data.n_users, data.n_items), np.float32)
    x[data.user, data.item] = 1.0
    want = x.astype(np.float64) @ np.asarray(module.weights[...], np.float64)
    u, i = np.meshgrid(np.arange(data.n_users), np.arange(data.n_items), indexing="ij")
    pairs = np.asarray(module({"user": u.ravel(), "item": i.ravel()})).reshape(want.shape)
    np.testing.assert_allclose(pairs, want, rtol=1e-5, atol=1e-6)
    users, items = module.ranking_vectors()
    np.testing.assert_allclose(users @ items.T, want, rtol=1e-5, atol=1e-6)
    rows = module.fold_in(user_rows([np.flatnonzero(x[4]), np.flatnonzero(x[1])], data.n_items)[0])
    np.testing.assert_allclose(rows @ items.T, want[[4, 1]], rtol=1e-5, atol=1e-6)  # training users' scores
    liked = module.fold_in(*user_rows([[0, 1, 2]], data.n_items, [[5.0, 2.0, 4.0]]))  # rated above 3: 0, 2
    assert np.flatnonzero(liked[0]).tolist() == [0, 2]
    with pytest.raises(ValueError, match=f"{data.n_items + 1} columns"):
        module.fold_in(user_rows([[data.n_items]], data.n_items + 1)[0])


def test_sweep_reports_the_objective_and_bad_settings_are_refused():
    data = _ratings(2)
    module = build_ease(EASEConfig(l2=2.0), data)
    sweep = module.sweep_data({"user": data.user, "item": data.item})
    x = np.zeros((data.n_users, data.n_items))
    x[data.user, data.item] = 1.0
    b = _dense_reference(x, 2.0)
    nnz = x.sum()
    assert float(sweep["data_loss"]) == pytest.approx(np.sum((x - x @ b) ** 2) / nnz, rel=1e-4)
    assert float(sweep["loss"]) == pytest.approx((np.sum((x - x @ b) ** 2) + 2.0 * np.sum(b ** 2)) / nnz, rel=1e-4)
    with pytest.raises(ValueError, match="l2"):
        EASEConfig(l2=0.0)
    with pytest.raises(ValueError, match="bags"):
        EASEModel(EASEConfig(), np.array([[0, 5]]), n_items=3)
    params = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    assert not np.asarray(params["weights"]).any()  # B starts at zero: the sweep is the whole fit


def test_a_run_of_model_ease_trains_validates_by_ranking_and_reopens(tmp_path):
    from recjax.experiment import run
    from recjax.runs import Run

    data = _ratings(3, users=60, items=20)
    rng = np.random.default_rng(0)
    part = rng.choice(3, len(data.user), p=[0.7, 0.15, 0.15])
    splits = {name: data.subset(part == p) for p, name in enumerate(("train", "val", "test"))}
    cfg = RunConfig(model="ease", quiet=True, out=str(tmp_path / "run"))  # the family's one sweep
    result = run(cfg, EASEConfig(l2=5.0), splits=splits)
    assert result.metrics["epochs_run"] == 1 and 0 < result.metrics["val_ndcg@10"] <= 1
    assert np.isfinite(result.metrics["test_ndcg@10"])
    reopened = Run.open(tmp_path / "run").model()
    np.testing.assert_array_equal(np.asarray(reopened.weights[...]), np.asarray(result.module.weights[...]))
