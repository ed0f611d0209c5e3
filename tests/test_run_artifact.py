"""A run is a self-contained, verified artifact: hostile cases that must not give silent
wrong answers.

Each test is one case: string raw ids end to end, the dataset changed after training, a
damaged or truncated checkpoint, a refitted run served from the refitted parameters, two
writers on one folder, bad ``splits=`` through the API, a failure mid-run (full disk),
a checkpoint restored into a model of another size, ``--resume`` with other settings and
impossible sizes. Through the CLI every failure is exactly one ``recjax: error:`` line on
stderr and exit status 2; through the API a ``ValueError`` (or ``TypeError``/``KeyError``
for unknown ids) with a one-line message.

Runs are tiny (MF, dimension 4-8, 2-3 epochs on the synthetic dataset or ml-100k's ua
split); one finished synthetic run is trained per module and copied for the destructive
tests.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _subprocess_env import subprocess_env

import recjax.train.checkpoint as checkpoint_module
import recjax.train.loop as loop_module
from recjax.cli import main
from recjax.evaluation import evaluate_run

pytestmark = pytest.mark.usefixtures("persistent_compile_cache")

# the shared tiny run: MF, dimension 8, on the synthetic dataset's random split
SYNTHETIC = ["train", "--dataset", "synthetic", "--split", "random", "--embedding-dim", "8", "--quiet"]
# pairs of raw ids of the synthetic dataset (users 1..1000, items 1..500)
PAIRS = {"instances": [{"in0": [1], "in1": [7]}, {"in0": [30], "in1": [2]}, {"in0": [999], "in1": [450]}]}
# the root holding this recjax package: subprocesses import the same code as this process


# ----------------------------------------------------------------------------- helpers
def cli(capsys, *argv) -> tuple[int, str, str]:
    """``recjax.cli.main(argv)`` in process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(status: int, out: str, err: str) -> str:
    """Exit status 2 and exactly one ``recjax: error:`` line on stderr; returns that line."""
    lines = err.strip().splitlines()
    assert status == 2, (status, out[-2000:], err[-4000:])
    assert len(lines) == 1 and lines[0].startswith("recjax: error:"), err[-4000:]
    return lines[0]


