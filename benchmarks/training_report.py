"""Markdown table from ``test_bench_training.py`` pytest-benchmark JSON files.

Usage::

    python benchmarks/training_report.py /tmp/training.json [more.json ...]

One row per (data shape, model): the median time of one train step and of one
epoch, examples/second for each, the compile time of the epoch, and the peak
resident memory an epoch added; then the machine the numbers came from.
"""

from __future__ import annotations

import json
import sys


def load(paths: list[str]) -> tuple[dict, dict]:
    """(rows[(shape, model)][kind] -> info, machine_info of the first file)."""
    rows, machine = {}, {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        machine = machine or data.get("machine_info", {})
        for bench in data["benchmarks"]:
            info, median = bench["extra_info"], bench["stats"]["median"]
            if "model" not in info:
                continue  # a retrieval benchmark, from a combined run
            rows.setdefault((info["shape"], info["model"]), {})[info["kind"]] = dict(
                info, median=median, rate=info["examples"] / median)
    return rows, machine


def table(rows: dict) -> str:
    head = ["data", "model", "step (batch)", "step ex/s", "epoch (examples)", "epoch ex/s",
            "epoch compile", "epoch peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (shape, model), kinds in sorted(rows.items()):
        step, epoch = kinds.get("step"), kinds.get("epoch")
        cells = [shape, model]
        cells += ["-", "-"] if step is None else [
            f"{1e3 * step['median']:.2f} ms ({step['examples']:,})", f"{step['rate']:,.0f}"]
        cells += ["-"] * 4 if epoch is None else [
            f"{epoch['median']:.2f} s ({epoch['examples']:,})", f"{epoch['rate']:,.0f}",
            f"{epoch['compile_s']:.1f} s", f"{epoch['peak_mib']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    rows, machine = load(paths)
    cpu = machine.get("cpu", {})
    devices = sorted({f"{i.get('backend', 'unrecorded')} ({i.get('device', '-')})" for kinds in rows.values() for i in kinds.values()})
    print(f"Machine: {cpu.get('brand_raw', machine.get('processor', '?'))}, "
          f"{cpu.get('count', '?')} cores, Python {machine.get('python_version', '?')}; "
          f"JAX on {', '.join(devices)}\n")
    print(table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
