"""The HTTP side: a Starlette application over :class:`~recjax.serve.endpoints.ServedRun` s.

:func:`create_app` builds it; :func:`recjax.serve.serve` runs it under uvicorn. Here
live content negotiation (SageMaker's content types and ``Accept``), body limits,
JSON errors, readiness, per-request JSON logs and the batchers; the checks and
the model calls are :mod:`recjax.serve.endpoints`'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recjax._checks import positive_int
from recjax.serve import DEFAULTS
from recjax.serve.batching import Batcher, grouped
from recjax.serve.endpoints import (
    PREDICT_KEYS,
    RECOMMEND_KEYS,
    SIMILAR_KEYS,
    Limits,
    RequestError,
    ServedRun,
    field_of,
)

__all__ = ["LOGGER", "create_app"]

LOGGER = logging.getLogger("recjax.serve")
JSON = "application/json"
JSONLINES = "application/jsonlines"
QUERY_KEYS = {"recommend": RECOMMEND_KEYS, "similar": SIMILAR_KEYS, "predict": PREDICT_KEYS,
              "invocations": ("instances",)}
_THREAD_PARSE_BYTES = 64 * 1024  # bodies above this are decoded in a worker thread


def create_app(runs: Any, *, batch_window_ms: float = DEFAULTS["batch_window_ms"],
               max_batch: int = DEFAULTS["max_batch"], max_body_bytes: int = DEFAULTS["max_body_bytes"],
               max_instances: int = DEFAULTS["max_instances"], max_n: int = DEFAULTS["max_n"],
               threads: int = DEFAULTS["threads"]) -> Starlette:
    """The serving application for one or several runs.

    Parameters
    ----------
    runs : {name: Run or path}, or a Run / path, or a sequence of them
        Runs given as paths are opened with :meth:`recjax.runs.Run.open` at start-up;
        unnamed runs are named after their folder. The first run also answers the
        plain paths (``/invocations``, ``/recommend``, ...).
    batch_window_ms : float
        How long (0..1000 ms) the first request of a batch waits for others.
    max_batch : int
        Rows (users, items, pairs, instances) in one model call; ``max_batch=1`` with
        ``batch_window_ms=0`` turns batching off.
    max_body_bytes : int
        Larger request bodies are refused with 413 (SageMaker's limit is 6 MB).
    max_instances : int
        Users, items, pairs or instances in one request (400 beyond).
    max_n : int
        The largest ``N``.
    threads : int
        Worker threads for model calls and large bodies (the event loop does no model work).

    Returns
    -------
    starlette.applications.Starlette
        An ASGI app; ``GET /ping`` answers 200 once every run is loaded and warm.
    """
    if not 0 <= batch_window_ms <= 1000:
        raise ValueError(f"batch_window_ms must be in 0..1000, got {batch_window_ms!r}")
    for name, value in (("max_batch", max_batch), ("max_body_bytes", max_body_bytes),
                        ("max_instances", max_instances), ("max_n", max_n), ("threads", threads)):
        positive_int(value, name)
    limits = Limits(max_instances=max_instances, max_n=max_n)
    served = {name: ServedRun(name, run, limits) for name, run in named_runs(runs).items()}
    state = _Service(served, batch_window_ms / 1000.0, max_batch, max_body_bytes, threads)
    return state.app


def named_runs(runs: Any) -> dict[str, Any]:
    """``{name: run}`` from what :func:`create_app` accepts; names are unique folder names."""
    if isinstance(runs, Mapping):
        pairs = [(str(name), run) for name, run in runs.items()]
    else:
        many = runs if isinstance(runs, (list, tuple)) else [runs]
        pairs = [(_name_of(run), run) for run in many]
    if not pairs:
        raise ValueError("no runs to serve")
    names = [name for name, _ in pairs]
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"{name!r} cannot name a run in URLs (/models/NAME/...)")
        if names.count(name) > 1:
            raise ValueError(f"two runs are named {name!r}; give them distinct names "
                             f"(folder names, or a {{name: run}} mapping)")
    return dict(pairs)


def _name_of(run: Any) -> str:
    path = run if isinstance(run, (str, os.PathLike)) else getattr(run, "path", None)
    if path is None:
        raise TypeError(f"a run is a recjax.runs.Run or a folder path, got {type(run).__name__}")
    return Path(path).resolve().name if str(path) in (".", "") else Path(path).name


# ----------------------------------------------------------------------------- negotiation
def parse_media_type(header: str | None) -> tuple[str, dict[str, str]]:
    """``'application/json; infer_max_seqlens=5,5'`` -> ``('application/json', {...})``."""
    if not header:
        return "", {}
    media, *rest = header.split(";")
    params = {}
    for part in rest:
        key, _, value = part.partition("=")
        if key.strip():
            params[key.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), params


def choose_accept(header: str | None, offers: tuple[str, ...]) -> str | None:
    """The first of ``offers`` (the default first) that the ``Accept`` header allows,
    preferring higher ``q``; None when none is acceptable."""
    if not header or not header.strip():
        return offers[0]
    ranked = []
    for order, part in enumerate(header.split(",")):
        media, params = parse_media_type(part)
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 0.0
        if media and q > 0:
            ranked.append((-q, order, media))
    for _, _, media in sorted(ranked):
        if media in ("*/*", "application/*"):
            return offers[0]
        if media in offers:
            return media
    return None


def _seqlens(params: dict[str, str]) -> tuple[int, int] | None:
    value = params.get("infer_max_seqlens")
    if value is None:
        return None
    parts = value.split(",")
    try:
        lens = tuple(int(p) for p in parts)
    except ValueError:
        lens = ()
    if len(lens) != 2 or not all(1 <= n <= 5000 for n in lens):
        raise RequestError(f"infer_max_seqlens must be <FWD>,<BCK> with each in 1..5000, got "
                           f"{value!r}", "infer_max_seqlens")
    return lens  # type: ignore[return-value]


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as err:  # a NaN score is the server's failure, not a bad request
        raise RuntimeError(f"an answer is not valid JSON: {err}") from None


def _encode_lines(value: dict[str, Any]) -> bytes:
    return b"".join(_encode(p) + b"\n" for p in value["predictions"])


def error_response(status: int, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """``{"error": message, "field": field}`` with ``status``."""
    return Response(_encode({"error": message, "field": field}), status_code=status,
                    media_type=JSON, headers=headers)


# ----------------------------------------------------------------------------- the service
class _Service:
    """The application's state: runs, batchers, readiness; its methods are the routes."""

    def __init__(self, served: dict[str, ServedRun], window_s: float, max_batch: int,
                 max_body_bytes: int, threads: int) -> None:
        self.served = served
        self.default = next(iter(served))
        self.window_s, self.max_batch = window_s, max_batch
        self.max_body_bytes = max_body_bytes
        self.threads = threads
        self.ready = False
        self.failed: str | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.batchers: dict[tuple[str, str], Batcher] = {}
        routes = [Route("/ping", self.ping, methods=["GET"]),
                  Route("/models", self.models, methods=["GET"]),
                  Route("/models/{name}", self.model, methods=["GET"])]
        for kind in ("invocations", "recommend", "similar", "predict"):
            handler = self.invocations if kind == "invocations" else self._query_handler(kind)
            routes += [Route(f"/{kind}", handler, methods=["POST"]),
                       Route(f"/models/{{name}}/{kind}", handler, methods=["POST"])]
        self.app = Starlette(routes=routes, lifespan=self.lifespan,
                             exception_handlers={HTTPException: self.http_error})
        self.app.add_middleware(AccessLog)
        self.app.state.service = self

    # -- life
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette):
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix="recjax-serve")
        for name, run in self.served.items():
            calls = {"recommend": run.recommend_batch, "similar": run.similar_batch,
                     "predict": run.predict_batch, "invocations": run.invocations_batch}
            for kind, call in calls.items():
                self.batchers[name, kind] = Batcher(grouped(call), window_s=self.window_s,
                                                    max_rows=self.max_batch, executor=self.executor)
        loading = asyncio.get_running_loop().create_task(self._load())
        try:
            yield
        finally:
            loading.cancel()
            for batcher in self.batchers.values():
                await batcher.close()
            self.executor.shutdown(wait=True, cancel_futures=True)
            LOGGER.info({"event": "stopped"})

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        tic = time.perf_counter()
        try:
            for run in self.served.values():
                await loop.run_in_executor(self.executor, run.load)
                await loop.run_in_executor(self.executor, run.warm)
        except Exception as err:  # noqa: BLE001 - reported by /ping and the log
            self.failed = f"{type(err).__name__}: {err}"
            LOGGER.error({"event": "load_failed", "error": self.failed,
                          "traceback": traceback.format_exc()})
            return
        self.ready = True
        LOGGER.info({"event": "ready", "models": list(self.served),
                     "seconds": round(time.perf_counter() - tic, 3),
                     "unsupported": {n: sorted(r.unsupported) for n, r in self.served.items()}})

    # -- routes
    async def ping(self, request: Request) -> Response:
        if self.ready:
            return Response(_encode({"status": "ready", "models": list(self.served)}), media_type=JSON)
        if self.failed:
            return Response(_encode({"status": "failed", "error": self.failed}), status_code=500,
                            media_type=JSON)
        return Response(_encode({"status": "loading"}), status_code=503, media_type=JSON,
                        headers={"Retry-After": "1"})

    async def models(self, request: Request) -> Response:
        return await self._guard(request, lambda: self._describe(None))

    async def model(self, request: Request) -> Response:
        return await self._guard(request, lambda: self._describe(request.path_params["name"]))

    async def _describe(self, name: str | None) -> Response:
        self._require_ready()
        if name is None:
            return Response(_encode({"default": self.default, "models": [
                r.describe() for r in self.served.values()]}), media_type=JSON)
        return Response(_encode(self._run(name).describe()), media_type=JSON)

    def _query_handler(self, kind: str):
        async def handler(request: Request) -> Response:
            return await self._guard(request, lambda: self._query(request, kind))

        handler.__name__ = kind
        return handler

    async def _query(self, request: Request, kind: str) -> Response:
        self._require_ready()
        served = self._run(request.path_params.get("name"))
        media, params = parse_media_type(request.headers.get("content-type"))
        if media != JSON:
            raise RequestError(f"send Content-Type: {JSON} (got {media or 'none'})", "Content-Type",
                               status=415)
        _check_charset(params)
        if choose_accept(request.headers.get("accept"), (JSON,)) is None:
            raise RequestError(f"/{kind} answers {JSON}; the Accept header allows only "
                               f"{request.headers.get('accept')!r}", "Accept", status=406)
        body = await self._json(await self._body(request))
        job = getattr(served, f"{kind}_job")(body)
        job.render = _encode
        return await self._submit(request, served, kind, job, JSON)

    async def invocations(self, request: Request) -> Response:
        return await self._guard(request, lambda: self._invocations(request))

    async def _invocations(self, request: Request) -> Response:
        self._require_ready()
        served = self._run(request.path_params.get("name"))
        media, params = parse_media_type(request.headers.get("content-type"))
        if media not in (JSON, JSONLINES):
            raise RequestError(f"/invocations takes {JSON} or {JSONLINES} (optionally with "
                               f"infer_max_seqlens=<FWD>,<BCK>); got {media or 'no content type'}",
                               "Content-Type", status=415)
        _check_charset(params)
        accept = choose_accept(request.headers.get("accept"), (JSON, JSONLINES))
        if accept is None:
            raise RequestError(f"/invocations answers {JSON} or {JSONLINES}; the Accept header "
                               f"allows only {request.headers.get('accept')!r}", "Accept", status=406)
        seqlens = _seqlens(params)
        raw = await self._body(request)
        if media == JSON:
            body = await self._json(raw)
            if not isinstance(body, dict) or "instances" not in body:
                raise RequestError('the body must be {"instances": [{"in0": [...], "in1": [...]}, '
                                   '...]}', "instances")
            extra = [k for k in body if k != "instances"]
            if extra:
                raise RequestError(f"unknown key {extra[0]!r}; the request holds only instances",
                                   extra[0])
            instances = body["instances"]
        else:
            instances = await self._json_lines(raw)
        job = served.invocation_job(instances, seqlens)
        job.render = _encode if accept == JSON else _encode_lines
        return await self._submit(request, served, "invocations", job, accept)

    async def _submit(self, request: Request, served: ServedRun, kind: str, job: Any,
                      media: str) -> Response:
        log = request.scope.setdefault("recjax.log", {})
        log.update(model=served.name, rows=job.rows)
        try:
            body, info = await self.batchers[served.name, kind].submit(job)
        except RequestError:
            raise
        except ValueError as err:  # the run refused the request: name the field it is about
            field = field_of(err, QUERY_KEYS[kind])
            raise RequestError(str(err), field or ("instances" if kind == "invocations" else None)
                               ) from None
        log.update(batch_requests=info.requests, batch_rows=info.rows)
        return Response(body, media_type=media)

    # -- helpers
    async def _guard(self, request: Request, handle) -> Response:
        """Run a route: RequestError -> its 4xx; anything else -> 500 without details
        (the traceback goes to the log, one JSON line)."""
        try:
            return await handle()
        except RequestError as err:
            request.scope.setdefault("recjax.log", {})["error"] = str(err)[:300]
            headers = {"Retry-After": "1"} if err.status == 503 else None
            return error_response(err.status, str(err), err.field, headers)
        except Exception as err:  # noqa: BLE001
            LOGGER.error({"event": "error", "method": request.method, "path": request.url.path,
                          "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()})
            return error_response(500, "internal server error (the server log has the details)")

    async def http_error(self, request: Request, exc: HTTPException) -> Response:
        message = {404: f"no route {request.method} {request.url.path}; see GET /models",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(
            exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, None, exc.headers)

    def _require_ready(self) -> None:
        if not self.ready:
            raise RequestError("the models are still loading; retry when GET /ping answers 200"
                               if not self.failed else f"the models failed to load: {self.failed}",
                               None, status=503)

    def _run(self, name: str | None) -> ServedRun:
        if name is None:
            return self.served[self.default]
        if name not in self.served:
            raise RequestError(f"no model named {name!r}; serving {', '.join(self.served)}", "name",
                               status=404)
        return self.served[name]

    async def _body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise RequestError(f"the body has {int(length)} bytes; at most {limit}", "body", status=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(f"the body exceeds {limit} bytes", "body", status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _json(self, raw: bytes) -> Any:
        if not raw.strip():
            raise RequestError("the body is empty: send a JSON object", "body")
        try:
            if len(raw) > _THREAD_PARSE_BYTES:
                return await asyncio.get_running_loop().run_in_executor(self.executor, _loads, raw)
            return _loads(raw)
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, nested too deeply
            raise RequestError(f"malformed JSON: {err}", "body") from None

    async def _json_lines(self, raw: bytes) -> list[Any]:
        def parse() -> list[Any]:
            out = []
            for number, line in enumerate(raw.split(b"\n"), start=1):
                if line.strip():
                    try:
                        out.append(_loads(line))
                    except ValueError as err:
                        raise RequestError(f"line {number}: malformed JSON ({err})",
                                           f"instances[{len(out)}]") from None
            return out

        if len(raw) > _THREAD_PARSE_BYTES:
            return await asyncio.get_running_loop().run_in_executor(self.executor, parse)
        return parse()


def _loads(raw: bytes) -> Any:
    """``json.loads``; JSON nested deeper than the interpreter's recursion limit (a few KB
    of ``[``), on which it raises RecursionError, is a ValueError like any malformed JSON."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError(f"nested deeper than the {sys.getrecursionlimit()} levels the parser "
                         f"can take") from None


def _check_charset(params: dict[str, str]) -> None:
    charset = params.get("charset")
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise RequestError(f"bodies are UTF-8 JSON; charset {charset!r} is not supported",
                           "Content-Type", status=415)


# ----------------------------------------------------------------------------- logs
class AccessLog:
    """ASGI middleware: one JSON log record per HTTP request (method, path, status,
    latency, model, the rows of the request and of its batch)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tic = time.perf_counter()
        status = [500]
        info: dict[str, Any] = {}
        scope["recjax.log"] = info

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if LOGGER.isEnabledFor(logging.INFO):
                LOGGER.info({"method": scope["method"], "path": scope["path"], "status": status[0],
                             "latency_ms": round((time.perf_counter() - tic) * 1000, 3), **info})


class JsonFormatter(logging.Formatter):
    """Log records as one JSON object per line: a dict message is merged in, a text
    message goes under ``message``; a traceback is one escaped string."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                               + f".{int(record.msecs):03d}Z",
                               "level": record.levelname.lower(), "logger": record.name}
        if isinstance(record.msg, dict):
            out.update(record.msg)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)

