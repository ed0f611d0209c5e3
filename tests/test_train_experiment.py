"""recjax.experiment.run: every bad setting is reported before any data is trained on
(nothing compiled, no run folder written)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from recjax.config import FAMILY_SETTINGS, RunConfig
from recjax.experiment import load_splits, run
from recjax.families import MODELS, ModelSpec
from recjax.models.mf import MF, MFConfig


@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly if run() gets as far as training (compiling): every family trains
    through its ModelSpec.fit."""
    def fit(*args, **kwargs):
        raise AssertionError("run() reached fit(): the error should have come first")

    monkeypatch.setattr(ModelSpec, "fit", fit)


def _synthetic(tmp_path, **kwargs) -> RunConfig:
    values = dict(dataset="synthetic", split="random", epochs=2, quiet=True, out=str(tmp_path / "run"))
    return RunConfig(**{**values, **kwargs})


def test_unknown_model(tmp_path, no_training):
    with pytest.raises(ValueError, match="unknown model 'nope'; choose one of mf"):
        run(_synthetic(tmp_path, model="nope"), MFConfig())


def test_model_config_of_another_class(tmp_path, no_training):
    with pytest.raises(TypeError, match="model 'mf' needs a MFConfig"):
        run(_synthetic(tmp_path), {"embedding_dim": 4})


def test_task_the_model_does_not_support(tmp_path, monkeypatch, no_training):
    def build(cfg, train, *, task, seed):
        return MF(cfg, train.n_users, train.n_items, rngs=None)

    monkeypatch.setitem(MODELS, "toy", ModelSpec(MFConfig, build, ("regression",)))
    monkeypatch.setitem(FAMILY_SETTINGS, "toy", {})  # a family registers its training settings too
    with pytest.raises(ValueError, match=r"model 'toy' does not support task 'binary' \(regression\)"):
        run(_synthetic(tmp_path, model="toy", task="binary"), MFConfig())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "train, model, message",
    [
        (dict(task="binary"), dict(squash=True), "squash applies to the regression task only"),
        (dict(), dict(num_negatives=2), "num_negatives applies to the binary task only"),
    ],
)
def test_model_settings_that_contradict_the_task(tmp_path, no_training, train, model, message):
    with pytest.raises(ValueError, match=message):
        run(_synthetic(tmp_path, **train), MFConfig(embedding_dim=2, **model))
    assert not (tmp_path / "run").exists()  # nothing written either


def test_unknown_split_and_split_of_another_dataset(tmp_path, no_training):
    with pytest.raises(ValueError, match="unknown split 'u9'; use random, per_user, temporal, users, last_one or one of ua, ub, u1"):
        run(_synthetic(tmp_path, split="u9"), MFConfig())
    with pytest.raises(ValueError, match="split 'u1' exists for ml-100k only; use --split random or"):
        run(RunConfig(dataset="synthetic", split="u1", out=str(tmp_path / "run")), MFConfig())


def test_resume_without_a_run_folder(tmp_path, no_training):
    with pytest.raises(ValueError, match="--resume needs --out RUN_FOLDER"):
        run(RunConfig(dataset="synthetic", split="random"), MFConfig(), resume=True)
    with pytest.raises(ValueError, match="--resume: no run to resume in .* \\(no such folder\\)"):
        run(_synthetic(tmp_path), MFConfig(), resume=True)
    assert not (tmp_path / "run").exists()


