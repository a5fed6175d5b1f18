"""The dynamic batcher's queue delay and preferred batch sizes (Triton's semantics), on a real numpy model.

Timing assertions only use bounds that hold on a loaded machine: a delay of several seconds that must NOT have
passed (a batch formed by size is sent long before it), or a lower bound (a lone request is never sent before its
delay). Every batch the model ran is recorded, so batch composition is asserted exactly.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from onnxship.serve._batcher import Batcher
from onnxship.serve._signature import RequestError

LONG = 30.0  # a delay no test waits for: a batch sent before it was sent for another reason


class Model:
    """y = 2x + row sum, recording each batch it runs (rows per call)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["x"]
        if (x < 0).any():
            raise ValueError("negative ids are not in the embedding")
        self.calls.append(int(x.shape[0]))
        return {"y": 2 * x + x.sum(axis=1, keepdims=True)}


def expected(x: np.ndarray) -> np.ndarray:
    return 2 * x + x.sum(axis=1, keepdims=True)


def make(model: Model, *, timeout_s: float, max_rows: int = 8, preferred=(), mergeable=True) -> Batcher:
    return Batcher(
        model,
        mergeable=mergeable,
        max_rows=max_rows,
        timeout_s=timeout_s,
        executor=ThreadPoolExecutor(1),
        preferred=preferred,
    )


def rows(n: int, start: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + 3 * n, dtype=np.int64).reshape(n, 3)}


def run(coro):
    return asyncio.run(coro)


def test_requests_within_the_delay_form_one_batch_and_split_back_exactly():
    model = Model()

    async def main():
        b = make(model, timeout_s=0.3, max_rows=32)
        feeds = [rows(1 + i % 2, 10 * i) for i in range(5)]
        t0 = time.monotonic()
        futs = [b.submit(f, f["x"].shape[0]) for f in feeds]
        outs = await asyncio.gather(*futs)
        return feeds, outs, time.monotonic() - t0

    feeds, outs, waited = run(main())
    assert model.calls == [7]  # 1+2+1+2+1 rows: one model run
    for f, out in zip(feeds, outs, strict=True):
        np.testing.assert_array_equal(out["y"], expected(f["x"]))
    assert waited >= 0.3 - 0.01  # a partial batch waits out the delay of its oldest request


def test_lone_request_is_sent_after_the_delay_not_before():
    model = Model()

    async def main():
        b = make(model, timeout_s=0.2)
        t0 = time.monotonic()
        out = await b.submit(rows(1), 1)
        return out, time.monotonic() - t0

    out, waited = run(main())
    assert model.calls == [1]
    assert waited >= 0.2 - 0.01
    np.testing.assert_array_equal(out["y"], expected(rows(1)["x"]))


def test_delay_is_measured_from_the_first_queued_request():
    model = Model()

    async def main():
        b = make(model, timeout_s=0.4, max_rows=32)
        t0 = time.monotonic()
        first = b.submit(rows(1), 1)
        await asyncio.sleep(0.25)
        second = b.submit(rows(1, 100), 1)  # joins: the batch leaves 0.4 s after the FIRST request
        await asyncio.gather(first, second)
        return time.monotonic() - t0

    waited = run(main())
    assert model.calls == [2]
    assert waited >= 0.4 - 0.01
    # measured from the second request it would be >= 0.65 s; allow a loaded machine some slack below that
    assert waited < 0.4 + 0.24


def test_zero_delay_sends_at_once_and_batches_what_queued_meanwhile():
    model = Model()

    async def main():
        b = make(model, timeout_s=0.0, max_rows=32)
        futs = [b.submit(rows(1, i), 1) for i in range(6)]  # all queued before the loop runs
        await asyncio.gather(*futs)
        lone = await b.submit(rows(1), 1)
        return lone

    run(main())
    assert model.calls == [6, 1]


def test_full_batch_is_sent_without_waiting_for_the_delay():
    model = Model()

    async def main():
        b = make(model, timeout_s=LONG, max_rows=4)
        t0 = time.monotonic()
        futs = [b.submit(rows(1, i), 1) for i in range(4)]
        await asyncio.wait_for(asyncio.gather(*futs), LONG / 2)
        return time.monotonic() - t0

    waited = run(main())
    assert model.calls == [4]
    assert waited < LONG / 2


def test_preferred_size_is_sent_at_once_and_the_rest_waits():
    model = Model()

    async def main():
        b = make(model, timeout_s=LONG, max_rows=32, preferred=(4, 8))
        first = [b.submit(rows(1, i), 1) for i in range(3)]
        await asyncio.sleep(0.2)
        assert model.calls == []  # 3 rows: no preferred size reached, delay far away
        more = [b.submit(rows(1, 10 + i), 1) for i in range(3)]  # 6 queued: the preferred 4 leaves now
        await asyncio.wait_for(asyncio.gather(*first, more[0]), LONG / 2)
        await asyncio.sleep(0.2)
        assert model.calls == [4]  # the other 2 wait for more requests or for their delay
        rest = [b.submit(rows(1, 20 + i), 1) for i in range(2)]  # 4 queued again: sent
        await asyncio.wait_for(asyncio.gather(*more[1:], *rest), LONG / 2)

    run(main())
    assert model.calls == [4, 4]


