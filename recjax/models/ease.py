"""EASE as a trained family (``--model ease``): the closed-form item-item model, in a run.

Steck's EASE (2019) scores user ``u``'s items by ``X_u B``, ``X`` the users x items
0/1 matrix of the training ratings and ``B`` [n_items, n_items] the zero-diagonal
minimiser of ``||X - X B||_F^2 + lambda ||B||_F^2``, in closed form
(:func:`recjax.models.baselines.ease_weights`, the one place it is computed; the
evaluation's EASE baseline uses it too). Here it is a module like the others, so a run
trains, saves, serves, blends and folds it in through the model contract
(:mod:`recjax.models.base`):

* training is one "sweep" (:func:`recjax.train.alternating.fit`, ``epochs=1``):
  ``sweep_data`` computes ``B`` from the training examples (NumPy float64, as the
  baseline) and ``sweep`` installs it; ``B`` starts at zero;
* a user is the bag of their training items (a constant of the module), so it
  ``pairs`` (``score(u, i) = sum_{j in X_u} B_ji``), ``ranks`` (ranking vectors
  ``(X, B^T)``) and folds in a new user as their row times ``B`` (``fold_in``);
* it ``embeds`` in the catalogue's own coordinates, not a learnt low-rank space:
  a user's "embedding" is their 0/1 row ``X_u`` [n_items], an item's is its column of
  ``B`` (``B^T_i`` [n_items]: the weight with which each other item predicts it), so
  that their dot product is the score, and item-item similarities (diversity,
  ``similar_items``) compare what predicts two items.

``B`` costs ``n_items^2`` floats and its solve ``O(n_items^3)``: catalogues up to a few
tens of thousands of items; :meth:`EASEModel.ranking_vectors` is dense [n_users, n_items].

Example
-------
>>> import numpy as np
>>> from flax import nnx
>>> from recjax.models.ease import EASEConfig, EASEModel
>>> model = EASEModel(EASEConfig(l2=1.0), bags=np.array([[0, 1], [1, -1]]), n_items=3)
>>> data = model.sweep_data({"user": np.array([0, 0, 1]), "item": np.array([0, 1, 1])})
>>> params, metrics = model.sweep(nnx.to_pure_dict(nnx.state(model, nnx.Param)), data)
>>> params["weights"].shape, sorted(metrics)
((3, 3), ['data_loss', 'loss'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import nnx

from recjax.data.bags import bags_from_csr, check_user_items, user_item_pattern
from recjax.data.dataset import Ratings
from recjax.data.jsonlines import PAD
from recjax.models.base import Constant
from recjax.models.capabilities import Capabilities
from recjax.models.baselines import ease_weights, interaction_rows

__all__ = ["EASEConfig", "EASEModel", "build_ease"]


@dataclass(frozen=True)
class EASEConfig:
    """EASE's one hyper-parameter."""

    l2: float = field(default=250.0, metadata={
        "help": "lambda, the L2 weight of B: 250 is the EASE ranking baseline's value "
                "(recjax.models.baselines.EASE, tuned there on ml-100k's ub split); not re-tuned here"})

    def __post_init__(self) -> None:
        if not self.l2 > 0:
            raise ValueError(f"l2 must be > 0, got {self.l2}")


