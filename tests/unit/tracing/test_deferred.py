"""The telemetry completion queue and the preset-id generator behind deferred CLIENT spans."""

from __future__ import annotations

import asyncio
import logging

import pytest
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from meshlib.tracing.client_spans import PresetIds
from meshlib.tracing.deferred import DeferredTelemetry


def test_preset_ids_apply_until_cleared_then_defer_to_the_provider() -> None:
    ids = PresetIds(RandomIdGenerator())
    ids.preset(0xABC, 0xDEF)
    assert (ids.generate_trace_id(), ids.generate_span_id()) == (0xABC, 0xDEF)
    ids.clear()
    assert ids.generate_span_id() != 0xDEF
    assert ids.generate_trace_id() != 0xABC
    assert ids.is_trace_id_random() == RandomIdGenerator().is_trace_id_random()


def test_without_a_running_loop_work_runs_at_once() -> None:
    done: list[int] = []
    DeferredTelemetry().defer(done.append, 1)
    assert done == [1]


@pytest.mark.asyncio
async def test_work_runs_at_the_next_loop_turn_in_order() -> None:
    queue = DeferredTelemetry()
    done: list[int] = []
    for n in range(3):
        queue.defer(done.append, n)
    assert done == [] and queue.pending == 3
    turn = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(turn.set_result, None)  # queued after the drain
    await turn
    assert done == [0, 1, 2] and queue.pending == 0


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
    queue._scheduled_on = stale  # as if its drain had been scheduled there and never ran

    async def queue_one_and_take_a_turn() -> None:
        queue.defer(done.append, 1)
        turn = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(turn.set_result, None)
        await turn

    asyncio.run(queue_one_and_take_a_turn())
    assert done == [1]
