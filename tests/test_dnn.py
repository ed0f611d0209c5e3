"""The fast.ai deep model: layout, dropout, L2, learning, the CLI."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recjax.config import RunConfig
from recjax.families import MODELS
from recjax.models.base import parse_dims, rating_inputs
from recjax.models.dnn import DNN, DNNConfig
from recjax.train.loop import fit
from recjax.train.step import Model, make_predict

BATCH = {"user": jnp.array([0, 1, 2, 1]), "item": jnp.array([3, 0, 4, 4]), "weight": jnp.ones(4)}


def model(**kw) -> DNN:
    return DNN(DNNConfig(**{"embedding_dim": 4, "hidden_dims": "6", **kw}), 3, 5, global_mean=3.5,
               rngs=nnx.Rngs(0))


def test_layout_and_output_bias():
    m = model(hidden_dims="6,5")
    assert [layer.kernel.shape for layer in m.hidden] == [(8, 6), (6, 5)]
    assert m.out.kernel.shape == (5, 1) and float(m.out.bias[0]) == 3.5
    assert m(BATCH).shape == (4,)
    assert DNN(DNNConfig(), 3, 5, global_mean=3.5, task="binary", rngs=nnx.Rngs(0)).out.bias[0] == 0


def test_forward_is_concat_dense_relu_dense():
    m = model()
    x = jnp.concatenate([m.user_embedding[BATCH["user"]], m.item_embedding[BATCH["item"]]], -1)
    expected = m.out(jnp.maximum(m.hidden[0](x), 0))[:, 0]
    np.testing.assert_allclose(m(BATCH), expected, rtol=1e-6)


def test_dropout_only_in_training():
    m = model()
    np.testing.assert_allclose(m(BATCH), m(BATCH, train=False))
    a = m(BATCH, train=True, rngs=nnx.Rngs(dropout=1))
    b = m(BATCH, train=True, rngs=nnx.Rngs(dropout=2))
    assert not np.allclose(a, b)
    off = model(input_dropout=0.0, dropout=0.0)
    np.testing.assert_allclose(off(BATCH, train=True, rngs=nnx.Rngs(dropout=1)), off(BATCH), rtol=1e-6)


def test_every_hyper_parameter_changes_the_result():
    reference = model()(BATCH)
    for kw in ({"embedding_dim": 3}, {"hidden_dims": "7"}, {"hidden_dims": ""}, {"init_std": 0.5}):
        assert not np.allclose(model(**kw)(BATCH), reference), kw
    train = model()(BATCH, train=True, rngs=nnx.Rngs(dropout=1))
    for kw in ({"input_dropout": 0.1}, {"dropout": 0.2}):
        assert not np.allclose(model(**kw)(BATCH, train=True, rngs=nnx.Rngs(dropout=1)), train), kw
    m = model(l2=0.5)
    rows = jnp.sum(m.user_embedding[BATCH["user"]] ** 2, -1) + jnp.sum(m.item_embedding[BATCH["item"]] ** 2, -1)
    np.testing.assert_allclose(m.penalty(BATCH), 0.5 * jnp.mean(rows), rtol=1e-6)
    assert float(model(l2=0.0).penalty(BATCH)) == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden_dims="70,a"), "hidden_dims"), (dict(hidden_dims="0"), "hidden_dims"),
    (dict(dropout=1.0), "dropout"), (dict(input_dropout=-0.1), "input_dropout"),
    (dict(embedding_dim=0), "embedding_dim"), (dict(l2=-1.0), "l2"),
])
def test_invalid_settings_fail_early(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DNNConfig(**kwargs)


def test_parse_dims():
    assert parse_dims("") == () and parse_dims("64, 32") == (64, 32)


def test_learns_the_planted_ratings(small_synthetic):
    from recjax.data.splits import holdout_split

    data, truth = small_synthetic
    split = holdout_split(data, 0.15, seed=0)
    run = RunConfig(model="dnn", epochs=30, batch_size=256, learning_rate=3e-3, quiet=True, patience=3)
    cfg = DNNConfig(embedding_dim=16, hidden_dims="32", input_dropout=0.1, dropout=0.2, l2=0.01)
    m = Model.split(MODELS["dnn"].build(cfg, split.train, seed=run.seed))
    predict = make_predict(m, chunk=4096)
    test = {k: jnp.asarray(v) for k, v in rating_inputs(split.test).items()}

    def validate(params):
        return {"val_rmse": float(np.sqrt(np.mean((np.asarray(predict(params, test)) - split.test.rating) ** 2)))}

    result = fit(m, rating_inputs(split.train), run, task="regression", validate=validate,
                 monitor="val_rmse")
    global_rmse = float(np.sqrt(np.mean((split.test.rating - split.train.rating.mean()) ** 2)))
    floor = truth.noise_floor_rmse(split.test)
    assert validate(result.params)["val_rmse"] < global_rmse - 0.5 * (global_rmse - floor)


def test_trains_through_the_command_line(tmp_path, capsys):
    from recjax.cli import main

    out = tmp_path / "run"
    status = main(["train", "--model", "dnn", "--dataset", "synthetic", "--split", "random", "--epochs", "1",
                   "--hidden-dims", "8", "--embedding-dim", "4", "--task", "binary", "--quiet", "--out", str(out)])
    assert status == 0 and (out / "embeddings.npz").is_file()
    assert dataclasses.asdict(DNNConfig(hidden_dims="8", embedding_dim=4)).items() <= \
        __import__("json").loads((out / "config.json").read_text())["model"].items()
