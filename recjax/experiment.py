"""One training run end to end: data, split, model, fit, test, run folder.

The run folder is written through :class:`recjax.run_folder.RunWriter` (see
:mod:`recjax.run_folder` for its layout): locked while training, the configuration and
the exact data (vocabularies, parts, their fingerprint) first, ``metrics.jsonl``
(one line per epoch with ``train_*``/``val_*`` keys, then a ``final`` line with
``train_*``, ``val_*``, ``test_*`` and baseline metrics) rewritten atomically each
epoch, verified orbax checkpoints (``last``, ``best``), and at the end
``embeddings.npz`` and the ``finished`` status. ``resume=True`` continues an
interrupted run after checking that the settings and the data are the run's own.

A run that stops with an error leaves its folder ready for the next try. After a
full disk (:class:`DiskFullError`) it is unfinished, and ``resume=True`` continues
it. Refused before any checkpoint (its settings or data) or diverged, it is
``failed``: a fresh run starts over in its folder, and ``resume=True`` continues it
with corrected settings (from its last checkpoint when it has one, on the same data).

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
>>> from recjax.config import RunConfig
>>> from recjax.models.mf import MFConfig
>>> from recjax.experiment import run
>>> result = run(RunConfig(dataset="synthetic", split="random", epochs=2, quiet=True,
...                          out=tempfile.mkdtemp() + "/run"), MFConfig(embedding_dim=4))
>>> sorted(k for k in result.metrics if k.startswith("test_"))
['test_mae', 'test_mse', 'test_rmse']
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import numpy as np

from recjax.config import RunConfig, from_dict, parse_mesh
from recjax.data.dataset import Ratings
from recjax.data.frame import read_ratings
from recjax.data.jsonlines import PairData
from recjax.data.movielens import load_movielens
from recjax.data.splits import (
    DRAWN_SPLITS,
    PARTS,
    PREDEFINED_SPLITS,
    Splits,
    carve_validation,
    check_shared_vocabulary,
    predefined_split,
    split_ratings,
)
from recjax.data.synthetic import synthetic_ratings
from recjax.metrics import task_metrics
from recjax.families import MODELS
from recjax.models.capabilities import capabilities_of
from recjax.run_folder import Embeddings, RunWriter, data_differences, fingerprint, fingerprint_digest
from recjax.train.checkpoint import Checkpoints, disk_full
from recjax.train.loop import FitResult
from recjax.train.memory import abstract_params, check_training_memory
from recjax.train.sharding import Layout, make_mesh
from recjax.train.step import Model, make_predict

__all__ = ["run", "RunResult", "load_splits", "DiskFullError"]

# task -> (metric monitored on validation, higher is better)
MONITOR = {"regression": ("val_rmse", False), "binary": ("val_log_loss", False)}


class DiskFullError(OSError):
    """The disk filled up while a run was written (errno ENOSPC); the message says where
    and how to continue the run once there is space."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass
class RunResult:
    """A finished run: its folder, the fit, the final metrics and the trained module."""

    run_dir: Path
    fit: FitResult
    metrics: dict[str, float]
    module: Any
    splits: dict[str, Ratings]


def load_splits(cfg: RunConfig) -> dict[str, Ratings]:
    """``{"train", "val", "test"}`` ratings for ``cfg`` (same vocabularies throughout):
    the ratings file ``cfg.data`` or the dataset ``cfg.dataset``, split by ``cfg.split``."""
    if cfg.data:
        scale = _rating_scale(cfg.rating_scale)
        data = read_ratings(cfg.data, columns=cfg.columns, rating_scale=scale, duplicates=cfg.duplicates,
                            flags=True)
    elif cfg.split not in PREDEFINED_SPLITS:
        data = (synthetic_ratings(seed=cfg.seed)[0] if cfg.dataset == "synthetic"
                else load_movielens(cfg.dataset, cfg.data_dir))
    if cfg.split in PREDEFINED_SPLITS:
        if cfg.dataset != "ml-100k" or cfg.data:
            raise ValueError(f"split {cfg.split!r} exists for ml-100k only; use --split "
                             f"{' or '.join(DRAWN_SPLITS)}")
        train, test, _ = predefined_split(cfg.split, cfg.data_dir)
        fit_part, val = carve_validation(train, cfg.val_fraction, cfg.seed)
        return {"train": fit_part, "val": val, "test": test}
    if cfg.split not in DRAWN_SPLITS:
        raise ValueError(f"unknown split {cfg.split!r}; use {', '.join(DRAWN_SPLITS)} or one of "
                         f"{', '.join(PREDEFINED_SPLITS)}")
    return split_ratings(data, cfg.split, test_fraction=cfg.test_fraction,
                         val_fraction=cfg.val_fraction, seed=cfg.seed)._asdict()


