"""Adaptive request batching: requests arriving together become one model call.

A :class:`Batcher` belongs to one run and one kind of query (recommend, similar,
predict, invocations). A handler ``await``\\ s :meth:`Batcher.submit` with a
:class:`Job`; a single consumer task collects the jobs that arrive within a short
window (``window_s`` after the oldest waiting job, or until ``max_rows`` rows wait),
hands them to ``run_batch`` in a worker thread, and resolves each job's future with
its own result. While one batch is computed the next one fills, so under load the
batch size adapts to the arrival rate with no extra wait (TF Serving's and
BentoML's adaptive batching work the same way).

``run_batch`` (:func:`grouped`) splits a batch into groups of compatible jobs (same
``key``), makes one call per group and, when a group's call fails on bad input
(``ValueError``), retries that group's jobs one by one so that one bad request
never fails its neighbours. Answers are matched to jobs by position only: results
come back as a list in the jobs' order.

With ``max_rows=1`` and ``window_s=0`` there is no batching: each job is its own
call in the thread pool (the baseline the serving benchmark compares against).

Example
-------
>>> import asyncio
>>> from concurrent.futures import ThreadPoolExecutor
>>> def double(key, payloads):            # one call for the whole group
...     return [2 * p for p in payloads]
>>> async def main():
...     with ThreadPoolExecutor(1) as pool:
...         b = Batcher(grouped(double), window_s=0.005, max_rows=64, executor=pool)
...         jobs = [b.submit(Job("x", n)) for n in range(5)]
...         out = await asyncio.gather(*jobs)
...         await b.close()
...         return [value for value, info in out], out[0][1].requests
>>> asyncio.run(main())
([0, 2, 4, 6, 8], 5)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from recjax._checks import positive_int

__all__ = ["BatchInfo", "Batcher", "Job", "grouped"]


@dataclass
class Job:
    """One request's share of a batch.

    Attributes
    ----------
    key : hashable
        Jobs with equal keys can be answered by one call (e.g. the same flags).
    payload : any
        The validated request.
    rows : int
        Its size in model rows (users, items or instances): what ``max_rows`` counts.
    render : callable, optional
        Turns the job's result into what the handler returns (e.g. encoded bytes),
        run in the worker thread too.
    """

    key: Hashable
    payload: Any
    rows: int = 1
    render: Callable[[Any], Any] | None = None
    arrived: float = field(default_factory=time.monotonic)
    future: asyncio.Future | None = None


@dataclass(frozen=True)
class BatchInfo:
    """What a job's model call held: ``requests`` jobs, ``rows`` rows (for the logs)."""

    requests: int
    rows: int


