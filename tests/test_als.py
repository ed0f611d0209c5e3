"""The alternating-least-squares kernels and families (iALS, explicit ALS) against
dense NumPy float64 references: each solve is the exact minimiser of its regularised
weighted loss, CG converges to it, sweeps never increase the objective, planted
low-rank structure is recovered, and fold-in reproduces a training user's factors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recjax.config import RunConfig
from recjax.data.bags import user_rows
from recjax.models.als import ALS, IALS, ALSConfig, IALSConfig
from recjax.models.als_solvers import row_plan, side_plans, solve_side
from recjax.train.alternating import fit
from recjax.train.checkpoint import Checkpoints
from recjax.train.step import Model


def _pattern(seed: int = 0, users: int = 40, items: int = 30, density: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((users, items)) < density
    x[np.arange(users), rng.integers(0, items, users)] = True  # every user has an item
    return x


def _device(plan):
    return {k: jnp.asarray(v) for k, v in plan.items()}


def _ials_reference(x: np.ndarray, h: np.ndarray, a0: float, lam: float, nu: float) -> np.ndarray:
    """argmin_w sum_obs (1 - w.h)^2 + a0 sum_all (w.h)^2 + lam (n_u + a0 n_items)^nu |w|^2, per user,
    by the dense normal equations in float64."""
    out = []
    for row in x:
        v = h[row]
        reg = lam * (row.sum() + a0 * len(h)) ** nu
        out.append(np.linalg.solve(v.T @ v + a0 * h.T @ h + reg * np.eye(h.shape[1]), v.sum(0)))
    return np.array(out)


@pytest.mark.parametrize("width", [2, 3, None])  # rows cut into many segments, or few
@pytest.mark.parametrize("budget", [16, 41, 1 << 17])  # chunking never changes the answer
def test_cholesky_solve_is_the_exact_minimiser(budget, width):
    x = _pattern()
    rng = np.random.default_rng(1)
    h = rng.normal(size=(x.shape[1], 5))
    a0, lam, nu = 0.3, 0.05, 0.7
    users, items = np.nonzero(x)
    reg = lam * (x.sum(1) + a0 * x.shape[1]) ** nu
    plan = _device(row_plan(users, items, np.ones(len(users)), x.shape[0], budget=budget, width=width))
    got = solve_side(jnp.zeros((x.shape[0], 5)), jnp.asarray(h, jnp.float32),
                     jnp.asarray(a0 * h.T @ h, jnp.float32), plan, jnp.asarray(reg, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), _ials_reference(x, h, a0, lam, nu), rtol=1e-4, atol=1e-5)


def test_explicit_solve_with_offsets_is_the_ridge_minimiser():
    """ALS's half-step: targets r - offset[col], no Gramian, lambda n_u."""
    x = _pattern(2)
    rng = np.random.default_rng(3)
    q, offset = rng.normal(size=(x.shape[1], 4)), rng.normal(size=x.shape[1])
    ratings = rng.uniform(1, 5, x.shape)
    users, items = np.nonzero(x)
    reg = 0.1 * x.sum(1)
    plan = _device(row_plan(users, items, ratings[users, items], x.shape[0], budget=32))
    got = solve_side(jnp.zeros((x.shape[0], 4)), jnp.asarray(q, jnp.float32), jnp.zeros((4, 4)), plan,
                     jnp.asarray(reg, jnp.float32), fixed_offset=jnp.asarray(offset, jnp.float32))
    want = [np.linalg.solve(q[r].T @ q[r] + reg[u] * np.eye(4), q[r].T @ (ratings[u, r] - offset[r]))
            for u, r in enumerate(x)]
    np.testing.assert_allclose(np.asarray(got), np.array(want), rtol=1e-4, atol=1e-5)


