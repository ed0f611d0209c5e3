"""Training throughput: one compiled train step and one compiled epoch per model.

``test_table_updates`` compares one SGD epoch with dense and sparse (row-wise)
table updates (``RunConfig.table_updates``) in the same run: MF at ml-20m's
catalogue with 2M ratings (batch 1,024 and 16,384), DNN, pair and Mult-DAE at an
ml-1m-like shape, with examples/s and XLA's peak working memory of the epoch
(``compiled.memory_analysis()``: temporaries beyond the donated state and data).

Full run (one ml-100k-shaped and one ml-20m-shaped synthetic set), then the table::

    python -m pytest benchmarks/test_bench_training.py --benchmark-enable \
        --benchmark-json=/tmp/training.json -q
    python benchmarks/training_report.py /tmp/training.json

The data are the seeded synthetic generator's (planted low-rank truth), shaped like
ml-100k (943 users, 1,682 items, 100k ratings) and ml-20m (138,493 users, 26,744
items, 20M ratings); ``RECJAX_BENCH_SIZES=ml100k`` limits a full run to the small
one. Without ``--benchmark-enable`` or ``--benchmark-only`` (README's test command)
everything runs once on a tiny set, as a smoke test. Compilation happens before the timer starts and is
recorded in ``extra_info`` (``compile_s``), with examples per step or epoch and the
peak resident memory one call added. Every benchmark checks that training works:
finite losses, parameters that moved, and (epochs) a training loss that went down.
"""

from __future__ import annotations

import os
import time
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _common import full_mode, peak_extra_mib

from recjax.config import RunConfig
from recjax.data.splits import holdout_split
from recjax.data.synthetic import synthetic_ratings
from recjax.families import MODELS, make_configs
from recjax.train.optim import make_optimizer
from recjax.train.step import Model, TrainState, batch_layout, make_epoch, make_train_step

SHAPES = {  # name: (users, items, ratings)
    "ml100k": (943, 1_682, 100_000),
    "ml20m": (138_493, 26_744, 20_000_000),
    "smoke": (120, 80, 2_000),
    # the table-update benchmark: ml-20m's catalogue with 2M ratings, and a moderate one
    "ml20m-2m": (138_493, 26_744, 2_000_000),
    "ml1m": (6_040, 3_706, 1_000_000),
}
# Per shape, per model: the RunConfig overrides and model settings benchmarked.
# ml-100k uses each model's recommended settings (README's accuracy runs); the
# ml-20m shape uses a batch of 16,384 and 64 dims, what one would train it with on
# this 2-core machine (dense embedding gradients cost O(table) per step).
SETTINGS = {
    "ml100k": {name: ({}, {}) for name in MODELS},
    "ml20m": {
        "mf": ({"batch_size": 16_384}, {"embedding_dim": 64}),
        "dnn": ({"batch_size": 16_384}, {"embedding_dim": 64}),
        "pair": ({"batch_size": 16_384}, {"enc0_token_embedding_dim": 64,
                                            "enc1_token_embedding_dim": 64, "enc_dim": 64}),
        "softmax": ({"batch_size": 1_024}, {"embedding_dim": 64, "max_bag": 200}),
    },
}
SETTINGS["smoke"] = {name: ({"batch_size": 64}, {}) for name in MODELS}
DEVICE = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind}


def shapes(config) -> list[str]:
    """The data shapes to run: ``smoke`` alone, or ``$RECJAX_BENCH_SIZES`` in full mode."""
    if not full_mode(config):
        return ["smoke"]
    names = os.environ.get("RECJAX_BENCH_SIZES", "ml100k,ml20m").split(",")
    unknown = [n for n in names if n not in SETTINGS or n == "smoke"]
    if unknown:
        raise ValueError(f"RECJAX_BENCH_SIZES: unknown {unknown}; use ml100k and/or ml20m")
    return names


@cache
def splits(shape: str) -> dict:
    n_users, n_items, n_ratings = SHAPES[shape]
    data, _ = synthetic_ratings(n_users, n_items, n_ratings, seed=0)
    rest = holdout_split(data, 0.1, seed=0)
    train_val = holdout_split(rest.train, 0.05, seed=1)
    return {"train": train_val.train, "val": train_val.test, "test": rest.test}


@cache
def setup(model: str, shape: str):
    """(train step, jitted epoch, fresh-state factory, device arrays, batch size,
    training examples) for one case; built once per case."""
    train_over, model_values = SETTINGS[shape][model]
    cfg, model_cfg = make_configs(model, train_over, model_values)
    spec = MODELS[model]
    parts = splits(shape)
    module = spec.build(model_cfg, parts["train"], task=cfg.task, seed=cfg.seed)
    net = Model.split(module)
    arrays = spec.examples(model_cfg, parts, task=cfg.task, binary_threshold=cfg.binary_threshold)["train"]
    data = {k: jnp.asarray(v) for k, v in arrays.items()}
    n = len(arrays["label"])
    size, steps = batch_layout(n, cfg.batch_size)
    tx = make_optimizer(cfg, steps)
    step = make_train_step(net, tx, spec.loss or cfg.task)

    def fresh_state() -> TrainState:
        params = jax.tree.map(jnp.array, net.params)
        return TrainState(params, tx.init(params), jnp.int32(0), jax.random.key(cfg.seed))

    return step, make_epoch(step, n, cfg.batch_size), fresh_state, data, size, n


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        metafunc.parametrize("shape", shapes(metafunc.config))


def _block(tree):
    return jax.block_until_ready(tree)


