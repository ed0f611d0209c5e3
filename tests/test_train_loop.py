"""The training loop: early stopping, determinism, resume equivalence, divergence."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

import recjax.train.loop as loop_module
from recjax.config import RunConfig
from recjax.data import synthetic_ratings
from recjax.metrics import rmse
from recjax.models.mf import MF, MFConfig
from recjax.train.checkpoint import CheckpointError, Checkpoints
from recjax.train.loop import EarlyStopping, fit
from recjax.train.step import Model, make_predict

pytestmark = pytest.mark.usefixtures("persistent_compile_cache")


# ----------------------------------------------------------------------------- EarlyStopping
def _run(stopper: EarlyStopping, values) -> list[tuple[bool, float, int, int, bool]]:
    out = []
    for epoch, value in enumerate(values, start=1):
        improved = stopper.update(epoch, value)
        out.append((improved, stopper.best, stopper.best_epoch, stopper.bad_epochs, stopper.should_stop))
    return out


def test_early_stopping_lower_is_better_with_tolerance():
    stopper = EarlyStopping(patience=3, tolerance=0.01)
    assert stopper.best_epoch == 0 and not stopper.should_stop
    got = _run(stopper, [1.0, 0.9, 0.895, 0.85, 0.86, 0.845, 0.8401])
    assert got == [
        (True, 1.0, 1, 0, False),  # the first epoch is always the best so far
        (True, 0.9, 2, 0, False),  # 0.1 better
        (False, 0.9, 2, 1, False),  # 0.005 better: within tolerance, does not count
        (True, 0.85, 4, 0, False),  # resets the count
        (False, 0.85, 4, 1, False),  # worse
        (False, 0.85, 4, 2, False),  # 0.005 better: no
        (False, 0.85, 4, 3, True),  # 0.0099 better: no -> patience used up
    ]


def test_early_stopping_higher_is_better():
    stopper = EarlyStopping(patience=2, tolerance=0.0, higher_is_better=True)
    got = _run(stopper, [0.5, 0.7, 0.7, 0.6])
    assert [g[0] for g in got] == [True, True, False, False]  # an equal value is no improvement
    assert stopper.best == 0.7 and stopper.best_epoch == 2 and stopper.should_stop


def test_early_stopping_zero_tolerance_counts_any_improvement():
    stopper = EarlyStopping(patience=1, tolerance=0.0)
    _run(stopper, [1.0, 0.999999])
    assert stopper.best_epoch == 2 and not stopper.should_stop
    stopper.update(3, 0.999999)
    assert stopper.should_stop


def test_early_stopping_patience_one_stops_at_first_bad_epoch():
    stopper = EarlyStopping(patience=1, tolerance=0.001)
    got = _run(stopper, [3.0, 2.0, 2.5])
    assert [g[4] for g in got] == [False, False, True]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def problem():
    """A small rating problem: (model, train arrays, validate-by-rmse, model config)."""
    data, _ = synthetic_ratings(80, 60, 900, rank=2, noise_std=0.3, seed=11)
    mcfg = MFConfig(embedding_dim=3, l2=0.01, init_std=0.1)
    model = Model.split(MF(mcfg, data.n_users, data.n_items, global_mean=float(data.rating.mean()),
                           rngs=nnx.Rngs(0)))
    train = {"user": data.user[:800], "item": data.item[:800], "label": data.rating[:800]}
    val = {"user": data.user[800:], "item": data.item[800:], "label": data.rating[800:]}
    predict = make_predict(model, chunk=128)

    def validate(params):
        return {"val_rmse": rmse(np.asarray(predict(params, val)), val["label"])}

    return model, train, validate, mcfg


BASE = RunConfig(optimizer="adam", epochs=4, batch_size=96, learning_rate=0.02, patience=10, quiet=True,
                 checkpoint_seconds=0)  # 9 batches; a checkpoint after every epoch


def _fit(problem, cfg=BASE, **kwargs):
    model, train, validate, mcfg = problem
    kwargs.setdefault("validate", validate)
    kwargs.setdefault("monitor", "val_rmse")
    return fit(model, train, cfg, task="regression", **kwargs)


def _same(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


TIMES = ("seconds", "epoch_seconds", "val_seconds")


def _strip_seconds(history):
    return [{k: v for k, v in record.items() if k not in TIMES} for record in history]


# ----------------------------------------------------------------------------- fit
IDENTITY = {"model_config": {"embedding_dim": 3}}


@pytest.fixture(scope="module")
def reference(problem, tmp_path_factory):
    """BASE trained for 4 epochs with checkpoints: (result, checkpoint folder). Shared, since
    every fit compiles its epoch (~1 s)."""
    folder = tmp_path_factory.mktemp("reference") / "checkpoints"
    return _fit(problem, checkpoints=Checkpoints(folder), identity=IDENTITY), folder


def test_fit_records_history_and_speed(reference):
    result, _ = reference
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    for record in result.history:
        assert {"epoch", "train_loss", "train_data_loss", "val_rmse", *TIMES} <= set(record)
        assert record["train_loss"] >= record["train_data_loss"] > 0  # penalty l2 > 0
        assert record["epoch_seconds"] == record["seconds"] > 0 and record["val_seconds"] > 0
    assert result.history[-1]["train_data_loss"] < result.history[0]["train_data_loss"]
    assert result.compile_seconds > 0 and result.train_seconds > 0
    assert result.examples_per_second == pytest.approx(4 * 800 / result.train_seconds)
    assert result.train_seconds == pytest.approx(sum(r["epoch_seconds"] for r in result.history))
    assert result.val_seconds == pytest.approx(sum(r["val_seconds"] for r in result.history))
    assert not result.stopped_early
    assert result.best_epoch == int(np.argmin([r["val_rmse"] for r in result.history])) + 1


def test_same_seed_same_parameters_other_seed_other_parameters(problem, reference):
    a, _ = reference
    b = _fit(problem)  # no checkpoints this time: they do not change the result
    c = _fit(problem, dataclasses.replace(BASE, seed=1))
    assert _same(a.params, b.params)
    assert _strip_seconds(a.history) == _strip_seconds(b.history)
    assert not np.allclose(a.params["user_embedding"], c.params["user_embedding"])
    # the initial model is not modified by training (the epoch donates a copy)
    model = problem[0]
    assert not np.allclose(np.asarray(model.params["user_embedding"]), a.params["user_embedding"])


def test_early_stopping_stops_returns_the_best_epoch_and_stays_stopped(problem, tmp_path):
    scores = [0.5, 0.8, 0.9, 0.85, 0.9005, 0.7, 0.95, 0.99]  # higher is better, tolerance 0.001
    seen = []

    def validate(params):  # a made-up validation curve; remember each epoch's parameters
        seen.append(jax.tree.map(np.array, params))
        return {"val_auc": scores[len(seen) - 1]}

    cfg = dataclasses.replace(BASE, epochs=8, patience=3)
    kwargs = dict(validate=validate, monitor="val_auc", higher_is_better=True,
                  checkpoints=Checkpoints(tmp_path / "c"), identity=IDENTITY)
    result = _fit(problem, cfg, **kwargs)
    assert result.stopped_early
    assert len(result.history) == 6 < cfg.epochs  # best at 3, then 3 epochs without +0.001
    assert result.best_epoch == 3
    assert _same(result.params, seen[2])
    assert not _same(result.params, seen[-1])

    # resuming an early-stopped run trains no more and returns the same best parameters
    ran = []
    again = _fit(problem, cfg, on_epoch=ran.append, resume=True, **kwargs)
    assert ran == [] and len(seen) == 6
    assert again.stopped_early and again.best_epoch == 3 and _same(again.params, seen[2])
    assert _strip_seconds(again.history) == _strip_seconds(result.history)


def test_val_every_validates_every_kth_and_the_last_epoch_and_patience_counts_validations(problem):
    """val_every 2, patience 2, a made-up curve over the validations (higher is better):
    epochs 2, 4, 6, 8 are validated; the best is epoch 4's; 6 and 8 do not beat it by
    the tolerance (0.001): two validations without improvement stop the run at epoch 8,
    though only four epochs have passed since the best."""
    scores = [0.5, 0.8, 0.8, 0.8005, 0.9]
    seen = []

    def validate(params):
        seen.append(jax.tree.map(np.array, params))
        return {"val_auc": scores[len(seen) - 1]}

    cfg = dataclasses.replace(BASE, epochs=20, patience=2, val_every=2)
    result = _fit(problem, cfg, validate=validate, monitor="val_auc", higher_is_better=True)
    assert [r["epoch"] for r in result.history] == list(range(1, 9))
    assert [r["epoch"] for r in result.history if "val_auc" in r] == [2, 4, 6, 8]
    assert result.stopped_early and result.best_epoch == 4 and _same(result.params, seen[1])
    assert all(r["val_seconds"] == 0 < r["epoch_seconds"] for r in result.history if "val_auc" not in r)
    assert all(r["val_seconds"] > 0 for r in result.history if "val_auc" in r)

    # the last epoch is always validated, also when it is no multiple of val_every
    for epochs, every, validated in ((5, 2, [2, 4, 5]), (3, 10, [3])):
        seen.clear()
        short = _fit(problem, dataclasses.replace(cfg, epochs=epochs, val_every=every, patience=10),
                     validate=validate, monitor="val_auc", higher_is_better=True)
        assert [r["epoch"] for r in short.history if "val_auc" in r] == validated
        assert short.best_epoch == validated[int(np.argmax(scores[:len(validated)]))]


def test_training_and_validation_seconds_are_apart(problem):
    """A validation that takes 0.3 s: each epoch's val_seconds holds it, its
    epoch_seconds (9 small steps) and the run's train_seconds do not."""
    import time

    def slow(params):
        time.sleep(0.3)
        return problem[2](params)

    result = _fit(problem, dataclasses.replace(BASE, epochs=2), validate=slow)
    for record in result.history:
        assert record["val_seconds"] >= 0.3 > record["epoch_seconds"] > 0
    assert result.val_seconds >= 0.6 > result.train_seconds


