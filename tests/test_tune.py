"""`recjax tune`: a tiny study end to end (trial 0, pruning, fairness, resume after kill -9,
two workers on one storage, refusals, refit-best)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recjax.cli import main
from recjax.data import synthetic_ratings
from tests._subprocess_env import subprocess_env


SPACE = """
[train]
learning_rate = { low = 0.02, high = 1.0, log = true }
[model]
l2 = { low = 0.001, high = 0.3, log = true }
"""
#: a space of learning rates that learn (0.5, the default, is trial 0) and one that cannot (1e-6)
PLANTED = """
[train]
learning_rate = { choices = [0.5, 0.3, 0.7, 1e-06] }
"""


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory):
    """Ratings of 120 users x 60 items (a CSV with a header: user, item, rating)."""
    data, _ = synthetic_ratings(n_users=120, n_items=60, n_ratings=3000, seed=1)
    frame = pd.DataFrame({"user": data.users.ids[data.user], "item": data.items.ids[data.item],
                          "rating": data.rating})
    path = tmp_path_factory.mktemp("tune") / "ratings.csv"
    frame.to_csv(path, index=False)
    return path


def _flags(ratings_file: Path, study: Path, space: Path, *extra: str) -> list[str]:
    return ["tune", "--data", str(ratings_file), "--columns", "user,item,rating", "--split", "random",
            "--embedding-dim", "8", "--epochs", "6", "--batch-size", "256", "--space", str(space),
            "--out", str(study), *extra]


def _space(tmp_path: Path, text: str = SPACE) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


def _trials(study: Path) -> pd.DataFrame:
    return pd.read_csv(study / "trials.csv")


@pytest.fixture(scope="module")
def small_study(ratings_file, tmp_path_factory):
    """A 9-trial MF study (median pruning) of the planted space: trial 0 the defaults; with
    --seed 5 (each trial's draws seeded by trial_seed(5, number)), trials 6 and 8 draw the
    learning rate 1e-6."""
    root = tmp_path_factory.mktemp("study")
    study = root / "study"
    assert main(_flags(ratings_file, study, _space(root, PLANTED), "--trials", "9", "--seed", "5")) == 0
    return study


def test_trial_0_is_the_defaults_and_the_planted_bad_setting_is_pruned(small_study):
    trials = _trials(small_study)
    first = trials[trials["number"] == 0].iloc[0]
    assert first["defaults"] and first["train.learning_rate"] == 0.5 and first["state"] == "complete"
    bad = trials[trials["train.learning_rate"] == 1e-06]
    good = trials[(trials["train.learning_rate"] != 1e-06) & (trials["state"] == "complete")]
    # a learning rate of 1e-6 cannot leave the initial RMSE: each of its trials after the
    # pruner's 5 start-up trials is stopped early
    late = bad[bad["number"] >= 5]
    assert len(late) >= 2 and (late["state"] == "pruned").all(), trials
    assert (trials.loc[trials["state"] == "pruned", "note"].str.startswith("pruned after epoch")).all()
    assert good["value"].max() < bad["value"].min()  # what the pruner saw: 1e-6 stays behind
    best = json.loads((small_study / "best.json").read_text())
    assert best["best"]["params"]["train.learning_rate"] != 1e-06 and best["best"]["value"] == good["value"].min()
    assert best["metric"] == "val_rmse" and best["direction"] == "minimize"
    assert (small_study / "history.png").stat().st_size > 1000


def test_every_trial_is_a_run_that_never_saw_the_test_part(small_study, ratings_file):
    from recjax.runs import Run

    trials = _trials(small_study)
    frame = pd.read_csv(ratings_file)
    for _, row in trials[trials["state"] == "complete"].iterrows():
        run = Run.open(small_study / row["run"])
        val, test = run.splits["val"], run.splits["test"]
        # the trial's "test" part is its validation carve: the split's test ratings are not in it
        assert np.array_equal(val.user, test.user) and np.array_equal(val.item, test.item)
        assert run.final_metrics["val_rmse"] == pytest.approx(row["value"])
    assert len(frame) > len(run.splits["train"]) + len(run.splits["val"])  # a test part was held back


def test_a_killed_study_resumes_with_its_finished_trials_intact(ratings_file, tmp_path):
    study = tmp_path / "study"
    command = [sys.executable, "-m", "recjax", *_flags(ratings_file, study, _space(tmp_path), "--trials", "5",
                                                       "--pruner", "none")]
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill -9 while trial 2 (or later) runs
        if len(list((study / "trials").glob("trial-*"))) >= 3 if (study / "trials").is_dir() else False:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    before = _finished(study)
    assert len(before) >= 2, process.stdout.read()
    assert main(["tune", "report", str(study)]) == 0
    time.sleep(16)  # the killed trial's heartbeat goes stale (3 x 5 s)
    assert main(_flags(ratings_file, study, _space(tmp_path), "--trials", "5", "--pruner", "none",
                       "--resume")) == 0
    after = _finished(study)
    assert len(after) == 5 and len(set(after.values())) == 5  # five trials, no duplicate settings
    for number, value in before.items():  # the finished trials are untouched
        assert after[number] == value


def _finished(study: Path) -> dict[int, tuple]:
    """{trial number: (value, params...)} of the complete trials, read from Optuna's storage."""
    with sqlite3.connect(study / "study.db") as db:
        rows = db.execute("select t.number, v.value from trials t join trial_values v on t.trial_id = v.trial_id "
                          "where t.state = 'COMPLETE'").fetchall()
        params = db.execute("select t.number, p.param_name, p.param_value from trials t join trial_params p "
                            "on t.trial_id = p.trial_id where t.state = 'COMPLETE'").fetchall()
    out = {n: (v,) for n, v in rows}
    for n, name, value in sorted(params):
        out[n] = out[n] + ((name, value),)
    return out


def test_two_workers_complete_one_study_without_losing_or_repeating_a_trial(ratings_file, tmp_path):
    study = tmp_path / "study"
    assert main(_flags(ratings_file, study, _space(tmp_path), "--trials", "4", "--jobs", "2",
                       "--pruner", "none")) == 0
    trials = _trials(study)
    complete = trials[trials["state"] == "complete"]
    assert 4 <= len(complete) <= 5  # each worker stops once 4 are done (one may be finishing a fifth)
    assert complete["number"].is_unique and complete["run"].is_unique
    assert set(trials["state"]) <= {"complete"}
    for run in complete["run"]:
        assert json.loads((study / run / "run.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("space, message", [
    ("[train\nlearning_rate = 1", "space.toml"),
    ("[model]\nl3 = { low = 0.1, high = 1.0 }", "l3"),
    ("[model]\nl2 = { low = 1.0, high = 0.1 }", "low"),
])
def test_bad_spaces_and_settings_are_refused_before_any_trial(ratings_file, tmp_path, capsys, space, message):
    study = tmp_path / "study"
    assert main(_flags(ratings_file, study, _space(tmp_path, space), "--trials", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recjax: error:") and message in err and len(err.splitlines()) == 1
    assert not study.exists()


def test_a_searched_setting_given_as_a_flag_and_a_study_twice_are_refused(ratings_file, tmp_path, capsys):
    study = tmp_path / "study"
    assert main(_flags(ratings_file, study, _space(tmp_path), "--learning-rate", "0.1")) == 2
    assert "train.learning_rate is searched" in capsys.readouterr().err
    assert main(_flags(ratings_file, study, _space(tmp_path), "--trials", "1", "--pruner", "none")) == 0
    assert main(_flags(ratings_file, study, _space(tmp_path), "--trials", "1")) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(_flags(ratings_file, study, _space(tmp_path), "--trials", "1", "--pruner", "hyperband",
                       "--resume")) == 2
    assert "other settings (pruner)" in capsys.readouterr().err


def test_refit_best_scores_the_test_part_once_against_the_defaults(ratings_file, tmp_path):
    from recjax.runs import Run

    study = tmp_path / "study"
    assert main(_flags(ratings_file, study, _space(tmp_path), "--trials", "2", "--pruner", "none",
                       "--refit-best", "--bootstrap", "200")) == 0
    best = json.loads((study / "best.json").read_text())
    test = best["test"]
    for name in ("best", "defaults"):
        run = Run.open(study / name)
        assert run.refit and len(run.splits["test"]) > 0
        predictions, labels = run.rating_predictions("test")
        assert test[name]["test_rmse"] == pytest.approx(np.sqrt(np.mean((predictions - labels) ** 2)),
                                                        rel=1e-4)
    saved = []  # each test user's squared error the best setting saves over the defaults
    for name in ("defaults", "best"):
        run = Run.open(study / name)
        predictions, labels = run.rating_predictions("test")
        users = run.splits["test"].user
        saved.append(np.bincount(users, (predictions - labels) ** 2)[np.unique(users)]
                     / np.bincount(users)[np.unique(users)])
    assert test["bootstrap"]["difference"] == pytest.approx(np.mean(saved[0] - saved[1]), rel=1e-4, abs=1e-9)
    assert test["bootstrap"]["low"] <= test["bootstrap"]["difference"] <= test["bootstrap"]["high"]
    assert test["bootstrap"]["resamples"] == 200


def test_the_protocol_chooses_the_split_and_refuses_one_that_does_not_fit(ratings_file, tmp_path, capsys):
    from recjax.runs import Run
    from recjax.tuning.study import tune

    flags = _flags(ratings_file, tmp_path / "refused", _space(tmp_path), "--protocol", "strong")
    assert main(flags) == 2
    err = capsys.readouterr().err.strip()
    assert "--protocol strong does not fit --split random" in err and len(err.splitlines()) == 1
    result = tune("ials", out=tmp_path / "strong", protocol="strong", trials=1, pruner="none",
                  train={"data": str(ratings_file), "columns": "user,item,rating", "epochs": 2})
    settings = json.loads((tmp_path / "strong" / "tune.json").read_text())
    assert settings["protocol"] == "strong" and settings["train"]["split"] == "users"
    # the result carries the report tune wrote (what the CLI prints)
    assert result.report == json.loads((tmp_path / "strong" / "best.json").read_text())
    assert result.report["best"]["run"] == str(result.best_run.relative_to(tmp_path / "strong"))
    run = Run.open(result.best_run)  # trained less the held-out validation users, scored on them
    trained = set(run.splits["train"].users.ids[run.splits["train"].user])
    scored = set(run.splits["test"].users.ids[run.splits["test"].user])
    assert scored and not scored & trained  # scored on held-out users, none of them trained on


def test_processes_joining_a_study_together_draw_different_settings(ratings_file, tmp_path):
    """Two processes started at the same moment on a study of one trial (the defaults) each
    draw their own settings (seeded by the trial number the storage hands out), never the
    same ones; the study was seen drawing pairs of equal settings when each process seeded
    its sampler by the count of trials it found."""
    study = tmp_path / "study"
    flags = _flags(ratings_file, study, _space(tmp_path), "--pruner", "none", "--epochs", "2")
    assert main([*flags, "--trials", "1"]) == 0
    command = [sys.executable, "-m", "recjax", *flags, "--trials", "5", "--resume"]
    processes = [subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    settings = [row[1:] for number, row in _finished(study).items() if number > 0]
    assert len(settings) >= 4 and len(set(settings)) == len(settings)
