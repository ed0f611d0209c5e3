"""``python -m recjax tune``: a fair hyper-parameter search, an Optuna study whose every trial is a run.

A study lives in one folder (``STUDY``):

* ``tune.json``: what the study is (family, metric, base settings, space, sampler,
  pruner, seed), written when it is created; ``--resume`` (and every other worker)
  refuses different settings;
* ``study.db``: Optuna's storage (SQLite) unless ``storage`` names another (any
  Optuna RDB URL, or ``journal:PATH`` for a journal file): the study's one source of
  truth, shared by every process working on it (Optuna's storage is the coordinator;
  trials are claimed from it, so none is lost or run twice);
* ``trials/trial-NNNN/``: each trial's run folder (verified, as ``train`` writes it),
  its path a trial attribute (``run``); a pruned or failed trial records why
  (``pruned`` / ``error``);
* ``jax-cache/``: JAX's persistent compilation cache, so that trials of equal shapes
  (and the study's other processes) load the compiled programs instead of compiling;
* the report (:mod:`recjax.tuning.report`): ``trials.csv``, ``best.json``, plots.

Fairness: a trial trains on the split's training part less the validation carve and
is scored on the validation carve only: its run folder holds the validation carve as
its test part, so the real test part never enters a trial. ``refit_best`` then
retrains the best setting (and the family's defaults, for comparison) on the split
(refitted on train + validation for rating families) and scores the test part once,
with a paired bootstrap interval of the best against the defaults.

Trial 0 is the family's defaults (``Space.defaults``). Each epoch (sweep) reports the
metric to Optuna, which prunes (``median``, ``hyperband``) trials behind the others;
a trial that fails (diverges, refuses its settings) is recorded and the study goes on.
A study killed at any point (``kill -9`` included) continues with ``resume``: the
finished trials stay, an interrupted one is failed by its missed heartbeats and tried
again with the same settings.

Example
-------
>>> import tempfile
>>> from recjax.tuning.study import tune
>>> result = tune("ease", out=tempfile.mkdtemp() + "/study", trials=2,
...               train={"dataset": "synthetic", "split": "random"})   # doctest: +SKIP
>>> sorted(result.best_params)                                          # doctest: +SKIP
['model.l2']
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from recjax.data.splits import PROTOCOLS, protocol_of_split
from recjax.tuning.report import best_trial, trials_frame, write_report
from recjax.tuning.space import Space, load_space

__all__ = ["tune", "TuneResult", "StudyError", "SAMPLERS", "PRUNERS", "metric_key", "open_study",
           "report_study"]

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
SETTINGS = "tune.json"
HEARTBEAT_SECONDS = 5  # a worker's trial is failed (and retried) after missing heartbeats for 3x this
# metric names whose higher values are better (others, rmse / mae / mse / loss ..., lower)
_HIGHER = ("ndcg", "recall", "precision", "hit", "auc", "accuracy", "map", "mrr", "coverage")


class StudyError(ValueError):
    """The study cannot go on as asked (settings, storage, a metric no trial reports)."""


def metric_key(metric: str) -> tuple[str, str]:
    """(the validation key a run's epochs report, ``"maximize"`` or ``"minimize"``) of a
    metric name: ``rmse`` -> ``("val_rmse", "minimize")``, ``ndcg@10`` -> ``("val_ndcg@10",
    "maximize")``."""
    name = metric[4:] if metric.startswith("val_") else metric
    if not name or any(c.isspace() for c in name):
        raise StudyError(f"metric must name a validation metric (rmse, ndcg@10, ...), got {metric!r}")
    direction = "maximize" if name.split("@")[0].lower().startswith(_HIGHER) else "minimize"
    return f"val_{name}", direction


@dataclass
class TuneResult:
    """A study's outcome.

    Attributes
    ----------
    study_dir : Path
    best_params : dict
        ``{"train.learning_rate": ..., "model.l2": ...}`` of the best trial.
    best_value : float
        Its validation metric.
    metric : str
        That metric's key (``val_rmse``).
    best_run : Path
        The best trial's run folder (``recjax.runs.Run.open`` it).
    trials : pandas.DataFrame
        One row per trial: number, state, value, parameters, run folder, why pruned or
        failed.
    test : dict or None
        With ``refit_best``: the best and the default settings scored once on the test
        part, and the paired bootstrap of their difference.
    report : dict or None
        ``best.json``'s content as the study's report last wrote it (by :func:`tune`
        and :meth:`refit`): the model, the metric, the trials by state, the best trial,
        ``test``.
    """

    study_dir: Path
    best_params: dict[str, Any]
    best_value: float
    metric: str
    best_run: Path
    trials: Any
    test: dict[str, Any] | None = None
    report: dict[str, Any] | None = None

    def refit(self, *, bootstrap: int = 1000) -> dict[str, Any]:
        """Retrain the best setting and the defaults on the whole split and score the test
        part once (what ``refit_best`` does); the comparison, also in ``best.json``."""
        settings = _read_settings(self.study_dir)
        self.test = _refit_best(self.study_dir, settings, self.best_params, bootstrap)
        self.report = report_study(self.study_dir, test=self.test)
        return self.test


def tune(model: str = "mf", *, out: str | Path, metric: str | None = None, protocol: str | None = None,
         trials: int = 20,
         timeout: float | None = None, space: str | Path | None = None, sampler: str = "tpe",
         pruner: str = "median", storage: str | None = None, jobs: int = 1, seed: int = 0,
         resume: bool = False, refit_best: bool = False, bootstrap: int = 1000,
         train: dict[str, Any] | None = None, model_settings: dict[str, Any] | None = None,
         splits: Any = None, progress: bool = False) -> TuneResult:
    """Search ``model``'s hyper-parameters on the validation carve; see the module docstring.

    Parameters
    ----------
    model : str
        The family (``recjax.families.MODELS``).
    out : path
        The study folder (created; with ``resume``, an existing study's).
    metric : str, optional
        The validation metric to optimise (``rmse``, ``ndcg@10``, ...; default the
        family's early-stopping metric). It must be one the family's validation reports.
    protocol : {"ua", "strong", "loo"}, optional
        The ranking protocol (:data:`recjax.data.splits.PROTOCOLS`): ``strong`` trains
        on a ``users`` split (held-out users folded in), ``loo`` on ``last_one``; ``ua``
        on a split of further ratings of the training users (the dataset's default or
        ``train["split"]``). Default: the one the split implies. The trials' validation
        and ``refit_best``'s test follow it.
    trials : int
        Trials of the study in all (finished or pruned), over every process and resume.
    timeout : float, optional
        Seconds this call searches at most.
    space : path, optional
        A TOML search space replacing the family's default (:mod:`recjax.tuning.space`).
    sampler : {"tpe", "random", "grid"}
        Optuna's sampler, seeded by ``seed`` (grid: :meth:`Space.grid`).
    pruner : {"median", "hyperband", "none"}
    storage : str, optional
        An Optuna RDB URL (``postgresql://...``, ``sqlite:///...``) or ``journal:PATH``;
        default ``sqlite:///STUDY/study.db``.
    jobs : int
        Processes searching at once (this one and ``jobs - 1`` started here).
    seed : int
        The sampler's seed and every trial's run seed.
    resume : bool
        Continue the study in ``out`` (its settings must be these).
    refit_best : bool
        Then score the best setting and the defaults once on the test part.
    bootstrap : int
        Resamples of that comparison's paired bootstrap.
    train, model_settings : dict, optional
        Settings every trial shares (``RunConfig`` fields: dataset, split, data,
        columns, ...; the family's config fields not searched).
    splits : dict, optional
        ``{"train", "val", "test"}`` parts (your own data) instead of ``train``'s dataset.
    progress : bool
        Print one line per finished trial.

    Raises
    ------
    StudyError
        (a ValueError) Bad settings, a study that exists (without ``resume``) or does not
        (with it) or was created with other settings, a metric no trial reports.
    """
    from recjax.families import make_configs

    if sampler not in SAMPLERS:
        raise StudyError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise StudyError(f"unknown pruner {pruner!r}; choose one of {', '.join(PRUNERS)}")
    for name, value in (("trials", trials), ("jobs", jobs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StudyError(f"{name} must be a positive integer, got {value!r}")
    if timeout is not None and not timeout > 0:
        raise StudyError(f"timeout must be > 0 seconds, got {timeout!r}")
    train = _protocol_split(protocol, {k: v for k, v in (train or {}).items() if k not in ("model", "out", "seed")})
    cfg, _ = make_configs(model, train, model_settings)  # the shared settings are valid before anything is written
    searched = load_space(model, space)
    searched.defaults()  # trial 0 trains the defaults: they must lie inside the space
    both = sorted(p.key for p in searched.params
                  if p.name in (train if p.table == "train" else model_settings or {}))
    if both:
        raise StudyError(f"{', '.join(both)} is searched by the space ({searched.source}) and also fixed "
                         f"by the settings given: drop the setting, or give a space without it")
    key, direction = metric_key(metric or _monitor(model, train))
    settings = {"model": model, "metric": key, "direction": direction, "protocol": protocol_of_split(cfg.split),
                "train": train,
                "model_settings": model_settings or {}, "space": str(searched.source),
                "space_text": Path(searched.source).read_text(), "sampler": sampler, "pruner": pruner,
                "seed": seed, "storage": storage, "own_data": splits is not None}
    study_dir = Path(out)
    _prepare_folder(study_dir, settings, resume)
    work = dict(study_dir=str(study_dir), trials=trials, timeout=timeout, progress=progress)
    if jobs > 1:
        if splits is not None:
            raise StudyError("jobs > 1 loads the data in each process: give train={'data': FILE, ...}, "
                             "not splits")
        context = multiprocessing.get_context("spawn")  # JAX is not fork-safe
        workers = [context.Process(target=_work, kwargs=work) for _ in range(1, jobs)]
        for w in workers:
            w.start()
        try:
            _work(**work, splits=splits)
        finally:
            for w in workers:
                w.join()
        failed = [w.exitcode for w in workers if w.exitcode]
        if failed:
            raise StudyError(f"{len(failed)} of the study's worker processes failed (exit {failed[0]}); "
                             f"see their messages above, then continue with --resume")
    else:
        _work(**work, splits=splits)
    result = _result(study_dir)
    if refit_best:
        result.refit(bootstrap=bootstrap)
    else:
        result.report = report_study(study_dir)
    return result


def _protocol_split(protocol: str | None, train: dict[str, Any]) -> dict[str, Any]:
    """``train`` with the split ``protocol`` needs (checked against a split given)."""
    if protocol is None:
        return train
    if protocol not in PROTOCOLS:
        raise StudyError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    split, need = train.get("split"), PROTOCOLS[protocol]
    if split is not None and protocol_of_split(split) != protocol:
        raise StudyError(f"--protocol {protocol} does not fit --split {split}: it needs "
                         f"{f'--split {need}' if need else 'a split of ratings of training users (ua, random, ...)'}")
    return {**train, "split": need} if need and split is None else train


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s draws in a study seeded ``seed``: the two mixed
    (NumPy's ``SeedSequence``), so that studies of nearby seeds draw unrelated settings."""
    import numpy as np

    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _monitor(model: str, train: dict[str, Any]) -> str:
    """The family's early-stopping metric for the task (``val_rmse``, ``val_ndcg@10``...)."""
    from recjax.families import make_configs
    from recjax.experiment import MONITOR
    from recjax.families import MODELS

    cfg, _ = make_configs(model, train)
    return (MODELS[model].monitor or MONITOR[cfg.task])[0]


def _prepare_folder(study_dir: Path, settings: dict[str, Any], resume: bool) -> None:
    """Create the study folder and its ``tune.json`` (or, resuming, check them)."""
    path = study_dir / SETTINGS
    if resume:
        if not path.is_file():
            raise StudyError(f"--resume: {study_dir} holds no study (no {SETTINGS}); start one without --resume")
        saved = _read_settings(study_dir)
        changed = sorted(k for k in settings if saved.get(k) != settings[k] and k != "space")
        if changed:
            raise StudyError(f"--resume: {study_dir} was started with other settings ({', '.join(changed)}); "
                             f"resume it with its own, or start another study in a new folder")
        return
    if path.exists():
        raise StudyError(f"{study_dir} already holds a study; continue it with --resume, or give another --out")
    if study_dir.exists() and any(study_dir.iterdir()):
        raise StudyError(f"{study_dir} exists and is not empty; give a new folder for the study")
    study_dir.mkdir(parents=True, exist_ok=True)
    # the study and its trial 0 exist in the storage before tune.json says there is a study,
    # so a worker joining (--resume) as soon as tune.json appears finds them
    study = open_study(study_dir, settings, create=True)
    study.enqueue_trial(load_space(settings["model"], settings["space"]).defaults(),
                        user_attrs={"defaults": True})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _read_settings(study_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(study_dir) / SETTINGS).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StudyError(f"{study_dir}: cannot read {SETTINGS} ({err}); is it a study folder?") from None


def open_study(study_dir: Path, settings: dict[str, Any] | None = None, *, create: bool = False) -> Any:
    """The folder's Optuna study (``optuna.Study``), its storage as ``tune.json`` says."""
    optuna = _optuna()
    settings = settings or _read_settings(study_dir)
    storage = _storage(Path(study_dir), settings["storage"])
    space = load_space(settings["model"], settings["space"]) if settings["sampler"] == "grid" else None
    try:
        return optuna.create_study(study_name=f"recjax-{settings['model']}", storage=storage,
                                   direction=settings["direction"], load_if_exists=not create,
                                   sampler=_sampler(settings["sampler"], settings["seed"], space),
                                   pruner=_pruner(settings["pruner"]))
    except optuna.exceptions.DuplicatedStudyError:
        raise StudyError(f"the storage {settings['storage'] or storage.url} already holds a study of "
                         f"{settings['model']}; "
                         f"resume it (--resume) or give another --storage") from None


def report_study(study_dir: str | Path, *, test: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the report of the study in ``study_dir`` (:func:`recjax.tuning.report.write_report`:
    ``trials.csv``, ``best.json``, plots); returns ``best.json``'s content."""
    study_dir = Path(study_dir)
    settings = _read_settings(study_dir)
    return write_report(open_study(study_dir, settings), study_dir, settings, test=test)


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise StudyError("tune needs Optuna: pip install 'recjax[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _storage(study_dir: Path, url: str | None) -> Any:
    optuna = _optuna()
    if url and url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    url = url or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    try:
        with warnings.catch_warnings():  # Optuna marks the heartbeat experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=3 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
    except Exception as err:  # noqa: BLE001 - SQLAlchemy's errors for a bad URL are many kinds
        raise StudyError(f"cannot open the study storage {url}: {str(err).splitlines()[0]}") from None


def _sampler(name: str, seed: int, space: Space | None) -> Any:
    optuna = _optuna()
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(name: str) -> Any:
    optuna = _optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


# ----------------------------------------------------------------------------- one worker
def _work(study_dir: str, trials: int, timeout: float | None, progress: bool, splits: Any = None) -> None:
    """Search until the study holds ``trials`` finished or pruned trials (or ``timeout``)."""
    from recjax.experiment import enable_compilation_cache, load_splits

    optuna = _optuna()
    study_dir = Path(study_dir)
    settings = _read_settings(study_dir)
    enable_compilation_cache(study_dir / "jax-cache")
    study = open_study(study_dir, settings)
    base, _ = _configs(settings, {"train": {}, "model": {}}, "")
    parts = splits if splits is not None else load_splits(base)
    trial_parts = {"train": parts["train"], "val": parts["val"], "test": parts["val"]}
    space = load_space(settings["model"], settings["space"])
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def enough(study: Any) -> bool:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        finished = sum(s in done for s in states)
        failed = sum(s == optuna.trial.TrialState.FAIL for s in states)
        return finished >= trials or failed >= max(trials, 3)  # nothing but failures: stop as well

    def report(study: Any, trial: Any) -> None:
        if progress:
            best = best_trial(study)
            value = "-" if trial.value is None else f"{trial.value:.5g}"
            print(f"trial {trial.number:4d} {trial.state.name.lower():8s} {settings['metric']} {value:>10s}  "
                  f"best {best.value if best else float('nan'):.5g}", flush=True)
        if enough(study):
            study.stop()

    if enough(study):  # a resumed study that is already complete searches no more
        return
    study.optimize(_objective(study_dir, settings, space, trial_parts), timeout=timeout,
                   callbacks=[report], catch=())


def _configs(settings: dict[str, Any], params: dict[str, dict[str, Any]], out: str) -> tuple[Any, Any]:
    from recjax.families import make_configs

    cfg, model_cfg = make_configs(settings["model"], {**settings["train"], **params["train"]},
                                  {**settings["model_settings"], **params["model"]})
    return dataclasses.replace(cfg, out=out or None, quiet=True, refit=False, seed=settings["seed"]), model_cfg


def _objective(study_dir: Path, settings: dict[str, Any], space: Space, parts: dict[str, Any]) -> Callable:
    """Optuna's objective: one trial = one run folder, scored on the validation carve."""
    from recjax.experiment import run

    optuna = _optuna()
    key = settings["metric"]

    def objective(trial: Any) -> float:
        if settings["sampler"] != "grid":
            # each trial draws from a sampler seeded by its number, which the storage hands out
            # once: workers and resumed sessions never replay each other's draws, and a study
            # run again by one process draws the same settings
            trial.study.sampler = _sampler(settings["sampler"], trial_seed(settings["seed"], trial.number), None)
        folder = study_dir / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run", str(folder.relative_to(study_dir)))
        cfg, model_cfg = _configs(settings, space.suggest(trial), str(folder))

        def on_epoch(record: dict[str, Any]) -> None:
            reported = sorted(k for k in record if k.startswith("val_") and k != "val_seconds")
            if not reported:  # an epoch not validated (--val-every)
                return
            if key not in record:
                raise StudyError(f"the {settings['model']} runs report no {key} (they report "
                                 f"{', '.join(reported) or 'no validation metric'}); choose --metric among those")
            value, step = float(record[key]), int(record["epoch"])
            if math.isfinite(value):
                trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {step}: {key} {value:.5g}")

        try:
            result = run(cfg, model_cfg, splits=parts, on_epoch=on_epoch)
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("pruned", str(pruned))
            raise
        except StudyError:
            raise
        except (ValueError, FloatingPointError, OSError) as err:  # this setting failed: recorded, go on
            trial.set_user_attr("error", str(err).splitlines()[0][:500])
            return float("nan")
        return float(result.metrics[key])

    return objective


def _result(study_dir: Path) -> TuneResult:
    study = open_study(study_dir)
    best = best_trial(study)
    if best is None:
        raise StudyError(f"{study_dir}: no trial finished (see trials.csv's errors); nothing to report")
    settings = _read_settings(study_dir)
    return TuneResult(study_dir, dict(best.params), float(best.value), settings["metric"],
                      study_dir / best.user_attrs["run"], trials_frame(study))


# ----------------------------------------------------------------------------- the test, once
def _refit_best(study_dir: Path, settings: dict[str, Any], best_params: dict[str, Any],
                bootstrap: int) -> dict[str, Any]:
    """Train the best setting and the defaults on the split (refitted on train +
    validation where the family can) and score the test part once; their paired
    bootstrap over test users."""
    from recjax.experiment import run
    from recjax.families import MODELS
    from recjax.runs import Run

    if settings["own_data"]:
        raise StudyError("refit needs the study's data: a study of your own parts (splits=) refits with "
                         "recjax.run on them")
    space = load_space(settings["model"], settings["space"])
    spec = MODELS[settings["model"]]
    out: dict[str, Any] = {}
    runs = {}
    for name, flat in (("best", best_params), ("defaults", space.defaults())):
        nested: dict[str, dict[str, Any]] = {"train": {}, "model": {}}
        for k, v in flat.items():
            table, field = k.split(".", 1)
            nested[table][field] = v
        folder = study_dir / name
        cfg, model_cfg = _configs(settings, nested, str(folder))
        cfg = dataclasses.replace(cfg, refit=bool(spec.capabilities.pairs), quiet=True)
        result = run(cfg, model_cfg)
        runs[name] = Run.open(folder)
        out[name] = {"run": name, "params": flat,
                     **{k: float(v) for k, v in result.metrics.items() if k.startswith("test_")}}
    out["bootstrap"] = _compare(runs["best"], runs["defaults"], settings["metric"], settings["protocol"],
                                bootstrap)
    return out


def _compare(best: Any, defaults: Any, key: str, protocol: str, n_resamples: int) -> dict[str, Any]:
    """Paired bootstrap over test users of best minus defaults: the study's metric per
    user under ``protocol`` (a rating metric as each user's mean squared / absolute error)."""
    import numpy as np

    from recjax.evaluation.experiment import Experiment
    from recjax.evaluation.protocol import RankingTask
    from recjax.evaluation.significance import paired_bootstrap
    from recjax.evaluation.strong import StrongTask

    name = key[4:]
    if "@" in name:
        metric, k = name.split("@")
        task = (StrongTask if protocol == "strong" else RankingTask).from_run(best)
        row = Experiment(task, {"defaults": defaults, "best": best}, k=int(k)).paired(
            n_resamples, metric=metric)
        return {"metric": f"test_{name} gain (best - defaults)", **next(iter(row.values()))}
    per_user = []
    for run in (best, defaults):
        predictions, labels = run.rating_predictions("test")
        errors = np.abs(predictions - labels) if name == "mae" else (predictions - labels) ** 2
        users = run.splits["test"].user
        per_user.append(np.bincount(users, errors) [np.unique(users)] / np.bincount(users)[np.unique(users)])
    what = "mae" if name == "mae" else "mse"
    # errors negated: the difference is the error the best setting saves (defaults - best),
    # and share_a_better the share of resamples where it saves some
    return {"metric": f"test per-user {what} reduction (defaults - best)",
            **paired_bootstrap(-per_user[0], -per_user[1], n_resamples=n_resamples)}
