"""Losses checked by hand on tiny inputs: squared error, sigmoid BCE, softmax CE, masked_mean."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from recjax.train.losses import (
    TASK_LOSSES,
    masked_mean,
    sigmoid_binary_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
    squared_error,
)


def test_squared_error_by_hand():
    got = squared_error(jnp.array([1.0, 2.0, 9.0, -1.5]), jnp.array([0.0, 2.0, 4.0, 0.5]))
    np.testing.assert_allclose(got, [1.0, 0.0, 25.0, 4.0])
    assert got.shape == (4,)


def test_squared_error_is_elementwise_over_any_shape():
    p = jnp.arange(6.0).reshape(2, 3)
    got = squared_error(p, jnp.ones((2, 3)))
    np.testing.assert_allclose(got, [[1.0, 0.0, 1.0], [4.0, 9.0, 16.0]])


def test_sigmoid_bce_by_hand():
    logits = jnp.array([0.0, 2.0, -1.0, 3.0])
    labels = jnp.array([1.0, 1.0, 0.0, 0.0])
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    want = [
        -math.log(0.5),  # logit 0: p = 1/2 either way
        -math.log(sig(2.0)),
        -math.log(1.0 - sig(-1.0)),
        -math.log(1.0 - sig(3.0)),
    ]
    np.testing.assert_allclose(sigmoid_binary_cross_entropy(logits, labels), want, rtol=1e-6)


def test_sigmoid_bce_is_stable_for_large_logits():
    got = sigmoid_binary_cross_entropy(jnp.array([100.0, -100.0, 100.0]), jnp.array([1.0, 0.0, 0.0]))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, [0.0, 0.0, 100.0], atol=1e-6)


def test_softmax_ce_by_hand():
    logits = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, -5.0, 0.0]])
    labels = jnp.array([2, 1, 0])
    lse = [math.log(math.e + math.e**2 + math.e**3), math.log(3.0), math.log(math.exp(5) + math.exp(-5) + 1)]
    want = [lse[0] - 3.0, lse[1] - 0.0, lse[2] - 5.0]
    np.testing.assert_allclose(softmax_cross_entropy_with_integer_labels(logits, labels), want,
                               rtol=1e-6, atol=1e-6)


def test_softmax_ce_accepts_float_labels():
    # labels arrive as float32 columns from the data pipeline; they are cast to int
    logits = jnp.array([[0.0, math.log(3.0)]])
    got = softmax_cross_entropy_with_integer_labels(logits, jnp.array([1.0]))
    np.testing.assert_allclose(got, [-math.log(3.0 / 4.0)], rtol=1e-6)


def test_masked_mean_by_hand():
    values = jnp.array([1.0, 2.0, 9.0, 4.0])
    assert float(masked_mean(values)) == pytest.approx(4.0)
    assert float(masked_mean(values, where=jnp.array([1.0, 1.0, 0.0, 0.0]))) == pytest.approx(1.5)
    # weights are weights, not just a 0/1 mask: (2*1 + 1*2 + 1*4) / 4
    assert float(masked_mean(values, where=jnp.array([2.0, 1.0, 0.0, 1.0]))) == pytest.approx(2.0)
    # boolean masks work too
    assert float(masked_mean(values, where=jnp.array([False, False, True, True]))) == pytest.approx(6.5)


def test_masked_mean_all_masked_is_zero_not_nan():
    got = masked_mean(jnp.array([3.0, 7.0]), where=jnp.zeros(2))
    assert float(got) == 0.0


def test_masked_mean_ignores_nonfinite_free_padding_values():
    # padded rows hold real (finite) repeated values; weight 0 must drop them entirely
    values = jnp.array([1.0, 3.0, 1000.0])
    assert float(masked_mean(values, where=jnp.array([1, 1, 0]))) == pytest.approx(2.0)


def test_docstring_example_value():
    got = masked_mean(squared_error(jnp.array([1.0, 2.0, 9.0]), jnp.array([0.0, 2.0, 0.0])),
                      where=jnp.array([1.0, 1.0, 0.0]))
    assert float(got) == 0.5


def test_task_losses_table():
    assert TASK_LOSSES["regression"] is squared_error
    assert TASK_LOSSES["binary"] is sigmoid_binary_cross_entropy
    assert TASK_LOSSES["classification"] is softmax_cross_entropy_with_integer_labels