def test_largest_reachable_preferred_size_wins():
    model = Model()

    async def main():
        b = make(model, timeout_s=LONG, max_rows=32, preferred=(2, 8))
        futs = [b.submit(rows(1, i), 1) for i in range(9)]
        await asyncio.wait_for(asyncio.gather(*futs[:8]), LONG / 2)
        await asyncio.sleep(0.1)
        assert model.calls == [8] and not futs[8].done()  # 1 left: below every preferred size, it waits
        b.close()  # closing sends what is queued
        await asyncio.wait_for(futs[8], LONG / 2)

    run(main())
    assert model.calls == [8, 1]


def test_requests_of_different_shapes_are_not_merged():
    model = Model()

    async def main():
        b = make(model, timeout_s=0.2, max_rows=32)
        a = b.submit(rows(2), 2)
        c = b.submit({"x": np.arange(8, dtype=np.int64).reshape(2, 4)}, 2)
        d = b.submit(rows(1, 50), 1)
        return await asyncio.gather(a, c, d)

    outs = run(main())
    assert sorted(model.calls) == [2, 3]
    np.testing.assert_array_equal(outs[1]["y"], expected(np.arange(8, dtype=np.int64).reshape(2, 4)))


def test_a_failing_request_fails_alone():
    model = Model()

    async def main():
        b = make(model, timeout_s=0.2, max_rows=32)
        good = b.submit(rows(1), 1)
        bad = b.submit({"x": -np.ones((1, 3), np.int64)}, 1)
        other = b.submit(rows(1, 7), 1)
        return await asyncio.gather(good, bad, other, return_exceptions=True)

    good, bad, other = run(main())
    assert isinstance(bad, RequestError) and bad.status == 400
    np.testing.assert_array_equal(good["y"], expected(rows(1)["x"]))
    np.testing.assert_array_equal(other["y"], expected(rows(1, 7)["x"]))


def test_not_mergeable_runs_each_request_without_delay():
    model = Model()

    async def main():
        b = make(model, timeout_s=LONG, max_rows=32, mergeable=False)
        futs = [b.submit(rows(1, i), 1) for i in range(3)]
        await asyncio.wait_for(asyncio.gather(*futs), LONG / 2)

    run(main())
    assert model.calls == [1, 1, 1]


def test_close_sends_what_is_queued_without_waiting():
    model = Model()

    async def main():
        b = make(model, timeout_s=LONG, max_rows=32)
        futs = [b.submit(rows(1, i), 1) for i in range(3)]
        await asyncio.sleep(0.1)
        b.close()
        await asyncio.wait_for(asyncio.gather(*futs), LONG / 2)

    run(main())
    assert model.calls == [3]


@pytest.mark.parametrize("bad", [[0], [40]])
def test_preferred_sizes_outside_max_batch_are_a_config_error(bad):
    from onnxship._errors import ConfigError
    from onnxship.serve import ServeConfig

    with pytest.raises(ConfigError, match="preferred batch"):
        ServeConfig(releases="r", max_batch=32, preferred_batch=tuple(bad))


def test_run_now_only_when_the_batch_would_be_this_request_alone():
    model = Model()

    async def main():
        b = Batcher(
            model,
            mergeable=True,
            max_rows=8,
            timeout_s=0.0,
            executor=ThreadPoolExecutor(1),
            inline_below_s=1.0,
        )
        assert b.run_now(rows(1), 1) is None  # no run measured yet: it could be slow, never block the loop
        await b.submit(rows(1), 1)  # measured now (a sub-second numpy model)
        out = b.run_now(rows(1, 5), 1)
        np.testing.assert_array_equal(out["y"], expected(rows(1, 5)["x"]))
        queued = b.submit(rows(1), 1)
        assert b.run_now(rows(1), 1) is None  # something is queued: join it instead
        await queued
        with pytest.raises(RequestError, match="cannot run this input"):
            b.run_now({"x": -np.ones((1, 3), np.int64)}, 1)
        delayed = Batcher(model, mergeable=True, max_rows=8, timeout_s=0.01, executor=ThreadPoolExecutor(1))
        delayed.inline_below_s, delayed._run_ewma = 1.0, 0.0
        assert delayed.run_now(rows(1), 1) is None  # a queue delay was asked for: honour it
        slow = Batcher(model, mergeable=True, max_rows=8, timeout_s=0.0, executor=ThreadPoolExecutor(1))
        assert slow.run_now(rows(1), 1) is None  # inline runs turned off

    run(main())
    assert model.calls == [1, 1, 1]


def test_validate_runs_once_per_batch_and_refuses_only_the_offenders():
    model = Model()
    checked: list[int] = []

    def ids_below_100(feeds):
        checked.append(int(feeds["x"].shape[0]))
        if int(feeds["x"].max()) >= 100:
            raise RequestError(400, "ids must be below 100")

    async def main():
        b = Batcher(
            model,
            mergeable=True,
            max_rows=32,
            timeout_s=0.0,
            executor=ThreadPoolExecutor(1),
            validate=ids_below_100,
        )
        ok = await asyncio.gather(*[b.submit(rows(1, i), 1) for i in range(4)])
        mixed = [
            b.submit(rows(1), 1),
            b.submit({"x": np.full((1, 3), 500, np.int64)}, 1),
            b.submit(rows(2), 2),
        ]
        return ok, await asyncio.gather(*mixed, return_exceptions=True)

    ok, (a, bad, c) = run(main())
    assert checked[0] == 4  # one check for the whole first batch
    assert isinstance(bad, RequestError) and "below 100" in bad.message
    np.testing.assert_array_equal(a["y"], expected(rows(1)["x"]))
    np.testing.assert_array_equal(c["y"], expected(rows(2)["x"]))
    assert model.calls == [4, 3]  # the two good requests of the mixed batch still ran together
