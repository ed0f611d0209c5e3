"""README's Serving examples, run as written against a live server: print, check or rewrite them.

Trains the runs with the train commands of README's Serving section (in ``--dir``, a fresh
temporary folder by default; ``--no-train`` takes the runs already there), serves them as its
serve command does (on 127.0.0.1, an ephemeral port), runs each curl command marked
``<!-- serve-example -->`` and prints its answer as README shows it: the server's JSON with
spaces after ``,`` and ``:``, numbers rounded to :data:`DECIMALS` decimals, embeddings cut to
their first :data:`EMBEDDINGS_SHOWN` numbers. ``--check`` compares each answer with README's
by value (exit 1 naming those that differ); ``--write`` puts the answers into README's JSON
blocks in place, every other byte kept.

::

    RECJAX_DATA=/folder/with/movielens python benchmarks/serve_examples.py [--check | --write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_bench import ROOT, Server

README = ROOT / "README.md"
DECIMALS = 4
EMBEDDINGS_SHOWN = 3
EXAMPLE = re.compile(r"<!-- serve-example -->\n```bash\n(.*?)```\n```json\n(.*?)```", re.DOTALL)
DOCUMENTED_ADDRESS = "localhost:8080"


@dataclass(frozen=True)
class Example:
    """One ``<!-- serve-example -->``: its curl command, README's answer and where that
    answer's text lies in README (``span``: character offsets)."""

    command: str
    documented: str
    span: tuple[int, int]


def serving_section(text: str) -> tuple[int, int]:
    """Character offsets of README's ``## Serving`` section (to the next ``## `` heading)."""
    start = text.index("\n## Serving\n") + 1
    end = text.find("\n## ", start)
    return start, len(text) if end < 0 else end + 1


def examples(text: str) -> list[Example]:
    """The section's ``<!-- serve-example -->`` blocks, in order."""
    start, end = serving_section(text)
    found = [Example(m.group(1), m.group(2), m.span(2)) for m in EXAMPLE.finditer(text, start, end)]
    for example in found:
        if DOCUMENTED_ADDRESS not in example.command:
            raise ValueError(f"a serve example asks no {DOCUMENTED_ADDRESS}: {example.command!r}")
    return found


def commands(text: str) -> tuple[list[list[str]], list[str]]:
    """The section's first bash block: its ``recjax train`` commands (argv after
    ``python -m recjax``) and the run folders of its ``recjax serve`` command."""
    start, end = serving_section(text)
    block = re.search(r"```bash\n(.*?)```", text[start:end], re.DOTALL).group(1)
    trains, served = [], []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if argv[:3] != ["python", "-m", "recjax"]:
            raise ValueError(f"README's Serving commands: not 'python -m recjax ...': {line!r}")
        if argv[3] == "train":
            trains.append(argv[3:])
        elif argv[3] == "serve":
            served = [a for a in argv[4:] if not a.startswith("-")]
    return trains, served


def shown(value: Any, key: str | None = None) -> Any:
    """``value`` (parsed JSON) as README shows it: floats rounded to DECIMALS decimals,
    an ``embeddings`` list cut to its first EMBEDDINGS_SHOWN numbers."""
    if isinstance(value, dict):
        return {k: shown(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [shown(v) for v in (value[:EMBEDDINGS_SHOWN] if key == "embeddings" else value)]
    if isinstance(value, float):
        return round(value, DECIMALS)
    return value


def render(answer: str) -> str:
    """curl's output (one JSON document per line) as README's JSON block."""
    lines = [json.dumps(shown(json.loads(line)), ensure_ascii=False)
             for line in answer.splitlines() if line.strip()]
    return "".join(line + "\n" for line in lines)


def parsed(block: str) -> list[Any]:
    """A JSON block's documents (one per line)."""
    return [json.loads(line) for line in block.splitlines() if line.strip()]


def train(folder: Path, trains: list[list[str]]) -> None:
    """Run README's train commands in ``folder`` (their ``--out`` paths are relative);
    their output goes to ``folder/train.log``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.setdefault("JAX_PLATFORMS", "cpu")
    with open(folder / "train.log", "a") as log:
        for argv in trains:
            print("$ python -m recjax " + shlex.join(argv), file=sys.stderr, flush=True)
            done = subprocess.run([sys.executable, "-m", "recjax", *argv], cwd=folder, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, check=False)
            if done.returncode:
                raise RuntimeError(f"python -m recjax {shlex.join(argv)} failed; see {log.name}")


def live_answers(folder: Path, served: list[str], found: list[Example]) -> list[str]:
    """Each example's curl output from a server of ``folder``'s runs on 127.0.0.1."""
    server = Server([str(folder / run) for run in served], log=folder / "serve.log")
    try:
        out = []
        for example in found:
            command = example.command.replace(DOCUMENTED_ADDRESS, f"127.0.0.1:{server.port}")
            done = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                  timeout=60, check=True)
            out.append(done.stdout)
        return out
    finally:
        server.stop()


def differences(found: list[Example], answers: list[str]) -> list[str]:
    """The examples whose README answer is not the live one (rounded as shown), each with
    both answers."""
    def indented(block: str) -> str:
        return block.strip().replace("\n", "\n          ")

    return [f"{example.command.strip()}\n  README: {indented(example.documented)}\n"
            f"  live:   {indented(render(answer))}"
            for example, answer in zip(found, answers, strict=True)
            if parsed(example.documented) != parsed(render(answer))]


def rewritten(text: str, found: list[Example], answers: list[str]) -> str:
    """README's text with each example's JSON block replaced by its live answer."""
    pieces, at = [], 0
    for example, answer in zip(found, answers, strict=True):
        pieces += [text[at:example.span[0]], render(answer)]
        at = example.span[1]
    return "".join(pieces) + text[at:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when README's answers differ")
    mode.add_argument("--write", action="store_true", help="rewrite README's answers in place")
    parser.add_argument("--dir", type=Path, help="where the runs are trained (default: a fresh "
                        "temporary folder)")
    parser.add_argument("--no-train", action="store_true", help="serve the runs already in --dir")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    if args.no_train and args.dir is None:
        parser.error("--no-train needs --dir")
    text = args.readme.read_bytes().decode()
    found = examples(text)
    trains, served = commands(text)
    with tempfile.TemporaryDirectory() as scratch:
        folder = (args.dir or Path(scratch)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        if not args.no_train:
            train(folder, trains)
        answers = live_answers(folder, served, found)
    for example, answer in zip(found, answers, strict=True):
        print(f"$ {example.command.strip()}\n{render(answer)}")
    if args.write:  # into README as it is now: others may have edited it while the runs trained
        now = args.readme.read_bytes().decode()
        if [e.command for e in examples(now)] != [e.command for e in found]:
            raise RuntimeError("README's serve examples changed while they ran; run again")
        args.readme.write_bytes(rewritten(now, examples(now), answers).encode())
    if args.check:
        wrong = differences(found, answers)
        print(f"{len(found) - len(wrong)} of {len(found)} README answers match the live server")
        if wrong:
            print("\n".join(wrong))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
