"""Matrix factorisation: ``r_ui ≈ mu + b_u + b_i + <U_u, V_i>``, trained on observed pairs only.

Everything the notebooks do, as switches of one Flax NNX module:

* biases (``user_bias``, ``item_bias``, ``global_mean``) each switchable;
* ``squash``: a sigmoid scaled to the rating range (the Keras notebook's output);
* ``init_std`` of the embeddings (the Google lab shows it matters);
* regularisation: ``l2`` on the rows looked up by a batch (averaged over the
  batch, biases included), ``l2_table`` on the full tables, and the lab's
  ``gravity`` term ``(1 / (N M)) sum_{u,i} <U_u, V_i>^2``, computed as the
  Frobenius product of ``U^T U`` and ``V^T V`` (never the N x M matrix);
* task ``regression`` (predict the rating) or ``binary`` (a logit for
  "recommend or not"; ``num_negatives`` random items per example are added as
  label 0, the implicit-feedback variant).

Memory per step is O(batch x dim) plus the tables.

Example
-------
>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from recjax.models.mf import MF, MFConfig
>>> model = MF(MFConfig(embedding_dim=4), n_users=3, n_items=5, global_mean=3.5,
...            rating_scale=(1.0, 5.0), rngs=nnx.Rngs(0))
>>> model({"user": jnp.array([0, 2]), "item": jnp.array([1, 4])}).shape
(2,)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from recjax.models.base import table

__all__ = ["MFConfig", "MF", "gravity"]


@dataclass(frozen=True)
class MFConfig:
    """Matrix factorisation hyper-parameters (defaults: the recommended ml-100k setting)."""

    embedding_dim: int = 1024  # factors per user and item (chosen on u1 and u2 validation)
    init_std: float = 0.01  # std of the normal initialisation of both tables
    user_bias: bool = True  # learn b_u
    item_bias: bool = True  # learn b_i
    global_mean: bool = True  # add the training mean rating mu (fixed)
    squash: bool = False  # sigmoid scaled to the rating range (regression only)
    l2: float = 0.06  # L2 on the rows looked up in a batch (mean over the batch)
    l2_table: float = 0.0  # L2 on the whole tables (sum of squares)
    gravity: float = 0.0  # weight of the lab's gravity term
    num_negatives: int = 0  # binary task: random items per example added as label 0

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        for name in ("init_std", "l2", "l2_table", "gravity", "num_negatives"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def gravity(user_table: jax.Array, item_table: jax.Array) -> jax.Array:
    """``(1 / (N M)) * sum_{u,i} <U_u, V_i>^2`` via ``<U^T U, V^T V>_F``; tables [N, d], [M, d]."""
    n, m = user_table.shape[0], item_table.shape[0]
    return jnp.sum((user_table.T @ user_table) * (item_table.T @ item_table)) / (n * m)


class MF(nnx.Module):
    """Biased matrix factorisation over user and item indices.

    Parameters
    ----------
    cfg : MFConfig
    n_users, n_items : int
        Table sizes (the dataset's vocabularies).
    global_mean : float
        The training mean rating (used when ``cfg.global_mean`` and task is regression).
    rating_scale : (float, float)
        Range for ``squash``.
    task : {"regression", "binary"}
    rngs : nnx.Rngs
    """

    def __init__(
        self, cfg: MFConfig, n_users: int, n_items: int, *, global_mean: float = 0.0,
        rating_scale: tuple[float, float] = (1.0, 5.0), task: str = "regression",
        rngs: nnx.Rngs,
    ) -> None:
        if cfg.squash and task != "regression":
            raise ValueError("squash applies to the regression task only")
        if cfg.num_negatives and task != "binary":
            raise ValueError("num_negatives applies to the binary task only")
        self.cfg, self.task, self.n_items = cfg, task, n_items
        init = jax.nn.initializers.normal(cfg.init_std)
        self.user_embedding = table(init(rngs.params(), (n_users, cfg.embedding_dim)))
        self.item_embedding = table(init(rngs.params(), (n_items, cfg.embedding_dim)))
        self.user_bias = table(jnp.zeros(n_users)) if cfg.user_bias else None
        self.item_bias = table(jnp.zeros(n_items)) if cfg.item_bias else None
        use_mean = cfg.global_mean and task == "regression"
        self.offset = float(global_mean) if use_mean else 0.0
        self.rating_scale = tuple(float(x) for x in rating_scale)

    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        """Predicted ratings (regression) or logits (binary), shape [B]."""
        user, item = batch["user"], batch["item"]
        score = jnp.sum(self.user_embedding[user] * self.item_embedding[item], axis=-1)
        if self.user_bias is not None:
            score = score + self.user_bias[user]
        if self.item_bias is not None:
            score = score + self.item_bias[item]
        if self.cfg.squash:
            low, high = self.rating_scale
            return low + (high - low) * jax.nn.sigmoid(score + _logit((self.offset - low) / (high - low)))
        return score + self.offset

    def penalty(self, batch: dict[str, jax.Array]) -> jax.Array:
        """The configured regularisation for this batch (a scalar)."""
        cfg, total = self.cfg, jnp.zeros(())
        if cfg.l2:
            user, item = batch["user"], batch["item"]
            rows = jnp.sum(self.user_embedding[user] ** 2, -1) + jnp.sum(self.item_embedding[item] ** 2, -1)
            if self.user_bias is not None:
                rows = rows + self.user_bias[user] ** 2
            if self.item_bias is not None:
                rows = rows + self.item_bias[item] ** 2
            weight = batch.get("weight", jnp.ones_like(rows))
            total = total + cfg.l2 * jnp.sum(rows * weight) / jnp.maximum(jnp.sum(weight), 1.0)
        if cfg.l2_table:
            total = total + cfg.l2_table * (
                jnp.sum(self.user_embedding[...] ** 2) + jnp.sum(self.item_embedding[...] ** 2)
            )
        if cfg.gravity:
            total = total + cfg.gravity * gravity(self.user_embedding[...], self.item_embedding[...])
        return total

    def augment(self, batch: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
        """Binary task: append ``num_negatives`` random items per example as label 0."""
        k = self.cfg.num_negatives
        if not k:
            return batch
        negatives = jax.random.randint(key, (k * batch["item"].shape[0],), 0, self.n_items)
        return {
            "user": jnp.concatenate([batch["user"], jnp.tile(batch["user"], k)]),
            "item": jnp.concatenate([batch["item"], negatives]),
            "label": jnp.concatenate([batch["label"], jnp.zeros_like(negatives, batch["label"].dtype)]),
            "weight": jnp.concatenate([batch["weight"], jnp.tile(batch["weight"], k)]),
        }

    def embeddings(self) -> tuple[jax.Array, jax.Array]:
        """(user table [n_users, d], item table [n_items, d]) for retrieval."""
        return self.user_embedding[...], self.item_embedding[...]


def _logit(p: float) -> float:
    """The logit of ``p``, clipped away from 0 and 1: centres the squashed output on the mean."""
    p = min(max(p, 1e-3), 1 - 1e-3)
    return math.log(p / (1 - p))
