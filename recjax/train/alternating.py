"""The training loop of alternating-least-squares families: one epoch is one sweep.

:func:`fit` has :func:`recjax.train.loop.fit`'s contract (same parameters, a
:class:`~recjax.train.loop.FitResult`, validation after every epoch (or every
``cfg.val_every``-th and the last), the same early stopping, ``last``/``best``
checkpoints on the same schedule through :class:`~recjax.train.checkpoint.Checkpoints`
and bitwise resume: the same loop, :func:`~recjax.train.loop.run_epochs`) for a module
that trains by sweeps instead of optimiser steps:

* ``module.sweep_data(train) -> data``: what a sweep reads (NumPy arrays; e.g. the
  row plans of :mod:`recjax.models.als_solvers`), built once from the training examples;
* ``module.sweep(params, data) -> (params, {"loss", "data_loss"})``: one sweep, pure
  (jitted here once, the parameters donated and laid out on the device mesh as for
  the other families: tables row-sharded).

The checkpointed state is a :class:`~recjax.train.step.TrainState` without optimiser
state (``opt_state`` is empty; ``step`` counts sweeps).

A sweep has no learning rate: a run whose factors collapse or stop being finite is
refused with the family's weights to change (:func:`sweep_advice`).

Example
-------
>>> import numpy as np
>>> from recjax.config import RunConfig
>>> from recjax.models.als import IALS, IALSConfig
>>> from recjax.train.alternating import fit
>>> from recjax.train.step import Model
>>> from flax import nnx
>>> model = Model.split(IALS(IALSConfig(embedding_dim=2), 3, 4, rngs=nnx.Rngs(0)))
>>> train = {"user": np.array([0, 1, 2, 2]), "item": np.array([0, 1, 2, 3]), "label": np.ones(4)}
>>> result = fit(model, train, RunConfig(epochs=3, quiet=True), task="regression", validate=None,
...              monitor=None)
>>> len(result.history), result.params["user_factors"].shape
(3, (3, 2))
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from recjax.config import RunConfig
from recjax.train.checkpoint import Checkpoints
from recjax.train.loop import (
    Advice,
    FitResult,
    count_examples,
    parameter_check,
    run_epochs,
    start_epochs,
)
from recjax.train.sharding import Layout, make_mesh
from recjax.train.step import Batch, Model, TrainState

__all__ = ["fit", "sweep_advice"]

_NO_OPTIMISER: tuple = ()  # the TrainState's opt_state: sweeps keep no optimiser state
#: the model config fields of the sweep families that weigh the solves (iALS, ALS, EASE)
_WEIGHTS = ("unobserved_weight", "regularization", "l2")


def sweep_advice(cfg: Any) -> Advice:
    """What to change when a sweep family's run diverges or collapses: its weights, as
    flags. Those moved from their defaults are named, each to be brought back toward its
    default (a weight of 1e30 that zeroes every factor is to be lowered, a regularisation
    of 1e-30 that leaves the solves singular raised); with none moved, each is named."""
    default = type(cfg)()
    weights = [(name, getattr(cfg, name), getattr(default, name)) for name in _WEIGHTS if hasattr(cfg, name)]
    moved = [(name, now, was) for name, now, was in weights if now != was]
    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    if moved:
        text = " or ".join(f"{'lower' if now > was else 'raise'} {flag(name)} {now:g} toward its "
                           f"default {was:g}" for name, now, was in moved)
        return Advice(diverged=f"a sweep has no learning rate: {text}",
                      collapsed=f"a sweep has no learning rate: {text}")
    names = " or ".join(f"{flag(name)} ({now:g})" for name, now, _ in weights)
    return Advice(diverged=f"a sweep has no learning rate: raise {names}",
                  collapsed=f"a sweep has no learning rate: lower {names}")


def fit(
    model: Model,
    train: Batch,
    cfg: RunConfig,
    *,
    task: str,
    validate: Callable[[dict], dict[str, float]] | None,
    monitor: str | None,
    higher_is_better: bool = False,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
    identity: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    layout: Layout | None = None,
) -> FitResult:
    """Train ``model`` (a split module with ``sweep_data`` and ``sweep``) by ``cfg.epochs``
    sweeps over ``train`` (dict of arrays, leading axis = examples).

    The parameters mean what they mean in :func:`recjax.train.loop.fit`; the
    optimiser settings of ``cfg`` (optimizer, learning rate, batch size) and ``task``
    are not used: a sweep solves its rows exactly (or by conjugate gradient).
    """
    n = count_examples(train)
    module = model.bind(model.params)
    for method in ("sweep_data", "sweep"):
        if not callable(getattr(module, method, None)):
            raise TypeError(f"{type(module).__name__} has no {method}(): train it with recjax.train.loop.fit")
    layout = layout or Layout(make_mesh(1, 1), model)
    shardings = layout.shardings(jax.eval_shape(layout.pad, model.params))
    state = TrainState(jax.jit(layout.pad, out_shardings=shardings)(model.params), _NO_OPTIMISER,
                       jnp.zeros((), jnp.int32), jax.random.key(cfg.seed))
    state, progress = start_epochs(state, model.params, cfg, higher_is_better=higher_is_better,
                                   checkpoints=checkpoints, resume=resume, identity=identity)

    data = jax.device_put(module.sweep_data(train), layout.replicated)

    def sweep(state: TrainState, data: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        params, metrics = model.bind(model.params).sweep(state.params, data)
        return TrainState(params, state.opt_state, state.step + 1, state.key), metrics

    state_sharding = TrainState(shardings, _NO_OPTIMISER, layout.replicated, layout.replicated)
    tic = time.perf_counter()
    compiled = jax.jit(sweep, donate_argnums=0, out_shardings=(state_sharding, layout.replicated)
                       ).lower(state, data).compile()
    compile_seconds = time.perf_counter() - tic

    def epoch(state: TrainState, number: int) -> tuple[TrainState, dict[str, jax.Array]]:
        return compiled(state, data)  # a sweep is deterministic: the epoch number is not used

    return run_epochs(epoch, state, progress, cfg, n_examples=n, validate=validate, monitor=monitor,
                      checkpoints=checkpoints, on_epoch=on_epoch, to_host=layout.to_host,
                      compile_seconds=compile_seconds, check=parameter_check(model),
                      advice=sweep_advice(module.cfg), unit="sweep")
