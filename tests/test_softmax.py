"""The softmax model: tower, loss by hand, sampled softmax, held-out evaluation, learning."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _bag_model import check_bag_shapes_and_invariance
from flax import nnx

from recjax.config import RunConfig
from recjax.data.bags import bag_inputs, item_features
from recjax.data.jsonlines import PAD
from recjax.models.softmax import (
    SoftmaxConfig,
    SoftmaxModel,
    _sampled_logits,
    build_softmax,
    softmax_inputs,
)
from recjax.train.loop import fit
from recjax.train.step import Model
from recjax.train.validation import bag_ranking_stats, bag_validator

GENRES = np.array([[0, -1], [1, 2], [0, -1], [2, -1], [1, -1], [0, 1]])
YEARS = np.array([0, 0, 1, 1, 2, -1])


def tiny(**kw) -> SoftmaxModel:
    cfg = SoftmaxConfig(**{"embedding_dim": 4, "hidden_dims": "8", **kw})
    return SoftmaxModel(cfg, 6, genres=GENRES, years=YEARS, rngs=nnx.Rngs(0))


def test_shapes_and_bag_padding_invariance():
    check_bag_shapes_and_invariance(tiny(), n_items=6, dim=4)


def test_every_input_and_setting_changes_the_user_embedding():
    bag = jnp.array([[0, 3, 4]])
    reference = tiny().user_embedding(bag)
    for kw in ({"genre_dim": 0}, {"year_dim": 0}, {"hidden_dims": ""}, {"hidden_dims": "8,8"},
               {"genre_dim": 2}, {"init_std": 0.5}):
        assert not np.allclose(tiny(**kw).user_embedding(bag), reference), kw
    # years count: movies 0 and 2 share their genre and differ in year
    no_ids = tiny(genre_dim=0)
    no_ids.movie_embedding[...] = jnp.zeros_like(no_ids.movie_embedding[...])
    assert not np.allclose(no_ids.user_embedding(jnp.array([[0]])), no_ids.user_embedding(jnp.array([[2]])))
    no_years = tiny(year_dim=0)
    no_years.movie_embedding[...] = jnp.zeros_like(no_years.movie_embedding[...])
    np.testing.assert_allclose(no_years.user_embedding(jnp.array([[0]])), no_years.user_embedding(jnp.array([[2]])))


def test_logits_use_the_input_movie_table():
    model = tiny()
    user = model.user_embedding(jnp.array([[1, 2]]))
    np.testing.assert_allclose(model({"bag": jnp.array([[1, 2]])}), user @ model.movie_embedding[...].T,
                               rtol=1e-5)


def _hand_model() -> SoftmaxModel:
    """Tower = mean of the bag's movie vectors (identity projection): logits are dot products."""
    cfg = SoftmaxConfig(embedding_dim=2, hidden_dims="", genre_dim=0, year_dim=0, targets_per_user=1)
    model = SoftmaxModel(cfg, 3, genres=np.zeros((3, 0)), years=-np.ones(3), rngs=nnx.Rngs(0))
    model.movie_embedding[...] = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    model.project.kernel[...] = jnp.eye(2)
    model.project.bias[...] = jnp.zeros(2)
    return model


