"""Seconds per epoch of training against validation, iALS at 300k users x 40k items (issue #24).

    python benchmarks/validation_cost.py [--ratings 5000000] [--epochs 4] \
        [--runs cholesky:0:1 cholesky:10000:1 cg:0:1 cg:10000:1 cg:10000:2]

A hyper-parameter study validates every epoch of every trial, so validation should
cost a fraction of the epoch it judges. This trains ``--model ials`` (64 factors, the
family's other defaults; ``--solver cholesky``, the default, and ``cg``, 3 steps, the
solver of the comparison with implicit) through :func:`recjax.experiment.run`, as ``python -m recjax
train`` does, on the seeded synthetic generator's 300,000 users x 40,000 items with
5M interactions, split as the CLI splits by default (``--split random``: 10% test,
then 5% of the rest validation, ~153k validation users), once per ``--runs`` entry
``SOLVER:VAL_USERS:VAL_EVERY``: ``--val-users 0`` (every validation user ranks the
catalogue after every epoch, as before issue #24) and the default 10,000 (a seeded
sample; the final ``val_*`` metrics are over every user either way), and the default
with ``--val-every 2``. Patience exceeds the epochs, so every run trains all of them.

Prints a markdown table from the runs' ``metrics.jsonl`` epoch records: the median
sweep seconds (``epoch_seconds``), the median seconds of a validation (``val_seconds``
of the validated epochs; the first, in parentheses, also builds the part's exclusion
patterns), the validations' share of the epochs' time (their seconds summed over the
sweeps' and theirs), the users ranked per validation and the final validation
NDCG@10 over every user; with the machine and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

USERS, ITEMS, FACTORS = 300_000, 40_000, 64


def _machine() -> str:
    """CPU model and core count."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return f"{cpu}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratings", type=int, default=5_000_000, help="interactions generated")
    parser.add_argument("--epochs", type=int, default=4, help="sweeps per run")
    parser.add_argument("--runs", nargs="+", help="SOLVER:VAL_USERS:VAL_EVERY settings compared",
                        default=["cholesky:0:1", "cholesky:10000:1", "cg:0:1", "cg:10000:1", "cg:10000:2"])
    args = parser.parse_args()

    from recjax.config import RunConfig
    from recjax.data.splits import split_ratings
    from recjax.data.synthetic import synthetic_ratings
    from recjax.experiment import run
    from recjax.models.als import IALSConfig

    load_before = os.getloadavg()[0]
    tic = time.perf_counter()
    data, _ = synthetic_ratings(USERS, ITEMS, args.ratings, seed=0)
    splits = split_ratings(data, "random", test_fraction=0.1, val_fraction=0.05, seed=0)._asdict()
    n_val_users = len(set(splits["val"].user.tolist()))
    print(f"data: {len(data.user):,} interactions, {n_val_users:,} validation users "
          f"({time.perf_counter() - tic:.0f} s to generate and split)", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for setting in args.runs:
            solver, val_users, val_every = setting.split(":")
            val_users, val_every = int(val_users), int(val_every)
            out = Path(folder) / f"ials-{solver}-{val_users}-{val_every}"
            cfg = RunConfig(model="ials", epochs=args.epochs, patience=args.epochs + 1,
                            val_users=val_users, val_every=val_every, quiet=True, out=str(out))
            tic = time.perf_counter()
            result = run(cfg, IALSConfig(embedding_dim=FACTORS, solver=solver), splits=splits)
            wall = time.perf_counter() - tic
            lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            epochs = [line for line in lines if "epoch" in line]
            validated = [line for line in epochs if "val_users" in line]
            sweeps, vals = (sum(line[key] for line in epochs) for key in ("epoch_seconds", "val_seconds"))
            rows.append((solver, val_users, val_every, validated[0]["val_users"],
                         statistics.median(line["epoch_seconds"] for line in epochs),
                         statistics.median(line["val_seconds"] for line in validated),
                         validated[0]["val_seconds"], vals / (sweeps + vals),
                         result.metrics["best_epoch"], result.metrics["val_users"],
                         result.metrics["val_ndcg@10"], wall))
            print(f"{setting}: {wall:.0f} s", flush=True)

    print(f"\n{_machine()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
          f"iALS {FACTORS} factors, {USERS:,} x {ITEMS:,}, {args.ratings:,} interactions, "
          f"{args.epochs} epochs\n")
    print("| --solver | --val-users | --val-every | users ranked | sweep s | validation s (first) "
          "| validation share of epoch time | best epoch | final val_ndcg@10 (users) | run s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for solver, val_users, every, ranked, sweep, val, first, share, best, users, ndcg, wall in rows:
        print(f"| {solver} | {val_users}{' (all)' if val_users == 0 else ''} | {every} | {ranked:,} | "
              f"{sweep:.2f} | {val:.2f} ({first:.2f}) | {share:.0%} | {best} | {ndcg:.4f} ({users:,}) "
              f"| {wall:.0f} |")


if __name__ == "__main__":
    main()
