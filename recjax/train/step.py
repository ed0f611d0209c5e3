"""Pure train/eval steps and the one-compiled-call epoch.

A model is a Flax NNX module split once into a static ``graphdef``, its trainable
``nnx.Param`` values (a plain nested dict of arrays) and the rest (constants);
training carries only the pure :class:`TrainState` pytree, which orbax saves as is. A model implements

``model(batch, train=..., rngs=...) -> predictions [B]`` (or logits [B, C]) and
``model.penalty(batch) -> scalar`` (its regularisation on this batch), and
optionally ``model.augment(batch, key) -> batch`` (e.g. sampled negatives),
and the tables a batch indexes by rows (``model.row_lookups()``, see
:mod:`recjax.models.base`), which an optimiser with sparse table updates
(:class:`recjax.train.sparse.SparseOptimizer`) updates by rows only,

where ``batch`` is a dict of arrays with a leading batch axis holding at least
``label`` and ``weight`` (0 for padding). Per-step randomness (dropout, sampled
negatives) is ``fold_in(state.key, state.step)``; epoch shuffles use
``fold_in(epoch_key, epoch)``, so a run is a function of its seed.

Example
-------
>>> import jax, jax.numpy as jnp, optax
>>> from flax import nnx
>>> from recjax.models.mf import MF, MFConfig
>>> from recjax.train.step import Model, TrainState, make_epoch, make_train_step
>>> model = Model.split(MF(MFConfig(embedding_dim=2), 3, 4, rngs=nnx.Rngs(0)))
>>> tx = optax.sgd(0.1)
>>> state = TrainState(model.params, tx.init(model.params), jnp.int32(0), jax.random.key(0))
>>> data = {"user": jnp.array([0, 1, 2]), "item": jnp.array([0, 1, 3]),
...         "label": jnp.array([4.0, 3.0, 5.0])}
>>> epoch = make_epoch(make_train_step(model, tx, "regression"), n_examples=3, batch_size=2)
>>> state, metrics = epoch(state, data, jax.random.key(1))
>>> int(state.step), sorted(metrics)
(2, ['data_loss', 'loss'])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from recjax.models.base import is_table
from recjax.train.losses import TASK_LOSSES, masked_mean
from recjax.train.sharding import table_paths
from recjax.train.sparse import SparseOptimizer, assign_paths, get_path, lookup_groups, unique_rows

__all__ = ["TrainState", "Model", "make_train_step", "make_epoch", "make_predict"]

Batch = dict[str, jax.Array]


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree.

    Attributes
    ----------
    params : dict
        The model's ``nnx.Param`` values as a nested dict of arrays.
    opt_state : optax.OptState
    step : int32 scalar
        Optimiser steps taken so far.
    key : PRNG key
        The run's base key for per-step randomness.
    """

    params: dict
    opt_state: Any
    step: jax.Array
    key: jax.Array


@dataclass(frozen=True, eq=False)
class Model:
    """A split NNX module: static structure plus the initial trainable state.

    Attributes
    ----------
    graphdef : nnx.GraphDef
    params : dict
        Initial trainable ``nnx.Param`` values (nested dict of arrays).
    rest : nnx.State
        Everything else (constants), fixed during training.
    tables : frozenset of tuple
        Paths (key tuples) of the embedding tables in ``params``, the parameters a
        device mesh splits by rows (see :mod:`recjax.train.sharding`).
    row_lookups : dict
        Table path -> the batch fields indexing its rows: the module's
        ``row_lookups()`` (none declared: empty; every table then trains densely).
    """

    graphdef: Any
    params: dict
    rest: nnx.State
    tables: frozenset = frozenset()
    row_lookups: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def split(cls, module: nnx.Module) -> "Model":
        tables = table_paths(nnx.to_pure_dict(nnx.state(module, is_table)))
        declared = getattr(module, "row_lookups", None)
        lookups = {tuple(path): tuple(fields) for path, fields in (declared() if declared else {}).items()}
        unknown = sorted(str(path) for path in lookups if path not in tables)
        if unknown:
            raise ValueError(f"{type(module).__name__}.row_lookups() names {', '.join(unknown)}, which "
                             f"are not tables (recjax.models.base.table); declare table paths only")
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        return cls(graphdef, nnx.to_pure_dict(params), rest, tables, lookups)

    def bind(self, params: dict, rest: nnx.State | None = None) -> nnx.Module:
        """The module with ``params`` and ``rest`` (default :attr:`rest`; a fresh object,
        nothing is mutated).

        Tables stored with padding rows (on a mesh) are cut to their real rows.
        """
        real = jax.tree.map(lambda value, initial: value[: np.shape(initial)[0]]
                            if np.ndim(initial) and np.shape(value)[0] != np.shape(initial)[0] else value,
                            params, self.params)
        return nnx.merge(self.graphdef, real, self.rest if rest is None else rest)


