"""Command line: ``python -m recjax <command> ...`` (or the ``recjax`` script).

Flags only; the logic lives in the library modules each command calls. Every
expected failure (bad flag values, missing data, unknown ids) ends with a one-line
``recjax: error: ...`` message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Sequence

from recjax.config import RunConfig, describe
from recjax.data.download import DATASETS

__all__ = ["main", "build_parser"]


class CommandError(Exception):
    """An expected, user-facing failure: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- data
def _data_info(args: argparse.Namespace) -> int:
    from recjax.data import load_movielens

    data = load_movielens(args.name, args.data_dir, allow_download=not args.no_download)
    print(f"{data.name}: {data!r}")
    for key, value in data.stats().items():
        shown = f"{value:.4f}" if isinstance(value, float) and not value.is_integer() else f"{value:g}"
        print(f"  {key:<26} {shown}")
    return 0


def _data_download(args: argparse.Namespace) -> int:
    from recjax.data import download

    folder = download(args.name, args.cache, url=args.url, force=args.force)
    print(f"{args.name} is in {folder}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="dataset information and downloads")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{info,download}")
    names = sorted(DATASETS)

    info = data_sub.add_parser("info", help="summary statistics of a dataset")
    info.add_argument("name", choices=names, help="dataset name")
    info.add_argument("--data-dir", help="folder holding the dataset (default: RECJAX_DATA, cache)")
    info.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    info.set_defaults(func=_data_info)

    fetch = data_sub.add_parser("download", help="download a dataset into the cache")
    fetch.add_argument("name", choices=names, help="dataset name")
    fetch.add_argument("--cache", help="cache folder (default: RECJAX_CACHE or ~/.cache/recjax)")
    fetch.add_argument("--url", help="download from this URL instead of GroupLens")
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    fetch.set_defaults(func=_data_download)


# ----------------------------------------------------------------------------- train
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_dataclass_flags(parser: Any, cls: type, defaults: Any, skip: set[str], *,
                         hidden: bool = False) -> set[str]:
    """One flag per field of ``cls`` not in ``skip``, its help, type and choices from the
    field's metadata (:func:`recjax.config.describe`) and the default shown from the
    ``defaults`` instance (what a run uses). Defaults are SUPPRESSed so only the flags
    actually given reach the namespace; ``hidden`` flags are accepted but not listed.
    Returns the field names added."""
    added = set()
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        text, kind, choices = describe(field)
        default = getattr(defaults, field.name)
        shown = "" if default is None or default == "" else f" (default {default!r})"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": field.name,
                                  "help": argparse.SUPPRESS if hidden
                                  else (text + shown).replace("%", "%%")}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if choices:  # listed, and checked by the config (a one-line error, not argparse's)
                kwargs["metavar"] = "{" + ",".join(choices) + "}"
        parser.add_argument(_flag(field.name), **kwargs)
        added.add(field.name)
    return added


def _model_flag_owners() -> dict[str, list[str]]:
    """Model config field -> the model families that have it."""
    from recjax.families import MODELS

    owners: dict[str, list[str]] = {}
    for name, spec in MODELS.items():
        for field in dataclasses.fields(spec.config):
            owners.setdefault(field.name, []).append(name)
    return owners


def _read_toml(path: str) -> tuple[dict, dict]:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise CommandError(f"cannot read --config {path}: {err}") from None
    unknown = set(raw) - {"train", "model"}
    if unknown:
        raise CommandError(f"--config {path}: unknown table(s) {sorted(unknown)}; use [train] and [model]")
    return raw.get("train", {}), raw.get("model", {})


def train_configs(args: argparse.Namespace) -> tuple[RunConfig, Any]:
    """(RunConfig, model config): a TOML file's settings (optional), overridden by flags;
    what neither sets is the library's default (the model family's recommended training
    settings included), exactly as ``RunConfig(...)`` in research code."""
    from recjax.config import from_dict
    from recjax.families import MODELS

    train_values, model_values = given_settings(args, _RUN_ONLY)
    model = train_values.get("model", "mf")
    return from_dict(RunConfig, train_values), from_dict(MODELS[model].config, model_values)


