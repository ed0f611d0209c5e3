"""Mult-DAE (``--model dae``): a denoising autoencoder of each user's bag of movies.

Liang et al., "Variational Autoencoders for Collaborative Filtering" (WWW 2018),
the denoising variant. A user is the multi-hot vector ``x`` [n_items] of the
movies they rated. In training, ``x`` is L2-normalised and then passed through
dropout (each movie dropped with probability ``dropout``, the survivors scaled by
``1 / (1 - dropout)``); the encoder maps it through ``tanh`` layers of widths
``dims`` to a user vector ``h``, and the decoder gives logits over *all* movies,
``h @ V^T + b`` (``V`` an output table of its own, untied from the input one).
The loss is the multinomial log-likelihood of the whole bag, dropped movies
included: ``-sum_{i in bag} log softmax(logits)_i``, averaged over the batch's
(user, movie) pairs. At evaluation the bag goes in whole, without dropout.

Evaluation and inputs are the softmax model's (:mod:`recjax.models.softmax`):
for validation the bag is the user's training movies and the targets their
validation movies; for test the bag is training + validation movies. Ranking
(``recjax evaluate``) scores the logits, ``[h, 1] . [V_i, b_i]`` (:meth:`DAE.embeddings`).

Examples are users: ``--batch-size`` counts users. The model ignores rating
values (any rated movie is a positive): leave ``--task`` at its default.

Example
-------
>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from recjax.models.dae import DAEConfig, DAE
>>> model = DAE(DAEConfig(dims="8,4"), n_items=6, rngs=nnx.Rngs(0))
>>> model({"bag": jnp.array([[0, 3, -1], [5, -1, -1]])}).shape
(2, 6)
>>> model.user_embedding(jnp.array([[0, 3, -1]])).shape
(1, 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recjax.data.bags import bag_inputs
from recjax.data.dataset import Ratings
from recjax.data.jsonlines import PAD
from recjax.models.base import BagUser, parse_dims, table
from recjax.models.capabilities import Capabilities

__all__ = ["DAEConfig", "DAE"]


@dataclass(frozen=True)
class DAEConfig:
    """Mult-DAE hyper-parameters (defaults: the recommended ml-100k setting).

    Chosen on ub (NDCG@10 of the ranking protocol): dropout 0.7 beat 0.5 and 0.8;
    width 200 beat 100, 400 and 600,200; L2 did not help.
    """

    dims: str = field(
        default="200",
        metadata={"help": "comma-separated tanh encoder widths; the last is the user vector "
                          "size"})
    dropout: float = field(
        default=0.7,
        metadata={"help": "probability of dropping each movie of the input bag in training"})
    l2: float = field(
        default=0.0, metadata={"help": "L2 on every weight (sum of squares), biases excluded"})

    def __post_init__(self) -> None:
        if not parse_dims(self.dims):
            raise ValueError(f"dims must name at least one layer width, got {self.dims!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")


def bag_logits(logits: jax.Array, bag: jax.Array) -> jax.Array:
    """Two-column logits whose cross-entropy at label 0 is ``-log softmax(logits)[i]``.

    For every movie ``i`` of a row's bag, column 0 is ``logits[i]`` and column 1 the
    log-sum-exp of the row's other logits, so the training core's integer-label
    softmax cross-entropy gives the multinomial log-likelihood term of ``i`` without
    repeating the full row once per movie.

    Parameters
    ----------
    logits : [B, C]
    bag : int [B, L]
        Movie indices, ``PAD`` (-1) padded; padded entries give finite, unused rows.

    Returns
    -------
    [B * L, 2]
    """
    lse = jax.nn.logsumexp(logits, axis=1, keepdims=True)
    true = jnp.take_along_axis(logits, jnp.clip(bag, 0), axis=1)  # [B, L]
    gap = jnp.minimum(true - lse, -1e-6)  # log p_i < 0; the bound keeps log(1 - p_i) finite
    others = lse + jnp.log(-jnp.expm1(gap))
    return jnp.stack([true, others], axis=-1).reshape(-1, 2)


class DAE(BagUser, nnx.Module):
    """Encoder from a normalised bag of movies to a user vector; logits over all movies.

    Parameters
    ----------
    cfg : DAEConfig
    n_items : int
    rngs : nnx.Rngs

    A user is a bag of movies: it ranks the catalogue for a bag
    (``ranking_vectors(bag)``), embeds and folds in a new user (its encoder over their
    movies); it scores no single (user, item) pair (see :mod:`recjax.models.base`).
    """

    capabilities = Capabilities(ranks=True, embeds=True, bag=True, fold_in=True)

    def __init__(self, cfg: DAEConfig, n_items: int, *, rngs: nnx.Rngs) -> None:
        self.cfg, self.n_items = cfg, n_items
        dims = parse_dims(cfg.dims)
        init = jax.nn.initializers.glorot_normal()
        self.input_embedding = table(init(rngs.params(), (n_items, dims[0])))
        self.input_bias = nnx.Param(jnp.zeros(dims[0]))
        self.hidden = nnx.List()
        for width, next_width in zip(dims, dims[1:]):
            self.hidden.append(nnx.Linear(width, next_width, rngs=rngs))
        self.item_embedding = table(init(rngs.params(), (n_items, dims[-1])))
        self.item_bias = table(jnp.zeros(n_items))

    def user_embedding(self, bag: jax.Array, scale: jax.Array | None = None) -> jax.Array:
        """User vectors [B, dims[-1]] of bags of movie indices [B, L] (``PAD`` = -1).

        Each movie of the bag weighs ``scale`` [B] (default ``1 / sqrt(bag size)``:
        the L2-normalised multi-hot vector).
        """
        mask = (bag >= 0).astype(jnp.float32)
        if scale is None:
            scale = jax.lax.rsqrt(jnp.maximum(jnp.sum(mask, axis=1), 1.0))
        pooled = jnp.einsum("bl,bld->bd", mask, self.input_embedding[jnp.clip(bag, 0)])
        h = jnp.tanh(pooled * scale[:, None] + self.input_bias[...])
        for layer in self.hidden:
            h = jnp.tanh(layer(h))
        return h

    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits [B, n_items] of ``batch["bag"]``; after :meth:`augment`, the
        :func:`bag_logits` [B * L, 2] of the full bag ``batch["positives"]``."""
        user = self.user_embedding(batch["bag"], batch.get("scale"))
        logits = user @ self.item_embedding[...].T + self.item_bias[...]
        if "positives" not in batch:
            return logits
        return bag_logits(logits, batch["positives"])

    def augment(self, batch: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
        """Input dropout: drop each movie of the bag with probability ``dropout``.

        Returns the thinned ``bag``, its per-row ``scale`` (``1 / ((1 - dropout)
        sqrt(n))`` for a bag of ``n`` movies), the full bag as ``positives`` (the
        reconstruction targets), and one ``label`` (0) and ``weight`` per
        (user, bag position), padding at weight 0.
        """
        bag = batch["bag"]
        valid = bag >= 0
        keep = jax.random.uniform(key, bag.shape) >= self.cfg.dropout
        n = jnp.maximum(jnp.sum(valid, axis=1), 1).astype(jnp.float32)
        weight = (batch["weight"][:, None] * valid).reshape(-1)
        scale = jax.lax.rsqrt(n) / (1.0 - self.cfg.dropout)
        return {"bag": jnp.where(keep, bag, PAD), "scale": scale, "positives": bag,
                "label": jnp.zeros(weight.shape, jnp.int32), "weight": weight}

    def penalty(self, batch: dict[str, jax.Array]) -> jax.Array:
        """``l2`` times the sum of squares of every weight matrix (biases excluded)."""
        if not self.cfg.l2:
            return jnp.zeros(())
        weights = [self.input_embedding[...], self.item_embedding[...]] + [layer.kernel[...]
                                                                          for layer in self.hidden]
        return self.cfg.l2 * sum(jnp.sum(w ** 2) for w in weights)

    def row_lookups(self) -> dict[tuple, tuple[str, ...]]:
        """The tables by the batch fields indexing their rows (see :mod:`recjax.models.base`):
        the input table by the bag; the output table and biases give logits over the
        whole catalogue (dense), and ``l2`` reads every table (then none)."""
        return {} if self.cfg.l2 else {("input_embedding",): ("bag",)}

    def embeddings(self, inputs: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
        """(``[h, 1]`` of ``inputs["bag"]`` [n, d + 1], ``[V, b]`` [n_items, d + 1]): their dot
        products are the logits."""
        users = self.bag_users(inputs["bag"])
        users = jnp.concatenate([users, jnp.ones((users.shape[0], 1))], axis=1)
        items = jnp.concatenate([self.item_embedding[...], self.item_bias[...][:, None]], axis=1)
        return users, items


def dae_inputs(cfg: DAEConfig, splits: dict[str, Ratings]) -> dict[str, dict[str, np.ndarray]]:
    """Per-user examples: :func:`recjax.data.bags.bag_inputs` (whole bags), every
    user with at least one training movie trained on."""
    out = bag_inputs(splits, max_bag=0)
    out["train"]["weight"] = np.any(out["train"]["bag"] >= 0, axis=1).astype(np.float32)
    return out


def build_dae(cfg: DAEConfig, train: Ratings, task: str = "regression", seed: int = 0) -> DAE:
    """The Mult-DAE for a training part's movies."""
    return DAE(cfg, train.n_items, rngs=nnx.Rngs(seed))
