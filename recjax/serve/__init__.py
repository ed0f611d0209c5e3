"""HTTP serving of trained runs: SageMaker's container contract and recommender endpoints.

``python -m recjax serve RUN [RUN ...]`` (or :func:`serve`; :func:`create_app` for an
ASGI app to embed or test) answers, for each run, under ``/models/{name}/`` and, for
the first run, at the root:

=====================  ===========================================================
``GET /ping``          200 once every run is loaded and warm (SageMaker's health check)
``POST /invocations``  Object2Vec's inference formats (JSON or JSON Lines, by
                       Content-Type and Accept; ``infer_max_seqlens``), through
                       :func:`recjax.predict.respond`
``POST /recommend``    top-N items for users, or a new user folded in (:meth:`Run.recommend`)
``POST /similar``      nearest items of items or of a title (:meth:`Run.similar_items`)
``POST /predict``      ratings / probabilities of (user, item) pairs (:meth:`Run.predict`)
``GET /models``        the runs served and what each can answer
=====================  ===========================================================

Stack: Starlette on uvicorn, both maintained by the Encode project, the ASGI
pair under FastAPI. Starlette gives routing, streaming request bodies (the size
limit is enforced while reading) and a lifespan hook (load and warm the runs in
the background, while ``/ping`` says 503) without FastAPI's pydantic layer: the
request checks here must name the same fields and use the same messages as
:class:`recjax.runs.Run`, and there is no schema to generate. uvicorn gives
HTTP/1.1 keep-alive, graceful shutdown on SIGTERM (in-flight requests finish), a
multi-process mode sharing one socket (``--workers``), and uses uvloop and
httptools when they are installed.

Concurrent requests are batched (:mod:`recjax.serve.batching`): per run and query
kind, requests arriving within ``batch_window_ms`` of each other (default 2 ms, or
while the previous batch computes) become one call of the run's method in a
worker thread, cut back into one answer each; the event loop only parses,
checks and routes.

Example
-------
>>> from recjax.serve import create_app                        # doctest: +SKIP
>>> app = create_app({"mf": "runs/mf-ml-100k"}, batch_window_ms=2)  # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, port=8080)                # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from recjax._lazy import lazy_getattr as _lazy_getattr

__all__ = ["DEFAULTS", "Batcher", "Job", "RequestError", "ServedRun", "create_app", "serve"]

DEFAULTS: dict[str, Any] = {  # the one source of the server's defaults (API and CLI)
    "host": "127.0.0.1",  # loopback; 0.0.0.0 inside a container
    "port": 8080,  # SageMaker's
    "workers": 1,  # server processes, each with its own copy of the models
    "batch_window_ms": 2.0,  # how long a request waits for others to share its model call
    "max_batch": 256,  # rows (users, items, pairs, instances) in one model call
    "max_body_bytes": 6 * 2**20,  # SageMaker's invocation payload limit (6 MB)
    "max_instances": 1000,  # users, items, pairs or instances in one request
    "max_n": 1000,  # the largest N
    "threads": 4,  # worker threads for model calls
}

#: Lazy (:mod:`recjax._lazy`): starlette and uvicorn are imported only when the server is used.
__getattr__ = _lazy_getattr(__name__, {
    "create_app": "recjax.serve.app", "serve": "recjax.serve.server",
    "Batcher": "recjax.serve.batching", "Job": "recjax.serve.batching",
    "ServedRun": "recjax.serve.endpoints", "RequestError": "recjax.serve.endpoints"}, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
