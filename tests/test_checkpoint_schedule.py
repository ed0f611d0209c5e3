"""Checkpoints on a schedule (recjax.train.checkpoint.CheckpointSchedule): written at most
every ``checkpoint_seconds`` and at the end; a run killed at any point, a checkpoint
write included, resumes to bitwise the same parameters and metrics.jsonl; and each of a
run's functions is compiled once."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from _subprocess_env import subprocess_env

import recjax.train.checkpoint as checkpoint_module
from recjax.config import RunConfig
from recjax.experiment import run
from recjax.models.mf import MFConfig
from recjax.train.checkpoint import Checkpoints, CheckpointSchedule

pytestmark = pytest.mark.usefixtures("persistent_compile_cache")  # runs repeat programs

# ----------------------------------------------------------------------------- the schedule
def test_schedule_waits_the_interval_then_restarts_it_after_a_write():
    now = [100.0]
    schedule = CheckpointSchedule(30.0, clock=lambda: now[0])
    decisions = []
    for t in (110.0, 129.9, 130.0, 140.0, 165.0, 171.0):
        now[0] = t
        due = schedule.due(final=False)
        decisions.append(due)
        if due:
            schedule.written()
    # due at 130 (30 s after the start); the next interval starts at 130: due at 160 or after
    assert decisions == [False, False, True, False, True, False]
    assert schedule.due(final=True)  # the end is always written


def test_schedule_zero_writes_after_every_epoch_and_refuses_a_negative_interval():
    schedule = CheckpointSchedule(0.0, clock=lambda: 5.0)
    assert schedule.due(final=False) and schedule.due(final=False)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="checkpoint interval must be >= 0 seconds"):
            CheckpointSchedule(bad)
    with pytest.raises(ValueError, match=r"invalid checkpoint_seconds=-1"):
        RunConfig(checkpoint_seconds=-1.0)


# ----------------------------------------------------------------------------- runs
SETTINGS = dict(epochs=4, patience=30, batch_size=256, learning_rate=0.1, quiet=True)
MODEL = MFConfig(embedding_dim=4)


@pytest.fixture(scope="module")
def parts():
    """A small synthetic dataset split with shared vocabularies (1620 training ratings)."""
    from recjax.data import holdout_split, synthetic_ratings

    data, _ = synthetic_ratings(80, 60, 2000, rank=3, seed=3)
    rest, test, _ = holdout_split(data, 0.1, seed=0)
    train, val, _ = holdout_split(rest, 0.1, seed=1)
    return {"train": train, "val": val, "test": test}


def _cfg(out: Path, **kwargs) -> RunConfig:
    return RunConfig(**{**SETTINGS, "out": str(out), **kwargs})


def _records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock entries."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timing = ("seconds", "epoch_seconds", "val_seconds", "compile_seconds", "train_seconds",
              "examples_per_second", "refit_seconds")
    return [{k: v for k, v in line.items() if k not in timing} for line in lines]


def _same_run(a: Path, b: Path) -> None:
    """Bitwise the same embeddings, best checkpoint and metrics (timings aside)."""
    ea, eb = np.load(a / "embeddings.npz"), np.load(b / "embeddings.npz")
    for key in ("user_embeddings", "item_embeddings"):
        assert np.array_equal(ea[key], eb[key]), key
    assert _records(a) == _records(b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, parts):
    """The reference: the run trained in one go (one checkpoint write, at the end)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    run(_cfg(out), MODEL, splits=parts)
    return out


def _writes(monkeypatch) -> list[tuple[str, int]]:
    """(which, step) of every checkpoint written from now on."""
    written = []
    save = Checkpoints.save

    def counting(self, which, epoch, tree, meta):
        save(self, which, epoch, tree, meta)
        written.append((which, epoch))

    monkeypatch.setattr(Checkpoints, "save", counting)
    return written


def test_by_default_a_short_run_writes_its_checkpoints_once_at_the_end(uninterrupted, parts, tmp_path,
                                                                      monkeypatch):
    written = _writes(monkeypatch)
    run(_cfg(tmp_path / "run"), MODEL, splits=parts)
    best = [r for r in _records(tmp_path / "run") if r.get("event") == "final"][0]["best_epoch"]
    assert written == [("best", best), ("last", 4)]  # not 2 per epoch: 8
    _same_run(tmp_path / "run", uninterrupted)


def test_interval_zero_writes_last_after_every_epoch(uninterrupted, parts, tmp_path, monkeypatch):
    written = _writes(monkeypatch)
    run(_cfg(tmp_path / "run", checkpoint_seconds=0.0), MODEL, splits=parts)
    assert [w for w in written if w[0] == "last"] == [("last", 1), ("last", 2), ("last", 3), ("last", 4)]
    assert [w[0] for w in written].count("best") == 1
    _same_run(tmp_path / "run", uninterrupted)


class Killed(BaseException):
    """Stands for the process dying: nothing after it runs (not an Exception, so that no
    handler turns it into an error message)."""


