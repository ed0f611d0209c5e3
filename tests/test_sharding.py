"""Training on a device mesh: row-sharded tables, data-parallel batches, checkpoints across meshes.

The test process has one CPU device; the multi-device checks run tests/_mesh_worker.py
once in a subprocess with 8 virtual devices and assert on its JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from recjax.config import RunConfig, parse_mesh
from recjax.models.mf import MF, MFConfig
from recjax.train.sharding import MODEL, Layout, make_mesh
from recjax.train.step import Model

TESTS = Path(__file__).parent
TOLERANCE = 1e-5  # float32 sums in another order


def virtual_devices_env(n: int) -> dict[str, str]:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
            "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(TESTS.parent)}


@pytest.fixture(scope="module")
def mesh_report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("meshes")
    done = subprocess.run([sys.executable, str(TESTS / "_mesh_worker.py"), str(out)],
                          env=virtual_devices_env(8), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_worker_saw_eight_devices(mesh_report):
    assert mesh_report["devices"] == 8


@pytest.mark.parametrize("case", ["mf@8x1", "mf@4x2", "mf@2x4", "pair@4x2", "dnn@4x2", "softmax@4x2"])
def test_sharded_training_equals_single_device(mesh_report, case):
    result = mesh_report["models"][case]
    assert result["param_diff"] < TOLERANCE
    assert result["metric_diff"] < TOLERANCE


@pytest.mark.parametrize("model, tables", [
    ("mf", ["item_bias", "item_embedding", "user_bias", "user_embedding"]),
    ("pair", ["encoder0/table/embedding", "encoder1/table/embedding"]),
    ("dnn", ["item_embedding", "user_embedding"]),
    ("softmax", ["genre_embedding", "movie_embedding", "year_embedding"]),
])
def test_every_model_marks_its_embedding_tables(mesh_report, model, tables):
    assert mesh_report["models"][f"{model}@4x2"]["tables"] == tables


def test_tables_are_written_row_sharded(mesh_report):
    assert mesh_report["stored_specs"] == {"user_embedding": [MODEL, None], "item_embedding": [MODEL, None]}


def test_checkpoint_restores_onto_another_mesh(mesh_report):
    # written on 4x2 (301 users padded to 302), restored on 2x4: padded to 304, 4 rows groups
    users, user_shard, n_devices = mesh_report["restored_on_2x4"]["user_embedding"]
    assert users == [304, 8] and user_shard == [76, 8] and n_devices == 8
    items, item_shard, _ = mesh_report["restored_on_2x4"]["item_embedding"]
    assert items == [160, 8] and item_shard == [40, 8]


def test_run_trained_on_a_mesh_reloads_on_one_device(mesh_report):
    assert mesh_report["explored_on_one_device"] == 0.0


@pytest.mark.parametrize("case", ["4x2->2x4", "2x4->single"])
def test_interrupted_run_resumes_on_another_mesh(mesh_report, case):
    result = mesh_report["resume"][case]
    assert result["epochs"] == 3
    assert result["param_diff"] < TOLERANCE


# ----------------------------------------------------------------------------- one device
@pytest.mark.parametrize("spec, shape", [("4x2", (4, 2)), ("8X1", (8, 1)), (" 1x8 ", (1, 8))])
def test_parse_mesh(spec, shape):
    assert parse_mesh(spec) == shape


@pytest.mark.parametrize("spec", ["4", "4x", "0x2", "2x-1", "axb", "2x2x2"])
def test_parse_mesh_rejects_malformed(spec):
    with pytest.raises(ValueError, match="DATAxMODEL"):
        parse_mesh(spec)


def test_config_checks_the_mesh():
    with pytest.raises(ValueError, match="DATAxMODEL"):
        RunConfig(mesh="four")
    assert RunConfig(mesh="2x2").mesh == "2x2"


def test_mesh_larger_than_the_devices_is_a_clear_error():
    with pytest.raises(ValueError, match="needs 16 devices.*xla_force_host_platform_device_count"):
        make_mesh(4, 4)


@pytest.fixture(scope="module")
def mf_model() -> Model:
    return Model.split(MF(MFConfig(embedding_dim=3), 5, 7, rngs=nnx.Rngs(0)))


def test_layout_pads_tables_only_and_to_host_removes_padding(mf_model):
    layout = Layout(make_mesh(1, 1), mf_model)
    layout.row_multiple = 4  # as on a model axis of 4
    padded = layout.pad(mf_model.params)
    assert padded["user_embedding"].shape == (8, 3) and padded["item_bias"].shape == (8,)
    np.testing.assert_array_equal(padded["user_embedding"][5:], 0.0)
    host = layout.to_host(padded)
    for name, value in mf_model.params.items():
        np.testing.assert_array_equal(host[name], value)


def test_bind_drops_padding_rows(mf_model):
    layout = Layout(make_mesh(1, 1), mf_model)
    layout.row_multiple = 4
    batch = {"user": np.array([0, 4]), "item": np.array([6, 1])}
    want = mf_model.bind(mf_model.params)(batch)
    module = mf_model.bind(layout.pad(mf_model.params))
    assert module.user_embedding.shape == (5, 3)
    np.testing.assert_allclose(module(batch), want)


def test_optimizer_moments_follow_their_tables(mf_model):
    import optax

    layout = Layout(make_mesh(1, 1), mf_model)
    opt_state = jax.eval_shape(optax.adam(0.1).init, mf_model.params)
    specs = [s.spec for s in jax.tree.leaves(layout.shardings(opt_state))]
    # adam's step count (replicated), then mu and nu of 2 tables and 2 bias vectors each
    assert sum(spec == P() for spec in specs) == 1
    assert sum(spec == P(MODEL, None) for spec in specs) == 4
    assert sum(spec == P(MODEL) for spec in specs) == 4


def test_data_is_padded_to_the_data_axis(mf_model):
    layout = Layout(make_mesh(1, 1), mf_model)
    placed = layout.place_data({"label": np.arange(5, dtype=np.float32)})
    np.testing.assert_array_equal(np.asarray(placed["label"]), np.arange(5))