def _rating_scale(text: str) -> tuple[float, float] | None:
    """``"1,10"`` -> (1.0, 10.0); ``""`` -> None (inferred from the ratings)."""
    if not text:
        return None
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--rating-scale must be LOW,HIGH (e.g. 1,5), got {text!r}") from None
    return low, high


def check_parts(parts: Any) -> dict[str, Any]:
    """The ``{"train", "val", "test"}`` parts a run is given, validated: all three
    present, one shared vocabulary, finite ratings inside the rating scale.

    Raises
    ------
    ValueError
        Naming the missing part, the part built with its own vocabulary, or the first
        bad rating.
    """
    named = parts._asdict() if isinstance(parts, Splits) else dict(parts)
    for name in PARTS:
        if name not in named:
            raise ValueError(f"the run's data has no {name!r} part (it needs train, val and test; "
                             f"recjax.data.split_ratings makes them)")
    extra = sorted(set(named) - set(PARTS))
    if extra:
        raise ValueError(f"unknown data part(s) {extra}; give train, val and test")
    if all(isinstance(p, PairData) for p in named.values()):
        return named
    if not all(isinstance(p, Ratings) for p in named.values()):
        raise TypeError("the run's parts must all be recjax.data.Ratings (or all PairData)")
    check_shared_vocabulary(named)
    if len(named["train"]) == 0:
        raise ValueError("the train part holds no ratings")
    low, high = named["train"].rating_scale
    for name, part in named.items():
        bad = ~np.isfinite(part.rating) | (part.rating < low) | (part.rating > high)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"part {name!r} row {row}: rating {part.rating[row]} is not a finite "
                             f"value in the rating scale [{low:g}, {high:g}]")
    return named


def _dataset_name(cfg: RunConfig, model_cfg: Any = None) -> str:
    """The data a configuration names, in words: a file's name or the dataset's."""
    files = getattr(model_cfg, "jsonl_train", None)
    return Path(cfg.data).name if cfg.data else Path(files).name if files else cfg.dataset


def _default_out(cfg: RunConfig) -> Path:
    dataset = Path(cfg.data).stem if cfg.data else cfg.dataset
    return Path("runs") / f"{cfg.model}-{dataset}-{cfg.split}-{time.strftime('%Y%m%d-%H%M%S')}"


def _identity(cfg: RunConfig, model_cfg: Any) -> dict[str, Any]:
    """What a resumed run must match: every setting but output, verbosity, the epoch
    budget (it may grow), the device mesh (a run may resume on another mesh) and where
    the data is read from (the data itself is checked by its fingerprint)."""
    train = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IDENTITY}
    return {"train_config": train, "model_config": dataclasses.asdict(model_cfg)}


_NOT_IDENTITY = ("out", "quiet", "epochs", "mesh", "data_dir", "checkpoint_seconds")


def _settings_differences(saved: dict[str, Any], cfg: RunConfig, model_cfg: Any) -> list[str]:
    """``name (saved -> now)`` for every setting of ``_identity`` that differs."""
    spec = MODELS.get(saved.get("train", {}).get("model"))
    if spec is None or spec.config is not type(model_cfg):
        return [f"model ({saved.get('train', {}).get('model')} -> {cfg.model})"]
    before = _identity(from_dict(RunConfig, saved["train"]), from_dict(spec.config, saved["model"]))
    now = _identity(cfg, model_cfg)
    out = []
    for group in ("train_config", "model_config"):
        for key in sorted(set(before[group]) | set(now[group])):
            a, b = before[group].get(key), now[group].get(key)
            if a != b:
                out.append(f"{key} ({a!r} -> {b!r})")
    return out


