"""``python -m recjax serve``: the application under uvicorn, one process or several.

Runs are opened (``Run.open``) and their models restored in this process first, so
that a bad run folder is a one-line error before anything listens. With
``workers > 1`` uvicorn's supervisor starts that many processes sharing the
listening socket; each opens the runs again from their paths (passed in the
``RECJAX_SERVE_CONFIG`` environment variable) and answers ``/ping`` with 200
once its own copy is warm.

SIGTERM (what SageMaker and Kubernetes send) or Ctrl-C stops accepting
connections, lets the requests in flight finish (up to ``GRACEFUL_SHUTDOWN_S``),
and returns normally: the command exits 0.
"""

from __future__ import annotations

import gc
import json
import logging
import logging.config
import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from recjax._checks import positive_int
from recjax.serve import DEFAULTS
from recjax.serve.app import LOGGER, create_app, named_runs

__all__ = ["ENVIRONMENT_VARIABLE", "LOG_CONFIG", "app_from_environment", "serve"]

ENVIRONMENT_VARIABLE = "RECJAX_SERVE_CONFIG"
GRACEFUL_SHUTDOWN_S = 30  # the longest a shutdown waits for requests in flight

LOG_CONFIG: dict[str, Any] = {  # every line on stderr one JSON object
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "recjax.serve.app.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                            "stream": "ext://sys.stderr"}},
    "loggers": {
        "recjax.serve": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}


def serve(runs: Sequence[str | os.PathLike], *, host: str = DEFAULTS["host"],
          port: int = DEFAULTS["port"], workers: int = DEFAULTS["workers"], **options: Any) -> None:
    """Serve run folders over HTTP until SIGTERM / Ctrl-C.

    Parameters
    ----------
    runs : paths of run folders
        Named after their folders; the first answers the plain paths.
    host, port : where to listen (port 0: any free port, logged as ``"event": "listening"``)
    workers : int
        Server processes (each holds its own copy of the models).
    **options
        :func:`recjax.serve.create_app`'s keywords (``batch_window_ms``, ``max_batch``, ...).

    Raises
    ------
    recjax.runs.RunFolderError, recjax.train.CheckpointError, ValueError, OSError
        A run that cannot be served, two runs with one name, bad options, a port in use.
    """
    # The top-k kernel's OpenMP threads share the cores with the event loop: after each
    # batch they must sleep, not spin (GOMP spins ~ms by default, which here halved
    # the requests served at concurrency 64). Set before the kernel's library loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from recjax.runs import Run

    positive_int(workers, "workers")
    paths = named_runs([Path(p) for p in runs])
    opened = {}
    for name, path in paths.items():
        run = Run.open(path)
        run.model()  # restore and verify the checkpoint now: a damaged one is an error here
        opened[name] = run
    if workers == 1:
        app: Any = create_app(opened, **options)
    else:
        create_app(paths, **options)  # the options checked here, not in every worker
        del opened
        os.environ[ENVIRONMENT_VARIABLE] = json.dumps(
            {"runs": {name: str(Path(p).resolve()) for name, p in paths.items()}, "options": options})
        app = "recjax.serve.server:app_from_environment"
    sock = _bind(host, port)
    try:
        # From here on the process is the server's: its logging and its garbage collector.
        logging.config.dictConfig(LOG_CONFIG)
        # What is loaded now (JAX, the models) lives as long as the process: keep it out
        # of the garbage collector's full passes, whose pauses over millions of objects
        # would otherwise land in the latency tail.
        gc.collect()
        gc.freeze()
        config = uvicorn.Config(app, host=host, port=port, workers=workers, factory=workers > 1,
                                log_config=LOG_CONFIG, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        LOGGER.info({"event": "listening", "host": host, "port": sock.getsockname()[1],
                     "workers": workers, "models": list(paths), "pid": os.getpid()})
        previous = {sig: signal.signal(sig, _after_shutdown) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if workers == 1:
                uvicorn.Server(config).run(sockets=[sock])
            else:
                from uvicorn.supervisors import Multiprocess

                Multiprocess(config, sockets=[sock]).run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        sock.close()


def _after_shutdown(signum: int, frame: Any) -> None:
    """uvicorn re-raises the signal that stopped it once it has shut down gracefully;
    by then there is nothing left to do, so the command returns (exit status 0)."""


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket (shared by the worker processes)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def app_from_environment() -> Any:
    """The application of one worker process (``--workers N``), from ``RECJAX_SERVE_CONFIG``."""
    spec = json.loads(os.environ[ENVIRONMENT_VARIABLE])
    return create_app(spec["runs"], **spec["options"])
