"""The pure train step, the one-call epoch (scan == Python loop, remainder batch,
full batch) and the chunked predict."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recjax.models.mf import MF, MFConfig
from recjax.train.step import (
    Model,
    TrainState,
    batch_layout,
    make_epoch,
    make_predict,
    make_train_step,
)


def _state(params: dict, tx: optax.GradientTransformation, seed: int = 0) -> TrainState:
    """A fresh TrainState with its own buffers (epochs donate their input)."""
    params = jax.tree.map(lambda x: jnp.array(np.asarray(x)), params)
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), jax.random.key(seed))


def _tree_close(a, b, rtol=1e-6, atol=1e-7) -> None:
    for name in a:
        np.testing.assert_allclose(np.asarray(a[name]), np.asarray(b[name]), rtol=rtol, atol=atol,
                                   err_msg=name)


# ----------------------------------------------------------------------------- layout
@pytest.mark.parametrize(
    "n, batch_size, want",
    [(10, 4, (4, 3)), (12, 4, (4, 3)), (10, 0, (10, 1)), (10, 32, (32, 1)), (1, 1, (1, 1)), (7, 1, (1, 7))],
)
def test_batch_layout(n, batch_size, want):
    assert batch_layout(n, batch_size) == want


# ----------------------------------------------------------------------------- scan vs loop
N_EX, BATCH = 23, 5  # 5 batches, the last with 3 real examples and 2 padded


def _mf_problem(task: str, **cfg):
    rng = np.random.default_rng(0)
    module = MF(MFConfig(embedding_dim=3, init_std=0.3, **cfg), 6, 8, global_mean=3.0, task=task,
                rngs=nnx.Rngs(0))
    labels = rng.integers(0, 2, N_EX) if task == "binary" else rng.integers(1, 6, N_EX)
    data = {"user": jnp.asarray(rng.integers(0, 6, N_EX), jnp.int32),
            "item": jnp.asarray(rng.integers(0, 8, N_EX), jnp.int32),
            "label": jnp.asarray(labels, jnp.float32)}
    return Model.split(module), data


def _python_loop_epoch(jitted_step, state, data, epoch_key, n, batch_size):
    """make_epoch's documented order, one step at a time."""
    size, n_batches = batch_layout(n, batch_size)
    order = np.asarray(jnp.resize(jax.random.permutation(epoch_key, n), size * n_batches))
    real = (np.arange(size * n_batches) < n).astype(np.float32)
    losses, counts = [], []
    data = {k: np.asarray(v) for k, v in data.items()}
    for b in range(n_batches):
        rows = order[b * size:(b + 1) * size]
        batch = {k: jnp.asarray(v[rows]) for k, v in data.items()}
        batch["weight"] = jnp.asarray(real[b * size:(b + 1) * size])
        state, metrics = jitted_step(state, batch)
        losses.append(float(metrics["data_loss"]))
        counts.append(real[b * size:(b + 1) * size].sum())
    return state, float(np.dot(losses, counts) / np.sum(counts))


@pytest.mark.parametrize(
    "task, cfg",
    [("regression", dict(l2=0.05, gravity=0.1)), ("binary", dict(l2=0.01, num_negatives=2))],
    ids=["regression", "binary-negatives"],
)
def test_epoch_scan_equals_python_loop(task, cfg):
    model, data = _mf_problem(task, **cfg)
    tx = optax.adam(0.05)
    step = make_train_step(model, tx, task)
    epoch = make_epoch(step, N_EX, BATCH)
    jitted_step = jax.jit(step)
    epoch_keys = jax.random.key(42)

    scanned, looped = _state(model.params, tx, 1), _state(model.params, tx, 1)
    for e in (1, 2):
        key = jax.random.fold_in(epoch_keys, e)
        scanned, metrics = epoch(scanned, data, key)
        looped, loop_loss = _python_loop_epoch(jitted_step, looped, data, key, N_EX, BATCH)
        assert float(metrics["data_loss"]) == pytest.approx(loop_loss, rel=1e-5)
    assert int(scanned.step) == int(looped.step) == 2 * 5
    _tree_close(scanned.params, looped.params)
    # and training moved the parameters (the comparison is not vacuous)
    assert not np.allclose(np.asarray(scanned.params["user_embedding"]), np.asarray(model.params["user_embedding"]))


def test_epoch_visits_a_fresh_permutation_each_epoch(own_params_problem):
    model, params, data, tx, step, epoch = own_params_problem
    k = jax.random.key(0)
    a, _ = epoch(4)(_state(params, tx), data, jax.random.fold_in(k, 1))
    b, _ = epoch(4)(_state(params, tx), data, jax.random.fold_in(k, 2))
    c, _ = epoch(4)(_state(params, tx), data, jax.random.fold_in(k, 1))
    _tree_close(a.params, c.params, rtol=0, atol=0)  # same key, same result
    # another key groups the examples into other batches: other updates
    assert not np.allclose(np.asarray(a.params["item_embedding"]), np.asarray(b.params["item_embedding"]))


# ----------------------------------------------------------------------------- every example once
# One user and one item per example, so each example's parameters get gradient from its
# own batch only: after one SGD epoch, a_j <- a_j - lr * 2 (a_j b_j - y_j) b_j w_j / W_batch(j)
N_OWN = 10
LR = 0.1


