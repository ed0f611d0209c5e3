"""Sparse (row-wise) table updates (recjax.train.sparse): the same parameters as dense SGD and
adagrad for every family, lazy adam/adamw against a NumPy float64 reference, untouched rows
(and their optimiser state) never change, the same on a device mesh, bitwise resume."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recjax.config import RunConfig
from recjax.data import split_ratings, synthetic_ratings
from recjax.families import MODELS
from recjax.models.dnn import DNN, DNNConfig
from recjax.models.mf import MF, MFConfig
from recjax.train.loop import fit
from recjax.train.losses import TASK_LOSSES, masked_mean
from recjax.train.optim import make_optimizer, table_update_mode
from recjax.train.sparse import SparseOptimizer, lookup_groups, unique_rows
from recjax.train.step import Model, TrainState, make_epoch, make_train_step

TESTS = Path(__file__).parent
SMALL = {
    "mf": dict(embedding_dim=4, l2=0.01),
    "dnn": dict(embedding_dim=4, hidden_dims="4", input_dropout=0.0, dropout=0.0),
    "pair": dict(enc_dim=4, enc0_token_embedding_dim=4, enc1_token_embedding_dim=4, mlp_dim=4,
                 side_features=False, token_bias=True, l2=0.01),
    "softmax": dict(embedding_dim=4, hidden_dims="4"),
    "dae": dict(dims="4"),
}
# every family trained by gradients (the alternating least-squares ones have no optimiser)
GRADIENT_FAMILIES = sorted(name for name, spec in MODELS.items() if spec.trainer is fit)


@pytest.fixture(scope="module")
def parts():
    data, _ = synthetic_ratings(30, 24, 300, seed=1)
    return split_ratings(data, "random", seed=0)._asdict()


def _train(family, parts, mode, optimizer="sgd", epochs=2, model_values=None, **run):
    """(Model, final TrainState, optimiser) after ``epochs`` epochs of batch 16."""
    spec = MODELS[family]
    cfg = RunConfig(model=family, task=spec.tasks[0], optimizer=optimizer, learning_rate=0.05,
                    batch_size=16, epochs=epochs, table_updates=mode, **run)
    model_cfg = spec.config(**{**SMALL.get(family, {}), **(model_values or {})})
    model = Model.split(spec.build(model_cfg, parts["train"], task=cfg.task, seed=0))
    data = {k: jnp.asarray(v) for k, v in spec.examples(model_cfg, parts, task=cfg.task)["train"].items()}
    n = len(data["label"])
    tx = make_optimizer(cfg, -(-n // 16), frozenset(model.row_lookups))
    params = jax.tree.map(jnp.copy, model.params)
    state = TrainState(params, tx.init(params), jnp.int32(0), jax.random.key(3))
    epoch = make_epoch(make_train_step(model, tx, spec.loss or cfg.task), n, 16)
    for e in range(epochs):
        state, metrics = epoch(state, data, jax.random.key(e))
        assert np.isfinite(float(metrics["loss"]))
    return model, state, tx


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ----------------------------------------------------------------------------- pieces
def test_unique_rows_positions_and_groups():
    ids, (a, b) = unique_rows([jnp.array([[5, -1], [2, 5]]), jnp.array([9, 2])], size=4)
    assert ids.tolist() == [2, 5, 9, np.iinfo(np.int32).max]
    assert a.tolist() == [[1, -1], [0, 1]] and b.tolist() == [2, 0]
    groups = lookup_groups({("t0",): ("in0", "in1"), ("b0",): ("in0",), ("b1",): ("in1",), ("u",): ("user",)})
    assert groups == [(("in0", "in1"), (("b0",), ("b1",), ("t0",))), (("user",), (("u",),))]


def test_auto_is_sparse_where_exact_and_choices_are_checked():
    assert [table_update_mode(RunConfig(optimizer=o)) for o in ("sgd", "adagrad", "adam", "adamw")] == \
        ["sparse", "sparse", "dense", "dense"]
    assert table_update_mode(RunConfig(optimizer="adam", table_updates="sparse")) == "sparse"
    with pytest.raises(ValueError, match="table_updates"):
        RunConfig(table_updates="lazy")


def test_resume_with_another_mode_is_refused_by_the_settings_diff():
    from recjax.experiment import _settings_differences

    cfg, model_cfg = RunConfig(model="mf"), MFConfig()
    saved = {"train": dataclasses.asdict(dataclasses.replace(cfg, table_updates="dense")),
             "model": dataclasses.asdict(model_cfg)}
    assert _settings_differences(saved, cfg, model_cfg) == ["table_updates ('dense' -> 'auto')"]


# ----------------------------------------------------------------------------- exact rules
@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in ("pair", "dae", "softmax")
                                    else f for f in GRADIENT_FAMILIES])  # compiles of ~20 s
def test_sparse_sgd_equals_dense_sgd_for_every_family(parts, family):
    _, dense, _ = _train(family, parts, "dense")
    model, sparse, tx = _train(family, parts, "sparse")
    declared = {"mf": 4, "dnn": 2, "pair": 4, "dae": 1, "softmax": 0}[family]
    assert len(model.row_lookups) == declared  # softmax reads its tables whole: all dense
    assert isinstance(tx, SparseOptimizer) == bool(declared)
    assert _max_diff(dense.params, sparse.params) < 1e-5
    assert _max_diff(model.params, sparse.params) > 1e-3  # it trained


@pytest.mark.parametrize("family, values", [
    ("mf", dict(num_negatives=2)),  # binary, sampled negatives (augment) and duplicate rows
    pytest.param("pair", dict(enc1_network="enc0"), marks=pytest.mark.slow),  # one table for in0
    # and in1, plus per-side biases
    pytest.param("pair", dict(enc0_network="hcnn", enc1_network="hcnn", enc0_max_seq_len=2),
                 marks=pytest.mark.slow),
])
def test_sparse_sgd_equals_dense_for_variants(parts, family, values):
    run = {"task": "binary"} if family == "mf" else {}
    spec_task = MODELS[family].tasks
    if run:
        assert "binary" in spec_task
    _, dense, _ = _train_task(family, parts, "dense", values, run)
    _, sparse, _ = _train_task(family, parts, "sparse", values, run)
    assert _max_diff(dense.params, sparse.params) < 1e-5


def _train_task(family, parts, mode, values, run):
    if run.get("task") == "binary":  # the family's binary task
        spec = MODELS[family]
        cfg = RunConfig(model=family, task="binary", optimizer="sgd", learning_rate=0.05, batch_size=16,
                        epochs=2, table_updates=mode)
        model_cfg = spec.config(**{**SMALL[family], **values})
        model = Model.split(spec.build(model_cfg, parts["train"], task="binary", seed=0))
        data = {k: jnp.asarray(v) for k, v in spec.examples(model_cfg, parts, task="binary")["train"].items()}
        n = len(data["label"])
        tx = make_optimizer(cfg, -(-n // 16), frozenset(model.row_lookups))
        params = jax.tree.map(jnp.copy, model.params)
        state = TrainState(params, tx.init(params), jnp.int32(0), jax.random.key(3))
        epoch = make_epoch(make_train_step(model, tx, "binary"), n, 16)
        for e in range(2):
            state, _ = epoch(state, data, jax.random.key(e))
        return model, state, tx
    return _train(family, parts, mode, model_values=values)


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_adagrad_equals_optax_adagrad_clipping_included(parts, clip):
    """Lazy adagrad is exact; clipping sees the whole gradient's norm (0.05 clips every step)."""
    _, dense, _ = _train("dnn", parts, "dense", "adagrad", grad_clip=clip)
    model, sparse, tx = _train("dnn", parts, "sparse", "adagrad", grad_clip=clip)
    assert isinstance(tx, SparseOptimizer)
    assert _max_diff(dense.params, sparse.params) < 1e-5
    # the accumulators of the tables are the dense ones too
    dense_acc = optax.tree_utils.tree_get(dense.opt_state, "sum_of_squares")
    assert _max_diff(dense_acc["user_embedding"], _slot(sparse.opt_state[1], "sum_of_squares")["user_embedding"]) < 1e-5


