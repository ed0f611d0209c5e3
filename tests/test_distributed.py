"""Several processes: ``python -m recjax train --coordinator ... --num-processes 2 --process-id I``.

Two local processes on 127.0.0.1 (JAX's CPU collectives, gloo), two virtual devices
each, train on a 2x2 mesh whose data axis spans the processes; the run must agree
with the same run in one process on one device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recjax.cli import main

ARGS = ["train", "--dataset", "synthetic", "--split", "random", "--epochs", "2", "--embedding-dim", "8",
        "--batch-size", "2048", "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two-processes") / "run"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(Path(__file__).parents[1])}
    coordinator = f"127.0.0.1:{free_port()}"
    processes = [subprocess.Popen(
        [sys.executable, "-m", "recjax", *ARGS, "--mesh", "2x2", "--out", str(out),
         "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one-process") / "run"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


def final_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def test_two_processes_agree_with_one(two_process_run, one_process_run):
    together, alone = np.load(two_process_run / "embeddings.npz"), np.load(one_process_run / "embeddings.npz")
    for name in ("user_embeddings", "item_embeddings"):
        np.testing.assert_allclose(together[name], alone[name], atol=1e-6)
    np.testing.assert_array_equal(together["user_ids"], alone["user_ids"])
    a, b = final_metrics(two_process_run), final_metrics(one_process_run)
    for key in ("val_rmse", "test_rmse", "train_rmse"):
        assert a[key] == pytest.approx(b[key], abs=1e-6)


def test_one_process_writes_the_run_folder(two_process_run):
    lines = (two_process_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line).get("epoch") for line in lines[:-1]] == [1, 2]  # not two copies
    assert json.loads((two_process_run / "config.json").read_text())["train"]["mesh"] == "2x2"
    assert (two_process_run / "checkpoints" / "last" / "2").is_dir()


def test_softmax_refuses_several_processes_clearly(monkeypatch, tmp_path):
    import jax

    from recjax.config import RunConfig
    from recjax.experiment import run
    from recjax.models.softmax import SoftmaxConfig

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    cfg = RunConfig(model="softmax", dataset="synthetic", split="random", quiet=True, out=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="evaluates on one process only"):
        run(cfg, SoftmaxConfig(embedding_dim=4, hidden_dims=""))
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "127.0.0.1:1234"], "go together"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], "0..1"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
])
def test_bad_distributed_flags_are_clear_errors(flags, message, capsys, tmp_path):
    assert main([*ARGS, "--out", str(tmp_path / "run"), *flags]) == 2
    assert message in capsys.readouterr().err