def given_settings(args: argparse.Namespace, not_settings: Sequence[str]) -> tuple[dict, dict]:
    """({RunConfig field: value}, {model config field: value}) a command was given: a TOML
    file's (``--config``, optional) overridden by flags; ``not_settings``: the command's
    own flags. Raises :class:`CommandError` for an unknown model or another family's flag."""
    from recjax.families import MODELS

    given = {k: v for k, v in vars(args).items() if k not in not_settings}
    train_file, model_file = _read_toml(args.config) if args.config else ({}, {})
    train_names = {f.name for f in dataclasses.fields(RunConfig)}
    train_values = {**train_file, **{k: v for k, v in given.items() if k in train_names}}
    model = train_values.get("model", "mf")
    if model not in MODELS:
        raise CommandError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    model_names = {f.name for f in dataclasses.fields(MODELS[model].config)}
    model_flags = {k: v for k, v in given.items() if k not in train_names}
    foreign = sorted(k for k in model_flags if k not in model_names)
    if foreign:
        owners = _model_flag_owners()
        detail = ", ".join(f"{_flag(k)} ({'/'.join(owners[k])})" for k in foreign)
        raise CommandError(f"flag(s) not used by model {model!r}: {detail}")
    return train_values, {**model_file, **model_flags}


_RUN_ONLY = ("func", "command", "config", "resume", "coordinator", "num_processes", "process_id",
             "distributed", "compilation_cache")  # train flags that are not settings of the run