def test_divergence_is_an_error(problem):
    cfg = dataclasses.replace(BASE, optimizer="sgd", learning_rate=1e6, epochs=3)
    with pytest.raises(FloatingPointError, match="diverged at epoch 1.*lower the learning rate"):
        _fit(problem, cfg)


# ----------------------------------------------------------------------------- resume
def _interrupted_after(folder, epoch):
    """Checkpoints in ``folder`` that stop the run right after writing epoch ``epoch``'s."""
    class Interrupted(Exception):
        pass

    class Cut(Checkpoints):
        def save_last(self, e, state, best, meta):
            super().save_last(e, state, best, meta)
            if e == epoch:
                raise Interrupted

    return Cut(folder), Interrupted


def _last_tree(folder, cfg, problem):
    from recjax.train.checkpoint import _to_tree
    from recjax.train.optim import make_optimizer
    from recjax.train.step import TrainState

    params = problem[0].params
    tx = make_optimizer(cfg, 9)
    template = _to_tree(TrainState(params, tx.init(params), jax.numpy.int32(0), jax.random.key(0)), params)
    tree, _ = Checkpoints(folder).restore("last", template, IDENTITY)
    return tree


def test_resume_after_interruption_is_bitwise_identical(problem, tmp_path):
    """Interrupted after epoch 2 of 4 with a cosine schedule (which depends on the step)."""
    cfg = dataclasses.replace(BASE, epochs=4, schedule="cosine", optimizer="adam")
    full = _fit(problem, cfg, checkpoints=Checkpoints(tmp_path / "full"), identity=IDENTITY)

    cut, interrupted = _interrupted_after(tmp_path / "cut", 2)
    with pytest.raises(interrupted):
        _fit(problem, cfg, checkpoints=cut, identity=IDENTITY)
    epochs_seen = []
    resumed = _fit(problem, cfg, checkpoints=Checkpoints(tmp_path / "cut"), identity=IDENTITY, resume=True,
                   on_epoch=lambda r: epochs_seen.append(r["epoch"]))
    assert epochs_seen == [3, 4]  # only the missing epochs ran
    assert _same(resumed.params, full.params)
    assert _strip_seconds(resumed.history) == _strip_seconds(full.history)
    assert resumed.best_epoch == full.best_epoch
    # the last state too: parameters, optimiser moments and schedule count, step, key
    a, b = _last_tree(tmp_path / "full", cfg, problem), _last_tree(tmp_path / "cut", cfg, problem)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert int(a["step"]) == 4 * 9


