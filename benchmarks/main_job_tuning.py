"""Choose a fast default for the main job (MF on ml-100k) on ub's validation part, never on ua.

Each setting is one whole ``python -m recjax train --split ub --quiet`` process (ub.base
minus the 5% validation carve, seed 0; early stopping on validation RMSE), timed end to
end as issue #17 times the main job; the validation RMSE of the parameters it keeps
(early stopping's best epoch) and its epochs are read from the run folder's
``metrics.jsonl``. The first setting is today's default, the bar: a new
default must reach at most its validation RMSE in clearly less wall time. ua is scored
once afterwards, with the chosen defaults (``python -m recjax train``).

The space: batch size with the learning rate scaled linearly (the loss is a mean over
the batch, so each looked-up row's step is ``lr / batch`` times its gradient), a
learning-rate schedule over an ``--epochs`` horizon, fewer factors, and adagrad (exact
sparse updates too). Prints one line per setting (with the load average: the machine is
shared, so compare walls within one run of this script).

Outcome (2026-11-30, shared 2-core VM at load average 7-16; the table is in
benchmarks/README.md, "Time to accuracy"): only ``lr1`` matched today's validation RMSE
(0.9015103 vs 0.9015100) and it did so in 29 epochs instead of 44; scored once on ua
with the defaults (``python -m recjax train``) it gave test RMSE 0.9294 (best epoch 16
of 21), over issue #17's 0.9267, so the default stayed at learning rate 0.5.

Usage::

    JAX_PLATFORMS=cpu RECJAX_DATA=/path/to/movielens python benchmarks/main_job_tuning.py [NAME ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

#: name -> extra ``python -m recjax train`` flags over the defaults (``base`` = the defaults).
SETTINGS = {
    "base": [],
    # a larger step at batch 128 (fewer epochs to the same regularised optimum)
    "lr1": ["--lr", "1.0"],
    "lr1p5": ["--lr", "1.5"],
    "lr2": ["--lr", "2.0"],
    # larger batches, the learning rate scaled with them
    "b256_lr2": ["--batch-size", "256", "--lr", "2.0"],
    "b512_lr2": ["--batch-size", "512", "--lr", "2.0"],
    # a decaying learning rate over a shorter horizon (early stopping still on)
    "cos20": ["--schedule", "cosine", "--epochs", "20"],
    "lr1_cos20": ["--lr", "1.0", "--schedule", "cosine", "--epochs", "20"],
    "lr1_cos40": ["--lr", "1.0", "--schedule", "cosine", "--epochs", "40"],
    "lr1_exp40": ["--lr", "1.0", "--schedule", "exponential", "--epochs", "40"],
    # fewer factors
    "d256": ["--embedding-dim", "256"],
    "d256_lr2": ["--embedding-dim", "256", "--lr", "2.0"],
    "d512_lr1": ["--embedding-dim", "512", "--lr", "1.0"],
    "d512_cos20": ["--embedding-dim", "512", "--schedule", "cosine", "--epochs", "20"],
    # adagrad (exact sparse updates too)
    "adagrad": ["--optimizer", "adagrad", "--lr", "0.1"],
}


def run(flags: list[str]) -> dict:
    """One training process on ub: wall seconds, best val RMSE, its epoch, epochs run."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "recjax", "train", "--split", "ub", "--quiet",
               "--out", os.path.join(out, "run"), *flags]
        load = os.getloadavg()[0]
        tic = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - tic
        with open(os.path.join(out, "run", "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
    final = next(r for r in records if r.get("event") == "final")  # the selected epoch's parameters
    return {"wall": wall, "val_rmse": final["val_rmse"], "best_epoch": final["best_epoch"],
            "epochs": final["epochs_run"], "epoch_seconds": final["train_seconds"], "load": load}


if __name__ == "__main__":
    for name in sys.argv[1:] or SETTINGS:
        r = run(SETTINGS[name])
        print(f"{name:16s} {' '.join(SETTINGS[name]) or '(defaults)':58s} val_rmse {r['val_rmse']:.5f} "
              f"best epoch {r['best_epoch']:3d} of {r['epochs']:3d}  wall {r['wall']:6.1f} s "
              f"(epochs {r['epoch_seconds']:5.1f} s)  "
              f"load {r['load']:.1f}", flush=True)
