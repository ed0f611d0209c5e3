"""A study's wall time against the same trials run as separate ``train`` processes (issue #24).

1. ``python -m recjax tune --model M ... --trials N --out STUDY`` in one process, timed
   whole (imports, data, every trial, pruning, the report);
2. for every trial of that study, ``python -m recjax train`` with the trial's settings
   (the same shared flags, the same searched values), one process each, timed whole:
   what a hand-written search script pays, with no pruning (each runs to early
   stopping) and no reuse of the loaded data, the JAX runtime or compiled programs.

Printed: both wall times, their ratio, the trials by state. Target (issue #24): a
40-trial MF study at most 0.35x its trials as separate processes.

::

    python benchmarks/tune_bench.py --trials 40 --out /tmp/tune-bench -- --dataset ml-100k --split ub
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _timed(command: list[str]) -> float:
    tic = time.perf_counter()
    subprocess.run(command, env=_env(), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - tic


def _flag(key: str, value: object) -> list[str]:
    name = "--" + key.split(".", 1)[1].replace("_", "-")
    if isinstance(value, bool):
        return [name if value else "--no-" + name[2:]]
    return [name, str(value)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mf")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--space", help="search space (default: the family's)")
    parser.add_argument("--out", required=True, help="scratch folder (emptied)")
    parser.add_argument("shared", nargs=argparse.REMAINDER, help="-- then flags every trial shares")
    args = parser.parse_args(argv)
    shared = [f for f in args.shared if f != "--"]
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    study = out / "study"
    load = os.getloadavg()[0]
    command = [sys.executable, "-m", "recjax", "tune", "--model", args.model, "--trials", str(args.trials),
               "--out", str(study), *(["--space", args.space] if args.space else []), *shared]
    study_seconds = _timed(command)
    trials = pd.read_csv(study / "trials.csv")
    params = [c for c in trials.columns if c.startswith(("train.", "model."))]
    separate = 0.0
    for _, row in trials.iterrows():
        flags = [f for key in params for f in _flag(key, row[key])]
        separate += _timed([sys.executable, "-m", "recjax", "train", "--model", args.model, *shared, *flags,
                            "--out", str(out / "separate" / f"trial-{int(row['number']):04d}"), "--quiet"])
    states = trials["state"].value_counts().to_dict()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average before {load:.2f}")
    print(f"study of {len(trials)} trials ({', '.join(f'{n} {s}' for s, n in states.items())}): "
          f"{study_seconds:.1f} s; the same trials as separate train processes: {separate:.1f} s; "
          f"ratio {study_seconds / separate:.3f}")
    (out / "result.json").write_text(json.dumps({"study_seconds": study_seconds, "separate_seconds": separate,
                                                 "ratio": study_seconds / separate, "states": states,
                                                 "argv": sys.argv}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
