"""One training run end to end: data, split, model, fit, test, run folder.

The run folder holds ``config.json`` (the resolved configs), ``metrics.jsonl``
(one line per epoch with ``train_*``/``val_*`` keys, then a ``final`` line with
``train_*``, ``val_*``, ``test_*`` and baseline metrics), ``checkpoints/`` (orbax,
``last`` and ``best``) and ``embeddings.npz`` (raw ids and learned vectors).

Validation is carved at random (``val_fraction``, seeded) from the split's
training part and drives early stopping; the test part is scored once, at the end.
With ``cfg.mesh`` (``"DATAxMODEL"``) the run trains on a device mesh, embedding
tables row-sharded (:mod:`recjax.train.sharding`); started by several processes
(after ``jax.distributed.initialize``), all of them train together, each placing
only its own rows of the training data on its devices, and process 0 alone writes
``config.json``, ``metrics.jsonl`` and ``embeddings.npz`` (the checkpoints are
written by all, each its own shards).

With ``refit=True`` the model is then trained afresh on training + validation data
for the epoch count validation chose (its epochs are logged with ``"phase":
"refit"``); ``val_*`` metrics stay those of the validated model, and ``train_*``,
``test_*`` and the baselines are those of the refitted one.

Example
-------
>>> import tempfile
>>> from recjax.config import TrainConfig
>>> from recjax.models.mf import MFConfig
>>> from recjax.experiment import run
>>> result = run(TrainConfig(dataset="synthetic", split="random", epochs=2, quiet=True,
...                          out=tempfile.mkdtemp() + "/run"), MFConfig(embedding_dim=4))
>>> sorted(k for k in result.metrics if k.startswith("test_"))
['test_mae', 'test_mse', 'test_rmse']
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recjax.config import TrainConfig, from_dict
from recjax.data.dataset import Ratings
from recjax.data.movielens import load_movielens
from recjax.data.splits import PREDEFINED_SPLITS, holdout_split, predefined_split
from recjax.data.synthetic import synthetic_ratings
from recjax.evaluation import binary_metrics, rating_metrics
from recjax.models import MODELS
from recjax.models.baselines import GlobalMean, UserMean
from recjax.train.checkpoint import Checkpoints
from recjax.train.loop import FitResult, fit
from recjax.train.sharding import Layout, make_mesh, parse_mesh
from recjax.train.step import Model, make_predict

__all__ = ["run", "RunResult", "load_splits", "load_run_config", "MONITOR"]

# task -> (metric monitored on validation, higher is better)
MONITOR = {"regression": ("val_rmse", False), "binary": ("val_log_loss", False)}


@dataclass
class RunResult:
    """A finished run: its folder, the fit, the final metrics and the trained module."""

    run_dir: Path
    fit: FitResult
    metrics: dict[str, float]
    module: Any
    splits: dict[str, Ratings]


def load_splits(cfg: TrainConfig) -> dict[str, Ratings]:
    """``{"train", "val", "test"}`` ratings for ``cfg`` (same vocabularies throughout)."""
    if cfg.split in PREDEFINED_SPLITS:
        if cfg.dataset != "ml-100k":
            raise ValueError(f"split {cfg.split!r} exists for ml-100k only; use --split random")
        train, test, _ = predefined_split(cfg.split, cfg.data_dir)
    elif cfg.split == "random":
        if cfg.dataset == "synthetic":
            data, _ = synthetic_ratings(seed=cfg.seed)
        else:
            data = load_movielens(cfg.dataset, cfg.data_dir)
        train, test, _ = holdout_split(data, cfg.test_fraction, seed=cfg.seed)
    else:
        raise ValueError(f"unknown split {cfg.split!r}; use random or one of {', '.join(PREDEFINED_SPLITS)}")
    fit_part, val, _ = holdout_split(train, cfg.val_fraction, seed=cfg.seed + 1)
    return {"train": fit_part, "val": val, "test": test}


def _metrics(task: str, predictions: np.ndarray, labels: np.ndarray, prefix: str) -> dict[str, float]:
    score = rating_metrics if task == "regression" else binary_metrics
    return score(predictions, labels, prefix)


def _default_out(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.model}-{cfg.dataset}-{cfg.split}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_run_config(run_dir: str | Path) -> tuple[TrainConfig, Any]:
    """The (TrainConfig, model config) a run folder was trained with."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a recjax run folder (no config.json)")
    raw = json.loads(path.read_text())
    train_cfg = from_dict(TrainConfig, raw["train"])
    return train_cfg, from_dict(MODELS[train_cfg.model].config, raw["model"])


