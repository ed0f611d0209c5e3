"""Choose the ALS and iALS defaults on ml-100k's ub split (its ub.base, minus the 5%
validation carve that ``python -m recjax train --split ub`` makes), never on ua.

* ``als`` (ratings): a grid over ``embedding_dim`` x ``regularization``, each trained
  up to 40 sweeps with early stopping (patience 3) on validation RMSE; the best
  sweep count is the epochs default.
* ``ials`` (ranking): a grid over ``embedding_dim`` x ``unobserved_weight`` x
  ``regularization``, up to 30 sweeps, early stopping on validation NDCG@10
  (:func:`recjax.train.validation.ranking_validator`).

Prints one line per setting and the best of each family; ua is scored afterwards,
once, with the chosen defaults (``python -m recjax train --model ials --split ua``
then ``python -m recjax evaluate RUN``; ``python -m recjax train --model als``).

Usage::

    JAX_PLATFORMS=cpu RECJAX_DATA=/path/to/movielens python benchmarks/als_tuning.py [als] [ials]
"""

from __future__ import annotations

import dataclasses
import itertools
import sys

import numpy as np

from recjax.config import RunConfig
from recjax.evaluation.metrics import task_metrics
from recjax.experiment import load_splits
from recjax.models import MODELS
from recjax.models.base import rating_inputs
from recjax.train.step import Model
from recjax.train.validation import ranking_validator

GRIDS = {
    "als": {"embedding_dim": (4, 8, 32), "regularization": (0.05, 0.08, 0.12, 0.2)},
    "ials": {"embedding_dim": (64, 128), "unobserved_weight": (0.1, 0.3, 1.0),
             "regularization": (0.003, 0.01, 0.03)},
}
SWEEPS = {"als": 40, "ials": 30}


def tune(family: str) -> tuple[dict, float, int]:
    """(best settings, their validation metric, their best sweep count) on ub."""
    spec = MODELS[family]
    splits = load_splits(RunConfig(split="ub"))
    inputs = {name: rating_inputs(part) for name, part in splits.items()}
    run = RunConfig(model=family, split="ub", epochs=SWEEPS[family], patience=3, quiet=True)
    monitor, higher = ("val_ndcg@10", True) if family == "ials" else ("val_rmse", False)
    best = (None, -np.inf if higher else np.inf, 0)
    grid = GRIDS[family]
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values))
        model_cfg = dataclasses.replace(spec.config(), **settings)
        model = Model.split(spec.build(model_cfg, splits["train"], seed=run.seed))
        if family == "ials":
            evaluate = ranking_validator(model, inputs)
            validate = lambda params: evaluate(params, "val", "val_")  # noqa: E731
        else:
            def validate(params: dict) -> dict[str, float]:
                predicted = np.asarray(model.bind(params)({"user": inputs["val"]["user"],
                                                           "item": inputs["val"]["item"]}))
                return task_metrics("regression", predicted, inputs["val"]["label"], "val_")
        result = spec.fit(model, inputs["train"], run, task="regression", validate=validate,
                          monitor=monitor, higher_is_better=higher)
        value = result.history[result.best_epoch - 1][monitor]
        print(f"{family} {settings}: {monitor} {value:.4f} at sweep {result.best_epoch}", flush=True)
        if (value > best[1]) if higher else (value < best[1]):
            best = (settings, value, result.best_epoch)
    print(f"best {family}: {best[0]}, {monitor} {best[1]:.4f}, sweeps {best[2]}", flush=True)
    return best


if __name__ == "__main__":
    for name in sys.argv[1:] or ("als", "ials"):
        tune(name)