def _slot(table_state, name):
    """The tables' ``name`` moments (optax's state field) in a sparse optimiser's table state."""
    return optax.tree_utils.tree_get(table_state, name)


# ----------------------------------------------------------------------------- lazy adam
def _reference_lazy_adam(model, params, batches, lr, weight_decay, adamw):
    """NumPy float64: dense parameters by Adam, table rows by lazy Adam (only the rows a
    batch looks up); the gradient is the dense one (jax.grad of the full tables)."""
    loss = TASK_LOSSES["regression"]

    def objective(p, batch):
        module = model.bind(p)
        data = masked_mean(loss(module(batch, train=True, rngs=nnx.Rngs(0)), batch["label"]), batch["weight"])
        return data + module.penalty(batch)

    grad = jax.jit(jax.grad(objective))
    flat = {k: np.asarray(v, np.float64) for k, v in _flatten(params).items()}
    mu = {k: np.zeros_like(v) for k, v in flat.items()}
    nu = {k: np.zeros_like(v) for k, v in flat.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t, batch in enumerate(batches, start=1):
        current = _unflatten({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()})
        g = {k: np.asarray(v, np.float64) for k, v in _flatten(grad(current, batch)).items()}
        for k in flat:
            field = {"user_embedding": "user", "item_embedding": "item"}.get(k)
            rows = np.unique(np.asarray(batch[field])) if field else slice(None)
            mu[k][rows] = b1 * mu[k][rows] + (1 - b1) * g[k][rows]
            nu[k][rows] = b2 * nu[k][rows] + (1 - b2) * g[k][rows] ** 2
            update = (mu[k][rows] / (1 - b1 ** t)) / (np.sqrt(nu[k][rows] / (1 - b2 ** t)) + eps)
            if adamw:
                update = update + weight_decay * flat[k][rows]
            flat[k][rows] = flat[k][rows] - lr * update
    return flat, mu, nu


def _flatten(tree, prefix=()):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, prefix + (key,)))
        else:
            out["/".join(map(str, prefix + (key,)))] = value
    return out


