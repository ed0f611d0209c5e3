"""The bag and ranking models' validation (recjax.train.validation) against the evaluation
package's NumPy ranking metrics and brute-force rankings: one definition of precision and
recall at k; a seeded sample of validation users during training, every user at the end."""

import json

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from recjax.data import synthetic_ratings
from recjax.data.splits import holdout_split
from recjax.metrics import ranking_metrics
from recjax.models.softmax import SoftmaxConfig, build_softmax, softmax_inputs
from recjax.retrieval import dense_topk
from recjax.train.step import Model
from recjax.train.validation import bag_validator, ranking_validator, sample_users


def test_bag_validator_equals_the_numpy_ranking_metrics():
    data, _ = synthetic_ratings(120, 60, 3000, seed=3)
    first = holdout_split(data, 0.2, seed=0)
    second = holdout_split(first.train, 0.1, seed=1)
    splits = {"train": second.train, "val": second.test, "test": first.test}
    cfg = SoftmaxConfig(embedding_dim=8, hidden_dims="8", max_bag=200)
    inputs = softmax_inputs(cfg, splits)
    model = Model.split(build_softmax(cfg, splits["train"], seed=0))
    k = 5
    got = bag_validator(model, inputs, k=k, chunk=32)(model.params, "test", "test_")

    bag, targets = inputs["test"]["bag"], inputs["test"]["targets"]
    logits = np.asarray(model.bind(model.params)({"bag": bag}), np.float64)
    rows, cols = np.nonzero(bag >= 0)
    exclude = sp.csr_matrix((np.ones(len(rows)), (rows, bag[rows, cols])), shape=logits.shape)
    top = dense_topk(logits, k, exclude=exclude)
    t_rows, t_cols = np.nonzero(targets >= 0)
    relevant = sp.csr_matrix((np.ones(len(t_rows)), (t_rows, targets[t_rows, t_cols])), shape=logits.shape)
    users = np.unique(t_rows)
    want = ranking_metrics(top.ids[users], relevant[users], k)
    assert len(users) > 50
    np.testing.assert_allclose(got[f"test_precision@{k}"], want[f"precision@{k}"], rtol=1e-6)
    np.testing.assert_allclose(got[f"test_recall@{k}"], want[f"recall@{k}"], rtol=1e-6)


# ----------------------------------------------------------------------------- sampled validation
def _ranking_case(n_users=60, n_items=40, seed=5):
    """An untrained iALS (random factors rank the catalogue) and train / val interactions."""
    from flax import nnx

    from recjax.models.als import IALS, IALSConfig

    rng = np.random.default_rng(seed)
    pairs = np.argwhere(rng.random((n_users, n_items)) < 0.2)
    part = rng.random(len(pairs)) < 0.25
    inputs = {name: {"user": pairs[mask, 0], "item": pairs[mask, 1], "label": np.ones(mask.sum(), np.float32)}
              for name, mask in (("train", ~part), ("val", part))}
    module = IALS(IALSConfig(embedding_dim=4, init_std=1.0), n_users, n_items, rngs=nnx.Rngs(seed))
    return Model.split(module), inputs


def _brute_force(user_vectors, item_vectors, inputs, users, k=10):
    """NDCG, precision and recall at k of ``users`` by dense scores, train items excluded."""
    scores = np.asarray(user_vectors, np.float64) @ np.asarray(item_vectors, np.float64).T
    scores[inputs["train"]["user"], inputs["train"]["item"]] = -np.inf
    out = {"ndcg": [], "precision": [], "recall": []}
    for u in users:
        relevant = set(inputs["val"]["item"][inputs["val"]["user"] == u].tolist())
        top = np.argsort(-scores[u], kind="stable")[:k]
        hit = np.array([i in relevant for i in top], np.float64)
        discount = 1 / np.log2(np.arange(2, k + 2))
        out["ndcg"].append((hit * discount).sum() / discount[:min(k, len(relevant))].sum())
        out["precision"].append(hit.sum() / k)
        out["recall"].append(hit.sum() / len(relevant))
    return {name: float(np.mean(values)) for name, values in out.items()}


def test_sample_users_is_seeded_a_subset_and_all_when_large():
    users = np.arange(3, 300, 3)
    a, b, c = (sample_users(users, 20, seed) for seed in (7, 7, 8))
    assert len(a) == 20 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a) > 0) and set(a) <= set(users)
    for size in (0, len(users), len(users) + 1):
        assert sample_users(users, size, 7) is users