def test_resume_extends_a_finished_run_to_more_epochs(problem, reference, tmp_path):
    """identity excludes epochs: a run of 2 epochs continued to 4 equals a run of 4
    (with a schedule that does not depend on the planned length)."""
    full, full_folder = reference
    _fit(problem, dataclasses.replace(BASE, epochs=2), checkpoints=Checkpoints(tmp_path / "short"),
         identity=IDENTITY)
    resumed = _fit(problem, BASE, checkpoints=Checkpoints(tmp_path / "short"), identity=IDENTITY,
                   resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert _same(resumed.params, full.params)
    assert _strip_seconds(resumed.history) == _strip_seconds(full.history)
    a, b = _last_tree(full_folder, BASE, problem), _last_tree(tmp_path / "short", BASE, problem)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    # a finished run resumed with the same settings trains no more
    ran = []
    again = _fit(problem, BASE, checkpoints=Checkpoints(tmp_path / "short"), identity=IDENTITY,
                 resume=True, on_epoch=ran.append)
    assert ran == [] and _same(again.params, full.params) and len(again.history) == 4


def test_resume_needs_checkpoints_and_starts_over_without_one(problem, reference, tmp_path):
    """A run interrupted before its first checkpoint resumes from the beginning, to the
    same result as an uninterrupted run."""
    full, _ = reference
    with pytest.raises(ValueError, match="resume needs the run's checkpoints"):
        _fit(problem, resume=True)
    resumed = _fit(problem, BASE, resume=True, checkpoints=Checkpoints(tmp_path / "empty"),
                   identity=IDENTITY)
    assert _same(resumed.params, full.params)


def test_resume_rejects_a_checkpoint_of_another_configuration(problem, reference, monkeypatch):
    _, folder = reference

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled before checking the checkpoint")

    monkeypatch.setattr(loop_module, "make_epoch", no_compile)
    with pytest.raises(CheckpointError, match="different model_config"):
        _fit(problem, checkpoints=Checkpoints(folder), identity={"model_config": {"embedding_dim": 4}},
             resume=True)


# ----------------------------------------------------------------------------- refused before training
def test_no_training_examples_is_refused(problem):
    model, train, validate, _ = problem
    empty = {name: values[:0] for name, values in train.items()}
    with pytest.raises(ValueError, match="^no training examples"):
        fit(model, empty, BASE, task="regression", validate=validate, monitor="val_rmse")


def test_a_state_that_cannot_fit_is_refused_before_it_is_allocated(problem, monkeypatch):
    def no_allocation(*args, **kwargs):
        raise AssertionError("allocated the state before checking its size")

    monkeypatch.setattr(loop_module, "initial_state", no_allocation)
    monkeypatch.setattr(loop_module, "available_memory", lambda device: (1000, "this machine"))
    with pytest.raises(ValueError, match=r"^training needs about .* adam state .*the largest, user_embedding "
                                         r"\[80, 3\].*this machine has 1000 B available; lower --embedding-dim"):
        _fit(problem)


def test_a_batch_far_beyond_the_data_is_refused_before_the_epoch_runs(problem, monkeypatch):
    """batch_size=1e9 on 800 examples: one padded batch of 1e9 rows, gigabytes of working
    memory by XLA's account of the compiled epoch; refused before it runs."""
    monkeypatch.setattr(loop_module, "available_memory", lambda device: (1 << 30, "this machine"))
    ran = []
    cfg = dataclasses.replace(BASE, batch_size=1_000_000_000)
    with pytest.raises(ValueError, match=r"^batch_size=1000000000 exceeds the 800 training examples; use at "
                                         r"most 800 \(or 0 for full batch\)"):
        _fit(problem, cfg, on_epoch=ran.append)
    assert ran == []
    # a batch larger than the data that fits still runs, as one padded batch
    result = _fit(problem, dataclasses.replace(BASE, batch_size=1000, epochs=1))
    assert len(result.history) == 1


# ----------------------------------------------------------------------------- divergence while finite
def test_a_finite_explosion_is_divergence(problem):
    """adam at lr 1000: the loss reaches ~1e12 within the first epoch and stays there (no
    later growth to compare with); it is measured against the untrained model's loss."""
    cfg = dataclasses.replace(BASE, optimizer="adam", learning_rate=1000.0, epochs=3)
    with pytest.raises(FloatingPointError, match=r"^training diverged at epoch 1 \(loss .*e\+\d+, over 1000 "
                                                 r"times the untrained model's 0\.\d+\); lower the learning rate"):
        _fit(problem, cfg)


def test_an_explosion_after_a_healthy_epoch_is_divergence_also_after_resume(problem, tmp_path):
    """Full batch, adam at lr 1000: epoch 1 (one step) is healthy, epoch 2 explodes. A run
    resumed after epoch 1 compares with the same reference (the untrained model), not with
    the first epoch it runs itself."""
    cfg = dataclasses.replace(BASE, optimizer="adam", learning_rate=1000.0, batch_size=0, epochs=3)
    with pytest.raises(FloatingPointError, match="diverged at epoch 2"):
        _fit(problem, cfg)
    cut, interrupted = _interrupted_after(tmp_path / "c", 1)
    with pytest.raises(interrupted):
        _fit(problem, cfg, checkpoints=cut, identity=IDENTITY)
    with pytest.raises(FloatingPointError, match="diverged at epoch 2"):
        _fit(problem, cfg, checkpoints=Checkpoints(tmp_path / "c"), identity=IDENTITY, resume=True)


@pytest.mark.parametrize("optimizer, lr, task", [("sgd", 0.5, "regression"), ("adam", 1e-3, "regression"),
                                                 ("adam", 0.02, "binary")])
def test_healthy_runs_stay_far_below_the_divergence_threshold(problem, optimizer, lr, task, monkeypatch):
    model, train, validate, _ = problem
    if task == "binary":
        data, _ = synthetic_ratings(80, 60, 900, rank=2, noise_std=0.3, seed=11)
        model = Model.split(MF(MFConfig(embedding_dim=3, l2=0.01, init_std=0.1), data.n_users,
                               data.n_items, task="binary", rngs=nnx.Rngs(0)))
        train = {**train, "label": (train["label"] > 3).astype(np.float32)}
        validate = None
    cfg = dataclasses.replace(BASE, optimizer=optimizer, learning_rate=lr, epochs=6)
    untrained = []
    original = loop_module._untrained_loss
    monkeypatch.setattr(loop_module, "_untrained_loss", lambda *a: untrained.append(original(*a)) or untrained[-1])
    result = fit(model, train, cfg, task=task, validate=validate, monitor=validate and "val_rmse")
    worst = max(r["train_loss"] for r in result.history)
    assert worst < 1.5 * untrained[0] < loop_module.DIVERGENCE_FACTOR * untrained[0]


def test_non_finite_validation_is_divergence(problem):
    def infinite(params):
        return {"val_rmse": float("inf")}

    with pytest.raises(FloatingPointError, match=r"^training diverged at epoch 1 \(validation val_rmse is inf\)"):
        _fit(problem, validate=infinite)

    def nan_monitor(params):
        return {"val_auc": float("nan"), "val_rmse": 1.0}

    with pytest.raises(FloatingPointError, match="validation val_auc is nan at epoch 1"):
        _fit(problem, validate=nan_monitor, monitor="val_auc", higher_is_better=True)
    # a NaN in a metric that is not monitored (e.g. AUC of a one-class part) is reported as is
    result = _fit(problem, dataclasses.replace(BASE, epochs=1), validate=nan_monitor, monitor="val_rmse")
    assert np.isnan(result.history[0]["val_auc"])


# ----------------------------------------------------------------------------- broken parameters
@pytest.mark.parametrize("table, factor, message", [
    ("item_embedding", 0.0, r"^training collapsed at epoch 2 \(every vector of item_embedding is 0, so the "
                            r"model scores every item alike\); lower the learning rate"),
    ("user_embedding", np.nan, r"^training diverged at epoch 2 \(the parameters hold NaN or infinite "
                               r"values\); lower the learning rate"),
])
def test_broken_parameters_after_a_finite_loss_are_refused(problem, monkeypatch, table, factor, message):
    """Epoch 2's update leaves a table zero (the model then ranks nothing: every item
    scores alike, though the biases still predict ratings) or NaN, while the loss it
    reports (before that update) is finite: refused after the epoch, before validation."""
    original = loop_module.run_epochs

    def run_epochs(epoch, *args, **kwargs):
        def damaged(state, number):
            state, metrics = epoch(state, number)
            if number == 2:
                state = state._replace(params={**state.params, table: state.params[table] * factor})
            return state, metrics
        return original(damaged, *args, **kwargs)

    monkeypatch.setattr(loop_module, "run_epochs", run_epochs)
    seen = []
    with pytest.raises(FloatingPointError, match=message):
        _fit(problem, validate=lambda params: seen.append(1) or problem[2](params))
    assert len(seen) == 1  # epoch 1 was validated, epoch 2 was refused before its validation
