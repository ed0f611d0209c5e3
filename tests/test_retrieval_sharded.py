"""recjax.retrieval.sharded: sharded retrieval equals unsharded retrieval.

Multi-device meshes need XLA's forced host device count, which must be set before
JAX starts, so one subprocess (this file run as a script, with 8 CPU devices) runs
every mesh case and prints JSON; the tests assert on it.  Each case compares with
the float64 NumPy reference (``topk(..., backend="numpy")``): ids exactly, scores
within float32 rounding.  Small-integer data makes dot and L2 exact, so there the
many exact ties must be broken by the lower id, across shards too.  Validation and
a 1-device mesh run in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from recjax.retrieval import topk

N_ITEMS, DIM, N_QUERIES = 61, 4, 9  # 61 rows: not a multiple of 2, 4 or 8 shards


def int_data(rng, n, offset=0.0):
    return (rng.integers(-3, 4, size=(n, DIM)) + offset).astype(np.float32)


def problem(seed, kind):
    """(queries, items): small integers ("int"), integers + 1e6 ("offset"), or Gaussian."""
    rng = np.random.default_rng(seed)
    if kind == "gauss":
        return (rng.standard_normal((N_QUERIES, DIM)).astype(np.float32),
                rng.standard_normal((N_ITEMS, DIM)).astype(np.float32))
    offset = 1e6 if kind == "offset" else 0.0
    q, x = int_data(rng, N_QUERIES, offset), int_data(rng, N_ITEMS, offset)
    x[40:45] = x[0:5]  # equal rows on different shards
    return q, x


def exclusions(seed):
    rng = np.random.default_rng(seed)
    exclude = sp.csr_array(sp.random(N_QUERIES, N_ITEMS, density=0.1, random_state=rng))
    return dict(exclude=exclude, exclude_items=rng.random(N_ITEMS) < 0.1,
                exclude_self=rng.integers(0, N_ITEMS, N_QUERIES))


# (mesh shape (data, model), metric, k, data, with exclusions); block_size 5 everywhere
# so that every shard has several blocks, the last one overlapping its predecessor.
CASES = [
    ((1, 8), "dot", 5, "int", True),
    ((1, 8), "cosine", N_ITEMS, "gauss", False),
    ((2, 4), "l2", 1, "offset", False),
    ((2, 4), "dot", 100, "int", True),  # k > N: clipped to N, tail padded by the exclusions
    ((4, 2), "cosine", 1, "gauss", True),
    ((4, 2), "l2", 7, "offset", True),
]


def run_mesh_cases() -> dict:
    """Every multi-device case (needs 8 devices); JSON-ready results."""
    import jax
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    from recjax.retrieval import sharded

    sharded._CHUNK_QUERIES = 4  # several query chunks, the last one padded
    out = {"devices": jax.device_count(), "cases": []}
    for i, (shape, metric, k, kind, excl) in enumerate(CASES):
        mesh = jax.make_mesh(shape, ("data", "model"), axis_types=(AxisType.Auto,) * 2)
        q, x = problem(i, kind)
        kw = dict(metric=metric, **(exclusions(i) if excl else {}))
        items = sharded.shard_items(x, mesh, axis="model")
        res = sharded.sharded_topk(q, items, k, block_size=5, **kw)
        compiled = sharded._chunk_topk._cache_size()
        again = sharded.sharded_topk(q, items, k, block_size=5, **kw)
        ref = topk(q, x, k, backend="numpy", **kw)
        out["cases"].append(dict(
            shape=shape, metric=metric, k=k, ids=res.ids.tolist(), ref_ids=ref.ids.tolist(),
            scores=res.scores.tolist(), ref_scores=ref.scores.tolist(),
            dtype=str(res.scores.dtype), ref_dtype=str(ref.scores.dtype),
            repeat_equal=bool(np.array_equal(again.ids, res.ids)),
            recompiled=sharded._chunk_topk._cache_size() != compiled,
            n_padded=items.table.shape[0], n_shards=items.n_shards,
            shard_rows=[s.data.shape[0] for s in items.table.addressable_shards],
            shard_starts=sorted({s.index[0].start or 0 for s in items.table.addressable_shards}),
            spec=list(items.table.sharding.spec)))
    # a JAX input: unsharded (padded and placed), or already row-sharded (kept as is)
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    q, x = problem(0, "int")
    from_jax = sharded.shard_items(jax.numpy.asarray(x), mesh)
    x64 = np.pad(x, ((0, 3), (0, 0)))  # 64 rows: divisible by 4
    placed = jax.device_put(x64, NamedSharding(mesh, P("model", None)))
    kept = sharded.shard_items(placed, mesh)
    out["jax_inputs"] = dict(
        unsharded_equal=bool(np.array_equal(
            sharded.sharded_topk(q, from_jax, 5).ids, topk(q, x, 5, backend="numpy").ids)),
        unsharded_rows=[s.data.shape[0] for s in from_jax.table.addressable_shards],
        kept_is_same=kept.table is placed,
        kept_equal=bool(np.array_equal(
            sharded.sharded_topk(q, kept, 5).ids, topk(q, x64, 5, backend="numpy").ids)))
    return out


@pytest.fixture(scope="module")
def mesh_results():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(CASES)))
def test_sharded_equals_unsharded(mesh_results, case):
    assert mesh_results["devices"] == 8
    r = mesh_results["cases"][case]
    assert r["ids"] == r["ref_ids"], f"{r['shape']} {r['metric']} k={r['k']}"
    assert np.array(r["ids"]).shape == (N_QUERIES, min(r["k"], N_ITEMS))
    np.testing.assert_allclose(r["scores"], r["ref_scores"], rtol=2e-6, atol=1e-6)
    assert r["dtype"] == r["ref_dtype"] == "float32"
    assert r["repeat_equal"] and not r["recompiled"]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_table_rows_are_split(mesh_results, case):
    r = mesh_results["cases"][case]
    data, model = r["shape"]
    assert r["n_shards"] == model
    assert r["n_padded"] == -(-N_ITEMS // model) * model
    assert r["spec"] == ["model", None]
    # every device holds n_padded / S rows; S distinct blocks, each on `data` devices
    assert r["shard_rows"] == [r["n_padded"] // model] * (data * model)
    assert r["shard_starts"] == list(range(0, r["n_padded"], r["n_padded"] // model))


def test_padding_and_ties_are_exercised(mesh_results):
    cases = mesh_results["cases"]
    assert any(-1 in row for c in cases for row in c["ids"])  # the k > N case with exclusions
    dot = cases[0]  # exact integer scores: some row has an exact tie within its top 5
    assert any(len(set(row)) < len(row) for row in dot["ref_scores"])


def test_jax_array_inputs(mesh_results):
    r = mesh_results["jax_inputs"]
    assert r["unsharded_equal"] and r["unsharded_rows"] == [16] * 8
    assert r["kept_is_same"] and r["kept_equal"]


# ---------------------------------------------------------------------- one device


@pytest.fixture(scope="module")
def mesh1():
    import jax
    from jax.sharding import AxisType, Mesh

    return Mesh(np.array(jax.devices()[:1]), ("model",), axis_types=(AxisType.Auto,))


def test_one_device_mesh(mesh1):
    import jax.numpy as jnp

    from recjax.retrieval.sharded import shard_items, sharded_topk

    q, x = problem(7, "int")
    items = shard_items(x, mesh1)
    kw = dict(metric="l2", **exclusions(7))
    ref = topk(q, x, 6, backend="numpy", **kw)
    res = sharded_topk(jnp.asarray(q), items, 6, **kw)  # one block: the whole shard
    assert np.array_equal(res.ids, ref.ids) and np.array_equal(res.scores, ref.scores)
    one = sharded_topk(q[0], items, 3, block_size=7)  # a 1-D query gives 1-D results
    assert one.ids.shape == (3,)
    assert one.ids.tolist() == topk(q[0], x, 3, backend="numpy").ids.tolist()


def test_validation(mesh1):
    from recjax.retrieval.sharded import ShardedItems, shard_items, sharded_topk

    x = np.ones((5, 3), np.float32)
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        shard_items(x, "mesh")
    with pytest.raises(ValueError, match="axis 'data' is not an axis"):
        shard_items(x, mesh1, axis="data")
    with pytest.raises(TypeError, match="float32 or float64"):
        shard_items(x.astype(np.int32), mesh1)
    with pytest.raises(ValueError, match="2-D"):
        shard_items(x[0], mesh1)
    with pytest.raises(ValueError, match="empty"):
        shard_items(x[:0], mesh1)
    with pytest.raises(ValueError, match="items holds NaN"):
        shard_items(np.where(np.eye(5, 3) > 0, np.inf, x).astype(np.float32), mesh1)
    items = shard_items(x, mesh1)
    assert isinstance(items, ShardedItems) and items.n_items == 5 and items.n_shards == 1
    q = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="ShardedItems"):
        sharded_topk(q, x, 2)
    with pytest.raises(ValueError, match="metric"):
        sharded_topk(q, items, 2, metric="manhattan")
    with pytest.raises(ValueError, match="d=4 columns but items have d=3"):
        sharded_topk(np.ones((2, 4), np.float32), items, 2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        sharded_topk(q, items, 0)
    with pytest.raises(TypeError, match="k must be an integer"):
        sharded_topk(q, items, 2.0)
    with pytest.raises(ValueError, match="queries holds NaN"):
        sharded_topk(np.full((2, 3), np.nan, np.float32), items, 2)
    with pytest.raises(ValueError, match="too large"):
        sharded_topk(np.full((2, 3), 1e19, np.float32), items, 2)
    with pytest.raises(ValueError, match="exclude has shape"):
        sharded_topk(q, items, 2, exclude=sp.csr_array((2, 4)))
    with pytest.raises(ValueError, match="exclude_items must have shape"):
        sharded_topk(q, items, 2, exclude_items=np.zeros(4, bool))
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        sharded_topk(q, items, 2, block_size=0)


if __name__ == "__main__":
    print(json.dumps(run_mesh_cases()))
