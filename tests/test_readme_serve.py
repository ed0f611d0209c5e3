"""README's Serving examples hold, by value, what a server of README's own runs answers.

benchmarks/serve_examples.py trains the ml-100k runs with the train commands of README's
Serving section, serves them as its serve command does (127.0.0.1, an ephemeral port) and runs
each ``<!-- serve-example -->`` curl command. Each README number must be the live one rounded
to the digits printed; the script's check mode must agree and its write mode must change no
byte of README. (tests/test_serve.py checks the same examples' shapes on tiny synthetic runs.)
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import shutil
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
README = BENCHMARKS.parent / "README.md"

pytestmark = [
    pytest.mark.slow,  # trains README's two ml-100k runs: ~1 to 3 minutes on 2 cores
    pytest.mark.skipif(shutil.which("curl") is None, reason="the examples are curl commands"),
]


@pytest.fixture
def script(monkeypatch):
    """benchmarks/serve_examples.py as a module (beside its sibling serve_bench)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("serve_examples")


def _agrees(live, documented, where: str) -> None:
    """``documented`` is ``live`` as printed: the same keys, ids and strings; each float within
    half a unit of its printed last digit; an ``embeddings`` list its live list's first numbers."""
    if isinstance(documented, dict):
        assert isinstance(live, dict) and list(live) == list(documented), (where, live, documented)
        for key in documented:
            _agrees(live[key], documented[key], f"{where}.{key}")
    elif isinstance(documented, list):
        cut = live[:len(documented)] if where.endswith(".embeddings") else live
        assert isinstance(live, list) and len(cut) == len(documented), (where, live, documented)
        for k, (a, b) in enumerate(zip(cut, documented, strict=True)):
            _agrees(a, b, f"{where}[{k}]")
    elif isinstance(live, float):
        printed = repr(documented)
        digits = len(printed.split(".")[1]) if "." in printed else 0
        assert isinstance(documented, float) and digits <= 4, (where, live, documented)
        assert abs(live - documented) <= 0.5 * 10.0**-digits + 1e-9, (where, live, documented)
    else:
        assert type(live) is type(documented) and live == documented, (where, live, documented)


def _last_digit_bumped(block: str) -> str:
    """``block`` with the last digit of its first decimal number changed."""
    return re.sub(r"\d\.\d*\d", lambda m: m[0][:-1] + str((int(m[0][-1]) + 1) % 10), block, count=1)


def test_readme_serve_examples_equal_the_live_answers(script, movielens_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RECJAX_DATA", str(movielens_dir))
    text = README.read_bytes().decode()
    found = script.examples(text)
    assert len(found) >= 9, "README's Serving section lost its examples"
    trains, served = script.commands(text)
    assert served == [argv[argv.index("--out") + 1] for argv in trains] == ["runs/mf", "runs/pair"]
    script.train(tmp_path, trains)
    answers = script.live_answers(tmp_path, served, found)

    for example, answer in zip(found, answers, strict=True):
        live = [json.loads(line) for line in answer.splitlines() if line.strip()]
        documented = [json.loads(line) for line in example.documented.splitlines() if line.strip()]
        assert len(live) == len(documented), (example.command, answer)
        for k, (got, want) in enumerate(zip(live, documented, strict=True)):
            _agrees(got, want, f"{example.command.split()[2]}[{k}]")

    assert script.differences(found, answers) == []  # the check mode agrees
    assert script.rewritten(text, found, answers) == text  # --write would change no byte
    # and the check mode sees a README number one unit off in its last printed digit
    for k, example in enumerate(found):
        bumped = _last_digit_bumped(example.documented)
        if bumped != example.documented:
            wrong = [*found[:k], dataclasses.replace(example, documented=bumped), *found[k + 1:]]
            assert len(script.differences(wrong, answers)) == 1, example.command
