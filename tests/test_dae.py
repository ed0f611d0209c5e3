"""Mult-DAE: shapes, the multinomial loss by hand, input dropout, ranking vectors, learning."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _bag_model import check_bag_shapes_and_invariance
from flax import nnx

from recjax.config import RunConfig
from recjax.data.jsonlines import PAD
from recjax.models.dae import DAE, DAEConfig, bag_logits, build_dae, dae_inputs
from recjax.train.loop import fit
from recjax.train.losses import TASK_LOSSES, masked_mean
from recjax.train.step import Model
from recjax.train.validation import bag_validator


def tiny(**kw) -> DAE:
    return DAE(DAEConfig(**{"dims": "8,4", **kw}), 6, rngs=nnx.Rngs(0))


def _loss(model: DAE, batch: dict) -> float:
    """The training core's data loss on ``batch`` (after augment)."""
    predictions = model(batch, train=True)
    per_example = TASK_LOSSES["classification"](predictions, batch["label"])
    return float(masked_mean(per_example, batch["weight"]))


def test_shapes_padding_and_order_invariance():
    check_bag_shapes_and_invariance(tiny(), n_items=6, dim=4)


def test_every_setting_changes_the_output():
    bag = jnp.array([[0, 3, 4]])
    reference = tiny()({"bag": bag})
    for kw in ({"dims": "8"}, {"dims": "8,4,4"}):
        assert not np.allclose(tiny(**kw)({"bag": bag}), reference), kw
    batch = {"bag": bag, "label": jnp.zeros(1), "weight": jnp.ones(1)}
    key = jax.random.key(1)
    thinned = {p: tiny(dropout=p).augment(batch, key) for p in (0.0, 0.5)}
    assert _loss(tiny(), thinned[0.0]) != _loss(tiny(), thinned[0.5])
    assert float(tiny(l2=0.1).penalty(batch)) > 0 and float(tiny().penalty(batch)) == 0


def test_bag_logits_give_the_multinomial_loss_and_its_gradient():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(0, 2, (3, 7)), jnp.float32)
    bag = jnp.array([[0, 4, 6], [2, PAD, PAD], [1, 3, PAD]])
    valid = (bag >= 0).reshape(-1).astype(jnp.float32)

    def via_core(z):
        ce = TASK_LOSSES["classification"](bag_logits(z, bag), jnp.zeros(9, jnp.int32))
        return jnp.sum(ce * valid)

    def direct(z):  # -sum over each bag of log softmax
        log_p = jax.nn.log_softmax(z, axis=1)
        return -jnp.sum(jnp.take_along_axis(log_p, jnp.clip(bag, 0), axis=1) * (bag >= 0))

    both = jax.jit(lambda z: (via_core(z), direct(z), jax.grad(via_core)(z), jax.grad(direct)(z)))
    loss_core, loss_direct, grad_core, grad_direct = both(logits)
    np.testing.assert_allclose(loss_core, loss_direct, rtol=1e-5)
    np.testing.assert_allclose(grad_core, grad_direct, rtol=1e-4, atol=1e-6)


def test_loss_equals_the_hand_computed_value():
    # zero input table: h = tanh(0) = 0, so the logits are the item biases [1, 0, 2]
    model = DAE(DAEConfig(dims="2", dropout=0.0), 3, rngs=nnx.Rngs(0))
    model.input_embedding[...] = jnp.zeros((3, 2))
    model.item_bias[...] = jnp.array([1.0, 0.0, 2.0])
    batch = model.augment({"bag": jnp.array([[0, 2, PAD]]), "label": jnp.zeros(1),
                           "weight": jnp.ones(1)}, jax.random.key(0))
    log_z = math.log(math.e + 1 + math.e ** 2)
    # mean over the bag's two movies of -log p_i
    np.testing.assert_allclose(_loss(model, batch), ((log_z - 1) + (log_z - 2)) / 2, rtol=1e-6)


def test_augment_drops_inputs_but_reconstructs_the_whole_bag():
    bag = jnp.array([[0, 1, 2, 3, 4, 5] * 20, [4, 5] + [PAD] * 118])
    batch = {"bag": bag, "label": jnp.zeros(2), "weight": jnp.array([1.0, 0.0])}
    out = tiny(dropout=0.5).augment(batch, jax.random.key(3))
    kept = np.asarray(out["bag"][0] >= 0)
    assert 0.35 < kept.mean() < 0.65
    np.testing.assert_array_equal(out["positives"], bag)
    weight = np.asarray(out["weight"]).reshape(2, -1)
    assert weight[0].sum() == 120 and weight[1].sum() == 0  # padding and weight-0 users never count
    np.testing.assert_allclose(out["scale"], [1 / (0.5 * math.sqrt(120)), 1 / (0.5 * math.sqrt(2))],
                               rtol=1e-6)
    # without dropout, training sees the evaluation input
    same = tiny(dropout=0.0)
    full = same.augment(batch, jax.random.key(3))
    np.testing.assert_array_equal(full["bag"], bag)
    np.testing.assert_allclose(same.user_embedding(full["bag"], full["scale"]),
                               same.user_embedding(bag), rtol=1e-5)


