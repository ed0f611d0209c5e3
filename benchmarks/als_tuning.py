"""Choose the ALS and iALS defaults on ml-100k's ub split (its ub.base, minus the 5%
validation carve that ``python -m recjax train --split ub`` makes), never on ua.

A coarse-to-fine search per family; each stage is a list of settings, the later ones
built around the best setting found so far (:data:`STAGES`):

* ``ials`` (ranking, validation NDCG@10 by :func:`recjax.train.validation.ranking_validator`;
  the exact ``cholesky`` solver, ``init_std`` 0.1 (divided by sqrt(d)) as in Rendle et al.
  2021): ``coarse``: ``unobserved_weight`` (alpha0) 0.3/1/3/10 x ``regularization``
  (lambda) 0.003/0.01/0.03 at d 128 and ``reg_exponent`` (nu) 1; ``fine``: lambda and
  alpha0 halved/doubled around the best; ``exponent``: nu 0 and 0.5 with lambda rescaled
  so that a median user's penalty is unchanged; ``dims``: 256 and 512 at the best.
* ``als`` (ratings, validation RMSE; user and item biases on): ``coarse``:
  ``embedding_dim`` 16/32/64/128 x ``regularization`` 0.03/0.1/0.3 at nu 1 (ALS-WR);
  ``fine``: lambda x 0.6 / x 1.6 around the best; ``exponent``: nu 0.25/0.5/0.75, each
  at five lambdas around the one keeping a median user's penalty; ``dims``: 64 and 256.

Every setting trains up to :data:`SWEEPS` sweeps with early stopping (:data:`PATIENCE`)
on its validation metric; the best setting's best sweep count sizes the epochs default.
A setting with more factors than the best so far must beat it by
:data:`DIMS_TOLERANCE` (a tie goes to the cheaper model). ``--start`` settings are
scored first, as the best so far. Prints one line per setting and the best of each
family; ua is scored afterwards, once, with the chosen defaults and ``--refit``
(chosen on ub too: it raised ub's test scores for both families) (``python -m recjax
train --model ials --split ua --refit`` then ``python -m recjax evaluate RUN``;
``python -m recjax train --model als --split ua --refit``).

Last runs (2 shared cores, a few minutes a stage; d 256 and 512 dominate):
ials best alpha0 3, lambda 0.003, nu 1, d 128: val NDCG@10 0.2037 at sweep 4 (nu 0:
0.1974, nu 0.5: 0.2018; d 256: 0.2022, d 512: 0.2020); als best d 64, lambda 3.9, nu 0.25:
val RMSE 0.9056 at sweep 5 (ALS-WR's best, d 128 lambda 0.1 nu 1: 0.9118; nu 0.5 lambda
1.0: 0.9061; d 256: 0.9050, under the tolerance).

Usage::

    JAX_PLATFORMS=cpu RECJAX_DATA=/path/to/movielens python benchmarks/als_tuning.py [als] [ials] [--stages fine --start '{...}']
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from collections.abc import Callable

import numpy as np

from recjax.config import RunConfig
from recjax.experiment import load_splits
from recjax.metrics import task_metrics
from recjax.families import MODELS
from recjax.models.base import rating_inputs
from recjax.train.step import Model
from recjax.train.validation import ranking_validator

SWEEPS = {"als": 25, "ials": 16}
PATIENCE = {"als": 3, "ials": 3}
DIMS_TOLERANCE = 0.001  # validation metric a larger embedding_dim must gain to be chosen
FIXED = {"als": {"user_bias": True, "item_bias": True, "solver": "cholesky"},
         "ials": {"solver": "cholesky", "init_std": 0.1}}


def _improves(value: float, best: float, higher: bool, extra_dims: int) -> bool:
    """Whether ``value`` beats ``best``; a setting with more factors than the best must beat
    it by :data:`DIMS_TOLERANCE` (more factors cost time: a tie goes to the smaller model)."""
    gain = (value - best) if higher else (best - value)
    return gain > (DIMS_TOLERANCE if extra_dims > 0 else 0.0)


def grid(**axes: tuple) -> list[dict]:
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def _median_user_row(best: dict, counts: np.ndarray, n_items: int) -> float:
    """``n_u + alpha0 * n_items`` of the median user: what nu's frequency scaling raises."""
    return float(np.median(counts)) + best["unobserved_weight"] * n_items


def _ials_exponents(best: dict, counts: np.ndarray, n_items: int) -> list[dict]:
    """nu 0 and 0.5 with lambda rescaled so that the median user's penalty
    ``lambda (n_u + alpha0 |I|)^nu`` is the best setting's."""
    row = _median_user_row(best, counts, n_items)
    penalty = best["regularization"] * row ** best["reg_exponent"]
    return [{**best, "reg_exponent": nu, "regularization": float(f"{penalty / row ** nu:.3g}")}
            for nu in (0.0, 0.5)]


def _als_lambdas(best: dict, counts: np.ndarray, n_items: int) -> list[dict]:
    """lambda x 0.6 and x 1.6 around the best."""
    return [{**best, "regularization": float(f"{best['regularization'] * f:.2g}")} for f in (0.6, 1.6)]


