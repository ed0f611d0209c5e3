"""Optax optimisers and learning-rate schedules from a :class:`~recjax.config.RunConfig`.

``cfg.table_updates`` chooses how embedding tables a model declares by rows
(``row_lookups()``) are updated: ``dense`` (optax on the whole table, every
step), ``sparse`` (:class:`~recjax.train.sparse.SparseOptimizer`: only the rows a
batch looked up; lazy for adam/adamw) or ``auto``: sparse where that gives the
same parameters as dense (sgd, adagrad), dense for adam and adamw.

Example
-------
>>> from recjax.config import RunConfig
>>> from recjax.train.optim import make_optimizer, make_schedule, table_update_mode
>>> float(make_schedule(RunConfig(schedule="cosine", epochs=2), steps_per_epoch=5)(10))
0.0
>>> table_update_mode(RunConfig(optimizer="sgd")), table_update_mode(RunConfig(optimizer="adam"))
('sparse', 'dense')
>>> type(make_optimizer(RunConfig(optimizer="sgd"), 5, tables=frozenset({("user_embedding",)}))).__name__
'SparseOptimizer'
"""

from __future__ import annotations

from typing import Any

import optax

from recjax.config import RunConfig
from recjax.train.sparse import SparseOptimizer

__all__ = ["make_optimizer", "make_schedule", "table_update_mode"]

#: Optimisers whose sparse table updates give the same parameters as dense ones.
EXACT_SPARSE = ("sgd", "adagrad")


def make_schedule(cfg: RunConfig, steps_per_epoch: int, learning_rate: Any = None) -> optax.Schedule:
    """The learning rate as a function of the step, decaying over all planned steps from
    ``learning_rate`` (default ``cfg.learning_rate``; a traced scalar inside a step)."""
    total = max(1, cfg.epochs * steps_per_epoch)
    lr = cfg.learning_rate if learning_rate is None else learning_rate
    if cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, total)
    if cfg.schedule == "exponential":
        return optax.exponential_decay(lr, transition_steps=total, decay_rate=0.1)
    if cfg.schedule == "warmup_cosine":
        warmup = int(cfg.warmup_epochs * steps_per_epoch)
        unit = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, total)  # optax branches on a peak of 0
        return lambda count: lr * unit(count)
    return optax.constant_schedule(lr)


def table_update_mode(cfg: RunConfig) -> str:
    """``"sparse"`` or ``"dense"``: ``cfg.table_updates`` with ``auto`` resolved."""
    if cfg.table_updates == "auto":
        return "sparse" if cfg.optimizer in EXACT_SPARSE else "dense"
    return cfg.table_updates


def make_optimizer(cfg: RunConfig, steps_per_epoch: int, tables: frozenset = frozenset()
                   ) -> optax.GradientTransformation | SparseOptimizer:
    """``cfg.optimizer`` with ``cfg.schedule``, preceded by global-norm clipping if set.

    The learning rate is a value of the optimiser state (``optax.inject_hyperparams``),
    not a constant of the compiled step: runs that differ in it alone (a study's
    trials) run one compiled program.

    ``tables`` are the paths of the tables the model declares by rows
    (:attr:`recjax.train.step.Model.row_lookups`); when there are any and
    :func:`table_update_mode` is sparse, a :class:`~recjax.train.sparse.SparseOptimizer`
    updating them by rows with the same rule (the rest as optax does), else the optax
    transformation.
    """
    def rule(learning_rate: Any) -> optax.GradientTransformation:
        schedule = make_schedule(cfg, steps_per_epoch, learning_rate)
        if cfg.optimizer == "adamw":
            return optax.adamw(schedule, weight_decay=cfg.weight_decay)
        return {"sgd": optax.sgd, "adam": optax.adam, "adagrad": optax.adagrad}[cfg.optimizer](schedule)

    tx = optax.inject_hyperparams(rule)(learning_rate=cfg.learning_rate)
    if tables and table_update_mode(cfg) == "sparse":
        return SparseOptimizer(tx, frozenset(tables), cfg.grad_clip)
    if cfg.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    return tx
