"""Alternating least squares kernels: every row of one side solved against the other, on the device.

One half-sweep of ALS fixes one side's vectors ``F`` [n_fixed, k] and solves, for
every row ``u`` of the other side with observed columns ``N(u)``, the ridge system

``(G + sum_{j in N(u)} f_j f_j^T + reg_u I) x_u = sum_{j in N(u)} y_uj f_j``

where ``G`` is a ``k x k`` matrix shared by all rows. iALS (Hu, Koren & Volinsky
2008, in the form of Rendle et al. 2021, "Revisiting the performance of iALS on item
recommendation benchmarks") has ``G = alpha0 F^T F`` (the Gramian trick: the weight
``alpha0`` of every unobserved entry costs one ``k x k`` product, never the user x
item matrix), targets ``y = 1`` and ``reg_u = lambda (|N(u)| + alpha0 n_fixed)^nu``;
explicit ALS (ALS-WR, Zhou et al. 2008) has ``G = 0``, the residual ratings as
targets and ``reg_u = lambda |N(u)|``.

The interactions are held as a :func:`row_plan`: rows grouped by their number of
observed entries into buckets of padded width ``L`` (powers of two), each cut into
chunks of ``B`` rows with ``B * L`` bounded by a budget, so a chunk gathers at most
``budget x k`` values whatever the row lengths (ml-20m's users range from 20 to
9,000 ratings). :func:`solve_rows` solves one chunk exactly (batched Cholesky) or by
a few warm-started conjugate-gradient steps, matrix-free (``A x`` as ``G x +
F_u^T (F_u x) + reg x``: O(L k) per step instead of the O(L k^2) of forming ``A``),
as implicit's ``cg`` solver does. :func:`solve_side` runs every chunk of a plan
(``lax.map``: one chunk's memory at a time) and writes the rows into the table.

Example
-------
>>> import numpy as np, jax.numpy as jnp
>>> from recjax.models.als_solvers import row_plan, solve_side
>>> plan = row_plan(np.array([0, 0, 1]), np.array([0, 2, 1]), np.ones(3), n_rows=2)
>>> fixed = jnp.eye(3)[:, :2]                  # 3 items, k = 2
>>> x = solve_side(jnp.zeros((2, 2)), fixed, jnp.zeros((2, 2)), plan, jnp.full(2, 1.0))
>>> np.round(np.asarray(x), 3).tolist()        # (1 + 1) x = 1 on the observed columns
[[0.5, 0.0], [0.0, 0.5]]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SOLVERS", "row_plan", "solve_rows", "solve_side", "observed_residuals", "plan_entries"]

SOLVERS = ("cholesky", "cg")

#: gathered entries per chunk (B x L); times k x 4 bytes is a chunk's working memory
DEFAULT_BUDGET = 1 << 17
_MIN_WIDTH = 8  # the narrowest bucket: rows shorter than this share it
NO_ROW = np.iinfo(np.int32).max  # a chunk's padding row: dropped when the solutions are written


def row_plan(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, *,
             budget: int = DEFAULT_BUDGET) -> list[dict[str, np.ndarray]]:
    """Group the entries ``(rows[e], cols[e], values[e])`` by row into padded chunks.

    Parameters
    ----------
    rows, cols : int arrays [nnz]
        Row (the side being solved) and column (the fixed side) of each entry.
    values : float array [nnz]
        The entries' values (ratings; ones for interactions).
    n_rows : int
        Rows of the side being solved; every row appears in exactly one chunk (rows
        without entries too: their solve uses ``G`` and ``reg`` alone).
    budget : int
        Entries gathered per chunk, ``B x L`` (at least ``L``: a row is never split).

    Returns
    -------
    list of dict
        One bucket per width ``L``: ``rows`` int32 [C, B] (padding: :data:`NO_ROW`, out
        of any table), ``cols`` int32 [C, B, L] (padding: 0), ``values`` float32
        [C, B, L] (padding: 0) and ``counts`` int32 [C, B] (entries of each row).
    """
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    values = np.asarray(values, np.float32)
    if not (len(rows) == len(cols) == len(values)):
        raise ValueError(f"rows, cols and values must have one length, got {len(rows)}, {len(cols)}, "
                         f"{len(values)}")
    if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
        raise ValueError(f"row indices must lie in [0, {n_rows}); got {rows.min()}..{rows.max()}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    order = np.argsort(rows, kind="stable")
    cols, values = cols[order], values[order]
    counts = np.bincount(rows, minlength=n_rows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    widths = np.maximum(_MIN_WIDTH, 2 ** np.ceil(np.log2(np.maximum(counts, 1)))).astype(np.int64)
    plan = []
    for width in np.unique(widths):
        members = np.flatnonzero(widths == width)
        size = int(min(max(budget // width, 1), len(members)))
        n_chunks = -(-len(members) // size)
        padded = np.full(n_chunks * size, NO_ROW, np.int64)
        padded[: len(members)] = members
        count = np.where(padded < n_rows, counts[np.minimum(padded, n_rows - 1)], 0)
        offset = np.arange(width)[None, :]
        take = (starts[np.minimum(padded, n_rows - 1)][:, None] + offset)
        valid = offset < count[:, None]
        take = np.where(valid, take, 0)
        bucket_cols = np.where(valid, cols[take] if len(cols) else 0, 0)
        bucket_values = np.where(valid, values[take] if len(values) else 0, 0)
        plan.append({"rows": padded.reshape(n_chunks, size).astype(np.int32),
                     "cols": bucket_cols.reshape(n_chunks, size, width).astype(np.int32),
                     "values": bucket_values.reshape(n_chunks, size, width).astype(np.float32),
                     "counts": count.reshape(n_chunks, size).astype(np.int32)})
    return plan


def plan_entries(plan: list[dict[str, Any]]) -> int:
    """The number of real entries a plan holds."""
    return int(sum(np.asarray(bucket["counts"]).sum() for bucket in plan))


def solve_rows(fixed: jax.Array, gram: jax.Array, cols: jax.Array, targets: jax.Array, counts: jax.Array,
               reg: jax.Array, x0: jax.Array, *, solver: str = "cholesky", cg_steps: int = 3) -> jax.Array:
    """Solve ``(G + F_u^T F_u + reg_u I) x_u = F_u^T y_u`` for a chunk of rows.

    Parameters
    ----------
    fixed : float [n_fixed, k]
        The fixed side's vectors ``F``.
    gram : float [k, k]
        ``G``, shared by every row (``alpha0 F^T F`` for iALS, zeros for ALS).
    cols : int [B, L]
        Each row's observed columns (entries past ``counts`` are padding).
    targets : float [B, L]
        ``y`` of each entry.
    counts : int [B]
        Real entries per row.
    reg : float [B]
        Each row's ridge weight.
    x0 : float [B, k]
        The current solution: the start of conjugate gradient (ignored by Cholesky).
    solver : {"cholesky", "cg"}
        Exact, or ``cg_steps`` of conjugate gradient from ``x0``.

    Returns
    -------
    float [B, k]
    """
    mask = (jnp.arange(cols.shape[1])[None, :] < counts[:, None]).astype(fixed.dtype)
    f = fixed[cols] * mask[..., None]                              # [B, L, k]
    b = jnp.einsum("bl,blk->bk", targets * mask, f)
    k = fixed.shape[1]
    if solver == "cholesky":
        a = gram[None] + jnp.einsum("blk,blj->bkj", f, f) + reg[:, None, None] * jnp.eye(k, dtype=fixed.dtype)
        chol = jnp.linalg.cholesky(a)
        y = jax.scipy.linalg.solve_triangular(chol, b[..., None], lower=True)
        return jax.scipy.linalg.solve_triangular(chol, y, lower=True, trans="T")[..., 0]
    if solver != "cg":
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")

    def matvec(x: jax.Array) -> jax.Array:
        return x @ gram + jnp.einsum("blk,bl->bk", f, jnp.einsum("blk,bk->bl", f, x)) + reg[:, None] * x

    def step(carry: tuple, _: None) -> tuple:
        x, r, p, rs = carry
        ap = matvec(p)
        curvature = jnp.sum(p * ap, axis=1)
        alpha = jnp.where(curvature > 0, rs / jnp.where(curvature > 0, curvature, 1.0), 0.0)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        rs_new = jnp.sum(r * r, axis=1)
        beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0)
        return (x, r, r + beta[:, None] * p, rs_new), None

    r = b - matvec(x0)
    (x, *_), _ = jax.lax.scan(step, (x0, r, r, jnp.sum(r * r, axis=1)), None, length=cg_steps)
    return x


def solve_side(table: jax.Array, fixed: jax.Array, gram: jax.Array, plan: list[dict[str, jax.Array]],
               reg: jax.Array, *, fixed_offset: jax.Array | None = None, solver: str = "cholesky",
               cg_steps: int = 3) -> jax.Array:
    """Every row of ``table`` [n_rows(+padding), k] solved against ``fixed`` (one half-sweep).

    Targets are the plan's values minus ``fixed_offset[col]`` (the fixed side's
    biases, for explicit ALS; none: the values). ``reg`` [n_rows] is each row's ridge
    weight. Rows of ``table`` outside the plan (mesh padding) keep their values.
    """
    n_rows = reg.shape[0]
    for bucket in plan:
        def one(chunk: tuple) -> jax.Array:
            rows, cols, values, counts = chunk
            targets = values if fixed_offset is None else values - fixed_offset[cols]
            x0 = table[jnp.minimum(rows, n_rows - 1)]
            return solve_rows(fixed, gram, cols, targets, counts, reg[jnp.minimum(rows, n_rows - 1)], x0,
                              solver=solver, cg_steps=cg_steps)

        x = jax.lax.map(one, (bucket["rows"], bucket["cols"], bucket["values"], bucket["counts"]))
        table = table.at[bucket["rows"].reshape(-1)].set(x.reshape(-1, table.shape[1]).astype(table.dtype),
                                                         mode="drop")
    return table


def observed_residuals(own: jax.Array, other: jax.Array, plan: list[dict[str, jax.Array]],
                       offset: float | jax.Array = 0.0) -> tuple[jax.Array, jax.Array]:
    """(sum of squared residuals, sum of predictions squared) over the plan's entries,
    a residual being ``value - offset - <own[row], other[col]>``."""
    n_rows = own.shape[0]
    residual, square = jnp.zeros((), own.dtype), jnp.zeros((), own.dtype)
    for bucket in plan:
        def one(chunk: tuple) -> tuple[jax.Array, jax.Array]:
            rows, cols, values, counts = chunk
            mask = jnp.arange(cols.shape[1])[None, :] < counts[:, None]
            score = jnp.einsum("bk,blk->bl", own[jnp.minimum(rows, n_rows - 1)], other[cols])
            return (jnp.sum(jnp.where(mask, (values - offset - score) ** 2, 0.0)),
                    jnp.sum(jnp.where(mask, score ** 2, 0.0)))

        r, s = jax.lax.map(one, (bucket["rows"], bucket["cols"], bucket["values"], bucket["counts"]))
        residual, square = residual + r.sum(), square + s.sum()
    return residual, square
