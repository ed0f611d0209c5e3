"""Markdown table from ``test_bench_training.py`` pytest-benchmark JSON files.

Usage::

    python benchmarks/training_report.py /tmp/training.json [more.json ...]

One row per (data shape, model): the median time of one train step and of one
epoch, examples/second for each, the compile time of the epoch, and the peak
resident memory an epoch added; then the machine the numbers came from. The
``test_table_updates`` records get a second table: one SGD epoch with dense and
sparse table updates side by side, their examples/s, ratio, and XLA's peak working
memory of each.
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
            if info["kind"] == "table_updates":
                key = (info["shape"], info["model"], info["batch_size"])
                rows.setdefault(("table_updates", None), {}).setdefault(key, {})[info["mode"]] = dict(
                    info, median=median, rate=info["examples"] / median)
                continue
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


def table_updates(cases: dict) -> str:
    """Dense vs sparse table updates: one row per (shape, model, batch size)."""
    head = ["data", "model", "batch", "dense ex/s", "sparse ex/s", "sparse / dense",
            "dense peak MiB", "sparse peak MiB", "state MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (shape, model, batch), modes in sorted(cases.items()):
        dense, sparse = modes.get("dense"), modes.get("sparse")
        rate = lambda m: "-" if m is None else f"{m['rate']:,.0f}"
        peak = lambda m: "-" if m is None else f"{m['peak_bytes'] / 2**20:,.0f}"
        ratio = f"{sparse['rate'] / dense['rate']:.2f}x" if dense and sparse else "-"
        state = (dense or sparse)["state_bytes"] / 2**20
        lines.append("| " + " | ".join([shape, model, f"{batch:,}", rate(dense), rate(sparse), ratio,
                                        peak(dense), peak(sparse), f"{state:,.0f}"]) + " |")
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    rows, machine = load(paths)
    updates = rows.pop(("table_updates", None), {})
    cpu = machine.get("cpu", {})
    records = [i for kinds in rows.values() for i in kinds.values()]
    records += [i for modes in updates.values() for i in modes.values()]
    devices = sorted({f"{i.get('backend', 'unrecorded')} ({i.get('device', '-')})" for i in records})
    print(f"Machine: {cpu.get('brand_raw', machine.get('processor', '?'))}, "
          f"{cpu.get('count', '?')} cores, Python {machine.get('python_version', '?')}; "
          f"JAX on {', '.join(devices)}\n")
    print(table(rows))
    if updates:
        print("\nOne SGD epoch, dense vs sparse table updates (state: parameters + optimiser state)\n")
        print(table_updates(updates))


if __name__ == "__main__":
    main(sys.argv[1:])
