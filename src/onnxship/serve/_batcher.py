"""Dynamic batching: concurrent requests for one model are merged along axis 0 and split back exactly.

One batcher per loaded model, so a batch never mixes two model versions and requests queued before a reload finish
on the model they were validated against. The batcher runs one batch at a time on the inference thread; requests
arriving meanwhile queue up and form the next batch (no added latency at low load). After the first request of a
batch it waits up to ``timeout`` for more, but only while other requests are still being read by the server.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from onnxship.serve._signature import RequestError

__all__ = ["Batcher"]


class _Job:
    __slots__ = ("feeds", "future", "key", "rows")

    def __init__(
        self,
        feeds: dict[str, np.ndarray],
        rows: int,
        key: tuple[Any, ...],
        future: asyncio.Future[dict[str, np.ndarray]],
    ) -> None:
        self.feeds = feeds
        self.rows = rows
        self.key = key
        self.future = future


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


class Batcher:
    """Queue of validated requests for one model; ``submit`` returns a future with that request's outputs."""

    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
        *,
        mergeable: bool,
        max_rows: int,
        timeout_s: float,
        executor: Executor,
        busy: Callable[[], int] = lambda: 0,
        on_batch: Callable[[int, int, float], None] | None = None,
        inline_below_s: float = 0.0,
    ) -> None:
        self.run = run
        self.mergeable = mergeable and max_rows > 1
        self.max_rows = max_rows
        self.timeout_s = timeout_s
        self.executor = executor
        self.busy = busy  # requests the server is still reading (worth waiting for)
        self.on_batch = on_batch  # (rows, requests, seconds) after each run
        # Run on the event loop itself while model runs average below this (0: always on the executor thread).
        # The first run always goes to the executor, so a slow model never blocks the loop even once.
        self.inline_below_s = inline_below_s
        self._run_ewma = float("inf")
        self._queue: deque[_Job] = deque()
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0

    def submit(self, feeds: dict[str, np.ndarray], rows: int) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queue one request (synchronously, so no reload can slip between validation and queueing)."""
        if self._closing:
            raise RuntimeError(
                "submit() on a closed batcher"
            )  # internal: the manager hands out live batchers only
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._event = asyncio.Event()
            self._task = loop.create_task(self._loop())
        key = tuple((k, v.shape[1:], v.dtype.str) for k, v in feeds.items()) if self.mergeable else ()
        fut: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        self._queue.append(_Job(feeds, rows, key, fut))
        assert self._event is not None
        self._event.set()
        return fut

    def close(self) -> None:
        """Stop after the queued requests are answered."""
        self._closing = True
        if self._event is not None:
            self._event.set()

    async def _loop(self) -> None:
        assert self._event is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._event.clear()
                await self._event.wait()
                continue
            if self.mergeable and self.timeout_s > 0:
                deadline = loop.time() + self.timeout_s
                while self._queued_rows() < self.max_rows and self.busy() > 0:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    self._event.clear()
                    try:
                        await asyncio.wait_for(self._event.wait(), left)
                    except asyncio.TimeoutError:  # not the builtin before Python 3.11
                        break
            jobs = self._take()
            try:
                await self._execute(jobs)
            except Exception as exc:  # a bug here must not leave requests waiting forever
                for job in jobs:
                    _resolve(job, error=exc)

    def _queued_rows(self) -> int:
        key = self._queue[0].key
        return sum(j.rows for j in self._queue if j.key == key)

    def _take(self) -> list[_Job]:
        first = self._queue.popleft()
        jobs = [first]
        if not self.mergeable:
            return jobs
        rows = first.rows
        kept: deque[_Job] = deque()
        while self._queue:
            job = self._queue.popleft()
            if job.key == first.key and rows + job.rows <= self.max_rows:
                jobs.append(job)
                rows += job.rows
            else:
                kept.append(job)
        self._queue = kept
        return jobs

    async def _execute(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        if len(jobs) == 1:
            feeds = jobs[0].feeds
        else:
            feeds = {k: np.concatenate([j.feeds[k] for j in jobs]) for k in jobs[0].feeds}
        total = sum(j.rows for j in jobs)
        start = time.perf_counter()
        try:
            if self.inline_below_s and self._run_ewma < self.inline_below_s:
                out = self.run(feeds)  # sub-millisecond model: a thread hop would cost more than the run
            else:
                out = await loop.run_in_executor(self.executor, self.run, feeds)
        except Exception as exc:  # the backend refused the input (e.g. an id outside the embedding)
            if len(jobs) > 1:  # find the culprit: run each request on its own
                for job in jobs:
                    await self._execute([job])
                return
            _resolve(jobs[0], error=RequestError(400, f"the model cannot run this input: {_first_line(exc)}"))
            return
        seconds = time.perf_counter() - start
        self._run_ewma = 0.8 * self._run_ewma + 0.2 * seconds if self.batches else seconds
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(total, len(jobs), seconds)
        if len(jobs) == 1:
            _resolve(jobs[0], out)
            return
        if any(np.ndim(v) == 0 or np.shape(v)[0] != total for v in out.values()):
            for job in jobs:  # an output that does not follow the batch: merging is not exact, run them alone
                await self._execute([job])
            return
        offset = 0
        for job in jobs:
            _resolve(job, {k: v[offset : offset + job.rows] for k, v in out.items()})
            offset += job.rows


def _resolve(job: _Job, result: dict[str, np.ndarray] | None = None, error: Exception | None = None) -> None:
    if job.future.done():  # the client went away
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result or {})
