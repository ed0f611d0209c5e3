"""Model families, each a Flax NNX module with a config dataclass, and rating baselines.

:data:`MODELS` maps a ``--model`` name to its :class:`ModelSpec`: the config class,
a builder from (config, training ratings, run config) to the module, and the tasks
it supports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from flax import nnx

from recjax.config import TrainConfig, from_dict
from recjax.data.dataset import Ratings
from recjax.models.baselines import BASELINES, BiasModel, GlobalMean, ItemMean, UserMean
from recjax.models.mf import MF, MFConfig

__all__ = ["MODELS", "ModelSpec", "rating_inputs", "recommended_configs", "MF", "MFConfig", "BASELINES", "BiasModel", "GlobalMean",
           "ItemMean", "UserMean"]


def rating_inputs(part: Ratings, run: TrainConfig) -> dict[str, np.ndarray]:
    """One example per rating: ``user``, ``item`` indices and the task's ``label``."""
    label = part.rating if run.task == "regression" else part.binary_labels(run.binary_threshold)
    return {"user": part.user, "item": part.item, "label": label.astype(np.float32)}


@dataclass(frozen=True)
class ModelSpec:
    """How the training core builds one model family.

    Attributes
    ----------
    config : type
        The model's frozen config dataclass.
    build : callable
        ``build(model_cfg, train, run_cfg) -> nnx.Module``.
    tasks : tuple of str
        Supported ``TrainConfig.task`` values.
    inputs : callable
        ``inputs(part, run_cfg) -> dict`` of NumPy arrays with a leading example
        axis, holding ``label``: what the module's ``__call__`` reads from a batch.
    train_defaults : dict
        The model's recommended :class:`TrainConfig` settings; the CLI applies them
        under any value from a config file or a flag.
    """

    config: type
    build: Callable[[Any, Ratings, TrainConfig], nnx.Module]
    tasks: tuple[str, ...]
    inputs: Callable[[Ratings, TrainConfig], dict[str, np.ndarray]] = rating_inputs
    train_defaults: dict[str, Any] = field(default_factory=dict)


def _build_mf(cfg: MFConfig, train: Ratings, run: TrainConfig) -> MF:
    return MF(cfg, train.n_users, train.n_items, global_mean=float(np.mean(train.rating)),
              rating_scale=train.rating_scale, task=run.task, rngs=nnx.Rngs(run.seed))


MODELS: dict[str, ModelSpec] = {
    # Plain SGD beat adam/adagrad/adamw on validation (u1.base minus 5%; see README).
    "mf": ModelSpec(MFConfig, _build_mf, ("regression", "binary"), train_defaults=dict(
        optimizer="sgd", learning_rate=1.0, batch_size=128, epochs=100, patience=5)),
}


def recommended_configs(
    model: str = "mf", train: dict[str, Any] | None = None, model_values: dict[str, Any] | None = None
) -> tuple[TrainConfig, Any]:
    """(TrainConfig, model config) for ``model``: its recommended settings, then ``train``
    and ``model_values`` overrides on top.

    Example
    -------
    >>> train_cfg, mf_cfg = recommended_configs("mf", {"split": "u1"})
    >>> train_cfg.optimizer, train_cfg.split, mf_cfg.embedding_dim
    ('sgd', 'u1', 128)
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    spec = MODELS[model]
    train_cfg = from_dict(TrainConfig, {**spec.train_defaults, **(train or {}), "model": model})
    return train_cfg, from_dict(spec.config, model_values or {})
