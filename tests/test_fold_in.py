"""Batched fold-in (recjax.models.fold_in) against independent float64 solves and trained truths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import recjax.models.fold_in as fold_in_module
from recjax.config import RunConfig
from recjax.data import Ratings
from recjax.data.bags import user_rows
from recjax.evaluation.strong import StrongTask
from recjax.models.als import IALS, IALSConfig
from recjax.models.baselines import EASE
from recjax.models.fold_in import fixed_side, solve_new_rows
from recjax.models.mf import MF, MFConfig
from recjax.train.loop import fit
from recjax.train.step import Model


def _ridge(f: np.ndarray, y: np.ndarray, reg: float, gram: np.ndarray | None) -> np.ndarray:
    """The float64 solve of ``(G + F^T F + reg I) x = F^T y``."""
    k = f.shape[1]
    a = f.T @ f + reg * np.eye(k) + (0 if gram is None else gram)
    return np.linalg.solve(a, f.T @ y)


@pytest.mark.parametrize("with_gram", [False, True])
def test_every_row_is_its_own_ridge_solve_whatever_the_batching(monkeypatch, with_gram):
    rng = np.random.default_rng(3)
    n_items, k = 400, 16
    table = rng.normal(size=(n_items, k)).astype(np.float32)
    gram = 0.5 * table.T.astype(np.float64) @ table if with_gram else None
    # lengths on both sides of k (the dual and the primal form) and over several widths
    lengths = [1, 3, 8, 9, 15, 16, 17, 40, 250, 2, 5]
    items = [rng.choice(n_items, size=n, replace=False) for n in lengths]
    targets = [rng.normal(size=n) for n in lengths]
    reg = rng.uniform(0.5, 3.0, len(lengths))
    rows, flat = user_rows(items, n_items, targets)
    # a budget so small that each width is cut into several batches
    monkeypatch.setattr(fold_in_module, "BATCH_BYTES", 4 * 17 * (16 * 16 + 16 * 16) * 2)
    got = solve_new_rows(fixed_side(table, gram), rows, flat, reg)
    for u, (mine, y) in enumerate(zip(items, targets)):
        want = _ridge(table[mine].astype(np.float64), y, reg[u], gram)
        np.testing.assert_allclose(got[u], want, rtol=2e-3, atol=2e-4 * np.abs(want).max())


def test_ials_fold_in_is_the_weighted_solve_against_every_item():
    module = IALS(IALSConfig(embedding_dim=8, init_std=1.0), 4, 60, rngs=nnx.Rngs(1))
    h = np.asarray(module.item_factors[...], np.float64)
    cfg = module.cfg
    items = [[0, 5, 9], list(range(10, 40)), [59]]
    got = module.fold_in(user_rows(items, 60)[0])
    for u, mine in enumerate(items):
        # the iALS objective for one user, by definition: sum over their items of (1 - <w, h_i>)^2,
        # plus alpha0 <w, h_i>^2 over every item, plus reg ||w||^2; its normal equations
        reg = cfg.regularization * (len(mine) + cfg.unobserved_weight * 60) ** cfg.reg_exponent
        a = h[mine].T @ h[mine] + cfg.unobserved_weight * h.T @ h + reg * np.eye(8)
        want = np.linalg.solve(a, h[mine].sum(0))
        np.testing.assert_allclose(got[u], want, rtol=1e-3, atol=1e-5)


@pytest.fixture(scope="module")
def trained_mf():
    """MF trained full-batch to its optimum on a small dense-ish rating matrix: (module,
    users, items, ratings)."""
    rng = np.random.default_rng(0)
    n_users, n_items = 12, 30
    users, items = np.nonzero(rng.random((n_users, n_items)) < 0.5)
    ratings = np.clip(np.round(3 + rng.normal(size=len(users)) + 0.5 * (items % 3)), 1, 5).astype(np.float32)
    module = MF(MFConfig(embedding_dim=3, l2=0.05, init_std=0.3), n_users, n_items,
                global_mean=float(ratings.mean()), rngs=nnx.Rngs(0))
    model = Model.split(module)
    cfg = RunConfig(optimizer="adam", epochs=3000, batch_size=len(users), learning_rate=0.02, quiet=True,
                    checkpoint_seconds=1e9)
    result = fit(model, {"user": users, "item": items, "label": ratings}, cfg, task="regression",
                 validate=None, monitor=None)
    return model.bind(result.params), users, items, ratings


def test_mf_fold_in_of_a_training_user_reproduces_their_trained_factors_and_bias(trained_mf):
    module, users, items, ratings = trained_mf
    chosen = [0, 5, 11]
    rows, flat = user_rows([items[users == u] for u in chosen], module.n_items,
                           [ratings[users == u] for u in chosen])
    folded = module.fold_in(rows, flat)
    trained = np.asarray(module.user_embedding[...])[chosen]
    bias = np.asarray(module.user_bias[...])[chosen]
    # MF folds in as [p_u, 1] (scored against [q_i, b_i]); its bias b_u is a constant per user:
    # the trained user's predictions of their own items are reproduced, bias included
    np.testing.assert_allclose(folded[:, :3], trained, atol=2e-3)
    q, b = np.asarray(module.item_embedding[...]), np.asarray(module.item_bias[...])
    for r, u in enumerate(chosen):
        mine = items[users == u]
        with_bias = _mf_user_bias(module, rows[r].indices, flat[rows.indptr[r]: rows.indptr[r + 1]])
        np.testing.assert_allclose(with_bias, bias[r], atol=2e-3)
        np.testing.assert_allclose(q[mine] @ folded[r, :3] + b[mine], q[mine] @ trained[r] + b[mine], atol=5e-3)


def _mf_user_bias(module, mine: np.ndarray, rating: np.ndarray) -> float:
    """The user bias the fold-in's solution implies: the stationary point of the training
    objective in b_u with the folded factors fixed (independent of the solver)."""
    folded = module.fold_in(*user_rows([mine], module.n_items, [rating]))[0, :-1]
    q, b = np.asarray(module.item_embedding[...], np.float64), np.asarray(module.item_bias[...], np.float64)
    residual = rating - module.offset - b[mine] - q[mine] @ folded
    return float(residual.sum() / (len(mine) + module.cfg.l2 * len(mine)))


def test_mf_fold_in_is_a_stationary_point_of_the_training_objective(trained_mf):
    """The gradient of MF's own training loss (predictions and penalty, as the train step
    computes them) in a folded-in user's row is zero."""
    module, users, items, ratings = trained_mf
    mine = items[users == 4]
    rating = ratings[users == 4] - 0.5  # not the trained user: a new one
    folded = module.fold_in(*user_rows([mine], module.n_items, [rating]))[0, :-1]
    b_u = _mf_user_bias(module, mine, rating)
    batch = {"user": jnp.full(len(mine), 4), "item": jnp.asarray(mine), "label": jnp.asarray(rating)}

    model = Model.split(module)
    table, biases = jnp.asarray(module.user_embedding[...]), jnp.asarray(module.user_bias[...])

    def loss(p, bias):
        copy = model.bind({**model.params, "user_embedding": table.at[4].set(p),
                           "user_bias": biases.at[4].set(bias)})
        return jnp.mean((copy(batch) - batch["label"]) ** 2) + copy.penalty(batch)

    gp, gb = jax.grad(loss, argnums=(0, 1))(jnp.asarray(folded), jnp.float32(b_u))
    assert np.abs(np.asarray(gp)).max() < 1e-4 and abs(float(gb)) < 1e-4, (gp, gb)


def test_strong_protocol_folds_ease_users_in_from_their_folded_items_only():
    """Each held-out user's ranking is their folded-in 80% times B, by hand (a user row that
    also read the held-out 20% would rank differently)."""
    rng = np.random.default_rng(5)
    n_users, n_items = 80, 40
    pattern = rng.random((n_users, n_items)) < 0.3
    pattern[:, :3] = True  # every user has positives
    users, items = np.nonzero(pattern)
    data = Ratings.from_raw(users, items, np.full(len(users), 5.0))
    train = data.subset(np.flatnonzero(data.users.ids[data.user] < 60))
    held = data.subset(np.flatnonzero(data.users.ids[data.user] >= 60))
    task = StrongTask.from_ratings(train, held, seed=0)
    ease = EASE(5.0).fit(train)
    top = task.rank(ease, 10)
    scores = task.fold.toarray().astype(np.float64) @ ease.b_.astype(np.float64)
    scores[task.exclude.toarray() > 0] = -np.inf
    want = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(top.ids, want)