def make_train_step(
    model: Model, tx: optax.GradientTransformation | SparseOptimizer, task: str
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """``step(state, batch, rest=None) -> (state, metrics)``: one optimiser update, pure.

    ``rest`` is the model's non-trained state (default ``model.rest``, then constants
    of the compiled step); given as an argument it is an input of the compiled
    program, so models that differ only in it (a regularisation weight, a study's
    trials) share one program.

    ``metrics`` holds ``loss`` (data loss + penalty) and ``data_loss`` (the task
    loss alone), both averaged over the batch's real examples. With a
    :class:`~recjax.train.sparse.SparseOptimizer`, its tables are differentiated and
    updated at the rows the batch looks up only (:mod:`recjax.train.sparse`).
    """
    per_example = TASK_LOSSES[task]
    sparse = isinstance(tx, SparseOptimizer)
    if sparse:
        missing = sorted(str(path) for path in tx.tables if path not in model.row_lookups)
        if missing:
            raise ValueError(f"sparse table updates of {', '.join(missing)}: the model declares no "
                             f"row_lookups for them; use table_updates='dense'")
        groups = lookup_groups({path: model.row_lookups[path] for path in tx.tables})

    def step(state: TrainState, batch: Batch, rest: nnx.State | None = None
             ) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(state.key, state.step)
        module = model.bind(state.params, rest)
        augment = getattr(module, "augment", None)
        if augment is not None:
            batch = augment(batch, jax.random.fold_in(key, 1))
        params, ids = state.params, {}
        if sparse:  # the looked-up rows stand in for the tables, positions into them for the fields
            batch, ids = _row_batch(module, model, groups, params, batch)
            params = assign_paths(params, {path: get_path(params, path).at[index].get(
                mode="fill", fill_value=0) for path, index in ids.items()})

        def objective(params: dict) -> tuple[jax.Array, jax.Array]:
            module = model.bind(params, rest)
            predictions = module(batch, train=True, rngs=nnx.Rngs(dropout=key))
            data_loss = masked_mean(per_example(predictions, batch["label"]), batch["weight"])
            return data_loss + module.penalty(batch), data_loss

        (loss, data_loss), grads = jax.value_and_grad(objective, has_aux=True)(params)
        if sparse:
            grads = tx.clip(grads)
            new_params, dense_state = tx.update_dense(grads, state.opt_state[0], state.params)
            new_params, table_state = tx.update_rows(
                new_params, state.opt_state[1], ids, {path: get_path(params, path) for path in ids},
                {path: get_path(grads, path) for path in ids})
            opt_state = (dense_state, table_state)
        else:
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            new_params = optax.apply_updates(state.params, updates)
        new_state = TrainState(new_params, opt_state, state.step + 1, state.key)
        return new_state, {"loss": loss, "data_loss": data_loss}

    return step


def _row_batch(module: nnx.Module, model: Model, groups: list, params: dict,
               batch: Batch) -> tuple[Batch, dict[tuple, jax.Array]]:
    """(the batch with each declared field replaced by positions into its group's
    distinct rows, {table path: those rows' indices [S]}).

    ``S`` per group is the smaller of the group's indices and its tables' real rows
    (so a model's own clipping of indices to its table never moves a position).
    """
    derive = getattr(module, "lookup_fields", None)
    batch = dict(derive(batch) if derive is not None else batch)
    ids = {}
    for fields, paths in groups:
        rows = min(int(np.shape(get_path(model.params, path))[0]) for path in paths)
        size = min(sum(int(np.size(batch[name])) for name in fields), rows)
        index, positions = unique_rows([batch[name] for name in fields], size)
        batch.update(zip(fields, positions))
        ids.update({path: index for path in paths})
    return batch, ids


def batch_layout(n_examples: int, batch_size: int) -> tuple[int, int]:
    """(batch size, batches per epoch); ``batch_size=0`` means one full batch."""
    size = n_examples if batch_size == 0 else batch_size
    return size, math.ceil(n_examples / size)


def make_epoch(
    step: Callable[..., tuple[TrainState, dict[str, jax.Array]]],
    n_examples: int,
    batch_size: int,
    *,
    state_sharding: Any = None,
    batch_sharding: Any = None,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """``epoch(state, data, epoch_key, rest=None) -> (state, mean metrics)``: one
    jit-compiled call (``rest``: the model's non-trained state, passed to ``step``).

    ``data`` holds arrays with leading axis ``n_examples`` (or more: rows past
    ``n_examples`` are padding, never drawn), resident on the device(s).
    Each epoch visits a fresh permutation in ``ceil(n / batch_size)`` batches; the
    last batch is filled up with repeated examples at weight 0, so every example
    counts exactly once and the shapes never change (no recompilation). The input
    state's buffers are donated. On a mesh, ``state_sharding`` (a pytree of
    shardings like the state) keeps the state where it was, and each batch is laid
    out by ``batch_sharding`` (split over the data axis).
    """
    size, n_batches = batch_layout(n_examples, batch_size)
    padded = size * n_batches

    def epoch(state: TrainState, data: Batch, epoch_key: jax.Array, rest: nnx.State | None = None):
        order = jnp.resize(jax.random.permutation(epoch_key, n_examples), padded)
        real = (jnp.arange(padded) < n_examples).astype(jnp.float32)
        order, real = order.reshape(n_batches, size), real.reshape(n_batches, size)

        def body(carry: TrainState, xs: tuple[jax.Array, jax.Array]):
            rows, mask = xs
            batch = {name: values[rows] for name, values in data.items()}
            batch["weight"] = batch["weight"] * mask if "weight" in batch else mask
            if batch_sharding is not None:
                batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
            carry, metrics = step(carry, batch, rest)
            return carry, (metrics, jnp.sum(mask))

        state, (metrics, counts) = jax.lax.scan(body, state, (order, real))
        means = {k: jnp.sum(v * counts) / jnp.sum(counts) for k, v in metrics.items()}
        return state, means

    if state_sharding is None:
        return jax.jit(epoch, donate_argnums=0)
    return jax.jit(epoch, donate_argnums=0, out_shardings=(state_sharding, None))


def make_predict(model: Model, chunk: int = 8192, *,
                 out_sharding: Any = None) -> Callable[[dict, Batch], jax.Array]:
    """``predict(params, data) -> predictions [n]``: jitted, in fixed-size chunks.

    Inputs are padded to a multiple of ``chunk``; one compile per padded length.
    ``out_sharding`` (e.g. replicated over a mesh) places the predictions.
    """

    def predict(params: dict, data: Batch) -> jax.Array:
        module = model.bind(params)
        n = next(iter(data.values())).shape[0]
        n_chunks = max(1, -(-n // chunk))
        pad = n_chunks * chunk - n

        def reshape(values: jax.Array) -> jax.Array:
            values = jnp.pad(values, [(0, pad)] + [(0, 0)] * (values.ndim - 1))
            return values.reshape(n_chunks, chunk, *values.shape[1:])

        chunks = {name: reshape(values) for name, values in data.items()}
        out = jax.lax.map(lambda b: module(b, train=False), chunks)
        return out.reshape(n_chunks * chunk, *out.shape[2:])[:n]

    return jax.jit(predict, out_shardings=out_sharding)