def _moved(before: dict, after: dict) -> bool:
    return any(bool(jnp.any(a != b)) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


@pytest.mark.parametrize("model", list(MODELS))
def test_train_step(benchmark, model, shape):
    step, _, fresh_state, data, size, _ = setup(model, shape)
    batch = {k: v[:size] for k, v in data.items()}
    batch["weight"] = batch.get("weight", jnp.ones(size, jnp.float32))
    state = fresh_state()
    start = time.perf_counter()
    compiled = jax.jit(step).lower(state, batch).compile()
    compile_s = time.perf_counter() - start

    new_state, metrics = _block(compiled(state, batch))
    assert np.isfinite(float(metrics["loss"])) and _moved(state.params, new_state.params)
    benchmark.pedantic(lambda: _block(compiled(state, batch)), rounds=5 if shape != "smoke" else 1,
                       warmup_rounds=1, iterations=1)
    benchmark.group = f"train step, {shape}"
    benchmark.extra_info.update(model=model, shape=shape, kind="step", examples=size, **DEVICE,
                                compile_s=compile_s,
                                peak_mib=peak_extra_mib(lambda: _block(compiled(state, batch))))


def _epoch_runner(epoch, fresh_state, data):
    """(compiled epoch, compile seconds, holder of the state and the losses, the initial
    parameters, ``one_epoch()`` that runs the compiled epoch once on the holder's state)."""
    key = jax.random.key(1)
    start = time.perf_counter()
    compiled = epoch.lower(fresh_state(), data, key).compile()
    compile_s = time.perf_counter() - start
    holder = {"state": fresh_state(), "losses": []}
    initial = jax.tree.map(jnp.array, holder["state"].params)

    def one_epoch():
        holder["state"], metrics = _block(compiled(holder["state"], data, key))
        holder["losses"].append(float(metrics["data_loss"]))

    return compiled, compile_s, holder, initial, one_epoch


@pytest.mark.parametrize("model", list(MODELS))
def test_train_epoch(benchmark, model, shape):
    _, epoch, fresh_state, data, _, n = setup(model, shape)
    compiled, compile_s, holder, initial, one_epoch = _epoch_runner(epoch, fresh_state, data)
    one_epoch()  # untimed warm-up, also the first loss
    rounds = 3 if shape == "ml100k" else 1
    benchmark.pedantic(one_epoch, rounds=rounds, iterations=1)
    losses = holder["losses"]
    assert np.all(np.isfinite(losses)) and _moved(initial, holder["state"].params)
    assert losses[-1] < losses[0], f"training loss did not go down: {losses}"
    benchmark.group = f"train epoch, {shape}"
    benchmark.extra_info.update(model=model, shape=shape, kind="epoch", examples=n, **DEVICE,
                                compile_s=compile_s, peak_mib=peak_extra_mib(one_epoch))


# (model, shape, batch size, model settings): one SGD epoch, dense vs sparse table updates
TABLE_CASES = [
    ("mf", "ml20m-2m", 1_024, {"embedding_dim": 64}),
    ("mf", "ml20m-2m", 16_384, {"embedding_dim": 64}),
    ("dnn", "ml1m", 1_024, {"embedding_dim": 64}),
    ("pair", "ml1m", 1_024, {"enc0_token_embedding_dim": 64, "enc1_token_embedding_dim": 64,
                             "enc_dim": 64, "side_features": False}),
    ("dae", "ml1m", 64, {}),
]


def _peak_bytes(compiled) -> int:
    """XLA's working memory of a compiled call beyond its inputs (temporaries plus
    outputs that do not reuse a donated input)."""
    stats = compiled.memory_analysis()
    return int(stats.temp_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
@pytest.mark.parametrize("case", range(len(TABLE_CASES)),
                         ids=[f"{m}-{s}-b{b}" for m, s, b, _ in TABLE_CASES])
def test_table_updates(benchmark, request, case, mode):
    model, shape, batch_size, model_values = TABLE_CASES[case]
    if not full_mode(request.config):
        shape, batch_size = "smoke", 64
    spec = MODELS[model]
    _, model_cfg = make_configs(model, {}, model_values)
    cfg = RunConfig(model=model, task=spec.tasks[0], optimizer="sgd", learning_rate=0.05,
                    batch_size=batch_size, epochs=1, table_updates=mode)
    parts = splits(shape)
    net = Model.split(spec.build(model_cfg, parts["train"], task=cfg.task, seed=0))
    arrays = spec.examples(model_cfg, parts, task=cfg.task)["train"]
    data = {k: jnp.asarray(v) for k, v in arrays.items()}
    n = len(arrays["label"])
    tx = make_optimizer(cfg, batch_layout(n, batch_size)[1], frozenset(net.row_lookups))
    epoch = make_epoch(make_train_step(net, tx, spec.loss or cfg.task), n, batch_size)

    def fresh_state() -> TrainState:
        params = jax.tree.map(jnp.array, net.params)
        return TrainState(params, tx.init(params), jnp.int32(0), jax.random.key(0))

    compiled, compile_s, holder, initial, one_epoch = _epoch_runner(epoch, fresh_state, data)
    benchmark.pedantic(one_epoch, rounds=1, iterations=1, warmup_rounds=0)
    assert np.all(np.isfinite(holder["losses"])) and _moved(initial, holder["state"].params)
    benchmark.group = f"table updates, {shape}"
    benchmark.extra_info.update(model=model, shape=shape, kind="table_updates", mode=mode,
                                batch_size=batch_size, examples=n, **DEVICE, compile_s=compile_s,
                                sparse_tables=len(net.row_lookups) if mode == "sparse" else 0,
                                peak_bytes=_peak_bytes(compiled),
                                state_bytes=sum(x.nbytes for x in jax.tree.leaves(fresh_state()[:2])))
