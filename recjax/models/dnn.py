"""The fast.ai notebook's deep model (``--model dnn``): concatenated embeddings through dense layers.

``[U_u, V_i] -> dropout(input_dropout) -> (Dense + ReLU -> dropout(dropout)) x len(hidden_dims)
-> Dense(1)``, with L2 on the looked-up embedding rows (``l2``, as MF's). The
output is a rating (regression; the output bias starts at the training mean) or
a logit (binary). Same training loop, metrics and run folder as MF.

The notebook: 50 factors, ``Dropout(0.3)``, ``Dense(70, relu)``, ``Dropout(0.75)``,
``Dense(1)``, L2 1e-4 on the embeddings (``--hidden-dims 70 --dropout 0.75``); the
defaults here (256 units, dropout 0.5, ``l2`` 0.01) were chosen on ml-100k validation.

Example
-------
>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from recjax.models.dnn import DNN, DNNConfig
>>> model = DNN(DNNConfig(embedding_dim=4, hidden_dims="8"), n_users=3, n_items=5, rngs=nnx.Rngs(0))
>>> model({"user": jnp.array([0, 2]), "item": jnp.array([1, 4])}).shape
(2,)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
from flax import nnx

from recjax.models.base import Constant, parse_dims, table
from recjax.models.capabilities import Capabilities

__all__ = ["DNNConfig", "DNN"]


@dataclass(frozen=True)
class DNNConfig:
    """Deep model hyper-parameters (defaults: the recommended ml-100k setting)."""

    embedding_dim: int = field(default=50, metadata={"help": "factors per user and item"})
    hidden_dims: str = field(
        default="256",
        metadata={"help": "comma-separated widths of the ReLU dense layers (\"\" = none)"})
    input_dropout: float = field(
        default=0.3, metadata={"help": "dropout on the concatenated embeddings"})
    dropout: float = field(default=0.5, metadata={"help": "dropout after each dense layer"})
    l2: float = field(
        default=0.01,
        metadata={"help": "L2 on the embedding rows looked up in a batch (mean over the "
                          "batch)"})
    init_std: float = field(
        default=0.05, metadata={"help": "std of the normal initialisation of both tables"})

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        parse_dims(self.hidden_dims)
        for name in ("input_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("l2", "init_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class DNN(nnx.Module):
    """User and item embeddings, concatenated, through dense layers to one output.

    Parameters
    ----------
    cfg : DNNConfig
    n_users, n_items : int
    global_mean : float
        Initial output bias (regression).
    task : {"regression", "binary"}
    rngs : nnx.Rngs

    It scores pairs and embeds; it is ranked by its dense scores (no ranking vectors
    through its ReLU layers) and cannot fold in a new user (see :mod:`recjax.models.base`).
    """

    capabilities = Capabilities(pairs=True, embeds=True)

    def __init__(self, cfg: DNNConfig, n_users: int, n_items: int, *, global_mean: float = 0.0,
                 task: str = "regression", rngs: nnx.Rngs) -> None:
        self.cfg, self.task, self.n_items = cfg, task, n_items
        init = jax.nn.initializers.normal(cfg.init_std)
        self.user_embedding = table(init(rngs.params(), (n_users, cfg.embedding_dim)))
        self.item_embedding = table(init(rngs.params(), (n_items, cfg.embedding_dim)))
        width = 2 * cfg.embedding_dim
        self.hidden = nnx.List()
        for dim in parse_dims(cfg.hidden_dims):
            self.hidden.append(nnx.Linear(width, dim, rngs=rngs))
            width = dim
        bias = float(global_mean) if task == "regression" else 0.0
        self.out = nnx.Linear(width, 1, bias_init=jax.nn.initializers.constant(bias), rngs=rngs)
        self.input_dropout = nnx.Dropout(cfg.input_dropout)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.l2 = Constant(jnp.float32(cfg.l2))  # a study's trials of other l2 share the compiled step

    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        """Predicted ratings (regression) or logits (binary), shape [B]."""
        h = jnp.concatenate([self.user_embedding[batch["user"]], self.item_embedding[batch["item"]]], -1)
        if train and self.cfg.input_dropout:
            h = self.input_dropout(h, deterministic=False, rngs=rngs)
        for layer in self.hidden:
            h = jax.nn.relu(layer(h))
            if train and self.cfg.dropout:
                h = self.dropout(h, deterministic=False, rngs=rngs)
        return self.out(h)[:, 0]

    def penalty(self, batch: dict[str, jax.Array]) -> jax.Array:
        """``l2`` times the batch mean of ``|U_u|^2 + |V_i|^2``."""
        if not self.cfg.l2:
            return jnp.zeros(())
        rows = (jnp.sum(self.user_embedding[batch["user"]] ** 2, -1)
                + jnp.sum(self.item_embedding[batch["item"]] ** 2, -1))
        weight = batch.get("weight", jnp.ones_like(rows))
        return self.l2[...] * jnp.sum(rows * weight) / jnp.maximum(jnp.sum(weight), 1.0)

    def row_lookups(self) -> dict[tuple, tuple[str, ...]]:
        """The tables by the batch fields indexing their rows (see :mod:`recjax.models.base`)."""
        return {("user_embedding",): ("user",), ("item_embedding",): ("item",)}

    def embeddings(self) -> tuple[jax.Array, jax.Array]:
        """(user table [n_users, d], item table [n_items, d])."""
        return self.user_embedding[...], self.item_embedding[...]
