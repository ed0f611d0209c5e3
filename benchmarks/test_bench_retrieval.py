"""Exact top-k retrieval throughput: recjax's kernel vs JAX, NumPy and faiss.

Full run (some minutes; sizes of benchmarks/README.md), then the table::

    .venv/bin/python -m pytest benchmarks/test_bench_retrieval.py --benchmark-enable \
        --benchmark-json=/tmp/retrieval.json -q
    .venv/bin/python benchmarks/retrieval_report.py /tmp/retrieval.json

Without ``--benchmark-enable`` or ``--benchmark-only`` (README's test command) the
same tests run once each at tiny sizes, as a smoke test; ``RECJAX_BENCH_FULL=1``
forces the full sizes.
Every benchmark checks its answer against the float64 reference on a few queries.
Each records, in ``extra_info``: queries, flops (2 Q N d), the peak resident memory
added by one search, and the thread count; ``test_sgemm_ceiling`` records the float32
matmul rate that the fractions in the report are relative to.
"""

from __future__ import annotations

import os
import time
from functools import cache

import numpy as np
import pytest
from _common import full_mode, peak_extra_mib

from recjax.retrieval import kernel_available, topk
from recjax.retrieval._reference import topk_reference

FULL_SIZES = {  # name: (items N, dims d, queries Q)
    "1682x32": (1_682, 32, 943),
    "100kx64": (100_000, 64, 10_000),
    "1Mx64": (1_000_000, 64, 1_000),
}
SMOKE_SIZES = {"1682x32": (300, 32, 40), "100kx64": (700, 64, 70), "1Mx64": (1_100, 64, 20)}
CONTENDERS = ["recjax", "jax", "numpy_blocked", "faiss"]
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
CHECKED_QUERIES = 25


@cache
def dataset(name: str, full: bool) -> tuple[np.ndarray, np.ndarray]:
    n_items, d, n_q = (FULL_SIZES if full else SMOKE_SIZES)[name]
    rng = np.random.default_rng(42)
    items = rng.standard_normal((n_items, d), dtype=np.float32)
    queries = rng.standard_normal((n_q, d), dtype=np.float32)
    return queries, items


# ---------------------------------------------------------------------- contenders


def numpy_blocked(queries, items, k, metric):
    """The plain NumPy way: a block of queries x all items by matmul, argpartition, sort."""
    sq = np.einsum("ij,ij->i", items, items) if metric == "l2" else None
    step = max(1, (64 << 20) // (4 * items.shape[0]))  # 64 MiB of scores at a time
    ids = np.empty((queries.shape[0], k), np.int64)
    for lo in range(0, queries.shape[0], step):
        s = queries[lo : lo + step] @ items.T
        s = sq - 2.0 * s if metric == "l2" else -s  # smaller is better
        part = np.argpartition(s, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(s, part, 1), axis=1)
        ids[lo : lo + step] = np.take_along_axis(part, order, 1)
    return ids


def make_faiss(items, metric):
    """faiss's exact flat index, on its BLAS path (sgemm blocks + heaps): faiss-cpu 1.15
    only takes it from 128k queries up by default, and is much slower below."""
    faiss = pytest.importorskip("faiss", reason="faiss-cpu is the optional `bench` extra")
    faiss.omp_set_num_threads(THREADS)
    faiss.cvar.distance_compute_blas_threshold = 1
    index = (faiss.IndexFlatL2 if metric == "l2" else faiss.IndexFlatIP)(items.shape[1])
    index.add(items)
    return lambda queries, k: index.search(queries, k)[1]


def searcher(contender, items, metric):
    """fn(queries, k) -> ids [Q, k]; setup (faiss's index copy) happens here, untimed."""
    if contender == "recjax":
        if not kernel_available():
            pytest.skip("recjax._ext.topk is not built")
        return lambda q, k: topk(q, items, k, metric=metric, backend="cython").ids
    if contender == "jax":
        return lambda q, k: topk(q, items, k, metric=metric, backend="jax").ids
    if contender == "numpy_blocked":
        return lambda q, k: numpy_blocked(q, items, k, metric)
    return make_faiss(items, metric)


# ---------------------------------------------------------------------- measurement


def check(ids, queries, items, k, metric):
    """Recall of the true top-k (float64 reference) on the first queries."""
    q = queries[:CHECKED_QUERIES]
    ref, _ = topk_reference(q, items, k, metric)
    recall = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(ids[: len(q)], ref)])
    assert recall >= 0.99, f"recall {recall:.3f} against the float64 reference"


@pytest.mark.parametrize("metric", ["dot", "l2"])
@pytest.mark.parametrize("k", [10, 100])
@pytest.mark.parametrize("size", list(FULL_SIZES))
@pytest.mark.parametrize("contender", CONTENDERS)
def test_topk_throughput(benchmark, request, contender, size, k, metric):
    full = full_mode(request.config)
    queries, items = dataset(size, full)
    search = searcher(contender, items, metric)
    check(search(queries, k), queries, items, k, metric)  # also the warm-up (JIT, caches)
    rounds = 1 if not full else (2 if contender == "numpy_blocked" and size == "1Mx64" else 3)
    ids = benchmark.pedantic(search, args=(queries, k), rounds=rounds, iterations=1)
    assert ids.shape == (queries.shape[0], k)
    benchmark.group = f"{size} k={k} {metric}"
    benchmark.extra_info.update(
        contender=contender, size=size, k=k, metric=metric, queries=queries.shape[0],
        flops=2.0 * queries.shape[0] * items.shape[0] * items.shape[1], threads=THREADS,
        peak_mib=peak_extra_mib(lambda: search(queries, k)),
    )


@pytest.mark.parametrize("d", [32, 64])
def test_sgemm_ceiling(benchmark, request, d):
    """float32 matmul [4096, d] x [d, 16384] through NumPy's BLAS: the reference rate."""
    m, n = (4096, 16_384) if full_mode(request.config) else (256, 512)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, d), dtype=np.float32)
    b = rng.standard_normal((d, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    np.matmul(a, b, out=out)
    benchmark.pedantic(np.matmul, args=(a, b), kwargs=dict(out=out), rounds=9, iterations=1)
    np.testing.assert_allclose(out[:2, :2], a[:2] @ b[:, :2], rtol=1e-4, atol=1e-4)
    benchmark.group = "sgemm ceiling"
    benchmark.extra_info.update(d=d, flops=2.0 * m * n * d, threads=THREADS,
                                measured_at=time.strftime("%Y-%m-%d %H:%M"))
