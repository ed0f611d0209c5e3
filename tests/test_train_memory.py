"""Memory checks of a training run, from shapes alone: what is available, what a state
and an epoch need, and the one-line refusals (fit's use of them: test_train_loop.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recjax.train.memory as memory
from recjax.train.memory import (
    abstract_params,
    available_memory,
    check_epoch_memory,
    check_training_memory,
    format_bytes,
    host_available_memory,
    tree_bytes,
)


def test_format_bytes():
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(22.1 * 2**30) == "22.1 GiB"
    assert format_bytes(3 * 2**50) == "3072.0 TiB"


def test_meminfo_and_cgroup_parsing(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemFree:  1000 kB\nMemAvailable:   23175984 kB\n")
    assert memory._meminfo_available(str(meminfo)) == 23175984 * 1024
    assert memory._meminfo_available(str(tmp_path / "absent")) is None
    (tmp_path / "memory.max").write_text("8589934592\n")
    (tmp_path / "memory.current").write_text("1073741824\n")
    assert memory._cgroup_available(str(tmp_path)) == 7 << 30
    (tmp_path / "memory.max").write_text("max\n")
    assert memory._cgroup_available(str(tmp_path)) is None
    assert memory._cgroup_available(str(tmp_path / "absent")) is None


def test_host_memory_is_the_smaller_of_meminfo_and_the_cgroup_else_sysconf(monkeypatch):
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 20 << 30)
    monkeypatch.setattr(memory, "_cgroup_available", lambda: 4 << 30)
    assert host_available_memory() == 4 << 30
    monkeypatch.setattr(memory, "_meminfo_available", lambda: None)
    monkeypatch.setattr(memory, "_cgroup_available", lambda: None)
    assert host_available_memory() > 0  # sysconf's physical memory


def test_available_memory_of_cpu_and_of_an_accelerator():
    free, where = available_memory()
    assert where == "this machine" and (free is None or free > 0)

    class Device:
        platform = "gpu"

        def __init__(self, stats):
            self.stats = stats

        def memory_stats(self):
            return self.stats

        def __str__(self):
            return "cuda:0"

    assert available_memory(Device({"bytes_limit": 10 << 30, "bytes_in_use": 3 << 30})) == (7 << 30, "device cuda:0")
    assert available_memory(Device(None)) == (None, "device cuda:0")


def test_tree_bytes_of_shapes_and_per_device_shares():
    tree = {"a": jax.ShapeDtypeStruct((10, 4), jnp.float32), "b": np.zeros(3, np.int64),
            "key": jax.random.key(0)}
    assert tree_bytes(tree) == 160 + 24 + 8
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    assert tree_bytes(tree, jax.tree.map(lambda _: sharding, tree)) == 160 + 24 + 8


def _mf_builder(dim):
    from flax import nnx

    from recjax.models.mf import MF, MFConfig

    return lambda: MF(MFConfig(embedding_dim=dim), 943, 1682, rngs=nnx.Rngs(0))


def test_abstract_params_allocate_nothing_and_an_impossible_dim_is_refused():
    """--embedding-dim 100000000 on ml-100k: 262.5e9 parameters (1 TiB of float32), three
    copies with adam; refused from the shapes, before a byte is allocated."""
    params = abstract_params(_mf_builder(100_000_000))
    assert params["user_embedding"].shape == (943, 100_000_000)
    assert isinstance(params["user_embedding"], jax.ShapeDtypeStruct)
    with pytest.raises(ValueError) as info:
        check_training_memory(params, optimizer="adam", data_bytes=90570 * 12,
                              available=(int(22.1 * 2**30), "this machine"))
    message = str(info.value)
    assert message.startswith("training needs about 2.9 TiB for its parameters and adam state (")
    assert "float32 parameters x 3: the parameters and adam's 2 moment copies" in message
    assert "the largest, item_embedding [1682, 100000000]" in message
    assert message.endswith("this machine has 22.1 GiB available; lower --embedding-dim")
    assert "\n" not in message
    with pytest.raises(ValueError, match=r"x 1: the parameters;"):
        check_training_memory(params, optimizer="sgd", available=(1 << 30, "this machine"))
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        check_training_memory(params, optimizer="lion")


def test_a_state_that_fits_passes_and_the_optimizer_state_counts_exactly():
    params = abstract_params(_mf_builder(64))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    opt_state = jax.eval_shape(optax.adam(1e-3).init, params)
    need = check_training_memory(params, optimizer="adam", opt_state=opt_state, data_bytes=1000,
                                 available=(1 << 30, "this machine"))
    assert need == 3 * 4 * n + 4 + 1000  # params, two moments, adam's step count; data
    assert check_training_memory(params, optimizer="adam", available=(None, "this machine")) == 3 * 4 * n


def test_an_epoch_whose_working_memory_cannot_fit_is_refused():
    def epoch(table, rows):
        return jnp.sum(table[rows] ** 2)

    compiled = jax.jit(epoch).lower(jax.ShapeDtypeStruct((100, 64), jnp.float32),
                                    jax.ShapeDtypeStruct((10_000_000,), jnp.int32)).compile()
    need = check_epoch_memory(compiled, batch_size=1024, n_examples=90570, available=(1 << 40, "this machine"))
    assert need is None or need >= 10_000_000 * 64 * 4 * 0.5  # XLA's account of the gathered rows
    if need is None:
        pytest.skip("this backend reports no memory analysis")
    with pytest.raises(ValueError, match=r"^batch_size=1000000000 exceeds the 90570 training examples; "
                                         r"use at most 90570 \(or 0 for full batch\)"):
        check_epoch_memory(compiled, batch_size=1_000_000_000, n_examples=90570,
                           available=(1 << 20, "this machine"))
    with pytest.raises(ValueError, match=r"^one training epoch needs about .* of working memory .*batches of "
                                         r"1024\); device cuda:0 has 1.0 MiB available; lower --batch-size"):
        check_epoch_memory(compiled, batch_size=1024, n_examples=90570, available=(1 << 20, "device cuda:0"))
    # two CPU devices drawing on one host need twice as much
    assert check_epoch_memory(compiled, batch_size=1024, n_examples=90570, n_devices=2,
                              available=(1 << 40, "this machine")) == 2 * need

    class NoAnalysis:
        def memory_analysis(self):
            raise NotImplementedError

    assert check_epoch_memory(NoAnalysis(), batch_size=1, n_examples=1, available=(1, "x")) is None