def test_full_softmax_loss_equals_the_hand_computed_value():
    model = _hand_model()
    # user rated movies 0 and 2; movie 2 is held out: bag [0] -> user vector [1, 0], logits [1, 0, 1];
    # movie 0 (rated, in the bag) leaves the softmax, so the loss is -log(e^1 / (e^0 + e^1))
    batch = {"bag": jnp.array([[0, PAD]]), "positives": jnp.array([[0, 2]]), "target": jnp.array([2]),
             "label": jnp.array([2]), "weight": jnp.ones(1)}
    logits = model(batch, train=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    np.testing.assert_allclose(float(loss[0]), math.log(1 + math.exp(-1)), rtol=1e-6)
    # the untouched lab loss would have been -log(e^1 / (e^1 + e^0 + e^1))
    plain = optax.softmax_cross_entropy_with_integer_labels(model({"bag": batch["bag"]}), batch["label"])
    np.testing.assert_allclose(float(plain[0]), math.log(2 + math.exp(-1)), rtol=1e-6)


def test_augment_holds_targets_out_of_the_bag():
    model = tiny(targets_per_user=2)
    bag = jnp.array([[0, 1, 2, 3], [4, 5, PAD, PAD], [1, PAD, PAD, PAD]])
    out = model.augment({"bag": bag, "label": jnp.zeros(3), "weight": jnp.ones(3)}, jax.random.key(3))
    target, weight = np.asarray(out["target"]).reshape(3, 2), np.asarray(out["weight"]).reshape(3, 2)
    pruned = np.asarray(out["bag"])
    assert weight.tolist() == [[1, 1], [1, 0], [0, 0]]  # each row keeps at least one movie
    for row in range(3):
        kept = set(pruned[row][pruned[row] >= 0])
        held = set(target[row][weight[row] > 0])
        assert kept | held == set(np.asarray(bag[row])[np.asarray(bag[row]) >= 0])
        assert not kept & held and kept
    assert model(out, train=True).shape == (6, 6)


def _full_loss(user, table, target, positives):
    logits = user @ table.T
    hit = positives & (np.arange(table.shape[0])[None, :] != target[:, None])
    logits = np.where(hit, -np.inf, logits)
    return np.logaddexp.reduce(logits, axis=1) - logits[np.arange(len(target)), target]


def test_sampled_softmax_approaches_full_softmax():
    rng = np.random.default_rng(0)
    n_items, d = 300, 8
    table = jnp.asarray(rng.normal(0, 0.7, (n_items, d)), jnp.float32)
    user = jnp.asarray(rng.normal(0, 0.7, (16, d)), jnp.float32)
    target = jnp.asarray(rng.integers(0, n_items, 16))
    positives = np.zeros((16, n_items), bool)
    full = _full_loss(np.asarray(user), np.asarray(table), np.asarray(target), positives)
    def loss(key, n_sampled):
        candidates = jax.random.randint(key, (n_sampled,), 0, n_items)
        log_q = jnp.full((n_items,), math.log(n_sampled / n_items))
        hit = candidates[None, :] == target[:, None]
        logits = _sampled_logits(user, table, target, candidates, log_q, hit)
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros(16, jnp.int32))

    errors = []
    for n_sampled in (8, 64, 512, 4096):
        losses = jax.jit(jax.vmap(lambda k: loss(k, n_sampled)))(jax.random.split(jax.random.key(0), 20))
        errors.append(float(np.mean(np.abs(np.mean(np.asarray(losses), axis=0) - full))))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.02


def test_sampled_modes_remove_accidental_hits():
    bag = jnp.array([[0, 1, 2], [3, 4, PAD]])
    for negatives in ("uniform", "in_batch"):
        model = tiny(negatives=negatives, num_sampled=64, targets_per_user=1)
        batch = model.augment({"bag": bag, "label": jnp.zeros(2), "weight": jnp.ones(2)}, jax.random.key(0))
        logits = np.asarray(model(batch, train=True))
        label = np.asarray(batch["label"])
        assert (logits[np.arange(2), label] > -1e8).all()  # the true movie stays in
        if negatives == "uniform":
            cands = np.asarray(batch["candidates"])
            rated = [set(np.asarray(bag[r])[np.asarray(bag[r]) >= 0]) for r in range(2)]
            removed = np.array([[c in rated[r] for c in cands] for r in range(2)])
            assert ((logits[:, 1:] < -1e8) == removed).all()
        else:
            assert logits.shape == (2, 2)