def _both(first: Callable[[dict[str, Any]], None],
          then: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def call(record: dict[str, Any]) -> None:
        first(record)
        then(record)
    return call


def enable_compilation_cache(directory: str | Path) -> None:
    """JAX's persistent compilation cache in ``directory`` (created if missing): a later
    run of the same programs (same model shapes, settings, JAX version and device) loads
    them instead of compiling. Every program is kept, however quickly it compiled (JAX's
    own default keeps only those over 1 s: most of a run's are faster).

    Raises
    ------
    ValueError
        The folder cannot be created.
    """
    from jax.experimental.compilation_cache import compilation_cache

    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"compilation cache {directory}: cannot create the folder "
                         f"({err.strerror}); give a writable folder") from None
    compilation_cache.reset_cache()  # a cache set up before (without a folder) is dropped
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _build(spec: Any, model_cfg: Any, train: Any, cfg: RunConfig) -> Any:
    """The family's module for a training part: the run gives it its task and seed only."""
    return spec.build(model_cfg, train, task=cfg.task, seed=cfg.seed)


def _embeddings(module: Any, data: Any, train_inputs: dict[str, np.ndarray]) -> Embeddings | None:
    """Raw ids and vectors of a model that ``embeds`` (:mod:`recjax.models.base`):
    ``module.embeddings()``, or ``embeddings(train_inputs)`` for a bag model (its user
    tower over each user's training bag)."""
    caps = capabilities_of(module)
    if not caps.embeds or not isinstance(data, Ratings):
        return None
    users, items = (np.asarray(t) for t in (module.embeddings(train_inputs) if caps.bag
                                             else module.embeddings()))
    return Embeddings(data.users.ids, users, data.items.ids, items)


