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

Rules: the optimiser's own optax transformation (:class:`SparseOptimizer`), on the
gathered rows and their rows of its state, its step count global:

* ``sgd``: the same parameters as dense SGD (a row not looked up has a zero gradient).
* ``adagrad``: a zero gradient leaves dense adagrad's row unchanged, so this too
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

__all__ = ["NO_ROW", "SparseOptimizer", "lookup_groups", "unique_rows", "get_path", "assign_paths"]

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
    :func:`recjax.train.optim.make_optimizer`): one optax rule, applied to the dense
    parameters as optax does and to the looked-up rows of the tables.

    Its state is ``(dense state, table state)``: ``optax.masked(rule)``'s over the
    parameters (tables masked out), and ``rule``'s own state of the tables alone
    (a nested dict of the tables, laid out like them on a mesh): its per-element
    leaves (``sum_of_squares``, ``mu``, ``nu``) hold a row per table row, its scalars
    (the step count, the injected learning rate) are the rule's as they are.
    :meth:`update_rows` gathers the rows of those per-element leaves, runs
    ``rule.update`` on the gathered rows and scatters them back, so the count moves
    once per step (Adam's bias correction by the global step) while a row's moments
    move only in the steps that look it up.

    Attributes
    ----------
    rule : optax.GradientTransformation
        The optimiser's optax transformation, unclipped (:meth:`clip` clips the whole
        gradient first).
    tables : frozenset of tuple
        Paths of the tables updated by rows.
    grad_clip : float
        Global-norm clipping of the whole gradient; 0 = off.
    """

    rule: optax.GradientTransformation
    tables: frozenset
    grad_clip: float = 0.0

    def _masked(self, params: dict) -> optax.GradientTransformation:
        mask = jax.tree_util.tree_map_with_path(lambda path, _: _path(path) not in self.tables, params)
        return optax.masked(self.rule, mask)

    def _tables(self, params: dict) -> dict:
        return assign_paths({}, {path: get_path(params, path) for path in self.tables})

    def init(self, params: dict) -> tuple[Any, Any]:
        """The optimiser state of ``params`` (tables as stored, padding included)."""
        return self._masked(params).init(params), self.rule.init(self._tables(params))

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

    def update_rows(self, params: dict, table_state: Any, ids: dict[Path, jax.Array],
                    rows: dict[Path, jax.Array], grads: dict[Path, jax.Array]) -> tuple[dict, Any]:
        """Apply the rule to the rows ``ids`` of each table and scatter them back.

        ``rows[path]`` [S, ...] are the rows gathered at ``ids[path]`` [S] (unused
        slots :data:`NO_ROW`, dropped), ``grads[path]`` their summed gradients.
        Returns (params, table state) with only those rows changed (and the rule's
        scalars moved on by one step).
        """
        index = assign_paths({}, ids)
        per_row = self._per_row(table_state, index)  # the index of each per-element leaf, else None
        gathered = jax.tree.map(lambda leaf, at: leaf if at is None else leaf.at[at].get(
            mode="fill", fill_value=0), table_state, per_row, is_leaf=_is_none)
        rows_tree = assign_paths({}, rows)
        updates, new_state = self.rule.update(assign_paths({}, grads), gathered, rows_tree)
        new_rows = optax.apply_updates(rows_tree, updates)
        params = assign_paths(params, {path: get_path(params, path).at[at].set(get_path(new_rows, path), mode="drop")
                                       for path, at in ids.items()})
        table_state = jax.tree.map(lambda leaf, new, at: new if at is None else leaf.at[at].set(new, mode="drop"),
                                   table_state, new_state, per_row, is_leaf=_is_none)
        return params, table_state

    def _per_row(self, table_state: Any, index: dict) -> Any:
        """``table_state`` with each leaf that holds a row per table row replaced by that
        table's row indices and every other leaf by ``None``."""
        return optax.tree_utils.tree_map_params(self.rule, lambda _, at: at, table_state, index,
                                                transform_non_params=lambda _: None)


def _is_none(leaf: Any) -> bool:
    return leaf is None


def _path(keys: Sequence[Any]) -> Path:
    """A jax key path as the key tuple :class:`recjax.train.step.Model` names tables by."""
    return tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in keys)
