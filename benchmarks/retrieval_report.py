"""Markdown tables from a ``test_bench_retrieval.py`` pytest-benchmark JSON file.

Usage::

    .venv/bin/python benchmarks/retrieval_report.py /tmp/retrieval.json

Prints, per problem (size, k, metric), each contender's median queries/second, its
ratio to faiss, and its fraction of the sgemm ceiling (float32 matmul rate with the
same d, measured in the same run: ``2 Q N d`` flops per search over the ceiling);
then the peak resident memory one search added.
"""

from __future__ import annotations

import json
import sys

CONTENDERS = ["recjax", "jax", "numpy_blocked", "faiss"]


def load(path: str) -> tuple[dict, dict, dict]:
    """(results[(size, k, metric)][contender] -> info, ceiling GFLOP/s per d,
    pytest-benchmark's machine_info)."""
    with open(path) as f:
        data = json.load(f)
    results, ceiling = {}, {}
    for bench in data["benchmarks"]:
        info, median = bench["extra_info"], bench["stats"]["median"]
        if "flops" not in info:
            continue  # a training benchmark, from a combined run
        rate = info["flops"] / median / 1e9
        if "contender" in info:
            key = (info["size"], info["k"], info["metric"])
            d = int(info["size"].split("x")[1])
            results.setdefault(key, {})[info["contender"]] = dict(
                qps=info["queries"] / median, gflops=rate, d=d, peak=info["peak_mib"],
                queries=info["queries"])
        else:  # the sgemm ceiling
            ceiling[info["d"]] = rate
    return results, ceiling, data.get("machine_info", {})


def table(results: dict, ceiling: dict) -> str:
    head = ["size (N x d), queries", "k", "metric"] + CONTENDERS + ["recjax / faiss"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (size, k, metric), row in sorted(results.items(), key=_order):
        faiss = row.get("faiss", {}).get("qps")
        cells = []
        for name in CONTENDERS:
            r = row.get(name)
            cells.append("-" if r is None else
                         f"{r['qps']:,.0f} ({100 * r['gflops'] / ceiling[r['d']]:.0f}%)")
        ratio = f"{row['recjax']['qps'] / faiss:.2f}x" if faiss and "recjax" in row else "-"
        n_q = next(iter(row.values()))["queries"]
        lines.append(f"| {size}, {n_q:,} | {k} | {metric} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def memory(results: dict) -> str:
    head = ["size", "k", "metric"] + [f"{c} MiB" for c in CONTENDERS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (size, k, metric), row in sorted(results.items(), key=_order):
        cells = [f"{row[c]['peak']:.0f}" if c in row else "-" for c in CONTENDERS]
        lines.append(f"| {size} | {k} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _order(item):
    (size, k, metric), _ = item
    n = {"K": 1e3, "k": 1e3, "M": 1e6}
    items = size.split("x")[0]
    scale = n.get(items[-1], 1)
    return (float(items.rstrip("kKM")) * scale, k, metric)


def main(path: str) -> None:
    results, ceiling, machine = load(path)
    cpu = machine.get("cpu", {})
    print(f"Machine: {cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} cores\n")
    print("sgemm ceiling (float32 [4096, d] x [d, 16384], NumPy/OpenBLAS): "
          + ", ".join(f"d={d}: {r:.0f} GFLOP/s" for d, r in sorted(ceiling.items())))
    print("\nQueries/second, median (fraction of the sgemm ceiling):\n")
    print(table(results, ceiling))
    print("\nPeak resident memory added by one search:\n")
    print(memory(results))


if __name__ == "__main__":
    main(sys.argv[1])
