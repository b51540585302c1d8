"""The telemetry completion queue: batches, the timer, explicit flushes, failures, many loops."""

from __future__ import annotations

import asyncio
import logging

import pytest

from meshlib.tracing.deferred import BATCH, MAX_DELAY_S, DeferredTelemetry


async def next_turn() -> None:
    """Return after the callbacks already queued on the running loop have run."""
    turn = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(turn.set_result, None)
    await turn


def test_without_a_running_loop_work_runs_at_once() -> None:
    done: list[int] = []
    DeferredTelemetry().defer(done.append, 1)
    assert done == [1]


@pytest.mark.asyncio
async def test_a_full_batch_runs_at_the_next_loop_turn_in_order() -> None:
    queue = DeferredTelemetry()
    done: list[int] = []
    for n in range(BATCH - 1):
        queue.defer(done.append, n)
    await next_turn()
    assert done == [] and queue.pending == BATCH - 1  # a partial batch waits (for the timer)
    queue.defer(done.append, BATCH - 1)
    await next_turn()
    assert done == list(range(BATCH)) and queue.pending == 0


@pytest.mark.asyncio
async def test_a_partial_batch_runs_when_the_timer_fires() -> None:
    queue = DeferredTelemetry()
    loop = asyncio.get_running_loop()
    ran = loop.create_future()
    queued_at = loop.time()
    queue.defer(lambda: ran.set_result(loop.time()))
    ran_at = await asyncio.wait_for(ran, timeout=5)
    assert ran_at - queued_at >= MAX_DELAY_S * 0.9  # the timer, not an earlier turn, drained it
    assert queue.pending == 0


@pytest.mark.asyncio
async def test_flush_runs_pending_work_now_and_failures_are_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = DeferredTelemetry()
    done: list[str] = []

    def broken() -> None:
        raise RuntimeError("exporter down")

    queue.defer(broken)
    queue.defer(done.append, "after")
    with caplog.at_level(logging.ERROR, logger="meshlib.telemetry"):
        queue.flush()
    assert done == ["after"]
    assert "finishing telemetry failed" in caplog.text
    queue.flush_if_owner()  # nothing pending: a no-op
    assert done == ["after"]


def test_a_new_event_loop_gets_its_own_drain() -> None:
    """Tests run many loops: a drain scheduled on a loop that closed must not block the next loop's."""
    queue = DeferredTelemetry()
    done: list[int] = []
    stale = asyncio.new_event_loop()
    stale.close()
    queue._armed_on = stale  # as if its timer had been armed there and never fired

    async def queue_one_and_flush_by_timer() -> None:
        loop = asyncio.get_running_loop()
        ran = loop.create_future()
        queue.defer(done.append, 1)
        queue.defer(ran.set_result, None)
        await asyncio.wait_for(ran, timeout=5)

    asyncio.run(queue_one_and_flush_by_timer())
    assert done == [1]