@pytest.mark.parametrize("where", ["before the manifest", "inside the manifest",
                                   "between best and last"])
def test_resume_after_a_kill_during_a_checkpoint_write_is_bitwise_identical(
        uninterrupted, parts, tmp_path, monkeypatch, where):
    """Checkpoints after every epoch; the run dies while writing: epoch 2's last after
    orbax wrote it but before its manifest, or halfway through the manifest (a partial
    temporary file), or at the end, after best and before the final last. The resumed
    run equals the uninterrupted one."""
    out = tmp_path / "run"
    cfg = _cfg(out, checkpoint_seconds=0.0)
    write_manifest, save_last = checkpoint_module.write_manifest, Checkpoints.save_last

    def dying_manifest(step_dir: Path) -> None:
        if step_dir == out / "checkpoints" / "last" / "2":
            if where == "inside the manifest":
                (step_dir / (checkpoint_module.MANIFEST + ".tmp")).write_text('{"format": "recj')
            raise Killed
        write_manifest(step_dir)

    def dying_last(self, epoch, state, best, meta):
        if meta["finished"]:
            raise Killed
        save_last(self, epoch, state, best, meta)

    with monkeypatch.context() as patch:
        if where == "between best and last":
            patch.setattr(Checkpoints, "save_last", dying_last)
        else:
            patch.setattr(checkpoint_module, "write_manifest", dying_manifest)
        with pytest.raises(Killed):
            run(cfg, MODEL, splits=parts)
    assert not (out / "embeddings.npz").exists()
    epochs_before = [r["epoch"] for r in _records(out) if "epoch" in r]
    assert epochs_before == ([1, 2, 3, 4] if where == "between best and last" else [1, 2])
    # the interrupted step has no manifest: ignored, the previous one is resumed from
    assert Checkpoints(out / "checkpoints")._steps("last") == ([3] if where == "between best and last"
                                                                else [1])
    run(cfg, MODEL, resume=True, splits=parts)
    _same_run(out, uninterrupted)


@pytest.mark.slow
def test_kill_inside_orbax_write_in_a_subprocess_then_resume(tmp_path):
    """os._exit in the middle of orbax writing epoch 3's last (the step still in orbax's
    temporary folder): the CLI resumes the run to the uninterrupted result."""
    from recjax.cli import main

    out = tmp_path / "run"
    settings = ["train", "--dataset", "synthetic", "--split", "random", "--epochs", "4", "--patience",
                "30", "--batch-size", "512", "--learning-rate", "0.1", "--embedding-dim", "4",
                "--quiet", "--checkpoint-seconds", "0"]
    flags = [*settings, "--out", str(out)]
    script = (
        "import os, sys, orbax.checkpoint as ocp\n"
        "from recjax.cli import main\n"
        "save = ocp.JsonCheckpointHandler.async_save\n"
        "calls = []\n"
        "async def dying(self, *a, **k):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3:\n"  # the third checkpoint's metadata: last of epoch 3
        "        os._exit(137)\n"
        "    return await save(self, *a, **k)\n"
        "ocp.JsonCheckpointHandler.async_save = dying\n"
        "sys.exit(main(sys.argv[1:]))\n")
    killed = subprocess.run([sys.executable, "-c", script, *flags], env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert Checkpoints(out / "checkpoints")._steps("last") == [2]
    assert not (out / "embeddings.npz").exists()
    assert main([*flags, "--resume"]) == 0
    assert main([*settings, "--out", str(tmp_path / "uninterrupted")]) == 0
    _same_run(out, tmp_path / "uninterrupted")


# ----------------------------------------------------------------------------- compile once
@pytest.fixture
def programs():
    """Names of the XLA programs built from now on (compiled, or loaded from a
    persistent compilation cache)."""
    names: list[str] = []

    def listen(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    yield names
    jax.monitoring.unregister_event_duration_listener(listen)


@pytest.mark.parametrize("refit", [False, pytest.param(True, marks=pytest.mark.slow)])  # refit: ~15 s
def test_each_function_of_a_run_is_compiled_once(parts, tmp_path, programs, refit):
    """A run of 4 epochs on shapes no other test uses (nor the other case): the epoch, validation and final
    predictions (val, train and test: one program), the best-parameter copy and the
    untrained-loss probe each compile once; a refit compiles its own epoch, state, probe
    and predict (another model: its global mean is a constant of those programs)."""
    cfg = _cfg(tmp_path / "run", refit=refit)
    run(cfg, MFConfig(embedding_dim=5 if refit else 7), splits=parts)
    counts = collections.Counter(programs)
    once = {"jit(epoch)": 1, "jit(predict)": 1, "jit(_copy_tree)": 1, "jit(loss)": 1, "jit(build)": 1}
    expected = {name: count * (2 if refit and name != "jit(_copy_tree)" else 1)
                for name, count in once.items()}
    assert {name: counts[name] for name in expected} == expected, counts