def _identity(cfg: TrainConfig, model_cfg: Any) -> dict[str, Any]:
    """What a resumed checkpoint must match: everything but output, verbosity, the
    epoch budget and the device mesh (a run may resume on another mesh)."""
    train = {k: v for k, v in dataclasses.asdict(cfg).items()
             if k not in ("out", "quiet", "epochs", "mesh")}
    return {"train_config": train, "model_config": dataclasses.asdict(model_cfg)}


def _to_devices(arrays: dict[str, np.ndarray], layout: Layout | None) -> dict[str, jax.Array]:
    """Evaluation inputs: on the default device, or copied to every device of the mesh."""
    if layout is None:
        return {k: jnp.asarray(v) for k, v in arrays.items()}
    return layout.replicate(arrays)


def _save_embeddings(path: Path, module: Any, data: Any, train_inputs: dict[str, np.ndarray]) -> None:
    """Raw ids and vectors; ``module.embeddings()``, or ``embeddings(train_inputs)`` for models whose
    user vectors come from their inputs (the softmax model's user tower)."""
    if not hasattr(module, "embeddings") or not isinstance(data, Ratings):
        return
    takes_inputs = bool(inspect.signature(module.embeddings).parameters)
    users, items = (np.asarray(t) for t in (module.embeddings(train_inputs) if takes_inputs
                                             else module.embeddings()))
    np.savez(path, user_ids=data.users.ids, user_embeddings=users,
             item_ids=data.items.ids, item_embeddings=items)