def run(cfg: RunConfig, model_cfg: Any = None, *, resume: bool = False,
        splits: Splits | dict[str, Ratings] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train ``cfg.model`` with ``model_cfg`` (default: the family's config with its
    defaults, as ``python -m recjax train --model M`` trains); write and return the run.

    ``splits`` (:class:`recjax.data.Splits`, or a dict ``{"train", "val", "test"}``, of
    :class:`Ratings` sharing one vocabulary, e.g. from
    :func:`recjax.data.split_ratings` of your own data) replaces the data ``cfg``
    names; the run folder stores them, so it is used without them afterwards
    (:meth:`recjax.runs.Run.open`). ``on_epoch(record)`` is called with each epoch's
    record (``epoch``, ``train_*``, ``val_*``) once it is logged; an exception it raises
    stops the run (a study prunes a trial so).

    Raises
    ------
    ValueError
        A task the model does not support; bad parts (see :func:`check_parts`); a
        folder that holds another run, is being written, or (``resume``) whose
        settings or data differ from these (named in the message).
    """
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; choose one of {', '.join(MODELS)}")
    spec = MODELS[cfg.model]
    if model_cfg is None:
        model_cfg = spec.config()
    if not isinstance(model_cfg, spec.config):
        raise TypeError(f"model {cfg.model!r} needs a {spec.config.__name__}")
    if cfg.task not in spec.tasks:
        raise ValueError(f"model {cfg.model!r} does not support task {cfg.task!r} ({', '.join(spec.tasks)})")
    if resume and cfg.out is None:
        raise ValueError("--resume needs --out RUN_FOLDER (the run to continue)")
    if cfg.refit and not spec.capabilities.pairs:
        raise ValueError(f"refit is available for rating models only, not {cfg.model!r}")
    if spec.validator is not None and jax.process_count() > 1:
        raise ValueError(f"model {cfg.model!r} evaluates on one process only; "
                         f"use --mesh within one host for it")
    run_dir = Path(cfg.out) if cfg.out else _default_out(cfg)
    if resume and not run_dir.is_dir():
        raise ValueError(f"--resume: no run to resume in {run_dir} (no such folder)")
    given = splits is not None
    if splits is None:
        own = spec.load(model_cfg, task=cfg.task, val_fraction=cfg.val_fraction, seed=cfg.seed) \
            if spec.load else None
        splits = own or load_splits(cfg)
    splits = check_parts(splits)
    if cfg.refit and not isinstance(splits["train"], Ratings):
        raise ValueError(f"refit is available for rating data only, not {cfg.model!r}'s own data files")
    # the module's own checks (settings that contradict the task) and whether its state can
    # fit, before anything is written or allocated (abstract_params builds no arrays)
    check_training_memory(abstract_params(lambda: _build(spec, model_cfg, splits["train"], cfg)),
                          optimizer=cfg.optimizer)
    primary = jax.process_index() == 0  # with several processes, one writes the run folder
    with RunWriter(run_dir, primary=primary) as writer:
        unchecked = _check_folder(writer, cfg, model_cfg, splits, resume) if primary else ()
        with _failures(writer, run_dir):
            writer.begin({"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_cfg)},
                         splits, resume=resume, dataset="" if given else _dataset_name(cfg, model_cfg),
                         split="" if given else cfg.split)
            return _train(cfg, model_cfg, spec, splits, run_dir, writer, resume, unchecked, on_epoch)


@contextlib.contextmanager
def _failures(writer: RunWriter, run_dir: Path) -> Iterator[None]:
    """What an error while the run is written leaves in its folder: a full disk, an
    unfinished run, and a :class:`DiskFullError` saying how to continue it; a run refused
    (its settings or data: ValueError, TypeError) before any checkpoint, or diverged
    (FloatingPointError), a ``failed`` one (:meth:`RunWriter.fail`) that can be trained
    again. Anything else (an interruption) leaves it unfinished."""
    try:
        yield
    except OSError as err:
        if not disk_full(err):
            raise
        where = f" ({err.filename})" if err.filename else ""
        raise DiskFullError(errno.ENOSPC, f"the disk is full: {err.strerror or err}{where}; free "
                                          f"some space, then continue the run with "
                                          f"train --resume --out {run_dir}") from err
    except (ValueError, TypeError, FloatingPointError) as err:
        if isinstance(err, FloatingPointError) or not Checkpoints(run_dir / "checkpoints").has_last():
            with contextlib.suppress(OSError):  # the error itself is what to report
                writer.fail(str(err))
        raise


def _check_folder(writer: RunWriter, cfg: RunConfig, model_cfg: Any, splits: dict[str, Any],
                  resume: bool) -> tuple[str, ...]:
    """A fresh run needs an empty folder (or a failed run's); a resumed one the same
    settings and data. A failed run resumes with other settings: from scratch without a
    checkpoint, else from its last one (same data; its state must fit the new model).

    Returns the identity entries its checkpoints need not match (:class:`Checkpoints`)."""
    if not resume:
        writer.refuse_existing()
        return ()
    saved = writer.saved()
    if saved is None:  # interrupted before anything was written: it starts afresh
        return ()
    status, config = saved
    failed = status.get("status") == "failed"
    if failed and not Checkpoints(writer.path / "checkpoints").has_last():
        return ()  # nothing trained to continue: it starts afresh, with these settings and data
    differ = _settings_differences(config, cfg, model_cfg)
    if differ and not failed:
        raise ValueError(f"--resume: the settings differ from those of {writer.path}: "
                         f"{', '.join(differ)}")
    differ = data_differences(status["data"]["fingerprint"], fingerprint(splits))
    if differ:
        raise ValueError(f"--resume: the data differ from those {writer.path} was trained on "
                         f"({'; '.join(differ)}); resume with the run's own data or start a new run")
    for folder in (writer.path / "checkpoints", writer.path / "checkpoints" / "refit"):
        Checkpoints(folder).verify()  # damaged files refused before the folder changes
    return ("train_config", "model_config") if failed else ()


def _train(cfg: RunConfig, model_cfg: Any, spec: Any, splits: dict[str, Any], run_dir: Path,
           writer: RunWriter, resume: bool, unchecked: tuple[str, ...],
           on_epoch: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Fit (and refit), score, and finish the run folder; ``unchecked``: the identity
    entries a resumed checkpoint need not match (:func:`_check_folder`); ``on_epoch``
    (:func:`run`) sees each validated epoch's record after it is logged."""
    identity = {**_identity(cfg, model_cfg), "data_fingerprint": fingerprint_digest(fingerprint(splits))}
    module = _build(spec, model_cfg, splits["train"], cfg)
    model = Model.split(module)
    mesh = make_mesh(*parse_mesh(cfg.mesh)) if cfg.mesh else None
    layout = Layout(mesh, model) if mesh is not None else None
    # predictions in blocks of one chunk, everything on one mesh (fit's own without one):
    # predict compiles once for all parts and for host and device parameters alike
    block, placement = 8192, layout or Layout(make_mesh(1, 1), model)
    predict = make_predict(model, chunk=block, out_sharding=placement.replicated)
    inputs = spec.examples(model_cfg, splits, task=cfg.task, binary_threshold=cfg.binary_threshold)
    custom = spec.make_validator(model, inputs)
    device_inputs: dict[str, list[dict[str, jax.Array]]] = {}  # each part copied when first scored

    def blocks(arrays: dict[str, np.ndarray]) -> list[dict[str, jax.Array]]:
        """The part in blocks of exactly ``block`` rows (the last filled up with copies of
        row 0, whose predictions are dropped), copied to every device of the mesh."""
        n = len(arrays["label"])
        filled = {name: np.concatenate([np.asarray(v), np.repeat(np.asarray(v)[:1], -n % block, 0)])
                  for name, v in arrays.items()}
        return [placement.replicate({name: v[start:start + block] for name, v in filled.items()})
                for start in range(0, n, block)]

    def evaluate(params: dict, part: str, prefix: str, predict=predict, sample: int = 0) -> dict[str, float]:
        """The part's metrics; a family's own validator measures ``sample`` of its users
        (seeded: the same every epoch; 0: all), the task's metrics always all of them."""
        if custom is not None:
            return custom(params, part, prefix, sample=sample, seed=cfg.seed)
        if part not in device_inputs:
            device_inputs[part] = blocks(inputs[part])
        padded = placement.pad(params)  # as fit lays them out (a no-op for fit's own)
        padded = jax.device_put(padded, placement.shardings(padded))
        n = len(inputs[part]["label"])
        predictions = np.concatenate([np.zeros(0, np.float32)] + [
            np.asarray(predict(padded, b)) for b in device_inputs[part]])[:n]
        return task_metrics(cfg.task, predictions, inputs[part]["label"], prefix)

    monitor, higher = spec.monitor or MONITOR[cfg.task]
    result = spec.fit(
        model, inputs["train"], cfg, task=spec.loss or cfg.task,
        validate=lambda params: evaluate(params, "val", "val_", sample=cfg.val_users),
        monitor=monitor, higher_is_better=higher,
        checkpoints=Checkpoints(run_dir / "checkpoints", unchecked=unchecked), resume=resume,
        identity=identity, on_epoch=writer.log if on_epoch is None else _both(writer.log, on_epoch),
        layout=layout,
    )
    metrics: dict[str, float] = evaluate(result.params, "val", "val_")
    selected = result
    if cfg.refit:
        # Validation chose the epoch count; now train afresh on all training data.
        splits = {**splits, "train": splits["train"].concat(splits["val"])}
        module = _build(spec, model_cfg, splits["train"], cfg)
        model = Model.split(module)
        layout = Layout(mesh, model) if mesh is not None else None
        predict = make_predict(model, chunk=block, out_sharding=placement.replicated)
        inputs["train"] = spec.inputs(splits["train"], task=cfg.task, binary_threshold=cfg.binary_threshold)
        device_inputs.pop("train", None)
        refit_checkpoints = Checkpoints(run_dir / "checkpoints" / "refit", unchecked=unchecked)
        result = spec.fit(
            model, inputs["train"], dataclasses.replace(cfg, epochs=result.best_epoch),
            task=spec.loss or cfg.task, validate=None, monitor=None,
            checkpoints=refit_checkpoints, resume=resume and refit_checkpoints.has_last(),
            identity={**identity, "refit_epochs": result.best_epoch},
            on_epoch=lambda record: writer.log({"phase": "refit", **record}),
            layout=layout,
        )
    for part in ("train", "test"):
        metrics.update(evaluate(result.params, part, f"{part}_", predict))
    metrics.update(
        best_epoch=selected.best_epoch, epochs_run=len(selected.history),
        stopped_early=selected.stopped_early, compile_seconds=selected.compile_seconds,
        train_seconds=selected.train_seconds, examples_per_second=selected.examples_per_second,
    )
    if cfg.refit:
        metrics.update(refit_epochs=len(result.history), refit_seconds=result.train_seconds)
    trained = model.bind(result.params)
    writer.finish(metrics, _embeddings(trained, splits["train"], inputs["train"]))
    return RunResult(run_dir, result, metrics, trained, splits)

