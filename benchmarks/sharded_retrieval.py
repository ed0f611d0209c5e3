"""Sharded exact top-k at catalogue scale (issue #7): 10M x 64 items over 8 devices.

Usage::

    python benchmarks/sharded_retrieval.py                     # 10M x 64, 1,000 queries
    python benchmarks/sharded_retrieval.py --items 200000 --devices 4

Runs on virtual CPU devices (it sets ``XLA_FLAGS=--xla_force_host_platform_device_count``
itself, before JAX starts): builds a seeded Gaussian float32 table, places it with
:func:`recjax.retrieval.sharded.shard_items` (rows split over a 1 x devices mesh),
then times :func:`~recjax.retrieval.sharded.sharded_topk` (dot, k=10 by default)
and prints the median queries/second over ``--repeats`` runs after one warm-up
(compile) run, the table bytes each device holds (from ``addressable_shards``),
resident memory, and a check of ``--check`` queries against
:func:`recjax.retrieval.topk` (the Cython kernel when built): ids must be equal, or
differ only where scores are equal within float32 rounding.  Exits 1 on a wrong
answer.  Not a pytest file: the full size needs about 6 GiB of memory (the host
table, its copy on the devices, and about 1 GiB of score blocks while searching).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import numpy as np
from _common import peak_extra_mib

_GEN_ROWS = 1 << 20  # table rows generated at a time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000_000, help="catalogue size N")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension d")
    parser.add_argument("--queries", type=int, default=1_000, help="queries per search")
    parser.add_argument("--devices", type=int, default=8, help="virtual CPU devices (shards)")
    parser.add_argument("--k", type=int, default=10, help="results per query")
    parser.add_argument("--metric", default="dot", choices=["dot", "cosine", "l2"])
    parser.add_argument("--repeats", type=int, default=3, help="timed searches (median)")
    parser.add_argument("--check", type=int, default=100, help="queries checked against topk()")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def gaussian(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """float32 [n, d] standard normal values, generated in place a chunk at a time."""
    out = np.empty((n, d), np.float32)
    for lo in range(0, n, _GEN_ROWS):
        rng.standard_normal(out=out[lo : lo + _GEN_ROWS], dtype=np.float32)
    return out


def rss_mib() -> float:
    """Current resident memory (Linux), MiB."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def check(got, want) -> tuple[int, int]:
    """(rows with identical ids, rows differing beyond float32 near-ties)."""
    same = np.all(got.ids == want.ids, axis=1)
    close = np.isclose(got.scores.astype(np.float64), want.scores.astype(np.float64),
                       rtol=1e-5, atol=1e-5).all(axis=1)
    return int(same.sum()), int((~same & ~close).sum())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    from jax.sharding import AxisType

    from recjax.retrieval import kernel_available, topk
    from recjax.retrieval.sharded import shard_items, sharded_topk

    print(f"{args.items:,} x {args.dim} float32 items, {args.queries:,} queries, k={args.k}, "
          f"{args.metric}, {args.devices} devices ({jax.device_count()} visible, "
          f"{jax.devices()[0].platform}), JAX {jax.__version__}")
    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    items = gaussian(rng, args.items, args.dim)
    queries = gaussian(rng, args.queries, args.dim)
    print(f"generate: {time.perf_counter() - t:.1f} s, table {items.nbytes / 2**20:,.0f} MiB "
          f"on the host, RSS {rss_mib():,.0f} MiB")

    mesh = jax.make_mesh((args.devices,), ("model",), axis_types=(AxisType.Auto,))
    t = time.perf_counter()
    table = shard_items(items, mesh, axis="model")
    table.table.block_until_ready()
    per_device = {s.device.id: s.data.nbytes for s in table.table.addressable_shards}
    print(f"shard: {time.perf_counter() - t:.1f} s, {table.table.shape[0]:,} padded rows, "
          f"per device {min(per_device.values()) / 2**20:,.1f} MiB "
          f"(max {max(per_device.values()) / 2**20:,.1f}, {len(per_device)} devices), "
          f"RSS {rss_mib():,.0f} MiB")

    def search():
        return sharded_topk(queries, table, args.k, metric=args.metric)

    placed_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    found = []
    extra = peak_extra_mib(lambda: found.append(search()))  # resets the peak: read it first
    res = found[0]
    print(f"first search (compiles): {time.perf_counter() - t:.1f} s, peak RSS "
          f"{extra:,.0f} MiB above the placed table")
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        search()
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(f"search: median {median:.2f} s over {args.repeats} "
          f"({', '.join(f'{s:.2f}' for s in times)}): {args.queries / median:,.0f} queries/s, "
          f"{2 * args.queries * args.items * args.dim / median / 1e9:,.0f} GFLOP/s")

    n_check = min(args.check, args.queries)
    t = time.perf_counter()
    want = topk(queries[:n_check], items, args.k, metric=args.metric)
    got = type(want)(res.ids[:n_check], res.scores[:n_check])
    same, wrong = check(got, want)
    kernel = "Cython kernel" if kernel_available() else "NumPy reference"
    print(f"check vs topk() ({kernel}, {time.perf_counter() - t:.1f} s): {same}/{n_check} "
          f"rows identical, {wrong} wrong")
    search_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # since the reset
    print(f"process peak RSS: {max(placed_peak, search_peak):,.0f} MiB (generating and placing "
          f"{placed_peak:,.0f}, searching and checking {search_peak:,.0f})")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
