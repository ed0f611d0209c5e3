"""README.md's code blocks marked ``<!-- readme-test -->`` run as written (in a fresh
folder), so the documented workflow cannot drift from the library."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _tested_blocks() -> list[str]:
    """The python blocks that follow a ``<!-- readme-test -->`` marker."""
    text = README.read_text()
    return re.findall(r"<!-- readme-test -->\s*```python\n(.*?)```", text, flags=re.S)


def test_readme_marks_its_tested_blocks():
    assert len(_tested_blocks()) >= 1


@pytest.mark.parametrize("index", range(len(_tested_blocks())))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _tested_blocks()[index]
    exec(compile(code, f"README.md block {index}", "exec"), {"__name__": "readme"})
