"""Helpers shared by the benchmark files: full or smoke mode, peak memory (Linux)."""

from __future__ import annotations

import os
from typing import Callable


def full_mode(config) -> bool:
    """Full sizes under ``--benchmark-enable`` or ``--benchmark-only`` (or with
    ``RECJAX_BENCH_FULL=1``); otherwise tiny ones, a smoke test of the same code."""
    return (config.getoption("benchmark_enable") or config.getoption("benchmark_only")
            or os.environ.get("RECJAX_BENCH_FULL") == "1")


def peak_extra_mib(fn: Callable[[], object]) -> float:
    """MiB of resident memory above the start that ``fn()`` reached (VmHWM after a
    reset through ``/proc/self/clear_refs``); NaN where that is unavailable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)