def _unflatten(flat):
    out: dict = {}
    for path, value in flat.items():
        keys = [int(k) if k.isdigit() else k for k in path.split("/")]
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return out


@pytest.mark.parametrize("optimizer, weight_decay", [("adam", 0.0), ("adamw", 0.1)])
def test_lazy_adam_matches_a_numpy_reference_with_duplicates(optimizer, weight_decay):
    """DNN (tables and dense layers), 5 steps of batches that repeat rows and leave rows
    2..9 of the users untouched."""
    model = Model.split(DNN(DNNConfig(embedding_dim=3, hidden_dims="4", input_dropout=0.0, dropout=0.0,
                                      l2=0.01, init_std=0.3), 10, 7, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    batches = [{"user": jnp.asarray([0, 0, 1, 0, 1, 1]), "item": jnp.asarray(rng.integers(0, 7, 6)),
                "label": jnp.asarray(rng.uniform(1, 5, 6), jnp.float32),
                "weight": jnp.asarray([1, 1, 1, 1, 1, 0], jnp.float32)} for _ in range(5)]
    batches[2]["item"] = jnp.asarray([3, 3, 3, 3, 3, 3])  # one row, six times
    cfg = RunConfig(optimizer=optimizer, learning_rate=0.05, weight_decay=weight_decay, table_updates="sparse")
    tx = make_optimizer(cfg, 5, frozenset(model.row_lookups))
    step = jax.jit(make_train_step(model, tx, "regression"))
    state = TrainState(model.params, tx.init(model.params), jnp.int32(0), jax.random.key(0))
    for batch in batches:
        state, _ = step(state, batch)
    want, mu, nu = _reference_lazy_adam(model, model.params, batches, 0.05, weight_decay, optimizer == "adamw")
    got = {k: np.asarray(v) for k, v in _flatten(state.params).items()}
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-4, atol=2e-6, err_msg=k)
    np.testing.assert_allclose(np.asarray(_slot(state.opt_state[1], "mu")["item_embedding"]), mu["item_embedding"],
                               rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(_slot(state.opt_state[1], "nu")["user_embedding"]), nu["user_embedding"],
                               rtol=2e-4, atol=1e-9)
    # rows never looked up never change, their moments stay zero
    assert np.array_equal(got["user_embedding"][2:], np.asarray(model.params["user_embedding"])[2:])
    assert not np.any(np.asarray(_slot(state.opt_state[1], "mu")["user_embedding"])[2:])
    assert not np.any(np.asarray(_slot(state.opt_state[1], "nu")["user_embedding"])[2:])
    assert np.all(np.asarray(_slot(state.opt_state[1], "nu")["user_embedding"])[:2] > 0)


# ----------------------------------------------------------------------------- mesh, resume
MESH_SCRIPT = r"""
import json, sys, jax, numpy as np
from flax import nnx
from recjax.config import RunConfig
from recjax.data import synthetic_ratings
from recjax.models.mf import MF, MFConfig
from recjax.train.loop import fit
from recjax.train.sharding import Layout, make_mesh
from recjax.train.step import Model
data, _ = synthetic_ratings(41, 23, 400, seed=2)  # rows not a multiple of 2: padded tables
train = {"user": data.user, "item": data.item, "label": data.rating}
out = {}
for optimizer in ("sgd", "adam"):
    cfg = RunConfig(optimizer=optimizer, learning_rate=0.05, batch_size=32, epochs=2, quiet=True,
                    table_updates="sparse")
    results = {}
    for mesh in ((1, 1), (2, 2)):
        model = Model.split(MF(MFConfig(embedding_dim=4), 41, 23, rngs=nnx.Rngs(0)))
        layout = Layout(make_mesh(*mesh), model)
        results[mesh] = fit(model, train, cfg, task="regression", validate=None, monitor=None,
                            layout=layout).params
    out[optimizer] = max(float(np.max(np.abs(results[(1, 1)][k] - results[(2, 2)][k])))
                         for k in results[(1, 1)])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_sparse_updates_on_a_2x2_mesh_equal_one_device():
    env = {**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(TESTS.parent)}
    done = subprocess.run([sys.executable, "-c", MESH_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    diffs = json.loads(done.stdout.strip().splitlines()[-1])
    assert diffs["sgd"] < 1e-5 and diffs["adam"] < 1e-5, diffs


@pytest.mark.parametrize("optimizer", ["sgd", pytest.param("adam", marks=pytest.mark.slow)])
def test_resume_through_fit_is_bitwise_identical(tmp_path, optimizer):
    """2 epochs, then resumed to 4, equal 4 straight (sparse tables, lazy adam's slots
    and all, restored from the checkpoint)."""
    from recjax.train.checkpoint import Checkpoints
    from recjax.train.loop import fit

    data, _ = synthetic_ratings(40, 30, 500, seed=4)
    train = {"user": data.user, "item": data.item, "label": data.rating}
    cfg = RunConfig(optimizer=optimizer, learning_rate=0.05, batch_size=64, epochs=4, quiet=True,
                    table_updates="sparse")

    def run(cfg, folder, resume=False):
        model = Model.split(MF(MFConfig(embedding_dim=4), 40, 30, rngs=nnx.Rngs(0)))
        return fit(model, train, cfg, task="regression", validate=None, monitor=None,
                   checkpoints=Checkpoints(folder), resume=resume, identity={"t": 1})

    full = run(cfg, tmp_path / "full")
    run(dataclasses.replace(cfg, epochs=2), tmp_path / "cut")
    resumed = run(cfg, tmp_path / "cut", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for k in full.params:
        assert np.array_equal(full.params[k], resumed.params[k]), k
