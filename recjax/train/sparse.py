"""Sparse (row-wise) updates of embedding tables: only the rows a batch looked up change.

A model declares which batch fields index which of its tables
(``row_lookups()``, see :mod:`recjax.models.base`). For each group of tables
indexed by the same fields, the train step (:func:`recjax.train.step.make_train_step`)
takes the distinct rows those fields index (:func:`unique_rows`, a fixed number of
slots), gathers them, runs the model on the gathered rows with the fields replaced
by positions into them, and differentiates with respect to the gathered rows: each
row's gradient is already the sum over its occurrences in the batch, exactly the
row of the dense gradient. :class:`SparseOptimizer` then applies the optimiser rule
to those rows and scatters them back in place (and their optimiser state); every
other row, the mesh's padding rows included, is never read or written.

Rules (learning rate from the same optax schedule at the global step):

* ``sgd``: ``w -= lr g``; the same parameters as dense SGD (a row not looked up has
  a zero gradient).
* ``adagrad``: optax's (``initial_accumulator_value`` 0.1, ``eps`` 1e-7 inside the
  square root); a zero gradient leaves dense adagrad's row unchanged, so this too
  equals dense.
* ``adam`` / ``adamw``: **lazy** Adam (TF's LazyAdam, torch's SparseAdam): the
  moments of a row decay and the row moves only in the steps that look it up;
  bias correction uses the global step; adamw's decoupled decay applies to the
  looked-up rows only. Not the same parameters as dense Adam, whose moments keep
  moving every row after its last look-up.

A row is "looked up" when a declared field names it, whatever its gradient (e.g.
a batch's zero-weight padding examples); negative indices (``PAD``) name none.
Global-norm clipping sees the whole gradient: the per-row sums plus the dense
parameters' gradients. Dense parameters (and undeclared tables) keep their optax
rule (:func:`optax.masked`).

Example
-------
>>> import jax.numpy as jnp
>>> from recjax.train.sparse import unique_rows
>>> ids, (pos,) = unique_rows([jnp.array([7, 2, 7, -1])], size=4)
>>> ids.tolist()[:2], pos.tolist()
([2, 7], [1, 0, 1, -1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

__all__ = ["TABLE_RULES", "NO_ROW", "SparseOptimizer", "lookup_groups", "unique_rows", "get_path",
           "assign_paths"]

TABLE_RULES = ("sgd", "adagrad", "adam", "adamw")
ADAM = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}  # optax.adam's defaults
ADAGRAD = {"initial_accumulator_value": 0.1, "eps": 1e-7}  # optax.adagrad's defaults
NO_ROW = int(jnp.iinfo(jnp.int32).max)  # an unused slot: gathers zeros, its scatter is dropped

Path = tuple


def get_path(tree: Any, path: Path) -> Any:
    """The leaf of nested dict ``tree`` at key tuple ``path``."""
    for key in path:
        tree = tree[key]
    return tree


def assign_paths(tree: dict, values: dict[Path, Any]) -> dict:
    """A copy of nested dict ``tree`` with ``values`` ({path: leaf}) set (dicts created as needed)."""
    out = dict(tree)
    heads: dict[Any, dict[Path, Any]] = {}
    for path, value in values.items():
        if len(path) == 1:
            out[path[0]] = value
        else:
            heads.setdefault(path[0], {})[path[1:]] = value
    for key, rest in heads.items():
        out[key] = assign_paths(out.get(key, {}), rest)
    return out


def lookup_groups(row_lookups: dict[Path, Sequence[str]]) -> list[tuple[tuple[str, ...], tuple[Path, ...]]]:
    """Tables whose index fields overlap, grouped: [(fields, table paths)], each field in one group.

    A field names rows of one index space, so every table a field indexes shares
    the group's distinct rows and the field's positions into them.
    """
    groups: list[tuple[set, set]] = []
    for path, fields in sorted(row_lookups.items(), key=lambda item: str(item[0])):
        fields_set, paths = set(fields), {path}
        for group in [g for g in groups if g[0] & fields_set]:
            groups.remove(group)
            fields_set |= group[0]
            paths |= group[1]
        groups.append((fields_set, paths))
    return [(tuple(sorted(f)), tuple(sorted(p, key=str))) for f, p in groups]


def unique_rows(indices: Sequence[jax.Array], size: int) -> tuple[jax.Array, list[jax.Array]]:
    """The distinct rows named by index arrays, and each index's position among them.

    Parameters
    ----------
    indices : sequence of int arrays, any shapes
        Row indices; negative ones (``PAD``) name no row.
    size : int
        Slots of the result: at least the number of distinct rows (e.g. the table's
        rows or the total number of indices, whichever is smaller).

    Returns
    -------
    ids : int32 [size]
        The distinct rows, ascending, then :data:`NO_ROW` in the unused slots.
    positions : list of int32 arrays, shaped like ``indices``
        ``ids[positions] == indices`` where an index is >= 0; -1 where it is negative.
    """
    flat = jnp.concatenate([jnp.ravel(i).astype(jnp.int32) for i in indices])
    ids, inverse = jnp.unique(jnp.where(flat >= 0, flat, NO_ROW), size=size, fill_value=NO_ROW,
                              return_inverse=True)
    inverse = jnp.where(flat >= 0, jnp.ravel(inverse).astype(jnp.int32), -1)
    positions, start = [], 0
    for i in indices:
        positions.append(inverse[start: start + i.size].reshape(i.shape))
        start += i.size
    return ids.astype(jnp.int32), positions


@dataclass(frozen=True, eq=False)
class SparseOptimizer:
    """The optimiser of a run with sparse table updates (built by
    :func:`recjax.train.optim.make_optimizer`).

    Its state is ``(dense optax state, table state)``: the first is
    ``optax.masked(dense)`` over the parameters (tables masked out), the second a
    dict ``{slot name: {table path...: array like the table}}`` (``sum_of_squares``
    for adagrad, ``mu`` and ``nu`` for adam/adamw, nothing for sgd), laid out like
    the tables on a mesh.

    Attributes
    ----------
    rule : {"sgd", "adagrad", "adam", "adamw"}
    schedule : optax.Schedule
        The learning rate by global step.
    dense : optax.GradientTransformation
        The rule for every other parameter (unclipped: :meth:`clip` clips the whole).
    tables : frozenset of tuple
        Paths of the tables updated by rows.
    grad_clip : float
        Global-norm clipping of the whole gradient; 0 = off.
    weight_decay : float
        adamw's decoupled decay.
    """

    rule: str
    schedule: optax.Schedule
    dense: optax.GradientTransformation
    tables: frozenset
    grad_clip: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.rule not in TABLE_RULES:
            raise ValueError(f"no sparse table rule for optimizer {self.rule!r}; choose one of "
                             f"{', '.join(TABLE_RULES)} or table_updates='dense'")

    def _masked(self, params: dict) -> optax.GradientTransformation:
        mask = jax.tree_util.tree_map_with_path(lambda path, _: _path(path) not in self.tables, params)
        return optax.masked(self.dense, mask)

    def _slots(self) -> dict[str, float]:
        """Optimiser state per table row: slot name -> initial value."""
        if self.rule == "adagrad":
            return {"sum_of_squares": ADAGRAD["initial_accumulator_value"]}
        if self.rule in ("adam", "adamw"):
            return {"mu": 0.0, "nu": 0.0}
        return {}

    def init(self, params: dict) -> tuple[Any, dict]:
        """The optimiser state of ``params`` (tables as stored, padding included)."""
        slots = {name: assign_paths({}, {path: jnp.full_like(get_path(params, path), value)
                                         for path in self.tables})
                 for name, value in self._slots().items()}
        return self._masked(params).init(params), slots

    def clip(self, grads: Any) -> Any:
        """``grads`` clipped to global norm ``grad_clip`` (optax's rule), unchanged when off."""
        if not self.grad_clip:
            return grads
        return optax.clip_by_global_norm(self.grad_clip).update(grads, optax.EmptyState())[0]

    def update_dense(self, grads: dict, opt_state: Any, params: dict) -> tuple[dict, Any]:
        """(params with every non-table leaf updated by the dense rule, its new state)."""
        updates, opt_state = self._masked(params).update(grads, opt_state, params)
        params = jax.tree_util.tree_map_with_path(
            lambda path, p, u: p if _path(path) in self.tables else optax.apply_updates(p, u),
            params, updates)
        return params, opt_state

    def update_rows(self, params: dict, slots: dict, ids: dict[Path, jax.Array], rows: dict[Path, jax.Array],
                    grads: dict[Path, jax.Array], step: jax.Array) -> tuple[dict, dict]:
        """Apply the rule to the rows ``ids`` of each table and scatter them back.

        ``rows[path]`` [S, ...] are the rows gathered at ``ids[path]`` [S] (unused
        slots :data:`NO_ROW`, dropped), ``grads[path]`` their summed gradients.
        Returns (params, slots) with only those rows changed.
        """
        lr = self.schedule(step)
        t = (step + 1).astype(jnp.float32)
        new_tables: dict[Path, jax.Array] = {}
        new_slots: dict[str, dict[Path, jax.Array]] = {name: {} for name in slots}
        for path, index in ids.items():
            w, g = rows[path], grads[path]
            state = {name: get_path(slots[name], path).at[index].get(mode="fill", fill_value=0)
                     for name in slots}
            if self.rule == "sgd":
                w = w - lr * g
            elif self.rule == "adagrad":
                acc = state["sum_of_squares"] + g * g
                w = w - lr * jnp.where(acc > 0, jax.lax.rsqrt(acc + ADAGRAD["eps"]), 0.0) * g
                state = {"sum_of_squares": acc}
            else:
                b1, b2 = ADAM["b1"], ADAM["b2"]
                mu = b1 * state["mu"] + (1 - b1) * g
                nu = b2 * state["nu"] + (1 - b2) * g * g
                u = (mu / (1 - b1 ** t)) / (jnp.sqrt(nu / (1 - b2 ** t)) + ADAM["eps"])
                if self.rule == "adamw":
                    u = u + self.weight_decay * w
                w = w - lr * u
                state = {"mu": mu, "nu": nu}
            new_tables[path] = get_path(params, path).at[index].set(w, mode="drop")
            for name, value in state.items():
                new_slots[name][path] = get_path(slots[name], path).at[index].set(value, mode="drop")
        return (assign_paths(params, new_tables),
                {name: assign_paths(slots[name], new_slots[name]) for name in slots})


def _path(keys: Sequence[Any]) -> Path:
    """A jax key path as the key tuple :class:`recjax.train.step.Model` names tables by."""
    return tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in keys)
