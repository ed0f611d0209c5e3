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
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import nnx

from recjax.data.bags import check_user_items
from recjax.models.base import Constant, table
from recjax.models.capabilities import Capabilities
from recjax.models.fold_in import rating_ridge_users

__all__ = ["MFConfig", "MF"]


@dataclass(frozen=True)
class MFConfig:
    """Matrix factorisation hyper-parameters (defaults: the recommended ml-100k setting)."""

    embedding_dim: int = field(
        default=1024,
        metadata={"help": "factors per user and item (chosen on u1 and u2 validation)"})
    init_std: float = field(
        default=0.01, metadata={"help": "std of the normal initialisation of both tables"})
    user_bias: bool = field(default=True, metadata={"help": "learn b_u"})
    item_bias: bool = field(default=True, metadata={"help": "learn b_i"})
    global_mean: bool = field(
        default=True, metadata={"help": "add the training mean rating mu (fixed)"})
    squash: bool = field(
        default=False, metadata={"help": "sigmoid scaled to the rating range (regression only)"})
    l2: float = field(
        default=0.06,
        metadata={"help": "L2 on the rows looked up in a batch (mean over the batch)"})
    l2_table: float = field(
        default=0.0, metadata={"help": "L2 on the whole tables (sum of squares)"})
    gravity: float = field(default=0.0, metadata={"help": "weight of the lab's gravity term"})
    num_negatives: int = field(
        default=0, metadata={"help": "binary task: random items per example added as label 0"})

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

    It scores pairs, ranks the catalogue (:meth:`ranking_vectors`), embeds and folds
    in a new user (:meth:`fold_in`): see :mod:`recjax.models.base`.
    """

    capabilities = Capabilities(pairs=True, ranks=True, embeds=True, fold_in=True)

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
        self.l2 = Constant(jnp.float32(cfg.l2))  # a study's trials of other l2 share the compiled step

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
            total = total + self.l2[...] * jnp.sum(rows * weight) / jnp.maximum(jnp.sum(weight), 1.0)
        if cfg.l2_table:
            total = total + cfg.l2_table * (
                jnp.sum(self.user_embedding[...] ** 2) + jnp.sum(self.item_embedding[...] ** 2)
            )
        if cfg.gravity:
            total = total + cfg.gravity * gravity(self.user_embedding[...], self.item_embedding[...])
        return total

    def row_lookups(self) -> dict[tuple, tuple[str, ...]]:
        """The tables by the batch fields indexing their rows (see :mod:`recjax.models.base`);
        none when ``l2_table`` or ``gravity`` reads the whole tables."""
        if self.cfg.l2_table or self.cfg.gravity:
            return {}
        lookups = {("user_embedding",): ("user",), ("item_embedding",): ("item",)}
        if self.user_bias is not None:
            lookups[("user_bias",)] = ("user",)
        if self.item_bias is not None:
            lookups[("item_bias",)] = ("item",)
        return lookups

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

    def ranking_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(users [n_users, d(+1)], items [n_items, d(+1)]) float32 whose dot products rank
        the items like the model.

        A score is ``mu + b_u + b_i + <U_u, V_i>`` (possibly squashed by a monotone
        sigmoid); for one user only ``b_i + <U_u, V_i>`` changes the order, which is
        ``[U_u, 1] . [V_i, b_i]`` (without an item bias, ``U_u . V_i``).
        """
        users, items = (np.asarray(t, np.float32) for t in self.embeddings())
        if self.item_bias is not None:
            b = np.asarray(self.item_bias[...], np.float32)[:, None]
            users = np.hstack([users, np.ones((users.shape[0], 1), np.float32)])
            items = np.hstack([items, b])
        return users, items

    def fold_in(self, user_items: sp.csr_matrix, ratings: np.ndarray | None = None, *,
                binary_threshold: float = 3.0) -> np.ndarray:
        """Users not seen in training, against the frozen item table and biases.

        * regression: each user's factors and bias by ridge regression (the closed-form
          minimiser of the training objective for this user: squared error plus ``l2``
          per rating, biases included), all users in one batched call
          (:func:`recjax.models.fold_in.rating_ridge_users`); needs ``ratings``.
        * binary: L2-regularised logistic regression (Newton steps) of each user's
          positive items against every other item as a sampled negative would weigh it
          (``num_negatives`` per positive, uniform), user by user; ``ratings`` above
          ``binary_threshold`` count as positives when given, else every item does.

        Parameters
        ----------
        user_items : CSR [n, n_items]
            Each new user's items.
        ratings : float array [nnz], optional
            Their ratings, in ``user_items``' entry order.

        Returns
        -------
        float32 [n, d'], the user side of :meth:`ranking_vectors`: a user's scores are
        ``items @ user``.
        """
        check_user_items(user_items, ratings, self.n_items)
        counts = np.diff(user_items.indptr)
        if self.task == "regression":
            if ratings is None:
                raise ValueError("an MF rating run folds in a user from their ratings: pass "
                                 "new_user_ratings")
            return rating_ridge_users(self, self.item_embedding, self.item_bias,
                                      user_bias=self.user_bias is not None, offset=self.offset,
                                      user_items=user_items, ratings=ratings,
                                      reg=np.maximum(self.cfg.l2 * counts, 1e-9))
        q = np.asarray(self.item_embedding[...], np.float64)
        b = np.asarray(self.item_bias[...], np.float64) if self.item_bias is not None else np.zeros(len(q))
        users = np.zeros((len(counts), q.shape[1] + (self.item_bias is not None)), np.float32)
        for u in range(len(counts)):
            span = slice(user_items.indptr[u], user_items.indptr[u + 1])
            labels = (np.ones(counts[u]) if ratings is None
                      else (np.asarray(ratings[span], np.float64) > binary_threshold).astype(float))
            p = _logistic_fold_in(q, b, user_items.indices[span], labels, self.cfg.l2 * counts[u],
                                  self.cfg.num_negatives)
            users[u] = np.append(p, 1.0) if self.item_bias is not None else p
        return users


def _logistic_fold_in(q: np.ndarray, b: np.ndarray, index: np.ndarray, labels: np.ndarray,
                      lam: float, negatives: int, steps: int = 25) -> np.ndarray:
    """L2-regularised logistic regression of the user's labels over their items, plus
    every item as an expected uniform negative (``negatives`` per rated item); Newton."""
    n_items, d = q.shape
    x = np.vstack([q[index], q]) if negatives else q[index]
    offset = np.concatenate([b[index], b]) if negatives else b[index]
    y = np.concatenate([labels, np.zeros(n_items)]) if negatives else labels
    w = (np.concatenate([np.ones(len(index)), np.full(n_items, negatives * len(index) / n_items)])
         if negatives else np.ones(len(index)))
    p = np.zeros(d)
    lam = max(lam, 1e-6)
    for _ in range(steps):
        prob = 1.0 / (1.0 + np.exp(-(x @ p + offset)))
        grad = x.T @ (w * (prob - y)) + 2 * lam * p
        hess = (x * (w * prob * (1 - prob))[:, None]).T @ x + 2 * lam * np.eye(d)
        step = np.linalg.solve(hess, grad)
        p -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return p


def _logit(p: float) -> float:
    """The logit of ``p``, clipped away from 0 and 1: centres the squashed output on the mean."""
    p = min(max(p, 1e-3), 1 - 1e-3)
    return math.log(p / (1 - p))