def run(cfg: TrainConfig, model_cfg: Any, *, resume: bool = False,
        splits: dict[str, Ratings] | None = None) -> RunResult:
    """Train ``cfg.model`` with ``model_cfg``; write and return the run.

    ``splits`` (``{"train", "val", "test"}`` :class:`Ratings` sharing vocabularies)
    replaces the data ``cfg`` names, e.g. a research dataset of your own (the run
    folder then records configs, metrics, checkpoints and embeddings, but
    :func:`recjax.explore.load_run` rebuilds data from the config alone).

    Raises
    ------
    ValueError
        A task the model does not support, or ``resume`` without a run folder.
    """
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; choose one of {', '.join(MODELS)}")
    spec = MODELS[cfg.model]
    if not isinstance(model_cfg, spec.config):
        raise TypeError(f"model {cfg.model!r} needs a {spec.config.__name__}")
    if cfg.task not in spec.tasks:
        raise ValueError(f"model {cfg.model!r} does not support task {cfg.task!r} ({', '.join(spec.tasks)})")
    if resume and cfg.out is None:
        raise ValueError("--resume needs --out RUN_FOLDER (the run to continue)")
    if cfg.refit and (spec.prepare or spec.evaluator):
        raise ValueError(f"refit is available for rating models only, not {cfg.model!r}")
    run_dir = Path(cfg.out) if cfg.out else _default_out(cfg)
    if resume:
        saved_cfg, saved_model = load_run_config(run_dir)
        if _identity(saved_cfg, saved_model) != _identity(cfg, model_cfg):
            raise ValueError(f"--resume: the settings differ from those saved in {run_dir}/config.json")
    elif (run_dir / "checkpoints").exists():
        raise ValueError(f"{run_dir} already holds a run; use --resume to continue it or another --out")

    if splits is None:
        splits = (spec.load(model_cfg, cfg) if spec.load else None) or load_splits(cfg)
    if cfg.refit and not isinstance(splits["train"], Ratings):
        raise ValueError(f"refit is available for rating data only, not {cfg.model!r}'s own data files")
    module = spec.build(model_cfg, splits["train"], cfg)
    model = Model.split(module)
    mesh = make_mesh(*parse_mesh(cfg.mesh)) if cfg.mesh else None
    layout = Layout(mesh, model) if mesh is not None else None
    predict = make_predict(model, out_sharding=layout and layout.replicated)
    if spec.prepare is not None:
        inputs = spec.prepare(model_cfg, splits, cfg)
    else:
        inputs = {name: spec.inputs(part, cfg) for name, part in splits.items()}
    custom = spec.evaluator(model, inputs, cfg) if spec.evaluator is not None else None
    if custom is not None and jax.process_count() > 1:
        raise ValueError(f"model {cfg.model!r} evaluates on one process only; "
                         f"use --mesh within one host for it")
    device_inputs: dict[str, dict[str, jax.Array]] = {}  # each part copied when first scored

    def evaluate(params: dict, part: str, prefix: str, predict=predict) -> dict[str, float]:
        if custom is not None:
            return custom(params, part, prefix)
        if part not in device_inputs:
            device_inputs[part] = _to_devices(inputs[part], layout)
        arrays = device_inputs[part]
        predictions = np.asarray(predict(params, arrays))
        return _metrics(cfg.task, predictions, inputs[part]["label"], prefix)

    primary = jax.process_index() == 0  # with several processes, one writes the run folder
    run_dir.mkdir(parents=True, exist_ok=True)
    if primary:
        (run_dir / "config.json").write_text(json.dumps(
            {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_cfg)}, indent=2))
    log = (run_dir / "metrics.jsonl").open("a" if resume else "w") if primary else open(os.devnull, "w")
    monitor, higher = spec.monitor or MONITOR[cfg.task]
    try:
        result = fit(
            model, inputs["train"], cfg, task=spec.loss or cfg.task,
            validate=lambda params: evaluate(params, "val", "val_"),
            monitor=monitor, higher_is_better=higher,
            checkpoints=Checkpoints(run_dir / "checkpoints"), resume=resume,
            identity=_identity(cfg, model_cfg),
            on_epoch=lambda record: (log.write(json.dumps(record) + "\n"), log.flush()),
            layout=layout,
        )
        metrics: dict[str, float] = evaluate(result.params, "val", "val_")
        selected = result
        if cfg.refit:
            # Validation chose the epoch count; now train afresh on all training data.
            splits = {**splits, "train": splits["train"].concat(splits["val"])}
            module = spec.build(model_cfg, splits["train"], cfg)
            model = Model.split(module)
            layout = Layout(mesh, model) if mesh is not None else None
            predict = make_predict(model, out_sharding=layout and layout.replicated)
            inputs["train"] = spec.inputs(splits["train"], cfg)
            device_inputs.pop("train", None)
            refit_checkpoints = Checkpoints(run_dir / "checkpoints" / "refit")
            result = fit(
                model, inputs["train"], dataclasses.replace(cfg, epochs=result.best_epoch),
                task=spec.loss or cfg.task, validate=None, monitor=None,
                checkpoints=refit_checkpoints, resume=resume and refit_checkpoints.has_last(),
                identity={**_identity(cfg, model_cfg), "refit_epochs": result.best_epoch},
                on_epoch=lambda record: (log.write(json.dumps({"phase": "refit", **record}) + "\n"),
                                         log.flush()),
                layout=layout,
            )
        for part in ("train", "test"):
            metrics.update(evaluate(result.params, part, f"{part}_", predict))
        if cfg.task == "regression" and custom is None and isinstance(splits["train"], Ratings):
            for name, baseline in (("global_mean", GlobalMean), ("user_mean", UserMean)):
                fitted = baseline().fit(splits["train"])
                for part in ("train", "val", "test"):
                    p = fitted.predict(splits[part].user, splits[part].item)
                    metrics.update(rating_metrics(p, splits[part].rating, f"{name}_{part}_"))
        metrics.update(
            best_epoch=selected.best_epoch, epochs_run=len(selected.history),
            stopped_early=selected.stopped_early, compile_seconds=selected.compile_seconds,
            train_seconds=selected.train_seconds, examples_per_second=selected.examples_per_second,
        )
        if cfg.refit:
            metrics.update(refit_epochs=len(result.history), refit_seconds=result.train_seconds)
        log.write(json.dumps({"event": "final", **metrics}) + "\n")
    finally:
        log.close()
    trained = model.bind(result.params)
    if primary:
        _save_embeddings(run_dir / "embeddings.npz", trained, splits["train"], inputs["train"])
    return RunResult(run_dir, result, metrics, trained, splits)

