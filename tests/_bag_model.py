"""A check shared by the models whose user is a bag of movies (softmax, Mult-DAE)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from recjax.data.jsonlines import PAD


def check_bag_shapes_and_invariance(model, n_items: int, dim: int) -> None:
    """Logits [B, n_items] and user vectors [B, dim]; padding and order change nothing."""
    bag = jnp.array([[0, 3, PAD, PAD], [5, PAD, PAD, PAD]])
    out = model({"bag": bag})
    assert out.shape == (2, n_items) and model.user_embedding(bag).shape == (2, dim)
    np.testing.assert_allclose(model({"bag": bag[:, :2]}), out, rtol=1e-5, atol=1e-6)
    # a bag is a set: order does not matter
    np.testing.assert_allclose(model({"bag": jnp.array([[3, 0]])})[0], out[0], rtol=1e-5, atol=1e-6)
