"""Optimisers and schedules from a RunConfig: values, training progress, clipping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recjax.config import OPTIMIZERS, SCHEDULES, RunConfig
from recjax.train.optim import make_optimizer, make_schedule

STEPS_PER_EPOCH = 5


def _lr(cfg: RunConfig, steps) -> list[float]:
    schedule = make_schedule(cfg, STEPS_PER_EPOCH)
    return [float(schedule(s)) for s in steps]


# ----------------------------------------------------------------------------- schedules
def test_constant_schedule():
    assert _lr(RunConfig(learning_rate=0.3, epochs=2), [0, 5, 10, 1000]) == pytest.approx([0.3] * 4)


def test_cosine_decays_to_zero_over_all_planned_steps():
    cfg = RunConfig(schedule="cosine", learning_rate=2.0, epochs=2)  # 10 planned steps
    got = _lr(cfg, [0, 5, 10, 20])
    assert got == pytest.approx([2.0, 1.0, 0.0, 0.0], abs=1e-6)
    # half way at step 5: lr/2 * (1 + cos(pi/2)) = lr/2; a quarter: lr/2 * (1 + cos(pi/4))
    assert _lr(cfg, [2.5])[0] == pytest.approx(1.0 * (1 + np.cos(np.pi / 4)), rel=1e-5)


def test_exponential_reaches_a_tenth_at_the_end():
    got = _lr(RunConfig(schedule="exponential", learning_rate=1.0, epochs=2), [0, 5, 10])
    assert got == pytest.approx([1.0, 0.1**0.5, 0.1], rel=1e-5)


def test_warmup_cosine():
    cfg = RunConfig(schedule="warmup_cosine", learning_rate=1.0, epochs=2, warmup_epochs=1)
    got = _lr(cfg, [0, 1, 5, 10])
    assert got == pytest.approx([0.0, 0.2, 1.0, 0.0], abs=1e-6)
    # warm-up then decay: rises to the peak, then never above it
    curve = _lr(cfg, range(11))
    assert max(curve) == pytest.approx(1.0) and np.argmax(curve) == 5
    assert all(x >= y - 1e-7 for x, y in zip(curve[5:], curve[6:]))


def test_warmup_cosine_without_warmup_starts_at_the_peak():
    got = _lr(RunConfig(schedule="warmup_cosine", learning_rate=1.0, epochs=2), [0, 5, 10])
    assert got == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)


def test_schedule_length_follows_epochs_and_steps():
    # twice the epochs: the cosine is half as far along at the same step
    short = _lr(RunConfig(schedule="cosine", learning_rate=1.0, epochs=2), [5])[0]
    long = _lr(RunConfig(schedule="cosine", learning_rate=1.0, epochs=4), [10])[0]
    assert short == pytest.approx(long, abs=1e-6) == pytest.approx(0.5, abs=1e-6)


# ----------------------------------------------------------------------------- optimisers train
# A tiny least-squares problem: minimise mean((X w - y)^2), 20 full-batch steps in one compile per
# optimiser/schedule pair.
_X = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
_Y = _X @ jnp.array([1.0, -2.0, 0.5]) + 0.3


def _loss(params):
    return jnp.mean((_X @ params["w"] + params["b"] - _Y) ** 2)


def _train(tx: optax.GradientTransformation, steps: int = 20) -> tuple[float, float]:
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}

    @jax.jit
    def run(params):
        def body(carry, _):
            p, s = carry
            grads = jax.grad(_loss)(p)
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
        return p

    return float(_loss(params)), float(_loss(run(params)))


@pytest.mark.parametrize(
    "optimizer, schedule",
    [(o, "constant") for o in OPTIMIZERS] + [("adam", s) for s in SCHEDULES if s != "constant"]
    + [("sgd", "warmup_cosine")],
)
def test_every_optimizer_and_schedule_reduces_the_loss(optimizer, schedule):
    extra = {"weight_decay": 1e-4} if optimizer == "adamw" else {}
    if schedule == "warmup_cosine":
        extra["warmup_epochs"] = 1
    lr = {"sgd": 0.05, "adagrad": 0.5}.get(optimizer, 0.1)
    cfg = RunConfig(optimizer=optimizer, schedule=schedule, learning_rate=lr, epochs=4, **extra)
    before, after = _train(make_optimizer(cfg, steps_per_epoch=5))
    assert np.isfinite(after)
    assert after < 0.5 * before, (before, after)


def test_adamw_weight_decay_shrinks_the_parameters():
    """With a zero gradient, adamw's only update is -lr * wd * w."""
    params = {"w": jnp.array([1.0, -2.0])}
    zero = {"w": jnp.zeros(2)}
    cfg = RunConfig(optimizer="adamw", learning_rate=0.1, weight_decay=0.5)
    tx = make_optimizer(cfg, 1)
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.05, 0.1], rtol=1e-6)
    plain = make_optimizer(RunConfig(optimizer="adam", learning_rate=0.1), 1)
    updates, _ = plain.update(zero, plain.init(params), params)
    np.testing.assert_allclose(updates["w"], [0.0, 0.0])


def test_sgd_update_is_minus_lr_times_the_gradient():
    tx = make_optimizer(RunConfig(optimizer="sgd", learning_rate=0.25), 1)
    grads = {"w": jnp.array([4.0, -8.0])}
    updates, _ = tx.update(grads, tx.init(grads))
    np.testing.assert_allclose(updates["w"], [-1.0, 2.0])


# ----------------------------------------------------------------------------- clipping
def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree))))


def test_grad_clip_limits_the_update_global_norm():
    # two leaves, global norm sqrt(3^2 + 4^2 + 12^2) = 13
    grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([12.0])}
    clipped = make_optimizer(RunConfig(optimizer="sgd", learning_rate=1.0, grad_clip=2.6), 1)
    updates, _ = clipped.update(grads, clipped.init(grads))
    norm = _norm(updates)
    assert norm == pytest.approx(2.6, rel=1e-6)
    # direction kept: the update is -grad scaled by 2.6 / 13 = 0.2
    np.testing.assert_allclose(updates["a"], [-0.6, -0.8], rtol=1e-6)
    np.testing.assert_allclose(updates["b"], [-2.4], rtol=1e-6)

    # below the threshold nothing changes
    small = {"a": jnp.array([0.3, 0.4]), "b": jnp.array([1.2])}
    updates, _ = clipped.update(small, clipped.init(small))
    np.testing.assert_allclose(updates["a"], [-0.3, -0.4], rtol=1e-6)

    # grad_clip=0 means no clipping
    free = make_optimizer(RunConfig(optimizer="sgd", learning_rate=1.0), 1)
    updates, _ = free.update(grads, free.init(grads))
    assert _norm(updates) == pytest.approx(13.0, rel=1e-6)


def test_grad_clip_comes_before_the_optimiser():
    """Clipping comes first: the optimiser's state accumulates the clipped gradient."""
    grads = {"a": jnp.array([300.0, 400.0])}
    cfg = RunConfig(optimizer="adagrad", learning_rate=1.0, grad_clip=1.0)
    tx = make_optimizer(cfg, 1)
    _, state = tx.update(grads, tx.init(grads))
    # adagrad accumulates the squared (clipped) gradient: 0.1 initial + (0.6^2, 0.8^2)
    accumulated = jax.tree.leaves(state)
    sums = [np.asarray(x) for x in accumulated if np.shape(x) == (2,)]
    assert any(np.allclose(s, [0.1 + 0.36, 0.1 + 0.64], rtol=1e-5) for s in sums), sums
