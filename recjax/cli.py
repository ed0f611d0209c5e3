"""Command line: ``python -m recjax <command> ...`` (or the ``recjax`` script).

Flags only; the logic lives in the library modules each command calls. Every
expected failure (bad flag values, missing data, unknown ids) ends with a one-line
``recjax: error: ...`` message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Sequence

from recjax.config import TrainConfig
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


def _field_comments(cls: type) -> dict[str, str]:
    """The ``# comment`` after each field in ``cls``'s source: its help text."""
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+):[^#]*#\s*(.+)$", line)
        if match:
            comments[match.group(1)] = match.group(2).replace("%", "%%")
    return comments


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, skip: set[str]) -> set[str]:
    """One flag per field of ``cls`` not in ``skip``; defaults are SUPPRESSed so only
    the flags actually given reach the namespace. Returns the field names added."""
    added, comments = set(), _field_comments(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        kind = type(field.default)
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": field.name,
                                  "help": f"{comments.get(field.name, '')} (default {field.default!r})"}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif field.default is None:
            kwargs["type"] = str
        else:
            kwargs["type"] = kind
        parser.add_argument(_flag(field.name), **kwargs)
        added.add(field.name)
    return added


def _model_flag_owners() -> dict[str, list[str]]:
    """Model config field -> the model families that have it."""
    from recjax.models import MODELS

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


def train_configs(args: argparse.Namespace) -> tuple[TrainConfig, Any]:
    """(TrainConfig, model config) from the model's recommended settings, overridden by a
    TOML file (optional), overridden by flags."""
    from recjax.models import MODELS, recommended_configs

    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config", "resume")}
    train_file, model_file = _read_toml(args.config) if args.config else ({}, {})
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    train_values = {**train_file, **{k: v for k, v in given.items() if k in train_names}}
    model = train_values.get("model", TrainConfig.model)
    if model not in MODELS:
        raise CommandError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    model_names = {f.name for f in dataclasses.fields(MODELS[model].config)}
    model_flags = {k: v for k, v in given.items() if k not in train_names}
    foreign = sorted(k for k in model_flags if k not in model_names)
    if foreign:
        owners = _model_flag_owners()
        detail = ", ".join(f"{_flag(k)} ({'/'.join(owners[k])})" for k in foreign)
        raise CommandError(f"flag(s) not used by model {model!r}: {detail}")
    return recommended_configs(model, train_values, {**model_file, **model_flags})


def _train(args: argparse.Namespace) -> int:
    from recjax.experiment import run
    from recjax.report import print_run_summary

    train_cfg, model_cfg = train_configs(args)
    result = run(train_cfg, model_cfg, resume=args.resume)
    if not train_cfg.quiet:
        print_run_summary(result)
    else:
        print(result.run_dir)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from recjax.models import MODELS

    train = sub.add_parser(
        "train", help="train a model (default: MF on ml-100k's ua split)",
        description="Train a model. Every TrainConfig and model config field is a flag; "
                    "a TOML file with [train] and [model] tables can hold the same settings.",
    )
    train.add_argument("--config", help="TOML file with [train] and [model] tables (flags override)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    _add_dataclass_flags(train, TrainConfig, skip=set())
    train.add_argument("--lr", dest="learning_rate", type=float, default=argparse.SUPPRESS,
                       help="alias of --learning-rate")
    added: set[str] = set()
    for spec in MODELS.values():
        added |= _add_dataclass_flags(train, spec.config, skip=added)
    train.set_defaults(func=_train)


# ----------------------------------------------------------------------------- main
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_train, _add_data]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recjax",
        description="Recommender systems for researchers: train, evaluate and query models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    from recjax.data import ChecksumError, DatasetNotFoundError, MalformedFileError, UnknownIdError
    from recjax.train.checkpoint import CheckpointError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CommandError, DatasetNotFoundError, ChecksumError, MalformedFileError,
            UnknownIdError, CheckpointError, OSError, FloatingPointError, ValueError) as err:
        print(f"recjax: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recjax: interrupted; a training run continues with --resume --out RUN", file=sys.stderr)
        return 130
