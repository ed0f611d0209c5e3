"""Optax optimisers and learning-rate schedules from a :class:`~recjax.config.RunConfig`.

Example
-------
>>> from recjax.config import RunConfig
>>> from recjax.train.optim import make_optimizer, make_schedule
>>> float(make_schedule(RunConfig(schedule="cosine", epochs=2), steps_per_epoch=5)(10))
0.0
"""

from __future__ import annotations

import optax

from recjax.config import RunConfig

__all__ = ["make_optimizer", "make_schedule"]


def make_schedule(cfg: RunConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the step, decaying over all planned steps."""
    total = max(1, cfg.epochs * steps_per_epoch)
    lr = cfg.learning_rate
    if cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, total)
    if cfg.schedule == "exponential":
        return optax.exponential_decay(lr, transition_steps=total, decay_rate=0.1)
    if cfg.schedule == "warmup_cosine":
        warmup = int(cfg.warmup_epochs * steps_per_epoch)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total)
    return optax.constant_schedule(lr)


def make_optimizer(cfg: RunConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """``cfg.optimizer`` with ``cfg.schedule``, preceded by global-norm clipping if set."""
    schedule = make_schedule(cfg, steps_per_epoch)
    optimizers = {
        "sgd": lambda: optax.sgd(schedule),
        "adam": lambda: optax.adam(schedule),
        "adagrad": lambda: optax.adagrad(schedule),
        "adamw": lambda: optax.adamw(schedule, weight_decay=cfg.weight_decay),
    }
    tx = optimizers[cfg.optimizer]()
    if cfg.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    return tx