def test_ranking_validator_samples_the_same_users_every_epoch(monkeypatch):
    """The users ranked (seen by recommend) are the same at every call of one seed, a
    subset of the validation users of the asked size, another seed's differ; the
    metrics are the brute-force ones over exactly those users."""
    import recjax.train.validation as validation

    model, inputs = _ranking_case()
    asked = []
    original = validation.recommend
    monkeypatch.setattr(validation, "recommend",
                        lambda u, i, who, *a, **kw: asked.append(np.array(who)) or original(u, i, who, *a, **kw))
    evaluate = ranking_validator(model, inputs, k=10)
    later = jax.tree.map(lambda x: x * -1.5, model.params)  # another epoch's parameters
    first, second = (evaluate(params, "val", "val_", sample=15, seed=3) for params in (model.params, later))
    evaluate(model.params, "val", "val_", sample=15, seed=4)
    everyone = np.unique(inputs["val"]["user"])
    assert np.array_equal(asked[0], asked[1]) and len(asked[0]) == 15 and set(asked[0]) <= set(everyone)
    assert not np.array_equal(asked[0], asked[2])
    assert first["val_users"] == second["val_users"] == 15
    for params, got in ((model.params, first), (later, second)):
        want = _brute_force(*model.bind(params).ranking_vectors(), inputs, asked[0])
        for name in ("ndcg", "precision", "recall"):
            assert got[f"val_{name}@10"] == pytest.approx(want[name], abs=1e-12), name


def test_ranking_validator_sample_of_at_least_every_user_is_the_full_metric():
    model, inputs = _ranking_case()
    evaluate = ranking_validator(model, inputs, k=10)
    everyone = np.unique(inputs["val"]["user"])
    full = evaluate(model.params, "val", "val_")
    assert full["val_users"] == len(everyone) > 40
    for sample in (len(everyone), 10_000):
        assert evaluate(model.params, "val", "val_", sample=sample, seed=1) == full
    want = _brute_force(*model.bind(model.params).ranking_vectors(), inputs, everyone)
    assert full["val_ndcg@10"] == pytest.approx(want["ndcg"], abs=1e-12)


def test_bag_validator_sample_measures_the_sampled_users():
    """A bag model's sampled metrics are the NumPy ones over the sampled users with
    targets; a sample of at least all of them is exactly the full metric."""
    data, _ = synthetic_ratings(120, 60, 3000, seed=3)
    first = holdout_split(data, 0.2, seed=0)
    second = holdout_split(first.train, 0.1, seed=1)
    splits = {"train": second.train, "val": second.test, "test": first.test}
    cfg = SoftmaxConfig(embedding_dim=8, hidden_dims="8", max_bag=200)
    inputs = softmax_inputs(cfg, splits)
    model = Model.split(build_softmax(cfg, splits["train"], seed=0))
    evaluate = bag_validator(model, inputs, k=5, chunk=32)
    targets = inputs["test"]["targets"]
    users = np.flatnonzero((targets >= 0).any(axis=1))
    full = evaluate(model.params, "test", "test_")
    assert evaluate(model.params, "test", "test_", sample=len(users), seed=2) == full
    got = evaluate(model.params, "test", "test_", sample=25, seed=2)
    assert got == evaluate(model.params, "test", "test_", sample=25, seed=2) != full
    chosen = sample_users(users, 25, 2)
    bag = inputs["test"]["bag"]
    logits = np.asarray(model.bind(model.params)({"bag": bag}), np.float64)
    rows, cols = np.nonzero(bag >= 0)
    exclude = sp.csr_matrix((np.ones(len(rows)), (rows, bag[rows, cols])), shape=logits.shape)
    top = dense_topk(logits, 5, exclude=exclude)
    t_rows, t_cols = np.nonzero(targets >= 0)
    relevant = sp.csr_matrix((np.ones(len(t_rows)), (t_rows, targets[t_rows, t_cols])), shape=logits.shape)
    want = ranking_metrics(top.ids[chosen], relevant[chosen], 5)
    np.testing.assert_allclose(got["test_precision@5"], want["precision@5"], rtol=1e-6)
    np.testing.assert_allclose(got["test_recall@5"], want["recall@5"], rtol=1e-6)


def test_a_run_monitors_a_sample_and_reports_the_final_metrics_over_every_user(tmp_path):
    """iALS with val_users 7: each epoch's record ranks 7 validation users; the final
    line's val_* are over all of them, equal to a brute-force ranking by the trained
    factors."""
    from recjax.config import RunConfig
    from recjax.data.splits import split_ratings
    from recjax.experiment import run
    from recjax.models.als import IALSConfig

    data, _ = synthetic_ratings(150, 80, 3000, seed=4)
    splits = split_ratings(data, "random", test_fraction=0.1, val_fraction=0.1, seed=0)._asdict()
    cfg = RunConfig(model="ials", epochs=3, patience=5, val_users=7, quiet=True, out=str(tmp_path / "run"))
    result = run(cfg, IALSConfig(embedding_dim=4), splits=splits)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs, final = [line for line in lines if "epoch" in line], lines[-1]
    assert [line["val_users"] for line in epochs] == [7, 7, 7]
    assert all(line["epoch_seconds"] > 0 and line["val_seconds"] > 0 for line in epochs)
    inputs = {name: {"user": splits[name].user, "item": splits[name].item} for name in ("train", "val")}
    everyone = np.unique(splits["val"].user)
    want = _brute_force(*result.module.ranking_vectors(), inputs, everyone)
    assert final["val_users"] == len(everyone) > 50
    for name in ("ndcg", "precision", "recall"):
        assert final[f"val_{name}@10"] == pytest.approx(want[name], abs=1e-9), name