def test_conjugate_gradient_converges_to_the_exact_solution():
    x = _pattern(4)
    rng = np.random.default_rng(5)
    h = rng.normal(size=(x.shape[1], 6))
    a0, lam = 0.2, 0.02
    users, items = np.nonzero(x)
    reg = jnp.asarray(lam * (x.sum(1) + a0 * x.shape[1]), jnp.float32)
    plan = _device(row_plan(users, items, np.ones(len(users)), x.shape[0], budget=64, width=4))
    want = _ials_reference(x, h, a0, lam, 1.0)
    w, errors = jnp.zeros((x.shape[0], 6)), []
    solve = jax.jit(lambda w: solve_side(w, jnp.asarray(h, jnp.float32), jnp.asarray(a0 * h.T @ h, jnp.float32),
                                         plan, reg, solver="cg", cg_steps=2))
    for _ in range(6):  # warm-started: each call continues from the last solution
        w = solve(w)
        errors.append(float(np.abs(np.asarray(w) - want).max()))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-3 * np.abs(want).max()


def _sweeps(module, train, n):
    params = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    data = module.sweep_data(train)
    sweep = jax.jit(module.sweep)
    losses = []
    for _ in range(n):
        params, metrics = sweep(params, data)
        losses.append(float(metrics["loss"]))
    return params, losses


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_ials_sweeps_never_increase_the_objective(solver):
    x = _pattern(6, 60, 40)
    users, items = np.nonzero(x)
    module = IALS(IALSConfig(embedding_dim=6, unobserved_weight=0.2, regularization=0.01, solver=solver),
                  60, 40, rngs=nnx.Rngs(0))
    _, losses = _sweeps(module, {"user": users, "item": items}, 8)
    assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.8 * losses[0]


def test_ials_loss_is_the_dense_objective():
    x = _pattern(7, 20, 15)
    users, items = np.nonzero(x)
    cfg = IALSConfig(embedding_dim=3, unobserved_weight=0.3, regularization=0.02, reg_exponent=0.5)
    params, losses = _sweeps(IALS(cfg, 20, 15, rngs=nnx.Rngs(1)), {"user": users, "item": items}, 1)
    w, h = (np.asarray(params[k], np.float64) for k in ("user_factors", "item_factors"))
    s = w @ h.T
    reg_w = cfg.regularization * (x.sum(1) + cfg.unobserved_weight * 15) ** cfg.reg_exponent
    reg_h = cfg.regularization * (x.sum(0) + cfg.unobserved_weight * 20) ** cfg.reg_exponent
    dense = (((1 - s) ** 2)[x].sum() + cfg.unobserved_weight * (s ** 2).sum()
             + (reg_w * (w ** 2).sum(1)).sum() + (reg_h * (h ** 2).sum(1)).sum())
    np.testing.assert_allclose(losses[0], dense / x.sum(), rtol=1e-4)


def test_als_loss_is_the_dense_objective():
    """The sweep's loss at nu 0.5: squared error plus lambda n^nu (||factors||^2 + bias^2) per row."""
    x = _pattern(3, 20, 15)
    users, items = np.nonzero(x)
    labels = np.random.default_rng(4).integers(1, 6, len(users)).astype(np.float32)
    cfg = ALSConfig(embedding_dim=3, regularization=0.2, reg_exponent=0.5)
    module = ALS(cfg, 20, 15, global_mean=float(labels.mean()), rngs=nnx.Rngs(2))
    params, losses = _sweeps(module, {"user": users, "item": items, "label": labels}, 1)
    p, q, bu, bi = (np.asarray(params[k], np.float64)
                    for k in ("user_factors", "item_factors", "user_bias", "item_bias"))
    predicted = labels.mean() + bu[users] + bi[items] + np.sum(p[users] * q[items], 1)
    reg_u = cfg.regularization * np.maximum(x.sum(1), 1) ** 0.5
    reg_i = cfg.regularization * np.maximum(x.sum(0), 1) ** 0.5
    dense = (np.sum((labels - predicted) ** 2) + np.sum(reg_u * ((p ** 2).sum(1) + bu ** 2))
             + np.sum(reg_i * ((q ** 2).sum(1) + bi ** 2)))
    np.testing.assert_allclose(losses[0], dense / len(labels), rtol=1e-4)


def _planted_ratings(seed: int = 0, users: int = 80, items: int = 60, rank: int = 3):
    rng = np.random.default_rng(seed)
    p, q = rng.normal(size=(users, rank)), rng.normal(size=(items, rank))
    bu, bi = rng.normal(0, 0.3, users), rng.normal(0, 0.3, items)
    full = 3.0 + bu[:, None] + bi[None, :] + 0.5 * p @ q.T
    mask = rng.random((users, items)) < 0.5
    return full, mask


