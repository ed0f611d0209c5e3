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

The interactions are held as a :func:`row_plan` of **one chunk shape**: each row's
entries are cut into segments of ``W`` entries (one width per side, from its mean row
length), and the segments are packed, whole rows at a time, into chunks of ``S``
segments (``S x W`` bounded by a budget, :func:`chunk_budget`: about 1 MiB gathered,
cache-sized, whatever the row lengths: ml-20m's users range from 20 to 9,000 ratings).
A chunk's rows sit in its ``S`` slots; each segment names its slot, and the per-row
sums of the normal equations are segment sums. Every chunk of a plan has the same
shape, so a plan is one compiled loop body (:func:`solve_side`: ``lax.map`` over the
chunks, one chunk's memory at a time), whatever the spread of row lengths. A side
whose longest rows do not fit one budget chunk gets a second plan for those rows
(:func:`side_plans`), so that they alone have chunks that large.
:func:`solve_rows` solves one chunk exactly (batched Cholesky) or by a few
warm-started conjugate-gradient steps, matrix-free (``A x`` as ``G x + F_u^T (F_u
x) + reg x``: O(L k) per step instead of the O(L k^2) of forming ``A``), as
implicit's ``cg`` solver does.

Example
-------
>>> import numpy as np, jax.numpy as jnp
>>> from recjax.models.als_solvers import row_plan, solve_side
>>> plan = row_plan(np.array([0, 0, 1]), np.array([0, 2, 1]), np.ones(3), n_rows=2)
>>> plan["cols"].shape                         # [chunks, segments, width]
(1, 2, 8)
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

__all__ = ["SOLVERS", "row_plan", "side_plans", "solve_rows", "solve_side", "observed_residuals",
           "plan_entries", "chunk_budget", "spd_solve"]

SOLVERS = ("cholesky", "cg")

#: bytes of one chunk's gathered block ``[S, W, k]`` float32: L2-cache sized, since conjugate
#: gradient passes over the block eight times (on this 2-core machine, at k 64, 1 MiB chunks
#: made a sweep 1.2-1.6x faster than 4 MiB ones, on ml-latest-small and at ml-20m's shape)
CHUNK_BYTES = 1 << 20
#: gathered entries per chunk (S x W) when the factor count is not known: 1 MiB at k 64
DEFAULT_BUDGET = CHUNK_BYTES // (4 * 64)


def chunk_budget(k: int) -> int:
    """Gathered entries per chunk for ``k`` float32 factors: :data:`CHUNK_BYTES` worth, at
    least 256."""
    return max(CHUNK_BYTES // (4 * int(k)), 256)


#: the segment width: the mean row length's power of two, clipped to this range (at ml-20m's
#: shape, users averaging 144 entries, width 64 made the user half-sweep 1.5x faster than 128:
#: a row's last segment wastes under W entries)
_WIDTHS = (8, 64)
NO_ROW = np.iinfo(np.int32).max  # a chunk's empty slot: dropped when the solutions are written


def segment_width(counts: np.ndarray) -> int:
    """The segment width ``W`` of a side whose rows hold ``counts`` entries: the power of
    two nearest the mean row length, within [8, 64] (a row wastes under ``W`` gathered
    entries; shorter segments mean more of them to sum)."""
    mean = float(np.mean(counts)) if len(counts) else 1.0
    return int(np.clip(2 ** np.round(np.log2(max(mean, 1.0))), *_WIDTHS))


def _entries(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
             n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows int64, cols int64, values float32), flat, checked: one length, rows in
    [0, n_rows), n_rows >= 1."""
    rows, cols = np.asarray(rows, np.int64).reshape(-1), np.asarray(cols, np.int64).reshape(-1)
    values = np.asarray(values, np.float32).reshape(-1)
    if not (len(rows) == len(cols) == len(values)):
        raise ValueError(f"rows, cols and values must have one length, got {len(rows)}, {len(cols)}, "
                         f"{len(values)}")
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
        raise ValueError(f"row indices must lie in [0, {n_rows}); got {rows.min()}..{rows.max()}")
    return rows, cols, values


def row_plan(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, *,
             budget: int = DEFAULT_BUDGET, width: int | None = None) -> dict[str, np.ndarray]:
    """Cut the entries ``(rows[e], cols[e], values[e])`` into segments of whole rows,
    packed into chunks of one shape.

    Parameters
    ----------
    rows, cols : int arrays [nnz]
        Row (the side being solved) and column (the fixed side) of each entry.
    values : float array [nnz]
        The entries' values (ratings; ones for interactions).
    n_rows : int
        Rows of the side being solved; every row sits in exactly one chunk slot (rows
        without entries too, with one empty segment: their solve uses ``G`` and ``reg``
        alone).
    budget : int
        Entries gathered per chunk, ``S x W``; raised to the longest row's segments
        when that row needs more (a row is never split over chunks).
    width : int, optional
        The segment width ``W`` (default :func:`segment_width` of the row lengths).

    Returns
    -------
    dict
        ``rows`` int32 [C, S]: the row in each slot (empty: :data:`NO_ROW`, out of any
        table); ``slots`` int32 [C, S]: each segment's slot; ``cols`` int32 [C, S, W]
        (padding: 0); ``values`` float32 [C, S, W] (padding: 0); ``counts`` int32 [C, S]:
        each segment's real entries; ``slot_rows`` int32 [C, B]: ``rows``' first ``B``
        columns, ``B`` the most rows of one chunk (a row's segments share one slot, so the
        ``B x k`` solves, Gramian products included, skip the slots no row uses).
    """
    rows, cols, values = _entries(rows, cols, values, n_rows)
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    counts = np.bincount(rows, minlength=n_rows)
    width = segment_width(counts) if width is None else int(width)
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    order = np.argsort(rows, kind="stable")
    cols, values = cols[order], values[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_segments = np.maximum(-(-counts // width), 1)            # per row
    # S: segments (and slots) per chunk; no more than the side needs, at least its longest row;
    # then shrunk so that the chunks are evenly full (a last chunk mostly padding would be
    # gathered and solved all the same)
    total, longest = int(n_segments.sum()), int(n_segments.max())
    size = max(min(budget // width, total), longest)
    target = -(-total // size)
    size = max(-(-total // target), longest)
    # rows longest first, packed greedily: a chunk takes rows while their segments fit
    by_length = np.argsort(-n_segments, kind="stable")
    needs = n_segments[by_length]
    while True:
        chunk_of, first_of, n_chunks = _pack(needs, size)
        if n_chunks <= target:
            break
        size += max(1, size // 64)  # the greedy packing left gaps: a little more room per chunk
    chunk_of[by_length], first_of[by_length] = chunk_of.copy(), first_of.copy()
    slot_of = np.empty(n_rows, np.int64)                     # the row's slot: its rank in its chunk
    chunk_sorted = chunk_of[by_length]
    chunk_start = np.searchsorted(chunk_sorted, np.arange(n_chunks))
    slot_of[by_length] = np.arange(n_rows) - chunk_start[chunk_sorted]
    slot_rows = np.full((n_chunks, size), NO_ROW, np.int64)
    slot_rows[chunk_of, slot_of] = np.arange(n_rows)
    # segments: (row, index t within the row) -> chunk position first_of[row] + t
    seg_row = np.repeat(np.arange(n_rows), n_segments)
    seg_t = np.arange(len(seg_row)) - np.repeat(np.cumsum(n_segments) - n_segments, n_segments)
    offset = seg_t[:, None] * width + np.arange(width)[None, :]
    valid = offset < counts[seg_row][:, None]
    take = np.where(valid, starts[seg_row][:, None] + offset, 0)
    shape = (n_chunks, size)
    plan = {"rows": slot_rows.astype(np.int32),
            "slots": np.zeros(shape, np.int32), "counts": np.zeros(shape, np.int32),
            "cols": np.zeros(shape + (width,), np.int32), "values": np.zeros(shape + (width,), np.float32)}
    at = (chunk_of[seg_row], first_of[seg_row] + seg_t)
    n_slots = int(slot_of.max()) + 1  # B: the most rows in one chunk (a row's segments share its slot)
    plan["slot_rows"] = plan["rows"][:, :n_slots].copy()
    plan["slots"][:] = n_slots - 1  # empty segments (no entries) name the last slot: slots stay sorted
    plan["slots"][at] = slot_of[seg_row]
    plan["counts"][at] = valid.sum(1)
    if len(cols):
        plan["cols"][at] = np.where(valid, cols[take], 0)
        plan["values"][at] = np.where(valid, values[take], 0)
    return plan


def side_plans(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, *,
               budget: int = DEFAULT_BUDGET) -> tuple[dict[str, np.ndarray], ...]:
    """One side's entries as :func:`row_plan` s over disjoint sets of rows, for
    :func:`solve_side`: the rows that fit a ``budget``-sized chunk in one plan of such
    chunks, and (if any) the longer rows in a second plan, whose chunks are as large as
    its longest row.

    A row is never split over chunks, so one plan's chunk shape is set by its longest
    row: a heavy-tailed side (ml-20m's most rated movie has 67,000 ratings) would make
    every chunk that large, out of cache; the second plan keeps that to the few long rows.
    """
    rows, cols, values = _entries(rows, cols, values, n_rows)
    counts = np.bincount(rows, minlength=n_rows)
    width = segment_width(counts)
    long = counts > max(budget // width, 1) * width
    plans = []
    for members in (np.flatnonzero(~long), np.flatnonzero(long)):
        if not len(members):  # no long rows (or no short ones)
            continue
        local = np.full(n_rows, -1, np.int64)
        local[members] = np.arange(len(members))
        keep = local[rows] >= 0
        plan = row_plan(local[rows[keep]], cols[keep], values[keep], len(members), budget=budget, width=width)
        for name in ("rows", "slot_rows"):  # back to the side's row ids
            plan[name] = np.where(plan[name] == NO_ROW, NO_ROW, members[np.minimum(plan[name], len(members) - 1)]
                                  ).astype(np.int32)
        plans.append(plan)
    return tuple(plans)


def _pack(needs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Next-fit packing of rows needing ``needs`` segments (in this order) into chunks of
    ``size``: (each row's chunk, its first segment there, the number of chunks)."""
    ends = np.cumsum(needs)
    chunk_of, first_of = np.empty(len(needs), np.int64), np.empty(len(needs), np.int64)
    start, chunk, i = 0, 0, 0
    while i < len(needs):
        # the rows from i on that fit in one chunk: a run of the cumulative sum
        j = int(np.searchsorted(ends, start + size, side="right"))
        chunk_of[i:j] = chunk
        first_of[i:j] = ends[i:j] - needs[i:j] - start
        start, chunk, i = int(ends[j - 1]), chunk + 1, j
    return chunk_of, first_of, chunk


def plan_entries(plan: dict[str, Any]) -> int:
    """The number of real entries a plan holds."""
    return int(np.asarray(plan["counts"]).sum())


def spd_solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a^-1 b`` of a batch of symmetric positive-definite systems, a [..., k, k] and b
    [..., k], by Cholesky factors."""
    chol = jnp.linalg.cholesky(a)
    y = jax.scipy.linalg.solve_triangular(chol, b[..., None], lower=True)
    return jax.scipy.linalg.solve_triangular(chol, y, lower=True, trans="T")[..., 0]


def solve_rows(fixed: jax.Array, gram: jax.Array, cols: jax.Array, targets: jax.Array, counts: jax.Array,
               slots: jax.Array, reg: jax.Array, x0: jax.Array, *, solver: str = "cholesky",
               cg_steps: int = 3, residual: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Solve ``(G + F_u^T F_u + reg_u I) x_u = F_u^T y_u`` for the rows of one chunk.

    Parameters
    ----------
    fixed : float [n_fixed, k]
        The fixed side's vectors ``F``.
    gram : float [k, k]
        ``G``, shared by every row (``alpha0 F^T F`` for iALS, zeros for ALS).
    cols : int [S, W]
        Each segment's observed columns (entries past ``counts`` are padding).
    targets : float [S, W]
        ``y`` of each entry.
    counts : int [S]
        Real entries per segment.
    slots : int [S]
        The row (slot in [0, B)) each segment belongs to, in increasing order.
    reg : float [B]
        Each row's ridge weight.
    x0 : float [B, k]
        The current solution: the start of conjugate gradient (ignored by Cholesky).
    solver : {"cholesky", "cg"}
        Exact, or ``cg_steps`` of conjugate gradient from ``x0``.
    residual : bool
        Also return the chunk's sum of squared residuals ``(y - <f, x>)^2`` over its
        entries at the solution (from the gathered ``F_u`` already in hand: no second gather).

    Returns
    -------
    float [B, k] (and, with ``residual``, a float scalar)
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    n_slots, k = x0.shape
    mask = (jnp.arange(cols.shape[1])[None, :] < counts[:, None]).astype(fixed.dtype)
    f = fixed[cols] * mask[..., None]                              # [S, W, k], gathered once
    targets = targets * mask

    def per_row(x: jax.Array) -> jax.Array:
        return jax.ops.segment_sum(x, slots, num_segments=n_slots, indices_are_sorted=True)

    def scores(x: jax.Array) -> jax.Array:                          # <f, x_row> per entry [S, W]
        return jnp.einsum("swk,sk->sw", f, x[slots])

    if solver == "cholesky":
        b = per_row(jnp.einsum("sw,swk->sk", targets, f))
        a = (gram[None] + per_row(jnp.einsum("swk,swj->skj", f, f))
             + reg[:, None, None] * jnp.eye(k, dtype=fixed.dtype))
        x = spd_solve(a, b)
        return (x, jnp.sum((targets - scores(x)) ** 2)) if residual else x

    # conjugate gradient from x0; each step is one pass over F_u for <f, p> and one for F_u^T (.),
    # and the entries' scores <f, x> are carried along (x moves by alpha p), for the residual
    def step(carry: tuple, _: None) -> tuple:
        x, r, p, rs, sx = carry
        sp = scores(p)
        ap = p @ gram + per_row(jnp.einsum("swk,sw->sk", f, sp)) + reg[:, None] * p
        curvature = jnp.sum(p * ap, axis=1)
        alpha = jnp.where(curvature > 0, rs / jnp.where(curvature > 0, curvature, 1.0), 0.0)
        x = x + alpha[:, None] * p
        sx = sx + alpha[slots][:, None] * sp
        r = r - alpha[:, None] * ap
        rs_new = jnp.sum(r * r, axis=1)
        beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0)
        return (x, r, r + beta[:, None] * p, rs_new, sx), None

    sx = scores(x0)
    # r = b - A x0 = F_u^T (y - F_u x0) - G x0 - reg x0: one pass for b and F_u^T F_u x0 together
    r = per_row(jnp.einsum("swk,sw->sk", f, targets - sx)) - x0 @ gram - reg[:, None] * x0
    (x, *_, sx), _ = jax.lax.scan(step, (x0, r, r, jnp.sum(r * r, axis=1), sx), None, length=cg_steps)
    return (x, jnp.sum((targets - sx) ** 2)) if residual else x


def _chunks(plan: dict[str, jax.Array]) -> tuple[jax.Array, ...]:
    return plan.get("slot_rows", plan["rows"]), plan["slots"], plan["cols"], plan["values"], plan["counts"]


def solve_side(table: jax.Array, fixed: jax.Array, gram: jax.Array,
               plan: dict[str, jax.Array] | tuple[dict[str, jax.Array], ...], reg: jax.Array, *,
               fixed_offset: jax.Array | None = None, solver: str = "cholesky", cg_steps: int = 3,
               residual: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Every row of ``table`` [n_rows(+padding), k] solved against ``fixed`` (one half-sweep).

    ``plan`` is a :func:`row_plan`, or a tuple of plans over disjoint rows
    (:func:`side_plans`), solved one after the other (a half-sweep's rows are independent).

    Targets are the plan's values minus ``fixed_offset[col]`` (the fixed side's
    biases, for explicit ALS; none: the values). ``reg`` [n_rows] is each row's ridge
    weight. Rows of ``table`` outside the plan (mesh padding) keep their values. With
    ``residual``, also the sum over the plan's entries of ``(target - <fixed[col],
    x[row]>)^2`` at the new solutions (what :func:`observed_residuals` would give after
    this half-sweep, without gathering ``fixed`` again).
    """
    if isinstance(plan, (tuple, list)):
        squares = jnp.zeros((), fixed.dtype)
        for part in plan:
            out = solve_side(table, fixed, gram, part, reg, fixed_offset=fixed_offset, solver=solver,
                             cg_steps=cg_steps, residual=residual)
            table, squares = (out[0], squares + out[1]) if residual else (out, squares)
        return (table, squares) if residual else table
    n_rows = reg.shape[0]

    def one(chunk: tuple) -> tuple[jax.Array, jax.Array]:
        rows, slots, cols, values, counts = chunk
        targets = values if fixed_offset is None else values - fixed_offset[cols]
        row = jnp.minimum(rows, n_rows - 1)
        out = solve_rows(fixed, gram, cols, targets, counts, slots, reg[row], table[row],
                         solver=solver, cg_steps=cg_steps, residual=residual)
        return out if residual else (out, jnp.zeros((), fixed.dtype))

    x, squares = jax.lax.map(one, _chunks(plan))
    rows = plan.get("slot_rows", plan["rows"]).reshape(-1)
    table = table.at[rows].set(x.reshape(-1, table.shape[1]).astype(table.dtype), mode="drop")
    return (table, jnp.sum(squares)) if residual else table


def observed_residuals(own: jax.Array, other: jax.Array, plan: dict[str, jax.Array],
                       offset: float | jax.Array = 0.0) -> tuple[jax.Array, jax.Array]:
    """(sum of squared residuals, sum of predictions squared) over the plan's entries,
    a residual being ``value - offset - <own[row], other[col]>``."""
    n_rows = own.shape[0]

    def one(chunk: tuple) -> tuple[jax.Array, jax.Array]:
        rows, slots, cols, values, counts = chunk
        mask = jnp.arange(cols.shape[1])[None, :] < counts[:, None]
        score = jnp.einsum("sk,swk->sw", own[jnp.minimum(rows, n_rows - 1)][slots], other[cols])
        return (jnp.sum(jnp.where(mask, (values - offset - score) ** 2, 0.0)),
                jnp.sum(jnp.where(mask, score ** 2, 0.0)))

    residual, square = jax.lax.map(one, _chunks(plan))
    return residual.sum(), square.sum()
