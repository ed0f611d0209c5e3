"""Surprise's SVD on ml-100k's ua split: the "tuned" baseline of the main-job benchmark.

``TUNED`` is Surprise SVD with 100 factors and 40 epochs (issue #17's setting) and
the learning rate and regularisation chosen on validation: the grid ``GRID`` fitted
on ua.base minus the validation part recjax's runs carve out of it
(:func:`recjax.data.carve_validation`, 5%, seed 0), scored on that part, never on
ua.test. Rerun the choice with::

    python benchmarks/surprise_svd.py --tune

Both libraries read the same files through :func:`recjax.data.predefined_split`;
Surprise gets the integer user and item codes of recjax's vocabularies as its raw
ids, so the pairs are identical.

Example
-------
>>> from surprise_svd import GRID, TUNED
>>> TUNED["n_factors"], TUNED["n_epochs"], TUNED["lr_all"] in GRID["lr_all"]
(100, 40, True)
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

TUNED = {"n_factors": 100, "n_epochs": 40, "lr_all": 0.01, "reg_all": 0.1}
GRID = {"lr_all": [0.005, 0.007, 0.01, 0.015], "reg_all": [0.02, 0.05, 0.08, 0.1, 0.15]}
VAL_FRACTION = 0.05  # RunConfig's default val_fraction; seed 0, as a default run


def triples(part) -> list[tuple[int, int, float]]:
    """(user code, item code, rating) of each row of a :class:`recjax.data.Ratings`."""
    return list(zip(part.user.tolist(), part.item.tolist(), part.rating.astype(float).tolist()))


def fit_and_test(train, test, seed: int = 0, **settings) -> dict:
    """Fit Surprise SVD on ``train`` and predict ``test`` (both ``Ratings``).

    Returns
    -------
    dict
        ``rmse`` (test RMSE, rating units), ``fit_s`` (trainset build + fit, seconds),
        ``test_s`` (predicting every test pair, seconds), ``seconds`` (their sum).
    """
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    start = time.perf_counter()
    frame = pd.DataFrame({"user": train.user, "item": train.item, "rating": train.rating})
    trainset = Dataset.load_from_df(frame, Reader(rating_scale=train.rating_scale)).build_full_trainset()
    algo = SVD(**{**TUNED, **settings}, random_state=seed).fit(trainset)
    fitted = time.perf_counter()
    predictions = algo.test(triples(test))
    done = time.perf_counter()
    errors = np.array([p.est - p.r_ui for p in predictions])
    return {"rmse": float(np.sqrt(np.mean(errors**2))), "fit_s": fitted - start,
            "test_s": done - fitted, "seconds": done - start}


def ua_split():
    """(ua.base, ua.test) as ``Ratings`` from ``$RECJAX_DATA``'s ml-100k, no download."""
    from recjax.data import predefined_split

    split = predefined_split("ua", allow_download=False)
    return split.train, split.test


def tune() -> list[tuple[float, float, float]]:
    """(validation RMSE, lr_all, reg_all) of every ``GRID`` point, best first."""
    from recjax.data import carve_validation

    train, _ = ua_split()
    fit, val = carve_validation(train, VAL_FRACTION, seed=0)
    scores = []
    for lr, reg in itertools.product(GRID["lr_all"], GRID["reg_all"]):
        result = fit_and_test(fit, val, lr_all=lr, reg_all=reg)
        scores.append((result["rmse"], lr, reg))
        print(f"lr_all={lr:<6} reg_all={reg:<5} val RMSE {result['rmse']:.4f}", flush=True)
    return sorted(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tune", action="store_true", help="rerun the validation grid")
    args = parser.parse_args()
    if args.tune:
        best = tune()[0]
        print(f"best on validation: lr_all={best[1]} reg_all={best[2]} (val RMSE {best[0]:.4f})")
    train, test = ua_split()
    print(f"TUNED {TUNED} on ua.test: {fit_and_test(train, test)}")


if __name__ == "__main__":
    main()
