"""The training loop: compiled epochs, validation, early stopping, checkpoints, resume.

:func:`fit` runs whole epochs as single compiled calls (see
:func:`recjax.train.step.make_epoch`), validates after each (or after every
``cfg.val_every``-th and the last), keeps the best parameters in memory (Object2Vec's
early stopping: stop after ``patience`` validations whose metric did not beat the best
by more than ``tolerance``) and
writes its ``last`` checkpoint (state and best parameters) on a schedule
(:class:`~recjax.train.checkpoint.CheckpointSchedule`: at most every
``cfg.checkpoint_seconds``) and ``best`` and ``last`` at the end, from which
``resume=True`` continues to bitwise the same parameters as an uninterrupted run.

That loop, :func:`start_epochs` then :func:`run_epochs`, takes any compiled
``epoch(state, number) -> (state, metrics)``: :func:`fit`'s is a pass of optimiser
steps, :func:`recjax.train.alternating.fit`'s a sweep of row solves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from recjax.config import RunConfig
from recjax.train.checkpoint import Checkpoints, CheckpointSchedule, param_shapes
from recjax.train.losses import TASK_LOSSES, masked_mean
from recjax.train.memory import (
    available_memory,
    check_epoch_memory,
    check_training_memory,
    tree_bytes,
)
from recjax.train.optim import make_optimizer
from recjax.train.sharding import Layout, make_mesh
from recjax.train.sparse import get_path
from recjax.train.step import Batch, Model, TrainState, batch_layout, make_epoch, make_train_step

__all__ = ["fit", "FitResult", "EarlyStopping", "initial_state", "count_examples", "Progress",
           "start_epochs", "run_epochs", "Advice", "parameter_check"]

# fold_in tags separating the run key's uses (model init uses nnx.Rngs(seed) directly)
_STEPS, _EPOCHS = 1, 2


@dataclass
class EarlyStopping:
    """Object2Vec's rule: stop after ``patience`` epochs without an improvement > ``tolerance``.

    Attributes
    ----------
    best : float
        Best monitored value so far (inf or -inf before the first epoch).
    best_epoch : int
        Epoch (1-based) of ``best``; 0 before the first.
    bad_epochs : int
        Consecutive epochs without improvement.
    """

    patience: int
    tolerance: float
    higher_is_better: bool = False
    best: float = float("nan")
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record ``value`` of ``epoch``; True if it is the new best."""
        sign = 1.0 if self.higher_is_better else -1.0
        improved = self.best_epoch == 0 or sign * (value - self.best) > self.tolerance
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    params : dict
        The best parameters (by the monitored validation metric).
    history : list of dict
        One record per epoch: ``epoch``, ``train_loss``, ``train_data_loss``, the
        validation metrics (``val_*``; absent from an epoch not validated), the epoch's
        training seconds ``epoch_seconds`` (also under their first name, ``seconds``)
        and its validation seconds ``val_seconds`` (0 when not validated).
    best_epoch : int
    stopped_early : bool
    compile_seconds : float
        Time to compile the epoch function (once per run).
    train_seconds : float
        Wall time of the compiled epochs, compile and validation excluded.
    val_seconds : float
        Wall time of the validations after the epochs.
    examples_per_second : float
        Training examples processed per second of ``train_seconds``.
    """

    params: dict
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    compile_seconds: float = 0.0
    train_seconds: float = 0.0
    val_seconds: float = 0.0
    examples_per_second: float = 0.0


def initial_state(model: Model, tx: optax.GradientTransformation, seed: int,
                  layout: Layout) -> tuple[TrainState, Any]:
    """The state before the first step, laid out on ``layout``'s mesh, and its shardings.

    Tables are padded to the mesh's row multiple; the optimiser state follows the
    parameters' layout. Also the template a checkpoint restores into.
    """
    def build(params: dict) -> TrainState:
        params = layout.pad(params)
        return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32),
                          jax.random.fold_in(jax.random.key(seed), _STEPS))

    sharding = layout.shardings(jax.eval_shape(build, model.params))
    return jax.jit(build, out_shardings=sharding)(model.params), sharding


def _check_state_fits(model: Model, tx: optax.GradientTransformation, layout: Layout, train: Batch,
                      optimizer: str) -> None:
    """:func:`~recjax.train.memory.check_training_memory` of the state :func:`initial_state`
    would lay out (exact shapes from ``jax.eval_shape``) and the training data."""
    def build(params: dict) -> tuple[dict, Any]:
        params = layout.pad(params)
        return params, tx.init(params)

    params, opt_state = jax.eval_shape(build, model.params)
    device, sharing = _memory_device(layout)
    per_device = tree_bytes((params, opt_state), layout.shardings((params, opt_state)))
    data_bytes = sum(int(v.nbytes) if hasattr(v, "nbytes") else int(np.asarray(v).nbytes)
                     for v in train.values())
    if sharing == 1:  # an accelerator holds its share of the data split over the data axis
        data_bytes = -(-data_bytes // layout.mesh.devices.shape[0])
    check_training_memory(params, optimizer=optimizer, opt_state=opt_state, data_bytes=data_bytes,
                          state_bytes=sharing * per_device, available=available_memory(device))


def _memory_device(layout: Layout) -> tuple[Any, int]:
    """(a device of this process in the mesh, how many of the mesh's devices share its
    memory): CPU devices all draw on the host's memory, an accelerator has its own."""
    local = list(layout.mesh.local_devices)
    return local[0], (len(local) if local[0].platform == "cpu" else 1)


