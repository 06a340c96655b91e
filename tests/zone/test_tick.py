"""Drift-free scheduling and tick statistics."""

from __future__ import annotations

import asyncio
import time

import pytest

from tessera.zone.tick import IO_SHARE, Beat, Ticker, TickStats, schedule


def test_schedule_stays_on_the_grid_and_skips_whole_missed_periods() -> None:
    n, due, skipped = schedule(0.0, 0.1, 0, 0.05)
    assert (n, skipped) == (1, 0) and due == pytest.approx(0.1)
    # a late tick (ran at 0.17 instead of 0.1) does not shift tick 2
    n, due, skipped = schedule(0.0, 0.1, 1, 0.17)
    assert (n, skipped) == (2, 0) and due == pytest.approx(0.2)
    # 0.35 s behind: ticks 2, 3 and 4 are skipped, tick 5 (due at 0.5) runs now
    n, due, skipped = schedule(0.0, 0.1, 1, 0.55)
    assert (n, skipped) == (5, 3) and due == pytest.approx(0.5)


def test_overload_when_p99_exceeds_budget() -> None:
    stats = TickStats(budget_s=0.01, window=100)
    for _ in range(100):
        stats.add(0.005)
    assert not stats.overloaded and stats.percentile(50) == pytest.approx(0.005)
    for _ in range(5):
        stats.add(0.02)
    assert stats.overloaded


async def test_ticker_runs_at_rate_and_survives_failing_steps() -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")

    ticker = Ticker(50, step)
    task = asyncio.create_task(ticker.run())
    await asyncio.sleep(0.5)
    ticker.stop()
    await task
    # 25 due in 0.5 s; a loaded machine may skip some slots, never run extra ones
    assert 5 <= len(calls) <= 26 and ticker.errors == 1


async def test_steps_over_their_period_still_leave_the_event_loop_its_share() -> None:
    """Steps of 1.5 periods never finish on time; a task of short awaits (as an
    inbox round of Redis calls is) still gets through between them."""
    rounds = 0

    async def inbox() -> None:
        nonlocal rounds
        while True:
            await asyncio.sleep(0.0005)
            rounds += 1

    def step() -> None:
        nonlocal rounds
        if not ticker.stats.durations:
            rounds = 0  # count from the first step on
        end = time.perf_counter() + 0.015
        while time.perf_counter() < end:  # a slow step holds the loop, as a tick does
            pass
        if len(ticker.stats.durations) == 19:
            ticker.stop()

    ticker = Ticker(100, step)
    other = asyncio.create_task(inbox())
    await ticker.run()
    during = rounds
    other.cancel()
    assert ticker.skipped > 0  # overloaded throughout
    assert during >= 19  # a round or more between every two steps (the old loop: none)


async def test_a_step_knows_when_the_next_step_will_run() -> None:
    """What a step predicts with ``next_due`` (a zone's ``next_tick_ms``) is when
    the next step starts: on the grid, and after a step over its period, a share
    of a period after it."""
    predicted: list[float] = []
    started: list[float] = []

    def step() -> None:
        now = time.monotonic()
        started.append(now)
        if len(started) == 4:
            while time.monotonic() < now + 0.05:  # over its 20 ms period: slots skipped
                pass
        predicted.append(ticker.next_due(time.monotonic()))
        if len(started) == 8:
            ticker.stop()

    ticker = Ticker(50, step)
    await ticker.run()
    gaps = [start - guess for guess, start in zip(predicted, started[1:], strict=False)]
    assert all(-0.001 <= gap <= 0.02 for gap in gaps), gaps  # the wait's own lateness only


def test_the_next_step_is_its_slot_or_a_late_steps_share_of_a_period() -> None:
    ticker = Ticker(10, lambda: None)
    ticker._start, ticker._n = 0.0, 3  # the step due at 0.3 s is running
    assert ticker.next_due(0.32) == pytest.approx(0.4)  # on time: its slot
    assert ticker.next_due(0.45) == pytest.approx(0.45 + IO_SHARE * 0.1)  # late
    assert ticker.next_due(0.75) == pytest.approx(0.75 + IO_SHARE * 0.1)  # slots skipped


async def test_a_beat_wakes_its_waiters_and_a_wait_times_out() -> None:
    beat = Beat()
    assert await beat.past(-1, 10.0) == 0  # already past what the caller saw: no wait
    waiting = [asyncio.create_task(beat.past(0, 10.0)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiting)
    beat.bump()
    assert await asyncio.gather(*waiting) == [1, 1]
    began = time.monotonic()
    assert await beat.past(1, 0.05) == 1  # nothing came: the timeout
    assert 0.04 <= time.monotonic() - began < 1.0
    assert not beat._waiters  # a wait that timed out leaves nothing behind
    cancelled = asyncio.create_task(beat.past(1, 10.0))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not beat._waiters


async def test_a_stopped_ticker_ends_without_waiting_out_its_period() -> None:
    ticker = Ticker(1, lambda: None)  # a step due in a second
    task = asyncio.create_task(ticker.run())
    await asyncio.sleep(0.05)
    began = time.monotonic()
    ticker.stop()
    await asyncio.wait_for(task, 0.5)
    assert time.monotonic() - began < 0.2 and not ticker.stats.durations
