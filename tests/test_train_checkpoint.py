"""Orbax checkpoints: bitwise round trips, one step kept, and damaged or foreign
checkpoints rejected with CheckpointError (never silent garbage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recjax.models.mf import MF, MFConfig
from recjax.train.checkpoint import FORMAT, CheckpointError, Checkpoints
from recjax.train.step import Model, TrainState

IDENTITY = {"model_config": {"embedding_dim": 3}, "train_config": {"seed": 0}}


def _mf_state(dim: int = 3, seed: int = 0) -> TrainState:
    model = Model.split(MF(MFConfig(embedding_dim=dim), 9, 7, rngs=nnx.Rngs(seed)))
    params = jax.tree.map(jnp.asarray, model.params)
    tx = optax.adam(0.01)
    opt_state = tx.init(params)
    # make the optimiser state non-trivial: one real update
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
    _, opt_state = tx.update(grads, opt_state, params)
    return TrainState(params, opt_state, jnp.int32(17), jax.random.fold_in(jax.random.key(seed), 99))


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(la, lb)
    )


@pytest.fixture
def saved(tmp_path) -> tuple[Path, TrainState]:
    state = _mf_state()
    ckpt = Checkpoints(tmp_path / "checkpoints")
    ckpt.save_last(3, state, state.params, {**IDENTITY, "epoch": 3, "history": [{"epoch": 3, "val_rmse": 0.9}]})
    ckpt.save_best(2, state.params, {**IDENTITY, "epoch": 2})
    return tmp_path / "checkpoints", state


# ----------------------------------------------------------------------------- round trips
def test_train_state_round_trip_is_bitwise(saved):
    directory, state = saved
    template = _mf_state(seed=5)  # same structure, other values
    assert not _leaves_equal(template.params, state.params)
    restored, best, meta = Checkpoints(directory).restore_last(template, IDENTITY)
    assert _leaves_equal(restored.params, state.params)
    assert _leaves_equal(best, state.params)  # the best parameters so far travel with the state
    assert _leaves_equal(restored.opt_state, state.opt_state)
    assert int(restored.step) == 17 and restored.step.dtype == jnp.int32
    np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(state.key))
    # the restored key draws the same numbers
    np.testing.assert_array_equal(jax.random.uniform(restored.key, (4,)), jax.random.uniform(state.key, (4,)))
    assert meta["format"] == FORMAT
    assert meta["epoch"] == 3 and meta["history"] == [{"epoch": 3, "val_rmse": 0.9}]
    assert meta["model_config"] == IDENTITY["model_config"]


def test_best_params_round_trip_is_bitwise(saved):
    directory, state = saved
    params, meta = Checkpoints(directory).restore_best(_mf_state(seed=5).params, IDENTITY)
    assert _leaves_equal(params, state.params)
    assert sorted(params) == sorted(state.params)
    assert meta["epoch"] == 2


def test_only_the_latest_step_is_kept(tmp_path):
    ckpt = Checkpoints(tmp_path / "c")
    assert not ckpt.has_last()
    first, second = _mf_state(seed=1), _mf_state(seed=2)
    ckpt.save_last(1, first, first.params, {"epoch": 1})
    assert ckpt.has_last()
    ckpt.save_last(2, second, first.params, {"epoch": 2})
    assert sorted(p.name for p in (tmp_path / "c" / "last").iterdir() if p.name.isdigit()) == ["2"]
    restored, best, meta = Checkpoints(tmp_path / "c").restore_last(first, {})
    assert meta["epoch"] == 2 and _leaves_equal(restored.params, second.params)
    assert _leaves_equal(best, first.params)


def test_checkpoints_accept_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = _mf_state()
    Checkpoints("run/checkpoints").save_best(1, state.params, {})
    assert (tmp_path / "run" / "checkpoints" / "best" / "1").is_dir()
    params, _ = Checkpoints("run/checkpoints").restore_best(state.params, {})
    assert _leaves_equal(params, state.params)


# ----------------------------------------------------------------------------- failures
def _assert_clear(err: CheckpointError, *needles: str) -> None:
    message = str(err)
    for needle in needles:
        assert needle in message, message
    # one readable line, fit for "recjax: error: ..."
    assert "\n" not in message, message
    assert len(message) < 600, message


def test_missing_checkpoint(tmp_path):
    ckpt = Checkpoints(tmp_path / "none")
    assert not ckpt.has_last()
    with pytest.raises(CheckpointError) as info:
        ckpt.restore_last(_mf_state(), {})
    _assert_clear(info.value, "no last checkpoint", str(tmp_path / "none" / "last"))
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        ckpt.restore_best(_mf_state().params, {})


# Restores that orbax itself fails on leave tensorstore callbacks behind that fire after
# orbax's event loop has closed ("Exception ignored ... Event loop is closed"), which pytest
# reports as unraisable-exception errors in whichever test runs next. So the damaged and
# mis-shaped cases run together in one subprocess, and the tests check its report.
_DAMAGE_SCRIPT = r"""
import json, os, shutil, sys
from pathlib import Path
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
from recjax.models.mf import MF, MFConfig
from recjax.train.checkpoint import CheckpointError, Checkpoints
from recjax.train.step import Model, TrainState

