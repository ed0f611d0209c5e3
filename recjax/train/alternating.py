"""The training loop of alternating-least-squares families: one epoch is one sweep.

:func:`fit` has :func:`recjax.train.loop.fit`'s contract (same parameters, a
:class:`~recjax.train.loop.FitResult`, validation after every epoch, the same early
stopping, ``last``/``best`` checkpoints on the same schedule through :class:`~recjax.train.checkpoint.Checkpoints`
and bitwise resume) for a module that trains by sweeps instead of optimiser steps:

* ``module.sweep_data(train) -> data``: what a sweep reads (NumPy arrays; e.g. the
  row plans of :mod:`recjax.models.als_solvers`), built once from the training examples;
* ``module.sweep(params, data) -> (params, {"loss", "data_loss"})``: one sweep, pure
  (jitted here once, the parameters donated and laid out on the device mesh as for
  the other families: tables row-sharded).

The checkpointed state is a :class:`~recjax.train.step.TrainState` without optimiser
state (``opt_state`` is empty; ``step`` counts sweeps).

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
from tqdm.auto import tqdm

from recjax.config import RunConfig
from recjax.train.checkpoint import CheckpointSchedule, Checkpoints, param_shapes
from recjax.train.loop import EarlyStopping, FitResult, _check_divergence, _copy_tree
from recjax.train.sharding import Layout, make_mesh
from recjax.train.step import Batch, Model, TrainState

__all__ = ["fit"]

_NO_OPTIMISER: tuple = ()  # the TrainState's opt_state: sweeps keep no optimiser state


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
    n = len(train["label"])
    if n == 0:
        raise ValueError("no training examples: the train part is empty")
    module = model.bind(model.params)
    for method in ("sweep_data", "sweep"):
        if not callable(getattr(module, method, None)):
            raise TypeError(f"{type(module).__name__} has no {method}(): train it with recjax.train.loop.fit")
    layout = layout or Layout(make_mesh(1, 1), model)
    shardings = layout.shardings(jax.eval_shape(layout.pad, model.params))
    params = jax.jit(layout.pad, out_shardings=shardings)(model.params)
    state = TrainState(params, _NO_OPTIMISER, jnp.zeros((), jnp.int32), jax.random.key(cfg.seed))
    identity = {**(identity or {}), "param_shapes": param_shapes(model.params)}
    stopper = EarlyStopping(cfg.patience, cfg.tolerance, higher_is_better)
    result, best = FitResult(params=model.params), None
    start = 1
    if resume and checkpoints is None:
        raise ValueError("resume needs the run's checkpoints")
    if resume and checkpoints.has_last():  # else interrupted before its first checkpoint: start over
        state, best, meta = checkpoints.restore_last(state, identity)
        result.history = meta["history"]
        for name in ("best", "best_epoch", "bad_epochs"):
            setattr(stopper, name, meta["early_stopping"][name])
        start = meta["epoch"] + 1
        if meta["epoch"] > cfg.epochs:
            raise ValueError(f"resume: the run has already trained {meta['epoch']} epochs; "
                             f"the settings differ: epochs={cfg.epochs} (it may grow, not shrink)")
        if stopper.should_stop:
            start = cfg.epochs + 1
            result.stopped_early = True

    data = jax.device_put(module.sweep_data(train), layout.replicated)

    def sweep(state: TrainState, data: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        params, metrics = model.bind(model.params).sweep(state.params, data)
        return TrainState(params, state.opt_state, state.step + 1, state.key), metrics

    state_sharding = TrainState(shardings, _NO_OPTIMISER, layout.replicated, layout.replicated)
    tic = time.perf_counter()
    compiled = jax.jit(sweep, donate_argnums=0, out_shardings=(state_sharding, layout.replicated)
                       ).lower(state, data).compile()
    result.compile_seconds = time.perf_counter() - tic

    bar = tqdm(range(start, cfg.epochs + 1), desc="sweeps", unit="sweep", disable=cfg.quiet,
               initial=start - 1, total=cfg.epochs)
    schedule = CheckpointSchedule(cfg.checkpoint_seconds)
    for epoch in bar:
        tic = time.perf_counter()
        state, metrics = compiled(state, data)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        seconds = time.perf_counter() - tic
        result.train_seconds += seconds
        record = {"epoch": epoch, "train_loss": metrics["loss"], "train_data_loss": metrics["data_loss"],
                  **(validate(state.params) if validate is not None else {}), "seconds": seconds}
        _check_divergence(epoch, record, float("nan"), monitor if validate is not None else None)
        result.history.append(record)
        if validate is None:
            improved, stopper.best_epoch = True, epoch
        else:
            improved = stopper.update(epoch, record[monitor])
        if improved:
            best = _copy_tree(state.params)  # the next sweep donates state.params
        finished = stopper.should_stop or epoch == cfg.epochs
        if on_epoch is not None:
            on_epoch(record)
        if checkpoints is not None and schedule.due(finished):
            meta = {**identity, "epoch": epoch, "history": result.history, "finished": finished,
                    "early_stopping": {"best": stopper.best, "best_epoch": stopper.best_epoch,
                                       "bad_epochs": stopper.bad_epochs}}
            if finished:  # best first: a resume from the previous last re-runs to here
                checkpoints.save_best(stopper.best_epoch, best, meta)
            checkpoints.save_last(epoch, state, best, meta)
            schedule.written()
        shown = {monitor: f"{record[monitor]:.4f}"} if validate is not None else {}
        bar.set_postfix(train=f"{record['train_data_loss']:.4f}", **shown)
        if stopper.should_stop:
            result.stopped_early = True
            break
    bar.close()
    if best is not None:
        result.params = layout.to_host(best)
    result.best_epoch = stopper.best_epoch
    epochs_run = max(len(result.history) - (start - 1), 0)
    if result.train_seconds > 0:
        result.examples_per_second = epochs_run * n / result.train_seconds
    return result
