"""Markdown table from ``test_bench_main_job.py``'s pytest-benchmark JSON.

Usage::

    python benchmarks/main_job_report.py /tmp/main_job.json

One row per tool: its command, the median wall time (recjax: the whole
``python -m recjax train`` process, MF's main job and ALS's; Surprise: building its
trainset, fitting and predicting ua.test), the test RMSE on ua.test and the wall time
over Surprise's; then recjax's per-epoch training examples/second and the issues'
targets (:data:`TARGETS`), met or not.

Example
-------
>>> rows = {"recjax": {"median": 10.0, "test_rmse": 0.926, "command": "train", "rounds": 3},
...         "surprise": {"median": 2.5, "test_rmse": 0.929, "command": "SVD", "rounds": 5}}
>>> print(table(rows).splitlines()[2])
| recjax | `train` | 10.00 s (3) | 0.9260 | 4.00x |
>>> target(rows)
'Target (recjax <= 5x Surprise at test RMSE <= 0.9267): met (4.00x, 0.9260).'
>>> target(rows, "recjax als")
'Target (recjax als <= 3x Surprise at test RMSE <= 0.925): needs both benchmarks in one run.'
"""

from __future__ import annotations

import json
import sys

#: tool -> (most wall time over Surprise's, most ua test RMSE): issue #17's main job, #18's ALS
TARGETS = {"recjax": (5.0, 0.9267), "recjax als": (3.0, 0.925)}


def load(path: str) -> tuple[dict, dict]:
    """(rows[tool] -> extra_info with ``median`` and ``rounds``, machine_info)."""
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "tool" in info:  # other benchmarks of a combined run have no tool
            rows[info["tool"]] = dict(info, median=bench["stats"]["median"],
                                      rounds=bench["stats"].get("rounds", 1))
    if not rows:
        raise ValueError(f"{path}: no main-job benchmarks; run benchmarks/test_bench_main_job.py")
    return rows, data.get("machine_info", {})


def _ratio(rows: dict, tool: str) -> float | None:
    base = rows.get("surprise")
    return None if base is None else rows[tool]["median"] / base["median"]


def table(rows: dict) -> str:
    """The markdown table, recjax first."""
    lines = ["| tool | command | wall time, median (rounds) | ua test RMSE | time / Surprise |",
             "|---|---|---|---|---|"]
    for tool in sorted(rows, key=lambda t: t != "recjax"):
        row, ratio = rows[tool], _ratio(rows, tool)
        lines.append(f"| {tool} | `{row['command']}` | {row['median']:.2f} s ({row['rounds']}) | "
                     f"{row['test_rmse']:.4f} | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(lines)


def target(rows: dict, tool: str = "recjax") -> str:
    """``tool``'s target in :data:`TARGETS`, met or not (or why it cannot be judged)."""
    most_ratio, most_rmse = TARGETS[tool]
    head = f"Target ({tool} <= {most_ratio:g}x Surprise at test RMSE <= {most_rmse}): "
    if tool not in rows or "surprise" not in rows:
        return head + "needs both benchmarks in one run."
    ratio, rmse = _ratio(rows, tool), rows[tool]["test_rmse"]
    met = ratio <= most_ratio and rmse <= most_rmse
    return head + f"{'met' if met else 'not met'} ({ratio:.2f}x, {rmse:.4f})."


def main(path: str) -> None:
    rows, machine = load(path)
    cpu = machine.get("cpu", {})
    print(f"Machine: {cpu.get('brand_raw', machine.get('processor', '?'))}, "
          f"{cpu.get('count', '?')} cores, Python {machine.get('python_version', '?')}\n")
    print(table(rows))
    for tool in TARGETS:
        row = rows.get(tool)
        if row is not None:
            print(f"\n{tool}: {row['epochs']} epochs of {row['train_examples']:,} examples, "
                  f"{row['epoch_examples_per_s_median']:,.0f} examples/s per epoch (median), "
                  f"{row['train_s']:.1f} s in epochs, {row['compile_s']:.1f} s compiling the epoch")
    print("\n" + "\n".join(target(rows, tool) for tool in TARGETS if tool in rows or tool == "recjax"))


if __name__ == "__main__":
    main(sys.argv[1])