def test_als_recovers_planted_low_rank_ratings_and_never_increases_its_objective():
    full, mask = _planted_ratings()
    users, items = np.nonzero(mask)
    module = ALS(ALSConfig(embedding_dim=3, regularization=1e-3), *full.shape, global_mean=full[mask].mean(),
                 rngs=nnx.Rngs(0))
    params, losses = _sweeps(module, {"user": users, "item": items, "label": full[mask]}, 25)
    assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:])), losses
    trained = Model.split(module).bind(params)
    u, i = np.nonzero(~mask)  # held-out entries of the planted matrix
    predicted = np.asarray(trained({"user": jnp.asarray(u), "item": jnp.asarray(i)}))
    rmse = np.sqrt(np.mean((predicted - full[u, i]) ** 2))
    assert rmse < 0.05 * full.std(), rmse


def test_ials_recovers_a_planted_block_structure():
    """Two user groups each interacting with their own half of the items: every user's
    top items are their group's."""
    rng = np.random.default_rng(0)
    x = np.zeros((40, 30), bool)
    for u in range(40):
        own = np.arange(15) + 15 * (u >= 20)
        x[u, rng.choice(own, 8, replace=False)] = True
    users, items = np.nonzero(x)
    module = IALS(IALSConfig(embedding_dim=4, unobserved_weight=0.1, regularization=1e-3, solver="cholesky"), 40, 30,
                  rngs=nnx.Rngs(0))
    params, _ = _sweeps(module, {"user": users, "item": items}, 10)
    scores = np.asarray(params["user_factors"]) @ np.asarray(params["item_factors"]).T
    scores[x] = -np.inf
    top = np.argsort(-scores, 1)[:, :3]
    assert ((top >= 15) == (np.arange(40) >= 20)[:, None]).all()


@pytest.mark.parametrize("family", ["ials", "als"])
def test_fold_in_of_a_training_user_reproduces_their_factors(family):
    x = _pattern(8, 50, 40, 0.3)
    users, items = np.nonzero(x)
    rng = np.random.default_rng(9)
    labels = rng.integers(1, 6, len(users)).astype(np.float32)
    if family == "ials":
        module = IALS(IALSConfig(embedding_dim=5, solver="cholesky"), 50, 40, rngs=nnx.Rngs(0))
    else:
        module = ALS(ALSConfig(embedding_dim=5, regularization=2.0, reg_exponent=0.5), 50, 40,
                     global_mean=float(labels.mean()), rngs=nnx.Rngs(0))
    params, _ = _sweeps(module, {"user": users, "item": items, "label": labels}, 200)
    nnx.update(module, params)
    user_vectors, _ = module.ranking_vectors()
    chosen = [0, 7, 31]
    rows, ratings = user_rows([items[users == u] for u in chosen], 40, [labels[users == u] for u in chosen])
    folded = module.fold_in(rows, ratings)  # the three users in one call
    np.testing.assert_allclose(folded, user_vectors[chosen], rtol=0, atol=3e-3)


def test_als_fold_in_needs_ratings_and_configs_refuse_bad_values():
    module = ALS(ALSConfig(embedding_dim=2), 3, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="ratings"):
        module.fold_in(user_rows([[0, 1]], 4)[0])
    with pytest.raises(ValueError, match="solver"):
        IALSConfig(solver="lu")
    with pytest.raises(ValueError, match="regularization"):
        ALSConfig(regularization=0.0)
    with pytest.raises(ValueError, match="reg_exponent"):
        ALSConfig(reg_exponent=-0.5)
    with pytest.raises(ValueError, match="row indices"):
        row_plan(np.array([0, 5]), np.array([0, 1]), np.ones(2), n_rows=3)