def _als_exponents(best: dict, counts: np.ndarray, n_items: int) -> list[dict]:
    """nu 0.25, 0.5, 0.75, each with lambda at x 0.5, 0.7, 1, 1.4, 2 of the value that
    keeps the median user's ridge weight ``lambda n_u^nu`` the best setting's (the
    validation RMSE is rugged in lambda: early stopping catches sweeps on their way to
    a fixed point, so a single rescaled lambda per nu is not enough)."""
    row = float(np.median(counts))
    penalty = best["regularization"] * row ** best["reg_exponent"]
    return [{**best, "reg_exponent": nu, "regularization": float(f"{f * penalty / row ** nu:.2g}")}
            for nu in (0.25, 0.5, 0.75) for f in (0.5, 0.7, 1.0, 1.4, 2.0)]


#: stage name -> settings from (best so far, training user counts, n_items)
STAGES: dict[str, dict[str, Callable[[dict, np.ndarray, int], list[dict]]]] = {
    "ials": {
        "coarse": lambda best, counts, n: grid(embedding_dim=(128,), reg_exponent=(1.0,),
                                               unobserved_weight=(0.3, 1.0, 3.0, 10.0),
                                               regularization=(0.003, 0.01, 0.03)),
        "fine": lambda best, counts, n: [
            {**best, "regularization": best["regularization"] * f} for f in (0.5, 2.0)] + [
            {**best, "unobserved_weight": best["unobserved_weight"] * f} for f in (0.5, 2.0)],
        "exponent": _ials_exponents,
        "dims": lambda best, counts, n: [{**best, "embedding_dim": d} for d in (256, 512)],
    },
    "als": {
        "coarse": lambda best, counts, n: grid(embedding_dim=(16, 32, 64, 128), reg_exponent=(1.0,),
                                               regularization=(0.03, 0.1, 0.3)),
        "fine": _als_lambdas,
        "exponent": _als_exponents,
        "dims": lambda best, counts, n: [{**best, "embedding_dim": d} for d in (64, 256)],
    },
}


def tune(family: str, stages: list[str] | None = None, start: dict | None = None) -> tuple[dict, float, int]:
    """(best settings, their validation metric, their best sweep count) on ub."""
    spec = MODELS[family]
    splits = load_splits(RunConfig(split="ub"))
    inputs = {name: rating_inputs(part) for name, part in splits.items()}
    counts = np.bincount(inputs["train"]["user"])
    n_items = int(splits["train"].n_items)
    run = RunConfig(model=family, split="ub", epochs=SWEEPS[family], patience=PATIENCE[family], quiet=True)
    monitor, higher = ("val_ndcg@10", True) if family == "ials" else ("val_rmse", False)
    best: tuple[dict, float, int] = (start or {}, -np.inf if higher else np.inf, 0)
    seen: set[tuple] = set()
    plan = [("start", lambda best, counts, n: [start])] if start else []
    plan += [(stage, STAGES[family][stage]) for stage in stages or list(STAGES[family])]
    for stage, settings_of in plan:
        for settings in settings_of(best[0], counts, n_items):
            key = tuple(sorted(settings.items()))
            if key in seen:
                continue
            seen.add(key)
            model_cfg = dataclasses.replace(spec.config(), **FIXED[family], **settings)
            model = Model.split(spec.build(model_cfg, splits["train"], seed=run.seed))
            if family == "ials":
                evaluate = ranking_validator(model, inputs)
                def validate(params: dict, evaluate=evaluate) -> dict[str, float]:
                    return evaluate(params, "val", "val_")
            else:
                def validate(params: dict, model=model) -> dict[str, float]:
                    predicted = np.asarray(model.bind(params)({"user": inputs["val"]["user"],
                                                               "item": inputs["val"]["item"]}))
                    return task_metrics("regression", predicted, inputs["val"]["label"], "val_")
            tic = time.perf_counter()
            result = spec.fit(model, inputs["train"], run, task="regression", validate=validate,
                              monitor=monitor, higher_is_better=higher)
            value = result.history[result.best_epoch - 1][monitor]
            print(f"{family} {stage} {settings}: {monitor} {value:.4f} at sweep {result.best_epoch} "
                  f"({len(result.history)} sweeps, {time.perf_counter() - tic:.0f} s)", flush=True)
            if _improves(value, best[1], higher, settings.get("embedding_dim", 0) - best[0].get("embedding_dim", 0)):
                best = (settings, value, result.best_epoch)
    print(f"best {family}: {best[0]}, {monitor} {best[1]:.4f}, sweeps {best[2]}", flush=True)
    return best


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("families", nargs="*", choices=("als", "ials"), default=["als", "ials"])
    parser.add_argument("--stages", help="comma-separated stage names (default: all, in order)")
    parser.add_argument("--start", type=json.loads, help="JSON settings the later stages start from "
                        "(a previous stage's best) when the earlier ones are not run")
    args = parser.parse_args()
    for name in args.families:
        tune(name, args.stages.split(",") if args.stages else None, args.start)