def test_ranking_metrics_by_hand():
    logits = jnp.array([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    bag = jnp.array([[0, PAD], [4, 3]])
    targets = jnp.array([[1, 4, PAD], [0, PAD, PAD]])
    out = jax.device_get(bag_ranking_stats(logits, bag, targets, k=2))
    # user 0: top-2 unrated = [1, 2] -> 1 hit of 2 targets; user 1: top-2 unrated = [2, 1] -> 0 hits
    assert out["hits"].tolist() == [1, 0] and out["n_targets"].tolist() == [2, 1]
    lse0 = np.log(np.exp(3.0) + np.exp(2.0))  # unrated non-targets of user 0: movies 2, 3
    expected0 = (np.logaddexp(lse0, 4.0) - 4.0) + (np.logaddexp(lse0, 1.0) - 1.0)
    np.testing.assert_allclose(out["loss_sum"][0], expected0, rtol=1e-5)


def test_validation_and_test_bags_exclude_their_targets(small_synthetic):
    from recjax.experiment import load_splits

    splits = load_splits(RunConfig(dataset="synthetic", split="random", seed=3))
    inputs = bag_inputs(splits)
    n = splits["train"].n_users
    for name in ("train", "val", "test"):
        assert inputs[name]["bag"].shape[0] == n
    train_pairs = set(zip(splits["train"].user, splits["train"].item))
    val = inputs["val"]
    for u in range(0, n, 97):
        bag = set(val["bag"][u][val["bag"][u] >= 0])
        assert bag == {i for (uu, i) in train_pairs if uu == u}
        assert not bag & set(val["targets"][u][val["targets"][u] >= 0])
    test_bag = inputs["test"]["bag"]
    assert (test_bag >= 0).sum() == len(splits["train"]) + len(splits["val"])
    capped = bag_inputs(splits, max_bag=5)
    assert capped["train"]["bag"].shape[1] == 5


def test_item_features(ml100k):
    genres, years = item_features(ml100k)
    assert genres.shape[0] == 1682 and years.shape == (1682,)
    assert genres.max() == 18 and (years >= 0).sum() == 1681  # one movie has no date


def test_invalid_settings_fail_early():
    with pytest.raises(ValueError, match="unknown negatives"):
        SoftmaxConfig(negatives="hard")
    with pytest.raises(ValueError, match="hidden_dims"):
        SoftmaxConfig(hidden_dims="32,x")
    with pytest.raises(ValueError, match="targets_per_user"):
        SoftmaxConfig(targets_per_user=0)


@pytest.mark.parametrize("negatives", ["full", pytest.param("in_batch", marks=pytest.mark.slow)])
def test_learns_the_planted_preferences(negatives):
    from recjax.data import synthetic_ratings
    from recjax.data.splits import holdout_split

    # the generator draws which pairs are rated from popularity alone; the liked pairs follow the factors
    data, _ = synthetic_ratings(400, 100, 16_000, rank=2, noise_std=0.3, factor_std=0.8, seed=7)
    liked = data.subset(data.rating > 3.5)
    first = holdout_split(liked, 0.1, seed=0)
    second = holdout_split(first.train, 0.1, seed=1)
    splits = {"train": second.train, "val": second.test, "test": first.test}
    run = RunConfig(model="softmax", epochs=30, batch_size=32, learning_rate=1e-2, quiet=True, patience=30)
    cfg = SoftmaxConfig(embedding_dim=16, hidden_dims="32", targets_per_user=4, negatives=negatives)
    inputs = softmax_inputs(cfg, splits)
    model = Model.split(build_softmax(cfg, splits["train"], seed=run.seed))
    evaluate = bag_validator(model, inputs)
    result = fit(model, inputs["train"], run, task="classification",
                 validate=lambda p: evaluate(p, "val", "val_"), monitor="val_loss")
    metrics = evaluate(result.params, "test", "test_")
    # popularity: the 10 most rated movies the user has not rated
    counts = np.bincount(splits["train"].item, minlength=data.n_items).astype(float)
    pop = []
    for u in range(data.n_users):
        targets = set(inputs["test"]["targets"][u][inputs["test"]["targets"][u] >= 0])
        if not targets:
            continue
        scores = counts.copy()
        scores[inputs["test"]["bag"][u][inputs["test"]["bag"][u] >= 0]] = -1
        pop.append(len(targets & set(np.argsort(-scores)[:10])) / 10)
    assert metrics["test_precision@10"] > 1.1 * np.mean(pop)
    assert metrics["test_loss"] < math.log(data.n_items)


def test_runs_through_the_experiment_and_saves_movie_embeddings(tmp_path, capsys):
    from recjax.experiment import run
    from recjax.report import print_run_summary

    result = run(RunConfig(model="softmax", dataset="synthetic", split="random", epochs=2, batch_size=128,
                             quiet=True, out=str(tmp_path / "run")), SoftmaxConfig(embedding_dim=8, hidden_dims="8"))
    m = result.metrics
    assert {"val_loss", "val_precision@10", "val_recall@10", "test_loss", "test_precision@10",
            "test_recall@10"} <= set(m)
    assert not any(k.startswith("train_precision") for k in m)
    saved = np.load(tmp_path / "run" / "embeddings.npz")
    assert saved["item_embeddings"].shape == (500, 8) and saved["user_embeddings"].shape == (1000, 8)
    print_run_summary(result)
    assert "test PRECISION@10" in capsys.readouterr().out