@jax.jit
def _copy_tree(tree: Any) -> Any:
    """A copy of every array of ``tree`` (one compiled call, not one per leaf), e.g. the
    best parameters, which the next epoch would otherwise donate."""
    return jax.tree.map(jnp.copy, tree)


#: A train loss this many times the untrained model's is divergence, even while finite.
DIVERGENCE_FACTOR = 1e3


def _untrained_loss(model: Model, task: str, train: Batch, cfg: RunConfig) -> float:
    """The training objective of the initial parameters on up to 4096 training examples
    spread over the data (the first step's loss, before its update): the scale a
    healthy run's loss stays below (:data:`DIVERGENCE_FACTOR`).

    The objective alone, as :func:`~recjax.train.step.make_train_step` computes it at
    step 0 (same key), without its gradient and update: it compiles several times faster
    than the step."""
    n = len(train["label"])
    size, _ = batch_layout(n, cfg.batch_size)
    rows = np.unique(np.linspace(0, n - 1, min(n, max(size, 1024), 4096)).astype(np.int64))
    batch = {name: jnp.asarray(np.asarray(values)[rows]) for name, values in train.items()}
    batch.setdefault("weight", jnp.ones(len(rows), jnp.float32))
    per_example = TASK_LOSSES[task]
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), _STEPS), 0)

    def loss(params: dict, batch: Batch, rest: nnx.State) -> jax.Array:
        module = model.bind(params, rest)
        augment = getattr(module, "augment", None)
        if augment is not None:
            batch = augment(batch, jax.random.fold_in(key, 1))
        predictions = module(batch, train=True, rngs=nnx.Rngs(dropout=key))
        return masked_mean(per_example(predictions, batch["label"]), batch["weight"]) + module.penalty(batch)

    return float(jax.jit(loss)(model.params, batch, model.rest))


@dataclass(frozen=True)
class Advice:
    """What a refused run's message says to change, by how training failed.

    Attributes
    ----------
    diverged : str
        The loss or the parameters stopped being finite, or the loss exploded.
    collapsed : str
        Every vector of a user or item table is 0: the model scores every item alike.
    """

    diverged: str = "lower the learning rate or add gradient clipping"
    collapsed: str = "lower the learning rate or the model's L2 weights"


def parameter_check(model: Model) -> Callable[[dict], tuple[str, str] | None]:
    """``check(params) -> (how, what) or None``, one compiled call after each epoch: the
    parameters hold NaN or infinity (``how`` "diverged"), or every vector of a 2-D table (the users' or the
    items' vectors, :func:`recjax.models.base.table`) is 0 (below float32's smallest
    normal number, which the CPU flushes to 0), so that the model ranks nothing ("collapsed").

    The parameters may be those on the mesh (padding rows are 0 and change no maximum)."""
    vectors = sorted(path for path in model.tables if np.ndim(get_path(model.params, path)) == 2)

    @jax.jit
    def measure(params: dict) -> tuple[jax.Array, jax.Array]:
        leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.inexact)]
        finite = jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]).all()
        largest = jnp.stack([jnp.max(jnp.abs(get_path(params, path))) for path in vectors]) \
            if vectors else jnp.ones(0)
        return finite, largest

    def check(params: dict) -> tuple[str, str] | None:
        finite, largest = jax.device_get(measure(params))
        if not finite:
            return "diverged", "the parameters hold NaN or infinite values"
        for path, value in zip(vectors, largest):
            if not value >= np.finfo(np.float32).tiny:
                return "collapsed", (f"every vector of {'/'.join(map(str, path))} is 0, so the "
                                     f"model scores every item alike")
        return None

    return check


