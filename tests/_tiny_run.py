"""One tiny trained run folder per test session, shared by the explore, plot and CLI tests."""

from __future__ import annotations

from pathlib import Path

_CACHE: dict[str, Path] = {}


def tiny_run(tmp_path_factory) -> Path:
    """MF (dim 8, 2 epochs) on the synthetic dataset's random split; built once."""
    if "run" not in _CACHE:
        from recjax.config import RunConfig
        from recjax.experiment import run
        from recjax.models.mf import MFConfig

        out = tmp_path_factory.mktemp("tiny") / "run"
        run(RunConfig(dataset="synthetic", split="random", epochs=2, quiet=True, out=str(out)),
            MFConfig(embedding_dim=8))
        _CACHE["run"] = out
    return _CACHE["run"]