class Batcher:
    """Collects concurrent :class:`Job` s into batches run by ``run_batch`` in ``executor``.

    Parameters
    ----------
    run_batch : callable
        ``run_batch(jobs) -> [(result or exception, BatchInfo), ...]``, one entry per
        job in order; runs in a worker thread (see :func:`grouped`).
    window_s : float
        How long the oldest waiting job may wait for others, in seconds (>= 0).
    max_rows : int
        A batch closes as soon as this many rows wait (a single larger job is run alone).
    executor : concurrent.futures.Executor
        Where ``run_batch`` runs: never on the event loop.
    """

    def __init__(self, run_batch: Callable[[list[Job]], list[tuple[Any, BatchInfo]]], *,
                 window_s: float, max_rows: int, executor: Executor) -> None:
        if not window_s >= 0:
            raise ValueError(f"window_s must be >= 0, got {window_s!r}")
        positive_int(max_rows, "max_rows")
        self.run_batch = run_batch
        self.window_s = float(window_s)
        self.max_rows = max_rows
        self.executor = executor
        self._pending: list[Job] = []
        self._rows = 0
        self._arrived: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._consumer: asyncio.Task | None = None
        self._closed = False

    @property
    def batching(self) -> bool:
        """False when every job is its own call (``max_rows=1``, no window)."""
        return self.max_rows > 1 or self.window_s > 0

    async def submit(self, job: Job) -> tuple[Any, BatchInfo]:
        """Queue ``job`` and wait for ``(result, BatchInfo)``; an exception result is raised."""
        if self._closed:
            raise RuntimeError("the batcher is closed (the server is shutting down)")
        loop = asyncio.get_running_loop()
        if not self.batching:
            result, info = (await loop.run_in_executor(self.executor, self.run_batch, [job]))[0]
        else:
            job.future = loop.create_future()
            if self._consumer is None:
                self._arrived, self._full = asyncio.Event(), asyncio.Event()
                self._consumer = loop.create_task(self._consume())
            self._pending.append(job)
            self._rows += job.rows
            self._arrived.set()
            if self._rows >= self.max_rows:
                self._full.set()
            result, info = await job.future
        if isinstance(result, BaseException):
            raise result
        return result, info

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            wait = self._pending[0].arrived + self.window_s - time.monotonic()
            if wait > 0 and self._rows < self.max_rows:
                self._full.clear()
                try:
                    await asyncio.wait_for(self._full.wait(), wait)
                except TimeoutError:
                    pass
            jobs, rows = [], 0
            while self._pending and (not jobs or rows + self._pending[0].rows <= self.max_rows):
                job = self._pending.pop(0)
                jobs.append(job)
                rows += job.rows
            self._rows -= rows
            if not self._pending:
                self._arrived.clear()
            self._full.clear()
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, jobs)
            except BaseException as err:  # the batch itself failed: every job gets the error
                if isinstance(err, asyncio.CancelledError):
                    for job in jobs:
                        if not job.future.done():
                            job.future.cancel()
                    raise
                results = [(err, BatchInfo(len(jobs), rows))] * len(jobs)
            for job, result in zip(jobs, results):
                if not job.future.done():  # a handler may have gone away
                    job.future.set_result(result)

    async def close(self) -> None:
        """Stop the consumer; jobs still waiting get a ``RuntimeError``."""
        self._closed = True
        if self._consumer is not None:
            self._consumer.cancel()
            try:
                await self._consumer
            except asyncio.CancelledError:
                pass
            self._consumer = None
        for job in self._pending:
            if not job.future.done():
                job.future.set_result((RuntimeError("the server is shutting down"),
                                       BatchInfo(1, job.rows)))
        self._pending.clear()


def grouped(call: Callable[[Hashable, list[Any]], Sequence[Any]]
            ) -> Callable[[list[Job]], list[tuple[Any, BatchInfo]]]:
    """A ``run_batch`` for :class:`Batcher`: one ``call(key, payloads)`` per group of jobs
    with equal keys (in order of first arrival).

    ``call`` returns one result per payload, in order (a result may be an exception
    instance: that job's error alone). When ``call`` raises ``ValueError`` for a group
    of several jobs, each job is retried alone, so a bad request fails only itself;
    other exceptions fail the group. Each job's result goes through its ``render``.
    """

    def run_batch(jobs: list[Job]) -> list[tuple[Any, BatchInfo]]:
        groups: dict[Hashable, list[int]] = {}
        for n, job in enumerate(jobs):
            groups.setdefault(job.key, []).append(n)
        out: list[tuple[Any, BatchInfo] | None] = [None] * len(jobs)
        for key, members in groups.items():
            info = BatchInfo(len(members), sum(jobs[n].rows for n in members))
            try:
                results = _checked(call(key, [jobs[n].payload for n in members]), len(members))
                answers = [(r, info) for r in results]
            except ValueError as err:
                if len(members) == 1:
                    answers = [(err, info)]
                else:
                    answers = []
                    for n in members:
                        alone = BatchInfo(1, jobs[n].rows)
                        try:
                            answers.append((_checked(call(key, [jobs[n].payload]), 1)[0], alone))
                        except Exception as one:  # noqa: BLE001 - that job's own error
                            answers.append((one, alone))
            except Exception as err:  # noqa: BLE001 - reported per job, never raised here
                answers = [(err, info)] * len(members)
            for n, (result, job_info) in zip(members, answers):
                render = jobs[n].render
                if render is not None and not isinstance(result, BaseException):
                    try:
                        result = render(result)
                    except Exception as err:  # noqa: BLE001
                        result = err
                out[n] = (result, job_info)
        return out  # type: ignore[return-value]

    return run_batch


def _checked(results: Sequence[Any], n: int) -> Sequence[Any]:
    if len(results) != n:  # a wrong count would misalign answers: never let it through
        raise RuntimeError(f"a batch call returned {len(results)} results for {n} requests")
    return results
