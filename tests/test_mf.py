"""Matrix factorisation: predictions and penalties by hand, gradients against finite
differences, the gravity term against its N x M definition, and recovery of planted
structure on synthetic data (regression and the binary, negative-sampling variant)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

from recjax.config import RunConfig
from recjax.data import holdout_split, synthetic_ratings
from recjax.metrics import auc, binary_metrics, rmse
from recjax.families import MODELS
from recjax.models.baselines import BiasModel
from recjax.models.mf import MF, MFConfig, gravity
from recjax.train.loop import fit
from recjax.train.losses import masked_mean
from recjax.train.step import Model, TrainState, make_predict, make_train_step

# A tiny model whose parameters we set by hand: 2 users, 3 items, 2 factors.
U = np.array([[1.0, 2.0], [0.0, 1.0]], np.float32)
V = np.array([[1.0, 0.0], [2.0, 1.0], [-1.0, 1.0]], np.float32)
BU = np.array([0.5, -0.5], np.float32)
BI = np.array([0.1, 0.2, 0.3], np.float32)
MU = 3.5
USERS = np.array([0, 0, 1, 1, 0], np.int32)
ITEMS = np.array([0, 1, 1, 2, 2], np.int32)
DOT = np.array([1.0, 4.0, 1.0, 1.0, 1.0])  # <U_u, V_i> of the pairs above, by hand


def tiny(task="regression", **cfg) -> tuple[Model, dict]:
    """(split model, hand-set params) for the 2 x 3 model above."""
    module = MF(MFConfig(embedding_dim=2, **cfg), 2, 3, global_mean=MU, rating_scale=(1.0, 5.0),
                task=task, rngs=nnx.Rngs(0))
    model = Model.split(module)
    params = {"user_embedding": U, "item_embedding": V}
    if "user_bias" in model.params:
        params["user_bias"] = BU
    if "item_bias" in model.params:
        params["item_bias"] = BI
    assert set(params) == set(model.params)
    return model, {k: jnp.asarray(v) for k, v in params.items()}


def predict(model: Model, params: dict, users=USERS, items=ITEMS) -> np.ndarray:
    return np.asarray(model.bind(params)({"user": jnp.asarray(users), "item": jnp.asarray(items)}))


# ----------------------------------------------------------------------------- predictions
def test_prediction_by_hand_full_model():
    model, params = tiny()
    want = MU + BU[USERS] + BI[ITEMS] + DOT
    np.testing.assert_allclose(predict(model, params), want, rtol=1e-6)
    # spot-check one pair entirely by hand: user 0, item 1: 3.5 + 0.5 + 0.2 + (1*2 + 2*1)
    assert predict(model, params)[1] == pytest.approx(8.2)


@pytest.mark.parametrize(
    "flags, want",
    [
        (dict(user_bias=False), MU + BI[ITEMS] + DOT),
        (dict(item_bias=False), MU + BU[USERS] + DOT),
        (dict(global_mean=False), BU[USERS] + BI[ITEMS] + DOT),
        (dict(user_bias=False, item_bias=False, global_mean=False), DOT),
    ],
    ids=["no-user-bias", "no-item-bias", "no-global-mean", "dot-only"],
)
def test_prediction_switches(flags, want):
    model, params = tiny(**flags)
    if not flags.get("user_bias", True):
        assert "user_bias" not in model.params
    if not flags.get("item_bias", True):
        assert "item_bias" not in model.params
    np.testing.assert_allclose(predict(model, params), want, rtol=1e-6)


def test_binary_task_ignores_global_mean():
    model, params = tiny(task="binary", global_mean=True)
    np.testing.assert_allclose(predict(model, params), BU[USERS] + BI[ITEMS] + DOT, rtol=1e-6)


def test_squash_by_hand_and_range():
    model, params = tiny(squash=True)
    score = BU[USERS] + BI[ITEMS] + DOT
    centre = math.log(0.625 / 0.375)  # logit((3.5 - 1) / (5 - 1))
    want = 1.0 + 4.0 / (1.0 + np.exp(-(score + centre)))
    np.testing.assert_allclose(predict(model, params), want, rtol=1e-6)

    zero = {k: jnp.zeros_like(v) for k, v in params.items()}
    # a zero score predicts the global mean exactly
    np.testing.assert_allclose(predict(model, zero), np.full(5, MU), rtol=1e-6)
    # huge scores saturate at the ends of the rating range, never beyond
    big = dict(zero, user_bias=jnp.array([100.0, -100.0]))
    out = predict(model, big, users=np.array([0, 1]), items=np.array([0, 0]))
    np.testing.assert_allclose(out, [5.0, 1.0], atol=1e-5)
    rng = np.random.default_rng(0)
    wild = {k: jnp.asarray(rng.normal(0, 5, v.shape), jnp.float32) for k, v in params.items()}
    out = predict(model, wild)
    assert np.all((out >= 1.0) & (out <= 5.0))


def test_squash_with_other_rating_scale():
    module = MF(MFConfig(embedding_dim=1, squash=True), 1, 1, global_mean=2.0, rating_scale=(0.5, 5.0),
                rngs=nnx.Rngs(0))
    model = Model.split(module)
    params = {"user_embedding": jnp.array([[0.0]]), "item_embedding": jnp.array([[0.0]]),
              "user_bias": jnp.array([1.0]), "item_bias": jnp.array([0.0])}
    p = (2.0 - 0.5) / 4.5
    want = 0.5 + 4.5 / (1.0 + math.exp(-(1.0 + math.log(p / (1 - p)))))
    assert predict(model, params, np.array([0]), np.array([0]))[0] == pytest.approx(want, rel=1e-6)


def test_embeddings_are_the_tables():
    model, params = tiny()
    users, items = model.bind(params).embeddings()
    np.testing.assert_array_equal(users, U)
    np.testing.assert_array_equal(items, V)


def test_initialisation():
    module = MF(MFConfig(embedding_dim=32, init_std=0.05), 400, 300, rngs=nnx.Rngs(3))
    users, items = (np.asarray(t) for t in module.embeddings())
    assert users.shape == (400, 32) and items.shape == (300, 32)
    assert users.std() == pytest.approx(0.05, rel=0.05) and items.std() == pytest.approx(0.05, rel=0.05)
    assert abs(users.mean()) < 0.005
    np.testing.assert_array_equal(module.user_bias[...], np.zeros(400))
    np.testing.assert_array_equal(module.item_bias[...], np.zeros(300))
    # the init is a function of the seed
    again = MF(MFConfig(embedding_dim=32, init_std=0.05), 400, 300, rngs=nnx.Rngs(3))
    other = MF(MFConfig(embedding_dim=32, init_std=0.05), 400, 300, rngs=nnx.Rngs(4))
    np.testing.assert_array_equal(again.embeddings()[0], users)
    assert not np.array_equal(other.embeddings()[0], users)


# ----------------------------------------------------------------------------- penalties
BATCH = {"user": jnp.asarray(USERS), "item": jnp.asarray(ITEMS),
         "label": jnp.array([4.0, 5.0, 3.0, 2.0, 1.0]), "weight": jnp.array([1.0, 2.0, 0.0, 1.0, 0.5])}


def _rows_by_hand() -> np.ndarray:
    """|U_u|^2 + |V_i|^2 + b_u^2 + b_i^2 of each pair in BATCH."""
    return (np.sum(U[USERS] ** 2, 1) + np.sum(V[ITEMS] ** 2, 1) + BU[USERS] ** 2 + BI[ITEMS] ** 2)


def test_l2_penalty_by_hand_weighted_by_batch_weight():
    model, params = tiny(l2=0.3)
    rows = _rows_by_hand()
    # rows: [1+5+1+.25+.01, 5+5+.25+.04, 1+5+.25+.04, 1+2+.25+.09, 5+2+.25+.09]
    np.testing.assert_allclose(rows, [6.26, 10.29, 6.29, 3.34, 7.34], rtol=1e-6)
    w = np.array([1.0, 2.0, 0.0, 1.0, 0.5])
    want = 0.3 * np.sum(rows * w) / w.sum()
    assert float(model.bind(params).penalty(BATCH)) == pytest.approx(want, rel=1e-6)
    # without a weight column every row counts once
    no_weight = {k: v for k, v in BATCH.items() if k != "weight"}
    assert float(model.bind(params).penalty(no_weight)) == pytest.approx(0.3 * rows.mean(), rel=1e-6)


def test_l2_penalty_skips_disabled_biases():
    model, params = tiny(l2=1.0, user_bias=False, item_bias=False)
    rows = np.sum(U[USERS] ** 2, 1) + np.sum(V[ITEMS] ** 2, 1)
    w = np.asarray(BATCH["weight"])
    assert float(model.bind(params).penalty(BATCH)) == pytest.approx(np.sum(rows * w) / w.sum(), rel=1e-6)


def test_l2_table_penalty_by_hand():
    model, params = tiny(l2=0.0, l2_table=0.1)
    # sum of squares of both tables: U: 1+4+0+1 = 6, V: 1+0+4+1+1+1 = 8
    assert float(model.bind(params).penalty(BATCH)) == pytest.approx(0.1 * 14.0, rel=1e-6)


def test_gravity_penalty_by_hand():
    model, params = tiny(l2=0.0, gravity=2.0)
    # all 6 dot products: user 0: (1, 4, 1), user 1: (0, 1, 1)
    brute = (1 + 16 + 1 + 0 + 1 + 1) / 6
    assert float(model.bind(params).penalty(BATCH)) == pytest.approx(2.0 * brute, rel=1e-6)


def test_penalties_add_up_and_default_is_zero():
    model, params = tiny(l2=0.3, l2_table=0.1, gravity=2.0)
    w = np.asarray(BATCH["weight"])
    want = 0.3 * np.sum(_rows_by_hand() * w) / w.sum() + 0.1 * 14.0 + 2.0 * 20.0 / 6
    assert float(model.bind(params).penalty(BATCH)) == pytest.approx(want, rel=1e-6)
    model, params = tiny(l2=0.0)
    assert float(model.bind(params).penalty(BATCH)) == 0.0


@pytest.mark.parametrize("n, m, d", [(7, 5, 3), (1, 9, 4), (6, 1, 1)])
def test_gravity_matches_brute_force(n, m, d):
    rng = np.random.default_rng(n * 100 + m)
    users = rng.normal(size=(n, d))
    items = rng.normal(size=(m, d))
    brute = sum(float(users[u] @ items[i]) ** 2 for u in range(n) for i in range(m)) / (n * m)
    got = float(gravity(jnp.asarray(users, jnp.float32), jnp.asarray(items, jnp.float32)))
    assert got == pytest.approx(brute, rel=1e-5)


# ----------------------------------------------------------------------------- gradients
def _objective_np(flat: dict, cfg: dict, batch: dict) -> float:
    """The MF training objective written out in float64 NumPy (independent of the model code)."""
    u, i = np.asarray(batch["user"]), np.asarray(batch["item"])
    y, w = np.asarray(batch["label"], np.float64), np.asarray(batch["weight"], np.float64)
    Uf, Vf, bu, bi = flat["user_embedding"], flat["item_embedding"], flat["user_bias"], flat["item_bias"]
    pred = MU + bu[u] + bi[i] + np.sum(Uf[u] * Vf[i], 1)
    loss = np.sum(w * (pred - y) ** 2) / max(w.sum(), 1.0)
    rows = np.sum(Uf[u] ** 2, 1) + np.sum(Vf[i] ** 2, 1) + bu[u] ** 2 + bi[i] ** 2
    loss += cfg["l2"] * np.sum(rows * w) / max(w.sum(), 1.0)
    loss += cfg["l2_table"] * (np.sum(Uf**2) + np.sum(Vf**2))
    loss += cfg["gravity"] * np.sum((Uf @ Vf.T) ** 2) / (Uf.shape[0] * Vf.shape[0])
    return float(loss)


def test_train_step_gradient_matches_float64_finite_differences():
    """One SGD(lr=1) step moves the parameters by exactly -grad; compare with central
    differences of the objective written by hand in float64."""
    cfg = dict(l2=0.1, l2_table=0.01, gravity=0.5)
    model, params = tiny(**cfg)
    flat = {k: np.asarray(v, np.float64) for k, v in params.items()}

    fd = {}
    eps = 1e-6
    for name, value in flat.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus = {k: v.copy() for k, v in flat.items()}
            minus = {k: v.copy() for k, v in flat.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            g[idx] = (_objective_np(plus, cfg, BATCH) - _objective_np(minus, cfg, BATCH)) / (2 * eps)
        fd[name] = g

    tx = optax.sgd(1.0)
    state = TrainState(params, tx.init(params), jnp.int32(0), jax.random.key(0))
    new_state, metrics = jax.jit(make_train_step(model, tx, "regression"))(state, BATCH)
    assert float(metrics["loss"]) == pytest.approx(_objective_np(flat, cfg, BATCH), rel=1e-5)
    for name in flat:
        step = np.asarray(params[name], np.float64) - np.asarray(new_state.params[name], np.float64)
        np.testing.assert_allclose(step, fd[name], rtol=2e-4, atol=2e-4, err_msg=name)
    # the row with weight 0 (user 1, item 1) contributes nothing: item 1 only gets
    # gradient from row 1 (user 0); the zero-weight row must not add to it
    assert np.any(fd["item_embedding"] != 0)


@pytest.mark.parametrize(
    "task, cfg",
    [
        ("regression", dict(squash=True, l2=0.1, l2_table=0.01, gravity=0.5)),
        ("binary", dict(l2=0.02, gravity=0.1, user_bias=False)),
    ],
    ids=["regression-squash-all-penalties", "binary"],
)
def test_objective_gradients_check_grads_float64(task, cfg):
    from recjax.train.losses import TASK_LOSSES

    loss_fn = TASK_LOSSES[task]
    with jax.enable_x64(True):
        module = MF(MFConfig(embedding_dim=3, init_std=0.5, **cfg), 4, 5, global_mean=3.0, task=task,
                    rngs=nnx.Rngs(1))
        model = Model.split(module)
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), model.params)
        labels = [1.0, 0.0, 1.0, 1.0] if task == "binary" else [4.0, 2.0, 5.0, 3.0]
        batch = {"user": jnp.array([0, 1, 3, 0]), "item": jnp.array([0, 4, 2, 4]),
                 "label": jnp.array(labels, jnp.float64), "weight": jnp.array([1.0, 2.0, 0.5, 1.0])}

        def objective(p):
            mod = model.bind(p)
            return masked_mean(loss_fn(mod(batch), batch["label"]), batch["weight"]) + mod.penalty(batch)

        objective = jax.jit(objective)  # op-by-op float64 evaluation is ~10x slower
        assert objective(params).dtype == jnp.float64
        check_grads(objective, (params,), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- augment
def test_augment_appends_negatives():
    module = MF(MFConfig(embedding_dim=2, num_negatives=2), 4, 7, task="binary", rngs=nnx.Rngs(0))
    batch = {"user": jnp.array([3, 1, 2]), "item": jnp.array([0, 5, 6]),
             "label": jnp.array([1.0, 0.0, 1.0]), "weight": jnp.array([1.0, 1.0, 0.0])}
    out = module.augment(batch, jax.random.key(5))
    assert {k: v.shape for k, v in out.items()} == {k: (9,) for k in batch}
    np.testing.assert_array_equal(out["user"], [3, 1, 2] * 3)
    np.testing.assert_array_equal(out["item"][:3], [0, 5, 6])
    assert np.all((np.asarray(out["item"][3:]) >= 0) & (np.asarray(out["item"][3:]) < 7))
    np.testing.assert_array_equal(out["label"], [1, 0, 1] + [0] * 6)
    # padding (weight 0) stays padding in its negatives too
    np.testing.assert_array_equal(out["weight"], [1, 1, 0] * 3)
    # deterministic in the key, different for another key
    np.testing.assert_array_equal(module.augment(batch, jax.random.key(5))["item"], out["item"])
    others = [np.asarray(module.augment(batch, jax.random.key(k))["item"][3:]) for k in range(6, 12)]
    assert any(not np.array_equal(o, out["item"][3:]) for o in others)


def test_augment_without_negatives_is_identity():
    module = MF(MFConfig(embedding_dim=2), 4, 7, task="binary", rngs=nnx.Rngs(0))
    batch = {"user": jnp.array([3]), "item": jnp.array([0]), "label": jnp.array([1.0]),
             "weight": jnp.array([1.0])}
    assert module.augment(batch, jax.random.key(0)) is batch


# ----------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(embedding_dim=0), "embedding_dim must be >= 1, got 0"),
        (dict(embedding_dim=-3), "embedding_dim must be >= 1"),
        (dict(l2=-0.1), "l2 must be >= 0, got -0.1"),
        (dict(l2_table=-1.0), "l2_table must be >= 0"),
        (dict(gravity=-1.0), "gravity must be >= 0"),
        (dict(init_std=-0.01), "init_std must be >= 0"),
        (dict(num_negatives=-1), "num_negatives must be >= 0"),
    ],
)
def test_mfconfig_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        MFConfig(**kwargs)


def test_mf_rejects_task_mismatched_options():
    with pytest.raises(ValueError, match="squash applies to the regression task only"):
        MF(MFConfig(squash=True), 2, 2, task="binary", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_negatives applies to the binary task only"):
        MF(MFConfig(num_negatives=1), 2, 2, task="regression", rngs=nnx.Rngs(0))


def test_model_registry_builds_mf_from_training_data(small_synthetic):
    data, _ = small_synthetic
    spec = MODELS["mf"]
    assert spec.config is MFConfig and set(spec.tasks) == {"regression", "binary"}
    module = spec.build(MFConfig(embedding_dim=3), data, seed=2)
    assert module.embeddings()[0].shape == (data.n_users, 3)
    assert module.embeddings()[1].shape == (data.n_items, 3)
    assert module.offset == pytest.approx(float(np.mean(data.rating)), rel=1e-6)
    assert module.rating_scale == (1.0, 5.0)
    binary = spec.build(MFConfig(embedding_dim=3), data, task="binary")
    assert binary.offset == 0.0 and binary.task == "binary"


# ----------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def planted():
    """Denser than `small_synthetic` (25k ratings: ~80 per user), so that estimation
    error stays small next to the noise floor; (data, truth, fit part, val, test)."""
    data, truth = synthetic_ratings(300, 200, 25_000, rank=4, noise_std=0.3, seed=7)
    split = holdout_split(data, 0.1, seed=0)
    fit_part, val, _ = holdout_split(split.train, 0.1, seed=1)
    return data, truth, fit_part, val, split.test


def _arrays(part, binary=False) -> dict[str, np.ndarray]:
    label = part.binary_labels(3.0) if binary else part.rating
    return {"user": part.user, "item": part.item, "label": label.astype(np.float32)}


def test_mf_recovers_planted_structure(planted):
    data, truth, fit_part, val, test = planted
    mcfg = MFConfig(embedding_dim=4, l2=0.002, init_std=0.1)
    model = Model.split(MF(mcfg, data.n_users, data.n_items, global_mean=float(fit_part.rating.mean()),
                           rngs=nnx.Rngs(0)))
    predict = make_predict(model, chunk=4096)
    v, t = _arrays(val), _arrays(test)
    cfg = RunConfig(optimizer="adam", epochs=60, batch_size=1024, learning_rate=0.02, patience=4, tolerance=1e-4,
                      quiet=True)
    result = fit(model, _arrays(fit_part), cfg, task="regression", monitor="val_rmse",
                 validate=lambda p: {"val_rmse": rmse(np.asarray(predict(p, v)), v["label"])})

    test_rmse = rmse(np.asarray(predict(result.params, t)), t["label"])
    floor = truth.noise_floor_rmse(test)
    assert 0.25 < floor < 0.32  # noise 0.3, a little less after clipping
    assert test_rmse <= floor + 0.05, (test_rmse, floor)
    # the biases alone cannot do this: the factors were recovered
    bias = BiasModel(5.0, 5.0).fit(fit_part)
    assert test_rmse < rmse(bias.predict(test.user, test.item), test.rating) - 0.3
    # ... for every (user, item) pair, not only the rated ones
    users, items = np.meshgrid(np.arange(data.n_users), np.arange(data.n_items), indexing="ij")
    users, items = users.ravel().astype(np.int32), items.ravel().astype(np.int32)
    every = np.asarray(predict(result.params, {"user": users, "item": items}))
    expected = truth.expected(users, items)
    assert np.corrcoef(every, expected)[0, 1] > 0.9
    # the history is a real one: validation improved on the first epoch's
    assert result.history[result.best_epoch - 1]["val_rmse"] < result.history[0]["val_rmse"] - 0.1
    assert 1 <= result.best_epoch <= len(result.history) <= cfg.epochs


def _fit_binary(planted, num_negatives):
    data, truth, fit_part, val, test = planted
    mcfg = MFConfig(embedding_dim=4, l2=0.002, init_std=0.1, num_negatives=num_negatives)
    model = Model.split(MF(mcfg, data.n_users, data.n_items, task="binary", rngs=nnx.Rngs(0)))
    predict = make_predict(model, chunk=4096)
    v = _arrays(val, binary=True)
    cfg = RunConfig(optimizer="adam", task="binary", epochs=60, batch_size=1024, learning_rate=0.02, patience=4,
                      tolerance=1e-4, quiet=True)
    result = fit(model, _arrays(fit_part, binary=True), cfg, task="binary", monitor="val_auc",
                 higher_is_better=True,
                 validate=lambda p: binary_metrics(np.asarray(predict(p, v)), v["label"], "val_"))
    return result, predict


@pytest.fixture(scope="module")
def binary_fits(planted):
    """{num_negatives: logits on the test pairs, on 5000 random (user, item) pairs}."""
    data, truth, fit_part, val, test = planted
    rng = np.random.default_rng(0)
    random_pairs = {"user": rng.integers(0, data.n_users, 5000).astype(np.int32),
                    "item": rng.integers(0, data.n_items, 5000).astype(np.int32)}
    t = _arrays(test, binary=True)
    out = {}
    for k in (0, 1):
        result, predict = _fit_binary(planted, num_negatives=k)
        out[k] = (np.asarray(predict(result.params, t)), np.asarray(predict(result.params, random_pairs)))
    return out, t["label"]


def test_mf_binary_with_negative_sampling_learns(binary_fits):
    fits, labels = binary_fits
    logits, random_logits = fits[1]
    # which observed pairs are liked (rating > 3): far above chance (0.5)
    assert auc(logits, labels) > 0.8
    # liked test pairs score above random (user, item) pairs
    assert np.mean(logits[labels == 1]) > np.mean(random_logits) + 0.3


def test_negative_sampling_pushes_random_pairs_down(binary_fits):
    fits, _ = binary_fits
    share_positive = {k: float(np.mean(random > 0)) for k, (_, random) in fits.items()}
    # without negatives most random pairs look liked (72% of the ratings are > 3); with one
    # sampled negative per example, few do
    assert share_positive[0] > 0.6 and share_positive[1] < 0.35, share_positive


def test_mf_binary_without_negatives_beats_majority_class(binary_fits):
    fits, labels = binary_fits
    metrics = binary_metrics(fits[0][0], labels)
    majority = max(labels.mean(), 1 - labels.mean())
    assert 0.6 < majority < 0.8
    assert metrics["accuracy"] > majority + 0.1
    assert metrics["auc"] > 0.9