def test_fit_resumes_to_bitwise_the_same_parameters(tmp_path):
    x = _pattern(10, 30, 20)
    users, items = np.nonzero(x)
    train = {"user": users, "item": items, "label": np.ones(len(users), np.float32)}
    cfg = RunConfig(epochs=4, quiet=True, checkpoint_seconds=0.0)

    def model():
        return Model.split(IALS(IALSConfig(embedding_dim=3), 30, 20, rngs=nnx.Rngs(0)))

    whole = fit(model(), train, cfg, task="regression", validate=None, monitor=None,
                checkpoints=Checkpoints(tmp_path / "a"))
    fit(model(), train, RunConfig(epochs=2, quiet=True, checkpoint_seconds=0.0), task="regression",
        validate=None, monitor=None, checkpoints=Checkpoints(tmp_path / "b"))
    resumed = fit(model(), train, cfg, task="regression", validate=None, monitor=None,
                  checkpoints=Checkpoints(tmp_path / "b"), resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for name in ("user_factors", "item_factors"):
        np.testing.assert_array_equal(whole.params[name], resumed.params[name])


def test_a_plan_has_one_chunk_shape_and_places_every_entry_once():
    """Rows from 1 to 300 entries: one [C, S, W] shape (one compiled loop body per side,
    not one per length bucket), every row in one slot, every entry in one segment."""
    rng = np.random.default_rng(11)
    lengths = np.array([0, 1, 3, 8, 9, 40, 300])
    users = np.repeat(np.arange(len(lengths)), lengths)
    items = np.concatenate([rng.choice(400, n, replace=False) for n in lengths])
    plan = row_plan(users, items, np.arange(len(users), dtype=np.float32), len(lengths), budget=64)
    chunks, size, width = plan["cols"].shape
    assert width == 64 and size == 5 and chunks == 3  # mean length 51.6 -> W 64; 300 entries: 5 segments
    assert plan["rows"].shape == plan["slots"].shape == plan["counts"].shape == (chunks, size)
    assert sorted(plan["rows"][plan["rows"] < 1000].tolist()) == list(range(len(lengths)))
    assert plan["counts"].sum() == len(users)
    got = {}
    for c in range(chunks):
        for s in range(size):
            row = plan["rows"][c, plan["slots"][c, s]]
            for e in range(plan["counts"][c, s]):
                got[int(plan["values"][c, s, e])] = (int(row), int(plan["cols"][c, s, e]))
    assert got == {e: (int(u), int(i)) for e, (u, i) in enumerate(zip(users, items))}


def test_side_plans_keep_long_rows_out_of_the_small_chunks_and_solve_the_same():
    """Rows longer than a budget chunk go to a second plan: the first plan's chunks stay
    budget-sized; every row sits in exactly one plan; the half-sweep is the same as one plan's."""
    rng = np.random.default_rng(13)
    lengths = rng.integers(0, 7, 60)
    lengths[[4, 33]] = [45, 60]  # two rows longer than a 16-entry chunk
    users = np.repeat(np.arange(len(lengths)), lengths)
    items = np.concatenate([rng.choice(80, n, replace=False) for n in lengths])
    values = rng.normal(size=len(users)).astype(np.float32)
    light, heavy = side_plans(users, items, values, len(lengths), budget=16)
    assert light["cols"].shape[1] * light["cols"].shape[2] <= 16
    assert sorted(heavy["slot_rows"][heavy["slot_rows"] < len(lengths)].tolist()) == [4, 33]
    placed = np.concatenate([p["slot_rows"][p["slot_rows"] < len(lengths)] for p in (light, heavy)])
    assert sorted(placed.tolist()) == list(range(len(lengths)))
    assert light["counts"].sum() + heavy["counts"].sum() == len(users)
    (single,) = side_plans(users, items, values, len(lengths), budget=1 << 10)  # nothing long
    fixed = jnp.asarray(rng.normal(size=(80, 4)).astype(np.float32))
    table, reg = jnp.zeros((len(lengths), 4)), jnp.full(len(lengths), 0.3)
    for solver in ("cholesky", "cg"):
        split = solve_side(table, fixed, 0.1 * fixed.T @ fixed, (_device(light), _device(heavy)), reg,
                           solver=solver, residual=True)
        whole = solve_side(table, fixed, 0.1 * fixed.T @ fixed, (_device(single),), reg, solver=solver,
                           residual=True)
        np.testing.assert_allclose(split[0], whole[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(split[1], whole[1], rtol=1e-5)
    with pytest.raises(ValueError, match="row indices"):
        side_plans(np.array([0, 60]), np.array([0, 1]), np.ones(2), n_rows=60)


def test_ranking_validator_gives_the_ranking_protocols_metrics():
    """recjax.train.validation.ranking_validator of a trained iALS on val (train excluded)
    and test (train and val excluded) equals evaluate_ranking of the same parts."""
    from recjax.data.dataset import Ratings
    from recjax.evaluation.protocol import RankingTask, evaluate_ranking
    from recjax.train.validation import ranking_validator

    rng = np.random.default_rng(12)
    x = _pattern(12, 80, 50, density=0.25)
    users, items = np.nonzero(x)
    part = rng.choice(3, len(users), p=[0.7, 0.15, 0.15])
    parts = {name: Ratings.from_raw(users[part == p], items[part == p], np.ones((part == p).sum()),
                                    users=_vocab(80, "user"), items=_vocab(50, "item"))
             for p, name in enumerate(("train", "val", "test"))}
    inputs = {name: {"user": r.user, "item": r.item, "label": r.rating} for name, r in parts.items()}
    module = IALS(IALSConfig(embedding_dim=4), 80, 50, rngs=nnx.Rngs(0))
    params, _ = _sweeps(module, inputs["train"], 3)
    model = Model.split(module)
    evaluate = ranking_validator(model, inputs, k=10)
    trained = model.bind(params)
    val = evaluate(params, "val", "val_")
    test = evaluate(params, "test", "test_")
    want_val = evaluate_ranking(trained, RankingTask.from_ratings(parts["train"], parts["val"]), 10)
    want_test = evaluate_ranking(trained, RankingTask.from_ratings([parts["train"], parts["val"]],
                                                                   parts["test"]), 10)
    for got, want, prefix in ((val, want_val, "val_"), (test, want_test, "test_")):
        for name in ("ndcg@10", "recall@10", "precision@10", "map@10", "users"):
            assert got[prefix + name] == pytest.approx(want[name], abs=1e-12), name
    assert 0.05 < val["val_ndcg@10"] < 1 and evaluate(params, "train", "train_") == {}


def _vocab(n, kind):
    from recjax.data.dataset import Vocabulary

    return Vocabulary(np.arange(n, dtype=np.int64), kind)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.parametrize("offset", [False, True])
def test_a_half_sweeps_residual_is_the_observed_squared_error_at_its_solution(solver, offset):
    """solve_side(residual=True): the sum over the plan's entries of (target - <f, x>)^2 at
    the new x (the CG steps carry the entries' scores; Cholesky scores once more)."""
    x = _pattern(13)
    rng = np.random.default_rng(14)
    h = rng.normal(size=(x.shape[1], 5))
    bias = rng.normal(size=x.shape[1]) if offset else np.zeros(x.shape[1])
    users, items = np.nonzero(x)
    values = rng.uniform(0, 2, len(users))
    plan = _device(row_plan(users, items, values, x.shape[0], budget=41, width=3))
    w0 = jnp.asarray(rng.normal(size=(x.shape[0], 5)), jnp.float32)
    got, squared = solve_side(w0, jnp.asarray(h, jnp.float32), jnp.asarray(0.2 * h.T @ h, jnp.float32), plan,
                              jnp.full(x.shape[0], 0.5, jnp.float32), solver=solver, cg_steps=2, residual=True,
                              fixed_offset=jnp.asarray(bias, jnp.float32) if offset else None)
    w = np.asarray(got, np.float64)
    want = np.sum((values - bias[items] - np.sum(w[users] * h[items], 1)) ** 2)
    np.testing.assert_allclose(float(squared), want, rtol=1e-4)
    plain = solve_side(w0, jnp.asarray(h, jnp.float32), jnp.asarray(0.2 * h.T @ h, jnp.float32), plan,
                       jnp.full(x.shape[0], 0.5, jnp.float32), solver=solver, cg_steps=2,
                       fixed_offset=jnp.asarray(bias, jnp.float32) if offset else None)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(got))


def test_a_plans_chunks_are_evenly_full():
    """Ten one-segment rows at 8 segments a chunk: two chunks of 5, not 8 + 2 (a last
    chunk mostly padding is gathered and solved all the same)."""
    plan = row_plan(np.arange(10), np.zeros(10, np.int64), np.ones(10), 10, budget=64, width=8)
    assert plan["cols"].shape == (2, 5, 8)
    assert (plan["counts"] > 0).sum() == 10
    assert all((np.diff(s) >= 0).all() for s in plan["slots"])  # segments in slot order
