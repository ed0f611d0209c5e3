"""Matrix factorisation by alternating least squares: iALS for interactions, ALS for ratings.

Two families trained by alternating exact (or conjugate-gradient) ridge solves
(:mod:`recjax.models.als_solvers`) instead of SGD; one training "epoch" is one sweep
(every user solved, then every item), run by :func:`recjax.train.alternating.fit`.

* :class:`IALS` (``--model ials``): Hu, Koren & Volinsky's weighted factorisation of
  the 0/1 interaction matrix with the choices of Rendle et al. 2021 ("Revisiting the
  performance of iALS on item recommendation benchmarks", their
  ``ials/ncf_benchmarks/ials.py``): minimises

  ``sum_{(u,i) observed} (1 - <w_u, h_i>)^2 + alpha0 sum_{all u,i} <w_u, h_i>^2
  + lambda sum_u (|I_u| + alpha0 |I|)^nu ||w_u||^2 + lambda sum_i (|U_i| + alpha0 |U|)^nu ||h_i||^2``

  (``alpha0`` = ``unobserved_weight``, ``nu`` = ``reg_exponent``), initialised
  ``N(0, init_std^2 / d)``. Any rating counts as an interaction.
* :class:`ALS` (``--model als``): biased explicit MF ``r_ui ~ mu + b_u + b_i + <p_u,
  q_i>`` minimising squared error on the ratings plus ``lambda n_u^nu (||p_u||^2 +
  b_u^2)`` per user and ``lambda n_i^nu (||q_i||^2 + b_i^2)`` per item (``nu`` =
  ``reg_exponent``; nu 1 is ALS-WR, Zhou et al. 2008); a bias is solved together with
  its factors (the other side's vector gets a constant 1).

Both fold in a new user by the closed-form solve of that user's row against the
trained items (:meth:`IALS.fold_in`, :meth:`ALS.fold_in`).

Example
-------
>>> import numpy as np
>>> from flax import nnx
>>> from recjax.models.als import IALS, IALSConfig
>>> model = IALS(IALSConfig(embedding_dim=4), n_users=3, n_items=5, rngs=nnx.Rngs(0))
>>> data = model.sweep_data({"user": np.array([0, 1, 2]), "item": np.array([1, 2, 4])})
>>> params, metrics = model.sweep(nnx.to_pure_dict(nnx.state(model, nnx.Param)), data)
>>> params["user_factors"].shape, sorted(metrics)
((3, 4), ['data_loss', 'loss'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import nnx

from recjax.data.dataset import Ratings
from recjax.models.als_solvers import SOLVERS, chunk_budget, side_plans, solve_side
from recjax.models.base import table
from recjax.models.capabilities import Capabilities
from recjax.data.bags import check_user_items
from recjax.models.fold_in import fixed_side, per_model, rating_ridge_users, solve_new_rows

__all__ = ["IALSConfig", "IALS", "ALSConfig", "ALS", "build_ials", "build_als"]


def _check_solver(cfg: Any) -> None:
    if cfg.embedding_dim < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {cfg.embedding_dim}")
    if cfg.solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {cfg.solver!r}")
    if cfg.cg_steps < 1:
        raise ValueError(f"cg_steps must be >= 1, got {cfg.cg_steps}")
    if cfg.regularization <= 0 or cfg.init_std < 0:
        raise ValueError(f"regularization must be > 0 and init_std >= 0, got {cfg.regularization}, "
                         f"{cfg.init_std}")


@dataclass(frozen=True)
class IALSConfig:
    """iALS hyper-parameters (embedding_dim, unobserved_weight, regularization: chosen on
    ml-100k's ub split by validation NDCG@10, the ub search of 479722b:benchmarks/als_tuning.py)."""

    embedding_dim: int = field(default=128, metadata={
        "help": "factors per user and item (with alpha0 3 and lambda 0.003, nu 1, the exact solver: the "
                "best by validation NDCG@10 on ml-100k's ub split of alpha0 0.3/1/3/10 x lambda "
                "0.003/0.01/0.03 at d 128, then lambda 0.0015/0.006 and alpha0 1.5/6 around it, nu 0/0.5 "
                "and d 256/512; the ub search of 479722b:benchmarks/als_tuning.py)"})
    unobserved_weight: float = field(
        default=3.0, metadata={"help": "alpha0: weight of every unobserved (user, item) entry, target 0; "
                                       "chosen with embedding_dim"})
    regularization: float = field(
        default=0.003, metadata={"help": "lambda, scaled per row by (count + alpha0 * other side's size)^nu; "
                                         "chosen with embedding_dim"})
    reg_exponent: float = field(
        default=1.0, metadata={"help": "nu: the exponent of that frequency scaling (0: plain lambda; "
                                       "1 as in Rendle et al. 2021; chosen with embedding_dim)"})
    init_std: float = field(
        default=0.1, metadata={"help": "std of the normal initialisation, divided by sqrt(embedding_dim)"})
    solver: str = field(
        default="cholesky", metadata={"help": "row solves: 'cholesky' (exact; the search used it) or 'cg' "
                                              "(conjugate gradient, warm-started)"})
    cg_steps: int = field(default=3, metadata={"help": "conjugate-gradient steps per row and sweep"})

    def __post_init__(self) -> None:
        _check_solver(self)
        if self.unobserved_weight < 0 or self.reg_exponent < 0:
            raise ValueError(f"unobserved_weight and reg_exponent must be >= 0, got "
                             f"{self.unobserved_weight}, {self.reg_exponent}")


@dataclass(frozen=True)
class ALSConfig:
    """Explicit ALS hyper-parameters (embedding_dim, regularization: chosen on ml-100k's ub split, validation RMSE)."""

    embedding_dim: int = field(default=64, metadata={
        "help": "factors per user and item (64, lambda 3.9 and nu 0.25: the best by validation RMSE on "
                "ml-100k's ub split of dims 16/32/64/128 x lambda 0.03/0.1/0.3 at nu 1, lambda x 0.6/1.6 "
                "around the best, nu 0.25/0.5/0.75 x five lambdas, then d 64/256 (256 gained under "
                "0.001, so the smaller model); biases on; the ub search of 479722b:benchmarks/als_tuning.py)"})
    regularization: float = field(
        default=3.9, metadata={"help": "lambda, times each user's (item's) number of ratings to the power "
                                       "nu; chosen with embedding_dim"})
    reg_exponent: float = field(
        default=0.25, metadata={"help": "nu: the exponent of that count scaling (1: ALS-WR; 0: plain "
                                        "lambda); chosen with embedding_dim"})
    user_bias: bool = field(default=True, metadata={"help": "learn b_u"})
    item_bias: bool = field(default=True, metadata={"help": "learn b_i"})
    init_std: float = field(
        default=0.1, metadata={"help": "std of the normal initialisation, divided by sqrt(embedding_dim)"})
    solver: str = field(default="cholesky", metadata={"help": "row solves: 'cholesky' (exact) or 'cg'"})
    cg_steps: int = field(default=3, metadata={"help": "conjugate-gradient steps per row and sweep"})

    def __post_init__(self) -> None:
        _check_solver(self)
        if self.reg_exponent < 0:
            raise ValueError(f"reg_exponent must be >= 0, got {self.reg_exponent}")


def _side_data(user: np.ndarray, item: np.ndarray, values: np.ndarray, n_users: int,
               n_items: int, k: int) -> dict[str, Any]:
    """Both sides' row plans (chunks sized for ``k`` factors per gathered entry) and counts
    of the training entries."""
    user, item = np.asarray(user, np.int64), np.asarray(item, np.int64)
    budget = chunk_budget(k)
    return {"users": side_plans(user, item, values, n_users, budget=budget),
            "items": side_plans(item, user, values, n_items, budget=budget),
            "user_counts": np.bincount(user, minlength=n_users).astype(np.float32),
            "item_counts": np.bincount(item, minlength=n_items).astype(np.float32)}


def _init(rngs: nnx.Rngs, rows: int, cfg: Any) -> jax.Array:
    return cfg.init_std / np.sqrt(cfg.embedding_dim) * jax.random.normal(rngs.params(), (rows, cfg.embedding_dim))


class IALS(nnx.Module):
    """iALS: user and item factor tables (see the module docstring for the objective).

    Parameters
    ----------
    cfg : IALSConfig
    n_users, n_items : int
    rngs : nnx.Rngs

    It scores pairs (``<w_u, h_i>``, a preference score, not a rating), ranks, embeds
    and folds in a new user (:mod:`recjax.models.base`).
    """

    capabilities = Capabilities(pairs=True, ranks=True, embeds=True, fold_in=True)

    def __init__(self, cfg: IALSConfig, n_users: int, n_items: int, *, rngs: nnx.Rngs) -> None:
        self.cfg, self.n_users, self.n_items = cfg, n_users, n_items
        self.user_factors = table(_init(rngs, n_users, cfg))
        self.item_factors = table(_init(rngs, n_items, cfg))

    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        """Preference scores ``<w_u, h_i>`` [B]."""
        return jnp.sum(self.user_factors[batch["user"]] * self.item_factors[batch["item"]], axis=-1)

    def penalty(self, batch: dict[str, jax.Array]) -> jax.Array:
        """For the gradient step (:mod:`recjax.train.step`): ``lambda`` times the mean
        squared norm of the batch's rows and the ``alpha0`` term per entry of the
        objective, ``alpha0 <W^T W, H^T H> / (n_users n_items)``."""
        user, item = self.user_factors[batch["user"]], self.item_factors[batch["item"]]
        rows = jnp.mean(jnp.sum(user ** 2, -1) + jnp.sum(item ** 2, -1))
        w, h = self.user_factors[...], self.item_factors[...]
        everything = jnp.sum((w.T @ w) * (h.T @ h)) / (self.n_users * self.n_items)
        return self.cfg.regularization * rows + self.cfg.unobserved_weight * everything

    def embeddings(self) -> tuple[jax.Array, jax.Array]:
        """(user factors [n_users, d], item factors [n_items, d])."""
        return self.user_factors[...], self.item_factors[...]

    def ranking_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The factors as float32: their dot products are the model's scores."""
        users, items = self.embeddings()
        return np.asarray(users, np.float32), np.asarray(items, np.float32)

    def _reg(self, counts: jax.Array, other_side: int) -> jax.Array:
        cfg = self.cfg
        return cfg.regularization * (counts + cfg.unobserved_weight * other_side) ** cfg.reg_exponent

    # ------------------------------------------------------------------------- training
    def sweep_data(self, train: dict[str, np.ndarray]) -> dict[str, Any]:
        """What :meth:`sweep` reads, from training examples ``{"user", "item", ...}``:
        every (user, item) pair is an interaction of value 1."""
        return _side_data(train["user"], train["item"], np.ones(len(train["user"]), np.float32),
                          self.n_users, self.n_items, self.cfg.embedding_dim)

    def sweep(self, params: dict, data: dict[str, Any]) -> tuple[dict, dict[str, jax.Array]]:
        """One sweep, pure: every user, then every item, solved; (params, ``loss`` and
        ``data_loss`` of the objective per observed entry after it)."""
        cfg, a0 = self.cfg, self.cfg.unobserved_weight
        data = jax.tree.map(jnp.asarray, data)
        solve = dict(solver=cfg.solver, cg_steps=cfg.cg_steps)
        w, h = params["user_factors"], params["item_factors"]
        reg_users = self._reg(data["user_counts"], self.n_items)
        reg_items = self._reg(data["item_counts"], self.n_users)
        w = solve_side(w, h, a0 * (h.T @ h), data["users"], reg_users, **solve)
        # the observed squared residuals at (w, h), summed by the item half-sweep from its gathered rows
        h, residual = solve_side(h, w, a0 * (w.T @ w), data["items"], reg_items, residual=True, **solve)
        data_loss = residual + a0 * jnp.sum((w.T @ w) * (h.T @ h))
        norms_w, norms_h = jnp.sum(w[: self.n_users] ** 2, 1), jnp.sum(h[: self.n_items] ** 2, 1)
        loss = data_loss + jnp.sum(reg_users * norms_w) + jnp.sum(reg_items * norms_h)
        n = jnp.maximum(jnp.sum(data["user_counts"]), 1.0)
        return {**params, "user_factors": w, "item_factors": h}, {"loss": loss / n, "data_loss": data_loss / n}

    def fold_in(self, user_items: sp.csr_matrix, ratings: np.ndarray | None = None, *,
                binary_threshold: float = 3.0) -> np.ndarray:
        """New users' factors: the exact solve of each row against the trained items (every
        given item an interaction; ``ratings`` are not used), all rows in one batched call
        (:func:`recjax.models.fold_in.solve_new_rows`, the Gramian computed once per model).

        Parameters
        ----------
        user_items : CSR [n, n_items]
            Each new user's items.

        Returns
        -------
        float32 [n, d]: scored against the item factors (:meth:`ranking_vectors`).
        """
        check_user_items(user_items, ratings, self.n_items)
        h = self.item_factors[...]
        fixed = per_model(self, "items", h, lambda: fixed_side(h, self.cfg.unobserved_weight * (h.T @ h)))
        reg = self._reg(np.diff(user_items.indptr).astype(np.float64), self.n_items)
        return solve_new_rows(fixed, user_items, np.ones(user_items.nnz, np.float32), reg)


class ALS(nnx.Module):
    """Biased explicit MF trained by alternating ridge solves (ALS-WR).

    Parameters
    ----------
    cfg : ALSConfig
    n_users, n_items : int
    global_mean : float
        The training mean rating ``mu`` (fixed).
    rngs : nnx.Rngs

    It scores pairs (ratings), ranks, embeds and folds in a new user from their ratings.
    """

    capabilities = Capabilities(pairs=True, ranks=True, embeds=True, fold_in=True)

    def __init__(self, cfg: ALSConfig, n_users: int, n_items: int, *, global_mean: float = 0.0,
                 rngs: nnx.Rngs) -> None:
        self.cfg, self.n_users, self.n_items = cfg, n_users, n_items
        self.offset = float(global_mean)
        self.user_factors = table(_init(rngs, n_users, cfg))
        self.item_factors = table(_init(rngs, n_items, cfg))
        self.user_bias = table(jnp.zeros(n_users)) if cfg.user_bias else None
        self.item_bias = table(jnp.zeros(n_items)) if cfg.item_bias else None

    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        """Predicted ratings [B]."""
        user, item = batch["user"], batch["item"]
        score = jnp.sum(self.user_factors[user] * self.item_factors[item], axis=-1) + self.offset
        if self.user_bias is not None:
            score = score + self.user_bias[user]
        if self.item_bias is not None:
            score = score + self.item_bias[item]
        return score

    def penalty(self, batch: dict[str, jax.Array]) -> jax.Array:
        """For the gradient step (:mod:`recjax.train.step`): ``lambda`` times the mean
        squared norm of the batch's rows, biases included: ALS-WR's weighting per rating,
        whose sum over the ratings is the sweep's penalty at nu 1 (another nu weighs a
        row by its count, which only the sweep's data holds; ALS trains by sweeps)."""
        user, item = batch["user"], batch["item"]
        rows = jnp.sum(self.user_factors[user] ** 2, -1) + jnp.sum(self.item_factors[item] ** 2, -1)
        if self.user_bias is not None:
            rows = rows + self.user_bias[user] ** 2
        if self.item_bias is not None:
            rows = rows + self.item_bias[item] ** 2
        return self.cfg.regularization * jnp.mean(rows)

    def embeddings(self) -> tuple[jax.Array, jax.Array]:
        """(user factors [n_users, d], item factors [n_items, d])."""
        return self.user_factors[...], self.item_factors[...]

    def ranking_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``[p_u, 1] . [q_i, b_i]`` (``p_u . q_i`` without an item bias), float32: for one
        user only ``b_i + <p_u, q_i>`` orders the items."""
        users, items = (np.asarray(t, np.float32) for t in self.embeddings())
        if self.item_bias is not None:
            users = np.hstack([users, np.ones((len(users), 1), np.float32)])
            items = np.hstack([items, np.asarray(self.item_bias[...], np.float32)[:, None]])
        return users, items

    # ------------------------------------------------------------------------- training
    def sweep_data(self, train: dict[str, np.ndarray]) -> dict[str, Any]:
        """What :meth:`sweep` reads: the ratings minus ``mu``, planned by user and by item."""
        k = self.cfg.embedding_dim + (self.user_bias is not None)  # a bias solves as one more factor
        return _side_data(train["user"], train["item"], np.asarray(train["label"], np.float32) - self.offset,
                          self.n_users, self.n_items, k)

    def _reg(self, counts: jax.Array) -> jax.Array:
        """Each row's ridge weight ``lambda max(n, 1)^nu`` [rows] (NumPy or JAX counts)."""
        return self.cfg.regularization * counts.clip(1.0) ** self.cfg.reg_exponent

    @staticmethod
    def _solve_side(own: jax.Array, own_bias: jax.Array | None, other: jax.Array, other_bias: jax.Array | None,
                    plan: list, reg: jax.Array, solve: dict
                    ) -> tuple[tuple[jax.Array, jax.Array | None], jax.Array]:
        """Solve one side's factors (and bias, as an extra coordinate against a constant 1);
        ((factors, bias), the squared residuals of the plan's ratings at the new solution)."""
        fixed = other if own_bias is None else jnp.hstack([other, jnp.ones((len(other), 1), other.dtype)])
        table_ = own if own_bias is None else jnp.hstack([own, own_bias[:, None]])
        k = fixed.shape[1]
        x, squared = solve_side(table_, fixed, jnp.zeros((k, k), fixed.dtype), plan, reg,
                                fixed_offset=other_bias, residual=True, **solve)
        return ((x, None) if own_bias is None else (x[:, :-1], x[:, -1])), squared

    def sweep(self, params: dict, data: dict[str, Any]) -> tuple[dict, dict[str, jax.Array]]:
        """One sweep, pure: users, then items; (params, ``loss`` (objective) and
        ``data_loss`` (mean squared error) per training rating after it)."""
        cfg = self.cfg
        data = jax.tree.map(jnp.asarray, data)
        solve = dict(solver=cfg.solver, cg_steps=cfg.cg_steps)
        p, q = params["user_factors"], params["item_factors"]
        bp, bq = params.get("user_bias"), params.get("item_bias")
        reg_users, reg_items = self._reg(data["user_counts"]), self._reg(data["item_counts"])
        (p, bp), _ = self._solve_side(p, bp, q, bq, data["users"], reg_users, solve)
        # the residuals r - mu - b_u - b_i - <p_u, q_i> at the end of the sweep: the item half-sweep's
        (q, bq), squared = self._solve_side(q, bq, p, bp, data["items"], reg_items, solve)
        penalty = (jnp.sum(reg_users * jnp.sum(p[: self.n_users] ** 2, 1))
                   + jnp.sum(reg_items * jnp.sum(q[: self.n_items] ** 2, 1)))
        if bp is not None:
            penalty = penalty + jnp.sum(reg_users * bp[: self.n_users] ** 2)
        if bq is not None:
            penalty = penalty + jnp.sum(reg_items * bq[: self.n_items] ** 2)
        n = jnp.maximum(jnp.sum(data["user_counts"]), 1.0)
        new = {**params, "user_factors": p, "item_factors": q}
        if bp is not None:
            new["user_bias"] = bp
        if bq is not None:
            new["item_bias"] = bq
        return new, {"loss": (squared + penalty) / n, "data_loss": squared / n}

    def fold_in(self, user_items: sp.csr_matrix, ratings: np.ndarray | None = None, *,
                binary_threshold: float = 3.0) -> np.ndarray:
        """New users' factors and biases by the exact ridge solve of their ratings against
        the trained items (the sweep's ``lambda n^nu``), all rows in one batched call;
        needs ``ratings`` (float [nnz], in ``user_items``' entry order).

        Returns
        -------
        float32 [n, d'], as the user side of :meth:`ranking_vectors`.
        """
        if ratings is None:
            raise ValueError("an ALS rating run folds in a user from their ratings: pass new_user_ratings")
        check_user_items(user_items, ratings, self.n_items)
        reg = self._reg(np.diff(user_items.indptr).astype(np.float64))
        return rating_ridge_users(self, self.item_factors, self.item_bias, user_bias=self.user_bias is not None,
                                  offset=self.offset, user_items=user_items, ratings=ratings, reg=reg)


def build_ials(cfg: IALSConfig, train: Ratings, task: str = "regression", seed: int = 0) -> IALS:
    """The iALS module for a training part (its vocabularies); ``task`` is not used."""
    return IALS(cfg, train.n_users, train.n_items, rngs=nnx.Rngs(seed))


def build_als(cfg: ALSConfig, train: Ratings, task: str = "regression", seed: int = 0) -> ALS:
    """The ALS module for a training part (its vocabularies and mean rating)."""
    return ALS(cfg, train.n_users, train.n_items, global_mean=float(np.mean(train.rating)),
               rngs=nnx.Rngs(seed))
