"""Plain-text tables of run results for the terminal."""

from __future__ import annotations

from typing import Any

from recjax.data.dataset import Ratings
from recjax.data.splits import PARTS
from recjax.evaluation.compare import rating_baselines

__all__ = ["format_table", "print_run_summary"]


def format_table(header: list[str], rows: list[list[Any]], floatfmt: str = ".4f",
                 markdown: bool = False) -> str:
    """A fixed-width text table (or a markdown one); floats formatted with ``floatfmt``,
    None as '-'; the first column left-aligned, the others right-aligned."""
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return format(value, floatfmt) if isinstance(value, float) else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[j]) for r in cells)) for j, h in enumerate(header)]

    def line(values: list[str]) -> str:
        padded = [v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(values, widths))]
        return "| " + " | ".join(padded) + " |" if markdown else "  ".join(padded)

    rule = (["-" * w for w in widths] if not markdown
            else [("-" * w) if j == 0 else ("-" * (w - 1) + ":") for j, w in enumerate(widths)])
    separator = "| " + " | ".join(rule) + " |" if markdown else "  ".join(rule)
    return "\n".join([line(header), separator, *(line(r) for r in cells)])


def print_run_summary(result: Any) -> None:
    """Print a finished run's metrics next to its baselines (global and user mean, fitted
    here on its train part, for a rating model of MovieLens-style data), and its speed."""
    m = result.metrics
    if "test_rmse" in m:
        names: tuple[str, ...] = ("rmse", "mse", "mae")
    elif "test_accuracy" in m:
        names = ("accuracy", "auc", "log_loss")
    else:  # a model with its own metrics: those every part has
        names = tuple(k[5:] for k in m if k.startswith("test_") and f"val_{k[5:]}" in m)
    header = ["model"] + [f"{part} {name.upper()}" for name in names for part in PARTS]
    model_name = type(result.module).__name__
    rows = [[model_name] + [m.get(f"{part}_{name}") for name in names for part in PARTS]]
    if "test_rmse" in m and all(isinstance(result.splits.get(p), Ratings) for p in PARTS):
        per_part = {part: rating_baselines(result.splits["train"], result.splits[part])
                    for part in PARTS if len(result.splits[part])}
        for baseline in per_part.get("test", {}):
            rows.append([baseline] + [per_part[part][baseline][name] if part in per_part else None
                                      for name in names for part in PARTS])
    print(format_table(header, rows))
    print(
        f"\nbest epoch {m['best_epoch']} of {m['epochs_run']}"
        f"{' (early stopped)' if m['stopped_early'] else ''}; "
        f"train {m['train_seconds']:.1f} s + compile {m['compile_seconds']:.1f} s; "
        f"{m['examples_per_second']:,.0f} examples/s\nrun folder: {result.run_dir}"
    )
