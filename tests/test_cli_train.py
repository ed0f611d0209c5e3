"""`recjax train`: a smoke run and its run folder, TOML configs, resume, every bad setting
as one `recjax: error:` line (exit 2, nothing compiled), and the ml-100k default run."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import recjax.train.loop as loop_module
from recjax.cli import build_parser, main, train_configs
from recjax.evaluation import evaluate_run
from recjax.families import MODELS
from recjax.models.mf import MFConfig
from recjax.runs import Run

SYNTHETIC = ["train", "--dataset", "synthetic", "--split", "random", "--embedding-dim", "4", "--quiet"]


pytestmark = pytest.mark.usefixtures("persistent_compile_cache")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


# ----------------------------------------------------------------------------- smoke run
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main([*SYNTHETIC, "--epochs", "2", "--out", str(out)])
    return code, out


def test_smoke_run_writes_the_run_folder(smoke, capsys):
    code, out = smoke
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["dataset"] == "synthetic" and config["train"]["epochs"] == 2
    assert config["train"]["out"] == str(out)
    assert config["model"]["embedding_dim"] == 4
    assert set(config["model"]) == {f.name for f in dataclasses.fields(MFConfig)}

    lines = _lines(out / "metrics.jsonl")
    epochs, final = lines[:-1], lines[-1]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert {"train_loss", "train_data_loss", "val_rmse", "val_mse", "val_mae"} <= set(e)
        assert not any(k.startswith("test_") for k in e)  # the test part is scored once, at the end
    assert final["event"] == "final"
    assert {"train_rmse", "val_rmse", "test_rmse", "test_mse", "test_mae", "best_epoch",
            "epochs_run"} <= set(final)
    assert not [k for k in final if k.startswith(("global_mean", "user_mean"))]  # fitted when evaluating
    assert final["epochs_run"] == 2 and final["best_epoch"] in (1, 2)
    table = evaluate_run(Run.open(out), k=5)
    assert table["global mean"]["rmse"] > final["test_rmse"]  # it learned something in 2 epochs

    emb = _arrays(out / "embeddings.npz")
    assert set(emb) == {"user_ids", "user_embeddings", "item_ids", "item_embeddings"}
    assert emb["user_embeddings"].shape == (len(emb["user_ids"]), 4)
    assert emb["item_embeddings"].shape == (len(emb["item_ids"]), 4)
    assert len(emb["user_ids"]) == 1000 and len(emb["item_ids"]) == 500  # synthetic defaults
    assert np.all(np.isfinite(emb["user_embeddings"]))

    assert (out / "checkpoints" / "last" / "2").is_dir()
    best = [p.name for p in (out / "checkpoints" / "best").iterdir() if p.name.isdigit()]
    assert best == [str(final["best_epoch"])]


def test_toml_config_then_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[train]\ndataset = "synthetic"\nsplit = "random"\nepochs = 1\nlearning_rate = 1\npatience = 7\n'
        '[model]\nembedding_dim = 3\nl2 = 0.5\n'
    )
    args = build_parser().parse_args(["train", "--config", str(toml), "--epochs", "5", "--l2", "0.25"])
    train_cfg, model_cfg = train_configs(args)
    assert train_cfg.epochs == 5 and model_cfg.l2 == 0.25  # flags win over the file
    assert train_cfg.dataset == "synthetic" and train_cfg.patience == 7  # the file wins over defaults
    assert train_cfg.learning_rate == 1.0 and model_cfg.embedding_dim == 3
    assert model_cfg.gravity == MFConfig().gravity  # untouched: the default


def test_toml_run_and_resume_match_an_uninterrupted_run(smoke, tmp_path):
    """A run of 3 epochs configured by TOML equals the smoke run (2 epochs) resumed to 3."""
    _, short = smoke
    resumed = tmp_path / "resumed"
    shutil.copytree(short, resumed)
    assert main([*SYNTHETIC, "--epochs", "3", "--out", str(resumed), "--resume"]) == 0

    toml = tmp_path / "run.toml"
    toml.write_text('[train]\ndataset = "synthetic"\nsplit = "random"\nepochs = 1\n'
                    '[model]\nembedding_dim = 4\n')
    full = tmp_path / "full"
    assert main(["train", "--config", str(toml), "--epochs", "3", "--quiet", "--out", str(full)]) == 0

    a, b = _arrays(resumed / "embeddings.npz"), _arrays(full / "embeddings.npz")
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    resumed_lines, full_lines = _lines(resumed / "metrics.jsonl"), _lines(full / "metrics.jsonl")
    # the resumed run's log is rewritten whole: each epoch once, one final record
    assert [line.get("epoch", line.get("event")) for line in resumed_lines] == [1, 2, 3, "final"]
    drop = {"seconds", "epoch_seconds", "val_seconds", "compile_seconds", "train_seconds",
            "examples_per_second"}
    clean = lambda d: {k: v for k, v in d.items() if k not in drop}  # noqa: E731
    assert clean(resumed_lines[-1]) == clean(full_lines[-1])
    assert clean(resumed_lines[2]) == clean(full_lines[2])
    assert json.loads((full / "config.json").read_text())["train"]["epochs"] == 3


# ----------------------------------------------------------------------------- errors
@pytest.fixture
def no_compile(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("compiled before the error was reported")

    monkeypatch.setattr(loop_module, "make_epoch", fail)


def _error(capsys, argv) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recjax: error: "), captured.err
    return lines[0]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "invalid epochs=0"),
        (["--batch-size", "-5"], "invalid batch_size=-5"),
        (["--learning-rate", "0"], "invalid learning_rate=0.0"),
        (["--lr", "-1"], "invalid learning_rate=-1.0"),
        (["--optimizer", "nesterov"], "unknown optimizer 'nesterov'"),
        (["--schedule", "linear"], "unknown schedule 'linear'"),
        (["--task", "ranking"], "unknown task 'ranking'"),
        (["--weight-decay", "0.1", "--optimizer", "adam"], "weight_decay needs optimizer='adamw'"),
        (["--embedding-dim", "0"], "embedding_dim must be >= 1, got 0"),
        (["--l2", "-0.5"], "l2 must be >= 0, got -0.5"),
        (["--gravity", "-1"], "gravity must be >= 0"),
        (["--squash", "--task", "binary"], "squash applies to the regression task only"),
        (["--num-negatives", "2"], "num_negatives applies to the binary task only"),
        (["--split", "u9"], "unknown split 'u9'"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--resume"], "--resume needs --out RUN_FOLDER"),
    ],
)
def test_bad_settings_are_one_line_errors(capsys, tmp_path, no_compile, flags, message):
    line = _error(capsys, ["train", "--dataset", "synthetic", "--split", "random", "--quiet",
                           "--out", str(tmp_path / "run"), *flags] if "--resume" not in flags
                  else ["train", "--quiet", *flags])
    assert message in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_flag_of_another_model_is_an_error(capsys, tmp_path, no_compile):
    mf_fields = {f.name for f in dataclasses.fields(MFConfig)}
    foreign = {(name, f.name) for name, spec in MODELS.items() if name != "mf"
               for f in dataclasses.fields(spec.config) if f.name not in mf_fields
               and type(f.default) in (int, float, str)}
    if not foreign:
        pytest.skip("only MF is registered")
    owner, field = sorted(foreign)[0]
    flag = "--" + field.replace("_", "-")
    value = str(dataclasses.fields(MODELS[owner].config)[
        [f.name for f in dataclasses.fields(MODELS[owner].config)].index(field)].default)
    line = _error(capsys, [*SYNTHETIC, "--out", str(tmp_path / "run"), flag, value])
    assert "flag(s) not used by model 'mf'" in line and flag in line and owner in line


def test_toml_errors(capsys, tmp_path, no_compile):
    bad_type = tmp_path / "type.toml"
    bad_type.write_text('[train]\nepochs = "five"\n')
    assert "RunConfig setting epochs must be int, got 'five'" in _error(
        capsys, ["train", "--config", str(bad_type), "--quiet"])
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[train]\nepoch = 3\n")
    assert "unknown RunConfig setting(s): epoch" in _error(capsys, ["train", "--config", str(unknown)])
    table = tmp_path / "table.toml"
    table.write_text("[optim]\nlr = 3\n")
    assert "unknown table(s) ['optim']; use [train] and [model]" in _error(
        capsys, ["train", "--config", str(table)])
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    assert f"cannot read --config {broken}" in _error(capsys, ["train", "--config", str(broken)])
    assert "cannot read --config" in _error(capsys, ["train", "--config", str(tmp_path / "missing.toml")])


def test_resume_errors(capsys, smoke, tmp_path, no_compile):
    _, run = smoke
    assert "no run to resume" in _error(
        capsys, [*SYNTHETIC, "--out", str(tmp_path / "nothing"), "--resume"])
    assert "the settings differ" in _error(
        capsys, [*SYNTHETIC, "--out", str(run), "--resume", "--embedding-dim", "8"])
    assert "already holds a run; use --resume" in _error(capsys, [*SYNTHETIC, "--out", str(run)])


def test_flag_syntax_errors_exit_2(capsys):
    """argparse's own checks (a value of the wrong type) also exit with status 2."""
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "abc"])
    assert info.value.code == 2
    assert "argument --epochs: invalid int value: 'abc'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- ml-100k
def test_default_train_on_ml100k_ua(movielens_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RECJAX_DATA", str(movielens_dir))
    out = tmp_path / "ua"
    assert main(["train", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["dataset"] == "ml-100k" and config["train"]["split"] == "ua"
    final = _lines(out / "metrics.jsonl")[-1]
    table = evaluate_run(Run.open(out))
    # the known ua.test MSE of the mean rating of ua.base (README's global-mean row)
    assert table["global mean"]["mse"] == pytest.approx(1.2589, abs=5e-4)
    assert table["user mean"]["mse"] < table["global mean"]["mse"]
    assert final["test_mse"] < table["global mean"]["mse"]
    assert final["epochs_run"] == 2
    emb = _arrays(out / "embeddings.npz")
    assert len(emb["user_ids"]) == 943 and len(emb["item_ids"]) == 1682