def mf_state(dim=3, user_bias=True):
    model = Model.split(MF(MFConfig(embedding_dim=dim, user_bias=user_bias), 9, 7, rngs=nnx.Rngs(0)))
    params = jax.tree.map(jnp.asarray, model.params)
    tx = optax.adam(0.01)
    _, opt = tx.update(jax.tree.map(lambda x: jnp.full_like(x, 0.5), params), tx.init(params), params)
    return TrainState(params, opt, jnp.int32(17), jax.random.key(4))

def same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

root = Path(sys.argv[1])
state = mf_state()
n = 0

pristine = root / "pristine"
Checkpoints(pristine).save_last(3, state, state.params, {"epoch": 3})
Checkpoints(pristine).save_best(3, state.params, {"epoch": 3})

def fresh():
    global n
    n += 1
    folder = root / f"c{n}"
    shutil.copytree(pristine, folder)
    return folder

def attempt(folder, which="last", template=state):
    try:
        if which == "last":
            got, _, _ = Checkpoints(folder).restore_last(template, {})
            ok = same(got.params, state.params) and same(got.opt_state, state.opt_state) and int(got.step) == 17
        else:
            got, _ = Checkpoints(folder).restore_best(template, {})
            ok = same(got, state.params)
        return {"outcome": "equal" if ok else "garbage"}
    except CheckpointError as err:
        return {"outcome": "error", "message": str(err), "folder": str(folder / which / "3")}
    except Exception as err:
        return {"outcome": "other", "message": f"{type(err).__name__}: {err}"}

def data_files(d):
    return [p for p in d.rglob("*") if p.is_file() and p.parent.name == "d"]

def labelled_files(d):
    # {label: path}; data files have random names, so label them by folder and size rank
    files = sorted((p for p in d.rglob("*") if p.is_file()),
                   key=lambda p: (str(p.parent.relative_to(d)), p.stat().st_size, p.name))
    labels, seen = {}, {}
    for p in files:
        rel = str(p.relative_to(d))
        if p.parent.name == "d":
            parent = str(p.parent.relative_to(d))
            seen[parent] = seen.get(parent, -1) + 1
            rel = f"{parent}/#{seen[parent]}"
        labels[rel] = p
    return labels

