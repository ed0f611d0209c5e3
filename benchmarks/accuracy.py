"""Reproduce README's accuracy tables from scratch, with fixed seeds.

    RECJAX_DATA=/folder/with/movielens python benchmarks/accuracy.py \
        [--models mf,pair,dnn] [--sections folds,ua,small,ranking] [--seed 0]

Protocol: each model trains with its recommended settings
(:func:`recjax.families.make_configs`: each family's defaults); validation is 5% of the split's
training part, drawn with the seed, and only chooses the epoch count. Models in
:data:`REFIT` are then retrained on the whole training part for that many epochs.
The test part is scored once. Baselines are fitted on the whole training part.
The ranking section trains the README's ranking runs on ua and scores them with
``recjax evaluate``'s protocol (most popular and EASE included). Prints markdown.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import numpy as np

from recjax.data.movielens import load_movielens
from recjax.data.splits import holdout_split, predefined_split
from recjax.evaluation import average_predictions, experiment_of_runs
from recjax.experiment import RunResult, run
from recjax.explore import load_run
from recjax.families import MODELS, make_configs
from recjax.metrics import mse, rmse
from recjax.models.baselines import BiasModel, GlobalMean, UserMean
from recjax.report import format_table

BASELINES = {"global mean": GlobalMean, "user mean": UserMean, "bias (ALS)": BiasModel}
FOLDS = ("u1", "u2", "u3", "u4", "u5")
REFIT = {"mf", "pair", "als", "ials"}  # dnn, softmax, dae: the validation-chosen epoch, no retraining
# README's ranking rows: (row name, model, train overrides, model overrides). softmax, dae,
# binary mf and the pair's negative-sampling rate (4 beat 8) were chosen on ub; the other pair
# and dnn rows run at their rating-task defaults.
RANKING_RUNS = [
    ("mf (regression)", "mf", {}, {}),
    ("softmax", "softmax", {}, {}),
    ("dae", "dae", {}, {}),
    ("pair (regression)", "pair", {}, {}),
    ("pair, binary", "pair", dict(task="binary"), {}),
    ("pair, binary, 4 sampled negatives", "pair", dict(task="binary", binary_threshold=0.0),
     dict(negative_sampling_rate=4)),
    ("dnn (regression)", "dnn", {}, {}),
    ("dnn, binary", "dnn", dict(task="binary"), {}),
    ("mf, binary", "mf", dict(task="binary", binary_threshold=0.0, optimizer="adam",
                              learning_rate=0.003, batch_size=1024, epochs=30, patience=30,
                              tolerance=0.0),
     dict(num_negatives=8, l2=0.003, embedding_dim=64)),
    ("ials", "ials", {}, {}),  # its defaults (the ub search of 479722b:benchmarks/als_tuning.py) and --refit (REFIT), chosen on ub
]


PAIR_BEST = dict(comparator_list="hadamard", token_bias=True)  # best of 15 on validation
PAIR_SEEDS = 5  # seeds averaged by `recjax evaluate --ensemble` in README's ua table
ENSEMBLE_SEEDS = 3  # Mult-DAE seeds blended by `recjax evaluate --ensemble`
ENSEMBLE_EASE_WEIGHT = 0.1  # EASE's share of that blend, chosen on ub (0.05..0.5 tried)
#: iALS's share (0.15) beside the Mult-DAE seeds, chosen on ub (0.05..0.6 tried), as
#: `recjax evaluate --ensemble-weights` takes it: relative weights, iALS first
ENSEMBLE_IALS_WEIGHTS = (9, 17, 17, 17)


def train(model: str, seed: int, model_values: dict[str, Any] | None = None, **overrides) -> RunResult:
    """One run with ``model``'s recommended settings under ``overrides``, in a temp folder."""
    settings = {"seed": seed, "quiet": True, "refit": model in REFIT,
                "out": tempfile.mkdtemp(prefix="recjax-acc-") + "/run", **overrides}
    train_cfg, model_cfg = make_configs(model, settings, model_values)
    return run(train_cfg, model_cfg)


def model_metrics(model: str, seed: int, **overrides) -> dict[str, float]:
    return train(model, seed, **overrides).metrics


def baseline_metrics(train, test) -> dict[str, tuple[float, float]]:
    out = {}
    for name, cls in BASELINES.items():
        predictions = cls().fit(train).predict(test.user, test.item)
        out[name] = (mse(predictions, test.rating), rmse(predictions, test.rating))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mf", help="comma-separated model families")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models, sections = args.models.split(","), args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    for section in sections:
        SECTIONS[section](models, args.seed)


