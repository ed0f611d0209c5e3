"""Reproduce README's accuracy table from scratch, with fixed seeds.

    RECJAX_DATA=/folder/with/movielens python benchmarks/accuracy.py [--models mf] [--seed 0]

Protocol: each model trains with its recommended settings
(:func:`recjax.models.recommended_configs`) plus ``refit=True``: validation is 5%
of the split's training part, drawn with the seed, and only chooses the epoch
count; the model is then retrained on the whole training part for that many
epochs, and the test part is scored once. Baselines are fitted on the whole training part. Prints markdown.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from recjax.data.movielens import load_movielens
from recjax.data.splits import holdout_split, predefined_split
from recjax.evaluation import mse, rmse
from recjax.experiment import run
from recjax.models import recommended_configs
from recjax.models.baselines import BiasModel, GlobalMean, UserMean
from recjax.report import format_table

BASELINES = {"global mean": GlobalMean, "user mean": UserMean, "bias (ALS)": BiasModel}
FOLDS = ("u1", "u2", "u3", "u4", "u5")


def model_metrics(model: str, seed: int, **train) -> dict[str, float]:
    train_cfg, model_cfg = recommended_configs(
        model, {"seed": seed, "quiet": True, "refit": True,
                "out": tempfile.mkdtemp(prefix="recjax-acc-") + "/run", **train})
    return run(train_cfg, model_cfg).metrics


def baseline_metrics(train, test) -> dict[str, tuple[float, float]]:
    out = {}
    for name, cls in BASELINES.items():
        predictions = cls().fit(train).predict(test.user, test.item)
        out[name] = (mse(predictions, test.rating), rmse(predictions, test.rating))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mf", help="comma-separated model families")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = args.models.split(",")
    ml100k = load_movielens("ml-100k")

    # 1. ml-100k five folds
    rows = []
    fold_splits = {fold: predefined_split(fold, dataset=ml100k) for fold in FOLDS}
    per_fold = {name: [baseline_metrics(s.train, s.test)[name][1] for s in fold_splits.values()]
                for name in BASELINES}
    for model in models:
        per_fold[model] = [model_metrics(model, args.seed, split=fold)["test_rmse"] for fold in FOLDS]
    for name, values in per_fold.items():
        rows.append([name, *values, float(np.mean(values))])
    print("### ml-100k, u1..u5 test RMSE\n")
    print(format_table(["model", *FOLDS, "mean"], rows, markdown=True))

    # 2. ml-100k ua.test (the Object2Vec notebook's split)
    ua = predefined_split("ua", dataset=ml100k)
    rows = [[name, m, r] for name, (m, r) in baseline_metrics(ua.train, ua.test).items()]
    for model in models:
        metrics = model_metrics(model, args.seed, split="ua")
        rows.append([model, metrics["test_mse"], metrics["test_rmse"]])
    print("\n### ml-100k, ua.test\n")
    print(format_table(["model", "MSE", "RMSE"], rows, markdown=True))

    # 3. ml-latest-small, random 90/10 split
    small = load_movielens("ml-latest-small")
    split = holdout_split(small, 0.1, seed=args.seed)
    rows = [[name, r] for name, (_, r) in baseline_metrics(split.train, split.test).items()]
    for model in models:
        metrics = model_metrics(model, args.seed, dataset="ml-latest-small", split="random",
                                test_fraction=0.1)
        rows.append([model, metrics["test_rmse"]])
    print(f"\n### ml-latest-small, random 90/10 split (seed {args.seed}), test RMSE\n")
    print(format_table(["model", "RMSE"], rows, markdown=True))


if __name__ == "__main__":
    main()
