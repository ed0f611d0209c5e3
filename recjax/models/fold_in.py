"""Folding new users into a trained model: many users in one call, compiled once per shape.

A user unseen in training is given by the items they rated: a row of a CSR matrix
``user_items`` [n, n_items] (the entries' values are ignored; their ratings, where
the family needs them, come as a float array [nnz] in the matrix's entry order).
Every family that can fold users in (:class:`recjax.models.base.FoldIn`) turns such
a matrix into user vectors [n, d'] scored against its ranking vectors
(``ranking_vectors()``'s item side, held once by the caller).

For the factor models the user's vector is the minimiser of the training objective
with the items frozen: a ridge system per user against the item table ``F`` [n_items,
k],

``(G + F_u^T F_u + reg_u I) x_u = F_u^T y_u``

(iALS: ``G = alpha0 F^T F``, ``y = 1``; ALS and MF: ``G = 0``, ``y`` the ratings less
the global mean and item biases, the user bias a last coordinate against a column of
ones). :func:`solve_new_rows` solves all of them at once: users are grouped by their
entry count padded to 8, 32, 128, ... entries, and each group is cut into batches of
1, 4, 16, ... users, so a model compiles a handful of programs however the requests
vary (:data:`SHAPES` lists those a server compiles before it answers). The item side is prepared once per model (:func:`fixed_side`: ``F`` in the
eigenbasis of ``G``, where ``G`` is diagonal), so that a user with fewer entries
``L`` than factors ``k`` (a new user's 20 ratings against MF's 1024 factors or
iALS's 128) is an ``L x L`` system by the push-through identity, not ``k x k``.

:func:`recjax.data.bags.user_rows` builds ``user_items`` from lists of item indices.

Example
-------
>>> import numpy as np, jax.numpy as jnp
>>> from recjax.data.bags import user_rows
>>> from recjax.models.fold_in import fixed_side, solve_new_rows
>>> rows, ratings = user_rows([[0, 2], [1]], n_items=3, ratings=[[1.0, 1.0], [2.0]])
>>> x = solve_new_rows(fixed_side(jnp.eye(3)[:, :2]), rows, ratings, np.ones(2))
>>> np.round(x, 3).tolist()                  # (1 + 1) x = y on the observed columns
[[0.5, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from recjax.models.als_solvers import spd_solve

__all__ = ["SHAPES", "FixedSide", "fixed_side", "solve_new_rows", "rating_ridge_users", "bag_users", "per_model"]

#: bytes of one compiled batch's gathered rows and systems (``B x (L k + k k)`` float32): a
#: batch of users is at most this large, so a thousand users at 128 factors are a few calls
BATCH_BYTES = 32 << 20
_MIN_WIDTH = 8  # entries per user are padded to 8 * 4^j
#: (users, entries per user) of the fold-in calls a server warms up (compiles) before it
#: answers: new users with up to 32 items, in batches up to 256 (the default --max-batch)
SHAPES = tuple((users, entries) for entries in (8, 32) for users in (1, 4, 16, 64, 256))


@functools.partial(jax.tree_util.register_dataclass, data_fields=["table", "eigenvalues", "basis"],
                   meta_fields=[])
@dataclass(frozen=True)
class FixedSide:
    """The frozen item side of a fold-in, prepared once per model (:func:`fixed_side`).

    With ``G = V diag(lam) V^T`` the rows are solved in ``V``'s basis, where ``G`` is
    diagonal: ``(diag(lam + reg_u) + F'_u^T F'_u) x' = F'_u^T y``, ``F' = F V``, ``x = V
    x'`` (no ``G``: ``V = I``, ``lam = 0``).

    Attributes
    ----------
    table : float32 [n_items, k]
        ``F V``.
    eigenvalues : float32 [k]
        ``lam`` (zeros without ``G``).
    basis : float32 [k, k] or None
        ``V`` (None: the identity).
    """

    table: jax.Array
    eigenvalues: jax.Array
    basis: jax.Array | None


def fixed_side(table: Any, gram: Any = None) -> FixedSide:
    """:class:`FixedSide` of an item table [n_items, k] and an optional shared ``G`` [k, k]
    (symmetric positive semi-definite)."""
    table = jnp.asarray(table, jnp.float32)
    if gram is None:
        return FixedSide(table, jnp.zeros(table.shape[1], jnp.float32), None)
    eigenvalues, basis = jnp.linalg.eigh(jnp.asarray(gram, jnp.float32))
    return FixedSide(table @ basis, jnp.maximum(eigenvalues, 0.0), basis)


def solve_new_rows(fixed: FixedSide, user_items: sp.csr_matrix, targets: np.ndarray,
                   reg: np.ndarray) -> np.ndarray:
    """Every row's ridge solve against the fixed side (the module docstring's system).

    Parameters
    ----------
    fixed : FixedSide
        The frozen item side ``F`` (and ``G``).
    user_items : CSR [n, n_items]
        Each row's observed columns (values ignored).
    targets : float [nnz]
        ``y`` of each entry, in ``user_items``' entry order.
    reg : float [n]
        Each row's ridge weight (> 0).

    Returns
    -------
    float32 [n, k]
    """
    n, k = user_items.shape[0], int(fixed.table.shape[1])
    counts = np.diff(user_items.indptr)
    out = np.zeros((n, k), np.float32)
    if n == 0:
        return out
    widths = np.array([_rung(c, _MIN_WIDTH) for c in counts], np.int64)
    indices = np.asarray(user_items.indices, np.int32)
    targets = np.asarray(targets, np.float32)
    reg = np.asarray(reg, np.float32)
    for width in np.unique(widths):
        members = np.flatnonzero(widths == width)
        dual = bool(width < k)
        per_row = 4 * (width * k + (width * width if dual else k * k))
        cap = 4 ** max(int(np.log(max(BATCH_BYTES // per_row, 1)) / np.log(4) + 1e-9), 0)
        for start in range(0, len(members), cap):
            rows = members[start: start + cap]
            size = min(cap, _rung(len(rows), 1))
            valid = np.arange(width)[None, :] < counts[rows][:, None]
            positions = np.where(valid, user_items.indptr[rows][:, None] + np.arange(width)[None, :], 0)
            positions = np.minimum(positions, max(len(indices) - 1, 0))
            cols = np.zeros((size, width), np.int32)
            y = np.zeros((size, width), np.float32)
            if len(indices):
                cols[: len(rows)] = np.where(valid, indices[positions], 0)
                y[: len(rows)] = np.where(valid, targets[positions], 0)
            n_valid = np.zeros(size, np.int32)
            n_valid[: len(rows)] = counts[rows]
            row_reg = np.ones(size, np.float32)
            row_reg[: len(rows)] = reg[rows]
            x = _solve_block(fixed, cols, y, n_valid, row_reg, dual=dual)
            out[rows] = np.asarray(x)[: len(rows)]
    return out


def rating_ridge_users(model: Any, factors: Any, bias: Any, *, user_bias: bool, offset: float,
                       user_items: sp.csr_matrix, ratings: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """The fold-in of a biased rating model (MF, ALS: ``r ~ mu + b_u + b_i + <p_u, q_i>``):
    each user's factors (and bias, a last coordinate against a column of ones,
    regularised like the factors) by ridge regression of ``ratings - mu - b_i``.

    Parameters
    ----------
    model
        The module (the frozen item side is prepared once per module).
    factors, bias : nnx.Param
        The item table [n_items, d] and item biases [n_items] (or None).
    user_bias : bool
        Whether the model has user biases.
    offset : float
        ``mu``.
    reg : float [n]
        Each user's ridge weight.

    Returns
    -------
    float32 [n, d'] as the user side of the model's ranking vectors: ``[p_u, 1]`` when
    the items carry a bias (scored against ``[q_i, b_i]``), else ``p_u``.
    """
    table = factors[...]

    def augmented() -> FixedSide:
        q = jnp.asarray(table, jnp.float32)
        return fixed_side(jnp.hstack([q, jnp.ones((q.shape[0], 1), jnp.float32)]) if user_bias else q)

    fixed = per_model(model, "rating_items", table, augmented)
    targets = np.asarray(ratings, np.float64) - offset
    if bias is not None:
        b = per_model(model, "rating_bias", bias[...], lambda: np.asarray(bias[...], np.float64))
        targets = targets - b[user_items.indices]
    x = solve_new_rows(fixed, user_items, targets, reg)
    users = x[:, : table.shape[1]]
    if bias is not None:
        users = np.hstack([users, np.ones((len(users), 1), np.float32)])
    return users


def bag_users(model: Any, user_items: sp.csr_matrix) -> np.ndarray:
    """A bag model's user tower over each row's items (any item a positive): float32 [n, d'],
    the user side of its ``embeddings``."""
    from recjax.data.bags import bags_from_csr

    bags = bags_from_csr(user_items)
    users, _ = model.embeddings({"bag": bags})
    return np.asarray(users, np.float32)


def _rung(n: int, low: int) -> int:
    """The smallest ``low * 4^j`` at least ``n``: the padded sizes of rows and batches (a
    coarse ladder, so a served model compiles few shapes; padding costs at most 4x)."""
    size = low
    while size < n:
        size *= 4
    return size


@functools.partial(jax.jit, static_argnames=("dual",))
def _solve_block(fixed: FixedSide, cols: jax.Array, targets: jax.Array, counts: jax.Array, reg: jax.Array, *,
                 dual: bool) -> jax.Array:
    """One batch [B] of rows, each padded to ``L`` entries: x [B, k].

    In ``V``'s basis the system is ``(D + F^T F) x' = F^T y`` with ``D = diag(lam + reg)``;
    with fewer entries than factors, by the push-through identity ``x' = D^-1 F^T (I +
    F D^-1 F^T)^-1 y``: an ``L x L`` system (a padded entry: a zero row of ``F``, its
    ``alpha`` 0)."""
    width = cols.shape[1]
    mask = (jnp.arange(width)[None, :] < counts[:, None]).astype(jnp.float32)
    f = fixed.table[cols] * mask[..., None]                                  # [B, L, k]
    y = targets * mask
    d = fixed.eigenvalues[None, :] + reg[:, None]                            # [B, k]
    if dual:
        a = jnp.einsum("blk,bk,bmk->blm", f, 1.0 / d, f) + jnp.eye(width, dtype=f.dtype)
        x = jnp.einsum("blk,bl->bk", f, spd_solve(a, y)) / d
    else:
        a = jnp.einsum("blk,blj->bkj", f, f) + jax.vmap(jnp.diag)(d)
        x = spd_solve(a, jnp.einsum("bl,blk->bk", y, f))
    return x if fixed.basis is None else x @ fixed.basis.T


_PER_MODEL: "weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, Any]]]" = weakref.WeakKeyDictionary()


def per_model(model: Any, name: str, source: Any, build: Callable[[], Any]) -> Any:
    """``build()`` once per model and ``source`` (the model's table it is derived from,
    compared by identity: a model whose parameters are replaced builds it again); held
    beside the model, not in it, and dropped with it."""
    entries = _PER_MODEL.setdefault(model, {})
    held = entries.get(name)
    if held is None or held[0] is not source:
        held = entries[name] = (source, build())
    return held[1]