def folds(models: list[str], seed: int) -> None:
    """ml-100k u1..u5 test RMSE."""
    ml100k = load_movielens("ml-100k")
    rows = []
    fold_splits = {fold: predefined_split(fold, dataset=ml100k) for fold in FOLDS}
    per_fold = {name: [baseline_metrics(s.train, s.test)[name][1] for s in fold_splits.values()]
                for name in BASELINES}
    for model in models:
        per_fold[model] = [model_metrics(model, seed, split=fold)["test_rmse"] for fold in FOLDS]
    for name, values in per_fold.items():
        rows.append([name, *values, float(np.mean(values))])
    print("### ml-100k, u1..u5 test RMSE\n")
    print(format_table(["model", *FOLDS, "mean"], rows, markdown=True))


def ua(models: list[str], seed: int) -> None:
    """ml-100k ua.test (the Object2Vec notebook's split): MSE, and binary accuracy."""
    split = predefined_split("ua", dataset=load_movielens("ml-100k"))
    rows = [[name, m, r, "-"] for name, (m, r) in baseline_metrics(split.train, split.test).items()]
    for model in models:
        metrics = model_metrics(model, seed, split="ua")
        rows.append([model, metrics["test_mse"], metrics["test_rmse"], "-"])
        if "binary" in MODELS[model].tasks:
            binary = model_metrics(model, seed, split="ua", task="binary")
            rows.append([f"{model}, binary", "-", "-", binary["test_accuracy"]])
    if "pair" in models:  # the validation-chosen variant, alone and averaged over seeds
        runs = [load_run(train("pair", seed + i, PAIR_BEST, split="ua").run_dir)
                for i in range(PAIR_SEEDS)]
        predicted = [r.rating_predictions("test") for r in runs]
        labels = predicted[0][1]
        rows.append(["pair, hadamard + token biases", mse(predicted[0][0], labels),
                     rmse(predicted[0][0], labels), "-"])
        mean = average_predictions([p for p, _ in predicted])
        rows.append([f"pair, hadamard + token biases, mean of {PAIR_SEEDS} seeds", mse(mean, labels),
                     rmse(mean, labels), "-"])
    print("\n### ml-100k, ua.test\n")
    print(format_table(["model", "MSE", "RMSE", "binary accuracy"], rows, markdown=True))


def small(models: list[str], seed: int) -> None:
    """ml-latest-small, random 90/10 split: test RMSE."""
    split = holdout_split(load_movielens("ml-latest-small"), 0.1, seed=seed)
    rows = [[name, r] for name, (_, r) in baseline_metrics(split.train, split.test).items()]
    for model in models:
        metrics = model_metrics(model, seed, dataset="ml-latest-small", split="random",
                                test_fraction=0.1)
        rows.append([model, metrics["test_rmse"]])
    print(f"\n### ml-latest-small, random 90/10 split (seed {seed}), test RMSE\n")
    print(format_table(["model", "RMSE"], rows, markdown=True))


def ranking(models: list[str], seed: int) -> None:
    """README's ranking rows on ua (``--models`` does not apply: the rows are fixed)."""
    runs, names = [], []
    for name, model, overrides, model_values in RANKING_RUNS:
        result = train(model, seed, model_values, split="ua", **overrides)
        runs.append(load_run(result.run_dir))
        names.append(name)
    table = experiment_of_runs(runs, k=10).run().table  # the runs in order, then the ranking baselines
    labels = names + list(table)[len(runs):]
    rows = [[label, m["precision@10"], m["ndcg@10"]] for label, m in zip(labels, table.values())
            if "ndcg@10" in m]
    # ensembles of Mult-DAE seeds (the one above and ENSEMBLE_SEEDS - 1 more), alone and with EASE
    daes = [runs[names.index("dae")]] + [
        load_run(train("dae", seed + i, split="ua").run_dir) for i in range(1, ENSEMBLE_SEEDS)]
    for weight in (0.0, ENSEMBLE_EASE_WEIGHT):
        table = experiment_of_runs(daes, k=10, baselines=False, ensemble=weight).run().table
        m = list(table.values())[-1]  # its row
        label = f"ensemble of {len(daes)} dae seeds" + (f" + EASE ({weight:g})" if weight else "")
        rows.append([label, m["precision@10"], m["ndcg@10"]])
    ials = runs[names.index("ials")]
    table = experiment_of_runs([ials, *daes], k=10, baselines=False, ensemble=0.0,
                               weights=ENSEMBLE_IALS_WEIGHTS).run().table
    m = list(table.values())[-1]
    share = ENSEMBLE_IALS_WEIGHTS[0] / sum(ENSEMBLE_IALS_WEIGHTS)
    rows.append([f"ials + {len(daes)} dae seeds (ials at {share:g})", m["precision@10"], m["ndcg@10"]])
    print("\n### ml-100k, ranking on ua (top 10, train movies excluded)\n")
    print(format_table(["model", "P@10", "NDCG@10"], rows, markdown=True))


SECTIONS = {"folds": folds, "ua": ua, "small": small, "ranking": ranking}  # in README's order

if __name__ == "__main__":
    main()
