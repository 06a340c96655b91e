"""The spool on its own: bounded with counted overflow, failed batches requeued in
order, a write cut short kept for the final flush, a full batch (or an offer made ``now``)
written at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tessera.common.spool import Spool
from tessera.zone import metrics as zone_metrics


def spool(name: str, write: Callable[[list[int]], Awaitable[None]], **sizes: Any) -> Spool[int]:
    return Spool(name, write, metrics=zone_metrics.spool(name), **sizes)


def dropped(spool: str) -> float:
    value = REGISTRY.get_sample_value("tessera_zone_spool_dropped_total", {"spool": spool})
    return value or 0.0


async def test_spool_drops_and_counts_what_does_not_fit() -> None:
    written: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        written.append(batch)

    s = spool("t-full", write, capacity=5, batch=2, interval_s=60.0)
    before = dropped("t-full")
    assert s.offer(range(7)) == 2
    assert dropped("t-full") - before == 2
    await s.flush()
    assert written == [[0, 1], [2, 3], [4]]


async def test_a_failed_batch_is_requeued_in_order() -> None:
    fail = True
    written: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        if fail:
            raise ConnectionError("database down")
        written.append(batch)

    s = spool("t-retry", write, capacity=10, batch=3, interval_s=60.0)
    s.offer(range(5))
    await s.flush()
    assert list(s.items) == [0, 1, 2, 3, 4] and not written
    fail = False
    await s.flush()
    assert written == [[0, 1, 2], [3, 4]]


async def test_a_write_cut_short_by_a_stop_is_kept_for_the_final_flush() -> None:
    started = asyncio.Event()
    written: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        if not written:
            written.append([])
            started.set()
            await asyncio.sleep(60)
        written.append(batch)

    s = spool("t-stop", write, capacity=10, batch=10, interval_s=60.0)
    s.offer(range(3))
    flushing = asyncio.create_task(s.flush())
    await started.wait()
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    await s.flush()
    assert written == [[], [0, 1, 2]]


async def test_run_writes_a_full_batch_without_waiting_for_the_interval() -> None:
    done = asyncio.Event()

    async def write(batch: list[int]) -> None:
        done.set()

    s = spool("t-wake", write, capacity=100, batch=10, interval_s=60.0)
    task = asyncio.create_task(s.run())
    s.offer(range(10))
    await asyncio.wait_for(done.wait(), 10.0)
    task.cancel()


async def test_run_writes_an_offer_made_now_without_waiting_for_the_interval() -> None:
    written: list[list[int]] = []
    done = asyncio.Event()

    async def write(batch: list[int]) -> None:
        written.append(batch)
        done.set()

    s = spool("t-now", write, capacity=100, batch=10, interval_s=60.0)
    task = asyncio.create_task(s.run())
    s.offer([1, 2])
    await asyncio.sleep(0.2)  # a partial batch waits for the interval...
    assert not written
    s.offer([3], now=True)  # ...unless offered now: all that waits goes
    await asyncio.wait_for(done.wait(), 10.0)
    task.cancel()
    assert written == [[1, 2, 3]]