def _started_run_folder(tmp_path, cfg: RunConfig, model_cfg: MFConfig):
    """A run folder as a run leaves it when interrupted before its first checkpoint."""
    import dataclasses

    from recjax.run_folder import RunWriter

    with RunWriter(tmp_path / "run") as writer:
        writer.begin({"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_cfg)},
                     load_splits(cfg), resume=False)
    return tmp_path / "run"


def test_resume_with_other_settings(tmp_path, no_training):
    cfg = _synthetic(tmp_path)
    _started_run_folder(tmp_path, cfg, MFConfig(embedding_dim=4))
    with pytest.raises(ValueError, match=r"--resume: the settings differ .*embedding_dim \(4 -> 8\)"):
        run(cfg, MFConfig(embedding_dim=8), resume=True)
    with pytest.raises(ValueError, match=r"the settings differ .*learning_rate"):
        run(_synthetic(tmp_path, learning_rate=0.1), MFConfig(embedding_dim=4), resume=True)


def test_resume_with_other_data(tmp_path, no_training):
    cfg = _synthetic(tmp_path)
    _started_run_folder(tmp_path, cfg, MFConfig(embedding_dim=4))
    parts = load_splits(cfg)
    changed = {**parts, "test": parts["test"].subset(slice(1, None))}
    with pytest.raises(ValueError, match=r"the data differ .*5000 -> 4999 test ratings"):
        run(cfg, MFConfig(embedding_dim=4), resume=True, splits=changed)


def _rating_changed(train) -> dict:
    rating = train.rating.copy()
    rating[0] = 1.0 if rating[0] != 1.0 else 5.0
    return {"rating": rating}


def _timestamp_changed(train) -> dict:
    timestamp = train.timestamp.copy()
    timestamp[0] += 1
    return {"timestamp": timestamp}


def _items_swapped(train) -> dict:
    """The items of two ratings of one user swapped: the same (user, item) pairs, the
    ratings now attached to the other item."""
    rows = next(rows for rows in np.split(np.argsort(train.user, kind="stable"),
                                          np.cumsum(np.bincount(train.user))[:-1])
                if len(rows) >= 2 and train.rating[rows[0]] != train.rating[rows[1]])
    item = train.item.copy()
    item[rows[:2]] = item[rows[1::-1]]
    return {"item": item}


@pytest.mark.parametrize("change", [_rating_changed, _timestamp_changed, _items_swapped])
def test_resume_with_data_changed_in_place(tmp_path, no_training, change):
    """Data of the same size (and the same users, items and pairs) with one value changed is
    other data: resuming on it is refused."""
    cfg = _synthetic(tmp_path)
    _started_run_folder(tmp_path, cfg, MFConfig(embedding_dim=4))
    parts = load_splits(cfg)
    train = parts["train"]
    changed = dataclasses.replace(train, **change(train))
    assert len(changed) == len(train) and changed.users is train.users and changed.items is train.items
    with pytest.raises(ValueError, match=r"--resume: the data differ .*\(the train part's contents\)"):
        run(cfg, MFConfig(embedding_dim=4), resume=True, splits={**parts, "train": changed})


def test_resume_of_a_folder_interrupted_before_its_first_checkpoint_starts_over(tmp_path):
    cfg = _synthetic(tmp_path, epochs=1)
    _started_run_folder(tmp_path, cfg, MFConfig(embedding_dim=2))
    resumed = run(cfg, MFConfig(embedding_dim=2), resume=True)
    fresh = run(_synthetic(tmp_path / "b", epochs=1), MFConfig(embedding_dim=2))
    assert resumed.metrics["test_rmse"] == fresh.metrics["test_rmse"]


def test_an_existing_run_is_not_overwritten(tmp_path, no_training):
    cfg = _synthetic(tmp_path)
    _started_run_folder(tmp_path, cfg, MFConfig())
    with pytest.raises(ValueError, match="holds an unfinished run: continue it with --resume"):
        run(cfg, MFConfig())
    (tmp_path / "run" / "run.json").unlink()
    (tmp_path / "run" / "checkpoints").mkdir()
    with pytest.raises(ValueError, match="already holds a run; use --resume to continue it or another --out"):
        run(cfg, MFConfig())


def test_load_splits_synthetic_random(tmp_path):
    cfg = _synthetic(tmp_path, test_fraction=0.2, val_fraction=0.1)
    parts = load_splits(cfg)
    n = sum(len(p) for p in parts.values())
    assert n == 50_000  # synthetic_ratings' default size
    assert len(parts["test"]) == 10_000 and len(parts["val"]) == 4_000
    assert parts["train"].users is parts["test"].users  # one vocabulary for every part
    again = load_splits(cfg)
    assert (again["val"].user == parts["val"].user).all()  # seeded


@pytest.mark.usefixtures("persistent_compile_cache")
def test_refit_trains_for_the_epoch_count_validation_chose(tmp_path):
    """--refit retrains on train + validation for ``best_epoch`` epochs, not ``cfg.epochs``:
    the refit epochs logged, and the refitted parameters, are those of an independent
    ``fit`` for exactly ``best_epoch`` epochs."""
    import dataclasses

    import numpy as np

    from recjax.data import synthetic_ratings
    from recjax.data.splits import holdout_split
    from recjax.train.loop import fit
    from recjax.train.step import Model

    # noisy ratings, a wide unregularised MF at a high rate: validation RMSE is best
    # after about 2 epochs and worse after that (patience 1 stops right there)
    data, _ = synthetic_ratings(200, 100, 4000, rank=4, noise_std=1.0, seed=7)
    train, test, _ = holdout_split(data, 0.1, seed=0)
    fit_part, val, _ = holdout_split(train, 0.2, seed=1)
    splits = {"train": fit_part, "val": val, "test": test}
    cfg = _synthetic(tmp_path, epochs=6, patience=1, learning_rate=0.01, batch_size=128, refit=True)
    model_cfg = MFConfig(embedding_dim=64, l2=0.0, init_std=0.1)
    result = run(cfg, model_cfg, splits=splits)

    best = result.metrics["best_epoch"]
    assert 1 <= best < cfg.epochs and result.metrics["stopped_early"]  # else the test proves nothing
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r.get("phase") == "refit"] == list(range(1, best + 1))
    assert result.metrics["refit_epochs"] == best and len(result.fit.history) == best

    spec = MODELS["mf"]
    both = fit_part.concat(val)
    alone = fit(Model.split(spec.build(model_cfg, both, task=cfg.task, seed=cfg.seed)),
                spec.inputs(both, task=cfg.task, binary_threshold=cfg.binary_threshold),
                dataclasses.replace(cfg, epochs=best), task=cfg.task, validate=None, monitor=None)
    assert set(alone.params) == set(result.fit.params)
    for name in alone.params:
        np.testing.assert_array_equal(np.asarray(result.fit.params[name]),
                                      np.asarray(alone.params[name]), err_msg=name)


def test_run_without_a_model_config_trains_the_cli_defaults(tmp_path):
    """``recjax.run(RunConfig(model=M))`` trains M's defaults, as ``train --model M`` does
    (it was a TypeError: run() missing 1 required positional argument: 'model_cfg')."""
    from recjax.cli import main

    assert main(["train", "--model", "ease", "--dataset", "synthetic", "--split", "random",
                 "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    run(RunConfig(model="ease", dataset="synthetic", split="random", out=str(tmp_path / "api"), quiet=True))
    cli, api = (json.loads((tmp_path / name / "config.json").read_text()) for name in ("cli", "api"))
    assert api["model"] == cli["model"] == dataclasses.asdict(MODELS["ease"].config())
    assert {k: v for k, v in api["train"].items() if k != "out"} == {k: v for k, v in cli["train"].items()
                                                                       if k != "out"}
