"""A study's report: ``trials.csv``, ``best.json``, plots and a one-screen table.

Written into the study folder (:func:`recjax.tuning.study.report_study`) by
:func:`recjax.tuning.study.tune` when it ends and by ``python -m recjax tune report
STUDY`` at any time (also while workers search):

* ``trials.csv``: one row per trial (number, state, value, seconds, every searched
  setting, its run folder, why it was pruned or failed);
* ``best.json``: the metric, the best trial's number, value, settings and run folder,
  the trials by state, and (after a refit) the test scores of the best and the
  default settings with their paired bootstrap interval;
* ``history.png`` and ``importance.png`` (the ``plot`` extra, matplotlib): Optuna's
  optimisation history and its fANOVA parameter importances (at least two finished
  trials with varied settings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["best_trial", "trials_frame", "write_report", "summary_lines"]


def best_trial(study: Any) -> Any:
    """The study's best ``optuna.trial.FrozenTrial``; None before a trial finishes."""
    try:
        return study.best_trial
    except ValueError:  # no finished trial yet
        return None


def trials_frame(study: Any) -> Any:
    """The study's trials as a DataFrame, one row per trial."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                     "seconds": seconds, **t.params, "run": t.user_attrs.get("run"),
                     "defaults": bool(t.user_attrs.get("defaults", False)),
                     "note": t.user_attrs.get("pruned") or t.user_attrs.get("error") or ""})
    return pd.DataFrame(rows)


def write_report(study: Any, study_dir: Path, settings: dict[str, Any], *,
                 test: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``trials.csv``, ``best.json`` and the plots of ``study`` (an
    ``optuna.Study``) into ``study_dir``, whose ``tune.json`` holds ``settings``; returns
    ``best.json``'s content. ``test``: a refit's comparison (kept from an earlier
    ``best.json`` when not given)."""
    frame = trials_frame(study)
    _atomic(study_dir / "trials.csv", frame.to_csv(index=False))
    best = best_trial(study)
    previous = study_dir / "best.json"
    if test is None and previous.is_file():
        test = json.loads(previous.read_text()).get("test")
    out = {"model": settings["model"], "metric": settings["metric"], "direction": settings["direction"],
           "trials": frame["state"].value_counts().to_dict() if len(frame) else {},
           "best": None if best is None else {"number": best.number, "value": best.value,
                                              "params": best.params, "run": best.user_attrs.get("run")},
           "test": test}
    _atomic(previous, json.dumps(out, indent=2, sort_keys=True, default=float) + "\n")
    _plots(study, study_dir)
    return out


def summary_lines(report: dict[str, Any], frame: Any, top: int = 10) -> list[str]:
    """A one-screen table: the study's counts, its best trials, the refit's test scores."""
    lines = [f"{report['model']}: {report['metric']} ({report['direction']}), trials: "
             + ", ".join(f"{n} {state}" for state, n in sorted(report["trials"].items()))]
    done = frame[frame["state"] == "complete"] if len(frame) else frame
    if len(done):
        ascending = report["direction"] == "minimize"
        params = [c for c in frame.columns if c.startswith(("train.", "model."))]
        lines.append(f"{'trial':>6} {'value':>10}  " + "  ".join(params))
        for _, row in done.sort_values("value", ascending=ascending).head(top).iterrows():
            mark = " (defaults)" if row["defaults"] else ""
            lines.append(f"{int(row['number']):6d} {row['value']:10.5g}  "
                         + "  ".join(f"{row[p]:.4g}" if isinstance(row[p], float) else str(row[p])
                                     for p in params) + mark)
    test = report.get("test")
    if test:
        for name in ("best", "defaults"):
            scores = ", ".join(f"{k} {v:.4f}" for k, v in test[name].items() if k.startswith("test_"))
            lines.append(f"{name} settings on the test part: {scores}")
        b = test["bootstrap"]
        lines.append(f"{b['metric']}: {b['difference']:+.4f} "
                     f"[{b['low']:+.4f}, {b['high']:+.4f}] (95% paired bootstrap over {b['users']} users)")
    return lines


def _plots(study: Any, study_dir: Path) -> None:
    """Optuna's history and importance plots as PNG, when matplotlib is installed and the
    study has enough finished trials."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as optuna_plots
    except ImportError:
        return
    import warnings

    finished = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    plots = [("history.png", optuna_plots.plot_optimization_history)]
    if len(finished) >= 2 and len({tuple(sorted(t.params.items())) for t in finished}) >= 2:
        plots.append(("importance.png", optuna_plots.plot_param_importances))
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
            try:
                axes = plot(study)
            except (ValueError, RuntimeError):  # e.g. importances of settings that never varied
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        tmp = study_dir / f".{name}"
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        tmp.replace(study_dir / name)


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
