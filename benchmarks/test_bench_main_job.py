"""Time to accuracy: recjax's main job and its ALS, whole processes, against Surprise SVD tuned
(issues #17 and #18).

Full run (about 5 minutes here), then the table::

    python -m pytest benchmarks/test_bench_main_job.py --benchmark-enable \
        --benchmark-json=/tmp/main_job.json -q
    python benchmarks/main_job_report.py /tmp/main_job.json

``test_main_job`` times ``python -m recjax train --quiet --out RUN`` on its defaults
(MF on ml-100k's ua split), ``test_als_job`` the same with ``--model als --refit``
(README's ALS row): the whole process, imports, data loading, compilation,
epochs, checkpoints, evaluation and the run folder included, ``$RECJAX_BENCH_ROUNDS``
times (default 3), each into a fresh folder. From the last run folder it records the
test RMSE, the per-epoch training examples/second (``metrics.jsonl``'s ``seconds``,
the compiled epoch alone), the compile and epoch seconds. ``test_surprise_svd`` fits
and tests Surprise's SVD with :data:`surprise_svd.TUNED` on the same ua.base and
ua.test, in the same benchmark run (5 rounds).

Both check their answer: the run's test part is exactly ua.test, its recorded test
RMSE is what its own predictions give (NumPy float64), and both models beat the
global-mean baseline on ua.test. Without ``--benchmark-enable`` or
``--benchmark-only`` the main job (a minute or more) is skipped and Surprise runs
once, small; both need ``$RECJAX_DATA``'s ml-100k, Surprise the ``bench`` extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _common import full_mode
from surprise_svd import TUNED, fit_and_test, ua_split

import recjax

pytestmark = pytest.mark.movielens
SMOKE_SURPRISE = {"n_factors": 8, "n_epochs": 2}


def rounds(config) -> int:
    """``$RECJAX_BENCH_ROUNDS`` (default 3) main-job processes in full mode."""
    value = os.environ.get("RECJAX_BENCH_ROUNDS", "3")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"RECJAX_BENCH_ROUNDS must be a positive integer, got {value!r}")
    return int(value)


def global_mean_rmse(train, test) -> float:
    """Test RMSE of predicting the mean training rating for every pair (float64)."""
    error = test.rating.astype(np.float64) - train.rating.astype(np.float64).mean()
    return float(np.sqrt(np.mean(error**2)))


def main_job(out: Path, *options: str) -> None:
    """``python -m recjax train --quiet [options] --out out`` with this recjax; raises on failure."""
    root = str(Path(recjax.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, "-m", "recjax", "train", "--quiet", *options, "--out", str(out)],
                          check=False, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"recjax train exited {done.returncode}:\n{done.stderr[-3000:]}")


@pytest.fixture(scope="module")
def ua():
    """(ua.base, ua.test) as recjax Ratings; skips without ``$RECJAX_DATA``'s ml-100k."""
    root = os.environ.get("RECJAX_DATA")
    if not root or not Path(root, "ml-100k", "ua.base").is_file():
        pytest.skip("ml-100k not found: set RECJAX_DATA to a folder holding ml-100k/")
    return ua_split()


#: tool name -> the train options it times
JOBS = {"recjax": (), "recjax als": ("--model", "als", "--refit")}


@pytest.mark.parametrize("tool", list(JOBS))
def test_main_job(benchmark, request, tmp_path, ua, tool):
    if not full_mode(request.config):
        pytest.skip("the whole main job takes a minute or more: run with --benchmark-enable")
    from recjax import Run

    folders = []

    def fresh_folder():
        folders.append(tmp_path / f"run{len(folders)}")
        return (folders[-1], *JOBS[tool]), {}

    benchmark.pedantic(main_job, setup=fresh_folder, rounds=rounds(request.config), iterations=1)
    run = Run.open(folders[-1])
    final, (train, test) = run.final_metrics, ua
    ran_test = run.splits["test"]
    assert (run.dataset, run.split) == ("ml-100k", "ua")
    assert np.array_equal(run.data.users.ids[ran_test.user], test.users.ids[test.user])
    assert np.array_equal(run.data.items.ids[ran_test.item], test.items.ids[test.item])
    predicted, labels = run.rating_predictions("test")
    rmse = float(np.sqrt(np.mean((predicted - labels) ** 2)))
    assert rmse == pytest.approx(final["test_rmse"], abs=1e-5), "recorded test RMSE is not the model's"
    assert final["test_rmse"] < global_mean_rmse(train, test)
    n_train = len(run.splits["train"])
    per_epoch = [n_train / record["seconds"] for record in run.history]
    benchmark.group = "main job, ml-100k ua"
    benchmark.extra_info.update(
        tool=tool, command=" ".join(("python -m recjax train --quiet", *JOBS[tool])),
        test_rmse=final["test_rmse"],
        test_rmse_per_round=[Run.open(f).final_metrics["test_rmse"] for f in folders],
        epochs=final["epochs_run"], compile_s=final["compile_seconds"],
        train_s=final["train_seconds"], train_examples=n_train,
        epoch_examples_per_s=per_epoch, epoch_examples_per_s_median=float(np.median(per_epoch)))


def test_surprise_svd(benchmark, request, ua):
    pytest.importorskip("surprise", reason="Surprise is in the bench extra: pip install -e '.[bench]'")
    full = full_mode(request.config)
    settings = TUNED if full else {**TUNED, **SMOKE_SURPRISE}
    train, test = ua
    results = []
    benchmark.pedantic(lambda: results.append(fit_and_test(train, test, **settings)),
                       rounds=5 if full else 1, iterations=1)
    rmses = {r["rmse"] for r in results}
    assert len(rmses) == 1, f"a seeded fit gave different answers: {rmses}"
    assert results[0]["rmse"] < global_mean_rmse(train, test)
    benchmark.group = "main job, ml-100k ua"
    benchmark.extra_info.update(
        tool="surprise", command=f"SVD({', '.join(f'{k}={v}' for k, v in settings.items())})",
        test_rmse=results[0]["rmse"], fit_s=float(np.median([r["fit_s"] for r in results])),
        test_s=float(np.median([r["test_s"] for r in results])))
