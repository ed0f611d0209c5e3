"""Loading run folders, recommendations, neighbours and title search."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from _tiny_run import tiny_run

from recjax.data import UnknownIdError
from recjax.evaluation.compare import evaluate_run
from recjax.explore import find_titles, load_run, neighbors, recommendations
from recjax.runs import Run, RunFolderError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def run(run_dir) -> Run:
    return load_run(run_dir)


def rated_pairs(run: Run) -> set[tuple[int, int]]:
    m = run.rated.tocoo()
    return set(zip(run.data.users.ids[m.row].tolist(), run.data.items.ids[m.col].tolist()))


def test_load_run(run):
    assert run.train_config.dataset == "synthetic" and run.name == "mf"
    assert run.user_embeddings.shape == (run.data.n_users, 8)
    assert run.item_embeddings.shape == (run.data.n_items, 8)
    assert len(run.history) == 2 and run.final_metrics["event"] == "final"
    assert run.item_titles[6] == "Item 7"
    assert run.rated.nnz == sum(len(p) for p in run.splits.values())


@pytest.mark.parametrize("measure", ["dot", "cosine"])
def test_recommend_never_returns_rated_items(run, measure):
    recs = recommendations(run, run.data.users.ids, 15, measure=measure)
    assert len(recs) == 15 * run.data.n_users
    got = set(zip(recs["user_id"].tolist(), recs["item_id"].tolist()))
    assert not got & rated_pairs(run)
    # asked to include them, the heaviest raters get some back
    heavy = run.data.users.ids[np.argsort(-np.diff(run.rated.indptr))[:20]]
    with_rated = recommendations(run, heavy, 15, measure=measure, include_rated=True)
    assert set(zip(with_rated["user_id"].tolist(), with_rated["item_id"].tolist())) & rated_pairs(run)


def test_recommend_several_users_best_first(run):
    recs = recommendations(run, [3, "1", np.int64(2)], N=4)
    assert recs["user_id"].tolist() == [3] * 4 + [1] * 4 + [2] * 4
    assert recs["rank"].tolist() == [1, 2, 3, 4] * 3
    for _, group in recs.groupby("user_id"):
        assert np.all(np.diff(group["score"].to_numpy()) <= 1e-6)
    assert recs["title"].str.startswith("Item ").all() and recs["genres"].str.len().gt(0).all()


def test_recommend_dot_includes_the_item_bias(run):
    module = run.module()
    u = run.data.users.index([5])[0]
    full = (run.user_embeddings[u] @ run.item_embeddings.T + np.asarray(module.item_bias[...]))
    full[run.rated[u].indices] = -np.inf
    want = np.argsort(-full, kind="stable")[:5]
    assert recommendations(run, 5, 5)["item_id"].tolist() == run.data.items.ids[want].tolist()


def test_recommend_errors(run):
    with pytest.raises(UnknownIdError, match="unknown user id.*999999"):
        recommendations(run, [1, 999999])
    with pytest.raises(UnknownIdError, match="integers"):
        recommendations(run, "alice")
    with pytest.raises(ValueError, match="N must be"):
        recommendations(run, 1, 0)
    with pytest.raises(ValueError, match="measure"):
        recommendations(run, 1, measure="l2")


def test_recommendations_for_every_user_are_batched_and_fast():
    """Every user of a 100k-user synthetic set, in seconds (one kernel pass)."""
    from recjax.config import RunConfig
    from recjax.data import synthetic_ratings

    data, _ = synthetic_ratings(n_users=100_000, n_items=2_000, n_ratings=1_000_000, seed=0)
    rng = np.random.default_rng(0)
    empty = data.subset(slice(0, 0))
    fake = Run(path=None, train_config=RunConfig(dataset="synthetic", split="random"),
               model_config=None, splits={"train": data, "val": empty, "test": empty},
               user_embeddings=rng.normal(size=(100_000, 32)).astype(np.float32),
               item_embeddings=rng.normal(size=(2_000, 32)).astype(np.float32))
    tic = time.perf_counter()
    recs = recommendations(fake, fake.data.users.ids, 10, measure="cosine")
    seconds = time.perf_counter() - tic
    assert len(recs) == 1_000_000
    assert seconds < 20, f"recommendations for every user took {seconds:.1f} s"
    sample = recs[recs["user_id"].isin(data.users.ids[:50])]
    rated = set(zip(data.users.ids[data.user].tolist(), data.items.ids[data.item].tolist()))
    assert not set(zip(sample["user_id"].tolist(), sample["item_id"].tolist())) & rated


@pytest.mark.parametrize("measure", ["dot", "cosine", "l2"])
def test_neighbors_first_hit_is_itself_only_when_asked(run, measure):
    found = neighbors(run, "Item 7", k=5, measure=measure)
    assert found.title == "Item 7" and found.item_id == 7
    assert 7 not in found.table["item_id"].tolist()
    assert found.others[:3] == ["Item 70", "Item 71", "Item 72"]
    if measure != "dot":  # by dot, a longer vector can beat the item itself
        with_self = neighbors(run, None, k=5, measure=measure, item_id=7, include_self=True)
        assert with_self.table["item_id"].iloc[0] == 7
        assert with_self.table["item_id"].tolist()[1:] == found.table["item_id"].tolist()[:4]
    ascending = measure == "l2"
    scores = found.table["score"].to_numpy()
    assert np.all(np.diff(scores) >= -1e-6) if ascending else np.all(np.diff(scores) <= 1e-6)


def test_neighbors_errors(run):
    with pytest.raises(UnknownIdError, match="no title contains 'Itme 7'.*did you mean.*Item 7"):
        neighbors(run, "Itme 7")
    with pytest.raises(UnknownIdError, match="unknown item id"):
        neighbors(run, item_id=123456)
    with pytest.raises(ValueError, match="exactly one"):
        neighbors(run)
    with pytest.raises(ValueError, match="k must be"):
        neighbors(run, "Item 7", k=0)


def test_find_titles():
    titles = ["Aladdin (1992)", "Lion King, The (1994)", "Aladdin and the King of Thieves (1996)",
              "Toy Story (1995)"]
    m = find_titles(titles, "ALADDIN")
    assert m.indices.tolist() == [0, 2] and m.suggestions == []
    assert find_titles(titles, "Toy Stroy").suggestions == ["Toy Story (1995)"]
    assert find_titles(titles, "king").titles == ["Lion King, The (1994)",
                                                  "Aladdin and the King of Thieves (1996)"]
    assert find_titles(titles, "(1995)").titles == ["Toy Story (1995)"]  # no regex
    with pytest.raises(ValueError, match="empty"):
        find_titles(titles, "  ")


def test_evaluate_run(run):
    results = evaluate_run(run, 5)
    assert list(results)[:3] == ["mf", "most popular", "EASE (l2 250)"]
    mf = results["mf"]
    assert {"rmse", "mae", "ndcg@5", "coverage@5", "diversity@5", "self_information@5"} <= set(mf)
    assert results["global mean"]["rmse"] > 0
    assert 0 <= results["most popular"]["ndcg@5"] <= 1
    assert list(evaluate_run(run, 3, baselines=False)) == ["mf"]


def test_bad_run_folders(tmp_path, run_dir):
    with pytest.raises(RunFolderError, match="no such run folder"):
        load_run(tmp_path / "missing")
    with pytest.raises(RunFolderError, match="no run.json"):
        load_run(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "embeddings.npz").unlink()
    with pytest.raises(RunFolderError, match="embeddings.npz is missing"):
        load_run(copy)
    shutil.copy(run_dir / "embeddings.npz", copy / "embeddings.npz")
    with np.load(copy / "embeddings.npz") as z:
        arrays = dict(z)
    np.savez(copy / "embeddings.npz", **{**arrays, "item_embeddings": arrays["item_embeddings"][:-1],
                                         "item_ids": arrays["item_ids"][:-1]})
    with pytest.raises(RunFolderError, match="embeddings.npz is damaged"):
        load_run(copy)
    shutil.copy(run_dir / "embeddings.npz", copy / "embeddings.npz")
    (copy / "config.json").write_text(json.dumps({"nothing": 1}))
    with pytest.raises(RunFolderError, match="config.json is damaged"):
        load_run(copy)
    (copy / "run.json").write_text("{")
    with pytest.raises(RunFolderError, match="run.json is damaged"):
        load_run(copy)


def test_ml100k_aladdin_and_user_943(movielens_dir, tmp_path, monkeypatch):
    from recjax.config import RunConfig
    from recjax.experiment import run as train
    from recjax.models.mf import MFConfig

    monkeypatch.setenv("RECJAX_DATA", str(movielens_dir))
    out = tmp_path / "ua"
    train(RunConfig(split="ua", epochs=2, quiet=True, out=str(out)), MFConfig(embedding_dim=16))
    run = load_run(out)
    found = neighbors(run, "Aladdin", k=6, measure="cosine", include_self=True)
    assert found.title == "Aladdin (1992)" and found.item_id == 95
    assert found.others == ["Aladdin and the King of Thieves (1996)"]
    assert found.table["title"].iloc[0] == "Aladdin (1992)"
    assert found.table["genres"].iloc[0] == "Animation-Children's-Comedy-Musical"
    recs = recommendations(run, 943, 10)
    seen = set(run.data.items.ids[run.rated[run.data.users.index([943])[0]].indices].tolist())
    assert len(recs) == 10 and not seen & set(recs["item_id"].tolist())


def test_a_model_without_ranking_vectors_is_ranked_by_its_full_forward_pass(run):
    """A DNN is ranked by its own predictions over every item (the generic path of the
    model contract: it scores pairs and gives no ranking vectors)."""
    import dataclasses

    import jax.numpy as jnp

    from recjax.families import MODELS
    from recjax.scoring import FunctionScorer, as_scorer

    spec = MODELS["dnn"]
    cfg = spec.config(embedding_dim=4, hidden_dims="6")
    train_cfg = dataclasses.replace(run.train_config, model="dnn")
    module = spec.build(cfg, run.splits["train"], task=train_cfg.task, seed=train_cfg.seed)
    scorer = as_scorer(module)
    assert isinstance(scorer, FunctionScorer)
    users = np.array([0, 5, 9])
    top = scorer.topk(users, 4, run.rated)
    u = np.repeat(users, run.data.n_items)
    i = np.tile(np.arange(run.data.n_items), len(users))
    full = np.array(module({"user": jnp.asarray(u), "item": jnp.asarray(i)})).reshape(3, -1)
    full[run.rated[users].toarray() > 0] = -np.inf
    np.testing.assert_allclose(top.scores, -np.sort(-full, axis=1)[:, :4], rtol=1e-5, atol=1e-6)


def test_runs_share_one_table(run):
    import dataclasses

    from recjax.evaluation.compare import experiment_of_runs

    results = experiment_of_runs([run, run], k=5, baselines=False).run().table
    assert list(results) == ["mf (run)", "mf (run, 2)"]
    assert results["mf (run)"]["ndcg@5"] == results["mf (run, 2)"]["ndcg@5"]
    other = dataclasses.replace(run, splits={**run.splits, "test": run.splits["test"].subset(slice(0, 50))})
    with pytest.raises(ValueError, match="different splits"):
        experiment_of_runs([run, other], k=5)
    with pytest.raises(ValueError, match="no runs"):
        experiment_of_runs([], k=5)


def test_runs_ensemble_row(run):
    from recjax.evaluation.compare import experiment_of_runs

    alone = experiment_of_runs([run], k=5, baselines=False).run().table["mf"]
    # a run blended with itself ranks exactly as the run does
    same = experiment_of_runs([run, run], k=5, baselines=False,
                              ensemble=0.0).run().table["ensemble of 2 runs"]
    for name in ("ndcg@5", "precision@5", "coverage@5"):
        assert same[name] == alone[name]
    with_ease = experiment_of_runs([run], k=5, ensemble=0.5).run().table
    assert list(with_ease) == ["mf", "ensemble of 1 runs + EASE (0.5)", "most popular",
                               "EASE (l2 250)", "global mean", "user mean"]
    assert with_ease["ensemble of 1 runs + EASE (0.5)"]["ndcg@5"] != alone["ndcg@5"]
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"in \[0, 1\)"):
            experiment_of_runs([run], k=5, ensemble=bad)


def test_refit_run_reloads_the_refitted_model(tmp_path):
    """A --refit run's test metrics and embeddings come from the refitted model: so must
    the module that evaluate / recommend reload (not the validation-phase best)."""
    import jax.numpy as jnp

    from recjax.config import RunConfig
    from recjax.metrics import rmse
    from recjax.experiment import run as train_run
    from recjax.models.mf import MFConfig

    out = tmp_path / "refit"
    train_run(RunConfig(dataset="synthetic", split="random", epochs=3, refit=True, quiet=True,
                          out=str(out)), MFConfig(embedding_dim=8))
    reloaded = load_run(out)
    test = reloaded.splits["test"]
    module = reloaded.module()
    predicted = np.asarray(module({"user": jnp.asarray(test.user), "item": jnp.asarray(test.item)}))
    assert rmse(predicted, test.rating) == pytest.approx(reloaded.final_metrics["test_rmse"], abs=1e-6)
    users, items = (np.asarray(t) for t in module.embeddings())
    np.testing.assert_allclose(items, reloaded.item_embeddings, rtol=1e-6)


def test_rating_predictions_and_ensemble_rating_metrics(run, tmp_path):
    from recjax.config import RunConfig
    from recjax.metrics import mse, rmse
    from recjax.evaluation.compare import experiment_of_runs
    from recjax.experiment import run as train_run
    from recjax.models.mf import MFConfig

    predicted, labels = run.rating_predictions("test")
    assert rmse(predicted, labels) == pytest.approx(run.final_metrics["test_rmse"], abs=1e-6)
    other_dir = tmp_path / "dim4"  # same seed (so the same split), another model
    train_run(RunConfig(dataset="synthetic", split="random", epochs=2, quiet=True,
                          out=str(other_dir)), MFConfig(embedding_dim=4))
    other = load_run(other_dir)
    row = experiment_of_runs([run, other], k=5, baselines=False,
                             ensemble=0.0).run().table["ensemble of 2 runs"]
    by_hand = (predicted + other.rating_predictions("test")[0]) / 2
    assert row["mse"] == pytest.approx(mse(by_hand, labels), rel=1e-9)
    assert row["rmse"] < max(run.final_metrics["test_rmse"], other.final_metrics["test_rmse"])
    # weighted: the rating average and the ranking blend take the same normalised weights
    weighted = experiment_of_runs([run, other], k=5, baselines=False, ensemble=0.0,
                                  weights=[3, 1]).run().table
    row = weighted["ensemble of 2 runs (weighted)"]
    by_hand = 0.75 * predicted + 0.25 * other.rating_predictions("test")[0]
    assert row["mse"] == pytest.approx(mse(by_hand, labels), rel=1e-9)
    only_other = experiment_of_runs([run, other], k=5, baselines=False, ensemble=0.0,
                                    weights=[0, 1]).run().table
    assert only_other["ensemble of 2 runs (weighted)"]["ndcg@5"] == only_other["mf (dim4)"]["ndcg@5"]
    assert only_other["ensemble of 2 runs (weighted)"]["mse"] == pytest.approx(
        other.final_metrics["test_mse"], rel=1e-6)


def test_ensemble_errors(run, monkeypatch):
    import dataclasses

    import recjax.evaluation.compare as compare

    def binary(threshold: float) -> Run:
        cfg = dataclasses.replace(run.train_config, task="binary", binary_threshold=threshold)
        return dataclasses.replace(run, train_config=cfg)

    with pytest.raises(ValueError, match="label the test part differently"):
        compare.experiment_of_runs([binary(3.0), binary(4.0)], k=5, baselines=False, ensemble=0.0)
    monkeypatch.setattr(compare, "EASE_MAX_ITEMS", 5)
    with pytest.raises(ValueError, match="EASE is not fitted above 5 items"):
        compare.experiment_of_runs([run], k=5, ensemble=0.5)
    assert "ensemble of 1 runs" in compare.experiment_of_runs([run], k=5, ensemble=0.0).run().table  # runs alone
    with pytest.raises(ValueError, match="weights are the ensemble's"):
        compare.experiment_of_runs([run], k=5, weights=[1.0])
    with pytest.raises(ValueError, match="2 models but 1 weights"):
        compare.experiment_of_runs([run, run], k=5, ensemble=0.0, weights=[1.0])