def start_distributed(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` for a run over several processes (hosts).

    Explicit ``--coordinator/--num-processes/--process-id``, or ``--distributed``
    alone for JAX's own detection (SLURM, Open MPI, Cloud TPU, Kubernetes, or the
    ``JAX_COORDINATOR_ADDRESS`` environment variable with the cluster's own ids).
    """
    explicit = [args.coordinator, args.num_processes, args.process_id]
    if not args.distributed and all(v is None for v in explicit):
        return
    if any(v is None for v in explicit) and not all(v is None for v in explicit):
        raise CommandError("--coordinator, --num-processes and --process-id go together")
    if args.process_id is not None and not 0 <= args.process_id < args.num_processes:
        raise CommandError(f"--process-id must be in 0..{args.num_processes - 1}, got {args.process_id}")
    if args.coordinator is not None and not re.fullmatch(r"[^:\s]+:\d+", args.coordinator):
        raise CommandError(f"--coordinator must be HOST:PORT, got {args.coordinator!r}")
    import jax

    try:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    except (RuntimeError, ValueError) as err:
        raise CommandError(f"cannot start jax.distributed: {err}") from None


def _train(args: argparse.Namespace) -> int:
    from recjax.experiment import enable_compilation_cache, run
    from recjax.report import print_run_summary

    train_cfg, model_cfg = train_configs(args)
    if args.compilation_cache:
        enable_compilation_cache(args.compilation_cache)
    start_distributed(args)
    result = run(train_cfg, model_cfg, resume=args.resume)
    if not train_cfg.quiet:
        print_run_summary(result)
    else:
        print(result.run_dir)
    return 0


def _add_train(sub: argparse._SubParsersAction, model: str = "mf") -> None:
    """The train command; ``model`` (from ``--model`` or the TOML file, else mf) decides
    whose defaults ``--help`` shows and whose flags it lists."""
    from recjax.families import MODELS

    if model not in MODELS:  # reported by train_configs; the help shows mf's defaults
        model = "mf"
    train = sub.add_parser(
        "train", help="train a model (default: MF on ml-100k's ua split)",
        description=f"Train a model. Every RunConfig and model config field is a flag; a TOML "
                    f"file with [train] and [model] tables can hold the same settings. The defaults "
                    f"shown are those a run of --model {model} uses (optimizer, learning rate, "
                    f"batch size, epochs and patience are each family's recommended ones); other "
                    f"families' flags: train --model NAME --help.")
    train.add_argument("--config", help="TOML file with [train] and [model] tables (flags override)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--compilation-cache", metavar="DIR",
                       help="keep compiled programs in DIR (JAX's persistent compilation cache), so "
                            "that a later run of the same model and data shapes skips compiling; "
                            "default: off (JAX_COMPILATION_CACHE_DIR also turns it on)")
    hosts = train.add_argument_group(
        "several processes", "one process per host (or GPU group), all with the same flags and --out "
                             "on a shared file system; combine with --mesh")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, e.g. 10.0.0.1:1234")
    hosts.add_argument("--num-processes", type=_positive, metavar="N", help="processes in the run")
    hosts.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    hosts.add_argument("--distributed", action="store_true",
                       help="let JAX detect the cluster (SLURM, Open MPI, TPU, JAX_COORDINATOR_ADDRESS)")
    _add_settings(train, model)
    train.set_defaults(func=_train)


def _add_settings(parser: argparse.ArgumentParser, model: str) -> None:
    """A flag for every RunConfig field and every model config field (``model``'s listed,
    the other families' accepted unlisted, so that such a flag is named as theirs)."""
    from recjax.families import MODELS

    settings = parser.add_argument_group("run settings (RunConfig)")
    _add_dataclass_flags(settings, RunConfig, RunConfig(model=model), skip={"model"})
    settings.add_argument("--model", metavar="{" + ",".join(MODELS) + "}", default=argparse.SUPPRESS,
                          help=f"model family (default 'mf'; shown: {model})")
    settings.add_argument("--lr", dest="learning_rate", type=float, default=argparse.SUPPRESS,
                          help="alias of --learning-rate")
    spec = MODELS[model]
    added = _add_dataclass_flags(
        parser.add_argument_group(f"{model} model settings ({spec.config.__name__})"),
        spec.config, spec.config(), skip=set())
    for other in MODELS.values():  # accepted, so that a flag of another family is named as such
        added |= _add_dataclass_flags(parser, other.config, other.config(), skip=added, hidden=True)


def chosen_model(argv: Sequence[str]) -> str:
    """The model family ``train`` argv names (``--model``, else a TOML file's ``[train]
    model``), or ``mf``; for the help and defaults shown."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(list(argv))
    if known.model:
        return known.model
    if known.config:
        try:
            return _read_toml(known.config)[0].get("model", "mf")
        except CommandError:
            return "mf"
    return "mf"


# ----------------------------------------------------------------------------- explore
def _load_run(path: str) -> Any:
    from recjax.explore import load_run

    return load_run(path)


_EVAL_COLUMNS = [  # (key prefix, header)
    ("mse", "MSE"), ("rmse", "RMSE"), ("mae", "MAE"), ("accuracy", "acc"), ("auc", "AUC"), ("log_loss", "logloss"),
    ("precision@", "P@{k}"), ("recall@", "R@{k}"), ("ndcg@", "NDCG@{k}"), ("map@", "MAP@{k}"),
    ("mrr@", "MRR@{k}"), ("hit_rate@", "HR@{k}"), ("coverage@", "cov@{k}"), ("diversity@", "div@{k}"),
    ("popularity@", "pop@{k}"), ("self_information@", "novelty@{k}"),
]


def evaluation_table(results: dict[str, dict[str, float]], k: int, markdown: bool = False,
                     columns: Sequence[tuple[str, str]] | None = None) -> str:
    """The ``evaluate`` table: one row per model, the columns any of them has
    (``columns``: (key, header) pairs instead of the ua protocol's)."""
    from recjax.report import format_table

    def key(prefix: str) -> str:
        return f"{prefix}{k}" if prefix.endswith("@") else prefix

    wanted = columns if columns is not None else [(key(p), h.format(k=k)) for p, h in _EVAL_COLUMNS]
    columns = [(c, h) for c, h in wanted if any(c in m for m in results.values())]
    rows = [[name] + [m.get(c) for c, _ in columns] for name, m in results.items()]
    return format_table(["model"] + [h for _, h in columns], rows, markdown=markdown)


_STRONG_COLUMNS = [("recall@20", "Recall@20"), ("recall@50", "Recall@50"), ("ndcg@100", "NDCG@100"),
                   ("users", "users")]


def _protocol(args: argparse.Namespace, runs: Sequence[Any]) -> str:
    """The protocol asked for (or implied by the runs' split), checked against each run."""
    from recjax.data.splits import protocol_of_split

    for path, run in zip(args.run, runs):
        implied = protocol_of_split(run.split)
        protocol = args.protocol or implied
        if protocol != implied:
            need = {"strong": "a 'users' split (train --split users)",
                    "loo": "a 'last_one' split (train --split last_one)",
                    "ua": "a split with test ratings of training users (ua, random, per_user, ...)"}
            raise CommandError(f"--protocol {protocol} does not fit {path} (split {run.split!r}): it "
                               f"needs {need[protocol]}; its split implies --protocol {implied}")
    return args.protocol or protocol_of_split(runs[0].split)


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from recjax.evaluation.compare import experiment_of_runs, row_names
    from recjax.report import format_table

    runs = [_load_run(path) for path in args.run]
    first = runs[0]
    for path, run in zip(args.run, runs):
        if args.split is not None and args.split != run.split:
            raise CommandError(
                f"{path} was trained on split {run.split!r}; evaluating it on "
                f"{args.split!r} would score items it was trained on (train a run on {args.split!r})")
    protocol = _protocol(args, runs)
    if (args.ensemble_ease is not None or args.ensemble_weights is not None) and not args.ensemble:
        raise CommandError("--ensemble-ease and --ensemble-weights need --ensemble")
    if args.ensemble_weights is not None and len(args.ensemble_weights) != len(runs):
        raise CommandError(f"--ensemble-weights gives {len(args.ensemble_weights)} weights for "
                           f"{len(runs)} runs: give one per run, in the runs' order")
    if args.bootstrap and len(runs) < 2:
        raise CommandError("--bootstrap compares runs with the first: give at least two runs")
    if protocol == "strong" and args.ensemble:
        raise CommandError("--ensemble is not available with --protocol strong")
    experiment = experiment_of_runs(
        runs, protocol, k=None if protocol == "strong" else args.k, baselines=not args.no_baselines,
        ease_l2=args.ease_l2, ensemble=(args.ensemble_ease or 0.0) if args.ensemble else None,
        weights=args.ensemble_weights, threshold=args.threshold, seed=args.seed)
    result = experiment.run(args.bootstrap or 0, seed=args.seed, compared=row_names(runs)[1:])
    results, significance, k = result.table, result.bootstrap, experiment.cutoff
    if protocol == "strong":
        columns = _STRONG_COLUMNS
        print(f"{first.dataset} split {first.split!r} (strong generalisation): "
              f"{len(experiment.protocol.users)} held-out test users with >= 5 positives (rating >= "
              f"{args.threshold:g}); 80% of each user's positives folded in, the other 20% ranked "
              f"against every training item\n")
    else:
        columns = None
        what = ("the user's latest rating (leave-last-one-out)" if protocol == "loo"
                else "the user's test items")
        print(f"{first.dataset} split {first.split!r}: "
              f"{next(iter(results.values()))['users']} test users, all unrated items ranked, "
              f"relevant = {what}\n")
    print(evaluation_table(results, k, markdown=args.markdown, columns=columns))
    if protocol != "strong":
        print(f"\nrating metrics on the test part; novelty@{k} = mean self-information "
              f"-log2 p(item) in bits, pop@{k} = mean share of users who rated a recommended "
              f"item; div@{k} measured in {first.name}'s item embedding space")
    if significance:
        rows = [[name, r["difference"], r["low"], r["high"], r["share_a_better"]]
                for name, r in significance.items()]
        print(f"\npaired bootstrap over {next(iter(significance.values()))['users']} users "
              f"({args.bootstrap} resamples, seed {args.seed}): NDCG@{k} of each run minus "
              f"{row_names(runs)[0]}")
        print(format_table(["model", f"ΔNDCG@{k}", "95% low", "95% high", "share better"], rows,
                           markdown=args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"runs": [str(r.path) for r in runs], "dataset": first.dataset, "split": first.split,
             "protocol": protocol, "k": k, "results": results,
             **({"bootstrap": significance} if significance else {})}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="rating and ranking metrics of runs against baselines",
                        description="Rank all unrated items for every test user of the runs' "
                                    "split; report rating, ranking, coverage, diversity and novelty "
                                    "metrics with the most-popular and EASE baselines.")
    ev.add_argument("run", nargs="+", help="run folder(s), all trained on one split")
    ev.add_argument("--split", help="must be the runs' own split (default: it)")
    ev.add_argument("--protocol", choices=("ua", "strong", "loo"),
                    help="ua: rank all unrated items for the test users (any split of ratings of "
                         "training users); strong: strong generalisation (Liang et al. 2018: "
                         "held-out users, 80%% of their positives folded in, Recall@20/50 and "
                         "NDCG@100; needs a 'users' split); loo: leave-last-one-out, full ranking "
                         "(needs a 'last_one' split; HR and NDCG at --k). Default: the one the "
                         "runs' split implies")
    ev.add_argument("--threshold", type=float, default=4.0,
                    help="strong: ratings >= this are positives (default 4, as the paper on "
                         "MovieLens)")
    ev.add_argument("--bootstrap", type=_positive, metavar="N",
                    help="paired bootstrap over users (N resamples) of each run's NDCG against the "
                         "first run's, printed after the table")
    ev.add_argument("--seed", type=int, default=0,
                    help="seeds the strong protocol's 80/20 division and the bootstrap (default 0)")
    ev.add_argument("--ease-l2", type=float, default=250.0,
                    help="the EASE baseline's L2 weight (default 250, tuned on ml-100k)")
    ev.add_argument("--k", type=_positive, default=10, help="ranking cut-off (default 10)")
    ev.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ev.add_argument("--markdown", action="store_true", help="print a markdown table")
    ev.add_argument("--no-baselines", action="store_true", help="the runs only")
    ev.add_argument("--ensemble", action="store_true",
                    help="add a row for an ensemble of the runs: their rankings blended (each "
                         "run's scores standardised per user, equal weights unless "
                         "--ensemble-weights) and, for rating models of one task, their test "
                         "predictions averaged")
    ev.add_argument("--ensemble-weights", type=_weights, metavar="W1,W2,...",
                    help="with --ensemble: one non-negative weight per run, in the runs' order, "
                         "normalised to the runs' share of the blend (9,17,17,17: iALS at 0.15 "
                         "beside 3 Mult-DAE seeds, chosen on ub)")
    ev.add_argument("--ensemble-ease", type=_ease_weight, metavar="W",
                    help="with --ensemble: EASE joins the blend at weight W in [0, 1), the runs "
                         "share 1 - W (0.1 was chosen on ub for 3 Mult-DAE seeds)")
    ev.set_defaults(func=_evaluate)


def _ease_weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _weights(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) and v >= 0 for v in values) or not any(values):
        raise argparse.ArgumentTypeError(f"expected finite weights >= 0, not all zero, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _recommend(args: argparse.Namespace) -> int:
    import time

    from recjax.explore import recommendations
    from recjax.report import format_table

    if not args.all and not args.user:
        raise CommandError("give --user ID [ID ...] or --all")
    if args.all and args.user:
        raise CommandError("give either --user or --all, not both")
    if args.all and not args.out:
        raise CommandError("--all needs --out FILE.csv (one row per user and item)")
    run = _load_run(args.run)
    tic = time.perf_counter()
    vocab = run.data.users  # ids as text: "943" is user 943 on integer ids
    users = vocab.ids if args.all else vocab.ids[vocab.resolve(args.user, "--user", text=True)]
    recs = recommendations(run, users, args.N, measure=args.measure, include_rated=args.include_rated)
    seconds = time.perf_counter() - tic
    if args.out:
        recs.to_csv(args.out, index=False)
        print(f"wrote {len(recs):,} recommendations for {recs['user_id'].nunique():,} users to "
              f"{args.out} ({seconds:.1f} s)")
    if not args.all:
        rated = run.rated
        index = run.data.users.index(recs["user_id"].drop_duplicates().to_numpy())
        for (user_id, group), u in zip(recs.groupby("user_id", sort=False), index):
            n_rated = int(rated.indptr[u + 1] - rated.indptr[u])
            print(f"\nuser {user_id} ({n_rated} rated items, "
                  f"{'included' if args.include_rated else 'excluded'}; {args.measure} score)")
            print(format_table(["rank", "item", "title", "genres", "score"],
                               group[["rank", "item_id", "title", "genres", "score"]].values.tolist(),
                               floatfmt=".3f"))
    return 0


def _add_recommend(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser("recommend", help="top-N items for users of a trained run")
    rec.add_argument("run", help="run folder")
    rec.add_argument("--user", nargs="+", metavar="ID", help="raw user id(s) of the dataset")
    rec.add_argument("--all", action="store_true", help="every user (needs --out)")
    rec.add_argument("-N", type=_positive, default=10, help="items per user (default 10)")
    rec.add_argument("--measure", choices=("dot", "cosine"), default="dot",
                     help="dot: the model's own ranking; cosine: of the embeddings (default dot)")
    rec.add_argument("--include-rated", action="store_true", help="allow items the user has rated")
    rec.add_argument("--out", metavar="FILE.csv", help="write user_id,rank,item_id,title,genres,score")
    rec.set_defaults(func=_recommend)


def _neighbors(args: argparse.Namespace) -> int:
    from recjax.explore import neighbors
    from recjax.report import format_table

    if (args.movie is None) == (args.item is None):
        raise CommandError("give --movie TITLE or --item ID")
    run = _load_run(args.run)
    items = run.data.items  # the id as text: "95" is item 95 on integer ids
    item = None if args.item is None else items.ids[items.resolve(args.item, "--item", text=True)]
    found = neighbors(run, args.movie, args.k, measure=args.measure, item_id=item,
                      include_self=args.include_self)
    print(f"Nearest neighbors of: {found.title} (item {found.item_id}; {args.measure})")
    if found.others:
        print(f"[Found more than one matching movie. Other candidates: {', '.join(found.others)}]")
    header = "distance" if args.measure == "l2" else f"{args.measure} score"
    print(format_table(["rank", "item", "title", "genres", header],
                       found.table[["rank", "item_id", "title", "genres", "score"]].values.tolist(),
                       floatfmt=".3f"))
    return 0


def _add_neighbors(sub: argparse._SubParsersAction) -> None:
    nb = sub.add_parser("neighbors", help="nearest items of a movie in embedding space")
    nb.add_argument("run", help="run folder")
    nb.add_argument("--movie", help="title substring (case-insensitive); the first match is used")
    nb.add_argument("--item", help="raw item id, instead of --movie")
    nb.add_argument("-k", type=_positive, default=6, help="neighbours (default 6)")
    nb.add_argument("--measure", choices=("dot", "cosine", "l2"), default="cosine",
                    help="similarity (default cosine)")
    nb.add_argument("--include-self", action="store_true", help="let the movie itself be listed")
    nb.set_defaults(func=_neighbors)


def _plot(args: argparse.Namespace) -> int:
    try:
        from recjax.plots import plot_run
    except ImportError as err:
        raise CommandError(f"plot needs matplotlib: pip install 'recjax[plot]' ({err})") from None
    run = _load_run(args.run)
    out = Path(args.out) if args.out else run.path / "plots"
    for path in plot_run(run, out, tsne=False if args.no_tsne else None, label=args.label):
        print(path)
    return 0


def _add_plot(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser("plot", help="PNG plots of a run (needs the plot extra)",
                        description="Learning curves, embedding norm vs number of ratings, a 2-D "
                                    "projection of the item embeddings by genre (PCA; t-SNE with "
                                    "scikit-learn), and rating-count histograms.")
    pl.add_argument("run", help="run folder")
    pl.add_argument("--out", metavar="DIR", help="output folder (default RUN/plots)")
    pl.add_argument("--no-tsne", action="store_true", help="skip t-SNE (the slowest plot)")
    pl.add_argument("--label", type=int, default=8, help="outliers labelled by title (default 8)")
    pl.set_defaults(func=_plot)


# ----------------------------------------------------------------------------- predict
def _predict(args: argparse.Namespace) -> int:
    from recjax.predict import load_trained, read_requests, respond

    if not Path(args.input).is_file():
        raise CommandError(f"--input {args.input}: no such file")
    answer = json.dumps(respond(load_trained(args.run), read_requests(args.input)))
    if args.output:
        Path(args.output).write_text(answer + "\n", encoding="utf-8")
    else:
        print(answer)
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser(
        "predict", help="Object2Vec-style inference: scores of pairs, or one side's embeddings",
        description='Answer {"instances": [{"in0": [...], "in1": [...]}, ...]} (or JSON Lines of '
                    'instances) with {"predictions": [{"scores": [...]}, ...]}; instances with only '
                    'in0 or only in1 get {"predictions": [{"embeddings": [...]}, ...]}. MovieLens runs '
                    'take raw ids: in0 = [user id], in1 = [movie id]. See recjax/predict.py.')
    pr.add_argument("run", help="run folder of a pair, mf or dnn model")
    pr.add_argument("--input", required=True, help="request file (JSON or JSON Lines)")
    pr.add_argument("--output", help="write the response here instead of to stdout")
    pr.set_defaults(func=_predict)


# ----------------------------------------------------------------------------- serve
def _serve(args: argparse.Namespace) -> int:
    try:
        from recjax.serve import serve  # starlette and uvicorn, or the hint below
    except ImportError as err:
        raise CommandError(f"serve needs the serve extra: pip install 'recjax[serve]' ({err})") from None
    serve(args.run, host=args.host, port=args.port, workers=args.workers,
          batch_window_ms=args.batch_window_ms, max_batch=args.max_batch,
          max_body_bytes=args.max_body_bytes, max_instances=args.max_instances)
    return 0


def _window_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds in [0, 1000], got {text!r}") from None
    if not 0.0 <= value <= 1000.0:
        raise argparse.ArgumentTypeError(f"expected milliseconds in [0, 1000], got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {value}")
    return value


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from recjax.serve import DEFAULTS as D  # plain values: imports neither starlette nor uvicorn

    sv = sub.add_parser(
        "serve", help="serve runs over HTTP: SageMaker's /ping and /invocations, /recommend, "
                      "/similar, /predict (needs the serve extra)",
        description="Serve trained runs over HTTP (Starlette on uvicorn). Each run answers under "
                    "/models/NAME/ (NAME = its folder's name); the first also at /invocations, "
                    "/recommend, /similar and /predict. GET /ping answers 200 once every run is "
                    "loaded and warm. Concurrent requests are batched into one model call. "
                    "SIGTERM finishes the requests in flight, then exits. See README, Serving.")
    sv.add_argument("run", nargs="+", help="run folder(s)")
    sv.add_argument("--host", default=D["host"],
                    help=f"address to listen on (default {D['host']}; 0.0.0.0 in a container)")
    sv.add_argument("--port", type=_port, default=D["port"],
                    help=f"port (default {D['port']}, SageMaker's; 0 = any free port)")
    sv.add_argument("--workers", type=_positive, default=D["workers"],
                    help=f"server processes, each with its own copy of the models (default {D['workers']})")
    sv.add_argument("--batch-window-ms", type=_window_ms, default=D["batch_window_ms"],
                    help=f"how long a request waits for others to share its model call "
                         f"(default {D['batch_window_ms']:g})")
    sv.add_argument("--max-batch", type=_positive, default=D["max_batch"],
                    help=f"rows (users, items, pairs) in one model call (default {D['max_batch']}; "
                         f"1 with --batch-window-ms 0 turns batching off)")
    sv.add_argument("--max-body-bytes", type=_positive, default=D["max_body_bytes"],
                    help=f"larger request bodies get 413 (default {D['max_body_bytes']}, SageMaker's 6 MB)")
    sv.add_argument("--max-instances", type=_positive, default=D["max_instances"],
                    help=f"users, items, pairs or instances per request (default {D['max_instances']})")
    sv.set_defaults(func=_serve)


# ----------------------------------------------------------------------------- main
def _tune(args: argparse.Namespace) -> int:
    from recjax.tuning.report import summary_lines
    from recjax.tuning.study import tune

    train, model_values = given_settings(args, _TUNE_ONLY)
    study = train.pop("out", None)
    if not study:
        raise CommandError("tune needs --out STUDY: the folder of the study (its storage, trials and report)")
    result = tune(train.pop("model", "mf"), out=study, metric=args.metric, protocol=args.protocol,
                  trials=args.trials,
                  timeout=args.timeout, space=args.space, sampler=args.sampler, pruner=args.pruner,
                  storage=args.storage, jobs=args.jobs, seed=train.pop("seed", 0), resume=args.resume,
                  refit_best=args.refit_best, bootstrap=args.bootstrap, train=train,
                  model_settings=model_values, progress=True)
    print("\n".join(summary_lines(result.report, result.trials)))
    print(f"study: {result.study_dir} (trials.csv, best.json, plots); best run: {result.best_run}")
    return 0


def _tune_report(argv: Sequence[str]) -> int:
    """``tune report STUDY``: the report written anew and its table printed."""
    from recjax.tuning.report import summary_lines, trials_frame
    from recjax.tuning.study import open_study, report_study

    parser = argparse.ArgumentParser(prog="recjax tune report",
                                     description="Write a study's report (trials.csv, best.json, plots) "
                                                 "and print its table.")
    parser.add_argument("study", help="the study folder (tune --out)")
    args = parser.parse_args(argv)
    report = report_study(args.study)
    print("\n".join(summary_lines(report, trials_frame(open_study(Path(args.study))))))
    return 0


_TUNE_ONLY = ("func", "command", "config", "metric", "protocol", "space", "trials", "timeout", "sampler", "pruner",
              "storage", "jobs", "resume", "refit_best", "bootstrap")


def _add_tune(sub: argparse._SubParsersAction, model: str = "mf") -> None:
    from recjax.families import MODELS
    from recjax.data.splits import PROTOCOLS
    from recjax.tuning.study import PRUNERS, SAMPLERS

    if model not in MODELS:  # reported when the settings are read; the help shows mf's
        model = "mf"
    tune = sub.add_parser(
        "tune", help="hyper-parameter search on the validation carve (Optuna; 'tune report STUDY' "
                     "reports a study)",
        description="Search a model family's settings with Optuna: every trial a run folder under "
                    "STUDY/trials, trained on the training part less the validation carve and scored "
                    "on the validation carve; the test part only with --refit-best, once. Run "
                    "settings and model settings given as flags are shared by every trial; the "
                    "searched ones come from the family's default space or --space. 'python -m "
                    "recjax tune report STUDY' writes and prints a study's report.")
    tune.add_argument("--config", help="TOML file with [train] and [model] tables (flags override)")
    search = tune.add_argument_group("search")
    search.add_argument("--metric", help="validation metric to optimise: rmse, mae, ndcg@10, ... "
                                         "(default: the family's early-stopping metric)")
    search.add_argument("--protocol", choices=tuple(PROTOCOLS),
                        help="ranking protocol: ua (further ratings of training users), strong (held-out "
                             "users: --split users), loo (latest rating: --split last_one); default the "
                             "one the split implies")
    search.add_argument("--space", metavar="FILE.toml", help="search space replacing the family's default")
    search.add_argument("--trials", type=_positive, default=20, help="trials in the study (default 20)")
    search.add_argument("--timeout", type=float, metavar="SECONDS", help="stop searching after this long")
    search.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="default tpe (seeded by --seed)")
    search.add_argument("--pruner", choices=PRUNERS, default="median", help="default median")
    search.add_argument("--storage", metavar="URL", help="Optuna storage: an RDB URL or journal:PATH, "
                                                         "for several processes or machines on one "
                                                         "study (default sqlite in STUDY)")
    search.add_argument("--jobs", type=_positive, default=1, help="processes searching at once (default 1)")
    search.add_argument("--resume", action="store_true", help="continue the study in --out")
    search.add_argument("--refit-best", action="store_true",
                        help="then train the best and the default settings on the whole split and score "
                             "the test part once, with a paired bootstrap interval")
    search.add_argument("--bootstrap", type=_positive, default=1000, help="resamples of that interval")
    _add_settings(tune, model)
    tune.set_defaults(func=_tune)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train, _add_data, _add_evaluate, _add_recommend, _add_neighbors, _add_plot]
COMMANDS.append(_add_predict)
COMMANDS.append(_add_serve)
COMMANDS.append(_add_tune)


def build_parser(model: str = "mf") -> argparse.ArgumentParser:
    """The command line's parser; ``train``'s help and defaults are ``model``'s."""
    parser = argparse.ArgumentParser(
        prog="recjax",
        description="Recommender systems for researchers: train, evaluate and query models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        if add in (_add_train, _add_tune):
            add(sub, model)
        else:
            add(sub)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The failures printed as one line. Imported when an exception is being matched, so
    commands that never touch checkpoints (``--help``, ``data``) skip orbax and JAX."""
    from recjax.data import ChecksumError, DatasetNotFoundError, MalformedFileError, UnknownIdError
    from recjax.train.checkpoint import CheckpointError

    return (CommandError, DatasetNotFoundError, ChecksumError, MalformedFileError,
            UnknownIdError, CheckpointError, OSError, FloatingPointError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["tune", "report"]:
        func: Callable[[], int] = lambda: _tune_report(argv[2:])  # noqa: E731
    else:
        args = build_parser(chosen_model(argv)).parse_args(argv)
        func = lambda: args.func(args)  # noqa: E731
    try:
        return func()
    except _expected_errors() as err:
        print(f"recjax: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recjax: interrupted; a training run continues with --resume --out RUN", file=sys.stderr)
        return 130
