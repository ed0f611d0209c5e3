"""Losses with optax-style signatures: elementwise over the last axis, ``where=`` masks.

Each ``*_loss`` returns per-example values; :func:`masked_mean` reduces them with
a weight mask, so padded examples (weight 0) never count.

Example
-------
>>> import jax.numpy as jnp
>>> from recjax.train.losses import squared_error, masked_mean
>>> float(masked_mean(squared_error(jnp.array([1., 2., 9.]), jnp.array([0., 2., 0.])),
...                   where=jnp.array([1., 1., 0.])))
0.5
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "squared_error",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "masked_mean",
]


def squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """``(predictions - targets)^2``, elementwise. Shapes [...]."""
    return jnp.square(predictions - targets)


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Binary cross-entropy of logits against {0, 1} labels, elementwise (numerically stable)."""
    return optax.sigmoid_binary_cross_entropy(logits, labels)


def softmax_cross_entropy_with_integer_labels(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of logits [..., C] against integer labels [...]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))


def masked_mean(values: jax.Array, where: jax.Array | None = None) -> jax.Array:
    """Mean of ``values`` [B] weighted by ``where`` [B] (0 = ignore); 0 when all are masked."""
    if where is None:
        return jnp.mean(values)
    where = where.astype(values.dtype)
    return jnp.sum(values * where) / jnp.maximum(jnp.sum(where), 1.0)


# task name -> per-example loss(predictions, labels)
TASK_LOSSES = {
    "regression": squared_error,
    "binary": sigmoid_binary_cross_entropy,
    "classification": softmax_cross_entropy_with_integer_labels,
}
