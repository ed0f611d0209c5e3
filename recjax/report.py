"""Plain-text tables of run results for the terminal."""

from __future__ import annotations

from typing import Any

__all__ = ["format_table", "print_run_summary"]


def format_table(header: list[str], rows: list[list[Any]], floatfmt: str = ".4f") -> str:
    """A fixed-width text table; floats formatted with ``floatfmt``, None as '-'."""
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return format(value, floatfmt) if isinstance(value, float) else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[j]) for r in cells)) for j, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) if j == 0 else h.rjust(w) for j, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def print_run_summary(result: Any) -> None:
    """Print a finished run's metrics next to its baselines, and its speed."""
    m = result.metrics
    names = ("rmse", "mse", "mae") if "test_rmse" in m else ("accuracy", "auc", "log_loss")
    header = ["model"] + [f"{part} {name.upper()}" for name in names for part in ("train", "val", "test")]
    model_name = type(result.module).__name__
    rows = [[model_name] + [m[f"{part}_{name}"] for name in names for part in ("train", "val", "test")]]
    for baseline in ("global_mean", "user_mean"):
        if f"{baseline}_test_{names[0]}" in m:
            rows.append([baseline.replace("_", " ")] +
                        [m[f"{baseline}_{part}_{name}"] for name in names for part in ("train", "val", "test")])
    print(format_table(header, rows))
    print(
        f"\nbest epoch {m['best_epoch']} of {m['epochs_run']}"
        f"{' (early stopped)' if m['stopped_early'] else ''}; "
        f"train {m['train_seconds']:.1f} s + compile {m['compile_seconds']:.1f} s; "
        f"{m['examples_per_second']:,.0f} examples/s\nrun folder: {result.run_dir}"
    )
