"""Model families, each a Flax NNX module with a config dataclass, and rating baselines.

:data:`MODELS` maps a ``--model`` name to its :class:`ModelSpec`: the config class,
a builder from (config, training ratings, run config) to the module, and the tasks
it supports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from flax import nnx

from recjax.config import TrainConfig
from recjax.data.dataset import Ratings
from recjax.models.baselines import BASELINES, BiasModel, GlobalMean, ItemMean, UserMean
from recjax.models.mf import MF, MFConfig

__all__ = ["MODELS", "ModelSpec", "rating_inputs", "MF", "MFConfig", "BASELINES", "BiasModel", "GlobalMean",
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
    """

    config: type
    build: Callable[[Any, Ratings, TrainConfig], nnx.Module]
    tasks: tuple[str, ...]
    inputs: Callable[[Ratings, TrainConfig], dict[str, np.ndarray]] = rating_inputs


def _build_mf(cfg: MFConfig, train: Ratings, run: TrainConfig) -> MF:
    return MF(cfg, train.n_users, train.n_items, global_mean=float(np.mean(train.rating)),
              rating_scale=train.rating_scale, task=run.task, rngs=nnx.Rngs(run.seed))


MODELS: dict[str, ModelSpec] = {
    "mf": ModelSpec(MFConfig, _build_mf, ("regression", "binary")),
}