report = {}
cases = {
    "truncate-top-level-data": lambda d: [os.truncate(f, f.stat().st_size // 2) for f in (d / "d").iterdir()],
    "truncate-all-data": lambda d: [os.truncate(f, 10) for f in data_files(d)],
    "delete-data": lambda d: [f.unlink() for f in data_files(d)],
    "delete-metadata": lambda d: (d / "_METADATA").unlink(),
    "delete-manifest": lambda d: [f.unlink() for f in d.rglob("manifest.ocdbt")],
    "delete-state": lambda d: shutil.rmtree(d),
}
for name, damage in cases.items():
    folder = fresh()
    damage(folder / "last" / "3" / "state")
    report[name] = attempt(folder)

# every single file of the state, truncated to half: an error or the exact values, never garbage
folder = fresh()
labels = sorted(labelled_files(folder / "last" / "3" / "state"))
if sys.argv[2] != "sweep":  # the files that hold the arrays and their tree; all with "sweep"
    labels = [label for label in labels if label in ("_METADATA", "d/#0", "manifest.ocdbt")]
for label in labels:
    folder = fresh()
    f = labelled_files(folder / "last" / "3" / "state")[label]
    os.truncate(f, f.stat().st_size // 2)
    report["half:" + label] = attempt(folder)

folder = fresh()
report["other-shape-last"] = attempt(folder, "last", mf_state(dim=5))
report["other-shape-best"] = attempt(folder, "best", mf_state(dim=5).params)
report["other-structure-best"] = attempt(folder, "best", mf_state(user_bias=False).params)
print("REPORT" + json.dumps(report))
"""


def _damage(folder: Path, mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _DAMAGE_SCRIPT, str(folder), mode], capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT"):])


@pytest.fixture(scope="module")
def damage_report(tmp_path_factory) -> dict:
    return _damage(tmp_path_factory.mktemp("damaged"), "cases")


@pytest.mark.parametrize("case", ["truncate-top-level-data", "truncate-all-data", "delete-data",
                                  "delete-metadata", "delete-manifest", "delete-state"])
def test_damaged_last_checkpoint_raises(damage_report, case):
    result = damage_report[case]
    assert result["outcome"] == "error", result
    message = result["message"]
    # the step's manifest catches every damage before orbax reads a byte
    assert "is damaged" in message and result["folder"] in message, message
    assert "\n" not in message and len(message) < 600, message  # one line for "recjax: error: ..."


def test_truncated_array_data_tree_or_manifest_raises(damage_report):
    halves = {k: v for k, v in damage_report.items() if k.startswith("half:")}
    assert sorted(halves) == ["half:_METADATA", "half:d/#0", "half:manifest.ocdbt"]
    assert all(v["outcome"] == "error" for v in halves.values()), halves


@pytest.mark.slow
def test_any_truncated_file_gives_an_error_or_the_exact_values(tmp_path):
    """Every file of the state folder cut in half, one at a time: a CheckpointError or the
    exact saved values (orbax leaves some files it no longer reads), never garbage."""
    halves = {k: v for k, v in _damage(tmp_path, "sweep").items() if k.startswith("half:")}
    assert len(halves) >= 8, sorted(halves)
    assert all(v["outcome"] in ("error", "equal") for v in halves.values()), halves
    assert sum(v["outcome"] == "error" for v in halves.values()) >= 4, halves


@pytest.mark.parametrize("case", ["other-shape-last", "other-shape-best", "other-structure-best"])
def test_other_shapes_are_rejected_even_without_identity(damage_report, case):
    result = damage_report[case]
    assert result["outcome"] == "error", result
    assert result["folder"] in result["message"] and "\n" not in result["message"]


def test_foreign_model_config_is_rejected(saved):
    directory, state = saved
    other = {**IDENTITY, "model_config": {"embedding_dim": 4}}
    with pytest.raises(CheckpointError) as info:
        Checkpoints(directory).restore_last(state, other)
    _assert_clear(info.value, "different model_config", "'embedding_dim': 3", "'embedding_dim': 4")
    with pytest.raises(CheckpointError, match="different model_config"):
        Checkpoints(directory).restore_best(state.params, other)


def test_other_format_is_rejected(tmp_path):
    state = _mf_state()
    ckpt = Checkpoints(tmp_path / "c")
    ckpt.save("last", 1, {"params": state.params}, {"format": "someone-else/7"})
    with pytest.raises(CheckpointError) as info:
        Checkpoints(tmp_path / "c").restore("last", {"params": state.params}, {})
    _assert_clear(info.value, "is not a recjax checkpoint", FORMAT)