@pytest.fixture(scope="module")
def own_params_problem():
    module = MF(MFConfig(embedding_dim=1, user_bias=False, item_bias=False, global_mean=False, l2=0.0),
                N_OWN, N_OWN, rngs=nnx.Rngs(0))
    model = Model.split(module)
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 1.5, (N_OWN, 1)).astype(np.float32)
    b = rng.uniform(0.5, 1.5, (N_OWN, 1)).astype(np.float32)
    y = rng.uniform(1.0, 5.0, N_OWN).astype(np.float32)
    params = {"user_embedding": a, "item_embedding": b}
    data = {"user": jnp.arange(N_OWN, dtype=jnp.int32), "item": jnp.arange(N_OWN, dtype=jnp.int32),
            "label": jnp.asarray(y)}
    tx = optax.sgd(LR)
    step = make_train_step(model, tx, "regression")
    epochs = {}  # batch size -> compiled epoch, shared by the tests below

    def epoch(batch_size):
        if batch_size not in epochs:
            epochs[batch_size] = make_epoch(step, N_OWN, batch_size)
        return epochs[batch_size]

    return model, params, data, tx, step, epoch


def _expected_after_one_epoch(params, data, key, batch_size, weight=None):
    a = params["user_embedding"][:, 0].astype(np.float64)
    b = params["item_embedding"][:, 0].astype(np.float64)
    y = np.asarray(data["label"], np.float64)
    w = np.ones(N_OWN) if weight is None else np.asarray(weight, np.float64)
    size, n_batches = batch_layout(N_OWN, batch_size)
    order = np.asarray(jax.random.permutation(key, N_OWN))
    denom = np.empty(N_OWN)
    for start in range(0, N_OWN, size):  # the real examples of each batch, padding excluded
        rows = order[start:start + size]
        denom[rows] = max(w[rows].sum(), 1.0)
    residual = a * b - y
    new_a = a - LR * 2 * residual * b * w / denom
    new_b = b - LR * 2 * residual * a * w / denom
    return new_a, new_b, float(np.mean(residual**2))


@pytest.mark.parametrize("batch_size, n_steps", [(4, 3), (0, 1), (32, 1)],
                         ids=["10=4+4+2", "full-batch", "batch>n"])
def test_every_example_counts_exactly_once(own_params_problem, batch_size, n_steps):
    model, params, data, tx, step, epoch = own_params_problem
    key = jax.random.key(batch_size + 7)
    state, metrics = epoch(batch_size)(_state(params, tx), data, key)
    assert int(state.step) == n_steps
    new_a, new_b, mean_loss = _expected_after_one_epoch(params, data, key, batch_size)
    np.testing.assert_allclose(np.asarray(state.params["user_embedding"])[:, 0], new_a, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state.params["item_embedding"])[:, 0], new_b, rtol=1e-5)
    # every example's loss is taken before its own (only) update: the epoch mean is exact
    assert float(metrics["data_loss"]) == pytest.approx(mean_loss, rel=1e-5)
    assert float(metrics["loss"]) == pytest.approx(mean_loss, rel=1e-5)  # no penalty


def test_data_weights_multiply_the_padding_mask(own_params_problem):
    model, params, data, tx, step, epoch = own_params_problem
    weight = np.array([1.0, 2.0, 3.0, 1.0, 1.0, 2.0, 1.0, 4.0, 1.0, 2.0], np.float32)
    weighted = dict(data, weight=jnp.asarray(weight))
    key = jax.random.key(11)
    state, _ = epoch(4)(_state(params, tx), weighted, key)
    new_a, new_b, _ = _expected_after_one_epoch(params, data, key, 4, weight)
    np.testing.assert_allclose(np.asarray(state.params["user_embedding"])[:, 0], new_a, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state.params["item_embedding"])[:, 0], new_b, rtol=1e-5)


def test_full_batch_is_one_plain_gradient_step(own_params_problem):
    """batch_size=0: one step per epoch, on the gradient of the whole data set."""
    model, params, data, tx, step, epoch = own_params_problem
    full_batch = epoch(0)
    state = _state(params, tx)
    for e in range(3):
        state, _ = full_batch(state, data, jax.random.key(e))
        assert int(state.step) == e + 1
    # independent of the permutation: the same result for any epoch key
    other = _state(params, tx)
    for e in range(3):
        other, _ = full_batch(other, data, jax.random.key(100 + e))
    _tree_close(state.params, other.params, rtol=1e-6, atol=1e-7)


def test_train_step_metrics_and_counters(own_params_problem):
    model, params, data, tx, step, epoch = own_params_problem
    batch = dict(data, weight=jnp.ones(N_OWN))
    state = _state(params, tx, seed=5)
    new, metrics = jax.jit(step)(state, batch)
    assert sorted(metrics) == ["data_loss", "loss"]
    assert int(new.step) == 1
    np.testing.assert_array_equal(jax.random.key_data(new.key), jax.random.key_data(state.key))
    # the input state is untouched (the step is pure)
    np.testing.assert_array_equal(np.asarray(state.params["user_embedding"]), params["user_embedding"])


# ----------------------------------------------------------------------------- predict
def test_make_predict_chunks_and_matches_the_module():
    model, data = _mf_problem("regression", l2=0.0)
    direct = np.asarray(model.bind(model.params)({"user": data["user"], "item": data["item"]}))
    for chunk in (4, 23, 64):  # 23 = 5 chunks + 3, exact, one padded chunk
        predict = make_predict(model, chunk=chunk)
        got = np.asarray(predict(model.params, {"user": data["user"], "item": data["item"]}))
        assert got.shape == (N_EX,)
        np.testing.assert_allclose(got, direct, rtol=1e-6)


def test_model_bind_does_not_mutate():
    model, _ = _mf_problem("regression")
    before = jax.tree.map(np.array, model.params)
    zeros = jax.tree.map(jnp.zeros_like, model.params)
    bound = model.bind(zeros)
    assert float(jnp.sum(jnp.abs(bound.user_embedding[...]))) == 0.0
    for name in before:
        np.testing.assert_array_equal(np.asarray(model.params[name]), before[name])
    assert sorted(model.params) == ["item_bias", "item_embedding", "user_bias", "user_embedding"]