class EASEModel(nnx.Module):
    """EASE's item-item weights ``B`` and the users' training bags (module docstring).

    Parameters
    ----------
    cfg : EASEConfig
    bags : int array [n_users, L]
        Each user's training items, ``PAD``-padded.
    n_items : int
    """

    capabilities = Capabilities(pairs=True, ranks=True, embeds=True, fold_in=True)

    def __init__(self, cfg: EASEConfig, bags: np.ndarray, n_items: int) -> None:
        bags = np.asarray(bags)
        if bags.ndim != 2 or (bags >= n_items).any() or (bags < PAD).any():
            raise ValueError(f"bags must be [n_users, L] item indices in [0, {n_items}) or PAD")
        self.cfg, self.n_users, self.n_items = cfg, int(bags.shape[0]), int(n_items)
        self.bags = Constant(jnp.asarray(bags, jnp.int32))
        self.weights = nnx.Param(jnp.zeros((n_items, n_items), jnp.float32))

    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        """Scores ``(X B)[user, item]`` [B] (ranking scores, not ratings)."""
        bag = self.bags[...][batch["user"]]                              # [B, L]
        rows = self.weights[...][jnp.maximum(bag, 0), batch["item"][:, None]]
        return jnp.sum(jnp.where(bag >= 0, rows, 0.0), axis=1)

    def penalty(self, batch: dict[str, jax.Array]) -> jax.Array:
        """For the gradient step (:mod:`recjax.train.step`): ``lambda ||B||^2`` shared over
        the users (the objective is a sum over users of ``||X_u - X_u B||^2``)."""
        return self.cfg.l2 * jnp.sum(self.weights[...] ** 2) / self.n_users

    def embeddings(self) -> tuple[jax.Array, jax.Array]:
        """(X dense [n_users, n_items], B^T [n_items, n_items]): the module docstring's
        catalogue coordinates, ``X_u . B^T_i = (X B)_ui``."""
        bags = self.bags[...]
        x = jnp.zeros((self.n_users, self.n_items), jnp.float32)
        x = x.at[jnp.arange(self.n_users)[:, None], jnp.maximum(bags, 0)].max((bags >= 0).astype(jnp.float32))
        return x, self.weights[...].T

    def ranking_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`embeddings` as float32 NumPy: their dot products are the scores."""
        users, items = self.embeddings()
        return np.asarray(users, np.float32), np.ascontiguousarray(np.asarray(items, np.float32))

    def fold_in(self, user_items: sp.csr_matrix, ratings: np.ndarray | None = None, *,
                binary_threshold: float = 3.0) -> np.ndarray:
        """New users: their 0/1 rows over the catalogue [n, n_items] float32
        (:func:`recjax.models.baselines.interaction_rows`: every given item, or with
        ``ratings`` only those rated above ``binary_threshold``), scored against ``B^T``
        (:meth:`ranking_vectors`): a row times ``B``, no copy of ``B`` per user."""
        check_user_items(user_items, ratings, self.n_items)
        return interaction_rows(user_items, ratings, binary_threshold=binary_threshold)

    # ------------------------------------------------------------------------- training
    def sweep_data(self, train: dict[str, np.ndarray]) -> dict[str, Any]:
        """``B`` of the training examples ``{"user", "item", ...}`` (any rating is an
        interaction) and the objective it reaches, per training interaction."""
        user, item = np.asarray(train["user"], np.int64), np.asarray(train["item"], np.int64)
        x = sp.csr_matrix((np.ones(len(user)), (user, item)), shape=(self.n_users, self.n_items))
        x.sum_duplicates()
        x.data[:] = 1.0
        b = ease_weights(x, self.cfg.l2)
        gram = (x.T @ x).toarray()
        residual = np.eye(self.n_items) - b
        data_loss = float(np.sum((gram @ residual) * residual))          # ||X - X B||^2
        n = max(x.nnz, 1)
        return {"weights": b.astype(np.float32), "data_loss": np.float32(data_loss / n),
                "loss": np.float32((data_loss + self.cfg.l2 * np.sum(b ** 2)) / n)}

    def sweep(self, params: dict, data: dict[str, Any]) -> tuple[dict, dict[str, jax.Array]]:
        """The closed form installed: (params with ``weights`` = ``B``, ``loss`` and
        ``data_loss`` per training interaction)."""
        return ({**params, "weights": jnp.asarray(data["weights"])},
                {"loss": jnp.asarray(data["loss"]), "data_loss": jnp.asarray(data["data_loss"])})


def build_ease(cfg: EASEConfig, train: Ratings, task: str = "regression", seed: int = 0) -> EASEModel:
    """The EASE module of a training part: its users' bags (``task`` and ``seed`` are not
    used: ``B`` starts at zero and its fit is exact)."""
    return EASEModel(cfg, bags_from_csr(user_item_pattern(train)), train.n_items)
