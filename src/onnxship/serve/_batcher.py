"""Dynamic batching with Triton's semantics: concurrent requests for one model are merged along axis 0 and split
back exactly.

One batcher per loaded model, so a batch never mixes two model versions and requests queued before a reload finish
on the model they were validated against. The batcher runs one batch at a time; requests arriving meanwhile queue
up. A batch is sent to the model as soon as one of these holds (measured from the oldest queued request, like
Triton's ``max_queue_delay_microseconds``):

- the queued rows reach ``max_rows`` (the batch is full),
- the queued rows reach one of ``preferred`` batch sizes (the largest one reachable is taken; the rest waits),
- the oldest queued request has waited ``timeout`` (0, the default: never wait; batches then form only from
  requests that queued while the model was busy, so a lone request pays no delay).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from onnxship.serve._signature import RequestError

__all__ = ["Batcher"]


class _Job:
    __slots__ = ("feeds", "future", "key", "rows", "since")

    def __init__(
        self,
        feeds: dict[str, np.ndarray],
        rows: int,
        key: tuple[Any, ...],
        future: asyncio.Future[dict[str, np.ndarray]],
        since: float,
    ) -> None:
        self.feeds = feeds
        self.rows = rows
        self.key = key
        self.future = future
        self.since = since  # loop.time() when queued


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


class Batcher:
    """Queue of validated requests for one model; ``submit`` returns a future with that request's outputs.

    Args:
        run: the model call (feeds -> outputs), run on ``executor`` (or inline, see ``inline_below_s``).
        mergeable: requests may be concatenated along axis 0 (every input and output has a dynamic dim 0).
        max_rows: the largest merged batch.
        timeout_s: the maximum queue delay of the oldest queued request before a partial batch is sent.
        preferred: batch sizes sent as soon as they can be formed (Triton's ``preferred_batch_size``).
        on_batch: ``(rows, requests, seconds)`` after each model run (metrics).
        inline_below_s: run on the event loop itself while model runs average below this (0: always on the
            executor thread). The first run always goes to the executor, so a slow model never blocks the loop.
        validate: value checks that raise RequestError, run once on each merged batch (one vectorised pass
            instead of one per request); when a batch fails, each request is checked alone and only the
            offending ones are refused.
    """

    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
        *,
        mergeable: bool,
        max_rows: int,
        timeout_s: float,
        executor: Executor,
        preferred: Sequence[int] = (),
        busy: Callable[[], int]
        | None = None,  # accepted for compatibility; the delay no longer depends on it
        on_batch: Callable[[int, int, float], None] | None = None,
        inline_below_s: float = 0.0,
        validate: Callable[[dict[str, np.ndarray]], None] | None = None,
    ) -> None:
        self.run = run
        self.mergeable = mergeable and max_rows > 1
        self.max_rows = max_rows
        self.timeout_s = timeout_s if self.mergeable else 0.0
        self.preferred = tuple(sorted({int(p) for p in preferred if 1 <= int(p) <= max_rows}, reverse=True))
        self.executor = executor
        self.on_batch = on_batch
        self.inline_below_s = inline_below_s
        self.validate = validate
        self._run_ewma = float("inf")
        self._queue: deque[_Job] = deque()
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._running = False  # a batch is being executed (possibly on the executor thread)
        self.batches = 0
        self.direct = 0  # requests run_now() ran in place

    def submit(self, feeds: dict[str, np.ndarray], rows: int) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queue one request (synchronously, so no reload can slip between validation and queueing)."""
        if self._closing:  # internal: the manager hands out live batchers only
            raise RuntimeError("submit() on a closed batcher")
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._event = asyncio.Event()
            self._task = loop.create_task(self._loop())
        if self.mergeable:
            key: tuple[Any, ...] = tuple((k, v.shape[1:], v.dtype.str) for k, v in feeds.items())
        else:
            key = ()
        fut: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        self._queue.append(_Job(feeds, rows, key, fut, loop.time()))
        event = self._event
        assert event is not None
        if not event.is_set():
            event.set()
        return fut

    def run_now(self, feeds: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray] | None:
        """Run one request right here, or return None to say "submit() it".

        For a caller that knows no other request is in flight: with nothing queued or running, no queue delay
        asked for and a model fast enough to run on the event loop, the batch would be this request alone, so
        the hop through the batcher's task (two loop iterations) is skipped.

        Raises:
            RequestError: 400 when the backend refuses the input.
        """
        if (
            self._closing
            or self._queue
            or self._running
            or self.timeout_s > 0
            or not (self.inline_below_s and self._run_ewma < self.inline_below_s)
        ):
            return None
        if self.validate is not None:
            self.validate(feeds)
        start = time.perf_counter()
        try:
            out = self.run(feeds)
        except Exception as exc:  # the backend refused the input (e.g. an id outside the embedding)
            raise RequestError(400, f"the model cannot run this input: {_first_line(exc)}") from None
        seconds = time.perf_counter() - start
        self._run_ewma = 0.8 * self._run_ewma + 0.2 * seconds
        self.batches += 1
        self.direct += 1
        if self.on_batch is not None:
            self.on_batch(rows, 1, seconds)
        return out

    def close(self) -> None:
        """Stop after the queued requests are answered."""
        self._closing = True
        if self._event is not None:
            self._event.set()

    # -- scheduling ------------------------------------------------------------------------------------------
    def _target(self, queued: int) -> int:
        """Rows to send now for ``queued`` compatible rows, or 0 to keep waiting (before the queue delay)."""
        if queued >= self.max_rows:
            return self.max_rows
        for p in self.preferred:  # largest first
            if queued >= p:
                return p
        return 0

    async def _loop(self) -> None:
        event = self._event
        assert event is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                event.clear()
                await event.wait()
                continue
            limit = self.max_rows
            if self.mergeable and self.timeout_s > 0 and not self._closing:
                while True:
                    target = self._target(self._queued_rows())
                    if target:
                        limit = target
                        break
                    left = self._queue[0].since + self.timeout_s - loop.time()
                    if left <= 0 or self._closing:
                        break
                    event.clear()
                    try:
                        await asyncio.wait_for(event.wait(), left)
                    except asyncio.TimeoutError:  # not the builtin before Python 3.11
                        break
            elif self.preferred:
                limit = self._target(self._queued_rows()) or self.max_rows
            jobs = self._take(limit)
            self._running = True
            try:
                await self._execute(jobs)
            except Exception as exc:  # a bug here must not leave requests waiting forever
                for job in jobs:
                    _resolve(job, error=exc)
            finally:
                self._running = False

    def _queued_rows(self) -> int:
        if not self.mergeable:
            return self._queue[0].rows
        key = self._queue[0].key
        return sum(j.rows for j in self._queue if j.key == key)

    def _take(self, limit: int) -> list[_Job]:
        queue = self._queue
        first = queue.popleft()
        jobs = [first]
        if not self.mergeable or not queue:
            return jobs
        rows = first.rows
        key = first.key
        kept: deque[_Job] = deque()
        while queue and rows < limit:
            job = queue.popleft()
            if job.key == key and rows + job.rows <= limit:
                jobs.append(job)
                rows += job.rows
            else:
                kept.append(job)
        if kept:
            kept.extend(queue)
            self._queue = kept
        return jobs

    async def _execute(self, jobs: list[_Job]) -> None:
        if len(jobs) == 1:
            feeds = jobs[0].feeds
            total = jobs[0].rows
        else:
            feeds = {k: np.concatenate([j.feeds[k] for j in jobs]) for k in jobs[0].feeds}
            total = sum(j.rows for j in jobs)
        if self.validate is not None:
            try:
                self.validate(feeds)
            except RequestError as exc:
                if len(jobs) == 1:
                    _resolve(jobs[0], error=exc)
                    return
                good = []
                for job in jobs:  # find the offending requests; the others still run together
                    try:
                        self.validate(job.feeds)
                    except RequestError as own:
                        _resolve(job, error=own)
                    else:
                        good.append(job)
                if good:
                    await self._execute(good)
                return
        start = time.perf_counter()
        try:
            if self.inline_below_s and self._run_ewma < self.inline_below_s:
                out = self.run(feeds)  # sub-millisecond model: a thread hop would cost more than the run
            else:
                out = await asyncio.get_running_loop().run_in_executor(self.executor, self.run, feeds)
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