def subprocess_cli(*argv, timeout: float = 180, memory_gib: float | None = None,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m recjax ARGV`` in a fresh process (so logging that reaches the real
    stderr is seen too); ``memory_gib`` caps its address space (for cases that could
    otherwise try to allocate hundreds of GB)."""
    def limit() -> None:
        if memory_gib is not None:
            size = int(memory_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return subprocess.run([sys.executable, "-m", "recjax", *map(str, argv)], check=False,
                          capture_output=True, text=True, timeout=timeout, env=env or subprocess_env(),
                          preexec_fn=limit)


def subprocess_error(proc: subprocess.CompletedProcess) -> str:
    return one_line_error(proc.returncode, proc.stdout, proc.stderr)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _final(run_dir: Path) -> dict:
    return [line for line in _lines(run_dir / "metrics.jsonl") if line.get("event") == "final"][-1]


def _epochs(run_dir: Path) -> list[int]:
    """The epoch numbers logged in metrics.jsonl (training phase, not refit)."""
    return [line["epoch"] for line in _lines(run_dir / "metrics.jsonl")
            if "epoch" in line and line.get("phase") != "refit"]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _largest_checkpoint_file(run_dir: Path, under: str = "checkpoints") -> Path:
    files = [p for p in (run_dir / under).rglob("*") if p.is_file()]
    assert files, f"no files under {run_dir / under}"
    return max(files, key=lambda p: (p.stat().st_size, str(p)))


def _request(tmp_path: Path, request: dict, name: str = "req.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(request))
    return path


def _without(text: str, *paths: Path) -> str:
    """``text`` lower-cased with the given paths removed (a word in a tmp folder name
    must not satisfy a check of the message)."""
    for path in paths:
        text = text.replace(str(path), "").replace(str(Path(path).resolve()), "")
    return text.lower()


def _metric(result, name: str) -> float:
    """``test_<name>`` or ``<name>`` from an evaluation result: a flat mapping, or one
    keyed by model name whose first row is the run's."""
    if hasattr(result, "_asdict"):
        result = result._asdict()
    if dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    for key in (f"test_{name}", name):
        if key in result:
            return float(result[key])
    for value in result.values():
        if isinstance(value, dict):
            return _metric(value, name)
    raise AssertionError(f"no {name} in {result!r}")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    """A finished tiny run (MF dim 8, 2 epochs, synthetic random split), trained once;
    tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("artifact") / "run"
    assert main([*SYNTHETIC, "--epochs", "2", "--out", str(out)]) == 0
    return out


def _copy(run_dir: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run_dir, target)
    return target


# ----------------------------------------------------------------------------- 1. string ids
def _string_id_frame() -> pd.DataFrame:
    """60 users "u0".."u59" x 40 items "i0".."i39", 2000 distinct pairs, ratings 1..10 from
    a planted rank-3 model plus noise."""
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(60, 3)), rng.normal(size=(40, 3))
    pairs = rng.choice(60 * 40, size=2000, replace=False)
    u, i = pairs // 40, pairs % 40
    score = 5.5 + 1.5 * np.einsum("nd,nd->n", users[u], items[i]) + rng.normal(0, 0.5, len(u))
    return pd.DataFrame({"user": [f"u{k}" for k in u], "item": [f"i{k}" for k in i],
                         "rating": np.clip(np.round(score), 1, 10)})


def test_string_ids_end_to_end(tmp_path, capsys):
    from recjax.config import RunConfig
    from recjax.data import Ratings, split_ratings
    from recjax.experiment import run
    from recjax.models.mf import MFConfig
    from recjax.runs import Run

    frame = _string_id_frame()
    assert not frame.duplicated(["user", "item"]).any()
    splits = split_ratings(Ratings.from_pandas(frame, rating_scale=(1, 10)), "random")
    out = tmp_path / "run"
    run(RunConfig(epochs=3, quiet=True, out=str(out)), MFConfig(embedding_dim=4), splits=splits)

    opened = Run.open(out)
    top = opened.recommend("u3", N=5)
    assert np.shape(top.ids) == (5,) and np.shape(top.scores) == (5,)
    ids = [str(i) for i in np.asarray(top.ids).tolist()]
    assert all(isinstance(i, str) and i.startswith("i") for i in np.asarray(top.ids).tolist()), top.ids
    train = splits[0] if isinstance(splits, tuple) else splits["train"]
    rated = set(np.asarray(train.items.raw(train.item[train.user == train.users.index("u3")])).tolist())
    assert rated and not rated & set(ids), (ids, rated)
    assert np.all(np.diff(np.asarray(top.scores)) <= 0)  # best first

    status, text, err = cli(capsys, "recommend", out, "--user", "u3", "-N", 5)
    assert status == 0, err
    assert all(i in text for i in ids), text

    neighbours = [str(i) for i in np.asarray(opened.similar_items("i7", N=3).ids).tolist()]
    assert len(neighbours) == 3 and "i7" not in neighbours
    status, text, err = cli(capsys, "neighbors", out, "--item", "i7", "-k", 3)
    assert status == 0, err
    assert all(i in text for i in neighbours), text

    status, text, err = cli(capsys, "evaluate", out)
    assert status == 0, err

    request = _request(tmp_path, {"instances": [{"in0": ["u3"], "in1": ["i7"]}]})
    status, text, err = cli(capsys, "predict", out, "--input", request)
    assert status == 0, err
    (row,) = json.loads(text)["predictions"]
    assert 1.0 <= row["scores"][0] <= 10.0
    np.testing.assert_allclose(row["scores"][0], float(np.asarray(opened.predict("u3", "i7"))), rtol=1e-5)

    if importlib.util.find_spec("matplotlib") is not None:
        status, text, err = cli(capsys, "plot", out, "--out", tmp_path / "plots", "--no-tsne")
        assert status == 0, err

    # the same answers from a fresh process, without any dataset
    both = opened.recommend(["u3", "u5"], N=5)
    assert np.shape(both.ids) == (2, 5)
    code = ("import json, sys\nimport numpy as np\nfrom recjax.runs import Run\n"
            "top = Run.open(sys.argv[1]).recommend(['u3', 'u5'], N=5)\n"
            "print(json.dumps({'ids': [[str(i) for i in row] for row in np.asarray(top.ids).tolist()],"
            " 'scores': np.asarray(top.scores, np.float64).tolist()}))\n")
    env = subprocess_env()
    env.pop("RECJAX_DATA", None)
    fresh = subprocess.run([sys.executable, "-c", code, str(out)], check=False, capture_output=True,
                           text=True, timeout=180, env=env, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-4000:]
    answer = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert answer["ids"] == [[str(i) for i in row] for row in np.asarray(both.ids).tolist()]
    assert answer["scores"] == np.asarray(both.scores, np.float64).tolist()


# ----------------------------------------------------------------------------- 2. data changed
def test_data_changed_after_training(movielens_dir, tmp_path, capsys):
    copy = tmp_path / "ml-100k"
    shutil.copytree(movielens_dir / "ml-100k", copy)
    flags = ["train", "--data-dir", copy, "--split", "ua", "--embedding-dim", 8, "--quiet"]
    run_dir = tmp_path / "run"
    status, _, err = cli(capsys, *flags, "--epochs", 2, "--out", run_dir)
    assert status == 0, err
    recorded_test_rmse = _final(run_dir)["test_rmse"]
    request = _request(tmp_path, {"instances": [{"in0": [1], "in1": [1]}, {"in0": [1], "in1": [50]},
                                                {"in0": [943], "in1": [50]}, {"in0": [200], "in1": [100]}]})
    status, before, err = cli(capsys, "predict", run_dir, "--input", request)
    assert status == 0, err

    # one rating of user 1 now belongs to a new user 0, in ua.base and in u.data alike
    # (every user index shifts by one in a vocabulary rebuilt from the files)
    for name in ("ua.base", "u.data"):
        path = copy / name
        lines = path.read_text(encoding="latin-1").splitlines(keepends=True)
        (row,) = [n for n, line in enumerate(lines) if line.startswith("1\t1\t5\t874965758")]
        lines[row] = "0" + lines[row][1:]
        path.write_text("".join(lines), encoding="latin-1")

    line = one_line_error(*cli(capsys, *flags, "--epochs", 3, "--out", run_dir, "--resume"))
    assert "data" in _without(line, copy, run_dir, tmp_path), line

    status, text, err = cli(capsys, "evaluate", run_dir, "--no-baselines", "--json", tmp_path / "eval.json")
    if status == 0:  # from the run's own stored data: its recorded test RMSE
        (row,) = json.loads((tmp_path / "eval.json").read_text())["results"].values()
        assert row["rmse"] == pytest.approx(recorded_test_rmse, rel=1e-6), (row, recorded_test_rmse)
    else:  # or refused, naming the data
        line = one_line_error(status, text, err)
        assert "data" in _without(line, copy, run_dir, tmp_path), line

    status, after, err = cli(capsys, "predict", run_dir, "--input", request)
    assert status == 0, err
    assert json.loads(after) == json.loads(before)


# ----------------------------------------------------------------------------- 3-4. broken checkpoints
def _broken_run_commands(run_dir: Path, request: Path) -> dict[str, list]:
    return {
        "predict": ["predict", run_dir, "--input", request],
        "recommend": ["recommend", run_dir, "--user", 1, "-N", 3],
        "evaluate": ["evaluate", run_dir, "--k", 5],
        "train --resume": [*SYNTHETIC, "--epochs", 3, "--out", run_dir, "--resume"],
    }


def _damage_words(line: str, run_dir: Path) -> None:
    text = _without(line, run_dir)
    assert "checkpoint" in text, line
    assert any(word in text for word in ("damaged", "checksum", "sha256")), line


# Damage in checkpoints/last/ (the resume state, which holds the largest file: the
# optimiser moments) is refused by --resume, while the commands that serve the verified
# best parameters answer exactly as before; damage in checkpoints/best/ is refused by all.
WHERE = pytest.mark.parametrize("under", ["checkpoints/last", "checkpoints/best"],
                                ids=["last", "best"])


def _check_broken(run_dir: Path, pristine: Path, request: Path, under: str, capsys,
                  damage_words: bool) -> None:
    commands = _broken_run_commands(run_dir, request)
    for name, argv in commands.items():
        status, out, err = cli(capsys, *argv)
        assert "nan" not in (out + err).lower(), (name, out, err)
        if under.endswith("last") and name != "train --resume":
            assert status == 0, (name, err)
            same = [pristine if a == run_dir else a for a in argv]
            _, expected, _ = cli(capsys, *same)
            assert out == expected.replace(str(pristine), str(run_dir)), name
            continue
        line = one_line_error(status, out, err)
        if damage_words:
            _damage_words(line, run_dir)
        assert "checkpoint" in _without(line, run_dir), (name, err)


@WHERE
def test_damaged_checkpoint(synthetic_run, tmp_path, capsys, under):
    run_dir = _copy(synthetic_run, tmp_path)
    victim = _largest_checkpoint_file(run_dir, under)
    data = bytearray(victim.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    victim.write_bytes(bytes(data))
    assert victim.stat().st_size == len(data)
    _check_broken(run_dir, synthetic_run, _request(tmp_path, PAIRS), under, capsys, True)
    # a refused --resume leaves the run as it was: still served, still refused the same way
    _check_broken(run_dir, synthetic_run, _request(tmp_path, PAIRS), under, capsys, True)


@WHERE
def test_truncated_checkpoint(synthetic_run, tmp_path, capsys, under):
    run_dir = _copy(synthetic_run, tmp_path)
    victim = _largest_checkpoint_file(run_dir, under)
    size = victim.stat().st_size
    with open(victim, "r+b") as f:
        f.truncate(size // 2)

    request = _request(tmp_path, PAIRS)
    _check_broken(run_dir, synthetic_run, request, under, capsys, False)
    # fresh processes: logging that reaches the real stderr (orbax, TensorStore, asyncio
    # tracebacks, some of them printed at interpreter exit) must not follow the message
    commands = _broken_run_commands(run_dir, request)
    for name in commands:
        if under.endswith("last") and name != "train --resume":
            continue
        proc = subprocess_cli(*commands[name])
        assert "checkpoint" in _without(subprocess_error(proc), run_dir), (name, proc.stderr[-4000:])


# ----------------------------------------------------------------------------- 5. refit
def test_refit_run_served_right(tmp_path, capsys):
    import jax.numpy as jnp

    from recjax.runs import Run

    out = tmp_path / "refit"
    status, _, err = cli(capsys, *SYNTHETIC, "--epochs", 3, "--refit", "--out", out)
    assert status == 0, err
    assert any(line.get("phase") == "refit" for line in _lines(out / "metrics.jsonl"))

    opened = Run.open(out)
    # synthetic raw ids are 1..n (sorted vocabularies): index = raw id - 1
    users = np.arange(1, 41, dtype=np.int64)
    items = (users * 7) % 500 + 1
    module = opened.model()
    direct = np.asarray(module({"user": jnp.asarray(users - 1, jnp.int32),
                                "item": jnp.asarray(items - 1, jnp.int32)}), np.float64)
    inside = (direct > 1.01) & (direct < 4.99)  # clipping to the scale does not apply
    assert inside.sum() >= 10, direct
    users, items, direct = users[inside], items[inside], direct[inside]

    served = np.asarray(opened.predict(users, items), np.float64)
    assert served.shape == users.shape
    np.testing.assert_allclose(served, direct, rtol=1e-5, atol=1e-5)

    request = _request(tmp_path, {"instances": [{"in0": [int(u)], "in1": [int(i)]}
                                                for u, i in zip(users, items)]})
    status, text, err = cli(capsys, "predict", out, "--input", request)
    assert status == 0, err
    scores = [row["scores"][0] for row in json.loads(text)["predictions"]]
    np.testing.assert_allclose(scores, direct, rtol=1e-5, atol=1e-5)

    assert _metric(evaluate_run(opened), "rmse") == pytest.approx(_final(out)["test_rmse"], rel=1e-5)


# ----------------------------------------------------------------------------- 6. two writers
def test_two_writers(tmp_path):
    out = tmp_path / "same"
    # long enough (no early stop, small batches) that the two overlap
    argv = [*SYNTHETIC, "--epochs", "30", "--patience", "30", "--batch-size", "256", "--out", str(out)]
    command = [sys.executable, "-m", "recjax", *argv]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=subprocess_env(), cwd=tmp_path) for _ in range(2)]
    results = []
    try:
        for proc in procs:
            results.append((*proc.communicate(timeout=120), proc.returncode))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 2], [(code, err[-3000:]) for _, err, code in results]
    (loser,) = [(out_, err) for out_, err, code in results if code == 2]
    line = one_line_error(2, *loser)
    assert any(word in _without(line, out) for word in ("lock", "being trained", "in use")), line

    from recjax.runs import Run

    Run.open(out)
    epochs = _epochs(out)
    assert epochs == list(range(1, len(epochs) + 1)) and epochs, epochs
    assert _final(out)["epochs_run"] == len(epochs)


# ----------------------------------------------------------------------------- 7. API input
def _parts():
    """{"train", "val", "test"}: a small synthetic dataset split with shared vocabularies."""
    from recjax.data import holdout_split, synthetic_ratings

    data, _ = synthetic_ratings(80, 60, 2000, rank=3, seed=3)
    rest, test, _ = holdout_split(data, 0.1, seed=0)
    train, val, _ = holdout_split(rest, 0.1, seed=1)
    return {"train": train, "val": val, "test": test}


def _own_vocabulary(parts):
    from recjax.data import Ratings

    test = parts["test"]
    alone = Ratings.from_raw(test.users.raw(test.user), test.items.raw(test.item), test.rating,
                             rating_scale=test.rating_scale)
    assert len(alone.users) < len(test.users)  # indices differ from the training part's
    return {**parts, "test": alone}


def _nan_rating(parts):
    rating = parts["train"].rating.copy()
    rating[5] = np.nan
    return {**parts, "train": dataclasses.replace(parts["train"], rating=rating)}


def _off_scale(parts):
    rating = parts["train"].rating.copy()
    rating[5] = 7.0  # the scale is 1..5
    return {**parts, "train": dataclasses.replace(parts["train"], rating=rating)}


def _no_val(parts):
    return {"train": parts["train"], "test": parts["test"]}


@pytest.mark.parametrize("case, damage, words", [
    ("test part with its own vocabulary", _own_vocabulary, ("test", "vocabular")),
    ("NaN rating", _nan_rating, ("nan",)),
    ("rating outside the scale", _off_scale, ()),
    ("no val part", _no_val, ("val",)),
], ids=["own_vocabulary", "nan_rating", "off_scale", "no_val"])
def test_api_hostile_input(tmp_path, monkeypatch, case, damage, words):
    from recjax.config import RunConfig
    from recjax.experiment import run
    from recjax.models.mf import MFConfig

    def fail(*args, **kwargs):
        raise AssertionError(f"{case}: training started before the input was refused")

    monkeypatch.setattr(loop_module, "make_epoch", fail)
    splits = damage(_parts())
    with pytest.raises((ValueError, TypeError)) as info:
        run(RunConfig(dataset="synthetic", split="random", epochs=1, quiet=True,
                        out=str(tmp_path / "run")), MFConfig(embedding_dim=4), splits=splits)
    assert not isinstance(info.value, KeyError), f"{case}: a bare KeyError: {info.value!r}"
    message = str(info.value)
    assert len(message.strip().splitlines()) == 1, message
    assert not words or any(word in message.lower() for word in words), (case, message)


# ----------------------------------------------------------------------------- 8. full disk
def _failing_save(monkeypatch, nth: int) -> None:
    """``Checkpoints.save`` raises ENOSPC on its ``nth`` call, leaving a half-created
    checkpoint folder behind as a full disk would."""
    original = checkpoint_module.Checkpoints.save
    calls = {"n": 0}

    def save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            which = args[0] if args else kwargs.get("which", "last")
            Path(self.directory, str(which)).mkdir(parents=True, exist_ok=True)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.Checkpoints, "save", save)


@pytest.mark.parametrize("nth", [3, 1], ids=["during_epoch_2", "first_save"])
def test_full_disk_then_resume(synthetic_run, tmp_path, capsys, monkeypatch, nth):
    run_dir = tmp_path / "run"
    # a checkpoint after every epoch, so that the nth save falls where the case says
    argv = [*SYNTHETIC, "--epochs", 2, "--out", run_dir, "--checkpoint-seconds", 0]
    with monkeypatch.context() as patch:
        _failing_save(patch, nth)
        try:
            status, out, err = cli(capsys, *argv)
        except OSError:  # raised through main is also a failure that stops the run
            status, (out, err) = 2, capsys.readouterr()
    assert status == 2, (out, err)

    status, out, err = cli(capsys, *argv, "--resume")
    assert status == 0, err
    resumed, whole = _arrays(run_dir / "embeddings.npz"), _arrays(synthetic_run / "embeddings.npz")
    assert set(resumed) == set(whole)
    for key in whole:
        assert np.array_equal(resumed[key], whole[key]), key
    assert _epochs(run_dir) == [1, 2]


# ----------------------------------------------------------------------------- 9. other size
def test_checkpoint_into_model_of_another_size(synthetic_run):
    from flax import nnx

    from recjax.models.mf import MF, MFConfig
    from recjax.train.checkpoint import CheckpointError, Checkpoints
    from recjax.train.step import Model

    saved = json.loads((synthetic_run / "config.json").read_text())["model"]
    model_cfg = MFConfig(**saved)
    expect = {"model_config": dataclasses.asdict(model_cfg)}
    checkpoints = Checkpoints(synthetic_run / "checkpoints")

    def template(n_users: int) -> dict:
        return Model.split(MF(model_cfg, n_users, 500, rngs=nnx.Rngs(0))).params

    checkpoints.restore_best(template(1000), expect)  # the right size restores
    for n_users in (1001, 999):  # one row more (zero-padded today), one fewer (cut today)
        with pytest.raises(CheckpointError):
            checkpoints.restore_best(template(n_users), expect)


# ----------------------------------------------------------------------------- 10. resume settings
def test_resume_with_different_settings(synthetic_run, tmp_path, capsys):
    run_dir = _copy(synthetic_run, tmp_path)
    line = one_line_error(*cli(capsys, *SYNTHETIC[:-3], "--embedding-dim", 16, "--quiet",
                               "--epochs", 2, "--out", run_dir, "--resume"))
    assert "embedding_dim" in _without(line, run_dir), line
    line = one_line_error(*cli(capsys, *SYNTHETIC, "--epochs", 1, "--out", run_dir, "--resume"))
    assert "epochs" in _without(line, run_dir), line
    status, _, err = cli(capsys, *SYNTHETIC, "--epochs", 4, "--out", run_dir, "--resume")
    assert status == 0, err
    assert _epochs(run_dir) == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- 11. sizes
def test_impossible_sizes_exit_2(synthetic_run, tmp_path, capsys):
    # a cut-off beyond the catalogue (500 items) is clipped to it, not an error
    status, _, err = cli(capsys, "evaluate", synthetic_run, "--k", 5000, "--no-baselines")
    assert status == 0, err

    # in a capped subprocess: today these try to allocate terabytes / hundreds of GB
    base = ["train", "--dataset", "synthetic", "--split", "random", "--quiet"]
    for flags, words in ((["--batch-size", "1000000000"], ("1000000000", "1,000,000,000", "batch")),
                         (["--embedding-dim", "100000000"], ("100000000", "100,000,000", "embedding"))):
        out = tmp_path / f"run{flags[0]}"
        proc = subprocess_cli(*base, *flags, "--out", out, memory_gib=48, timeout=180)
        line = subprocess_error(proc)
        assert any(word in _without(line, out) for word in words), line

    line = one_line_error(*cli(capsys, *SYNTHETIC, "--optimizer", "adam", "--learning-rate", 1000,
                               "--epochs", 5, "--out", tmp_path / "diverged"))
    assert "diverged" in line, line


# ----------------------------------------------------------------------------- kill -9
def test_resume_after_kill_9_is_bitwise_identical(tmp_path):
    """A training process killed with SIGKILL (at whatever point it was: an epoch, a
    checkpoint write, a metrics rewrite) resumes to exactly the uninterrupted run."""
    import signal
    import time

    # a checkpoint after every epoch (the default writes at most once a minute)
    flags = [*SYNTHETIC, "--epochs", "6", "--patience", "30", "--batch-size", "256",
             "--checkpoint-seconds", "0"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "recjax", *flags, "--out", str(killed)],
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list((killed / "checkpoints" / "last").glob("[2-9]/recjax-manifest.json")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert not (killed / "embeddings.npz").exists()
    resumed = subprocess_cli(*flags, "--out", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    full = subprocess_cli(*flags, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    a, b = np.load(killed / "embeddings.npz"), np.load(tmp_path / "full" / "embeddings.npz")
    for key in ("user_embeddings", "item_embeddings"):
        assert np.array_equal(a[key], b[key]), key
    assert [r.get("epoch") for r in _lines(killed / "metrics.jsonl") if "epoch" in r] == [1, 2, 3, 4, 5, 6]


def test_a_resumed_epoch_replaces_every_later_record_of_its_phase(tmp_path):
    """A resume restarts at its last checkpoint, possibly several epochs back: the
    records logged after it, from before the interruption, are dropped as it re-logs."""
    from recjax.run_folder import RunWriter

    writer = RunWriter(tmp_path / "run")
    writer.records = [{"epoch": e, "train_loss": 1.0} for e in (1, 2, 3, 4)]
    writer.records += [{"phase": "refit", "epoch": 1, "train_loss": 2.0}]
    (tmp_path / "run").mkdir()
    writer.log({"epoch": 2, "train_loss": 0.5})  # resumed from the checkpoint of epoch 1
    assert [(r.get("phase"), r["epoch"], r["train_loss"]) for r in writer.records] == [
        (None, 1, 1.0), ("refit", 1, 2.0), (None, 2, 0.5)]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 1, 2]


# ----------------------------------------------------------------------------- gapped integer ids
# Raw integer ids far from 0..n-1 (a user 7_000_000, an item 10^12): a query by raw id must
# reach the row of that id's rank among the sorted ids, and an id in a gap is unknown.
GAPPED_USERS = np.array([10, 500, *(7_000_000 + 1_000 * k for k in range(38))])
GAPPED_ITEMS = np.array([3, 99, 1_000_000_000_000, *(1_000_000 + 77 * k for k in range(1, 28))])


@pytest.fixture(scope="module")
def gapped(tmp_path_factory) -> tuple[pd.DataFrame, dict[str, Path]]:
    """(ratings frame, {"mf", "ials", "ease": run folder}) on 40 users x 30 items with
    gapped integer ids, 60% of the pairs rated ``clip(round(3 + a_u + c_i + noise), 1, 5)``
    with planted extremes: user 10 and item 3 at +2.5, user 500 and item 99 at -2.5, so
    that MF's unclipped prediction leaves 1..5 (a pair at +5: 8, at -5: -2)."""
    from recjax.config import RunConfig
    from recjax.data import Ratings, split_ratings
    from recjax.experiment import run
    from recjax.models.als import IALSConfig
    from recjax.models.ease import EASEConfig
    from recjax.models.mf import MFConfig

    rng = np.random.default_rng(0)
    n_users, n_items = len(GAPPED_USERS), len(GAPPED_ITEMS)
    pairs = rng.choice(n_users * n_items, size=int(0.6 * n_users * n_items), replace=False)
    u, i = pairs // n_items, pairs % n_items
    a, c = rng.uniform(-1, 1, n_users), rng.uniform(-1, 1, n_items)
    a[:2] = c[:2] = 2.5, -2.5
    rating = np.clip(np.round(3 + a[u] + c[i] + rng.normal(0, 0.3, len(u))), 1, 5)
    frame = pd.DataFrame({"user": GAPPED_USERS[u], "item": GAPPED_ITEMS[i], "rating": rating})
    splits = split_ratings(Ratings.from_pandas(frame), "random", seed=0)
    root = tmp_path_factory.mktemp("gapped")
    runs = {}
    for name, train, model in (("mf", dict(epochs=30), MFConfig(embedding_dim=4)),
                               ("ials", dict(model="ials", epochs=3), IALSConfig(embedding_dim=4)),
                               ("ease", dict(model="ease"), EASEConfig(l2=10.0))):
        runs[name] = root / name
        run(RunConfig(quiet=True, out=str(runs[name]), **train), model, splits=splits)
    return frame, runs


def _rank_of(raw_ids) -> dict:
    """Raw id -> row, computed from the ids themselves: the rank among the sorted unique ids."""
    return {raw: row for row, raw in enumerate(sorted(set(np.asarray(raw_ids).tolist())))}


def _mf_by_hand(run) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """MF's parameters as arrays (U, V, b_u, b_i, mu): its rating is ``mu + b_u + b_i + U_u . V_i``."""
    m = run.model()
    return (np.asarray(m.user_embedding[...], np.float64), np.asarray(m.item_embedding[...], np.float64),
            np.asarray(m.user_bias[...], np.float64), np.asarray(m.item_bias[...], np.float64),
            float(m.offset))


def test_mf_run_predict_clips_to_the_rating_scale(gapped):
    """A regression run's predict is the rating clipped to the scale; clip=False the raw one."""
    from recjax.runs import Run

    frame, runs = gapped
    run = Run.open(runs["mf"])
    users, items = _rank_of(frame["user"]), _rank_of(frame["item"])
    U, V, bu, bi, mu = _mf_by_hand(run)
    rows = np.array([users[u] for u in GAPPED_USERS])
    cols = np.array([items[i] for i in GAPPED_ITEMS])
    raw = mu + bu[rows][:, None] + bi[cols][None, :] + U[rows] @ V[cols].T
    assert raw.max() > 5.2 and raw.min() < 0.8  # the planted extremes leave the scale
    grid_u, grid_i = GAPPED_USERS[:, None], GAPPED_ITEMS[None, :]
    np.testing.assert_allclose(run.predict(grid_u, grid_i), np.clip(raw, 1, 5), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run.predict(grid_u, grid_i, clip=False), raw, rtol=1e-5, atol=1e-5)
    assert float(run.predict(10, 3)) == 5.0 and float(run.predict(500, 99)) == 1.0


def test_ials_run_predict_is_its_raw_score(gapped):
    """iALS's predict is ``<w_u, h_i>`` from the saved factors, never clipped to 1..5."""
    from recjax.runs import Run

    frame, runs = gapped
    run = Run.open(runs["ials"])
    with np.load(runs["ials"] / "embeddings.npz", allow_pickle=False) as npz:
        U, V = npz["user_embeddings"].astype(np.float64), npz["item_embeddings"].astype(np.float64)
    users, items = _rank_of(frame["user"]), _rank_of(frame["item"])
    expected = U[[users[u] for u in GAPPED_USERS]] @ V[[items[i] for i in GAPPED_ITEMS]].T
    assert expected.max() < 1.0  # preferences (targets 0 and 1): every one below the scale
    for clip in (True, False):
        np.testing.assert_allclose(run.predict(GAPPED_USERS[:, None], GAPPED_ITEMS[None, :], clip=clip),
                                   expected, rtol=1e-5, atol=1e-6)


def test_ease_run_predict_is_its_raw_score(gapped):
    """EASE's predict is ``(X B)_ui`` with B solved here in closed form from the training
    part's pattern (Steck 2019: P = (X'X + lambda I)^-1, B = I - P / diag(P)), never clipped."""
    from recjax.runs import Run

    frame, runs = gapped
    run = Run.open(runs["ease"])
    users, items = _rank_of(frame["user"]), _rank_of(frame["item"])
    train = run.splits["train"].to_frame()
    X = np.zeros((len(users), len(items)))
    X[[users[u] for u in train["user_id"]], [items[i] for i in train["item_id"]]] = 1.0
    P = np.linalg.inv(X.T @ X + 10.0 * np.eye(len(items)))
    B = np.eye(len(items)) - P / np.diag(P)
    expected = (X @ B)[[users[u] for u in GAPPED_USERS]][:, [items[i] for i in GAPPED_ITEMS]]
    assert (expected < 1).mean() > 0.9  # nearly every score lies below the scale
    for clip in (True, False):
        np.testing.assert_allclose(run.predict(GAPPED_USERS[:, None], GAPPED_ITEMS[None, :], clip=clip),
                                   expected, rtol=1e-4, atol=1e-5)


def test_gapped_integer_ids_reach_their_own_rows(gapped):
    """recommend, predict and similar_items by raw id answer for the row of that id's rank
    (computed here from the input frame), and an id in a gap is unknown."""
    from recjax.data import UnknownIdError
    from recjax.runs import Run

    frame, runs = gapped
    run = Run.open(runs["mf"])
    users, items = _rank_of(frame["user"]), _rank_of(frame["item"])
    item_ids = np.array(sorted(items))
    assert np.array_equal(run.embeddings().user_ids, sorted(users))
    assert np.array_equal(run.embeddings().item_ids, item_ids)
    U, V, bu, bi, mu = _mf_by_hand(run)

    for u, i in ((10, 3), (7_000_000, 1_000_000_000_000), (500, 1_000_077), (7_037_000, 99)):
        expected = mu + bu[users[u]] + bi[items[i]] + U[users[u]] @ V[items[i]]
        np.testing.assert_allclose(float(run.predict(u, i, clip=False)), expected, rtol=1e-5, atol=1e-5)

    top = run.recommend([7_000_000, 7_021_000], N=5)
    for row, u in enumerate((7_000_000, 7_021_000)):
        score = bi + U[users[u]] @ V.T  # the order of mu + b_u + b_i + U_u . V_i for one user
        score[[items[i] for i in frame.loc[frame["user"] == u, "item"]]] = -np.inf  # rated anywhere
        assert np.isfinite(np.sort(score)[-5])
        assert top.ids[row].tolist() == item_ids[np.argsort(-score)[:5]].tolist()

    with np.load(runs["mf"] / "embeddings.npz", allow_pickle=False) as npz:
        vectors = npz["item_embeddings"].astype(np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ unit[items[1_000_000_000_000]]
    cosine[items[1_000_000_000_000]] = -np.inf
    similar = run.similar_items(1_000_000_000_000, N=3)
    assert similar.ids.tolist() == item_ids[np.argsort(-cosine)[:3]].tolist()
    np.testing.assert_allclose(similar.scores, np.sort(cosine)[::-1][:3], rtol=1e-5, atol=1e-6)

    for query in (lambda: run.predict(11, 3), lambda: run.predict(10, 4), lambda: run.predict(10, 100),
                  lambda: run.recommend(6_999_999, N=3), lambda: run.similar_items(999_999_999_999, N=3)):
        with pytest.raises(UnknownIdError, match="unknown (user|item) id"):
            query()


# ----------------------------------------------------------------------------- ids by type; short rows
@pytest.fixture(scope="module")
def string_run(tmp_path_factory):
    """An opened MF run (1 epoch) on :func:`_string_id_frame`'s string ids "u0".., "i0".."""
    from recjax.config import RunConfig
    from recjax.data import Ratings, split_ratings
    from recjax.experiment import run
    from recjax.models.mf import MFConfig
    from recjax.runs import Run

    splits = split_ratings(Ratings.from_pandas(_string_id_frame(), rating_scale=(1, 10)), "random", seed=0)
    out = tmp_path_factory.mktemp("strings") / "run"
    run(RunConfig(epochs=1, quiet=True, out=str(out)), MFConfig(embedding_dim=4), splits=splits)
    return Run.open(out)


def _unknown(query) -> tuple[str | None, int | None, str]:
    """(field, position, message) of the UnknownIdError that ``query()`` raises (a ValueError)."""
    from recjax.data import UnknownIdError

    with pytest.raises(UnknownIdError) as info:
        query()
    assert isinstance(info.value, ValueError)
    return info.value.field, info.value.position, str(info.value)


@pytest.mark.parametrize("query, field, position, shown", [
    (lambda r: r.recommend(7), "users", None, "7"),
    (lambda r: r.recommend(["u3", 7]), "users", 1, "7"),
    (lambda r: r.recommend(np.array([3, 4])), "users", 0, "3"),
    (lambda r: r.recommend("u3", items=["i1", "i2", 5]), "items", 2, "5"),
    (lambda r: r.predict("u3", 7), "items", None, "7"),
    (lambda r: r.predict(["u1", 2], "i1"), "users", 1, "2"),
    (lambda r: r.similar_items(7), "items", None, "7"),
    (lambda r: r.similar_items(["i1", True]), "items", 1, "True"),
])
def test_an_int_id_on_a_string_run_is_an_unknown_id(string_run, query, field, position, shown):
    """An int (or a bool) where the run's ids are strings is an unknown id named with its
    argument and position (it was a raw TypeError from comparing int with str)."""
    side = field[:-1]
    where = field if position is None else f"{field}[{position}]"
    assert _unknown(lambda: query(string_run)) == (
        field, position, f"{where}: unknown {side} id {shown} (this run's {side} ids are strings)")


def test_an_absent_string_id_names_the_run_size(string_run):
    n_users = _string_id_frame()["user"].nunique()
    assert _unknown(lambda: string_run.recommend(["u1", "u1", "nobody"])) == (
        "users", 2, f"users[2]: unknown user id 'nobody' (the run has {n_users} users)")


def test_ids_of_the_wrong_type_or_in_a_gap_on_an_integer_run(gapped):
    """A string (even "10", a user's id as text), a bool, a float and an id in a gap or
    beyond int64 are unknown ids of an integer run, named with argument and position."""
    from recjax.runs import Run

    frame, runs = gapped
    run = Run.open(runs["mf"])
    n_users, n_items = frame["user"].nunique(), frame["item"].nunique()
    assert 10 in set(frame["user"]) and 11 not in set(frame["user"]) and 4 not in set(frame["item"])
    ints = "this run's {} ids are integers"
    for query, expected in (
        (lambda: run.recommend("10"), ("users", None, f"users: unknown user id '10' ({ints.format('user')})")),
        (lambda: run.recommend([10, True]), ("users", 1, f"users[1]: unknown user id True ({ints.format('user')})")),
        (lambda: run.predict([10, 500], [3, 99.0]), ("items", 1, f"items[1]: unknown item id 99.0 "
                                                                 f"({ints.format('item')})")),
        (lambda: run.recommend([10, 500, 11]), ("users", 2, f"users[2]: unknown user id 11 "
                                                            f"(the run has {n_users} users)")),
        (lambda: run.recommend(10, items=[3, 4]), ("items", 1, f"items[1]: unknown item id 4 "
                                                               f"(the run has {n_items} items)")),
        (lambda: run.similar_items([3, 2**70]), ("items", 1, f"items[1]: unknown item id {2**70} "
                                                             f"(the run has {n_items} items)")),
    ):
        assert _unknown(query) == expected


def test_recommend_leaves_out_places_it_cannot_fill(gapped):
    """A user with fewer candidates than N gets only them, best first (the rows used to be
    padded with already-rated items scored -inf): 3 unrated candidates asked for N=10 give
    3 items; the whole catalogue gives each user their unrated items, rows of their own
    lengths. Orders and scores from MF's parameters by hand (``b_i + U_u . V_i``)."""
    from recjax.runs import Run

    frame, runs = gapped
    run = Run.open(runs["mf"])
    users, items = _rank_of(frame["user"]), _rank_of(frame["item"])
    item_ids = np.array(sorted(items))
    U, V, _, bi, _ = _mf_by_hand(run)
    rated = {u: set(frame.loc[frame["user"] == u, "item"]) for u in GAPPED_USERS}  # rated anywhere

    def by_hand(u, candidates) -> tuple[list, np.ndarray]:
        score = bi + U[users[u]] @ V.T
        order = [k for k in np.argsort(-score, kind="stable") if item_ids[k] in candidates]
        return item_ids[order].tolist(), score[order]

    user = int(GAPPED_USERS[0])
    unrated = [i for i in GAPPED_ITEMS.tolist() if i not in rated[user]][:3]
    asked = unrated + sorted(rated[user])[:4]
    top = run.recommend(user, N=10, items=asked)
    assert top.ids.tolist() == by_hand(user, set(unrated))[0] and len(top.ids) == 3
    np.testing.assert_allclose(top.scores, by_hand(user, set(unrated))[1], rtol=1e-5, atol=1e-5)

    most, fewest = max(rated, key=lambda u: len(rated[u])), min(rated, key=lambda u: len(rated[u]))
    assert len(rated[most]) > len(rated[fewest])  # rows of different lengths
    both = run.recommend([most, fewest], N=len(GAPPED_ITEMS))
    assert isinstance(both.ids, list) and len(both.ids) == len(both.scores) == 2
    for row, u in enumerate((most, fewest)):
        want, scores = by_hand(u, set(GAPPED_ITEMS.tolist()) - rated[u])
        assert both.ids[row].tolist() == want and len(want) == len(GAPPED_ITEMS) - len(rated[u])
        np.testing.assert_allclose(both.scores[row], scores, rtol=1e-5, atol=1e-5)
    alone = run.recommend(most, N=len(GAPPED_ITEMS))  # a scalar user: its row alone
    assert alone.ids.tolist() == both.ids[0].tolist()


def test_a_dropped_run_is_garbage_collected(synthetic_run):
    """A Run's model and scorers are cached on the Run itself: opening many runs (a
    study, a server reloading) and dropping them frees them, not a module-level cache."""
    import gc
    import weakref

    from recjax.runs import Run

    run = Run.open(synthetic_run)
    user = run.data.users.ids[0]
    first = run.recommend(user, N=3)  # builds and caches the model and the dot scorer
    assert run.model() is run.model() and run.scorer("dot") is run.scorer("dot")
    run.similar_items(run.data.items.ids[0], N=2)
    gone = weakref.ref(run)
    del run
    gc.collect()
    assert gone() is None, "a Run opened and dropped is still referenced"
    again = Run.open(synthetic_run).recommend(user, N=3)  # a fresh Run answers alike
    assert again.ids.tolist() == first.ids.tolist()
