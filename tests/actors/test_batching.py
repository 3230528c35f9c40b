"""MicroBatcher: concurrent callers share batch calls; results are routed back in order; errors stay in their batch."""
import asyncio
import math
import time

import pytest

from actors.batching import MicroBatcher


def doubling(items):
    time.sleep(0.01)  # a 'forward pass'
    return [2 * x for x in items]


@pytest.mark.parametrize("n,max_batch", [(256, 64), (100, 7), (5, 64)])
async def test_concurrent_callers_coalesce(n, max_batch):
    b = MicroBatcher(doubling, max_batch_size=max_batch, max_wait_ms=20)
    results = await asyncio.gather(*(b.submit(i) for i in range(n)))
    assert results == [2 * i for i in range(n)]
    assert b.stats.items == n
    assert b.stats.batches <= math.ceil(n / max_batch) + 1
    assert b.stats.max_batch <= max_batch


async def test_single_caller_does_not_wait_for_a_full_batch():
    b = MicroBatcher(doubling, max_batch_size=1000, max_wait_ms=5)
    t0 = time.perf_counter()
    assert await b.submit(3) == 6
    assert time.perf_counter() - t0 < 1.0
    assert b.stats.batches == 1


async def test_error_fails_only_its_batch():
    calls = []

    def flaky(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise ValueError("boom")
        return items

    b = MicroBatcher(flaky, max_batch_size=8, max_wait_ms=5)
    with pytest.raises(ValueError, match="boom"):
        await b.submit(1)
    assert await b.submit(2) == 2  # the worker survived


async def test_wrong_result_count_is_an_error():
    b = MicroBatcher(lambda items: items[:-1], max_batch_size=4, max_wait_ms=1)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        await b.submit(1)


def test_invalid_size():
    with pytest.raises(ValueError):
        MicroBatcher(doubling, max_batch_size=0, max_wait_ms=1)
