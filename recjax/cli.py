"""Command line: ``python -m recjax <command> ...`` (or the ``recjax`` script).

Flags only; the logic lives in the library modules each command calls. Every
expected failure (bad flag values, missing data, unknown ids) ends with a one-line
``recjax: error: ...`` message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

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


# ----------------------------------------------------------------------------- main
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_data]


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

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CommandError, DatasetNotFoundError, ChecksumError, MalformedFileError,
            UnknownIdError, ValueError) as err:
        print(f"recjax: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recjax: interrupted", file=sys.stderr)
        return 130
