"""The environment for ``python -m recjax`` subprocesses of the tests: the same recjax
this process imported (first on PYTHONPATH), on the CPU unless told otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import recjax

ROOT = str(Path(recjax.__file__).resolve().parents[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with this recjax first on PYTHONPATH, JAX on the CPU by default,
    and ``extra`` on top."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.update(extra)
    return env
