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

__all__ = ["MODELS", "ModelSpec", "MF", "MFConfig", "BASELINES", "BiasModel", "GlobalMean",
           "ItemMean", "UserMean"]


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
    """

    config: type
    build: Callable[[Any, Ratings, TrainConfig], nnx.Module]
    tasks: tuple[str, ...]


def _build_mf(cfg: MFConfig, train: Ratings, run: TrainConfig) -> MF:
    return MF(cfg, train.n_users, train.n_items, global_mean=float(np.mean(train.rating)),
              rating_scale=train.rating_scale, task=run.task, rngs=nnx.Rngs(run.seed))


MODELS: dict[str, ModelSpec] = {
    "mf": ModelSpec(MFConfig, _build_mf, ("regression", "binary")),
}
