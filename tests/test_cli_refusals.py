"""`recjax train` refuses what cannot give a useful run, in one line that says what to change
(exit 2, no traceback), and a refused or diverged run folder can be trained again.

* a model whose factors collapsed (every vector of a table 0) or stopped being finite is
  refused like a divergence, with its family's advice: ALS/iALS/EASE name their weights
  as flags (a sweep has no learning rate), the SGD families keep the learning-rate advice;
* a full disk says so and how to continue (``train --resume --out RUN``), whether the
  checkpoint (orbax) or the run folder's own files hit it;
* a ratings file's problems name the flags (``--duplicates``, ``--columns``,
  ``--rating-scale``), not Python keywords; an unknown ``--dataset`` is named as such;
* a run refused before its first epoch, or diverged, is retried into the same ``--out``:
  ``train --out RUN`` starts it over, ``--resume`` with corrected settings continues it;
  a finished or interrupted run is still never overwritten.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from _subprocess_env import subprocess_env

import recjax.run_folder as run_folder_module
import recjax.train.loop as loop_module
from recjax.cli import main
from recjax.runs import Run

pytestmark = pytest.mark.usefixtures("persistent_compile_cache")

SYNTHETIC = ["train", "--dataset", "synthetic", "--split", "random", "--quiet"]
IALS = [*SYNTHETIC, "--model", "ials", "--embedding-dim", "8", "--epochs", "2"]
MF = [*SYNTHETIC, "--embedding-dim", "4", "--epochs", "2"]


def _error(capsys, *argv) -> str:
    """Exit status 2 and exactly one ``recjax: error:`` line on stderr; returns that line."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recjax: error: "), captured.err
    return lines[0]


def _ok(capsys, *argv) -> None:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]


def _status(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text())["status"]


# ----------------------------------------------------------------------------- collapse
def test_collapsed_ials_is_refused_with_the_weights_to_change(capsys, tmp_path):
    """Unobserved weight 1e30: the item solve's Gram term swamps the data, every item factor
    comes out 0 and every item scores alike (it used to finish, exit 0, with normal-looking
    metrics)."""
    line = _error(capsys, *IALS, "--unobserved-weight", "1e30", "--out", tmp_path / "run")
    assert "collapsed at sweep 1" in line and "item_factors" in line, line
    assert "lower --unobserved-weight 1e+30" in line, line
    assert "learning rate" not in line.replace("has no learning rate", ""), line
    assert not (tmp_path / "run" / "embeddings.npz").exists()


def test_non_finite_ials_is_refused_before_validation(capsys, tmp_path):
    """No unobserved weight and a regularisation of 1e-30: the solves of the users and items
    with fewer interactions than factors (64, the last --embedding-dim given) are singular
    and their factors NaN; refused at the end of the sweep, not by the retrieval kernel's
    "queries holds NaN" during validation."""
    line = _error(capsys, *IALS, "--embedding-dim", "64", "--unobserved-weight", "0",
                  "--regularization", "1e-30", "--out", tmp_path / "run")
    assert "diverged at sweep 1" in line and "queries" not in line, line
    assert "raise --regularization 1e-30" in line, line
    assert "learning rate" not in line.replace("has no learning rate", ""), line


def test_sgd_divergence_keeps_the_learning_rate_advice(capsys, tmp_path):
    line = _error(capsys, *MF, "--optimizer", "adam", "--learning-rate", "1000", "--out", tmp_path / "run")
    assert "diverged at epoch 1" in line and "lower the learning rate" in line, line


# ----------------------------------------------------------------------------- full disk
def _enospc_after(monkeypatch, target, name: str, error: BaseException, nth: int = 1) -> None:
    """``target.name`` raises ``error`` from its ``nth`` call on (the disk stays full)."""
    original = getattr(target, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= nth:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)


ORBAX_FULL = ValueError(  # what orbax 0.11 raises for a real full disk (tensorstore's message)
    'RESOURCE_EXHAUSTED: Error writing "user_bias/0" in OCDBT database at local file "x/": Failed '
    'writing: "x/d/0": Failed to write 1727434 bytes to file 9: No space left on device '
    "[os_error_code='28']")