def _check_training(number: int, metrics: dict[str, float], problem: tuple[str, str] | None,
                    untrained_loss: float, advice: Advice, unit: str) -> None:
    """FloatingPointError when the epoch's train loss is not finite or has grown
    :data:`DIVERGENCE_FACTOR`-fold over the untrained model's, or its parameters have a
    ``problem`` (:func:`parameter_check`): checked before validation, which cannot score them."""
    loss, where = metrics["loss"], f"{unit} {number}"
    if not np.isfinite(loss):
        raise FloatingPointError(f"training diverged at {where} (loss {loss}); {advice.diverged}")
    if problem is not None:
        how, what = problem
        raise FloatingPointError(f"training {how} at {where} ({what}); {getattr(advice, how)}")
    if np.isfinite(untrained_loss) and untrained_loss > 0 and loss > DIVERGENCE_FACTOR * untrained_loss:
        raise FloatingPointError(
            f"training diverged at {where} (loss {loss:.4g}, over {DIVERGENCE_FACTOR:g} times "
            f"the untrained model's {untrained_loss:.4g}); {advice.diverged}")


def _check_validation(number: int, record: dict[str, Any], monitor: str | None, advice: Advice,
                      unit: str) -> None:
    """FloatingPointError when a validation metric is infinite (or the monitored one NaN)."""
    for key, value in record.items():
        if not key.startswith("val_") or not isinstance(value, (float, np.floating)):
            continue
        if np.isinf(value):
            raise FloatingPointError(f"training diverged at {unit} {number} (validation {key} is "
                                     f"{value}); {advice.diverged}")
        if np.isnan(value) and key == monitor:
            raise FloatingPointError(
                f"validation {key} is nan at {unit} {number}: the predictions are not finite "
                f"(training diverged: {advice.diverged}) or the validation part cannot measure {key}")


def count_examples(train: Batch) -> int:
    """The number of training examples (``len(train["label"])``); ValueError when none."""
    n = len(train["label"])
    if n == 0:
        raise ValueError("no training examples: the train part is empty")
    return n


@dataclass
class Progress:
    """Where a run stands before its next epoch: made by :func:`start_epochs` (fresh, or
    from a ``last`` checkpoint), run on from by :func:`run_epochs`.

    Attributes
    ----------
    result : FitResult
        The result so far: ``history`` of every epoch run (those before a resume
        included); ``params`` the model's initial (unpadded) parameters until the end.
    stopper : EarlyStopping
        The early-stopping state after the last epoch run.
    best : dict or None
        The best parameters so far, laid out on the mesh (tables padded); None before
        the first epoch.
    first_epoch : int
        The next epoch to run (1-based); ``cfg.epochs + 1`` when none is left.
    identity : dict
        What the run's checkpoints record and a resume must match: the caller's
        identity and the unpadded parameter shapes.
    """

    result: FitResult
    stopper: EarlyStopping
    best: dict | None
    first_epoch: int
    identity: dict[str, Any]


def start_epochs(state: TrainState, params: dict, cfg: RunConfig, *, higher_is_better: bool,
                 checkpoints: Checkpoints | None, resume: bool,
                 identity: dict[str, Any] | None) -> tuple[TrainState, Progress]:
    """The state and :class:`Progress` a run's next epoch starts from: ``state`` before
    epoch 1 or, with ``resume``, those of ``checkpoints``' ``last`` (none written yet:
    the run was interrupted before its first checkpoint and starts over, which gives
    the same result).

    ``state`` is the initial state laid out on the mesh, also the template a checkpoint
    restores into; ``params`` the model's unpadded initial parameters (their shapes join
    ``identity``). The other parameters are :func:`fit`'s. Called before the epoch is
    compiled, so that a resumed run holds one state, not the initial one beside it.
    """
    identity = {**(identity or {}), "param_shapes": param_shapes(params)}
    progress = Progress(FitResult(params=params), EarlyStopping(cfg.patience, cfg.tolerance, higher_is_better),
                        best=None, first_epoch=1, identity=identity)
    if resume and checkpoints is None:
        raise ValueError("resume needs the run's checkpoints")
    if resume and checkpoints.has_last():  # else interrupted before its first checkpoint: start over
        state, progress.best, meta = checkpoints.restore_last(state, identity)
        progress.result.history = meta["history"]
        for name in ("best", "best_epoch", "bad_epochs"):
            setattr(progress.stopper, name, meta["early_stopping"][name])
        progress.first_epoch = meta["epoch"] + 1
        if meta["epoch"] > cfg.epochs:
            raise ValueError(f"resume: the run has already trained {meta['epoch']} epochs; "
                             f"the settings differ: epochs={cfg.epochs} (it may grow, not shrink)")
        if progress.stopper.should_stop:  # stopped early: nothing left to run (a larger
            progress.first_epoch = cfg.epochs + 1  # cfg.epochs only extends a run that ran out of epochs)
            progress.result.stopped_early = True
    return state, progress