def test_ranking_vectors_reproduce_the_logits():
    model = tiny()
    model.item_bias[...] = jnp.arange(6.0)
    bag = np.array([[0, 3, PAD], [5, 1, 2]])
    users, items = model.embeddings({"bag": bag})
    assert users.shape == (2, 5) and items.shape == (6, 5)
    np.testing.assert_allclose(users @ items.T, model({"bag": jnp.asarray(bag)}),
                               rtol=1e-5, atol=1e-5)


def test_invalid_settings_fail_early():
    with pytest.raises(ValueError, match="dims"):
        DAEConfig(dims="")
    with pytest.raises(ValueError, match="dims"):
        DAEConfig(dims="200,x")
    with pytest.raises(ValueError, match="dropout"):
        DAEConfig(dropout=1.0)
    with pytest.raises(ValueError, match="l2"):
        DAEConfig(l2=-1.0)


def test_learns_the_planted_preferences():
    from recjax.data import synthetic_ratings
    from recjax.data.splits import holdout_split

    # which pairs are rated follows popularity alone; the liked pairs follow the factors
    data, _ = synthetic_ratings(400, 100, 16_000, rank=2, noise_std=0.3, factor_std=0.8, seed=7)
    liked = data.subset(data.rating > 3.5)
    first = holdout_split(liked, 0.1, seed=0)
    second = holdout_split(first.train, 0.1, seed=1)
    splits = {"train": second.train, "val": second.test, "test": first.test}
    run = RunConfig(model="dae", epochs=30, batch_size=32, learning_rate=1e-2, quiet=True, patience=30)
    cfg = DAEConfig(dims="16")
    inputs = dae_inputs(cfg, splits)
    model = Model.split(build_dae(cfg, splits["train"], seed=run.seed))
    evaluate = bag_validator(model, inputs)
    result = fit(model, inputs["train"], run, task="classification",
                 validate=lambda p: evaluate(p, "val", "val_"), monitor="val_loss")
    metrics = evaluate(result.params, "test", "test_")
    counts = np.bincount(splits["train"].item, minlength=data.n_items).astype(float)
    pop = []  # the 10 most rated movies the user has not rated
    for u in range(data.n_users):
        targets = set(inputs["test"]["targets"][u][inputs["test"]["targets"][u] >= 0])
        if not targets:
            continue
        scores = counts.copy()
        scores[inputs["test"]["bag"][u][inputs["test"]["bag"][u] >= 0]] = -1
        pop.append(len(targets & set(np.argsort(-scores)[:10])) / 10)
    assert metrics["test_precision@10"] > 1.1 * np.mean(pop)
    assert metrics["test_loss"] < math.log(data.n_items)


def test_runs_through_the_experiment_and_ranks_by_its_logits(tmp_path):
    from recjax.data import synthetic_ratings
    from recjax.data.splits import holdout_split
    from recjax.experiment import run
    from recjax.runs import Run

    data, _ = synthetic_ratings(200, 60, 4000, seed=1)
    first = holdout_split(data, 0.1, seed=0)
    second = holdout_split(first.train, 0.1, seed=1)
    splits = {"train": second.train, "val": second.test, "test": first.test}
    cfg, model_cfg = RunConfig(model="dae", epochs=2, batch_size=64, quiet=True,
                                 out=str(tmp_path / "run")), DAEConfig(dims="8")
    result = run(cfg, model_cfg, splits=splits)
    assert {"val_loss", "val_precision@10", "test_loss", "test_precision@10"} <= set(result.metrics)
    saved = np.load(tmp_path / "run" / "embeddings.npz")
    assert saved["item_embeddings"].shape == (60, 9)
    assert saved["user_embeddings"].shape == (200, 9)
    # recjax evaluate's scorer: user vectors of the train + validation bag . movie vectors
    scorer = Run.open(tmp_path / "run").scorer("dot")
    bag = dae_inputs(model_cfg, result.splits)["test"]["bag"]
    np.testing.assert_allclose(scorer.user_vectors @ scorer.item_vectors.T,
                               result.module({"bag": jnp.asarray(bag)}), rtol=1e-4, atol=1e-4)