@pytest.mark.parametrize("where", ["orbax_oserror", "orbax_tensorstore", "run_folder"])
def test_a_full_disk_says_so_and_how_to_resume(capsys, tmp_path, monkeypatch, where):
    run_dir = tmp_path / "run"
    argv = [*MF, "--checkpoint-seconds", "0", "--out", run_dir]
    with monkeypatch.context() as patch:
        if where == "run_folder":  # metrics.jsonl after epoch 2 (begin wrote 3 files, epoch 1 one)
            _enospc_after(patch, run_folder_module, "write_atomic",
                          OSError(errno.ENOSPC, "No space left on device"), nth=5)
        else:
            error = OSError(errno.ENOSPC, "No space left on device") if where == "orbax_oserror" \
                else ORBAX_FULL
            _enospc_after(patch, ocp.CheckpointManager, "save", error, nth=2)
        line = _error(capsys, *argv)
    assert "the disk is full" in line, line
    assert f"train --resume --out {run_dir}" in line, line
    assert _status(run_dir) == "training"  # interrupted, not failed: only --resume continues it
    assert "unfinished run" in _error(capsys, *argv)
    _ok(capsys, *argv, "--resume")
    assert _status(run_dir) == "finished"


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def test_a_real_full_disk_is_one_line_without_thread_tracebacks(tmp_path):
    """A 3 MB tmpfs: the data fit, the first checkpoint does not. Orbax's writer threads
    log their failure (absl ERROR lines, tracebacks): none of it reaches the user."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "3m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        run_dir = disk / "run"
        proc = subprocess.run([sys.executable, "-m", "recjax", *MF, "--embedding-dim", "256",
                               "--out", str(run_dir)], capture_output=True, text=True, timeout=300,
                              env=subprocess_env())
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-4000:]
        assert "the disk is full" in lines[0] and f"train --resume --out {run_dir}" in lines[0], lines
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)


# ----------------------------------------------------------------------------- data flags
@pytest.fixture
def duplicated(tmp_path) -> Path:
    path = tmp_path / "ratings.csv"
    rng = np.random.default_rng(0)
    rows = ["user,item,rating"] + [f"u{u},i{i},{r}" for u, i, r in zip(
        rng.integers(1, 40, 600), rng.integers(0, 30, 600), rng.integers(1, 6, 600))]
    rows += ["u0,i0,1", "u0,i0,4"]  # a repeated pair of mean 2.5 and latest 4 (more at random)
    path.write_text("\n".join(rows) + "\n")
    return path


def test_file_problems_name_the_flags(capsys, tmp_path, duplicated):
    base = [*MF, "--split", "random", "--out", tmp_path / "run"]
    line = _error(capsys, *base, "--data", duplicated)
    assert "duplicate (user, item) pair" in line and "--duplicates last" in line \
        and "--duplicates mean" in line and "duplicates=" not in line, line
    line = _error(capsys, *base, "--data", duplicated, "--duplicates", "mean", "--columns", "user,movie,rating")
    assert "no column 'movie'" in line and "--columns user,item,rating" in line and "columns=" not in line, line
    line = _error(capsys, *base, "--data", duplicated, "--duplicates", "mean", "--rating-scale", "2,5")
    assert "outside --rating-scale 2,5" in line and "rating_scale" not in line, line
    line = _error(capsys, *base, "--data", duplicated, "--duplicates", "nope")
    assert "unknown duplicates 'nope'; choose one of error, last, mean" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("rule, expected", [("mean", 2.5), ("last", 4.0)])
def test_duplicates_flag_merges_the_repeats(capsys, tmp_path, duplicated, rule, expected):
    import pandas as pd

    out = tmp_path / "run"
    _ok(capsys, *MF, "--data", duplicated, "--duplicates", rule, "--out", out)
    merged = pd.read_csv(duplicated).groupby(["user", "item"])["rating"].agg(rule)  # pandas on the file
    assert merged.loc[("u0", "i0")] == expected
    splits = Run.open(out).splits
    stored = {(str(p.users.ids[u]), str(p.items.ids[i])): float(r) for p in splits.values()
              for u, i, r in zip(p.user, p.item, p.rating)}
    assert sum(len(p) for p in splits.values()) == len(stored) == len(merged)  # each pair once
    assert all(stored[key] == pytest.approx(value) for key, value in merged.items())


def test_unknown_dataset_is_named(capsys, tmp_path):
    line = _error(capsys, "train", "--dataset", "ml-5m", "--quiet", "--out", tmp_path / "run")
    assert "unknown dataset 'ml-5m'; choose one of ml-100k, " in line and "synthetic" in line, line
    line = _error(capsys, "train", "--dataset", "ml-5m", "--split", "random", "--quiet",
                  "--out", tmp_path / "run")
    assert "unknown dataset 'ml-5m'" in line, line
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- retry
def test_a_diverged_run_is_started_over_by_a_fresh_train(capsys, tmp_path):
    run_dir = tmp_path / "run"
    _error(capsys, *IALS, "--unobserved-weight", "1e30", "--out", run_dir)
    assert _status(run_dir) == "failed"
    assert "failed" in str(pytest.raises(ValueError, Run.open, run_dir).value)
    _ok(capsys, *IALS, "--out", run_dir)
    run = Run.open(run_dir)
    assert run.train_config.model == "ials"
    assert np.abs(run.item_embeddings).max() > 0
    # finished: a fresh train into it is refused again, as before
    assert "already holds a run" in _error(capsys, *IALS, "--out", run_dir)


def test_a_diverged_run_is_resumed_with_corrected_settings(capsys, tmp_path):
    run_dir = tmp_path / "run"
    _error(capsys, *IALS, "--unobserved-weight", "1e30", "--out", run_dir)
    _ok(capsys, *IALS, "--unobserved-weight", "0.5", "--out", run_dir, "--resume")
    run = Run.open(run_dir)
    assert run.model_config.unobserved_weight == 0.5
    assert [r["epoch"] for r in run.history] == [1, 2]


def test_a_run_diverged_after_checkpoints_resumes_from_them_with_new_settings(capsys, tmp_path, monkeypatch):
    """MF at adam lr 0.01 for 2 epochs (checkpointed), then resumed to 4 epochs at lr 1000:
    diverged at epoch 3; resumed again at lr 0.01 it continues from epoch 2's checkpoint."""
    run_dir = tmp_path / "run"
    argv = [*SYNTHETIC, "--embedding-dim", "4", "--optimizer", "adam", "--checkpoint-seconds", "0",
            "--patience", "10", "--out", run_dir]
    _ok(capsys, *argv, "--epochs", "2", "--learning-rate", "0.01")
    line = _error(capsys, *argv, "--epochs", "4", "--learning-rate", "0.01", "--resume",
                  "--batch-size", "64")
    assert "the settings differ" in line, line  # a healthy run still needs its own settings
    assert _status(run_dir) == "finished"  # and is left as it was
    original = loop_module.run_epochs

    def explode_at_3(epoch, *args, **kwargs):  # epoch 3's parameters become NaN
        def broken(state, number):
            state, metrics = epoch(state, number)
            if number == 3:
                state = state._replace(params=jax.tree.map(lambda v: v * np.nan, state.params))
            return state, metrics
        return original(broken, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loop_module, "run_epochs", explode_at_3)
        line = _error(capsys, *argv, "--epochs", "4", "--learning-rate", "0.01", "--resume")
    assert "diverged at epoch 3" in line, line
    assert _status(run_dir) == "failed"
    _ok(capsys, *argv, "--epochs", "4", "--learning-rate", "0.005", "--resume")
    run = Run.open(run_dir)
    assert [r["epoch"] for r in run.history] == [1, 2, 3, 4]
    assert run.train_config.learning_rate == 0.005


def test_a_run_refused_before_its_first_epoch_is_trained_again(capsys, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        def refuse(*args, **kwargs):
            raise ValueError("the epoch needs 9 TB; lower --batch-size")

        patch.setattr(loop_module, "check_epoch_memory", refuse)
        assert "needs 9 TB" in _error(capsys, *MF, "--out", run_dir)
    assert _status(run_dir) == "failed"
    _ok(capsys, *MF, "--out", run_dir, "--embedding-dim", "6")
    assert Run.open(run_dir).model_config.embedding_dim == 6


def test_an_interrupted_run_is_still_only_resumed(capsys, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        def interrupt(*args, **kwargs):
            raise KeyboardInterrupt

        patch.setattr(loop_module, "check_epoch_memory", interrupt)
        assert main([*map(str, MF), "--out", str(run_dir)]) == 130
    capsys.readouterr()
    assert _status(run_dir) == "training"
    assert "unfinished run" in _error(capsys, *MF, "--out", run_dir, "--embedding-dim", "6")
    assert "the settings differ" in _error(capsys, *MF, "--out", run_dir, "--embedding-dim", "6", "--resume")
    _ok(capsys, *MF, "--out", run_dir, "--resume")