def run_epochs(
    epoch: Callable[[TrainState, int], tuple[TrainState, dict[str, jax.Array]]],
    state: TrainState,
    progress: Progress,
    cfg: RunConfig,
    *,
    n_examples: int,
    validate: Callable[[dict], dict[str, float]] | None,
    monitor: str | None,
    checkpoints: Checkpoints | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    to_host: Callable[[dict], dict],
    compile_seconds: float,
    untrained_loss: float = float("nan"),
    check: Callable[[dict], tuple[str, str] | None] | None = None,
    advice: Advice = Advice(),
    unit: str = "epoch",
) -> FitResult:
    """Run epochs ``progress.first_epoch`` to ``cfg.epochs`` from ``state``: validation,
    early stopping, the divergence and collapse checks, checkpoints on their schedule, the
    progress bar.

    An epoch is validated when its number is a multiple of ``cfg.val_every`` or it is
    ``cfg.epochs``; only a validated epoch can be the best, and ``patience`` counts
    validations without improvement (with ``val_every`` 2 and patience 3, a run stops
    at the third validation, six epochs, after its best).

    Parameters
    ----------
    epoch : callable
        ``epoch(state, number) -> (state, {"loss": ..., "data_loss": ...})``: one
        compiled epoch (``number`` 1-based; scalar losses), donating ``state``.
    state, progress : TrainState, Progress
        What :func:`start_epochs` returned; ``state`` is consumed (donated to the first epoch).
    n_examples : int
        Training examples per epoch (for ``examples_per_second``).
    validate, monitor, checkpoints, on_epoch
        As in :func:`fit`; ``higher_is_better`` is ``progress.stopper``'s.
    to_host : callable
        The best parameters on the mesh -> NumPy, unpadded (:meth:`Layout.to_host`).
    compile_seconds : float
        Time the caller took to compile ``epoch``, reported in the result.
    untrained_loss : float
        The untrained model's training loss, the divergence check's scale; NaN checks
        only that the loss is finite.
    check : callable, optional
        ``check(state.params) -> (how, what) or None`` after each epoch (:func:`parameter_check`).
    advice : Advice
        What the message of a diverged or collapsed run says to change.
    unit : str
        What one epoch is called on the progress bar ("epoch", "sweep").

    Returns
    -------
    FitResult
        ``progress.result``, completed.
    """
    result, stopper, best, start = progress.result, progress.stopper, progress.best, progress.first_epoch
    result.compile_seconds = compile_seconds
    bar = tqdm(range(start, cfg.epochs + 1), desc=f"{unit}s", unit=unit, disable=cfg.quiet,
               initial=start - 1, total=cfg.epochs)
    schedule = CheckpointSchedule(cfg.checkpoint_seconds)
    shown: dict[str, str] = {}
    for number in bar:
        tic = time.perf_counter()
        state, metrics = epoch(state, number)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        seconds = time.perf_counter() - tic
        result.train_seconds += seconds
        _check_training(number, metrics, check(state.params) if check is not None else None,
                        untrained_loss, advice, unit)
        validated = validate is not None and (number % cfg.val_every == 0 or number == cfg.epochs)
        tic = time.perf_counter()
        measured = validate(state.params) if validated else {}
        val_seconds = time.perf_counter() - tic if validated else 0.0
        result.val_seconds += val_seconds
        record = {"epoch": number, "train_loss": metrics["loss"], "train_data_loss": metrics["data_loss"],
                  **measured, "seconds": seconds, "epoch_seconds": seconds, "val_seconds": val_seconds}
        _check_validation(number, record, monitor if validated else None, advice, unit)
        result.history.append(record)
        if validate is None:  # no validation: the last epoch is the result
            improved, stopper.best_epoch = True, number
        else:
            improved = validated and stopper.update(number, record[monitor])
        if improved:
            best = _copy_tree(state.params)  # the next epoch donates state.params
        finished = stopper.should_stop or number == cfg.epochs
        if on_epoch is not None:  # logged before its checkpoint: a re-run epoch replaces it
            on_epoch(record)
        if checkpoints is not None and schedule.due(finished):
            meta = {**progress.identity, "epoch": number, "history": result.history, "finished": finished,
                    "early_stopping": {"best": stopper.best, "best_epoch": stopper.best_epoch,
                                       "bad_epochs": stopper.bad_epochs}}
            if finished:  # best first: a resume from the previous last re-runs to here
                checkpoints.save_best(stopper.best_epoch, best, meta)
            checkpoints.save_last(number, state, best, meta)
            schedule.written()
        if validated:
            shown = {monitor: f"{record[monitor]:.4f}"}
        bar.set_postfix(train=f"{record['train_data_loss']:.4f}", **shown)
        if stopper.should_stop:
            result.stopped_early = True
            break
    bar.close()
    if best is not None:
        result.params = to_host(best)
    result.best_epoch = stopper.best_epoch
    epochs_run = max(len(result.history) - (start - 1), 0)
    if result.train_seconds > 0:
        result.examples_per_second = epochs_run * n_examples / result.train_seconds
    return result


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
    """Train ``model`` on ``train`` (dict of arrays, leading axis = examples).

    Parameters
    ----------
    validate : callable or None
        ``validate(params) -> {"val_rmse": ..., ...}``, called after each epoch (or after
        every ``cfg.val_every``-th and the last: :func:`run_epochs`).
        ``None`` trains all ``cfg.epochs`` and keeps the last parameters.
    monitor : str or None
        The key of ``validate``'s result that drives early stopping.
    checkpoints : Checkpoints, optional
        Where ``last`` (state and best parameters so far) is written after an epoch
        once ``cfg.checkpoint_seconds`` have passed since the previous write, and
        ``best`` then ``last`` after the final epoch (or the early stop).
    resume : bool
        Continue from ``checkpoints``' ``last``; with none complete (interrupted before
        the first was written) start from the beginning, which gives the same result.
    identity : dict, optional
        JSON-able description (model and training config) a resumed checkpoint must match.
    on_epoch : callable, optional
        Called with each epoch's record (for logging), before any checkpoint of the
        epoch is written: an epoch re-run after an interruption is logged again, and
        its record replaces the first (:meth:`recjax.run_folder.RunWriter.log`).
    layout : Layout, optional
        The device mesh and how the state lies on it (default: one device). The
        parameters ``validate`` receives are the mesh's (tables padded; ``model.bind``
        drops the padding); those returned are NumPy, unpadded.
    """
    n = count_examples(train)
    _, steps_per_epoch = batch_layout(n, cfg.batch_size)
    tx = make_optimizer(cfg, steps_per_epoch, frozenset(model.row_lookups))
    layout = layout or Layout(make_mesh(1, 1), model)
    _check_state_fits(model, tx, layout, train, cfg.optimizer)  # before anything is allocated
    state, state_sharding = initial_state(model, tx, cfg.seed, layout)
    state, progress = start_epochs(state, model.params, cfg, higher_is_better=higher_is_better,
                                   checkpoints=checkpoints, resume=resume, identity=identity)

    data = layout.place_data(train)
    epoch_keys = jax.random.fold_in(jax.random.key(cfg.seed), _EPOCHS)
    epoch_fn = make_epoch(make_train_step(model, tx, task), n, cfg.batch_size,
                          state_sharding=state_sharding, batch_sharding=layout.batch)
    tic = time.perf_counter()
    compiled = epoch_fn.lower(state, data, epoch_keys, model.rest).compile()
    compile_seconds = time.perf_counter() - tic
    device, sharing = _memory_device(layout)
    check_epoch_memory(compiled, batch_size=cfg.batch_size, n_examples=n, n_devices=sharing,
                       available=available_memory(device))
    untrained_loss = _untrained_loss(model, task, train, cfg)

    def epoch(state: TrainState, number: int) -> tuple[TrainState, dict[str, jax.Array]]:
        return compiled(state, data, jax.random.fold_in(epoch_keys, number), model.rest)

    return run_epochs(epoch, state, progress, cfg, n_examples=n, validate=validate, monitor=monitor,
                      checkpoints=checkpoints, on_epoch=on_epoch, to_host=layout.to_host,
                      compile_seconds=compile_seconds, untrained_loss=untrained_loss,
                      check=parameter_check(model))
